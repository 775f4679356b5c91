"""Everything checked and built before a run folder exists, so a user error leaves no trace.

`prepare` resolves the config (overrides, absolute paths, the source run),
lists the data, plans the devices, builds the model and checks what only the
built model can tell (layer names to freeze, optimizer and schedule
arguments, monitors, class weights). `validate` does the same checks without
changing anything global (devices, seeds, mixed precision).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcli.config.loading import load_config
from tlcli.config.resolve import resolve_paths
from tlcli.config.schema import ExperimentConfig
from tlcli.data.augment import check_batch_augment
from tlcli.data.batches import check_class_weight
from tlcli.data.splits import DataSplits, discover_splits
from tlcli.errors import ConfigError
from tlcli.features.store import probe_cache
from tlcli.modeling import layers as names
from tlcli.modeling.bases import check_base_name
from tlcli.modeling.build import build_model, source_base
from tlcli.modeling.devices import (
    DevicePlan,
    apply_device_plan,
    cluster_from_env,
    enable_determinism,
    logical_cpus_from_env,
    plan_devices,
    visible_gpus,
)
from tlcli.modeling.freezing import first_trainable_index
from tlcli.progress import Reporter
from tlcli.runs.folder import resolve_run
from tlcli.runs.records import ModelInfo
from tlcli.settings import CACHE_DIR
from tlcli.training.compile import check_monitors, make_optimizer
from tlcli.training.distributed import check_accumulation
from tlcli.training.phases import phase_augment, phases_of


@dataclass
class Prepared:
    """A checked config with its data listed and its model built: what training starts from."""

    config: ExperimentConfig
    splits: DataSplits
    plan: DevicePlan
    strategy: Any  # the tf.distribute strategy the model was built under (None from `validate`)
    model: Any
    info: ModelInfo
    runs_dir: Path
    source_run: Path | None = None
    disk_cache: bool = False  # frozen features go to the disk cache (`cache: auto|disk` and the folder is usable)

    @property
    def num_classes(self) -> int:
        return len(self.splits.class_names)

    def scope(self):
        """The strategy's scope (variables created inside it are placed on its devices)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


@dataclass(frozen=True)
class Validation:
    """What `validate` found: the resolved config, the listed data, the base and the devices."""

    config: ExperimentConfig
    splits: DataSplits
    base: str
    devices: str
    model: Any  # the built model (not compiled), e.g. to list the base's layers

    def to_dict(self, config_path: str = "") -> dict[str, Any]:
        return {
            "config": config_path,
            "classes": self.splits.class_names,
            "images": {split: len(getattr(self.splits, split)) for split in ("train", "val", "test")},
            "sources": self.splits.sources,
            "base": self.base,
            "device": self.devices,
            "warnings": self.splits.warnings,
        }


def as_config(config: ExperimentConfig | str | Path | dict, overrides=()) -> ExperimentConfig:
    if isinstance(config, ExperimentConfig):
        return load_config(config.to_dict(), overrides) if overrides else config
    return load_config(config, overrides)


def prepare(
    config, *, overrides=(), runs_dir=None, device: str | None = None, reporter: Reporter, apply_runtime: bool = True
) -> Prepared:
    """Check and build everything a run needs (see the module docstring).

    Args:
        apply_runtime: make TensorFlow follow the device plan and seed it
            (training); False builds the model without global side effects.

    Raises:
        ConfigError, DataError, RunError: bad input; nothing was written.
    """
    config = as_config(config, overrides)
    if device is not None:
        config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"device": device})})
    runs_dir = Path(runs_dir) if runs_dir is not None else config.output.runs_dir
    source_run = resolve_run(config.base.run, runs_dir) if config.base.run else None
    config = resolve_paths(config, runs_dir, source_run)
    if source_run is None:
        check_base_name(config.base.name)  # a typo in the base name is reported before the data is listed
    splits = discover_splits(config.data, config.seed)
    reporter.info(f"data: {splits.describe()}")
    for warning in splits.warnings:
        reporter.warn(warning)
    plan = _device_plan(config)
    strategy = _apply_runtime(config, plan) if apply_runtime else None
    if strategy is not None:
        plan = dataclasses.replace(plan, replicas=int(strategy.num_replicas_in_sync))
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model, info = build_model(config, len(splits.class_names), source_base(source_run) if source_run else None)
    prepared = Prepared(
        config, splits, plan, strategy, model, info, runs_dir, source_run, _disk_cache(config, reporter)
    )
    _check_built(prepared)
    reporter.info(f"device: {plan.describe()}")
    return prepared


def _device_plan(config: ExperimentConfig) -> DevicePlan:
    """Where the run trains: the config's device on what this machine (and the cluster, if any) has."""
    runtime = config.runtime
    return plan_devices(
        runtime.device, runtime.mixed_precision, visible_gpus(), cluster_from_env(), logical_cpus_from_env()
    )


def _disk_cache(config: ExperimentConfig, reporter: Reporter) -> bool:
    """Whether the disk feature cache is used; `cache: disk` with an unusable folder is an error before any work.

    Raises:
        ConfigError: `cache: disk` and the cache folder cannot be written.
    """
    if config.cache not in ("auto", "disk"):
        return False
    problem = probe_cache()
    if problem is None:
        return True
    if config.cache == "disk":
        raise ConfigError(
            "cache",
            f"disk: the feature cache cannot be used ({problem}); point {CACHE_DIR.name} at a writable folder, "
            "or set cache: auto to train without it",
        )
    reporter.warn(
        f"the feature cache cannot be used ({problem}); features stay in memory for this run "
        f"(set {CACHE_DIR.name} to a writable folder)"
    )
    return False


def _apply_runtime(config: ExperimentConfig, plan: DevicePlan):
    import keras

    strategy = apply_device_plan(plan, config.runtime.collective_timeout_s, config.runtime.worker_start_timeout_s)
    keras.utils.set_random_seed(config.seed)
    if config.runtime.deterministic:
        enable_determinism(config.seed)
    return strategy


def _check_built(prepared: Prepared) -> None:
    """What only the built model can tell: layer names to freeze, optimizer arguments, monitors, class weights."""
    config = prepared.config
    base_layers = prepared.model.get_layer(names.BASE).layers
    for phase in phases_of(config):
        first_trainable_index(base_layers, phase.trainable, phase.trainable_key)
        make_optimizer(phase, steps_per_epoch=1)
        augment = phase_augment(config, phase)
        if augment is not None:
            check_batch_augment(augment.config, config.data.image_size, augment.key)
    check_monitors(config, prepared.num_classes)
    check_accumulation(config, prepared.plan)
    check_class_weight(config.train.class_weight, prepared.splits.class_names)


def validate(
    config: ExperimentConfig | str | Path | dict, *, overrides=(), runs_dir: str | Path | None = None
) -> Validation:
    """Check a config, its data folders and its model (base name, image size,
    weights, layer names) without training and without changing TensorFlow's
    global state (devices, seeds, mixed precision).

    Raises:
        ConfigError, DataError, RunError: what `train` would refuse.
    """
    prepared = prepare(config, overrides=overrides, runs_dir=runs_dir, reporter=Reporter(), apply_runtime=False)
    return Validation(
        prepared.config, prepared.splits, prepared.info.base_name, prepared.plan.describe(), prepared.model
    )
