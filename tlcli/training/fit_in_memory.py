"""Fit on arrays held in memory (cached features): Keras's `fit` loop without its data machinery.

On cached features an epoch is a few dozen tiny steps, so what `Model.fit`
costs around them dominates: building its data adapter and epoch iterator,
tracing its multi-step train function, and its per-epoch bookkeeping
(measured on the benchmark's frozen-base workload W1, a head on 2,000 pooled
cats-vs-dogs features, batch 32, 10 epochs: 1.0 s in `fit`, 0.4 s here). This
loop keeps everything that decides the result from Keras: the model's own
`train_step` (loss, class weights as sample weights, optimizer, metrics, as
`fit` runs them), the same callbacks called in the same order, and the same
visiting order as `tlcli.data.batches.array_batches`.
Only the batching is different: batches are gathered from the arrays inside
one compiled function that runs up to `STEPS_PER_CALL` steps. Features kept
on disk (`tlcli.features.RowFile`) are read a call's rows at a time, in
visiting order, and the same function gathers its batches from them. Random flips
are drawn by the model's own `RandomFlip` layer, so a run on the features of
images and their flipped copies is the run on flipped images.
"""

from __future__ import annotations

import numpy as np

from tlcli.data.batches import ArrayBatches, encode_targets

# Steps per compiled call: callbacks (progress, Ctrl-C) run between calls.
STEPS_PER_CALL = 64
# The arrays are copied into one tensor (passed to the compiled function, not
# embedded in its graph); above this, training streams batches through Keras's fit.
FIT_IN_MEMORY_MAX_BYTES = 1024**3
# Features on disk: rows read for one call at most (W2's 400 KB an image: 5 batches of 32).
CALL_MAX_BYTES = 64 * 1024**2


def fit_in_memory(
    model,
    data: ArrayBatches,
    *,
    epochs: int,
    initial_epoch: int = 0,
    class_weight: dict[int, float] | None = None,
    callbacks=(),
) -> None:
    """`model.fit(...)` over `data` for epochs `initial_epoch` .. `epochs - 1` (the model must be compiled)."""
    import keras

    run_steps, steps_per_call = _steps_on(model, data, class_weight)
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, model=model, verbose=0, epochs=epochs, steps=data.steps
    )
    model.stop_training = False
    callback_list.on_train_begin()
    training_logs = None
    for count, epoch in enumerate(range(initial_epoch, epochs)):
        training_logs = _epoch(model, data, run_steps, steps_per_call, callback_list, epoch, data.first_epoch + count)
        if model.stop_training:
            break
    if epochs > initial_epoch:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callback_list.on_train_end(logs=training_logs)


def _steps_on(model, data: ArrayBatches, class_weight: dict[int, float] | None):
    """The compiled steps over `data` (called with a slice of the visiting order), and the steps per call; the model's
    variables built first."""
    import tensorflow as tf

    targets = tf.constant(encode_targets(data.labels, data.num_classes, data.binary))
    weights = data.sample_weights(class_weight)
    weights = None if weights is None else tf.constant(weights)
    flip_layer = data.flip_layer if data.flipped is not None else None
    run = _compiled_steps(model, targets, weights, data.batch_size, data.inputs.shape[1:], flip_layer)
    if isinstance(data.inputs, np.ndarray) or data.flipped is not None:
        table = data.inputs if data.flipped is None else np.concatenate([data.inputs, data.flipped])
        inputs = tf.constant(table, dtype=tf.float32)
        _build(model, inputs[: data.batch_size], targets[: data.batch_size])
        return (lambda order: run(order, inputs, order)), STEPS_PER_CALL
    _build(model, tf.constant(data.inputs[: data.batch_size]), targets[: data.batch_size])
    row_bytes = data.inputs.nbytes // max(1, len(data))
    steps = max(1, min(STEPS_PER_CALL, CALL_MAX_BYTES // max(1, data.batch_size * row_bytes)))
    return (lambda order: run(order, tf.constant(data.inputs[order]), tf.range(len(order), dtype=tf.int32))), steps


def _epoch(
    model, data: ArrayBatches, run_steps, steps_per_call: int, callback_list, epoch: int, order_index: int
) -> dict:
    """One epoch in calls of `steps_per_call` steps, visiting `data` in its order of epoch `order_index`; returns the
    epoch's logs."""
    model.reset_metrics()
    callback_list.on_epoch_begin(epoch)
    order = data.order(order_index).astype(np.int32)
    steps = data.steps
    for first in range(0, steps, steps_per_call):
        last = min(first + steps_per_call, steps)
        callback_list.on_train_batch_begin(first)
        run_steps(order[first * data.batch_size : last * data.batch_size])
        callback_list.on_train_batch_end(last - 1, model.get_metrics_result())
        if model.stop_training:
            break
    epoch_logs = dict(model.get_metrics_result())
    callback_list.on_epoch_end(epoch, epoch_logs)
    return epoch_logs


def _build(model, x, y) -> None:
    """Create the optimizer's and the compiled loss and metrics' variables before tracing (as `fit` does), without
    training."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    y_pred = model(x, training=False)
    model.compute_loss(x=x, y=y, y_pred=y_pred)
    model.compute_metrics(x, y, y_pred, sample_weight=None)
    model.reset_metrics()


def _compiled_steps(model, targets, weights, batch_size: int, row_shape: tuple[int, ...], flip_layer=None):
    """One compiled function: `model.train_step` on each batch of the visiting order it is given (`order`), its
    inputs gathered from `table` at `rows` (the whole array and `order`, or the order's rows read from disk and
    their positions).

    With `flip_layer`, `table` holds the original rows then the flipped ones;
    the layer draws its per-image flips exactly as it does inside the model
    (same seed generator, one draw per batch), and the batch takes those rows.
    """
    import tensorflow as tf

    count = targets.shape[0]

    index_spec = tf.TensorSpec([None], tf.int32)

    @tf.function(input_signature=[index_spec, tf.TensorSpec([None, *row_shape], tf.float32), index_spec])
    def run_steps(order, table, positions):
        for start in tf.range(0, tf.shape(order)[0], batch_size):
            index = order[start : start + batch_size]
            rows = positions[start : start + batch_size]
            if flip_layer is not None:
                draw = flip_layer.get_random_transformation(tf.zeros((tf.shape(index)[0], 1, 1, 1)), training=True)
                rows = index + count * tf.cast(tf.reshape(draw["flips"], [-1]), tf.int32)
            batch = (tf.gather(table, rows), tf.gather(targets, index))
            if weights is not None:
                batch += (tf.gather(weights, index),)
            model.train_step(batch)
        return tf.constant(0)

    return run_steps
