"""`compare_runs`: is run B better than run A? Both models scored on the same images, paired.

Each model decodes the files at its own size (two different bases compare fine) and is scored as `evaluate` scores
it; only images both could decode count. Every image then falls in one of four cells (both right, only A, only B,
neither). The accuracies get their Wilson intervals, their difference B - A Newcombe's paired interval, and the
images only one model got right the exact McNemar test (`tlcli.evaluation.intervals`). Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlcli.config.schema import ExperimentConfig
from tlcli.data.manifest import is_manifest
from tlcli.data.splits import Sample
from tlcli.errors import DataError, RunError, UserError
from tlcli.evaluation.evaluate import decode_as_trained, folder_samples, manifest_samples, split_samples
from tlcli.evaluation.intervals import LEVEL, SIGNIFICANCE, mcnemar_exact, paired_difference, rounded, wilson
from tlcli.inference.probabilities import predict_probabilities
from tlcli.modeling.build import load_run_model
from tlcli.progress import Reporter
from tlcli.runs.folder import require_model
from tlcli.runs.metrics import Metrics
from tlcli.runs.provenance import read_split
from tlcli.runs.records import ModelInfo, read_labels, read_model_info, read_run_config, read_run_record


@dataclass(frozen=True)
class ComparedRun:
    """One side of a comparison: the run and how many of the shared images its model got right."""

    run_dir: Path
    correct: int
    images: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.images

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "accuracy": round(self.accuracy, 6), "correct": self.correct}


@dataclass(frozen=True)
class Comparison:
    """Run B against run A on the same images: each accuracy, the difference B - A, and the exact McNemar test."""

    dataset: str  # the split (`test`, `val`) or the folder / manifest's name
    source: str  # where the images came from (`splits/test.csv`, a path)
    a: ComparedRun
    b: ComparedRun
    both_right: int
    a_only: int  # images A got right and B wrong
    b_only: int  # images A got wrong and B right
    both_wrong: int
    p_value: float  # exact McNemar, two-sided
    skipped: int = 0  # files either model could not decode, left out of both
    caution: str | None = None  # why the split favours one run (its validation chose something), when it does

    @property
    def images(self) -> int:
        return self.both_right + self.a_only + self.b_only + self.both_wrong

    @property
    def difference(self) -> float:
        """B's accuracy minus A's."""
        return (self.b_only - self.a_only) / self.images

    @property
    def difference_interval(self) -> tuple[float, float]:
        return paired_difference(self.both_right, self.a_only, self.b_only, self.both_wrong)

    @property
    def better(self) -> str | None:
        """ "B" or "A" when McNemar's p-value is below `SIGNIFICANCE`, else None (no evidence either way)."""
        if self.p_value >= SIGNIFICANCE or self.a_only == self.b_only:
            return None
        return "B" if self.b_only > self.a_only else "A"

    @property
    def verdict(self) -> str:
        p = f"p = {self.p_value:.2g}"
        if self.better == "B":
            return f"B is better than A ({p})"
        if self.better == "A":
            return f"B is worse than A ({p})"
        return f"no evidence that B is better than A ({p})"

    @property
    def intervals(self) -> dict[str, list[float]]:
        """95% intervals, named as in metrics.json's `intervals`."""
        return {
            "a.accuracy": rounded(wilson(self.a.correct, self.images)),
            "b.accuracy": rounded(wilson(self.b.correct, self.images)),
            "difference": rounded(self.difference_interval),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": {"name": self.dataset, "source": self.source, "images": self.images, "skipped": self.skipped},
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "difference": round(self.difference, 6),
            "intervals": self.intervals,
            "level": LEVEL,
            "mcnemar": {
                "both_right": self.both_right,
                "a_right_b_wrong": self.a_only,
                "a_wrong_b_right": self.b_only,
                "both_wrong": self.both_wrong,
                "p_value": self.p_value,
            },
            "better": self.better,
            "verdict": self.verdict,
            "caution": self.caution,
        }


@dataclass(frozen=True)
class _Run:
    """What scoring a run's model needs, read before any work (a damaged run fails in one line)."""

    run_dir: Path
    class_names: list[str]
    info: ModelInfo
    config: ExperimentConfig | None

    @classmethod
    def open(cls, run_dir: str | Path, argument: str) -> _Run:
        run_dir = Path(run_dir)
        read_run_record(run_dir)
        require_model(run_dir)
        info = read_model_info(run_dir)
        if info.multi_label:
            raise UserError(f"{argument}: {run_dir} is a multi-label run; compare compares single-label runs' accuracy")
        return cls(run_dir, read_labels(run_dir), info, read_run_config(run_dir))


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    *,
    split: str | None = None,
    data: str | Path | None = None,
    batch_size: int = 32,
    reporter: Reporter | None = None,
) -> Comparison:
    """Score both runs' models on the same images and test whether B is better than A.

    Args:
        run_a, run_b: the two run folders (A the reference, B the challenger).
        split: `val` or `test`: the runs' own split, which must list the same files in both (default: test when both
            had one, else val).
        data: a folder of class folders, or a CSV manifest, to compare on instead (excludes `split`).
        batch_size: images per model call.
        reporter: receives progress.

    Raises:
        UserError: the runs have different classes (or a multi-label run), or their split lists different files.
        RunError: not a run folder, or no model / labels / split file.
        DataError: `data` is missing or empty, or no image could be decoded.
    """
    reporter = reporter or Reporter()
    if batch_size < 1:
        raise UserError(f"batch_size: must be at least 1, got {batch_size}")
    a, b = _Run.open(run_a, "run_a"), _Run.open(run_b, "run_b")
    _check_classes(a, b)
    name, source, samples = _shared_images(a, b, split, data)
    reporter.info(f"comparing {a.run_dir} (A) and {b.run_dir} (B) on {len(samples)} images ({source})")
    caution = _validation_caution(a, b) if data is None and name == "val" else None
    right_a, right_b = _right(a, samples, batch_size, reporter), _right(b, samples, batch_size, reporter)
    scored = [path for path in right_a if path in right_b]
    if not scored:
        raise DataError(f"{source}: none of the {len(samples)} images could be decoded; nothing to compare")
    ra, rb = np.array([right_a[p] for p in scored]), np.array([right_b[p] for p in scored])
    a_only, b_only = int((ra & ~rb).sum()), int((~ra & rb).sum())
    return Comparison(
        name,
        source,
        ComparedRun(a.run_dir, int(ra.sum()), len(scored)),
        ComparedRun(b.run_dir, int(rb.sum()), len(scored)),
        both_right=int((ra & rb).sum()),
        a_only=a_only,
        b_only=b_only,
        both_wrong=int((~ra & ~rb).sum()),
        p_value=mcnemar_exact(a_only, b_only),
        skipped=len(samples) - len(scored),
        caution=caution,
    )


def _check_classes(a: _Run, b: _Run) -> None:
    """Raises UserError naming the classes only one run has (or saying their order differs)."""
    if a.class_names == b.class_names:
        return
    only_a = [c for c in a.class_names if c not in b.class_names]
    only_b = [c for c in b.class_names if c not in a.class_names]
    differs = "; ".join(
        part
        for part in (
            f"only A has {', '.join(only_a)}" if only_a else "",
            f"only B has {', '.join(only_b)}" if only_b else "",
        )
        if part
    )
    raise UserError(
        f"the runs have different classes ({differs or 'the same ones in another order'}): A {a.run_dir} "
        f"({', '.join(a.class_names)}), B {b.run_dir} ({', '.join(b.class_names)}); compare runs of the same classes"
    )


def _validation_caution(a: _Run, b: _Run) -> str | None:
    """A run whose validation split chose something (the best epoch, a penalty...) is flattered by it: say so."""
    chose = []
    for side, run in (("A", a), ("B", b)):
        try:
            meaning = (
                Metrics.read(run.run_dir).figures.get("val", "") if (run.run_dir / "metrics.json").exists() else ""
            )
        except RunError:
            meaning = ""
        if meaning not in ("", "untouched"):
            chose.append(f"{side} ({meaning.split(':')[0]})")
    if not chose:
        return None
    return (
        f"val was used to choose things in {' and '.join(chose)}: its accuracy there is optimistic; "
        "compare on a test split or --data for an unbiased verdict"
    )


def _shared_images(a: _Run, b: _Run, split: str | None, data: str | Path | None) -> tuple[str, str, list[Sample]]:
    """(name, source, files): `data` for both, else the runs' split, which must list the same files in both."""
    if data is not None:
        if split is not None:
            raise UserError("--split and --data exclude each other: --split picks one of the runs' own splits")
        data = Path(data)
        if is_manifest(data):
            samples = manifest_samples(data, a.class_names, a.config.data.columns.model_dump() if a.config else None)[0]
            return data.stem, str(data.absolute()), samples
        return data.absolute().name, str(data.absolute()), folder_samples(data, a.class_names)[0]
    name = split or ("test" if read_split(a.run_dir, "test") and read_split(b.run_dir, "test") else "val")
    listed_a, listed_b = split_samples(a.run_dir, name, a.class_names), split_samples(b.run_dir, name, b.class_names)
    files_a = {(str(s.path), s.label) for s in listed_a}
    files_b = {(str(s.path), s.label) for s in listed_b}
    if files_a != files_b:
        only_a, only_b = sorted(files_a - files_b), sorted(files_b - files_a)
        example = "; ".join(
            f"{len(only)} only in {side} (e.g. {only[0][0]})" for side, only in (("A", only_a), ("B", only_b)) if only
        )
        raise UserError(
            f"the runs were not tested on the same files: splits/{name}.csv lists {example}; "
            "compare them on one folder with --data DIR"
        )
    return name, f"splits/{name}.csv", listed_a


def _right(run: _Run, samples: list[Sample], batch_size: int, reporter: Reporter) -> dict[str, bool]:
    """{path: whether the run's model gets the image right}, decoded and scored as `evaluate` does."""
    info = run.info
    decoded = decode_as_trained(
        samples, info, run.config, len(run.class_names), reporter, f"scoring {run.run_dir.name}"
    )
    if not len(decoded):
        return {}
    model = load_run_model(run.run_dir, run.class_names)
    probabilities = predict_probabilities(model, decoded.images, batch_size, info.binary)
    right = np.argmax(probabilities, axis=1) == np.asarray(decoded.labels)
    return {str(s.path): bool(r) for s, r in zip(decoded.samples, right)}
