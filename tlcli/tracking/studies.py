"""A tuning study in MLflow: one parent run for the study, a nested run per finished trial.

Logged when the study's process finishes (completed, interrupted or failed):
the trials are read from the Optuna study, so trials of every process and
pruned or failed ones are there too. `mlflow.json` in the tune folder keeps
the parent run and the trials already logged, so `tlcli tune --resume`
continues the same parent and never logs a trial twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tlcli.config.schema import ExperimentConfig
from tlcli.progress import Reporter
from tlcli.runs.atomic import read_json, write_json_atomic
from tlcli.tracking.client import MlflowRun, connect, continue_run, flatten, numeric, start_run
from tlcli.tracking.runs import failure_warning
from tlcli.tracking.settings import TrackingRequest, resolve

RECORD = "mlflow.json"
STUDY_FILES = (".csv", ".yaml", ".json", ".png", ".html")


def track_study(
    config: ExperimentConfig,
    tune_dir: Path,
    study,
    result: dict[str, Any],
    reporter: Reporter,
    request: TrackingRequest | None = None,
) -> str | None:
    """Log the study (`result`: tune.json's content) and its trials.

    The parent run id, or None when tracking is off or failed."""
    tune_dir = Path(tune_dir)
    recorded = _read(tune_dir)
    settings = resolve(config, request, recorded.get("tracking_uri"))
    if settings is None:
        return None
    tracker = connect(settings, on_failure=failure_warning(reporter, "the tune folder is written as always"))
    if not (recorded.get("run_id") and continue_run(tracker, recorded["run_id"])) and tracker.failed is None:
        start_run(
            tracker,
            tune_dir.name,
            {
                **settings.tags,
                "tlcli.study": str(result.get("study")),
                "tlcli.kind": str(result.get("kind")),
                "tlcli.storage": str(result.get("storage")),
            },
        )
        tracker.log_params(flatten({k: v for k, v in config.to_dict().items() if k != "tracking"}))
    if not tracker.active:
        return None
    logged = set(recorded.get("trials") or [])
    for trial in study.get_trials(deepcopy=False):
        if (
            trial.number not in logged
            and trial.state.is_finished()
            and _log_trial(tracker, trial, str(result.get("metric")))
        ):
            logged.add(trial.number)
    best = result.get("best") or {}
    tracker.log_metrics(
        numeric({f"best_{result.get('metric')}": best.get("value"), "best_trial": best.get("number")}), len(logged)
    )
    tracker.set_tags({"tlcli.status": str(result.get("status"))})
    tracker.log_files(
        sorted(p for p in tune_dir.iterdir() if p.is_file() and p.suffix in STUDY_FILES and p.name != RECORD)
    )
    tracker.terminate({"completed": "FINISHED", "interrupted": "KILLED"}.get(str(result.get("status")), "FAILED"))
    write_json_atomic(tune_dir / RECORD, {**tracker.record(), "trials": sorted(logged)})
    return tracker.run_id if tracker.failed is None else None


def _log_trial(parent: MlflowRun, trial, metric: str) -> bool:
    """One nested run: the trial's parameters, its value as `metric` and its figures; False when the store failed."""
    run = parent.call(
        "create_run",
        parent.experiment_id,
        run_name=f"trial-{trial.number}",
        tags={
            "mlflow.parentRunId": parent.run_id,
            "tlcli.trial": str(trial.number),
            "tlcli.state": trial.state.name.lower(),
        },
    )
    if run is None:
        return False
    child = MlflowRun(
        parent.settings,
        parent.client,
        run.info.run_id,
        parent.experiment_id,
        on_failure=parent.fail,
        worker=parent.worker,
    )
    child.log_params({k: v if isinstance(v, str) else json.dumps(v) for k, v in trial.params.items()})
    figures = numeric(trial.user_attrs.get("figures") or {}) | numeric({"epochs": trial.user_attrs.get("epochs")})
    if trial.value is not None:
        figures[metric] = float(trial.value)
    child.log_metrics(figures, 0)
    child.log_series(f"{metric}_per_epoch", trial.intermediate_values)  # what the pruner saw, epoch by epoch
    child.terminate(
        "FINISHED" if trial.state.name == "COMPLETE" else "KILLED" if trial.state.name == "PRUNED" else "FAILED"
    )
    return child.failed is None


def _read(tune_dir: Path) -> dict[str, Any]:
    try:
        data = read_json(tune_dir / RECORD)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
