"""Evaluation reports: metrics from predicted probabilities, plots, the eval folder.

`tlcli evaluate` and the end of `tlcli train` both call `write_evaluation`,
so a run's final validation report and a later evaluation look the same. An
evaluation lives in `RUN_DIR/eval/<YYYYMMDD-HHMMSS>-<dataset>/`, a folder
created exclusively (never reused), holding `metrics.json`,
`predictions.csv`, `confusion_matrix.csv` / `.png`, `reliability.png` and
`mistakes.png` (a multi-label run: `predictions.csv`, `per_class.csv`,
`pr_curves.png`, `mistakes.png`; `tlcli.evaluation.multilabel`). Every file is written atomically.

The figures come from `tlcli.evaluation.metrics`, the pictures from
`tlcli.evaluation.plots`; scikit-learn and matplotlib are imported inside
the functions, so `import tlcli` stays light.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tlcli.errors import GateFailed, UserError
from tlcli.evaluation.gallery import GALLERY, write_gallery
from tlcli.evaluation.gates import Gate, gate_failures
from tlcli.evaluation.html_report import REPORT, write_report_file
from tlcli.evaluation.leakage import copies_record, training_copies
from tlcli.evaluation.metrics import compute_metrics
from tlcli.evaluation.multilabel import compute_multilabel_metrics, write_multilabel_files
from tlcli.evaluation.plots import plot_confusion_matrix, plot_mistakes, plot_reliability
from tlcli.runs.atomic import write_csv_atomic, write_json_atomic
from tlcli.runs.folder import publish_stamped_dir, staged_dir
from tlcli.runs.metrics import METRICS_FORMAT

DEFAULT_TOP_K = 5  # k of the top-k accuracy when neither the run nor the command says

EVAL_FILES = {
    "metrics.json": (
        "accuracy, top-k accuracy, loss, per-class precision/recall/F1/support, macro and weighted averages, "
        "confusion matrix, calibration"
    ),
    "predictions.csv": "one row per image: path, true_label, predicted_label, confidence, correct",
    "confusion_matrix.csv": "rows are true classes, columns predicted classes",
    "confusion_matrix.png": "the confusion matrix as a picture",
    "reliability.png": "reliability diagram: accuracy against confidence, with the expected calibration error",
    "mistakes.png": "the most confident mistakes, as a picture grid",
    GALLERY: "the most confident mistakes with the Grad-CAM heatmap of the class predicted (tlcli evaluate)",
    REPORT: "one self-contained page: the run's config, data, curves, this evaluation's figures and pictures",
}


@dataclass
class Evaluation:
    """One written evaluation: its folder and the content of its metrics.json."""

    eval_dir: Path
    metrics: dict[str, Any]
    gate_failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"eval_dir": str(self.eval_dir), **self.metrics}

    def raise_for_gates(self) -> None:
        """Raise `GateFailed` naming every gate that failed, if any did."""
        if self.gate_failures:
            raise GateFailed("quality gate failed: " + "; ".join(self.gate_failures) + f" (report in {self.eval_dir})")


def eval_slug(name: str) -> str:
    """The dataset name as a folder-name suffix."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "data"


@dataclass(frozen=True)
class Scored:
    """n images as a model scored them, with the truth and what is shown beside them."""

    probabilities: np.ndarray  # (n, classes) class probabilities; multi-label: one sigmoid per class
    labels: np.ndarray  # (n,) true class indices; multi-label: (n, classes) 0/1 rows
    paths: Sequence[str | Path]  # the n image files, in the same order
    class_names: Sequence[str]  # the run's labels
    images: np.ndarray | None = None  # (n, h, w, c) uint8 pixels, for the picture of mistakes (optional)
    thresholds: Sequence[float] | None = None  # multi-label: each class's threshold (default 0.5)
    separator: str = "|"  # multi-label: what joins an image's labels in predictions.csv
    # (pixels, class index per image) -> the model's Grad-CAM heatmaps (`tlcli.inference.grad_cam`): the evaluation
    # then writes mistakes_gradcam.png (`tlcli.evaluation.gallery`). None: no gallery (an artifact, --no-explain).
    heatmaps_of: Callable[[np.ndarray, Sequence[int]], np.ndarray] | None = None

    @property
    def multi_label(self) -> bool:
        return np.ndim(self.labels) == 2


@dataclass(frozen=True)
class EvalSpec:
    """Which evaluation this is, where its images came from, and how it is judged."""

    name: str  # the dataset's name, the suffix of the folder (`val`, `test`, a folder name)
    source: str = ""  # where the images came from, recorded in metrics.json
    skipped: Sequence[dict[str, str]] = ()  # files that could not be decoded ({path, reason})
    top_k: int = DEFAULT_TOP_K  # k of the top-k accuracy
    gates: Sequence[Gate] = ()  # quality gates checked against the metrics
    # The model evaluated when it is not the run's model.keras (an exported artifact's {"path", "format", ...}):
    # recorded as metrics.json's `model`, its format appended to the folder's name.
    model: dict[str, Any] | None = None
    tta: Sequence[str] = ()  # the views averaged at test time (empty: none)
    html: bool = False  # also write report.html into the folder (`tlcli.evaluation.html_report`)
    unknown: dict[str, Any] | None = None  # the rule for unknown images (`tlcli.evaluation.unknown_report`)

    @property
    def slug(self) -> str:
        """The folder's suffix: an artifact's and a TTA report are named apart from model.keras's."""
        name = self.name if self.model is None else f"{self.name}-{self.model.get('format', 'model')}"
        return eval_slug(f"{name}-tta" if self.tta else name)


def write_evaluation(run_dir: Path, scored: Scored, spec: EvalSpec) -> Evaluation:
    """Compute the metrics of one evaluation and write its folder into the run's `eval/`.

    Returns:
        The folder, the metrics, and the failed gates (not raised).
    """
    metrics = evaluation_metrics(run_dir, scored, spec)
    failures = gate_failures(metrics, spec.gates)
    parent = Path(run_dir) / "eval"
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{run_dir}: cannot write the evaluation ({exc.strerror or exc}); the run folder must be writable"
        ) from None
    # Built aside and renamed complete: a killed evaluation leaves no half report.
    with staged_dir(parent, spec.slug) as staged:
        write_json_atomic(staged / "metrics.json", metrics)
        if scored.multi_label:
            write_multilabel_files(
                staged,
                metrics,
                np.asarray(scored.probabilities),
                np.asarray(scored.labels),
                scored.paths,
                scored.class_names,
                scored.separator,
                scored.images,
            )
        else:
            _write_single_label_files(staged, scored, metrics)
        if scored.heatmaps_of is not None and scored.images is not None:  # in this process: the model is here
            write_gallery(staged / GALLERY, scored)
        if spec.html:  # last: it embeds the pictures above
            write_report_file(Path(run_dir), staged, staged / REPORT, evaluation=True)
        eval_dir = publish_stamped_dir(staged, parent, spec.slug)
    return Evaluation(eval_dir, metrics, failures)


def evaluation_metrics(run_dir: Path, scored: Scored, spec: EvalSpec) -> dict[str, Any]:
    """The content of metrics.json: what was evaluated, on which images, and every figure."""
    if scored.multi_label:
        thresholds = list(scored.thresholds) if scored.thresholds is not None else [0.5] * len(scored.class_names)
        figures = compute_multilabel_metrics(scored.probabilities, scored.labels, scored.class_names, thresholds)
    else:
        figures = compute_metrics(scored.probabilities, scored.labels, scored.class_names, spec.top_k)
    images = int(len(scored.labels))
    paths = [str(path) for path in scored.paths]
    correct = None if scored.multi_label else np.argmax(scored.probabilities, axis=1) == np.asarray(scored.labels)
    return {
        "format_version": METRICS_FORMAT,  # the run's metrics.json's: 2 added `intervals`
        "run_dir": str(Path(run_dir).absolute()),
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "dataset": {"name": spec.name, "source": spec.source, "images": images, "skipped": len(spec.skipped)},
        **({"model": dict(spec.model)} if spec.model is not None else {}),
        **({"tta": list(spec.tta)} if spec.tta else {}),
        **figures,
        "training_copies": copies_record(training_copies(run_dir, paths), paths, correct),
        **({"unknown": dict(spec.unknown)} if spec.unknown is not None else {}),
        "skipped_files": list(spec.skipped),
    }


def _write_single_label_files(staged: Path, scored: Scored, metrics: dict[str, Any]) -> None:
    """predictions.csv, the confusion matrix (csv and png), reliability.png and mistakes.png."""
    probabilities, labels, paths, class_names = scored.probabilities, scored.labels, scored.paths, scored.class_names
    write_predictions_csv(staged / "predictions.csv", probabilities, labels, paths, class_names)
    matrix = np.asarray(metrics["confusion_matrix"]["matrix"])
    write_csv_atomic(
        staged / "confusion_matrix.csv",
        ["true \\ predicted", *class_names],
        ([name_, *row] for name_, row in zip(class_names, matrix.tolist())),
    )
    plot_confusion_matrix(matrix, class_names, staged / "confusion_matrix.png")
    plot_reliability(metrics["calibration"], staged / "reliability.png")
    plot_mistakes(probabilities, labels, paths, class_names, scored.images, staged / "mistakes.png")


def write_predictions_csv(
    path: Path, probabilities: np.ndarray, labels: np.ndarray, paths: Sequence, class_names: Sequence[str]
) -> None:
    predicted = probabilities.argmax(axis=1)
    rows = (
        (str(p), class_names[t], class_names[q], f"{probabilities[i, q]:.6f}", "true" if t == q else "false")
        for i, (p, t, q) in enumerate(zip(paths, labels.tolist(), predicted.tolist()))
    )
    write_csv_atomic(path, ["path", "true_label", "predicted_label", "confidence", "correct"], rows)
