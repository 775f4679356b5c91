"""The `train:` and `fine_tune:` sections of the schema: the two training phases and what they share."""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from tlcli.config.fields import Epochs, OptimizerName, ScheduleName, Section, Unfreeze, auto_or, layer_count


class EarlyStoppingConfig(Section):
    patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without improvement of `monitor`; off when unset."
    )
    monitor: str = Field("val_loss", description="Metric watched for early stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")


# First-class recipe keys and the optimizer/schedule arguments that would set the same thing: each is declared once.
SAME_AS = {
    "weight_decay": ("optimizer_args", ("weight_decay",)),
    "clipnorm": ("optimizer_args", ("clipnorm", "global_clipnorm", "clipvalue")),
    "warmup_epochs": ("schedule_args", ("warmup_steps", "warmup_target")),
    "ema_epochs": ("optimizer_args", ("use_ema", "ema_momentum", "ema_overwrite_frequency")),
}


class OptimizerConfig(Section):
    """Keys shared by the training and fine-tuning phases."""

    optimizer: OptimizerName = Field("adam", description="`adam`, `adamw`, `sgd` or `rmsprop`.")
    optimizer_args: dict[str, Any] = Field(
        default_factory=dict, description="Extra optimizer arguments, e.g. `{weight_decay: 0.01}` or `{momentum: 0.9}`."
    )
    schedule: ScheduleName = Field(
        "constant",
        description="Learning-rate schedule: `constant`, `cosine` (decays to 0 over the phase) or `exponential`.",
    )
    schedule_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Schedule arguments: `alpha` for cosine; `decay_rate` (per epoch, default 0.9) for exponential.",
    )
    weight_decay: float | None = Field(
        None,
        ge=0,
        description=(
            "Decoupled weight decay (as AdamW's, for any optimizer), never applied to biases or normalisation "
            "scales and offsets (every variable of rank 1 or less, timm's rule); unset = the optimizer's own "
            "default (AdamW's 0.004, none for the others)."
        ),
    )
    warmup_epochs: float = Field(
        0.0,
        ge=0,
        description=(
            "Linear warmup from 0 to `learning_rate` over this many epochs, step by step, before the schedule "
            "(`constant` or `cosine`; cosine then decays over the remaining steps)."
        ),
    )
    clipnorm: float | None = Field(
        None, gt=0, description="Clip the gradients' global norm to this value (Keras `global_clipnorm`); unset = off."
    )
    ema_epochs: float | None = Field(
        None,
        gt=0,
        description=(
            "Also keep a moving average of the weights over about this many last epochs (the optimizer's "
            "exponential moving average, Keras `use_ema`, its momentum 1 - 1 / (steps per epoch x this)), validate it "
            "after every epoch beside the weights themselves (`ema_val_*` in history.csv), and keep it when it "
            "validates better; unset = off."
        ),
    )
    bottom_lr_ratio: float = Field(
        1.0,
        gt=0,
        le=1,
        description=(
            "Discriminative learning rates (fastai's `slice(lr / 100, lr)`, timm's layer decay): the lowest "
            "trainable base layer learns at `learning_rate` x this, the top one at `learning_rate`, the layers "
            "between at rates spaced geometrically by depth (the layers with trainable weights, in Keras order); "
            "the head always at `learning_rate`. 1 = one rate everywhere."
        ),
    )

    @model_validator(mode="after")
    def _declared_once(self):
        for key, (args_key, names) in SAME_AS.items():
            given = sorted(set(names) & set(getattr(self, args_key)))
            if given and key in self.model_fields_set:
                raise ValueError(f"`{key}` and `{args_key}.{given[0]}` set the same thing: keep one of them")
        if self.warmup_epochs and self.schedule == "exponential":
            raise ValueError("`warmup_epochs` works with `schedule: constant` or `cosine`, not `exponential`")
        return self

    def recipe_value(self, key: str):
        """A first-class key's value, unless `optimizer_args`/`schedule_args` set the same thing (they win then)."""
        args_key, names = SAME_AS[key]
        return None if set(names) & set(getattr(self, args_key)) else getattr(self, key)


class TrainConfig(OptimizerConfig):
    """The first phase: the head (and any trainable base layers) on the new data."""

    epochs: Epochs = Field(
        "auto",
        description=(
            "Epochs of the first phase. `auto`: on cached features (seconds per hundred epochs), until the "
            "validation loss has not improved for `early_stopping.patience` epochs (default 10), at most "
            "`max_epochs`, the best epoch's weights kept; on decoded images, 10. A number trains exactly that "
            "many (with early stopping only if its `patience` is set)."
        ),
    )
    max_epochs: int = Field(
        200,
        ge=1,
        description=(
            "With `epochs: auto`, the most epochs the phase runs (raise it with `--resume RUN --set "
            "train.max_epochs=N` to extend a run)."
        ),
    )
    learning_rate: float = Field(1e-3, gt=0, description="Initial learning rate.")
    l2: Union[Literal["auto"], float] = Field(
        "auto",
        description=(
            "L2 penalty on the head's kernels (l2 * sum(w**2) added to the loss). `auto`: on cached features "
            "with a linear head (no `head.dense`, no label smoothing), chosen on the validation split: the head "
            "is fitted exactly (a logistic regression, L-BFGS) at each penalty of a built-in grid and the one "
            "with the lowest validation loss is kept and used as the head's starting weights (`selection.json`); "
            "elsewhere 0."
        ),
    )
    refit: Union[Literal["auto"], bool] = Field(
        "auto",
        description=(
            "After the last phase, fit the head again on train + validation, as scikit-learn's `refit=True` "
            "does: the model learns from every labelled image. With a chosen penalty (`train.l2: auto`), at that "
            "penalty (and the epochs training added to it); with fine-tuning, on the fine-tuned base's features, "
            "after fine-tuning chose its epochs on validation. `true` with a pinned recipe (a set `train.l2`, "
            "`head.dense`; `tlcli tune`'s best.yaml) retrains the head from its initial weights on train + "
            "validation for the epoch count validation chose (a head trained alone on cached features, no "
            "augmentation). `auto` = on whenever the penalty was chosen; validation figures are then in-sample, "
            "and marked so."
        ),
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing for the cross-entropy loss.")
    top_k: int = Field(
        0, ge=0, description="Also report top-k accuracy for this k (0 = off; capped at the number of classes)."
    )
    class_weight: Union[Literal["none", "auto"], dict[str, float]] = Field(
        "none", description="`auto` weights classes inversely to their image counts; or a map `{class: weight}`."
    )
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig, description="Early stopping (off by default)."
    )
    monitor: str = Field(
        "auto",
        description=(
            "Metric that picks the best epoch; its weights are kept when `restore_best` is on. `auto`: "
            "`val_loss` with `epochs: auto` (the figure the epochs are counted on), else `val_accuracy`."
        ),
    )
    restore_best: bool = Field(True, description="End each phase with the weights of its best epoch.")

    @field_validator("l2", mode="before")
    @classmethod
    def _l2_kind(cls, value):
        return auto_or(value, (int, float), "a penalty >= 0")

    @field_validator("refit", mode="before")
    @classmethod
    def _refit_kind(cls, value):
        return auto_or(value, (bool,), "true or false")

    @field_validator("l2")
    @classmethod
    def _non_negative_l2(cls, value):
        if not isinstance(value, str) and value < 0:
            raise ValueError(f"must be auto or a penalty >= 0, got {value}")
        return value

    @property
    def best_monitor(self) -> str:
        """`monitor` with `auto` resolved."""
        if self.monitor != "auto":
            return self.monitor
        return "val_loss" if self.epochs == "auto" else "val_accuracy"


class FineTuneConfig(OptimizerConfig):
    """The optional second phase: unfreeze the top of the base and train at a lower rate.

    Its defaults are the modern fine-tuning recipe (AdamW with decoupled weight decay, a warmup then cosine schedule
    step by step, label smoothing, gradient clipping), measured in benchmarks/QUALITY.md.
    """

    optimizer: OptimizerName = Field("adamw", description="`adam`, `adamw`, `sgd` or `rmsprop`.")
    schedule: ScheduleName = Field(
        "cosine",
        description="Learning-rate schedule: `cosine` (after the warmup, decays to 0 over the phase), `constant` or "
        "`exponential`.",
    )
    weight_decay: float | None = Field(
        0.01,
        ge=0,
        description=(
            "Decoupled weight decay, never on biases or normalisation scales and offsets (rank <= 1); null = none."
        ),
    )
    warmup_epochs: float = Field(
        1.0, ge=0, description="Linear warmup from 0 to `learning_rate` over this many epochs, step by step."
    )
    clipnorm: float | None = Field(1.0, gt=0, description="Clip the gradients' global norm to this; null = off.")
    label_smoothing: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Label smoothing of the fine-tuning phase's loss (`train.label_smoothing` is the first phase's).",
    )
    epochs: Epochs = Field(
        "auto",
        description=(
            "Epochs of the fine-tuning phase. `auto`: 8 (at most `max_epochs`), the whole warmup + cosine "
            "schedule, the best epoch by `monitor` kept (early stopping only if its `patience` is set)."
        ),
    )
    max_epochs: int = Field(30, ge=1, description="With `epochs: auto`, the most epochs the phase runs.")
    budget_min: float | None = Field(
        None,
        gt=0,
        description=(
            "With `epochs: auto`: as many epochs as fit in this many minutes (at least 1, at most `max_epochs`), "
            "from a timing of the phase's training step and validation before it starts; the warmup + cosine "
            "schedule spans them. Unset: 8 epochs."
        ),
    )
    unfreeze: Unfreeze = Field(
        0.75,
        description=(
            "Base layers to unfreeze: an integer N (the last N), a fraction in (0, 1) (that share of the layers, "
            "from the top), a layer name (from it on), or `all`; the layers below are cached. The default and the "
            "learning rate's were measured (benchmarks/FINETUNE.md, eurosat with MobileNetV2, medians of 3 seeds): "
            "the top three quarters (116 of 154 layers) at 3e-4 reached 0.9455, at or above the plain Keras recipe "
            "that trains every layer (0.9445), the top half 0.9385, the last 80 layers 0.9365; a count means a "
            "different share of each base (the last 80 of MobileNet 0.25's 86 layers cut below its sixth)."
        ),
    )
    learning_rate: float = Field(3e-4, gt=0, description="Peak learning rate of the fine-tuning phase.")
    when: Literal["auto", "always"] = Field(
        "auto",
        description=(
            "`auto`: skip the phase when validation could not show it gained: the head is already perfect by "
            "`monitor`, or (accuracy) it misses fewer than 5 validation images, too few for a sign test to call "
            "even a fix of all of them real (on cats with MobileNetV2 fine-tuning then cost 3.6x the time and lost "
            "0.5 test points; benchmarks/FINETUNE.md). metrics.json and the summary say why. `always`: run it."
        ),
    )
    augment: Literal["none", "light", "strong", "overhead"] = Field(
        "none",
        description=(
            "Augmentation of the fine-tuning phase alone: a `data.augment` preset run on its training batches (the "
            "head phase before it keeps its cached features; the phase then runs the whole base every epoch). "
            "`data.augment` applies to every phase, this one included."
        ),
    )
    monitor: str = Field(
        "auto",
        description=(
            "What picks the phase's best epoch and decides whether fine-tuning is kept at all (it must beat the "
            "head it started from). `auto`: `val_accuracy` (multi-label: `val_map`), ties broken by the lower "
            "`val_loss`: label smoothing changes the loss's scale, and fine-tuning's gains show in accuracy while "
            "the loss of an overconfident model can rise (benchmarks/QUALITY.md)."
        ),
    )
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig, description="Early stopping for this phase (off unless `patience`)."
    )

    @model_validator(mode="after")
    def _budget_sizes_auto(self):
        if self.budget_min is not None and self.epochs != "auto":
            raise ValueError("`budget_min` sizes `epochs: auto` to a time budget: set epochs: auto or drop budget_min")
        return self

    @field_validator("unfreeze")
    @classmethod
    def _positive(cls, value: Unfreeze) -> Unfreeze:
        return layer_count(value, minimum=1, words="all")
