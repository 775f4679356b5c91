"""`MODEL_CARD.md`: what a run's model is, how good, how sure, where it falls short, and how to use it.

A Hugging Face-style model card (a small YAML front matter, then Markdown) built from the run folder alone:
labels.json, model.json, config.yaml, dataset.json, metrics.json (its `final`, `intervals` and `data_trust`),
data_trust.json, the newest evaluation of the run's own model on each of its own splits (`eval/<stamp>-test|val/`),
env.json and every export's export.json. A file that is missing or unreadable gives a line saying so, never a
failure, so an older run still gets a card. `tlcli train` writes it into the run folder when the run completes,
`tlcli evaluate` rewrites it after evaluating the run's model on its own split, and `tlcli export` writes a copy
into the export folder, filled in with that export's formats (and rewrites the run's, which lists every export).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from tlcli.audit.report import AuditReport, read_audit_report
from tlcli.config import ExperimentConfig
from tlcli.errors import TlcliError
from tlcli.evaluation.card_render import render_card
from tlcli.evaluation.intervals import accuracy_intervals
from tlcli.runs.atomic import read_json, write_text_atomic
from tlcli.runs.folder import TRUST_FILE
from tlcli.runs.metrics import Metrics
from tlcli.runs.records import ModelInfo, RunRecord, read_labels, read_model_info, read_run_config, read_run_record

CARD = "MODEL_CARD.md"

T = TypeVar("T")


@dataclass(frozen=True)
class ExportSummary:
    """One export folder as the card shows it: its label and each format's parity figures (export.json)."""

    label: str
    created: str
    formats: dict[str, dict[str, Any]]  # export.json `formats`: file, bytes, parity, passed
    parity_images: int | None = None

    @classmethod
    def read(cls, folder: Path, label: str) -> ExportSummary | None:
        """The export.json in `folder`, leniently (None: none, or not an object); export.json's format is
        `tlcli.export.record.ExportRecord`, a stage above this one."""
        data = _json(folder / "export.json")
        if not isinstance(data, dict):
            return None
        formats = data.get("formats") if isinstance(data.get("formats"), dict) else {}
        images = (
            (data.get("parity_images") or {}).get("images") if isinstance(data.get("parity_images"), dict) else None
        )
        return cls(
            label,
            str(data.get("created") or ""),
            {name: entry for name, entry in formats.items() if isinstance(entry, dict)},
            images if isinstance(images, int) else None,
        )


@dataclass
class CardSources:
    """The run folder's files the card is built from, each None when missing or unreadable (`notes` says which)."""

    run_dir: Path
    labels: list[str] | None = None
    info: ModelInfo | None = None
    config: ExperimentConfig | None = None
    record: RunRecord | None = None
    metrics: Metrics | None = None
    dataset: dict[str, Any] | None = None
    trust: AuditReport | None = None  # data_trust.json
    env: dict[str, Any] | None = None
    evals: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # split: (folder, its metrics.json)
    exports: list[ExportSummary] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def attempt(self, what: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except TlcliError as exc:
            self.notes.append(f"{what}: {exc}")
            return None


def write_model_card(run_dir: str | Path, *, export_dir: str | Path | None = None) -> Path:
    """Write `MODEL_CARD.md` into the run folder (or `export_dir`, an export of the run, with that export's formats);
    returns its path. Missing files of the run give a line on the card, never an error; the file is written
    atomically."""
    run_dir = Path(run_dir)
    sources = gather(run_dir, Path(export_dir) if export_dir is not None else None)
    target = (Path(export_dir) if export_dir is not None else run_dir) / CARD
    write_text_atomic(target, render_card(sources, in_export=export_dir is not None))
    return target


def refresh_model_card(run_dir: str | Path) -> Path | None:
    """Rewrite the run folder's card when it has one (a run trained with the card off keeps none); returns its
    path, or None."""
    return write_model_card(run_dir) if (Path(run_dir) / CARD).is_file() else None


def gather(run_dir: Path, export_dir: Path | None = None) -> CardSources:
    """Read what the card shows from the run folder (and `export_dir`'s export.json, else every export's)."""
    sources = CardSources(run_dir)
    sources.record = sources.attempt("run.json", lambda: read_run_record(run_dir))
    sources.labels = sources.attempt("labels.json", lambda: read_labels(run_dir))
    sources.info = sources.attempt("model.json", lambda: read_model_info(run_dir))
    sources.config = read_run_config(run_dir)
    if sources.config is None:
        sources.notes.append("config.yaml: missing, or not readable by this tlcli (the weights' origin is unknown)")
    sources.metrics = sources.attempt("metrics.json", lambda: Metrics.read(run_dir))
    if sources.metrics is not None and not sources.metrics.intervals:  # an older run: its intervals, computed here
        sources.metrics.intervals = accuracy_intervals(sources.metrics.final, sources.metrics.images)
    sources.dataset = _json(run_dir / "dataset.json")
    if (run_dir / TRUST_FILE).is_file():  # none: the step was skipped (metrics.json says why) or the run is older
        sources.trust = sources.attempt(TRUST_FILE, lambda: read_audit_report(run_dir / TRUST_FILE))
    sources.env = _json(run_dir / "env.json")
    sources.evals = own_evaluations(run_dir)
    if export_dir is not None:
        sources.exports = [e for e in [ExportSummary.read(export_dir, export_dir.name)] if e is not None]
    else:
        folders = sorted(p for p in (run_dir / "export").glob("*") if p.is_dir() and not p.name.startswith("."))
        sources.exports = [e for p in folders if (e := ExportSummary.read(p, f"export/{p.name}")) is not None]
    return sources


def own_evaluations(run_dir: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per split, the newest evaluation of the run's own model.keras (no artifact, no TTA) on the run's own split
    file, as (folder name, its metrics.json)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    folders = sorted(p for p in (run_dir / "eval").glob("*") if p.is_dir() and not p.name.startswith("."))
    for folder in folders:  # oldest first: a newer one replaces it
        data = _json(folder / "metrics.json")
        if not isinstance(data, dict) or "model" in data or "tta" in data:
            continue
        source = str((data.get("dataset") or {}).get("source") or "")
        split = next((s for s in ("val", "test") if source.startswith(f"splits/{s}.csv")), None)
        if split is not None:
            found[split] = (folder.name, data)
    return found


def _json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None
