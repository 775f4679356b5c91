"""Likely label errors (tlcli.audit.labels): out-of-fold probabilities and confident learning, on synthetic blobs."""

from __future__ import annotations

import numpy as np
import pytest

from tlcli.audit.labels import (
    LabelSuspects,
    confident_learning_issues,
    find_label_suspects,
    fit_probe,
    out_of_fold_probabilities,
    probe_probabilities,
)
from tlcli.errors import DataError


def blobs(per_class: int = 20, classes: int = 3, dims: int = 8, spread: float = 0.6, seed: int = 0):
    """Well-separated Gaussian blobs: class k centred at 3 * e_k."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    centres = np.zeros((classes, dims))
    centres[np.arange(classes), np.arange(classes)] = 3.0
    features = centres[labels] + rng.normal(0, spread, (len(labels), dims))
    return features.astype(np.float32), labels


def flip(labels: np.ndarray, rows, classes: int = 3) -> np.ndarray:
    noisy = labels.copy()
    noisy[list(rows)] = (labels[list(rows)] + 1) % classes
    return noisy


def test_a_planted_flip_is_ranked_first_with_the_label_the_data_suggests():
    features, labels = blobs()
    noisy = flip(labels, [7])  # a class-0 image labelled 1
    found = find_label_suspects(features, noisy, folds=4)
    assert isinstance(found, LabelSuspects) and found.folds == 4
    first = found.suspects[0]
    assert (first.index, first.given, first.suggested) == (7, 1, 0)
    assert first.confidence > 0.5 > first.given_probability
    assert found.to_dict()["suspects"][0]["index"] == 7 and found.to_dict()["count"] == len(found.suspects)


def test_out_of_fold_probabilities_come_from_a_probe_that_never_saw_the_row():
    """Random labels on high-dimensional noise: a probe that saw a row memorizes its label, one that did not cannot
    (so the out-of-fold probability of the given label stays near chance); and each fold refits to the same figures."""
    rng = np.random.default_rng(1)
    features = rng.normal(size=(40, 300)).astype(np.float32)
    labels = np.tile([0, 1], 20)
    oof = out_of_fold_probabilities(features, labels, folds=4, seed=2)
    rows = np.arange(len(labels))
    seen = probe_probabilities(fit_probe(features, labels), features, 2)
    assert seen[rows, labels].mean() > 0.6  # in-sample: memorized
    assert oof.probabilities[rows, labels].mean() < 0.55  # out of fold: chance
    assert sorted(np.unique(oof.fold)) == [0, 1, 2, 3] and oof.folds == 4
    for number in range(oof.folds):
        held = oof.fold == number
        refit = probe_probabilities(fit_probe(features[~held], labels[~held]), features[held], 2)
        np.testing.assert_allclose(refit, oof.probabilities[held], atol=1e-6)


def test_groups_are_never_split_across_folds():
    features, labels = blobs(per_class=24)
    groups = [f"g{i // 3}" for i in range(len(labels))]  # 24 groups of 3 images, each within one class
    oof = out_of_fold_probabilities(features, labels, folds=4, groups=groups)
    for group in set(groups):
        assert len({fold for fold, g in zip(oof.fold, groups) if g == group}) == 1, group
    assert oof.folds == 4


def test_a_class_held_out_whole_by_its_groups_is_not_judged():
    """Class 2 is one group: its probe never saw the class, so its images get no verdict (instead of all looking
    mislabelled), and the note says why; the other classes are still judged."""
    features, labels = blobs(per_class=20)
    noisy = flip(labels, [7])
    groups = [f"g{i // 4}" if label < 2 else "class 2" for i, label in enumerate(labels)]
    oof = out_of_fold_probabilities(features, noisy, folds=4, groups=groups)
    assert oof.unjudged == tuple(range(40, 60)) and "20 images of class 2 cannot be judged" in oof.note
    for method in ("own", "auto"):
        found = find_label_suspects(None, noisy, out_of_fold=oof, method=method)
        assert found.suspects[0].index == 7 and all(s.index < 40 for s in found.suspects) and found.images == 40


def test_fewer_folds_when_a_class_is_small_and_a_refusal_when_it_has_one_image():
    features, labels = blobs(per_class=10)
    keep = np.r_[np.arange(20), 20, 21, 22]  # class 2 keeps 3 images
    oof = out_of_fold_probabilities(features[keep], labels[keep], folds=5)
    assert oof.folds == 3 and "smallest class has 3" in oof.note
    with pytest.raises(DataError, match="^labels: class 2 has 1 image"):
        out_of_fold_probabilities(features[:21], labels[:21])
    with pytest.raises(DataError, match="^features:"):
        out_of_fold_probabilities(features[:5], labels)
    features[4, 1] = np.nan
    with pytest.raises(DataError, match="^features: row 4 is not finite"):
        out_of_fold_probabilities(features, labels)


def test_the_own_implementation_agrees_with_cleanlab():
    pytest.importorskip("cleanlab")
    from cleanlab.filter import find_label_issues

    features, labels = blobs(per_class=30)
    noisy = flip(labels, [3, 70])
    oof = out_of_fold_probabilities(features, noisy, folds=4)
    for filter_by in ("low_self_confidence", "prune_by_noise_rate"):
        own = find_label_suspects(None, noisy, out_of_fold=oof, method="own", filter_by=filter_by)
        theirs = find_label_suspects(None, noisy, out_of_fold=oof, method="cleanlab", filter_by=filter_by)
        assert own.method.startswith("confident learning") and theirs.method.startswith("cleanlab 2")
        assert own.suspects == theirs.suspects and {s.index for s in own.suspects} == {3, 70}
    rng = np.random.default_rng(5)  # and on noisier probabilities, where the thresholds and pruning counts matter
    for trial in range(12):
        filter_by, k = ("low_self_confidence", "prune_by_noise_rate")[trial % 2], 3 + trial % 3
        given = rng.integers(0, k, 200)
        probabilities = rng.dirichlet(np.ones(k) * 0.7, 200)
        probabilities[np.arange(200), given] += rng.uniform(0, 1.5, 200)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        expected = find_label_issues(
            given, probabilities, filter_by=filter_by, return_indices_ranked_by="self_confidence", n_jobs=1
        )
        assert len(expected) > 3 and list(confident_learning_issues(given, probabilities, filter_by)) == list(expected)


def test_a_single_judged_class_is_refused_as_data_not_passed_to_confident_learning():
    from tlcli.audit.labels import OutOfFold

    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.tile([0.6, 0.4], (6, 1))
    held_out = OutOfFold(probabilities, np.array([0, 0, 0, 1, 1, 1]), 2, unjudged=(3, 4, 5))  # class 1 never judged
    with pytest.raises(DataError, match="single class"):
        find_label_suspects(None, labels, out_of_fold=held_out)
