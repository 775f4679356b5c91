"""The default fp16 and int8 parity gates pass a healthy export and fail a broken one, on constructed probabilities.

Each case mirrors a measurement (docs/guides/export-gates.md, `benchmarks/export_bench.py RUN --broken`) on 153
validation photos of a two-class run: the healthy artifact's figures, and those of an artifact with its preprocessing
dropped, fed the wrong channel order, damaged, or with its labels shuffled. The arrays are built to give those
figures through `compare`, so the test checks the gates against what the measurement saw, not against a timing.
"""

from __future__ import annotations

import numpy as np
import pytest

from tlcli.export.formats import DEFAULT_GATES
from tlcli.export.parity import compare, gate_failures

IMAGES = 153


def reference_and_labels() -> tuple[np.ndarray, np.ndarray]:
    """A Keras model's two-class probabilities on 153 images, evenly spread from 0.02 to 0.98, and labels it gets
    87.6% of (134 of 153, as MobileNet 0.25 did)."""
    p = np.linspace(0.02, 0.98, IMAGES) + 0.002  # none exactly at 0.5, where top-1 is a tie
    reference = np.stack([1 - p, p], axis=1)
    labels = reference.argmax(axis=1)
    labels[3::8] = 1 - labels[3::8]  # Keras wrong on 19 images, spread over every confidence
    return reference, labels


def artifact(reference: np.ndarray, labels: np.ndarray, flips: int, flip_right: int, difference: float) -> np.ndarray:
    """Probabilities moved toward 0.5 by up to `difference`, with `flips` images (those nearest 0.5: the ones a small
    change flips) sent to the other side, `flip_right` of them ones Keras got right (the accuracy lost)."""
    p = reference[:, 1]
    moved = p - np.sign(p - 0.5) * np.minimum(difference, np.abs(p - 0.5) - 1e-3)  # toward 0.5, not across
    nearest = np.argsort(np.abs(p - 0.5), kind="stable")
    right = [i for i in nearest if reference[i].argmax() == labels[i]]
    wrong = [i for i in nearest if reference[i].argmax() != labels[i]]
    chosen = np.array(right[:flip_right] + wrong[: flips - flip_right], dtype=int)
    moved[chosen] = 1 - p[chosen]  # to the other side
    return np.stack([1 - moved, moved], axis=1)


# (format, case, images flipped, of them right in Keras, largest probability difference); measured on MobileNet
# 0.25 and MobileNetV2 1.0 runs of hymenoptera, 2026-12-06 (the worst of the two bases for a healthy artifact, the
# mildest for a broken one).
HEALTHY = [
    ("tflite-fp16", "MobileNet 0.25: agreement 1.0000, max difference 0.025", 0, 0, 0.025),
    ("tflite-fp16", "MobileNetV2: agreement 0.9935 (1 image), max difference 0.013", 1, 1, 0.013),
    ("tflite-int8", "MobileNet 0.25: agreement 0.9281 (11 images), 1.96 points lost", 11, 7, 0.27),
    ("tflite-int8", "MobileNetV2: agreement 0.9869 (2 images), 0 points lost", 2, 1, 0.38),
    ("tflite-int8", "MobileNet 0.25, an earlier run: agreement 0.9608 (6 images), 2.6 points lost", 6, 5, 0.35),
]
BROKEN = [
    ("tflite-fp16", "channels swapped, MobileNet 0.25: agreement 0.9281, max difference 0.518", 11, 5, 0.518),
    ("tflite-fp16", "channels swapped, MobileNetV2: agreement 0.9281, max difference 0.958", 11, 10, 0.958),
    ("tflite-fp16", "preprocessing dropped: agreement 0.4706, max difference 0.955", 81, 70, 0.955),
    ("tflite-int8", "channels swapped, MobileNet 0.25: agreement 0.8497, 4.6 points lost", 23, 15, 0.562),
    ("tflite-int8", "channels swapped, MobileNetV2: agreement 0.9085, 7.8 points lost", 14, 13, 0.952),
    ("tflite-int8", "preprocessing dropped: agreement 0.4444", 85, 73, 0.947),
    ("tflite-int8", "damaged (bytes overwritten): agreement 0.7582", 37, 27, 0.634),
]


@pytest.mark.parametrize("name, case, flips, flip_right, difference", HEALTHY)
def test_a_healthy_export_passes_its_default_gate(name, case, flips, flip_right, difference):
    reference, labels = reference_and_labels()
    parity = compare(reference, artifact(reference, labels, flips, flip_right, difference), labels, 0.1)
    assert parity.agreement == pytest.approx(1 - flips / IMAGES)
    assert parity.accuracy_drop == pytest.approx(100 * (2 * flip_right - flips) / IMAGES)
    assert gate_failures(name, parity, DEFAULT_GATES[name]) == [], case


@pytest.mark.parametrize("name, case, flips, flip_right, difference", BROKEN)
def test_a_broken_export_fails_its_default_gate(name, case, flips, flip_right, difference):
    reference, labels = reference_and_labels()
    parity = compare(reference, artifact(reference, labels, flips, flip_right, difference), labels, 0.1)
    assert parity.agreement == pytest.approx(1 - flips / IMAGES)
    assert parity.accuracy_drop == pytest.approx(100 * (2 * flip_right - flips) / IMAGES)
    assert gate_failures(name, parity, DEFAULT_GATES[name]), case


@pytest.mark.parametrize("name", ["tflite-fp16", "tflite-int8"])
def test_shuffled_labels_and_a_damaged_float_file_fail(name):
    """Labels shuffled (output columns swapped): agreement 0; a float file with overwritten bytes: NaN outputs."""
    reference, labels = reference_and_labels()
    shuffled = compare(reference, reference[:, ::-1], labels, 0.1)
    assert shuffled.agreement == 0 and gate_failures(name, shuffled, DEFAULT_GATES[name])
    damaged = reference.copy()
    damaged[::2] = np.nan
    assert gate_failures(name, compare(reference, damaged, labels, 0.1), DEFAULT_GATES[name])
