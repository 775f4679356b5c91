"""`tlcli runs`: one summary line per run folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tlcli.errors import RunError
from tlcli.runs.metrics import Metrics
from tlcli.runs.records import read_model_info, read_run_record


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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def list_runs(runs_dir: str | Path) -> list[RunSummary]:
    """Every run folder under `runs_dir`, oldest first; unreadable folders are left out."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    summaries = []
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        try:
            summaries.append(summarize_run(run_dir))
        except RunError:
            continue
    return sorted(summaries, key=lambda s: (s.started, s.path.name))


def summarize_run(run_dir: Path) -> RunSummary:
    record = read_run_record(run_dir)
    try:
        metrics: Metrics | None = Metrics.read(run_dir)
    except RunError:
        metrics = None
    try:
        base = read_model_info(run_dir).base_name
    except RunError:
        base = "?"
    return RunSummary(
        path=run_dir,
        name=record.name,
        started=record.started or "",
        status=record.shown_status(),
        base=base,
        best_val_accuracy=metrics.best.get("val_accuracy") if metrics else None,
        val_accuracy=metrics.final.get("val_accuracy") if metrics else None,
        resumes=len(record.resumes),
    )
