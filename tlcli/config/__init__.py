"""Stage 1, the config: the pydantic schema (`schema`), reading YAML and `--set` (`loading`), absolute paths
(`resolve`), the generated reference (`reference`)."""

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
from tlcli.config.resolve import path_keys, resolve_paths
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
    "path_keys",
    "read_yaml",
    "reference_markdown",
    "reference_rows",
    "resolve_paths",
    "set_dotted",
    "validate_config",
]
