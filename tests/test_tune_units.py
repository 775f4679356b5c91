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


def _study(pruner=None):
    optuna = pytest.importorskip("optuna") if os.environ.get("CI") != "true" else __import__("optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna, optuna.create_study(direction="maximize", pruner=pruner)


def test_successive_halving_prunes_a_fine_tuning_trial_that_falls_behind_at_its_first_fine_tuning_epoch():
    """A full trial reports its last phase's epochs (step N: fine-tuning epoch N), so trials are compared at the same
    fine-tuning epoch whatever their head phase took; the multi-fidelity pruner stops the bad one at the first rung."""
    from tlcli.tuning.objective import PruningReporter
    from tlcli.tuning.study import make_pruner

    optuna, study = _study(make_pruner("successive_halving", {"min_resource": 1, "reduction_factor": 2}))
    for head_epochs in (3, 5, 2, 4):
        trial = study.ask()
        reporter = PruningReporter(trial, "val_accuracy", "fine_tune")
        for epoch in range(1, head_epochs + 1):  # the head phase: not reported
            reporter.epoch_end("train", epoch, head_epochs, {"val_accuracy": 0.5})
        for epoch in range(1, 5):
            reporter.epoch_end("fine_tune", epoch, 4, {"val_accuracy": 0.8 + epoch / 100})
        assert sorted(trial.storage.get_trial(trial._trial_id).intermediate_values) == [1, 2, 3, 4]
        study.tell(trial, 0.84)
    bad = study.ask()
    reporter = PruningReporter(bad, "val_accuracy", "fine_tune")
    reporter.epoch_end("train", 1, 1, {"val_accuracy": 0.9})
    with pytest.raises(optuna.TrialPruned, match="fine_tune epoch 1"):
        reporter.epoch_end("fine_tune", 1, 4, {"val_accuracy": 0.2})
    assert type(make_pruner("successive_halving", {})).__name__ == "SuccessiveHalvingPruner"


def test_the_budget_stops_starting_trials_and_says_so_and_a_resumed_study_starts_none():
    import time

    from tlcli.tuning.study import StudyProgress, run_trials, spent_minutes

    _, study = _study()

    def objective(trial):
        time.sleep(0.05)
        return trial.suggest_float("x", 0, 1)

    budget = 0.1 / 60  # minutes: the trials' durations together, here 0.1 s
    loop = run_trials(study, objective, total=50, timeout=None, progress=StudyProgress(), warn=print, budget=budget)
    assert loop.stopped_by == "budget" and 2 <= loop.ran < 5 and spent_minutes(study) >= budget
    again = run_trials(study, objective, total=50, timeout=None, progress=StudyProgress(), warn=print, budget=budget)
    assert (again.ran, again.stopped_by) == (0, "budget")  # --resume: the budget counts every earlier trial
    loose = run_trials(
        study, objective, total=len(study.trials) + 1, timeout=None, progress=StudyProgress(), warn=print, budget=10.0
    )
    assert loose.stopped_by == "trials"
