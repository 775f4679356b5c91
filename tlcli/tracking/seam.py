"""The tracking seam: what training, evaluation and tuning tell a tracker, whichever tracker it is.

A `Tracker` is one backend (MLflow: `tlcli.tracking.mlflow_tracker`). It checks its store at start-up
(`--strict-tracking`), starts a `RunTracker` for a run folder, and logs an evaluation and a tuning study. A
`RunTracker` hears, while the run trains, each epoch once its checkpoint is on disk (`log_epoch`), the completed
run (`log_completed`) and how the run ended (`end`: completed, failed or interrupted).

Callers hold a `Trackers` (`tlcli.tracking.trackers()`): every backend at once, each deciding from the config, the
request and the run's record whether it is on; several run trackers are one `RunTrackers`. A tracker never raises
out of a log call: tracking must never lose or stall the work it records.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

from tlcli.config.schema import ExperimentConfig
from tlcli.progress import Reporter

__all__ = ["RunStart", "RunTracker", "RunTrackers", "StudyEnd", "Tracker", "Trackers", "suspended"]

_SUSPENDED = contextvars.ContextVar("tlcli_tracking_suspended", default=False)


@dataclass(frozen=True)
class RunStart:
    """A run folder about to train (or resume: `overrides` is then its `--set` list)."""

    run_dir: Path
    config: ExperimentConfig
    reporter: Reporter
    chief: bool = True  # several workers: only the chief tracks
    device: str = ""
    overrides: list[str] | None = None


@dataclass(frozen=True)
class StudyEnd:
    """A tuning study as its process ends: `result` is tune.json's content, `study` the Optuna study."""

    config: ExperimentConfig
    tune_dir: Path
    study: Any
    result: dict[str, Any]
    reporter: Reporter


class RunTracker(Protocol):
    """One run folder's run in a tracker."""

    def log_epoch(self, row: dict[str, Any]) -> None:
        """One history.csv row, once its checkpoint is on disk (an epoch the tracker has is skipped)."""

    def log_completed(self, metrics: Any, model: Any = None) -> None:
        """The run's `Metrics` (metrics.json) and its model, once the run folder is complete."""

    def end(self, status: str) -> None:
        """The run's outcome: `completed`, `failed` or `interrupted`."""


class Tracker(Protocol):
    """One tracking backend."""

    def check(self, config: ExperimentConfig) -> None:
        """`--strict-tracking`: raise a UserError now when the store cannot be used (else nothing)."""

    def start_run(self, start: RunStart) -> RunTracker | None:
        """The run's tracker (a new run, or the one a resumed run has); None when this backend is off."""

    def log_evaluation(self, run_dir: Path, evaluation: Any, reporter: Reporter) -> None:
        """An `Evaluation` of a run, into that run's tracked run (when it has one)."""

    def log_study(self, study: StudyEnd) -> None:
        """A tuning study and its trials."""


@dataclass
class RunTrackers:
    """Several run trackers as one."""

    members: list[RunTracker]

    def log_epoch(self, row: dict[str, Any]) -> None:
        for member in self.members:
            member.log_epoch(row)

    def log_completed(self, metrics: Any, model: Any = None) -> None:
        for member in self.members:
            member.log_completed(metrics, model)

    def end(self, status: str) -> None:
        for member in self.members:
            member.end(status)


@dataclass
class Trackers:
    """Every tracking backend of a command, as one; nothing starts while `suspended`."""

    backends: list[Tracker] = field(default_factory=list)

    def check(self, config: ExperimentConfig) -> None:
        if not _SUSPENDED.get():
            for backend in self.backends:
                backend.check(config)

    @contextlib.contextmanager
    def run(self, start: RunStart) -> Iterator[RunTracker | None]:
        """The run's tracker for the block (None when nothing tracks it), ended with the block's outcome:
        completed, failed, or interrupted (Ctrl-C)."""
        tracker = self._start(start)
        if tracker is None:
            yield None
            return
        try:
            yield tracker
        except KeyboardInterrupt:
            tracker.end("interrupted")
            raise
        except BaseException:
            tracker.end("failed")
            raise
        tracker.end("completed")

    def log_evaluation(self, run_dir: Path, evaluation: Any, reporter: Reporter) -> None:
        for backend in self.backends:
            backend.log_evaluation(run_dir, evaluation, reporter)

    def log_study(self, study: StudyEnd) -> None:
        for backend in self.backends:
            backend.log_study(study)

    def _start(self, start: RunStart) -> RunTracker | None:
        if _SUSPENDED.get() or not start.chief:
            return None
        started: list[RunTracker] = []
        try:
            for backend in self.backends:
                tracker = backend.start_run(start)
                if tracker is not None:
                    started.append(tracker)
        except BaseException:
            RunTrackers(started).end("failed")  # a later backend could not start: the run does not train
            raise
        return None if not started else started[0] if len(started) == 1 else RunTrackers(started)


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """No run started inside this block tracks itself (a study's trials are logged as the study's nested runs)."""
    token = _SUSPENDED.set(True)
    try:
        yield
    finally:
        _SUSPENDED.reset(token)
