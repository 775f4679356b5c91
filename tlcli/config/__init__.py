"""Stage 1, the config: the pydantic schema (`schema`), reading YAML and `--set` (`loading`), absolute paths
(`resolve`), the generated reference (`reference`) and JSON Schema (`json_schema`); what needs no pydantic (`plain`).
Names load on first use, so that the CLI can read `plain` without loading the schema."""

from typing import TYPE_CHECKING

from tlcli.lazy import lazy_exports

_PUBLIC = {
    "tlcli.config.loading": (
        "config_json_schema",
        "config_json_schema_text",
        "config_problems",
        "dump_config",
        "load_config",
        "parse_override",
        "read_yaml",
        "set_dotted",
        "validate_config",
    ),
    "tlcli.config.json_schema": ("config_json_schema", "config_json_schema_text"),
    "tlcli.config.reference": ("reference_markdown", "reference_rows"),
    "tlcli.config.resolve": ("path_keys", "resolve_paths"),
    "tlcli.config.schema": (
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
    ),
}
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)

if TYPE_CHECKING:
    from tlcli.config.json_schema import config_json_schema, config_json_schema_text
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
    "config_json_schema",
    "config_json_schema_text",
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
