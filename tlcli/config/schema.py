"""The experiment config schema: the single source of truth for keys, defaults and validation.

One module per group of sections (`data_schema`, `model_schema`, `phase_schema`,
`runtime_schema`; what they share is in `fields`); `ExperimentConfig` puts them
together, and every name is importable from here. Loading (YAML, `--set`,
error text) is `tlcli.config.loading`; the README's reference table is
generated from these classes by `tlcli.config.reference`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from tlcli.config.data_schema import AugmentConfig, DataConfig, ManifestColumns
from tlcli.config.fields import OFF_WORD, OptimizerName, ScheduleName, Section, Trainable, Unfreeze
from tlcli.config.model_schema import BaseModelConfig, DenseLayerConfig, HeadConfig
from tlcli.config.phase_schema import EarlyStoppingConfig, FineTuneConfig, OptimizerConfig, TrainConfig
from tlcli.config.plain import DEFAULT_MAX_FILE_MB, redact_uri
from tlcli.config.predict_schema import PredictConfig, UnknownConfig
from tlcli.config.runtime_schema import MlflowConfig, OutputConfig, RuntimeConfig, TrackingConfig
from tlcli.config.search import TuneConfig, check_tune
from tlcli.settings import CACHE_DIR

__all__ = [
    "DEFAULT_MAX_FILE_MB",
    "AugmentConfig",
    "BaseModelConfig",
    "DataConfig",
    "DenseLayerConfig",
    "EarlyStoppingConfig",
    "ExperimentConfig",
    "FineTuneConfig",
    "HeadConfig",
    "ManifestColumns",
    "MlflowConfig",
    "OptimizerConfig",
    "OptimizerName",
    "OutputConfig",
    "PredictConfig",
    "RuntimeConfig",
    "ScheduleName",
    "TrackingConfig",
    "TrainConfig",
    "Trainable",
    "TuneConfig",
    "Unfreeze",
    "UnknownConfig",
    "check_tune",
    "redact_uri",
]


class ExperimentConfig(Section):
    """A whole experiment: what `tlcli train` reads."""

    name: str = Field(
        "experiment", description="Run name: the suffix of the run folder, and how `base.run` finds the newest run."
    )
    seed: int = Field(42, ge=0, description="Seed for splits, shuffling, initialisation and augmentation.")
    data: DataConfig = Field(..., description="The images.")
    base: BaseModelConfig = Field(default_factory=BaseModelConfig, description="The pretrained base.")
    head: HeadConfig = Field(default_factory=HeadConfig, description="The new head.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The first phase.")
    fine_tune: FineTuneConfig | None = Field(
        None, description="The optional fine-tuning phase (absent = no second phase)."
    )
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Devices and numerics.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where runs go.")
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Experiment tracking (MLflow); off by default."
    )
    predict: PredictConfig = Field(
        default_factory=PredictConfig, description="How the trained model's predictions are served."
    )
    probe: Annotated[Literal["auto", "off"], OFF_WORD] = Field(
        "auto",
        description=(
            "The linear-probe reference: a logistic regression on the cached features (penalty chosen on "
            "validation), reported beside the trained model in the summary and metrics.json, so a recipe worse "
            "than the probe shows at once. `off` skips it (about a second); runs without cached features skip it "
            "and say why."
        ),
    )
    tune: Union[TuneConfig, None] = Field(
        None, description="The hyperparameter search of `tlcli tune` (absent = none); `tlcli train` ignores it."
    )
    cache: Annotated[Literal["auto", "disk", "memory", "off"], OFF_WORD] = Field(
        "auto",
        description=(
            "Frozen-feature caching: `auto` trains phases whose base is frozen (wholly or below the top N "
            f"layers) and unaugmented on features computed once and cached on disk (`${CACHE_DIR.name}`; if that "
            "folder cannot be used, one warning and the features stay in memory); `disk` the same, but an "
            "unusable cache folder is an error (exit 2) before anything starts; `memory` never uses the disk "
            "cache; `off` trains the full model on decoded images every epoch."
        ),
    )

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
            raise ValueError("use letters, digits, '.', '_' or '-' (at most 64), starting with a letter or digit")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        if self.fine_tune is not None and not self.base.pretrained and self.base.trainable in ("auto", "all"):
            raise ValueError(
                "fine_tune: the base already trains fully (weights: none); remove fine_tune or freeze the base"
            )
        if self.tune is not None:
            check_tune(self)
        return self

    @property
    def best_monitor(self) -> str:
        """`train.monitor` with `auto` resolved: `val_loss` with `epochs: auto`, else `val_map` (multi-label) or
        `val_accuracy`."""
        if self.train.monitor != "auto" or self.train.epochs == "auto" or not self.data.multi_label:
            return self.train.best_monitor
        return "val_map"

    @property
    def fine_tune_monitor(self) -> str:
        """`fine_tune.monitor` with `auto` resolved: `val_map` (multi-label) or `val_accuracy`."""
        chosen = self.fine_tune.monitor if self.fine_tune is not None else "auto"
        if chosen != "auto":
            return chosen
        return "val_map" if self.data.multi_label else "val_accuracy"

    @property
    def multi_label(self) -> bool:
        return self.data.multi_label

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-friendly values (paths as strings, tuples as lists)."""
        return self.model_dump(mode="json")
