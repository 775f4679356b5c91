"""The report at the end of `tlcli train`: the evaluation of the validation split, plus `curves.png`.

Training already holds what the report needs (the validation files, their
labels and the class probabilities it computed), so nothing is decoded or
predicted again. The job is plain data (`ReportJob`), so a report worker
process can write it (`tlcli.evaluation.worker`) while the model is saved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tlcli.data.decoded import ScreenedSplit
from tlcli.evaluation.plots import plot_curves
from tlcli.evaluation.report import DEFAULT_TOP_K, EvalSpec, Evaluation, Scored, write_evaluation
from tlcli.progress import Reporter

log = logging.getLogger("tlcli")


@dataclass
class ReportJob:
    """Everything the training report is drawn from (picklable, for the report worker)."""

    run_dir: Path
    probabilities: np.ndarray  # (n, classes) class probabilities of the validation images
    labels: np.ndarray  # (n,) class indices, or multi-label (n, classes) 0/1 rows
    paths: list[str]
    class_names: list[str]
    top_k: int = DEFAULT_TOP_K
    skipped: list[dict[str, str]] = field(default_factory=list)
    thresholds: tuple[float, ...] | None = None  # multi-label: each class's threshold
    separator: str = "|"  # multi-label: what joins an image's labels

    @classmethod
    def for_split(
        cls, run_dir: Path, split: ScreenedSplit, class_names: list[str], *, top_k: int, probabilities: np.ndarray
    ) -> ReportJob:
        return cls(
            run_dir=Path(run_dir),
            probabilities=np.asarray(probabilities),
            labels=np.asarray(split.labels),
            paths=[str(s.path) for s in split.samples],
            class_names=list(class_names),
            top_k=top_k or DEFAULT_TOP_K,
            skipped=[{"path": s.path, "reason": s.reason} for s in split.skipped],
        )


def write_report_files(job: ReportJob, images: np.ndarray | None = None) -> Evaluation:
    """`curves.png` and the `eval/<stamp>-val/` report of a training run (`images`: the decoded pixels, for the
    mistakes' fallback)."""
    plot_curves(job.run_dir / "history.csv", job.run_dir / "curves.png")
    scored = Scored(job.probabilities, job.labels, job.paths, job.class_names, images, job.thresholds, job.separator)
    spec = EvalSpec("val", source="splits/val.csv (end of training)", skipped=job.skipped, top_k=job.top_k)
    return write_evaluation(job.run_dir, scored, spec)


def write_training_report(
    job: ReportJob, *, reporter: Reporter, images: np.ndarray | None = None, worker=None
) -> Evaluation | None:
    """Write the report, or collect it from `worker` (a `ReportWorker` the job was submitted to).

    When the worker is absent or fails, the report is written here. A report
    that cannot be written is a warning, never a failed run: the model is
    already saved.

    Returns:
        The evaluation, or None when it could not be written.
    """
    try:
        evaluation = worker.result() if worker is not None else None
        if evaluation is None:
            evaluation = write_report_files(job, images)
    except Exception as exc:  # noqa: BLE001  (the run itself succeeded)
        log.exception("writing the validation report failed")
        reporter.warn(
            f"could not write the validation report ({type(exc).__name__}: {exc}); `tlcli evaluate "
            f"{job.run_dir} --split val` retries it"
        )
        return None
    reporter.info(f"validation report: {evaluation.eval_dir}")
    return evaluation
