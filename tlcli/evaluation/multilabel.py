"""Multi-label evaluation: figures from per-class sigmoid probabilities, each class's threshold, the report's files.

An image may have any number of labels, none included. A label is predicted
when its probability reaches the class's threshold (`head.threshold`: 0.5, or
chosen per class on the validation split by `choose_thresholds`). The figures
are scikit-learn's: per-class precision/recall/F1/support and average
precision, their micro, macro, weighted and per-sample averages, mAP (the mean
over classes with positives of the average precision: independent of the
thresholds), subset accuracy (every label of an image right) and Hamming loss
(the fraction of wrong image-class decisions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlcli.evaluation.intervals import multilabel_intervals
from tlcli.evaluation.metrics import flatten_numbers
from tlcli.evaluation.plots import plot_label_mistakes, plot_pr_curves
from tlcli.runs.atomic import write_csv_atomic

_EPSILON = 1e-7  # as Keras clips in its cross-entropy, so `loss` is comparable with training's val_loss

MULTILABEL_EVAL_FILES = {
    "metrics.json": (
        "mAP, subset accuracy, Hamming loss, loss, micro/macro/weighted/samples precision, recall and F1, "
        "per-class figures and thresholds"
    ),
    "predictions.csv": (
        "one row per image: path, true_labels, predicted_labels (joined by the run's separator), exact_match, "
        "one probability column per class"
    ),
    "per_class.csv": "one row per class: threshold, precision, recall, F1, average precision, support, predicted",
    "pr_curves.png": (
        "each class's precision-recall curve, with its average precision and the operating point of its threshold"
    ),
    "mistakes.png": "the images with the most confident wrong decisions (missed and spurious labels named)",
}


def choose_thresholds(probabilities: np.ndarray, labels: np.ndarray, default: float = 0.5) -> tuple[float, ...]:
    """Each class's threshold with the best F1 on (probabilities, labels); `default` for a class without positives.

    The threshold is the midpoint between the probability that reaches the best F1 and the next lower one, so
    images scored just below the best point on another set are not all flipped by rounding.
    """
    from sklearn.metrics import precision_recall_curve

    chosen = []
    for c in range(labels.shape[1]):
        truth, scores = labels[:, c], probabilities[:, c]
        if truth.sum() == 0 or truth.sum() == len(truth):
            chosen.append(default)
            continue
        precision, recall, cuts = precision_recall_curve(truth, scores)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        best = int(np.argmax(f1))  # the lowest cut of the best F1 (cuts ascend): recall kept
        below = scores[scores < cuts[best]]
        threshold = (cuts[best] + below.max()) / 2 if len(below) else cuts[best]
        chosen.append(round(float(np.clip(threshold, 1e-4, 1 - 1e-4)), 6))
    return tuple(chosen)


def compute_multilabel_metrics(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str], thresholds: Sequence[float]
) -> dict[str, Any]:
    """Every figure of a multi-label evaluation, as JSON-ready values (see the module docstring)."""
    from sklearn.metrics import average_precision_score, hamming_loss, precision_recall_fscore_support

    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    predicted = (probabilities >= np.asarray(thresholds)[None, :]).astype(np.int64)
    clipped = np.clip(probabilities, _EPSILON, 1 - _EPSILON)
    loss = -(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)).mean()
    averages = {}
    for average in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = precision_recall_fscore_support(labels, predicted, average=average, zero_division=0)
        averages[f"{average}_avg"] = {"precision": _r(p), "recall": _r(r), "f1": _r(f)}
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, average=None, zero_division=0)
    present = [c for c in range(len(class_names)) if labels[:, c].sum() > 0]
    ap = {c: float(average_precision_score(labels[:, c], probabilities[:, c])) for c in present}
    return {
        "task": "multi_label",
        "map": _r(np.mean(list(ap.values()))) if ap else None,
        "subset_accuracy": _r((predicted == labels).all(axis=1).mean()),
        "hamming_loss": _r(hamming_loss(labels, predicted)),
        "loss": _r(loss),
        "images": int(len(labels)),
        "label_cardinality": {"true": _r(labels.sum(axis=1).mean()), "predicted": _r(predicted.sum(axis=1).mean())},
        "images_without_labels": {
            "true": int((labels.sum(axis=1) == 0).sum()),
            "predicted": int((predicted.sum(axis=1) == 0).sum()),
        },
        **averages,
        "per_class": {
            name: {
                "threshold": _r(thresholds[i]),
                "precision": _r(precision[i]),
                "recall": _r(recall[i]),
                "f1": _r(f1[i]),
                "average_precision": _r(ap[i]) if i in ap else None,
                "support": int(support[i]),
                "predicted": int(predicted[:, i].sum()),
            }
            for i, name in enumerate(class_names)
        },
        "intervals": multilabel_intervals(labels, predicted, class_names),
    }


def multilabel_metric_keys(class_names: Sequence[str]) -> list[str]:
    """The numeric keys a multi-label report for these classes will have (for checking gates up front)."""
    n = len(class_names)
    dummy = compute_multilabel_metrics(np.eye(n), np.eye(n, dtype=int), class_names, [0.5] * n)
    return sorted(flatten_numbers({**dummy, "dataset": {"images": 0, "skipped": 0}}))


def write_multilabel_files(
    folder: Path,
    metrics: dict[str, Any],
    probabilities: np.ndarray,
    labels: np.ndarray,
    paths: Sequence,
    class_names: Sequence[str],
    separator: str,
    images=None,
) -> None:
    """predictions.csv, per_class.csv, pr_curves.png and mistakes.png of one evaluation folder."""
    thresholds = np.array([metrics["per_class"][name]["threshold"] for name in class_names])
    predicted = probabilities >= thresholds[None, :]

    def joined(row) -> str:
        return separator.join(name for name, on in zip(class_names, row) if on)

    rows = (
        (
            str(path),
            joined(truth == 1),
            joined(guess),
            "true" if ((truth == 1) == guess).all() else "false",
            *(f"{p:.6f}" for p in scores),
        )
        for path, truth, guess, scores in zip(paths, labels, predicted, probabilities)
    )
    write_csv_atomic(
        folder / "predictions.csv", ["path", "true_labels", "predicted_labels", "exact_match", *class_names], rows
    )
    columns = ["threshold", "precision", "recall", "f1", "average_precision", "support", "predicted"]
    write_csv_atomic(
        folder / "per_class.csv",
        ["class", *columns],
        ([name, *(_cell(metrics["per_class"][name][c]) for c in columns)] for name in class_names),
    )
    plot_pr_curves(probabilities, labels, class_names, thresholds, folder / "pr_curves.png")
    plot_label_mistakes(probabilities, labels, thresholds, paths, class_names, images, folder / "mistakes.png")


def _cell(value) -> str:
    return "" if value is None else str(value)


def _r(value: Any) -> float:
    return round(float(value), 6)
