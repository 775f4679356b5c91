"""`metrics.json`: a run's final figures, as one typed record that writes and reads the file.

Written last by training, so a run with `metrics.json` is complete. Its keys
are documented in the README ("The run folder"); this class is the only
place that defines them.

`format_version` 2 added `intervals` (95% intervals of the final accuracies); a file without it is version 1 and
still reads (no intervals). An evaluation's metrics.json carries the same version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tlcli.errors import RunError
from tlcli.runs.atomic import read_json, write_json_atomic

METRICS_FORMAT = 2  # metrics.json's format_version (1: before intervals, written without a version)


@dataclass
class CacheUse:
    """How the run's single pass over the files went: frozen features (from the cache or computed) or decoded images."""

    mode: str  # "features" or "images"
    cut: str | None = None
    hits: int = 0
    extracted: int = 0
    seconds: float = 0.0
    key: str | None = None
    folder: str | None = None
    saved_s: float | None = None
    damaged_packs: int | None = None  # packs that failed their checksum, dropped and recomputed

    def to_dict(self) -> dict[str, Any]:
        if self.mode == "images":
            return {"mode": "images"}
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Metrics:
    """Everything `metrics.json` holds."""

    final: dict[str, float]  # loss and metrics on val (and test), with the weights that were saved
    best: dict[str, Any]  # the best epoch's history row by `train.monitor` ({} when no epoch ran)
    epochs: dict[str, int]  # {"total": n, "<phase>": n, ...}
    images: dict[str, int]  # per split, and "skipped"
    cache: CacheUse
    wall_time_s: float
    timings_s: dict[str, float]
    peak_memory_mb: float
    resumes: int = 0
    images_per_second: float | None = None
    selection: dict[str, Any] | None = (
        None  # the head's penalty chosen on validation: the grid's figures and the choice
    )
    linear_probe: dict[str, Any] | None = (
        None  # the logistic-regression reference on the cached features, or why it was skipped
    )
    phases: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # per phase: its start, best epoch, and which was kept
    figures: dict[str, str] = field(default_factory=dict)  # per split: "untouched", or what it was used to choose
    devices: dict[str, Any] = field(
        default_factory=dict
    )  # where it trained: strategy, replicas, workers and their hosts (as env.json)
    refit: dict[str, Any] | None = None  # a pinned recipe retrained on train + validation: its epochs, images, seconds
    data_trust: dict[str, Any] | None = None  # near-duplicate leakage and label suspects found (data_trust.json)
    # 95% intervals of `final`'s accuracies, `{key: [low, high]}` (`tlcli.evaluation.intervals`); {} before version 2
    intervals: dict[str, list[float]] = field(default_factory=dict)
    format_version: int = METRICS_FORMAT  # what the file was written as (1: an older run's, without intervals)

    @property
    def untouched_split(self) -> str | None:
        """The split whose figures are an honest estimate: test when there is one, else val when nothing was
        chosen on it."""
        return next((split for split in ("test", "val") if self.figures.get(split) == "untouched"), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": METRICS_FORMAT,
            "figures": self.figures,
            "final": self.final,
            "intervals": self.intervals,
            "best": self.best,
            "epochs": self.epochs,
            "resumes": self.resumes,
            "images": self.images,
            "cache": self.cache.to_dict(),
            "wall_time_s": self.wall_time_s,
            "timings_s": self.timings_s,
            "images_per_second": self.images_per_second,
            "peak_memory_mb": self.peak_memory_mb,
            "linear_probe": self.linear_probe,
            "selection": self.selection,
            "phases": self.phases,
            "devices": self.devices,
            "refit": self.refit,
            "data_trust": self.data_trust,
        }

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> Metrics:
        if not isinstance(data, dict):
            raise RunError(f"{path}: damaged (expected an object of metrics)")
        try:
            cache = CacheUse(
                **{
                    k: v
                    for k, v in (data.get("cache") or {"mode": "images"}).items()
                    if k in {f.name for f in fields(CacheUse)}
                }
            )
            return cls(
                final=dict(data.get("final") or {}),
                best=dict(data.get("best") or {}),
                epochs=dict(data.get("epochs") or {}),
                images=dict(data.get("images") or {}),
                cache=cache,
                wall_time_s=float(data.get("wall_time_s") or 0.0),
                timings_s=dict(data.get("timings_s") or {}),
                peak_memory_mb=float(data.get("peak_memory_mb") or 0.0),
                resumes=int(data.get("resumes") or 0),
                images_per_second=data.get("images_per_second"),
                selection=data.get("selection"),
                linear_probe=data.get("linear_probe"),
                phases=dict(data.get("phases") or {}),
                figures=dict(data.get("figures") or {}),
                devices=dict(data.get("devices") or {}),
                refit=data.get("refit"),
                data_trust=data.get("data_trust"),
                intervals=read_intervals(data.get("intervals")),
                format_version=int(data.get("format_version") or 1),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise RunError(f"{path}: damaged ({exc})") from None

    def write(self, run_dir: Path) -> None:
        write_json_atomic(Path(run_dir) / "metrics.json", self.to_dict())

    @classmethod
    def read(cls, run_dir: Path) -> Metrics:
        path = Path(run_dir) / "metrics.json"
        try:
            data = read_json(path)
        except (OSError, ValueError) as exc:
            raise RunError(f"{path}: missing or unreadable ({type(exc).__name__}); the run has not completed") from None
        return cls.from_dict(data, path)


def read_intervals(written: Any) -> dict[str, list[float]]:
    """metrics.json's `intervals` object, keeping only well-formed `[low, high]` pairs (none in a version 1 file)."""
    if not isinstance(written, dict):
        return {}
    return {
        str(key): [float(pair[0]), float(pair[1])]
        for key, pair in written.items()
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, (int, float)) for x in pair)
    }


@dataclass
class TrainResult:
    """What `train` and `resume` return (and `tlcli train --json` prints)."""

    run_dir: Path
    metrics: Metrics
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "status": "completed",
            "skipped_files": len(self.skipped),
            **self.metrics.to_dict(),
        }
