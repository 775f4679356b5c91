"""`tlcli tune`'s pure pieces, without a study or a trained run: folds, their number, storage URLs and pruners."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest


def test_fold_splits_hold_every_image_out_exactly_once_stratified():
    """Split out of the cross-validated study test (tests/test_tune.py): the folds need no study to be checked."""
    from tlcli.tuning.objective import fold_splits

    x = np.arange(72) % 3
    splits = fold_splits(x, 5, seed=0)
    assert sorted(np.concatenate([held for _, held in splits]).tolist()) == list(
        range(72)
    )  # every image held out exactly once
    assert all(
        sorted(np.bincount(x[held], minlength=3)) in ([4, 5, 5], [5, 5, 5], [4, 4, 5]) for _, held in splits
    )  # stratified


def test_folds_auto_cross_validates_small_sets_only():
    from tlcli.tuning.objective import AUTO_FOLDS_BELOW, resolve_folds

    assert resolve_folds("auto", AUTO_FOLDS_BELOW - 1, flips=False)[0] == 5
    assert resolve_folds("auto", AUTO_FOLDS_BELOW, flips=False) == (
        1,
        f"on the validation split ({AUTO_FOLDS_BELOW} training + validation images: enough)",
    )
    assert resolve_folds(3, 5000, flips=False)[0] == 3 and resolve_folds(1, 10, flips=False)[0] == 1
    assert resolve_folds(10, 4, flips=False)[0] == 4  # never more folds than images
    assert resolve_folds("auto", 100, flips=True)[0] == 1  # the flipped copies exist for the training split only


def test_storage_urls_and_pruners():
    if os.environ.get("CI") != "true":  # as tests/test_tune.py: CI has the tune extra, elsewhere it may be absent
        pytest.importorskip("optuna")
    from optuna.storages._heartbeat import is_heartbeat_enabled

    from tlcli.errors import ConfigError, UserError
    from tlcli.tuning.study import make_pruner, open_storage, redact

    assert redact("postgresql://tlcli:secret@db.example:5432/studies") == "postgresql://tlcli@db.example:5432/studies"
    assert is_heartbeat_enabled(
        open_storage(f"sqlite:///{tempfile.mkdtemp()}/s.db")
    )  # a killed process's trial is failed by its silence
    with pytest.raises(UserError, match="expected an RDB URL"):
        open_storage("redis://localhost")
    assert (
        type(make_pruner("hyperband", {})).__name__ == "HyperbandPruner"
        and type(make_pruner("none", {})).__name__ == "NopPruner"
    )
    with pytest.raises(ConfigError, match="tune.pruner_args: not accepted"):
        make_pruner("median", {"n_startup": 3})
