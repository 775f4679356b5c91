"""fit_in_memory trains exactly as Keras's fit does on the same batches."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tlcli.data import ArrayBatches, array_batches
from tlcli.training.fit_in_memory import fit_in_memory


def _head(num_classes: int, activation: str):
    keras.utils.set_random_seed(7)  # same initial weights and dropout seeds for both sides
    inputs = keras.Input((12,))
    x = keras.layers.Dropout(0.3)(inputs)
    outputs = keras.layers.Dense(1 if activation == "sigmoid" else num_classes, activation=activation)(x)
    model = keras.Model(inputs, outputs)
    loss = "binary_crossentropy" if activation == "sigmoid" else "categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss, metrics=["accuracy"])
    return model


class Logs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.batches, self.began, self.ended = [], [], 0, 0

    def on_train_begin(self, logs=None):
        self.began += 1

    def on_train_end(self, logs=None):
        self.ended += 1

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(batch)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, {k: float(v) for k, v in logs.items()}))


@pytest.mark.parametrize(
    "activation, class_weight",
    [("softmax", None), ("softmax", {0: 1.0, 1: 3.0, 2: 0.5}), ("sigmoid", {0: 2.0, 1: 1.0})],
)
def test_same_weights_and_logs_as_keras_fit(activation, class_weight):
    rng = np.random.default_rng(0)
    num_classes = 2 if activation == "sigmoid" else 3
    features = rng.normal(size=(150, 12)).astype("float32")
    labels = rng.integers(0, num_classes, 150).astype("int32")
    binary = activation == "sigmoid"
    spec = dict(batch_size=32, num_classes=num_classes, binary=binary, shuffle=True, seed=5, first_epoch=1)

    keras_model, keras_logs = _head(num_classes, activation), Logs()
    keras_model.fit(
        array_batches(features, labels, **spec),
        epochs=5,
        initial_epoch=2,
        class_weight=class_weight,
        callbacks=[keras_logs],
        verbose=0,
        shuffle=False,
    )
    ours, our_logs = _head(num_classes, activation), Logs()
    fit_in_memory(
        ours,
        ArrayBatches(features, labels, **spec),
        epochs=5,
        initial_epoch=2,
        class_weight=class_weight,
        callbacks=[our_logs],
    )

    for expected, got in zip(keras_model.get_weights(), ours.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert [e for e, _ in our_logs.epochs] == [2, 3, 4]
    for (_, expected), (_, got) in zip(keras_logs.epochs, our_logs.epochs):
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-5)
    assert our_logs.began == our_logs.ended == 1
    assert our_logs.batches and our_logs.batches[-1] == 4  # the last step index of an epoch (5 steps)


def test_stop_training_from_a_callback_ends_after_that_epoch():
    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    rng = np.random.default_rng(1)
    model, logs = _head(3, "softmax"), Logs()
    fit_in_memory(
        model,
        ArrayBatches(rng.normal(size=(40, 12)).astype("float32"), rng.integers(0, 3, 40).astype("int32"), 16, 3),
        epochs=10,
        callbacks=[StopAfterTwo(), logs],
    )
    assert [e for e, _ in logs.epochs] == [0, 1]
