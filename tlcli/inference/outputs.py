"""A Keras model's logits and pooled features, which the scores of `tlcli.inference.unknown` need.

The model's output layer applies softmax (or sigmoid) to its logits, so the logits are recomputed from the pooled
features: the head's hidden layers (dropout is the identity at inference), then the output layer's kernel and bias.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from tlcli.inference.unknown import class_logits
from tlcli.modeling import layers as names


def head_logits(model, pooled: np.ndarray, binary: bool) -> np.ndarray:
    """(n, classes) logits of the images whose pooled features are `pooled` (`class_logits` for a sigmoid head)."""
    x = np.asarray(pooled, dtype=np.float32)
    for layer in model.layers:
        if layer.name.startswith("head_dense"):
            x = np.asarray(layer(x), dtype=np.float32)
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in model.get_layer(names.OUTPUT).get_weights())
    return class_logits(x.astype(np.float64) @ kernel + bias, binary)


def outputs_function(model, binary: bool) -> Callable[[np.ndarray, int], np.ndarray]:
    """`(uint8 images, batch_size) -> rows of [class logits | pooled features]` of `model` (one array, so that
    test-time augmentation averages both over its views)."""
    import keras

    pooling = keras.Model(model.inputs, model.get_layer(names.POOL).output, name="pooled_features")

    def rows(images: np.ndarray, batch_size: int) -> np.ndarray:
        pooled = [
            np.asarray(pooling.predict_on_batch(np.asarray(images[start : start + batch_size], dtype=np.float32)))
            for start in range(0, len(images), batch_size)
        ]
        pooled_all = np.concatenate(pooled).astype(np.float32).reshape(len(images), -1)
        return np.concatenate([head_logits(model, pooled_all, binary), pooled_all], axis=1)

    return rows
