"""Per-class learning curves (tlcli.audit.curve) on synthetic embeddings: which classes still climb."""

from __future__ import annotations

import numpy as np
import pytest

from tlcli.audit.curve import learning_curve, nested_subsets, plot_learning_curve
from tlcli.errors import UserError

NAMES = ("easy", "plain", "hard")


def twins(easy: int = 40, pairs: int = 40, seed: int = 0):
    """Two blobs, "easy" (dimension 0 high) and "plain" (dimension 1 high), and a "hard" class made of twin images that
    look like "easy" except for a dimension of their own (one per pair): the probe recognizes a hard image only when it
    trained on its twin, which happens more often the more training images it gets, so "hard" keeps climbing while
    the blobs are right at every fraction."""
    rng = np.random.default_rng(seed)
    features = np.zeros((2 * easy + 2 * pairs, 2 + pairs))
    features[:easy, 0] = 5.0
    features[easy : 2 * easy, 1] = 5.0
    hard = np.arange(2 * easy, len(features))
    features[hard, 0] = 5.0
    features[hard, 2 + np.arange(2 * pairs) // 2] = 10.0
    features[:, :2] += rng.normal(0, 0.5, (len(features), 2))
    labels = np.repeat([0, 1, 2], [easy, easy, 2 * pairs])
    groups = np.concatenate([np.arange(2 * easy), 2 * easy + np.arange(2 * pairs) // 2])  # a twin pair is one group
    return features.astype(np.float32), labels, groups


def test_a_class_that_keeps_improving_is_climbing_and_an_easy_one_is_within_noise(tmp_path):
    features, labels, _ = twins()
    curve = learning_curve(features, labels, NAMES, folds=5)
    easy, plain, hard = curve.classes
    assert curve.climbing == ("hard",) and hard.gain > hard.standard_error
    assert hard.accuracy[-1] > hard.accuracy[0] and "label more" in hard.advice and hard.advice.startswith("hard: +")
    assert not easy.climbing and easy.advice.startswith("easy: within noise")
    assert easy.images == (8.0, 16.0, 24.0, 32.0) and easy.scored == 40 and len(easy.accuracy) == 4
    assert curve.to_dict()["climbing"] == ["hard"] and len(curve.accuracy) == 4
    png = plot_learning_curve(curve, tmp_path / "curve" / "learning_curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_groups_stay_whole_so_a_twin_never_teaches_its_sibling():
    """With each twin pair one group, the two are always held out together: more images never recognize a pair."""
    features, labels, groups = twins()
    curve = learning_curve(features, labels, NAMES, folds=5, groups=groups)
    assert curve.climbing == () and curve.classes[2].accuracy == (0.0, 0.0, 0.0, 0.0)


def test_subsets_are_nested_and_stratified():
    labels = np.repeat([0, 1, 2], [8, 20, 40])
    subsets = nested_subsets(labels, (0.25, 0.5, 0.75, 1.0), np.random.default_rng(0))
    for smaller, larger in zip(subsets, subsets[1:]):
        assert set(smaller) < set(larger)
    assert [np.bincount(labels[s]).tolist() for s in subsets] == [[2, 5, 10], [4, 10, 20], [6, 15, 30], [8, 20, 40]]


def test_bad_fractions_are_refused_naming_the_argument():
    features, labels, _ = twins(easy=6, pairs=3)
    with pytest.raises(UserError, match="^fractions:"):
        learning_curve(features, labels, NAMES, fractions=(0.5, 0.25))


def test_repeats_average_cross_validations_and_one_image_gained_is_not_climbing():
    features, labels, _ = twins()
    curve = learning_curve(features, labels, NAMES, folds=5, repeats=2)
    assert curve.repeats == 2 and curve.climbing == ("hard",) and curve.classes[0].images == (8.0, 16.0, 24.0, 32.0)
    from tlcli.audit.curve import _class_curve

    one = np.zeros((2, 100))
    one[1, 0] = 1.0  # a single image gained, none lost
    assert not _class_curve("x", one, np.array([10.0, 20.0]), "50%").climbing
    one[1, 1] = 1.0  # two
    assert _class_curve("x", one, np.array([10.0, 20.0]), "50%").climbing
