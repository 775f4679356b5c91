"""The phases of a run and where each is cut: a pure plan, decided before any training.

A run has the phase `train` and, when the config has `fine_tune`, the phase
`fine_tune`. `plan_phases` decides per phase whether it trains on cached
features (and at which cut) or the full model on decoded images, and why:
pure logic over the config and what the model allows (`cut_options`, the
thin part that inspects the model), in the shape of
`tlcli.modeling.devices.plan_devices`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tlcli.config.data_schema import AugmentConfig
from tlcli.config.schema import EarlyStoppingConfig, ExperimentConfig, OptimizerConfig
from tlcli.features.cut import Cut, cut_bytes, find_cut
from tlcli.modeling.freezing import trainable_spec
from tlcli.training.fit_in_memory import FIT_IN_MEMORY_MAX_BYTES

if TYPE_CHECKING:
    from tlcli.training.budget import EpochBudget

AUTO_PATIENCE = 10  # `epochs: auto` on cached features: epochs without a better validation loss before stopping
AUTO_IMAGE_EPOCHS = 10  # `epochs: auto` on decoded images (each epoch runs the base): at most this many...
AUTO_IMAGE_PATIENCE = 3  # ...stopping after this many without a better validation loss
# `fine_tune.epochs: auto`: the whole warmup + cosine schedule over this many epochs (the plain recipe's 8 epochs,
# benchmarks/baseline_finetune.py; an early stop would cut the schedule before its low-rate end).
AUTO_FINE_TUNE_EPOCHS = 8


@dataclass(frozen=True)
class Phase:
    """One `fit`: the first phase (`train`) or the fine-tuning phase (`fine_tune`).

    `epochs` is the most the phase runs: the config's number, or with
    `epochs: auto` the maximum the plan resolves (`auto` True).
    """

    name: str
    epochs: int
    learning_rate: float
    optimizer: OptimizerConfig
    trainable: Any
    trainable_key: str
    early_stopping: EarlyStoppingConfig
    auto: bool = False
    monitor: str = "val_loss"  # picks the phase's best epoch (and, for a phase that rolls back, whether it is kept)
    label_smoothing: float = 0.0  # of the phase's loss

    @property
    def budget_min(self) -> float | None:
        """`fine_tune.budget_min`: the minutes `epochs: auto` is sized to when the phase starts (`training.budget`)."""
        return getattr(self.optimizer, "budget_min", None) if self.auto else None

    @property
    def averages(self) -> bool:
        """`ema_epochs`: the phase validates its weights' moving average beside them (`training.callbacks`)."""
        return self.optimizer.recipe_value("ema_epochs") is not None

    @property
    def tie_break(self) -> str | None:
        """Between epochs (or a start) equal on an accuracy-like monitor, the lower validation loss wins."""
        return None if "loss" in self.monitor else "val_loss"


def phases_of(config: ExperimentConfig) -> list[Phase]:
    """The phases as the config writes them (`auto` epochs at their maximum; `plan_phases` resolves them)."""
    train, phases = config.train, []
    phases.append(
        Phase(
            "train",
            _most(train),
            train.learning_rate,
            train,
            trainable_spec(config),
            "base.trainable",
            train.early_stopping,
            train.epochs == "auto",
            monitor=config.best_monitor,
            label_smoothing=train.label_smoothing,
        )
    )
    if config.fine_tune is not None:
        ft = config.fine_tune
        phases.append(
            Phase(
                "fine_tune",
                _most(ft),
                ft.learning_rate,
                ft,
                ft.unfreeze,
                "fine_tune.unfreeze",
                ft.early_stopping,
                ft.epochs == "auto",
                monitor=config.fine_tune_monitor,
                label_smoothing=ft.label_smoothing,
            )
        )
    return phases


def _most(section) -> int:
    return section.max_epochs if section.epochs == "auto" else section.epochs


def phase_section(config: ExperimentConfig, phase: str):
    return config.train if phase == "train" else config.fine_tune


def epochs_key(config: ExperimentConfig, phase: str) -> str:
    """The key that extends a phase: `max_epochs` for `epochs: auto`, else `epochs`."""
    return f"{phase}.max_epochs" if phase_section(config, phase).epochs == "auto" else f"{phase}.epochs"


def resolve_auto(phase: Phase, on_features: bool) -> tuple[Phase, str]:
    """`epochs: auto` made concrete: until the validation loss stops improving (cheap on features, capped on images)."""
    if not phase.auto:
        return phase, ""
    if phase.name == "fine_tune" and phase.budget_min is not None:
        return phase, f"epochs auto: sized to budget_min {phase.budget_min:g} when the phase starts"
    if phase.name == "fine_tune":
        epochs = min(phase.epochs, AUTO_FINE_TUNE_EPOCHS)
        return dataclasses.replace(phase, epochs=epochs), f"epochs auto: {epochs}, the whole warmup + cosine schedule"
    stop = phase.early_stopping
    if on_features:
        patience, epochs = stop.patience or AUTO_PATIENCE, phase.epochs
    else:
        patience, epochs = stop.patience or AUTO_IMAGE_PATIENCE, min(phase.epochs, AUTO_IMAGE_EPOCHS)
    early = stop.model_copy(update={"patience": patience, "monitor": stop.monitor})
    why = f"epochs auto: until {early.monitor} has not improved for {patience} epochs, at most {epochs}"
    return dataclasses.replace(phase, epochs=epochs, early_stopping=early), why


def flip_mode(config: ExperimentConfig) -> str | None:
    """The RandomFlip mode whose flipped copies are precomputed (flips are the only augmentation), else None."""
    augment = config.data.augment
    return augment.flips_only if augment.flip_features else None


@dataclass(frozen=True)
class CutOption:
    """Where the model allows a phase to be cut (None: nowhere, and why), and the bytes of one image's features
    there."""

    cut: Cut | None
    why: str
    feature_bytes: int = 0


@dataclass(frozen=True)
class HeadPolicy:
    """What the run does with its head around the first phase, decided once with the plan, each choice with its why.

    `selects`: the head's L2 penalty is chosen on validation before the phase (`tlcli.training.selection`) and the
    head starts from that exact fit; else `why_not_selected` says why not. `refits`: after the phase the head is
    fitted again on train + validation: at the chosen penalty when it `selects`, else a pinned recipe retrained for
    the epochs validation chose (`recipe_refit`); `why_not_refitted` says why `train.refit: true` could not be
    honoured. `exact`: the phase is the exact fit itself (one "epoch"; `epochs: auto` with a selected head).
    Applied by `tlcli.training.head_policy`.
    """

    selects: bool = False
    refits: bool = False
    exact: bool = False
    why_not_selected: str = ""
    why_not_refitted: str = ""

    @property
    def recipe_refit(self) -> bool:
        """A pinned recipe (no penalty chosen) retrained on train + validation."""
        return self.refits and not self.selects

    def unselected(self, why: str) -> HeadPolicy:
        """The policy when the penalty could not be chosen after all: nothing selected, nothing refitted, `why`."""
        return dataclasses.replace(self, selects=False, refits=False, exact=False, why_not_selected=why)


@dataclass(frozen=True)
class PhaseAugment:
    """A phase's augmentation on training batches in the input pipeline (`tlcli.data.augment`): `config`'s keys,
    the classic ones too unless the model carries them (`in_model`); `key` names where it was asked for."""

    config: AugmentConfig
    in_model: bool
    key: str


def phase_augment(config: ExperimentConfig, phase: Phase) -> PhaseAugment | None:
    """What the phase's training batches go through: `fine_tune.augment` for fine-tuning when it names a recipe (run
    whole in the pipeline: the model carries none of it), else `data.augment`'s batch keys."""
    data = config.data.augment
    if phase.name == "fine_tune":
        chosen = config.fine_tune.augment
        if chosen != "none":
            return PhaseAugment(AugmentConfig(preset=chosen), in_model=False, key="fine_tune.augment")
    return PhaseAugment(data, in_model=True, key="data.augment") if data.in_batches else None


@dataclass(frozen=True)
class PhasePlan:
    """How one phase trains: on features at `cut`, or (cut None) the full model on images; it validates on features
    at `val_cut` when set. `head`: the head policy (the first phase's; later phases keep the default)."""

    phase: Phase
    index: int
    cut: Cut | None
    val_cut: Cut | None
    why: str
    head: HeadPolicy = HeadPolicy()
    augment: PhaseAugment | None = None  # on training batches, in the input pipeline
    budget: EpochBudget | None = None  # its epochs sized to `budget_min` (`tlcli.training.budget`), kept in checkpoints

    @property
    def head_alone(self) -> bool:
        """The phase trains the head alone, on the cached pooled features: nothing of the base moves."""
        return self.cut is not None and self.cut.kind == "pool"

    @property
    def validation_cut(self) -> Cut | None:
        """Where the phase's validation reads features (None: the full model on images)."""
        return self.val_cut if self.val_cut is not None else self.cut

    def describe(self) -> str:
        how = "training on cached features" if self.cut else "training the full model on decoded images"
        return f"phase {self.phase.name}: {how} ({self.why})"


def cut_options(model, config: ExperimentConfig, phases: list[Phase]) -> list[CutOption]:
    """What the model allows each phase (inspects the model; `plan_phases` decides)."""
    options = []
    for phase in phases:
        if config.cache == "off":
            options.append(CutOption(None, "cache: off"))
            continue
        cut, why = find_cut(model, phase.trainable, phase.trainable_key)
        options.append(CutOption(cut, why, cut_bytes(model, cut) if cut is not None else 0))
    return options


def plan_phases(
    config: ExperimentConfig, phases: list[Phase], options: list[CutOption], train_images: int
) -> list[PhasePlan]:
    """Per phase, where its frozen part ends for training and for validation.

    Validation images are never augmented, so an augmented phase can still
    validate on features; it trains on features only when flips are its only
    augmentation and both copies' features fit in memory.
    """
    flip = flip_mode(config)
    plans = []
    for index, (phase, option) in enumerate(zip(phases, options)):
        cut, why = option.cut, option.why
        augment = phase_augment(config, phase)
        if cut is not None and augment is not None and augment.key == "fine_tune.augment":
            preset = augment.config.preset
            cut, why = None, f"fine_tune.augment: {preset} changes pixels every epoch; validation on cached features"
        elif cut is not None and config.data.augment.enabled:
            if flip is None:
                cut, why = None, "random augmentation changes every epoch; validation uses cached features"
            elif 2 * train_images * option.feature_bytes > FIT_IN_MEMORY_MAX_BYTES:
                cut, why = (
                    None,
                    "the features of the images and their flipped copies would not fit in memory; "
                    "validation uses cached features",
                )
            else:
                why += f"; random flips ({flip}) pick each image's features or its flipped copy's"
        phase, auto_why = resolve_auto(phase, cut is not None)
        why = f"{why}; {auto_why}" if auto_why else why
        plans.append(PhasePlan(phase, index, cut, option.cut, why, augment=augment))
    return _with_selection(config, plans)


def _with_selection(config: ExperimentConfig, plans: list[PhasePlan]) -> list[PhasePlan]:
    """The first phase's head policy: whether it chooses the head's penalty on validation (and refits), and why not."""
    first = plans[0]
    why_not = _why_not_selected(config, first)
    if why_not:
        no_refit = _no_recipe_refit(config, plans) if config.train.refit is True else ""
        refits = config.train.refit is True and not no_refit
        head = HeadPolicy(refits=refits, why_not_selected=why_not, why_not_refitted=no_refit)
        plans[0] = dataclasses.replace(first, head=head)
        return plans
    exact = first.phase.auto  # the exact fit is the converged head: Adam epochs after it only fit the validation noise
    phase = dataclasses.replace(first.phase, epochs=1) if exact else first.phase
    why = (
        f"{first.why.split('; epochs auto')[0]}; the head is fitted exactly at the penalty chosen on validation"
        if exact
        else first.why
    )
    head = HeadPolicy(selects=True, refits=config.train.refit is not False, exact=exact)
    plans[0] = dataclasses.replace(first, phase=phase, why=why, head=head)
    return plans


def _why_not_selected(config: ExperimentConfig, first: PhasePlan) -> str:
    """Why the first phase cannot choose the head's penalty ("" when it can)."""
    reasons = [
        (config.train.l2 != "auto", "train.l2 is set"),
        (not first.head_alone, "the first phase does not train the head alone on cached features"),
        (bool(config.head.dense), "the head has hidden layers (head.dense)"),
        (config.train.label_smoothing > 0, "label smoothing is on"),
    ]
    return next((why for failed, why in reasons if failed), "")


def _no_recipe_refit(config: ExperimentConfig, plans: list[PhasePlan]) -> str:
    """Why a pinned recipe cannot be retrained on train + validation ("" when it can): the refit replays the head's
    epochs on the cached pooled features, so it needs a single phase that trains exactly those."""
    if len(plans) > 1:
        return "the run fine-tunes (a refit retrains the head alone)"
    if not plans[0].head_alone:
        return "the phase does not train the head alone on cached features"
    if config.data.augment.enabled:
        return "augmentation is on (a refit trains on the cached features as they are)"
    return ""


def unselect(config: ExperimentConfig, plan: PhasePlan, why: str) -> PhasePlan:
    """The first phase's plan when its penalty could not be chosen after all: trained as the config says, `why`
    recorded."""
    phase, _ = resolve_auto(phases_of(config)[0], plan.cut is not None)
    return dataclasses.replace(plan, phase=phase, head=plan.head.unselected(why))


def plan_run(model, config: ExperimentConfig, train_images: int) -> list[PhasePlan]:
    """`plan_phases` over what this model allows."""
    phases = phases_of(config)
    return plan_phases(config, phases, cut_options(model, config, phases), train_images)


def evaluation_cut(plans: list[PhasePlan]) -> Cut | None:
    """Where the final weights are evaluated from: the last phase's cut, else its validation cut (None: images)."""
    return plans[-1].cut or plans[-1].val_cut


def extraction_cut(plans: list[PhasePlan]) -> Cut | None:
    """Where the single pass extracts features: when every phase trains on features, the cut nearest the input
    (every other phase's features derive from its output); else None (the pass decodes images)."""
    cuts = [plan.cut for plan in plans]
    if not all(cuts):
        return None
    layer_cuts = [cut for cut in cuts if cut.kind == "layer"]
    return min(layer_cuts, key=lambda cut: cut.index) if layer_cuts else cuts[0]
