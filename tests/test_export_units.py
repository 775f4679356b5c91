"""`tlcli export`'s pure pieces, without a run or an artifact: parity figures and their gates."""

from __future__ import annotations

import numpy as np
import pytest

from tlcli.export.formats import FORMATS, Gate


def test_formats_and_gate_overrides_parse():
    """Split out of test_options_are_checked_before_any_work (tests/test_export.py), which needs a trained run."""
    from tlcli.export.formats import parse_formats, parse_gate_overrides

    assert (
        parse_formats(None) == ("saved_model", "tflite")
        and parse_formats(["onnx,tflite"]) == ("tflite", "onnx")
        and parse_formats(["all"]) == FORMATS
    )
    assert parse_gate_overrides(["all=0.9"], ["tflite=0.01"]) == {
        **{name: {"min_agreement": 0.9} for name in FORMATS},
        "tflite": {"min_agreement": 0.9, "max_difference": 0.01},
    }


def test_multi_label_parity_counts_decisions_at_the_thresholds():
    from tlcli.export.parity import compare, gate_failures

    reference = np.array([[0.9, 0.2, 0.45], [0.1, 0.8, 0.7]])
    artifact = np.array([[0.9, 0.2, 0.55], [0.1, 0.8, 0.7]])  # one decision of six flips (image 0, class 2 at 0.5)
    labels = np.array([[1, 0, 0], [0, 1, 1]])
    parity = compare(reference, artifact, labels, 0.1, thresholds=[0.5, 0.5, 0.5])
    assert (
        parity.agreement == pytest.approx(5 / 6)
        and parity.image_agreement == 0.5
        and parity.max_difference == pytest.approx(0.1)
    )
    assert (
        parity.keras_accuracy == 1.0
        and parity.accuracy == pytest.approx(5 / 6)
        and parity.to_dict()["image_agreement"] == 0.5
    )
    assert (
        compare(reference, artifact, labels, 0.1, thresholds=[0.5, 0.5, 0.6]).agreement == 1.0
    )  # at 0.6 neither gives red
    (line,) = gate_failures("onnx", parity, Gate(min_agreement=0.9))
    assert line.startswith("onnx: per-label agreement 0.8333 < 0.9")
    assert "image_agreement" not in compare(reference, artifact, np.array([0, 1]), 0.1).to_dict()
