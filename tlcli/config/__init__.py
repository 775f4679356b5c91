"""Stage 1, the config: the pydantic schema (`schema`), reading YAML and `--set` (`loading`), the generated reference (`reference`)."""

from tlcli.config.loading import (
    config_problems,
    dump_config,
    load_config,
    parse_override,
    read_yaml,
    set_dotted,
    validate_config,
)
from tlcli.config.reference import reference_markdown, reference_rows
from tlcli.config.schema import (
    AugmentConfig,
    BaseModelConfig,
    DataConfig,
    DenseLayerConfig,
    EarlyStoppingConfig,
    ExperimentConfig,
    FineTuneConfig,
    HeadConfig,
    OptimizerConfig,
    RuntimeConfig,
    TrainConfig,
)

__all__ = [
    "AugmentConfig",
    "BaseModelConfig",
    "DataConfig",
    "DenseLayerConfig",
    "EarlyStoppingConfig",
    "ExperimentConfig",
    "FineTuneConfig",
    "HeadConfig",
    "OptimizerConfig",
    "RuntimeConfig",
    "TrainConfig",
    "config_problems",
    "dump_config",
    "load_config",
    "parse_override",
    "read_yaml",
    "reference_markdown",
    "reference_rows",
    "set_dotted",
    "validate_config",
]
