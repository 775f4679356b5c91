"""`tlcli runs`: one summary line per run folder, and one per study (tune folder)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tlcli.errors import RunError
from tlcli.runs.atomic import read_json
from tlcli.runs.metrics import Metrics
from tlcli.runs.records import read_model_info, read_run_record
from tlcli.system import process_alive


@dataclass(frozen=True)
class RunSummary:
    """One line of `tlcli runs`."""

    path: Path
    name: str
    started: str
    status: str
    base: str
    best_val_accuracy: float | None
    val_accuracy: float | None
    resumes: int = 0
    problem: str | None = None  # why the folder's records cannot be read (status "damaged")
    estimate: float | None = None  # the final accuracy people should trust first: on test when there is one
    estimate_on: str | None = None  # "test", "val", or "val (selection)" / "val (in-sample)" when val chose something
    metric: str = "accuracy"  # what best_val and estimate are: accuracy, or mAP ("map") for a multi-label run
    best_val: float | None = None  # the best epoch's validation `metric`
    mlflow_run_id: str | None = None  # the run's MLflow run (`tlcli train --mlflow`), when tracked
    # 95% intervals, {"estimate": [low, high]} (metrics.json's `intervals`; {} for a run written before them)
    intervals: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def list_runs(runs_dir: str | Path) -> list[RunSummary]:
    """Every run folder under `runs_dir`, oldest first.

    A folder without run.json is not a run and is left out; a run whose
    run.json is damaged is listed with status `damaged` and the reason, so
    one edited file never hides the other runs.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    summaries = []
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (run_dir / "run.json").exists() or is_tune_folder(run_dir):
            continue
        try:
            summaries.append(summarize_run(run_dir))
        except RunError as exc:
            summaries.append(RunSummary(run_dir, run_dir.name, "", "damaged", "?", None, None, problem=str(exc)))
    return sorted(summaries, key=lambda s: (s.started, s.path.name))


def summarize_run(run_dir: Path) -> RunSummary:
    record = read_run_record(run_dir)
    try:
        metrics: Metrics | None = Metrics.read(run_dir) if (run_dir / "metrics.json").exists() else None
    except RunError as exc:
        metrics, problem = None, str(exc)
    else:
        problem = None
    try:
        base = read_model_info(run_dir).base_name if (run_dir / "model.json").exists() else "?"
    except RunError as exc:
        base, problem = "?", problem or str(exc)
    return RunSummary(
        path=run_dir,
        name=record.name,
        started=record.started or "",
        status=record.shown_status(),
        base=base,
        best_val_accuracy=metrics.best.get("val_accuracy") if metrics else None,
        best_val=metrics.best.get(f"val_{_metric(metrics)}") if metrics else None,
        metric=_metric(metrics),
        val_accuracy=metrics.final.get("val_accuracy") if metrics else None,
        resumes=len(record.resumes),
        mlflow_run_id=record.mlflow_run_id,
        problem=problem,
        **_estimate(metrics),
    )


def _metric(metrics: Metrics | None) -> str:
    """A multi-label run's headline is mAP (its epochs log `map`, not `accuracy`)."""
    return "map" if metrics is not None and "val_map" in metrics.final else "accuracy"


def _estimate(metrics: Metrics | None) -> dict[str, Any]:
    if metrics is None:
        return {}
    metric = _metric(metrics)
    split = "test" if f"test_{metric}" in metrics.final else "val"
    if f"{split}_{metric}" not in metrics.final:
        return {}
    meaning = metrics.figures.get(split, "untouched" if split == "test" else "")
    on = split if meaning in ("", "untouched") else f"{split} ({meaning.split(':')[0]})"
    interval = metrics.intervals.get(f"{split}_{metric}")
    return {
        "estimate": metrics.final[f"{split}_{metric}"],
        "estimate_on": on,
        "intervals": {"estimate": interval} if interval else {},
    }


# A tune folder (`tlcli tune`: runs/<stamp>-<name>-tune/) holds a study, not a run: it has tune.json and no run.json.
TUNE_RECORD = "tune.json"


def is_tune_folder(path: Path) -> bool:
    return (path / TUNE_RECORD).is_file()


@dataclass(frozen=True)
class StudySummary:
    """One line of `tlcli runs` for a tune folder: a study, never a damaged run."""

    path: Path
    study: str
    started: str
    status: str
    metric: str
    direction: str
    finished: int
    target: int | None
    best_value: float | None
    best_trial: int | None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def list_studies(runs_dir: str | Path) -> list[StudySummary]:
    """Every tune folder under `runs_dir`, oldest first (a damaged tune.json is listed with the reason)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = []
    for path in sorted(
        p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and is_tune_folder(p)
    ):
        found.append(summarize_study(path))
    return sorted(found, key=lambda s: (s.started, s.path.name))


def summarize_study(path: Path) -> StudySummary:
    try:
        record = read_json(path / TUNE_RECORD)
        trials, best = record.get("trials") or {}, record.get("best") or {}
        status = str(record.get("status", "?"))
        if status == "running" and record.get("pid") and not process_alive(int(record["pid"])):
            status = "interrupted"
        return StudySummary(
            path,
            str(record["study"]),
            str(record.get("started", "")),
            status,
            str(record.get("metric", "")),
            str(record.get("direction", "")),
            int(trials.get("finished", 0)),
            trials.get("target"),
            best.get("value"),
            best.get("number"),
        )
    except Exception as exc:  # noqa: BLE001  (an edited or half-copied tune.json: say so, list the rest)
        return StudySummary(
            path,
            path.name,
            "",
            "damaged",
            "",
            "",
            0,
            None,
            None,
            None,
            problem=f"{path / TUNE_RECORD}: damaged ({type(exc).__name__})",
        )
