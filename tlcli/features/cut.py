"""Train only what trains: split the model where its frozen part ends.

Most of transfer learning's time goes into pushing the same images through
the same frozen layers every epoch. When a phase freezes the whole base (or
all but its top N layers) and has no random augmentation, tlcli computes the
frozen part's output once per image (`extract_features`, cached on disk by
`tlcli.features.store`) and fits only the trainable part on those features. The
trainable part reuses the model's own layer objects, so training it trains
the full model, which is what gets saved.

A cut is possible where exactly one tensor crosses it. With skip connections
(MobileNetV2, ResNet, EfficientNet blocks) the requested point may sit inside a
block, where two tensors cross; `find_cut` then cuts at the nearest block
boundary below it, and says where: the few frozen layers between the two run
every epoch, still frozen. Only when no boundary exists below does the phase
train the full model on decoded images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tlcli.modeling import layers as names
from tlcli.modeling.freezing import first_trainable_index

POOL = names.POOL


@dataclass(frozen=True)
class Cut:
    """Where a phase's frozen part ends: after the head's pooling, or after base layer `index`."""

    kind: str  # "pool" or "layer"
    index: int | None = None
    name: str = POOL

    @property
    def label(self) -> str:
        return "pool" if self.kind == "pool" else f"layer:{self.name}"


def find_cut(model, spec: Any, key: str) -> tuple[Cut | None, str]:
    """The cut for a phase whose base trains as `spec`, or (None, why not): after the last frozen layer when one
    tensor crosses there, else at the nearest block boundary below it (a layer whose output alone feeds the rest)."""
    base = model.get_layer(names.BASE)
    layers = base.layers
    start = first_trainable_index(layers, spec, key)
    if start >= len(layers):
        return Cut("pool"), "the whole base is frozen"
    if start <= 1:
        return None, "the whole base trains"
    for index in range(start - 1, 0, -1):
        if _single_tensor_after(base, layers[index]):
            why = f"frozen below {layers[start].name}"
            if index < start - 1:
                skipped = start - 1 - index
                why += (
                    f"; cut at the block boundary after {layers[index].name}, {skipped} layer(s) lower (skip "
                    "connections cross the requested point): they run every epoch, frozen"
                )
            return Cut("layer", index, layers[index].name), why
    return None, f"more than one tensor crosses every point below {layers[start].name} (skip connections)"


def _single_tensor_after(base, layer) -> bool:
    """The rest of the base is a function of this layer's output alone."""
    import keras

    try:
        keras.Model(layer.output, base.output)
    except ValueError:
        return False
    return True


def _preprocess(model, x):
    """Re-apply the model's own layers between its input and the base (augmentation excluded)."""
    for layer in model.layers[1:]:
        if layer.name == names.BASE:
            return x
        if layer.name == names.AUGMENTATION:
            continue
        x = layer([x, x, x]) if layer.name == names.TO_RGB else layer(x)
    raise ValueError("model has no base layer")


def _head(model, x, start_after: str):
    """Re-apply the head layers that follow `start_after` (a chain, by construction)."""
    names = [layer.name for layer in model.layers]
    for layer in model.layers[names.index(start_after) + 1 :]:
        x = layer(x)
    return x


def extractor_for(model, cut: Cut):
    """Raw uint8 pixels -> the frozen part's output at `cut` (inference only)."""
    import keras

    base = model.get_layer(names.BASE)
    # Decoded pixels go in as bytes and are cast inside: measured 4.7 s instead
    # of 5.5 s for 3,000 images at 224 px (a quarter of the data to copy in).
    inputs = keras.Input(model.input_shape[1:], dtype="uint8")
    x = _preprocess(model, keras.ops.cast(inputs, "float32"))
    if cut.kind == "pool":
        x = model.get_layer(POOL)(base(x))
    else:
        x = keras.Model(base.input, base.layers[cut.index].output)(x)
    return keras.Model(inputs, x, name="frozen_part")


def cut_bytes(model, cut: Cut) -> int:
    """Bytes of one image's float32 features at `cut`."""
    base = model.get_layer(names.BASE)
    shape = model.get_layer(POOL).output.shape[1:] if cut.kind == "pool" else base.layers[cut.index].output.shape[1:]
    return 4 * int(np.prod(shape))


def trainable_part(model, cut: Cut):
    """Features at `cut` -> predictions, sharing the model's layers (and so its weights)."""
    import keras

    base = model.get_layer(names.BASE)
    if cut.kind == "pool":
        inputs = keras.Input(model.get_layer(POOL).output.shape[1:])
        return keras.Model(inputs, _head(model, inputs, POOL), name="trainable_part")
    cut_tensor = base.layers[cut.index].output
    inputs = keras.Input(cut_tensor.shape[1:])
    x = keras.Model(cut_tensor, base.output)(inputs)
    return keras.Model(inputs, _head(model, x, names.BASE), name="trainable_part")


def bridge(model, cut: Cut, to: Cut | None = None):
    """Features at a layer cut -> features at a later cut (default: the pool cut, to train the head first)."""
    import keras

    base = model.get_layer(names.BASE)
    cut_tensor = base.layers[cut.index].output
    inputs = keras.Input(cut_tensor.shape[1:])
    if to is not None and to.kind == "layer":
        return keras.Model(inputs, keras.Model(cut_tensor, base.layers[to.index].output)(inputs), name="bridge")
    x = model.get_layer(POOL)(keras.Model(cut_tensor, base.output)(inputs))
    return keras.Model(inputs, x, name="bridge")


def run_in_batches(part, features: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Inference of `part` over an array, in batches (no tf.data overhead)."""
    outputs = [predict_rows(part, features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, *part.output_shape[1:]), dtype="float32")


def across_replicas(model) -> bool:
    """The model was built under a strategy of several replicas (its Keras predict functions are distributed)."""
    strategy = getattr(model, "_distribute_strategy", None)
    return strategy is not None and int(getattr(strategy, "num_replicas_in_sync", 1)) > 1


def predict_rows(model, rows: np.ndarray) -> np.ndarray:
    """The model's outputs on these rows, in this process.

    Keras's `predict_on_batch` (a compiled function) except for a model built under a strategy of several replicas:
    there Keras gives the batch to every replica (and, across workers, takes each worker's batch as its shard of one
    global batch) and returns every replica's rows, so the model is called directly (one compiled function per model).
    """
    import tensorflow as tf

    if not across_replicas(model):
        return np.asarray(model.predict_on_batch(rows))
    call = getattr(model, "_tlcli_local_call", None)
    if call is None:
        call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        model._tlcli_local_call = call
    return np.asarray(call(tf.constant(rows, dtype=tf.float32)))


def flip_pixels(pixels: np.ndarray, mode: str) -> np.ndarray:
    """What `keras.layers.RandomFlip(mode)` makes of (..., height, width, channels) pixels when it flips."""
    if mode in ("horizontal", "horizontal_and_vertical"):
        pixels = pixels[..., :, ::-1, :]
    if mode in ("vertical", "horizontal_and_vertical"):
        pixels = pixels[..., ::-1, :, :]
    return np.ascontiguousarray(pixels)
