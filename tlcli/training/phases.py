"""The phases of a run and where each is cut: a pure plan, decided before any training.

A run has the phase `train` and, when the config has `fine_tune`, the phase
`fine_tune`. `plan_phases` decides per phase whether it trains on cached
features (and at which cut) or the full model on decoded images, and why:
pure logic over the config and what the model allows (`cut_options`, the
thin part that inspects the model), in the shape of
`tlcli.modeling.devices.plan_devices`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tlcli.config.schema import EarlyStoppingConfig, ExperimentConfig, OptimizerConfig
from tlcli.features.cut import Cut, cut_bytes, find_cut
from tlcli.modeling.freezing import trainable_spec
from tlcli.training.fit_in_memory import FIT_IN_MEMORY_MAX_BYTES


@dataclass(frozen=True)
class Phase:
    """One `fit`: the first phase (`train`) or the fine-tuning phase (`fine_tune`)."""

    name: str
    epochs: int
    learning_rate: float
    optimizer: OptimizerConfig
    trainable: Any
    trainable_key: str
    early_stopping: EarlyStoppingConfig


def phases_of(config: ExperimentConfig) -> list[Phase]:
    phases = [Phase("train", config.train.epochs, config.train.learning_rate, config.train, trainable_spec(config), "base.trainable", config.train.early_stopping)]
    if config.fine_tune is not None:
        ft = config.fine_tune
        phases.append(Phase("fine_tune", ft.epochs, ft.learning_rate, ft, ft.unfreeze, "fine_tune.unfreeze", ft.early_stopping))
    return phases


def phase_epochs(config: ExperimentConfig, phase: str) -> int:
    return config.train.epochs if phase == "train" else config.fine_tune.epochs  # type: ignore[union-attr]


def flip_mode(config: ExperimentConfig) -> str | None:
    """The RandomFlip mode whose flipped copies are precomputed (flips are the only augmentation), else None."""
    augment = config.data.augment
    return augment.flips_only if augment.flip_features else None


@dataclass(frozen=True)
class CutOption:
    """Where the model allows a phase to be cut (None: nowhere, and why), and the bytes of one image's features there."""

    cut: Cut | None
    why: str
    feature_bytes: int = 0


@dataclass(frozen=True)
class PhasePlan:
    """How one phase trains: on features at `cut`, or (cut None) the full model on images; it validates on features at `val_cut` when set."""

    phase: Phase
    index: int
    cut: Cut | None
    val_cut: Cut | None
    why: str

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


def plan_phases(config: ExperimentConfig, phases: list[Phase], options: list[CutOption], train_images: int) -> list[PhasePlan]:
    """Per phase, where its frozen part ends for training and for validation.

    Validation images are never augmented, so an augmented phase can still
    validate on features; it trains on features only when flips are its only
    augmentation and both copies' features fit in memory.
    """
    flip = flip_mode(config)
    plans = []
    for index, (phase, option) in enumerate(zip(phases, options)):
        cut, why = option.cut, option.why
        if cut is not None and config.data.augment.enabled:
            if flip is None:
                cut, why = None, "random augmentation changes every epoch; validation uses cached features"
            elif 2 * train_images * option.feature_bytes > FIT_IN_MEMORY_MAX_BYTES:
                cut, why = None, "the features of the images and their flipped copies would not fit in memory; validation uses cached features"
            else:
                why += f"; random flips ({flip}) pick each image's features or its flipped copy's"
        plans.append(PhasePlan(phase, index, cut, option.cut, why))
    return plans


def extraction_cut(plans: list[PhasePlan]) -> Cut | None:
    """Where the single pass extracts features: when every phase trains on features, the cut nearest the input
    (every other phase's features derive from its output); else None (the pass decodes images)."""
    cuts = [plan.cut for plan in plans]
    if not all(cuts):
        return None
    layer_cuts = [cut for cut in cuts if cut.kind == "layer"]
    return min(layer_cuts, key=lambda cut: cut.index) if layer_cuts else cuts[0]
