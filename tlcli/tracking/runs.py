"""A training run in MLflow: one MLflow run per run folder, continued by every resume and evaluation.

Names (README "Experiment tracking: MLflow"): per epoch, history.csv's columns
(`loss`, `accuracy`, `val_loss`, `val_accuracy`, `learning_rate`, `seconds`,
`phase_epoch`, ...) at step = the run's global epoch, plus `phase` (0 train,
1 fine_tune); at the end `final_<figure>` and `best_<figure>` (`best_epoch`),
`wall_time_s`, `images_per_second`; an evaluation's `eval_<dataset>_<figure>`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcli.progress import Reporter
from tlcli.runs.provenance import git_state, recorded_fingerprint
from tlcli.runs.records import read_run_config, read_run_record, record_tracking
from tlcli.tracking.client import MlflowRun, connect, continue_run, flatten, numeric, start_run
from tlcli.tracking.seam import RunStart
from tlcli.tracking.settings import TrackingRequest, TrackingSettings, resolve
from tlcli.version import __version__

PHASES = {"train": 0, "fine_tune": 1}
STEP_KEY = "phase"  # logged every epoch: its last step is the last epoch logged
RUN_FILES = (
    "config.yaml",
    "metrics.json",
    "history.csv",
    "curves.png",
    "data_problems.json",
    "dataset.json",
    "selection.json",
    "skipped_files.json",
    "labels.json",
    "model.json",
    "MODEL_CARD.md",
)
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def failure_warning(reporter: Reporter, what: str = "training goes on; the run folder is written as always"):
    def warn(reason: str) -> None:
        reporter.warn(f"MLflow tracking stopped after an error ({reason}); {what}")

    return warn


@dataclass
class RunTracking:
    """The MLflow run of one run folder, as training logs into it."""

    tracker: MlflowRun
    run_dir: Path
    logged: int = 0  # the last global epoch the MLflow run has

    def log_epoch(self, row: dict[str, Any]) -> None:
        """One history row, once its checkpoint is on disk; an epoch the run already has is skipped."""
        epoch = int(row["epoch"])
        if epoch <= self.logged or not self.tracker.active:
            return
        values = numeric({k: v for k, v in row.items() if k != "epoch"})
        values[STEP_KEY] = float(PHASES.get(str(row.get("phase")), len(PHASES)))
        self.tracker.log_metrics(values, epoch)
        if self.tracker.failed is None:
            self.logged = epoch

    def log_completed(self, metrics, model=None) -> None:
        """The final and best figures, the run folder's files, the validation report, and the model."""
        tracker = self.tracker
        if not tracker.active:
            return
        figures = {f"final_{k}": v for k, v in metrics.final.items()} | {
            f"best_{k}": v for k, v in numeric(metrics.best).items()
        }
        figures |= numeric(
            {
                "wall_time_s": metrics.wall_time_s,
                "images_per_second": metrics.images_per_second,
                "peak_memory_mb": metrics.peak_memory_mb,
            }
        )
        tracker.log_metrics(numeric(figures), int(metrics.epochs.get("total", 0)))
        tracker.set_tags({"tlcli.best_phase": metrics.best.get("phase", ""), **_fingerprint(self.run_dir)})
        tracker.log_files(self.run_dir / name for name in RUN_FILES)
        for report in sorted((self.run_dir / "eval").glob("*")) if (self.run_dir / "eval").is_dir() else ():
            if report.is_dir():
                tracker.call("log_artifacts", tracker.run_id, str(report), f"eval/{report.name}")
        if model is not None:
            tracker.log_keras_model(model)

    def end(self, status: str) -> None:
        self.tracker.set_tags({"tlcli.status": status})
        self.tracker.terminate(MLFLOW_STATUS.get(status, "FINISHED"))
        self.save()

    def save(self) -> None:
        """run.json's `tracking.mlflow`; the run id of a store that could not be asked stays (a later command finds
        the MLflow run again once the store is back)."""
        with contextlib.suppress(OSError):  # a full disk: the run's own error says so, not this record
            record = self.tracker.record()
            recorded = (read_run_record(self.run_dir).tracking or {}).get("mlflow") or {}
            record |= {key: recorded.get(key) for key in ("run_id", "experiment_id") if record[key] is None}
            record_tracking(self.run_dir, {"mlflow": record})


def start_tracking(start: RunStart, request: TrackingRequest | None) -> RunTracking | None:
    """The run folder's MLflow run (the one it has, when it has one), or None when MLflow tracking is off."""
    record = read_run_record(start.run_dir)
    recorded = (record.tracking or {}).get("mlflow") or {}
    settings = resolve(start.config, request, recorded.get("tracking_uri"))
    if settings is None:
        return None
    tracking = _open(settings, start, recorded.get("run_id"))
    if start.overrides is not None:  # a resume: parameters cannot change, so what --set changed is a tag
        tracking.tracker.set_tags({f"tlcli.resume.{len(record.resumes)}": " ".join(start.overrides) or "(no --set)"})
    return tracking


def _open(settings: TrackingSettings, start: RunStart, run_id: str | None) -> RunTracking:
    tracker = connect(settings)
    tracking = RunTracking(tracker, start.run_dir)
    tracker.listen(lambda reason: (failure_warning(start.reporter)(reason), tracking.save()))
    if run_id and continue_run(tracker, run_id):
        tracking.logged = tracker.last_step(STEP_KEY)
        tracker.set_tags({"tlcli.status": "running"})
    elif tracker.failed is None:
        start_run(tracker, start.run_dir.name, _start_tags(settings, start))
        tracker.log_params(flatten({k: v for k, v in start.config.to_dict().items() if k != "tracking"}))
    if tracker.active:
        start.reporter.info(f"MLflow: run {tracker.run_id} in experiment {settings.experiment} at {settings.shown_uri}")
    tracking.save()
    return tracking


def _start_tags(settings: TrackingSettings, start: RunStart) -> dict[str, str]:
    git = git_state(Path.cwd()) or {}
    tags = {
        **settings.tags,
        "tlcli.version": __version__,
        "tlcli.base": start.config.base.run or start.config.base.name,
        "tlcli.run_dir": str(start.run_dir.absolute()),
        "tlcli.device": start.device,
        "tlcli.status": "running",
    }
    if git:
        tags |= {"mlflow.source.git.commit": git["commit"], "tlcli.git_dirty": str(git["dirty"]).lower()}
    return tags


def _fingerprint(run_dir: Path) -> dict[str, str]:
    found = recorded_fingerprint(run_dir)
    return {"tlcli.dataset_fingerprint": found[0]} if found else {}


def log_evaluation(run_dir: Path, evaluation, reporter: Reporter) -> str | None:
    """An evaluation's figures (`eval_<dataset>_<figure>`) and report files, into the run's MLflow run.

    The run id, or None when the run is not tracked. A failure warns once and never fails the evaluation."""
    record = read_run_record(run_dir)
    recorded = (record.tracking or {}).get("mlflow") or {}
    if not recorded.get("run_id"):
        return None
    config = read_run_config(run_dir)
    settings = (
        resolve(config, None, recorded.get("tracking_uri"))
        if config is not None
        else TrackingSettings(recorded["tracking_uri"], record.name)
    )
    if settings is None:
        return None
    tracker = connect(settings, on_failure=failure_warning(reporter, "the evaluation report is written as always"))
    if not continue_run(tracker, recorded["run_id"], running=False):
        if tracker.failed is None:
            reporter.warn(
                f"MLflow: run {recorded['run_id']} is not in {settings.shown_uri}; the evaluation is not logged there"
            )
        return None
    name = str(evaluation.metrics.get("dataset", {}).get("name", "data"))
    figures = _eval_figures(evaluation.metrics)
    tracker.log_metrics({f"eval_{name}_{k}": v for k, v in figures.items()}, 0)
    tracker.call("log_artifacts", tracker.run_id, str(evaluation.eval_dir), f"eval/{Path(evaluation.eval_dir).name}")
    return tracker.run_id if tracker.failed is None else None


def _eval_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline figures of an evaluation's metrics.json: top-level numbers, and one level down
    (`macro_avg.f1`, `calibration.ece`)."""
    figures = {k: v for k, v in numeric(metrics).items() if k != "format_version"}  # the file's, not a figure
    for key, value in metrics.items():
        if isinstance(value, dict) and key not in ("per_class", "dataset", "model", "gates"):
            figures |= {f"{key}.{k}": v for k, v in numeric(value).items()}
    return figures


__all__ = ["RunTracking", "log_evaluation", "start_tracking"]
