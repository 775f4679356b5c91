"""Temperature scaling (Guo et al. 2017): one scalar T fitted by likelihood so that softmax(logits / T) is calibrated,
and the expected calibration error it is judged by.

T > 1 softens an over-confident model, T < 1 sharpens an under-confident one; the predicted class never changes.
Logits may be the log of the model's probabilities (the same softmax), so exported artifacts calibrate too.
"""

from __future__ import annotations

import math

import numpy as np

from tlcli.errors import UserError
from tlcli.evaluation.metrics import calibration
from tlcli.inference.unknown import calibrated

LOG_T_RANGE = (math.log(0.05), math.log(20.0))  # the search interval of log T


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean cross-entropy of softmax(logits / temperature) against integer `labels`."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), np.asarray(labels, dtype=np.int64)]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, tolerance: float = 1e-4) -> float:
    """The temperature that minimises the negative log-likelihood of `labels` (golden-section search on log T, in
    [0.05, 20]; the likelihood is unimodal in it).

    Args:
        logits: (n, classes) logits, or the log of the model's probabilities.
        labels: (n,) integer classes.

    Raises:
        UserError: no images, or logits and labels of different lengths.
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if not len(logits) or len(logits) != len(labels):
        raise UserError(f"labels: need one label per row of logits, got {len(labels)} for {len(logits)} rows")
    golden = (math.sqrt(5) - 1) / 2
    low, high = LOG_T_RANGE
    a, b = high - golden * (high - low), low + golden * (high - low)
    fa, fb = (negative_log_likelihood(logits, labels, math.exp(x)) for x in (a, b))
    while high - low > tolerance:
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - golden * (high - low)
            fa = negative_log_likelihood(logits, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + golden * (high - low)
            fb = negative_log_likelihood(logits, labels, math.exp(b))
    return round(math.exp((low + high) / 2), 6)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The support-weighted gap between confidence and accuracy over 10 equal-width bins (evaluate's `ece`)."""
    return calibration(np.asarray(probabilities, dtype=np.float64), np.asarray(labels))["ece"]


def calibration_errors(logits: np.ndarray, labels: np.ndarray, temperature: float) -> tuple[float, float]:
    """(ECE before, ECE after) scaling `logits` by `temperature`."""
    return (
        expected_calibration_error(calibrated(logits, 1.0), labels),
        expected_calibration_error(calibrated(logits, temperature), labels),
    )
