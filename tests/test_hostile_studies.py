"""Hostile inputs to `tlcli tune` (second round): a study whose every trial fails, a resumed study whose database is
gone, search spaces that validation used to accept and Optuna cannot draw from, a study killed outright.

Each study is a head on a frozen SmallCNN from scratch (16 px images, a few epochs): seconds a study.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_image_folder, one_line, snapshot, tiny_config, write_config

optuna = pytest.importorskip("optuna") if os.environ.get("CI") != "true" else __import__("optuna")

pytestmark = pytest.mark.timeout(300)

SPACE = {"train.learning_rate": {"low": 1.0e-3, "high": 0.1, "log": True}}


def head_study(root: Path, classes: dict[str, int] | None = None, **tune) -> dict:
    """A study whose trials train a head on the cached features of a frozen (untrained) SmallCNN."""
    data = make_image_folder(root / "data", classes or {"a": 12, "b": 12, "c": 3})
    raw = tiny_config(data, root / "runs", name="hostile")
    raw["base"] = {**raw["base"], "trainable": "none"}
    raw["train"] = {"learning_rate": 0.01, "max_epochs": 3, "l2": 0.0}
    raw["tune"] = {"trials": 2, "folds": 1, "space": SPACE, **tune}
    return raw


def tune_folders(runs_dir: Path) -> list[Path]:
    return sorted(runs_dir.glob("*-tune")) if runs_dir.is_dir() else []


# ----------------------------------------------------------------------------- spaces Optuna cannot draw from


@pytest.mark.parametrize(
    "tune, words",
    [
        (
            {"space": {"train.learning_rate": {"low": 1.0e-3, "high": float("inf")}}},
            "tune.space: train.learning_rate: high must be a finite number, got inf",
        ),
        (
            {"space": {"train.learning_rate": {"low": float("nan"), "high": 0.1}}},
            "tune.space: train.learning_rate: low must be a finite number, got nan",
        ),
        (
            {"space": {"data.batch_size": {"low": 4, "high": 8, "step": 0.5}}},
            "tune.space.data.batch_size: step 0.5 is not a whole number (data.batch_size takes integers)",
        ),
        (
            {"folds": 5},
            "tune.folds: 5 folds, but class 'c' has 3 training + validation images; set tune.folds to 3 or fewer",
        ),
    ],
    ids=["infinite-bound", "nan-bound", "fractional-step", "folds-over-smallest-class"],
)
def test_a_space_optuna_cannot_draw_from_is_exit_2_naming_the_key(cli, tmp_path, tune, words):
    """Each used to pass validation and then crash the study (an internal error, its tune folder left behind) or, for
    the folds, silently score some folds without the small class."""
    raw = head_study(tmp_path, **tune)
    raw["data"]["batch_size"] = 4
    result = cli("tune", write_config(tmp_path / "study.yaml", raw))
    assert result.exit_code == 2 and words in one_line(result), result.stderr
    assert tune_folders(tmp_path / "runs") == []  # no trial ran, no tune folder is left


def test_folds_auto_never_asks_for_more_folds_than_the_smallest_class_has():
    from tlcli.tuning.objective import resolve_folds

    assert resolve_folds("auto", 27, False, ("c", 3)) == (
        3,
        "by 3-fold cross-validation over the 27 training + validation images (tune.folds auto, but class 'c' has 3 "
        "images)",
    )
    assert resolve_folds("auto", 25, False, ("c", 1))[0] == 1 and resolve_folds(3, 27, False, ("c", 3))[0] == 3


# ----------------------------------------------------------------------------- a study whose every trial fails


def test_a_study_whose_every_trial_fails_exits_1_with_the_first_reason(cli, tmp_path, monkeypatch):
    """It used to exit 0 as `completed`, and --train-best then trained nothing and said nothing."""
    from tlcli.errors import TrainingError
    from tlcli.tuning.objective import HeadTrials

    def diverges(self, trial, config, metric):
        raise TrainingError(f"trial {trial.number}: the training loss diverged (nan at epoch 1)")

    monkeypatch.setattr(HeadTrials, "run", diverges)
    config = write_config(tmp_path / "study.yaml", head_study(tmp_path))
    result = cli("tune", config, "--train-best", "--json")
    assert result.exit_code == 1, result.stderr
    line = one_line(result)
    assert "all 2 trials failed; the first, trial 0: trial 0: the training loss diverged (nan at epoch 1)" in line
    assert "--train-best has nothing to train" in line
    [folder] = tune_folders(tmp_path / "runs")
    assert json.loads(result.stdout) == {"error": line.removeprefix("error: "), "exit_code": 1, "tune_dir": str(folder)}
    record = json.loads((folder / "tune.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("all 2 trials failed; the first, trial 0:")
    assert record["trials"]["fail"] == 2 and record["best"] is None
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [folder.name]  # no run folder was trained


def test_train_best_says_so_when_no_trial_completed(cli, tmp_path, monkeypatch):
    """Pruned trials are no failure (exit 0), but there is no best config either: --train-best says so."""
    from tlcli.tuning.objective import HeadTrials

    def pruned(self, trial, config, metric):
        raise optuna.TrialPruned("pruned at epoch 1")

    monkeypatch.setattr(HeadTrials, "run", pruned)
    result = cli("tune", write_config(tmp_path / "study.yaml", head_study(tmp_path)), "--train-best")
    assert result.exit_code == 0, result.stderr
    assert "--train-best: nothing to train, no trial completed (2 pruned, 0 failed)" in result.stderr
    assert [p.name.endswith("-tune") for p in (tmp_path / "runs").iterdir()] == [True]


# ----------------------------------------------------------------------------- --resume without the study's database


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    """READ-ONLY. A finished one-trial study (copy it before changing it)."""
    from tlcli import load_config, tune

    root = tmp_path_factory.mktemp("finished-study")
    return tune(load_config(head_study(root, trials=1))).tune_dir


def test_resume_refuses_a_study_whose_database_is_gone(cli, finished_study, tmp_path):
    """It used to start a new study over the old records (a new study.db, trial 0 again, tune.json rewritten)."""
    folder = Path(shutil.copytree(finished_study, tmp_path / finished_study.name))
    (folder / "study.db").unlink()
    before = snapshot(folder)
    result = cli("tune", "--resume", folder)
    assert result.exit_code == 2 and one_line(result) == (
        f"error: {folder / 'study.db'}: the study's database is missing, so study hostile cannot be resumed; "
        f"start a new study folder: tlcli tune {folder / 'config.yaml'}"
    )
    assert snapshot(folder) == before  # no empty study.db, tune.json untouched


def test_resume_refuses_a_database_that_holds_another_study(cli, finished_study, tmp_path):
    folder = Path(shutil.copytree(finished_study, tmp_path / finished_study.name))
    (folder / "study.db").unlink()
    optuna.create_study(study_name="another", storage=f"sqlite:///{folder / 'study.db'}")
    before = snapshot(folder)
    result = cli("tune", "--resume", folder)
    assert result.exit_code == 2, result.stderr
    assert f"{folder / 'study.db'}: holds no study hostile, so it cannot be resumed; start a new study folder" in (
        one_line(result)
    )
    assert snapshot(folder) == before


# ----------------------------------------------------------------------------- a study killed outright


def finished_in(database: Path) -> int:
    """Finished trials in a study's SQLite file (0 while it is being created)."""
    try:
        study = optuna.load_study(study_name="hostile", storage=f"sqlite:///{database}")
        return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    except Exception:  # noqa: BLE001  (not created yet)
        return 0


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_sigkilled_study_lists_the_trials_it_finished(cli, tmp_path):
    """tune.json used to be written when the study started (0 trials) and when it ended: a killed study listed 0."""
    config = write_config(tmp_path / "study.yaml", head_study(tmp_path, trials=200))
    process = subprocess.Popen(
        [sys.executable, "-c", "from tlcli.cli import main; main()", "tune", str(config), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        deadline = time.monotonic() + 240
        database = None
        while time.monotonic() < deadline and process.poll() is None:
            database = next(iter((tmp_path / "runs").glob("*-tune/study.db")), None)
            # Optuna runs a trial's callbacks before the next trial: with 2 finished, the first was recorded.
            if database is not None and finished_in(database) >= 2:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    from tlcli.runs.listing import list_studies

    [study] = list_studies(tmp_path / "runs")
    assert study.status == "interrupted" and 1 <= study.finished <= finished_in(database) and study.target == 200
    assert study.best_trial is not None and study.best_value is not None
    table = cli("runs", "--runs-dir", tmp_path / "runs")
    assert table.exit_code == 0 and f"{study.finished}/200" in table.stdout
