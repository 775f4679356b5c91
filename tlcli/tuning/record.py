"""A study's records: what `tune` returns (`TuneResult`), its tune.json (`TuneRecord`) and each trial's (`TrialRecord`).

tune.json is `TuneResult.to_dict()` plus the file's format and whether the storage is the tune folder's own
SQLite file (`--resume` reopens it from wherever the folder has moved). A trial's own figures travel beside
Optuna's value, parameters and state as the trial's user attributes, the one channel every process sharing the
study can read: `TrialRecord.save` writes them and `TrialRecord.of` reads them, nothing else touches them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcli.errors import RunError
from tlcli.runs.atomic import read_json, write_json_atomic
from tlcli.runs.metrics import TrainResult

TUNE_RECORD = "tune.json"
TUNE_FORMAT = "tlcli-tune"


@dataclass
class TuneResult:
    """What `tune` returns (and `tlcli tune --json` prints; tune.json holds the same)."""

    tune_dir: Path
    study: str
    storage: str  # without a password
    metric: str
    direction: str
    kind: str  # "head": trials train a head on cached features; "full": every trial trains as a run does
    why: str
    status: str  # running, completed, interrupted, failed (every finished trial failed: `error` says why)
    trials: dict[str, int] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None  # trial 0, the config as written
    best_config: Path | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    extraction: dict[str, Any] | None = None
    folds: int = 1  # head trials' scoring: 1, the validation split; k, k-fold cross-validation over train + validation
    fold_method: str | None = (
        None  # the folds' scikit-learn splitter: StratifiedKFold, StratifiedGroupKFold (data.group)
    )
    plots: dict[str, str] = field(default_factory=dict)
    started: str = ""
    pid: int | None = None
    train_best: TrainResult | None = None
    error: str | None = None  # why the study failed: every trial failed, and the first one's reason
    stopped_by: str = ""  # why this process started no more trials: trials, budget, timeout, ctrl-c ("": none to run)
    budget: dict[str, float] | None = None  # `tune.budget`: {"minutes": the budget, "spent": the trials' minutes}

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data |= {"tune_dir": str(self.tune_dir), "best_config": str(self.best_config) if self.best_config else None}
        if self.train_best is not None:
            result = self.train_best
            data["train_best"] = {
                "run_dir": str(result.run_dir),
                "final": result.metrics.final,
                "figures": result.metrics.figures,
                "refit": result.metrics.refit,
            }
        return data


# What tune.json must hold, with its type, for `--resume` to reopen the study; every other entry has a default
# (older tune folders lack the newer ones, `folds` for one).
_REQUIRED = {"study": str, "storage": str}
_TYPED = {
    "trials": dict,
    "best": dict,
    "baseline": dict,
    "timings_s": dict,
    "extraction": dict,
    "plots": dict,
    "budget": dict,
}


@dataclass
class TuneRecord:
    """tune.json: the study's `TuneResult`, and whether its storage is the tune folder's own study.db."""

    result: TuneResult
    storage_url_default: bool = False
    trained_best: dict[str, Any] | None = None  # tune.json's `train_best` as read (the run it names, its figures)

    @property
    def target(self) -> int | None:
        """The study's total of trials when it last ran (None: not recorded)."""
        target = self.result.trials.get("target")
        return int(target) if target else None

    def to_dict(self) -> dict[str, Any]:
        data = self.result.to_dict()
        if self.result.train_best is None and self.trained_best is not None:
            data["train_best"] = self.trained_best
        return data | {"format": TUNE_FORMAT, "storage_url_default": self.storage_url_default}

    def write(self, tune_dir: Path) -> None:
        write_json_atomic(tune_dir / TUNE_RECORD, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> TuneRecord:
        """Raises: RunError: a damaged tune.json, named in one line."""
        try:
            data = read_json(path)
        except Exception as exc:  # noqa: BLE001
            raise RunError(f"{path}: damaged ({type(exc).__name__}); it cannot be resumed") from None
        if not isinstance(data, dict) or any(not isinstance(data.get(k), t) for k, t in _REQUIRED.items()):
            raise RunError(f"{path}: damaged (no study or storage); it cannot be resumed")
        wrong = [k for k, t in _TYPED.items() if data.get(k) is not None and not isinstance(data[k], t)]
        if wrong:
            raise RunError(f"{path}: damaged ({wrong[0]} is not a mapping); it cannot be resumed")
        return cls(_result_of(data, path.parent), bool(data.get("storage_url_default")), data.get("train_best"))


def _result_of(data: dict[str, Any], tune_dir: Path) -> TuneResult:
    """The `TuneResult` tune.json holds (its `train_best` stays a summary: `TuneRecord.trained_best`)."""
    names = {f.name for f in dataclasses.fields(TuneResult)} - {"tune_dir", "best_config", "train_best"}
    result = TuneResult(Path(data.get("tune_dir") or tune_dir), "", "", "", "", "", "", "")
    for name in names & data.keys():
        setattr(result, name, data[name])
    result.best_config = Path(data["best_config"]) if data.get("best_config") else None
    return result


@dataclass
class TrialRecord:
    """What tlcli keeps of a trial beside Optuna's value, parameters and state; None: not recorded (yet).

    Stored as the trial's user attributes, one per field under the field's name (as tlcli has always stored them,
    so a study shared with, or started by, an older tlcli reads the same).
    """

    pins: dict[str, Any] | None = None  # the config's `auto` values, pinned for the trial (`tlcli.tuning.space.pins`)
    kind: str | None = None  # "head" or "full" (TuneResult.kind)
    backbone: str | None = None  # the trial's base: its name and arguments (`MobileNet {"alpha": 0.25}`), or its run
    epochs: int | None = None  # epochs trained (cross-validated: the folds' median)
    folds: int | None = None  # 1: scored on the validation split; k: the mean over k folds
    figures: dict[str, Any] | None = None  # the kept epoch's validation figures (folds: their means, and each fold's)
    error: str | None = None  # why the trial failed

    @property
    def cross_validated(self) -> bool:
        return (self.folds or 1) > 1

    def save(self, trial) -> None:
        """Store the fields that are set as `trial`'s user attributes (the others are left as they are)."""
        for name, value in dataclasses.asdict(self).items():
            if value is not None:
                trial.set_user_attr(name, value)

    @classmethod
    def of(cls, trial) -> TrialRecord:
        """The record stored on `trial` (an Optuna Trial or FrozenTrial); what is not there stays None."""
        attributes = trial.user_attrs
        return cls(**{f.name: attributes.get(f.name) for f in dataclasses.fields(cls)})
