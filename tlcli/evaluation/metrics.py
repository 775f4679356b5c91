"""The figures of an evaluation, from predicted class probabilities (scikit-learn metrics)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from tlcli.evaluation.intervals import single_label_intervals

CALIBRATION_BINS = 10
# Keras clips probabilities to [1e-7, 1 - 1e-7] in its cross-entropy; doing the
# same makes `loss` comparable with the val_loss of training.
_EPSILON = 1e-7


def compute_metrics(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str], top_k: int
) -> dict[str, Any]:
    """Every figure of an evaluation, as JSON-ready values.

    Args:
        probabilities: (n, classes) class probabilities (softmax, or [1-p, p]
            for a sigmoid head).
        labels: (n,) true class indices.
        class_names: names in output order.
        top_k: k of the top-k accuracy (capped at the number of classes).

    Returns:
        A dict with `accuracy`, `top{k}_accuracy`, `loss`, `per_class`,
        `macro_avg`, `weighted_avg`, `confusion_matrix`, `calibration` and
        `intervals` (95%, `tlcli.evaluation.intervals`: `{figure: [low, high]}`).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = len(class_names)
    k = max(1, min(top_k, n_classes))
    indices = list(range(n_classes))
    predicted = probabilities.argmax(axis=1)

    # Top-k by rank of the true class's probability: ties count in the model's favour, as in Keras.
    true_scores = probabilities[np.arange(len(labels)), labels]
    rank = (probabilities > true_scores[:, None]).sum(axis=1)
    clipped = np.clip(probabilities / probabilities.sum(axis=1, keepdims=True), _EPSILON, 1 - _EPSILON)
    loss = float(-np.log(clipped[np.arange(len(labels)), labels]).mean())

    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=indices, zero_division=0)
    averages = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            labels, predicted, labels=indices, average=average, zero_division=0
        )
        averages[f"{average}_avg"] = {"precision": _r(p), "recall": _r(r), "f1": _r(f), "support": int(len(labels))}
    matrix = confusion_matrix(labels, predicted, labels=indices)
    return {
        "accuracy": _r(accuracy_score(labels, predicted)),
        f"top{k}_accuracy": _r(float((rank < k).mean())),
        "loss": _r(loss),
        "images": int(len(labels)),
        **averages,
        "per_class": {
            name: {"precision": _r(precision[i]), "recall": _r(recall[i]), "f1": _r(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": {"labels": list(class_names), "matrix": matrix.astype(int).tolist()},
        "calibration": calibration(probabilities, labels),
        "intervals": single_label_intervals(labels, predicted, rank, class_names, k),
    }


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Expected calibration error over equal-width confidence bins, and the bins themselves.

    ECE is the support-weighted mean gap between confidence (top-1
    probability) and accuracy in each bin: 0 for a perfectly calibrated model.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins, the first one also taking 0.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        row = {"low": _r(edges[b]), "high": _r(edges[b + 1]), "count": count, "confidence": None, "accuracy": None}
        if count:
            mean_confidence, accuracy = float(confidence[mask].mean()), float(correct[mask].mean())
            row.update(confidence=_r(mean_confidence), accuracy=_r(accuracy))
            ece += count / len(labels) * abs(accuracy - mean_confidence)
        rows.append(row)
    return {"ece": _r(ece), "bins": rows}


def _r(value: Any) -> float:
    return round(float(value), 6)


def flatten_numbers(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """{dotted key: value} for every number in nested dicts (lists are not walked)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_numbers(value, dotted + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[dotted] = float(value)
    return flat


def metric_keys(class_names: Sequence[str], top_k: int) -> list[str]:
    """The numeric keys a report for these classes will have (for checking gates up front)."""
    n = len(class_names)
    dummy = compute_metrics(np.eye(n), np.arange(n), class_names, top_k)
    return sorted(flatten_numbers({**dummy, "dataset": {"images": 0, "skipped": 0}}))
