"""95% intervals and the paired test (tlcli.evaluation.intervals), against textbook figures computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tlcli.evaluation.intervals import (
    accuracy_intervals,
    bootstrap,
    macro_f1_statistic,
    mcnemar_exact,
    paired_difference,
    single_label_intervals,
    wilson,
)
from tlcli.runs.metrics import METRICS_FORMAT, Metrics


def test_wilson_matches_the_textbook():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", table II (method 3, Wilson score).
    for (k, n), (low, high) in {
        (81, 263): (0.2553, 0.3662),
        (15, 148): (0.0624, 0.1605),
        (1, 29): (0.0061, 0.1718),
        (0, 10): (0.0, 0.2775),
    }.items():
        assert wilson(k, n) == pytest.approx((low, high), abs=5e-5), (k, n)
    # The closed form, written out: centre (p + z^2/2n) / (1 + z^2/n), half-width z/(1 + z^2/n) sqrt(pq/n + z^2/4n^2).
    z, p, n = 1.959963984540054, 81 / 263, 263
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson(81, 263) == pytest.approx((centre - half, centre + half), abs=1e-12)


def test_wilson_edges_are_exact_and_symmetric():
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0
    low, high = wilson(10, 10)
    assert (low, high) == pytest.approx((1 - wilson(0, 10)[1], 1.0))
    assert 0.0 < wilson(0, 20)[1] < 0.2  # 0 of 20 still leaves room: never a degenerate [0, 0]
    assert wilson(0, 0) is None
    with pytest.raises(ValueError):
        wilson(5, 4)


def test_mcnemar_p_value_is_the_exact_binomial_computed_by_hand():
    # 2 images only A got right, 10 only B: two-sided exact binomial, 2 * P(X <= 2), X ~ Binomial(12, 1/2).
    by_hand = 2 * sum(math.comb(12, i) for i in range(3)) / 2**12
    assert by_hand == pytest.approx(0.0385742, abs=1e-7)
    assert mcnemar_exact(2, 10) == pytest.approx(by_hand, rel=1e-12)
    assert mcnemar_exact(10, 2) == pytest.approx(by_hand, rel=1e-12)
    assert mcnemar_exact(7, 7) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 2**6)


def test_paired_difference_matches_newcombe_square_and_add():
    # Fagerland, Lydersen & Laake, "Statistical analysis of contingency tables" (2017), ch. 8, Cavo et al. (2012):
    # 59 both, 6 only the first, 16 only the second, 80 neither: difference -0.0621, 95% CI -0.1186 to -0.0046.
    low, high = paired_difference(both=59, a_only=16, b_only=6, neither=80)
    assert (6 - 16) / 161 == pytest.approx(-0.0621, abs=5e-5)
    assert (low, high) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    low, high = paired_difference(both=25, a_only=0, b_only=0, neither=5)  # the same answers: 0, and room either side
    assert low < 0 < high and low == pytest.approx(-high, abs=1e-9)
    low, high = paired_difference(both=140, a_only=3, b_only=4, neither=6)
    assert low < 0 < high


def test_bootstrap_is_reproducible_with_its_seed():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 120)
    predicted = np.where(rng.random(120) < 0.7, labels, rng.integers(0, 3, 120))
    statistic = macro_f1_statistic(labels, predicted, 3)
    from sklearn.metrics import f1_score

    assert statistic(np.arange(120)[None])[0] == pytest.approx(f1_score(labels, predicted, average="macro"))
    first, again = bootstrap(statistic, 120), bootstrap(statistic, 120)
    assert first == again
    assert first[0] < f1_score(labels, predicted, average="macro") < first[1]
    assert bootstrap(statistic, 120, seed=1) != first
    assert bootstrap(macro_f1_statistic(labels, labels, 3), 120) is None  # no mistakes: nothing to resample


def test_every_accuracy_and_recall_gets_an_interval():
    labels = np.array([0] * 8 + [1] * 4)
    predicted = np.array([0] * 7 + [1] + [1] * 4)
    rank = (predicted != labels).astype(int)
    found = single_label_intervals(labels, predicted, rank, ["cat", "dog"], 2)
    assert found["accuracy"] == pytest.approx(wilson(11, 12), abs=1e-6)
    assert found["per_class.cat.recall"] == pytest.approx(wilson(7, 8), abs=1e-6)
    assert found["per_class.dog.recall"] == pytest.approx([wilson(4, 4)[0], 1.0], abs=1e-6)
    assert set(found) == {"accuracy", "top2_accuracy", "per_class.cat.recall", "per_class.dog.recall", "macro_avg.f1"}
    final = {"val_loss": 0.3, "val_accuracy": 0.75, "test_top3_accuracy": 1.0, "val_binary_accuracy": 0.9}
    intervals = accuracy_intervals(final, {"val": 20, "test": 10})
    assert set(intervals) == {"val_accuracy", "test_top3_accuracy"}  # not the loss, nor label-level binary_accuracy
    assert intervals["val_accuracy"] == pytest.approx(wilson(15, 20), abs=1e-6)
    assert intervals["test_top3_accuracy"] == pytest.approx(wilson(10, 10), abs=1e-6)


def test_metrics_json_has_a_version_and_older_files_still_read(tmp_path: Path):
    old = {"final": {"val_accuracy": 0.5, "val_loss": 0.7}, "images": {"val": 10}, "cache": {"mode": "images"}}
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    read = Metrics.read(tmp_path)
    assert read.format_version == 1 and read.intervals == {} and read.final["val_accuracy"] == 0.5
    read.intervals = {"val_accuracy": [0.2, 0.8]}
    read.write(tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["format_version"] == METRICS_FORMAT == 2 and written["intervals"] == {"val_accuracy": [0.2, 0.8]}
    assert Metrics.read(tmp_path).intervals == {"val_accuracy": [0.2, 0.8]}
