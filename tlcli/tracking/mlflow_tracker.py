"""MLflow behind the tracking seam (`tlcli.tracking.seam.Tracker`): a run folder is one MLflow run, a study one
parent run with a nested run per trial (`runs`, `studies`; README "Experiment tracking: MLflow")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcli.config.schema import ExperimentConfig
from tlcli.progress import Reporter
from tlcli.tracking.client import check_reachable
from tlcli.tracking.runs import RunTracking, log_evaluation, start_tracking
from tlcli.tracking.seam import RunStart, StudyEnd
from tlcli.tracking.settings import TrackingRequest, resolve
from tlcli.tracking.studies import track_study


@dataclass(frozen=True)
class MlflowTracker:
    """On with `--mlflow [URI]` (`request`), the config's `tracking.mlflow`, `$MLFLOW_TRACKING_URI`, or the MLflow
    run a run folder recorded; mlflow is imported only then."""

    request: TrackingRequest | None = None

    def check(self, config: ExperimentConfig) -> None:
        if self.request is None or not self.request.strict:
            return
        settings = resolve(config, self.request)
        if settings is not None:
            check_reachable(settings)

    def start_run(self, start: RunStart) -> RunTracking | None:
        return start_tracking(start, self.request)

    def log_evaluation(self, run_dir: Path, evaluation: Any, reporter: Reporter) -> None:
        log_evaluation(run_dir, evaluation, reporter)

    def log_study(self, study: StudyEnd) -> None:
        track_study(study.config, study.tune_dir, study.study, study.result, study.reporter, self.request)
