"""Keras callbacks of a training run: best weights, live progress, history.csv.

Kept apart from `tlcli.train` so that `import tlcli` does not import Keras.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras

from tlcli import runs
from tlcli.progress import Reporter


def monitor_mode(monitor: str) -> str:
    """Losses improve downwards, everything else upwards."""
    return "min" if "loss" in monitor else "max"


def is_better(candidate: dict[str, Any], current: dict[str, Any], monitor: str) -> bool:
    if not candidate or monitor not in candidate:
        return False
    if not current:
        return True
    if monitor_mode(monitor) == "min":
        return candidate[monitor] < current[monitor]
    return candidate[monitor] > current[monitor]


class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the best epoch of a phase (by `monitor`)."""

    def __init__(self, monitor: str, phase: str, offset: int, best: dict[str, Any] | None = None, weights=None, epochs_run: int = 0):
        super().__init__()
        self.monitor, self.phase, self.offset = monitor, phase, offset
        self.weights = weights
        self.best: dict[str, Any] = dict(best or {})
        self.epochs_run = epochs_run

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epochs_run = epoch + 1 - self.offset
        row = {"epoch": epoch + 1, "phase": self.phase, **{k: round(float(v), 6) for k, v in logs.items() if k != "learning_rate"}}
        if is_better(row, self.best, self.monitor):
            self.best = row
            self.weights = self.model.get_weights()


class KerasProgress(keras.callbacks.Callback):
    def __init__(self, reporter: Reporter, phase: str, offset: int, epochs: int, steps: int):
        super().__init__()
        self.reporter, self.phase, self.offset, self.epochs, self.steps = reporter, phase, offset, epochs, steps

    def on_epoch_begin(self, epoch, logs=None):
        self.reporter.epoch_begin(epoch + 1 - self.offset, self.epochs)

    def on_train_batch_end(self, batch, logs=None):
        self.reporter.batch_end(batch + 1, logs or {})

    def on_epoch_end(self, epoch, logs=None):
        self.reporter.epoch_end(self.phase, epoch + 1 - self.offset, self.epochs, {k: float(v) for k, v in (logs or {}).items()})


class HistoryRecorder:
    """history.csv: one row per epoch of every phase, rewritten atomically each epoch."""

    def __init__(self, path: Path, rows: list[dict[str, Any]] | None = None):
        self.path = path
        self.rows: list[dict[str, Any]] = list(rows or [])
        if rows is not None:  # resuming: the rows of the checkpoint, none of a discarded partial epoch
            self._write()

    def for_phase(self, phase: str, offset: int):
        recorder = self

        class _PhaseHistory(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                row = {"epoch": epoch + 1, "phase": phase, "phase_epoch": epoch + 1 - offset}
                row.update({k: float(v) for k, v in (logs or {}).items()})
                row["learning_rate"] = float(self.model.optimizer.learning_rate)
                row["seconds"] = round(time.perf_counter() - self._start, 3)
                recorder.append(row)

        return _PhaseHistory()

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        runs.write_csv_atomic(self.path, columns, ([r.get(c, "") for c in columns] for r in self.rows))

    def epochs_per_phase(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["phase"]] = counts.get(row["phase"], 0) + 1
        return counts


class FeatureValidation(keras.callbacks.Callback):
    """Validation through the trainable part on cached features, instead of the full model on images.

    Used when a phase trains on images (random augmentation) but its base is
    frozen below a cut: validation images are never augmented, so their
    features at the cut do not change during the phase. Put first in the
    callback list: it writes `val_*` into the epoch logs the others read.
    """

    def __init__(self, part, features, targets, loss, metrics, batch_size: int = 256):
        super().__init__()
        self.part, self.features, self.targets = part, features, targets
        self.loss, self.metrics, self.batch_size = loss, metrics, batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        from tlcli.features import run_in_batches

        outputs = run_in_batches(self.part, self.features, self.batch_size)
        logs["val_loss"] = float(self.loss(self.targets, outputs))
        for metric in self.metrics:
            metric.reset_state()
            metric.update_state(self.targets, outputs)
            logs[f"val_{metric.name}"] = float(metric.result())
