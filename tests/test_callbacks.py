"""The training callbacks on a tiny Keras model: best weights, history.csv, feature validation, early stopping,
Ctrl-C, checkpoints."""

from __future__ import annotations

import csv
import os
import signal

import keras
import numpy as np
import pytest

from tlcli.errors import Interrupted
from tlcli.runs.checkpoints import EarlyStopState, checkpoint_dirs, read_state
from tlcli.training.callbacks import (
    BestWeights,
    EpochCheckpoint,
    FeatureValidation,
    HistoryRecorder,
    ResumableEarlyStopping,
    StopOnSigint,
    is_better,
    monitor_mode,
)


def tiny_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype("float32")
    y = keras.utils.to_categorical((x[:, 0] > 0).astype(int), 2)
    return x, y


def test_monitor_direction_and_comparison():
    assert monitor_mode("val_loss") == "min" and monitor_mode("val_accuracy") == "max"
    assert is_better({"val_loss": 0.2}, {"val_loss": 0.3}, "val_loss") and not is_better(
        {"val_loss": 0.4}, {"val_loss": 0.3}, "val_loss"
    )
    assert is_better({"val_accuracy": 0.9}, {}, "val_accuracy")  # anything beats nothing
    assert not is_better({}, {"val_accuracy": 0.1}, "val_accuracy") and not is_better({"loss": 1.0}, {}, "val_accuracy")


def test_best_weights_are_those_of_the_best_epoch(data):
    x, y = data
    model = tiny_model()
    snapshots = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append((logs["val_accuracy"], logs["val_loss"], model.get_weights()))

    keeper = BestWeights("val_loss", "train", offset=0)
    model.fit(x, y, validation_data=(x[:10], y[:10]), epochs=6, verbose=0, callbacks=[Snapshot(), keeper])
    best = min(range(6), key=lambda i: snapshots[i][1])
    assert keeper.best["epoch"] == best + 1 and keeper.best["phase"] == "train" and keeper.epochs_run == 6
    assert keeper.best["val_loss"] == pytest.approx(snapshots[best][1], abs=1e-6)
    for kept, expected in zip(keeper.weights, snapshots[best][2]):
        np.testing.assert_array_equal(kept, expected)


def test_history_csv_has_every_epoch_and_column(tmp_path, data):
    x, y = data
    path = tmp_path / "history.csv"
    history = HistoryRecorder(path)
    model = tiny_model()
    model.fit(x, y, validation_data=(x[:10], y[:10]), epochs=2, verbose=0, callbacks=[history.for_phase("train", 0)])
    model.fit(x, y, epochs=4, initial_epoch=2, verbose=0, callbacks=[history.for_phase("fine_tune", 2)])
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["epoch"], r["phase"], r["phase_epoch"]) for r in rows] == [
        ("1", "train", "1"),
        ("2", "train", "2"),
        ("3", "fine_tune", "1"),
        ("4", "fine_tune", "2"),
    ]
    assert rows[0]["val_loss"] and rows[2]["val_loss"] == ""  # the union of the phases' columns
    assert float(rows[0]["learning_rate"]) == pytest.approx(0.05) and float(rows[0]["seconds"]) >= 0
    assert history.epochs_per_phase() == {"train": 2, "fine_tune": 2}
    resumed = HistoryRecorder(path, rows=history.rows[:1])  # a resume rewrites the file from the checkpoint's rows
    assert resumed.rows == history.rows[:1] and sum(1 for _ in open(path)) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_feature_validation_writes_what_keras_evaluate_computes(data):
    x, y = data
    model = tiny_model()
    loss, metrics = keras.losses.CategoricalCrossentropy(), [keras.metrics.CategoricalAccuracy(name="accuracy")]
    logs = {"loss": 1.0}
    FeatureValidation(model, x[:10], y[:10], loss, metrics).on_epoch_end(0, logs)
    expected = model.evaluate(x[:10], y[:10], verbose=0, return_dict=True)
    assert logs["val_loss"] == pytest.approx(expected["loss"], rel=1e-5) and logs["val_accuracy"] == pytest.approx(
        expected["accuracy"]
    )


def test_early_stopping_resumes_its_wait_and_best():
    stop = ResumableEarlyStopping(monitor="val_loss", patience=3, resume_state=EarlyStopState(wait=2, best=0.5))
    stop.set_model(tiny_model())
    stop.on_train_begin()
    assert stop.wait == 2 and stop.best == 0.5
    stop.on_epoch_end(5, {"val_loss": 0.6})  # a third epoch without improvement: patience is spent
    assert stop.model.stop_training and stop.state() == EarlyStopState(3, 0.5)


def test_ctrl_c_stops_after_the_batch_and_a_second_stops_at_once():
    stop = StopOnSigint()
    with pytest.raises(Interrupted):
        with stop.installed():
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested  # the first Ctrl-C only asks
            stop.on_train_batch_end(0)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is removed again
    with pytest.raises(Interrupted):
        with stop.installed():
            os.kill(os.getpid(), signal.SIGINT)  # already requested: raises from the handler itself


def test_epoch_checkpoint_records_the_phase_state(tmp_path, data):
    from tlcli.training.phases import Phase, PhasePlan

    x, y = data
    model = tiny_model()
    history = HistoryRecorder(tmp_path / "history.csv")
    keeper = BestWeights("val_accuracy", "train", offset=0)
    plan = PhasePlan(Phase("train", 3, 0.05, None, "all", "base.trainable", None), 0, None, None, "test")
    checkpoint = EpochCheckpoint(tmp_path, model, plan, offset=0, history=history, keeper=keeper)
    model.fit(
        x,
        y,
        validation_data=(x[:10], y[:10]),
        epochs=3,
        verbose=0,
        callbacks=[history.for_phase("train", 0), keeper, checkpoint],
    )
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["epoch-0003", "epoch-0002"]  # the last two are kept
    state = read_state(checkpoint_dirs(tmp_path)[0])
    assert (state.epoch, state.phase, state.phase_epoch, state.phase_epochs, state.stopped_early) == (
        3,
        "train",
        3,
        3,
        False,
    )
    assert state.phase_best == keeper.best and len(state.history) == 3
    assert (checkpoint_dirs(tmp_path)[0] / "best.weights.npz").is_file()


def test_a_collective_that_fails_after_ctrl_c_is_the_interruption_not_a_lost_worker():
    """On a cluster every worker gets the stop; one that stops first fails the others' collective, which is the
    interruption the user asked for (exit 130, run marked interrupted), not a worker lost."""
    from tlcli.errors import Interrupted
    from tlcli.training.callbacks import StopOnSigint

    class UnavailableError(Exception):  # TensorFlow's error for a collective another worker left
        pass

    stop = StopOnSigint()
    with pytest.raises(Interrupted), stop.installed():
        stop.requested = True
        raise UnavailableError("Graph execution error:")
    with pytest.raises(UnavailableError), StopOnSigint().installed():  # without a Ctrl-C it stays what it was
        raise UnavailableError("Graph execution error:")
