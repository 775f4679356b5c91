"""What one trial trains: a head on the study's cached features, in memory, or (when the search needs it) a whole run.

`HeadTrials` holds the one extraction every trial shares. A trial builds a
fresh head from `tlcli.modeling.build.head_layers` on an input shaped like
the base's output, takes its trainable part after the pooling (the same cut
training uses), compiles it with training's own optimizer, loss and metrics,
and fits it with `tlcli.training.fit_in_memory` and training's callbacks
(validation on features, best weights, early stopping for `epochs: auto`,
divergence); a last callback reports the figure to Optuna every epoch and
prunes. No run folder, model file or plot is written. `full_trial` trains
as `tlcli train` does (fine-tuning, augmentation), in a scratch folder that is
removed afterwards, pruned through the progress events training emits.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlcli.config.schema import ExperimentConfig
from tlcli.data.batches import ArrayBatches, class_weights, encode_targets, positive_weights, steps_per_epoch
from tlcli.data.groups import fold_method, group_folds
from tlcli.errors import ConfigError, TrainingError
from tlcli.features.cut import Cut, trainable_part
from tlcli.modeling import layers as names
from tlcli.modeling.build import head_layers
from tlcli.progress import Reporter
from tlcli.training.api import train
from tlcli.training.compile import Objective, make_optimizer
from tlcli.training.fit_in_memory import fit_in_memory
from tlcli.training.phases import phases_of, resolve_auto
from tlcli.training.prepare import Prepared
from tlcli.training.selection import fit_probes, head_penalty

POOL = Cut("pool")


@dataclass
class TrialOutcome:
    """A finished trial: its value (the metric at the epoch training keeps), epochs run, the kept epoch's figures."""

    value: float
    epochs: int
    figures: dict[str, float] = field(default_factory=dict)


class Reports:
    """A trial's per-epoch figures, sent to the study by a background thread.

    Each `trial.report` and `trial.should_prune` is a round trip to the storage (about 6 ms each on SQLite,
    measured; more over a network), which would cost a head trial more than its epochs. The thread reports
    every epoch in order and asks the pruner after the newest one it has; training learns of a prune at its
    next epoch. `close` waits until every report is stored, so the study never misses an epoch.
    """

    def __init__(self, trial, metric: str):
        import queue

        self.trial, self.metric = trial, metric
        self.pruned: str | None = None
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=f"tlcli-trial-{trial.number}-reports", daemon=True)
        self._thread.start()

    def put(self, step: int, value: Any) -> None:
        """Queue one epoch's figure; raises TrialPruned once the pruner has said so (after every report is stored)."""
        import optuna

        if value is not None and np.isfinite(value):
            self._queue.put((step, float(value)))
        if self.pruned is not None or self.error is not None:
            self.close()
            raise optuna.TrialPruned(self.pruned)

    def _work(self) -> None:
        import queue

        while True:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while batch[-1] is not None:
                    batch.append(self._queue.get_nowait())  # what training queued meanwhile
            try:
                for item in batch:
                    if item is None:
                        return
                    self.trial.report(item[1], item[0])
                step, value = batch[-1]
                if self.pruned is None and self.trial.should_prune():  # once after the newest figure
                    self.pruned = f"pruned at epoch {step} ({self.metric} {value:.4f})"
            except BaseException as exc:  # noqa: BLE001  (raised in the training thread by close)
                self.error = exc
                return

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def pruning_callback(reports: Reports):
    """A Keras callback that queues `reports.metric` after every epoch and stops the trial once the study prunes it."""
    import keras

    class ReportToStudy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            reports.put(epoch + 1, (logs or {}).get(reports.metric))

    return ReportToStudy()


def fast_validation(part, features: np.ndarray, targets: np.ndarray, loss, metrics):
    """Training's validation on cached features (`tlcli.training.callbacks.FeatureValidation`: the same loss and
    metrics on the whole validation split), as one compiled call per epoch instead of batched predictions and eager
    metrics."""
    import keras
    import tensorflow as tf

    x, y = tf.constant(features, tf.float32), tf.constant(targets, tf.float32)

    @tf.function
    def evaluate():
        outputs = part(x, training=False)
        figures = {"val_loss": loss(y, outputs)}
        for metric in metrics:
            metric.reset_state()
            metric.update_state(y, outputs)
            figures[f"val_{metric.name}"] = metric.result()
        return figures

    class Validate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs.update({key: float(value) for key, value in evaluate().items()})

    return Validate()


# `tune.folds: auto`: cross-validate when the training and validation splits hold fewer images than this.
AUTO_FOLDS, AUTO_FOLDS_BELOW = 5, 1000


def resolve_folds(
    folds: str | int, images: int, flips: bool, smallest: tuple[str, int] | None = None, groups: int | None = None
) -> tuple[int, str]:
    """How a head study scores its trials (`tune.folds` made concrete for `images` training + validation images),
    and why.

    Args:
        smallest: the class with the fewest training + validation images and their number, when the folds are
            stratified (single-label); None for plain k-fold (multi-label).
        groups: the number of `data.group` groups among the images (None: no groups); a fold holds whole groups.

    Raises:
        ConfigError: `tune.folds: k` with more folds than the smallest class has images (some folds would hold none
            of it out, and with every class that small the folds cannot be drawn at all), or than there are groups.
    """
    if flips:
        return 1, "on the validation split (random flips' copies are cached for the training split only)"
    k = min((AUTO_FOLDS if images < AUTO_FOLDS_BELOW else 1) if folds == "auto" else int(folds), images)
    if groups is not None and groups < k:
        if folds != "auto":
            raise ConfigError(
                "tune.folds",
                f"{folds} folds, but data.group names {groups} groups; set tune.folds to {groups} or fewer",
            )
        k = groups
    why = (
        f"tune.folds auto: fewer than {AUTO_FOLDS_BELOW}" if k > 1 else f"{images} training + validation images: enough"
    )
    if smallest is not None and 1 < k and smallest[1] < k:
        name, count = smallest
        if folds != "auto":
            fix = f"set tune.folds to {count} or fewer" if count > 1 else "set tune.folds: 1 (the validation split)"
            raise ConfigError(
                "tune.folds", f"{folds} folds, but class {name!r} has {count} training + validation images; {fix}"
            )
        k, why = max(count, 1), f"tune.folds auto, but class {name!r} has {count} images"
    why = f" ({why})" if folds == "auto" else ""
    if k == 1:
        return 1, "on the validation split" + why
    whole = f", keeping each of the {groups} groups of data.group in one fold" if groups is not None else ""
    return k, f"by {k}-fold cross-validation over the {images} training + validation images{whole}{why}"


def fold_splits(
    labels: np.ndarray, folds: int, seed: int, groups: list[str] | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`folds` (fit rows, held-out rows) pairs over `labels`: stratified by class (multi-label: plain k-fold); with
    `groups` (`tlcli.data.groups.groups_of`), no group on both sides of a fold (`group_folds`)."""
    return group_folds(labels, folds, seed, groups)[0]


class HeadTrials:
    """Trials that train only the head, on the features of the study's one extraction
    (`tlcli.training.inputs.FeatureInputs`)."""

    def __init__(self, prepared: Prepared, inputs):
        self.prepared, self.inputs = prepared, inputs
        self.feature_shape = tuple(prepared.model.get_layer(names.BASE).output.shape[1:])
        self.train_x = inputs.features(POOL, "train")
        self.flipped = inputs.features(POOL, "train", flipped=True) if inputs.flip else None
        self.val_x = inputs.features(POOL, "val")
        self._penalty: float | None | bool = False  # not chosen yet
        self.folds = (
            1  # how trials are scored (`resolve_folds`): 1, on the validation split; k, by k-fold cross-validation
        )
        self._splits: dict[int, list] = {}  # seed -> the folds
        self.groups: list[str] | None = None  # each train + validation image's group (`groups_of`; None: no groups)

    def penalty(self) -> float | None:
        """`train.l2: auto` made concrete once for the study: the penalty training's selection would choose (exact
        fits on the training split, the lowest validation loss; `tlcli.training.selection`), or None when it cannot
        choose."""
        if self._penalty is False:
            config, inputs = self.prepared.config, self.inputs
            names_, labels = self.prepared.splits.class_names, inputs.splits.train.labels
            weights = class_weights(labels, inputs.num_classes, config.train.class_weight, names_)
            alpha = positive_weights(labels, config.train.class_weight, names_)
            try:
                chosen = fit_probes(
                    self.train_x,
                    labels,
                    self.val_x,
                    inputs.splits.val.labels,
                    inputs.num_classes,
                    weights,
                    alpha=alpha,
                ).chosen
                self._penalty = head_penalty(chosen, inputs.num_classes, inputs.binary, config.multi_label)
            except ValueError:  # e.g. a class absent from the training split
                self._penalty = None
        return self._penalty  # type: ignore[return-value]

    def run(self, trial, config: ExperimentConfig, metric: str) -> TrialOutcome:
        """Fit a new head as `config` says (its `auto` values pinned), reporting `metric` every epoch (of the first
        fold)."""
        inputs = self.inputs
        if self.folds == 1:
            kept, epochs = self._fit(
                trial,
                config,
                metric,
                (self.train_x, inputs.splits.train.labels),
                (self.val_x, inputs.splits.val.labels),
                self.flipped,
            )
            return TrialOutcome(
                float(kept[metric]), epochs, {k: v for k, v in kept.items() if k.startswith("val_") or k == "epoch"}
            )
        x = np.concatenate([self.train_x, self.val_x])
        y = np.concatenate([inputs.splits.train.labels, inputs.splits.val.labels])
        folds = [
            self._fit(trial if index == 0 else None, config, metric, (x[fit], y[fit]), (x[held], y[held]))
            for index, (fit, held) in enumerate(self.splits(y, config.seed))
        ]
        figures = {
            key: round(float(np.mean([kept[key] for kept, _ in folds])), 6)
            for key in folds[0][0]
            if key.startswith("val_")
        }
        epochs = int(np.median([epochs for _, epochs in folds]))
        return TrialOutcome(
            figures[metric],
            epochs,
            figures | {"epoch": epochs, "folds": [round(float(kept[metric]), 6) for kept, _ in folds]},
        )

    @property
    def fold_method(self) -> str | None:
        """The scikit-learn splitter of the study's folds (None: trials are scored on the validation split)."""
        return (
            None if self.folds == 1 else fold_method(self.inputs.splits.train.labels.ndim == 1, self.groups is not None)
        )

    def splits(self, labels: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The study's folds for a trial's seed (`fold_splits`), drawn once per seed."""
        if seed not in self._splits:
            self._splits[seed] = fold_splits(labels, self.folds, seed, self.groups)
        return self._splits[seed]

    def _fit(
        self, trial, config: ExperimentConfig, metric: str, fit: tuple, held: tuple, flipped: np.ndarray | None = None
    ) -> tuple[dict[str, Any], int]:
        """One head fitted on `fit` (features, labels) and stopped on `held`: the kept epoch's figures and the epochs
        it ran. With a `trial`, every epoch's `metric` goes to the study, which may prune it."""
        import keras

        # Here, not at the top: training's callbacks subclass Keras's when imported.
        from tlcli.training.callbacks import BestWeights, ResumableEarlyStopping, StopOnDivergence, monitor_mode

        keras.utils.set_random_seed(config.seed)
        (train_x, labels), (val_x, val_labels) = fit, held
        n = self.inputs.num_classes
        binary = config.head.activation == "sigmoid" and not config.multi_label
        names_ = self.prepared.splits.class_names
        objective = Objective.for_labels(config, labels, names_)
        phase, _ = resolve_auto(phases_of(config)[0], on_features=True)
        with self.prepared.scope():
            x = keras.Input(self.feature_shape)
            stand_in = keras.layers.Identity(name=names.BASE)(
                x
            )  # the base's place: the trial's head is cut after its pooling, as training cuts
            part = trainable_part(
                keras.Model(
                    x, head_layers(stand_in, config.head, n, l2=float(config.train.l2), multi_label=config.multi_label)
                ),
                POOL,
            )
            objective.compile(part, make_optimizer(phase, steps_per_epoch(len(labels), config.data.batch_size)))
            targets = encode_targets(val_labels, n, binary)
            callbacks: list[Any] = [
                fast_validation(part, val_x, np.asarray(targets), objective.loss(), objective.metrics())
            ]
            keeper = BestWeights(config.best_monitor, phase.name, 0)
            callbacks.append(keeper)
            stop = phase.early_stopping
            if stop.patience:
                callbacks.append(
                    ResumableEarlyStopping(
                        monitor=stop.monitor,
                        patience=stop.patience,
                        min_delta=stop.min_delta,
                        mode=monitor_mode(stop.monitor),
                    )
                )
            history = keras.callbacks.History()
            reports = Reports(trial, metric) if trial is not None else None
            callbacks += [StopOnDivergence(phase.name), history] + (
                [pruning_callback(reports)] if reports is not None else []
            )
            flip_layer = self.prepared.model.get_layer(names.AUGMENTATION).layers[0] if flipped is not None else None
            data = ArrayBatches(
                train_x,
                labels,
                config.data.batch_size,
                n,
                binary,
                config.data.shuffle,
                config.seed,
                flipped=flipped,
                flip_layer=flip_layer,
            )
            try:
                fit_in_memory(part, data, epochs=phase.epochs, class_weight=objective.class_weight, callbacks=callbacks)
            finally:
                if reports is not None:
                    reports.close()
        kept = keeper.best if config.train.restore_best and keeper.best else _last(history)
        return kept, keeper.epochs_run


def _last(history) -> dict[str, Any]:
    logs = {key: values[-1] for key, values in history.history.items() if values}
    return {**{k: round(float(v), 6) for k, v in logs.items()}, "epoch": len(next(iter(history.history.values()), []))}


class PruningReporter(Reporter):
    """Training's progress events of a full-model trial, turned into the trial's reports (and pruning); nothing is
    drawn.

    Only the epochs of the config's last phase are reported, step N being its epoch N: in a study of fine-tuning
    trials the resource a multi-fidelity pruner (Hyperband, successive halving) hands out is fine-tuning epochs, and
    trials are compared at the same one, whatever their head phase took."""

    def __init__(self, trial, metric: str, phase: str = "train"):
        self.trial, self.metric, self.phase = trial, metric, phase

    def info(self, message: str) -> None:  # the trial's own run lines: to the log only
        super().info(f"trial {self.trial.number}: {message}")

    def epoch_end(self, phase: str, epoch: int, epochs: int, logs: dict[str, Any]) -> None:
        import optuna

        super().epoch_end(phase, epoch, epochs, logs)
        value = logs.get(self.metric)
        if phase != self.phase or value is None or not np.isfinite(value):
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at {phase} epoch {epoch} ({self.metric} {float(value):.4f})")


def full_trial(trial, config: ExperimentConfig, metric: str, scratch: Path) -> TrialOutcome:
    """Train `config` as `tlcli train` would, in `scratch` (removed afterwards), reporting `metric` every epoch."""
    import optuna

    folder = scratch / f"trial-{trial.number}"
    try:
        result = train(config, runs_dir=folder, reporter=PruningReporter(trial, metric, phases_of(config)[-1].name))
    except TrainingError as exc:
        if isinstance(exc.__cause__, optuna.TrialPruned):
            raise exc.__cause__ from None
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    best = result.metrics.best
    if metric not in best:
        raise TrainingError(f"trial {trial.number}: the run recorded no {metric}")
    return TrialOutcome(
        float(best[metric]),
        int(result.metrics.epochs.get("total", 0)),
        {k: v for k, v in best.items() if k.startswith("val_") or k == "epoch"},
    )
