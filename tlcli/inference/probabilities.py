"""Class probabilities from a model's outputs: shared by prediction, evaluation and training's report."""

from __future__ import annotations

import numpy as np


def to_class_probabilities(outputs: np.ndarray, binary: bool) -> np.ndarray:
    """(n, classes) probabilities; a sigmoid head's p (class 1) becomes [1 - p, p]."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if binary:
        p = outputs.reshape(len(outputs), -1)[:, 0]
        return np.stack([1.0 - p, p], axis=1)
    return outputs


def predict_probabilities(model, images: np.ndarray, batch_size: int, binary: bool) -> np.ndarray:
    """Class probabilities of uint8 `images`, converted to float32 one batch at a time."""
    outputs = [
        np.asarray(model.predict_on_batch(np.asarray(images[start : start + batch_size], dtype=np.float32)))
        for start in range(0, len(images), batch_size)
    ]
    if not outputs:
        return np.zeros((0, 2 if binary else 0))
    return to_class_probabilities(np.concatenate(outputs), binary)
