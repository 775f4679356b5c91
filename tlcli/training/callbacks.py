"""Keras callbacks of a training run: best weights, live progress, history.csv, resumable
checkpoints and early stopping, Ctrl-C, validation on cached features and of the weights' moving average.

Kept in their own module so that `import tlcli` does not import Keras.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import keras

from tlcli.errors import Interrupted, TrainingError
from tlcli.features.cut import run_in_batches
from tlcli.progress import Reporter
from tlcli.runs.atomic import write_csv_atomic
from tlcli.runs.checkpoints import FOLDER as CHECKPOINT_FOLDER
from tlcli.runs.checkpoints import CheckpointState, EarlyStopState, save_weights, write_checkpoint
from tlcli.training.cluster import is_collective_failure
from tlcli.training.compile import mean_loss


def monitor_mode(monitor: str) -> str:
    """Losses improve downwards, everything else upwards."""
    return "min" if "loss" in monitor else "max"


TIE = 1e-6  # figures closer than this are equal (history rows are rounded to 6 digits)


def is_better(candidate: dict[str, Any], current: dict[str, Any], monitor: str, tie_break: str | None = None) -> bool:
    """`candidate` beats `current` on `monitor`; on a tie, on `tie_break` when both have it (else it does not)."""
    if not candidate or monitor not in candidate:
        return False
    if not current:
        return True
    sign = -1.0 if monitor_mode(monitor) == "min" else 1.0
    gain = sign * (float(candidate[monitor]) - float(current[monitor]))
    if abs(gain) > TIE or tie_break is None:
        return gain > TIE
    return tie_break in candidate and tie_break in current and is_better(candidate, current, tie_break)


class AveragedValidation(keras.callbacks.Callback):
    """Validate the optimizer's moving average of the weights (`ema_epochs`) after every epoch, beside the weights
    themselves: writes `ema_val_*` into the epoch logs. Put right after the callback that writes `val_*`.

    The average is swapped into the model only while it is read (Keras's `SwapEMAWeights` does the swapping, also
    across replicas), so the weights training continues from, and checkpoints, are never the average.
    """

    def __init__(self, validate: Callable[[], dict[str, float]]):
        """`validate`: the `val_*` figures of the model's current weights."""
        super().__init__()
        self.validate = validate
        self._swap = keras.callbacks.SwapEMAWeights()

    def set_model(self, model):
        super().set_model(model)
        self._swap.set_model(model)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The average in the model's variables for the block (the weights themselves back after it)."""
        self._swap.on_test_begin()
        try:
            yield
        finally:
            self._swap.on_test_end()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        with self.swapped():
            figures = self.validate()
        logs.update({f"ema_{name}": value for name, value in figures.items()})


class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the best epoch of a phase (by `monitor`): with `averaged`, the better of the epoch's
    weights and their moving average (its row then says `"averaged": true`)."""

    def __init__(
        self,
        monitor: str,
        phase: str,
        offset: int,
        best: dict[str, Any] | None = None,
        weights=None,
        epochs_run: int = 0,
        tie_break: str | None = None,
        averaged: AveragedValidation | None = None,
    ):
        super().__init__()
        self.monitor, self.phase, self.offset, self.tie_break = monitor, phase, offset, tie_break
        self.weights, self.averaged = weights, averaged
        self.best: dict[str, Any] = dict(best or {})
        self.epochs_run = epochs_run

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epochs_run = epoch + 1 - self.offset
        row = epoch_record(epoch + 1, self.phase, logs)
        if is_better(row, self.best, self.monitor, self.tie_break):
            self.best = row
            self.weights = self.model.get_weights()
        average = averaged_row(row)
        if self.averaged is not None and average and is_better(average, self.best, self.monitor, self.tie_break):
            self.best = average
            with self.averaged.swapped():
                self.weights = self.model.get_weights()


NOT_FIGURES = ("epoch", "phase", "phase_epoch", "learning_rate", "seconds")  # an epoch's columns that are not figures


def epoch_record(epoch: int, phase: str, columns: dict[str, Any]) -> dict[str, Any]:
    """An epoch as a phase's outcome records it (its best, its last): number, phase, figures rounded to 6 places."""
    figures = {key: round(float(value), 6) for key, value in columns.items() if key not in NOT_FIGURES}
    return {"epoch": epoch, "phase": phase, **figures}


def averaged_row(row: dict[str, Any]) -> dict[str, Any]:
    """The epoch's row as the moving average scored it (`ema_val_*` as `val_*`), or {} without those figures."""
    averaged = {key.removeprefix("ema_"): value for key, value in row.items() if key.startswith("ema_val_")}
    if not averaged:
        return {}
    kept = {key: value for key, value in row.items() if not key.startswith(("val_", "ema_val_"))}
    return kept | averaged | {"averaged": True}


class KerasProgress(keras.callbacks.Callback):
    def __init__(self, reporter: Reporter, phase: str, offset: int, epochs: int, steps: int):
        super().__init__()
        self.reporter, self.phase, self.offset, self.epochs, self.steps = reporter, phase, offset, epochs, steps

    def on_epoch_begin(self, epoch, logs=None):
        self.reporter.epoch_begin(epoch + 1 - self.offset, self.epochs)

    def on_train_batch_end(self, batch, logs=None):
        self.reporter.batch_end(batch + 1, logs or {})

    def on_epoch_end(self, epoch, logs=None):
        self.reporter.epoch_end(
            self.phase, epoch + 1 - self.offset, self.epochs, {k: float(v) for k, v in (logs or {}).items()}
        )


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
                row["learning_rate"] = float(
                    keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
                )  # a distributed variable has no float()
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
        write_csv_atomic(self.path, columns, ([r.get(c, "") for c in columns] for r in self.rows))

    def last_epoch(self, phase: str) -> dict[str, Any]:
        """The phase's last epoch as its outcome records it (`epoch_record`), or {} before any."""
        row = next((row for row in reversed(self.rows) if row.get("phase") == phase), None)
        return epoch_record(int(row["epoch"]), phase, row) if row is not None else {}

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
        outputs = run_in_batches(self.part, self.features, self.batch_size)
        logs["val_loss"] = mean_loss(self.loss, self.targets, outputs)
        for metric in self.metrics:
            metric.reset_state()
            metric.update_state(self.targets, outputs)
            logs[f"val_{metric.name}"] = float(metric.result())


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's EarlyStopping whose wait and best survive a resume."""

    def __init__(self, *args, resume_state: EarlyStopState | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.resume_state = resume_state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resume_state is not None:
            self.wait = self.resume_state.wait
            self.best = float(self.resume_state.best) if self.resume_state.best is not None else None

    def state(self) -> EarlyStopState:
        return EarlyStopState(int(self.wait), float(self.best) if self.best is not None else None)


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes a resumable checkpoint at the end of every epoch (keep it last among the callbacks)."""

    def __init__(
        self,
        run_dir: Path,
        full_model,
        plan,
        *,
        offset: int,
        history: HistoryRecorder,
        keeper: BestWeights,
        early_stopping: ResumableEarlyStopping | None = None,
        run_best: dict | None = None,
        best_file: Path | None = None,
        start: dict | None = None,
    ):
        """`plan`: the phase's `PhasePlan`; `offset`: the run's epochs before the phase; `keeper` and
        `early_stopping`: the phase's callbacks whose state is saved; `run_best`: the run's best epoch before the
        phase; `best_file`: the previous checkpoint's best weights (hard-linked while the best has not changed);
        `start`: the figures of the weights the phase started from (for its rollback). The keeper's `averaged`
        saves the best weights when they are the moving average."""
        super().__init__()
        self.run_dir, self.full_model, self.plan, self.offset = run_dir, full_model, plan, offset
        self.history, self.keeper, self.early_stopping = history, keeper, early_stopping
        self.run_best, self.best_file, self.start = run_best if run_best is not None else {}, best_file, start or {}

    def on_epoch_end(self, epoch, logs=None):
        phase_epoch = epoch + 1 - self.offset
        phase_epochs = self.plan.phase.epochs
        stopped = bool(getattr(self.model, "stop_training", False))
        new_best = bool(self.keeper.best) and self.keeper.best.get("epoch") == epoch + 1
        state = CheckpointState(
            epoch=epoch + 1,
            phase=self.plan.phase.name,
            phase_index=self.plan.index,
            phase_epoch=phase_epoch,
            phase_epochs=phase_epochs,
            stopped_early=stopped and phase_epoch < phase_epochs,
            phase_best=self.keeper.best,
            run_best=self.run_best,
            early_stopping=self.early_stopping.state() if self.early_stopping is not None else None,
            history=self.history.rows,
            phase_start=self.start,
            phase_budget=self.plan.budget.state() if self.plan.budget is not None else None,
        )
        with self._best_from(new_best) as best_from:
            written = write_checkpoint(self.run_dir, self.full_model, self.model, state, best_from)
        if (written / "best.weights.npz").is_file():
            self.best_file = written / "best.weights.npz"

    @contextlib.contextmanager
    def _best_from(self, new_best: bool) -> Iterator[Path | str | None]:
        """Where the checkpoint's best weights come from: the model's as they are, the previous checkpoint's, or
        (the moving average being the new best) a file of the average, deleted once linked."""
        if not new_best or not self.keeper.best.get("averaged") or self.keeper.averaged is None:
            yield "current" if new_best else self.best_file
            return
        path = self.run_dir / CHECKPOINT_FOLDER / ".averaged.weights.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.keeper.averaged.swapped():
            save_weights(self.full_model, path)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)


class TrackEpochs(keras.callbacks.Callback):
    """Each epoch's history row to the run's MLflow run (put after `EpochCheckpoint`: logged once it is on disk)."""

    def __init__(self, tracking, history: HistoryRecorder):
        super().__init__()
        self.tracking, self.history = tracking, history

    def on_epoch_end(self, epoch, logs=None):
        if self.history.rows:
            self.tracking.log_epoch(self.history.rows[-1])


# A loss this many times the phase's first epoch's (or not a number at all) means the run diverged.
DIVERGENCE_FACTOR = 1000.0


class StopOnDivergence(keras.callbacks.Callback):
    """Stop the run with the reason when the training loss is NaN or infinite, or has grown past
    `DIVERGENCE_FACTOR` times the phase's first epoch's (the run is then marked failed, exit 1)."""

    def __init__(self, phase: str, first_loss: float | None = None, factor: float = DIVERGENCE_FACTOR):
        super().__init__()
        self.phase, self.first_loss, self.factor = phase, first_loss, factor

    def on_epoch_end(self, epoch, logs=None):
        if not logs or "loss" not in logs:
            return
        loss = float(logs["loss"])
        hint = "lower the learning rate (or check the data), then start a new run"
        if not math.isfinite(loss):
            raise TrainingError(f"training diverged: the {self.phase} loss is {loss} at epoch {epoch + 1}; {hint}")
        if self.first_loss is None:
            self.first_loss = loss
        elif self.first_loss > 0 and loss > self.factor * self.first_loss:
            raise TrainingError(
                f"training diverged: the {self.phase} loss grew from {self.first_loss:.4g} to {loss:.4g} "
                f"(over {self.factor:g}x) by epoch {epoch + 1}; {hint}"
            )


class StopOnSigint(keras.callbacks.Callback):
    """Ctrl-C stops after the current batch (the partial epoch is discarded); a second Ctrl-C stops at once."""

    def __init__(self, reporter=None):
        super().__init__()
        self.requested = False
        self.reporter = reporter

    def _check(self, *args, **kwargs):
        if self.requested:
            raise Interrupted("interrupted by Ctrl-C")

    on_train_batch_end = _check
    on_test_batch_end = _check
    on_epoch_begin = _check

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopOnSigint]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self.requested:
                raise Interrupted("interrupted by Ctrl-C")
            self.requested = True
            if self.reporter is not None:
                with contextlib.suppress(Exception):
                    self.reporter.warn("Ctrl-C: stopping after this batch (again to stop at once)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        except Exception as exc:
            if self.requested and is_collective_failure(exc):  # the other workers stopped on the same Ctrl-C first
                raise Interrupted("interrupted by Ctrl-C") from exc
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
        if self.requested:
            raise Interrupted("interrupted by Ctrl-C")
