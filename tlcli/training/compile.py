"""What each phase compiles: the run's objective (loss, metrics, monitored figure), optimizer and learning-rate
schedule; and the metric names monitors may watch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlcli.config.schema import ExperimentConfig
from tlcli.data.batches import class_weights, positive_weights
from tlcli.errors import ConfigError, did_you_mean
from tlcli.training.phases import Phase


@dataclass(frozen=True)
class Objective:
    """What a run optimises and watches, decided once per run and handed to every fit path: the loss (weighted by
    `class_weight`, or multi-label by each class's positive weight `alpha`), the metrics, and the monitored figure.

    Keras losses and metrics hold state and attach to the model they are compiled into, so `loss()` and `metrics()`
    build fresh objects from this one definition on every call.
    """

    config: ExperimentConfig
    num_classes: int
    class_weight: dict[int, float] | None = None  # single-label class weights (Keras's `class_weight`)
    alpha: list[float] | None = None  # multi-label class weights: each class's positives' weight in the loss
    label_smoothing: float | None = None  # the phase's (`for_phase`); None: `train.label_smoothing`

    @classmethod
    def for_labels(cls, config: ExperimentConfig, labels, class_names: list[str]) -> Objective:
        """The objective of training on `labels` (the weights `train.class_weight` asks for, from their counts)."""
        weighting, count = config.train.class_weight, len(class_names)
        weights = class_weights(labels, count, weighting, class_names)
        return cls(config, count, weights, positive_weights(labels, weighting, class_names))

    @property
    def monitor(self) -> str:
        """The figure that picks the best epoch (`train.monitor`)."""
        return self.config.best_monitor

    def for_phase(self, phase: Phase) -> Objective:
        """This objective with the phase's label smoothing (fine-tuning has its own)."""
        return dataclasses.replace(self, label_smoothing=phase.label_smoothing)

    def loss(self):
        return make_loss(self.config, self.alpha, self.label_smoothing)

    def metrics(self) -> list:
        return make_metrics(self.config, self.num_classes)

    def compile(self, model, optimizer, **options) -> None:
        """Compile `model` with `optimizer` and this objective's loss and metrics."""
        model.compile(optimizer=optimizer, loss=self.loss(), metrics=self.metrics(), **options)


def make_optimizer(
    phase: Phase, steps_per_epoch: int, variables=(), accumulate: int = 1, rates: dict[str, float] | None = None
):
    """The phase's Keras optimizer: its learning rate warmed up then scheduled step by step over the phase's epochs,
    decoupled weight decay on every variable of rank > 1 among `variables` (never biases or normalisation scales and
    offsets), gradient clipping, gradients accumulated over `accumulate` micro-batches (one update per batch), and
    each variable whose path is in `rates` learning at the scheduled rate times its factor there.

    `steps_per_epoch` counts optimizer calls (micro-batches when accumulating): Keras's schedules read that count.

    Raises:
        ConfigError: `optimizer_args` or `schedule_args` that the optimizer or schedule does not take.
    """
    import keras

    opt, key = phase.optimizer, phase.name
    try:
        rate = _learning_rate(phase, steps_per_epoch)
    except TypeError as exc:
        raise ConfigError(f"{key}.schedule_args", f"not accepted by the {opt.schedule} schedule ({exc})") from None
    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    args = _recipe_args(opt, steps_per_epoch) | dict(opt.optimizer_args)
    if accumulate > 1:
        args["gradient_accumulation_steps"] = accumulate
    try:
        optimizer = classes[opt.optimizer](learning_rate=rate, **args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}.optimizer_args", f"not accepted by {opt.optimizer} ({exc})") from None
    rates = rates or {}
    if getattr(optimizer, "weight_decay", None):  # the variables of `rates` decay at their own rate, in scale_rates
        optimizer.exclude_from_weight_decay(var_list=[v for v in variables if not decays(v) or v.path in rates])
    if rates:
        scale_rates(optimizer, rates)
    return optimizer


def decays(variable) -> bool:
    """Weight decay is for kernels: never biases or normalisation scales and offsets (rank <= 1, timm's rule)."""
    return len(variable.shape) > 1


def scale_rates(optimizer, factors: dict[str, float]) -> None:
    """Each variable named in `factors` (by path) learns at the optimizer's rate times its factor.

    Keras 3 has no per-variable rates, but every built-in optimizer's `update_step` receives the rate for one
    variable at a time (also per replica, under a distribution strategy): this optimizer's own `update_step` is
    wrapped, so it still saves, loads and resumes as the plain Keras class. The factor is a constant of the traced
    step. Their decoupled weight decay scales with their rate too (w -= rate x decay x w before the step, as Keras
    does it for the others): `make_optimizer` keeps them out of Keras's own."""
    import keras

    update, decay = optimizer.update_step, float(getattr(optimizer, "weight_decay", None) or 0.0)

    def update_step(gradient, variable, learning_rate):
        known = optimizer._trainable_variables[optimizer._get_variable_index(variable)]
        if known.path not in factors:
            return update(gradient, variable, learning_rate)
        rate = keras.ops.cast(learning_rate, variable.dtype) * factors[known.path]
        if decay and decays(known):
            variable.assign_sub(variable * rate * decay)
        return update(gradient, variable, rate)

    optimizer.update_step = update_step


def _recipe_args(opt, steps_per_epoch: int) -> dict[str, Any]:
    """The optimizer arguments of the first-class recipe keys (`weight_decay`, `clipnorm`, `ema_epochs`) that are
    set."""
    args: dict[str, Any] = {}
    if opt.recipe_value("weight_decay") is not None:
        args["weight_decay"] = opt.weight_decay
    if opt.recipe_value("clipnorm") is not None:
        args["global_clipnorm"] = opt.clipnorm
    if opt.recipe_value("ema_epochs") is not None:
        args.update(use_ema=True, ema_momentum=ema_momentum(opt.ema_epochs, steps_per_epoch))
    return args


def ema_momentum(epochs: float, steps_per_epoch: int) -> float:
    """The momentum of a moving average whose horizon (1 / (1 - momentum) optimizer steps) is `epochs` epochs."""
    return 1.0 - 1.0 / max(1.0, epochs * steps_per_epoch)


def _learning_rate(phase: Phase, steps_per_epoch: int):
    """The phase's learning rate: a number, or a Keras schedule read at every step (warmup included)."""
    import keras

    opt, peak = phase.optimizer, phase.learning_rate
    args = dict(opt.schedule_args)
    total = max(1, steps_per_epoch * phase.epochs)
    # Not capped by the phase's length: a 1-epoch phase warms up as the first epoch of a longer one does, so extending
    # it (`--resume --set fine_tune.epochs=N`) continues exactly where the longer run would be.
    warmup = round(steps_per_epoch * (opt.recipe_value("warmup_epochs") or 0))
    if opt.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            peak, decay_steps=max(1, steps_per_epoch), decay_rate=args.pop("decay_rate", 0.9), **args
        )
    if opt.schedule == "constant" and not warmup:
        return peak
    if opt.schedule == "constant":  # warmup, then a cosine that does not decay (alpha 1): constant
        args = {"alpha": 1.0}
    if warmup > 0:  # Keras's CosineDecay warms up linearly from its initial rate to `warmup_target`
        args.update(warmup_target=peak, warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(1, total - warmup), **args)
    return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total, **args)


def make_loss(config: ExperimentConfig, alpha: list[float] | None = None, label_smoothing: float | None = None):
    """The phase's loss. Multi-label with class weights: binary cross-entropy whose positives of class c weigh alpha[c]
    and negatives 1 - alpha[c] (Keras's `BinaryFocalCrossentropy` with gamma 0: built in, nothing to register).

    Keras saves that alpha array in a form its loader does not turn back into an array, so the model is
    saved compiled with `saved_loss` instead (see `tlcli.training.session`).
    """
    import keras

    smoothing = config.train.label_smoothing if label_smoothing is None else label_smoothing
    if config.multi_label and alpha is not None:  # an array: Keras computes 1 - alpha, which a list cannot do
        return keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True,
            alpha=np.asarray(alpha, dtype="float32"),
            gamma=0.0,
            label_smoothing=smoothing,
            name="binary_crossentropy",
        )
    if config.head.activation == "sigmoid" or config.multi_label:
        return keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)


def saved_loss(config: ExperimentConfig):
    """The loss model.keras is compiled with: the phase's loss without class weights, which every Keras loader
    reads back."""
    return make_loss(config, None)


def mean_loss(loss, targets, outputs) -> float:
    """The loss of these outputs, averaged over the images, as one process computes it.

    Calling a Keras loss under a `tf.distribute` scope divides it by the number of replicas (each replica's share
    of a global batch); figures computed on the host from a whole split use the per-image values instead.
    """
    import keras

    return float(
        keras.ops.convert_to_numpy(
            keras.ops.mean(loss.call(keras.ops.convert_to_tensor(targets), keras.ops.convert_to_tensor(outputs)))
        )
    )


def make_metrics(config: ExperimentConfig, num_classes: int) -> list:
    import keras

    if config.multi_label:
        # `map`: area under each class's precision-recall curve, averaged over classes (Keras's estimate of mAP
        # during training; evaluation reports scikit-learn's average precision).
        return [
            keras.metrics.BinaryAccuracy(name="binary_accuracy"),
            keras.metrics.AUC(curve="PR", multi_label=True, num_labels=num_classes, name="map"),
        ]
    if config.head.activation == "sigmoid":
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if config.train.top_k:
        k = min(config.train.top_k, num_classes)
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=k, name=top_k_name(k, num_classes)))
    return metrics


def top_k_name(k: int, num_classes: int) -> str:
    return f"top{min(k, num_classes)}_accuracy"


def epoch_metric_names(config: ExperimentConfig, num_classes: int) -> set[str]:
    """The figures every epoch's logs hold (training and `val_`): what monitors may name."""
    if config.multi_label:
        return {name for base in ("loss", "binary_accuracy", "map") for name in (base, f"val_{base}")}
    names = {"loss", "accuracy"}
    if config.train.top_k:
        names.add(top_k_name(config.train.top_k, num_classes))
    return names | {f"val_{name}" for name in names}


def check_monitors(config: ExperimentConfig, num_classes: int) -> None:
    """Every monitor must name a figure the epochs record.

    Raises:
        ConfigError: an unknown metric, with a did-you-mean.
    """
    names = epoch_metric_names(config, num_classes)
    checks = [
        ("train.monitor", config.best_monitor),
        ("train.early_stopping.monitor", config.train.early_stopping.monitor),
    ]
    if config.fine_tune is not None:
        checks.append(("fine_tune.early_stopping.monitor", config.fine_tune.early_stopping.monitor))
        checks.append(("fine_tune.monitor", config.fine_tune_monitor))
    for key, value in checks:
        if value not in names:
            close = did_you_mean(value, sorted(names), cutoff=0.6)
            raise ConfigError(
                key,
                f"unknown metric {value!r}"
                + (f", did you mean {close}?" if close else f" (known: {', '.join(sorted(names))})"),
            )
