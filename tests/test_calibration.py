"""Temperature scaling and the threshold for unknown images, on constructed numbers (no model, no Keras)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlcli.evaluation.calibration import calibration_errors, fit_temperature
from tlcli.inference.unknown import FeatureBank, UnknownRule, calibrated, class_logits, score_images, threshold_at


def honest_logits(n: int = 3000, classes: int = 4, seed: int = 0):
    """Labels drawn from softmax(logits): a model calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, classes))
    probabilities = calibrated(logits, 1.0)
    labels = np.array([rng.choice(classes, p=row) for row in probabilities])
    return logits, labels


def test_an_over_confident_model_gets_a_temperature_above_one_and_a_lower_calibration_error():
    logits, labels = honest_logits()
    over_confident = 3.0 * logits
    temperature = fit_temperature(over_confident, labels)
    before, after = calibration_errors(over_confident, labels, temperature)
    assert 2.4 < temperature < 3.6 and after < before / 3
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.15)  # a calibrated model is left alone


def test_the_log_of_the_probabilities_gives_the_same_temperature_as_the_logits():
    """So an exported artifact, which outputs probabilities, calibrates as the run does."""
    logits, labels = honest_logits(n=500, seed=1)
    assert fit_temperature(np.log(calibrated(2 * logits, 1.0)), labels) == pytest.approx(
        fit_temperature(2 * logits, labels), rel=1e-3
    )


@pytest.mark.parametrize("accept", [0.5, 0.8, 0.9, 0.95, 0.99, 1.0])
@pytest.mark.parametrize("n", [7, 40, 101])
def test_the_threshold_accepts_the_accept_fraction_of_validation_within_one_image(accept, n):
    scores = np.random.default_rng(n).normal(size=n)
    accepted = int((scores >= threshold_at(scores, accept)).sum())
    assert math.ceil(accept * n - 1e-9) == accepted and abs(accepted - accept * n) <= 1


def test_accept_moves_the_threshold_on_the_stored_validation_scores():
    scores = tuple(float(s) for s in np.linspace(0, 1, 21))
    rule = UnknownRule("msp", 1.5, 0.95, threshold_at(np.array(scores), 0.95), scores)
    looser, stricter = rule.with_accept(0.99), rule.with_accept(0.5)
    assert looser.threshold < rule.threshold < stricter.threshold and stricter.accept == 0.5
    assert int(stricter.accepts(np.array(scores)).sum()) == 11
    assert UnknownRule.from_dict(rule.to_dict()).threshold == rule.threshold


def test_feature_scores_rank_images_far_from_the_training_features_below_near_ones():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 16)) * 4
    train_labels = np.repeat(np.arange(3), 30)
    bank = FeatureBank.of(centres[train_labels] + rng.normal(size=(90, 16)), train_labels)
    near = centres[[0, 1, 2]] + rng.normal(size=(3, 16))
    far = -centres[[0, 1, 2]] + rng.normal(size=(3, 16))
    logits = np.zeros((3, 3))
    for name in ("knn", "mahalanobis"):
        assert score_images(name, logits, near, bank).min() > score_images(name, logits, far, bank).max(), name


def test_energy_and_msp_are_higher_for_a_confident_image():
    logits = np.array([[8.0, 0.0, 0.0], [0.5, 0.4, 0.3]])
    for name in ("msp", "energy"):
        high, low = score_images(name, logits, temperature=2.0)
        assert high > low, name
    p = calibrated(logits, 2.0).max(axis=1)
    assert score_images("msp", logits, temperature=2.0) == pytest.approx(np.log(p / (1 - p)))  # msp's log-odds
    confident = np.array([[60.0, 0.0], [40.0, 0.0]])  # p = 1.0 for both in floating point, yet ordered
    assert score_images("msp", confident)[0] > score_images("msp", confident)[1]


def test_a_sigmoid_heads_logit_gives_its_probabilities_and_a_symmetric_energy():
    logits = class_logits(np.array([[-5.0], [5.0], [0.0]]), binary=True)
    assert calibrated(logits, 1.0)[:, 1] == pytest.approx(1 / (1 + np.exp([5.0, -5.0, 0.0])))
    confident_0, confident_1, undecided = score_images("energy", logits)
    assert confident_0 == pytest.approx(confident_1) and confident_0 > undecided
