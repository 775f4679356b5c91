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
from typing import Any, Sequence

import numpy as np

from tlcli.errors import GateFailed, UserError
from tlcli.evaluation.gates import Gate, gate_failures
from tlcli.evaluation.metrics import compute_metrics
from tlcli.evaluation.multilabel import compute_multilabel_metrics, write_multilabel_files
from tlcli.evaluation.plots import plot_confusion_matrix, plot_mistakes, plot_reliability
from tlcli.runs.atomic import write_csv_atomic, write_json_atomic
from tlcli.runs.folder import publish_stamped_dir, staged_dir

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


def write_evaluation(
    run_dir: Path,
    *,
    name: str,
    probabilities: np.ndarray,
    labels: np.ndarray,
    paths: Sequence[str | Path],
    class_names: Sequence[str],
    images: np.ndarray | None = None,
    top_k: int = 5,
    source: str = "",
    skipped: Sequence[dict[str, str]] = (),
    gates: Sequence[Gate] = (),
    thresholds: Sequence[float] | None = None,
    separator: str = "|",
    model: dict[str, Any] | None = None,
) -> Evaluation:
    """Compute the metrics of one evaluation and write its folder.

    Args:
        run_dir: the run folder; the evaluation goes into its `eval/`.
        name: dataset name, the suffix of the folder (`val`, `test`, a folder name).
        probabilities: (n, classes) predicted class probabilities.
        labels: (n,) true class indices; multi-label: (n, classes) 0/1 rows (with `probabilities` one sigmoid per
        class).
        paths: the n image files, in the same order.
        class_names: the run's labels.
        images: (n, h, w, c) uint8 pixels, for the picture of mistakes (optional).
        top_k: k of the top-k accuracy.
        source: where the images came from, recorded in metrics.json.
        skipped: files that could not be decoded ({path, reason}).
        gates: quality gates checked against the metrics.
        thresholds: multi-label: each class's threshold (default 0.5).
        separator: multi-label: what joins an image's labels in predictions.csv.
        model: the model evaluated when it is not the run's model.keras (an exported artifact's
            {"path", "format", ...}): recorded as metrics.json's `model`, its format appended to the folder's name.

    Returns:
        The folder, the metrics, and the failed gates (not raised).
    """
    multi = np.ndim(labels) == 2
    if multi:
        thresholds = list(thresholds) if thresholds is not None else [0.5] * len(class_names)
        figures = compute_multilabel_metrics(probabilities, labels, class_names, thresholds)
    else:
        figures = compute_metrics(probabilities, labels, class_names, top_k)
    metrics = {
        "run_dir": str(Path(run_dir).absolute()),
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "dataset": {"name": name, "source": source, "images": int(len(labels)), "skipped": len(skipped)},
        **({"model": dict(model)} if model is not None else {}),
        **figures,
        "skipped_files": list(skipped),
    }
    failures = gate_failures(metrics, gates)
    parent = Path(run_dir) / "eval"
    slug = eval_slug(
        name if model is None else f"{name}-{model.get('format', 'model')}"
    )  # an artifact's report is named apart from model.keras's
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{run_dir}: cannot write the evaluation ({exc.strerror or exc}); the run folder must be writable"
        ) from None
    with staged_dir(
        parent, slug
    ) as staged:  # built aside and renamed complete: a killed evaluation leaves no half report
        write_json_atomic(staged / "metrics.json", metrics)
        if multi:
            write_multilabel_files(
                staged, metrics, np.asarray(probabilities), np.asarray(labels), paths, class_names, separator, images
            )
            return Evaluation(publish_stamped_dir(staged, parent, slug), metrics, failures)
        write_predictions_csv(staged / "predictions.csv", probabilities, labels, paths, class_names)
        matrix = np.asarray(metrics["confusion_matrix"]["matrix"])
        write_csv_atomic(
            staged / "confusion_matrix.csv",
            ["true \\ predicted", *class_names],
            ([name_, *row] for name_, row in zip(class_names, matrix.tolist())),
        )
        plot_confusion_matrix(matrix, class_names, staged / "confusion_matrix.png")
        plot_reliability(metrics["calibration"], staged / "reliability.png")
        plot_mistakes(probabilities, labels, paths, class_names, images, staged / "mistakes.png")
        eval_dir = publish_stamped_dir(staged, parent, slug)
    return Evaluation(eval_dir, metrics, failures)


def write_predictions_csv(
    path: Path, probabilities: np.ndarray, labels: np.ndarray, paths: Sequence, class_names: Sequence[str]
) -> None:
    predicted = probabilities.argmax(axis=1)
    rows = (
        (str(p), class_names[t], class_names[q], f"{probabilities[i, q]:.6f}", "true" if t == q else "false")
        for i, (p, t, q) in enumerate(zip(paths, labels.tolist(), predicted.tolist()))
    )
    write_csv_atomic(path, ["path", "true_label", "predicted_label", "confidence", "correct"], rows)
