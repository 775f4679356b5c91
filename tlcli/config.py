"""The experiment config: one pydantic schema, the single source of truth.

Keys, defaults, validation and the README's reference table all come from the
classes below. `load_config` reads YAML (safely), applies `--set` overrides by
dotted path, and validates; any problem becomes a one-line `ConfigError` that
names the key path, with a did-you-mean for misspelled keys.
"""

from __future__ import annotations

import copy
import difflib
import re
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from tlcli.errors import ConfigError

Trainable = Union[Literal["auto", "none", "all"], int, str]
Unfreeze = Union[Literal["all"], int, str]
OptimizerName = Literal["adam", "adamw", "sgd", "rmsprop"]
ScheduleName = Literal["constant", "cosine", "exponential"]


class _Section(BaseModel):
    # Unknown keys are errors, so a typo never silently falls back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(_Section):
    """Random augmentation, as Keras preprocessing layers active only in training."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = Field(
        "none", description="Random flips (`keras.layers.RandomFlip` mode)."
    )
    rotation: float = Field(0.0, ge=0, le=1, description="Random rotation, as a fraction of a full turn (0.1 = up to 36 degrees).")
    zoom: float = Field(0.0, ge=0, lt=1, description="Random zoom in or out, as a fraction of the image size.")
    translation: float = Field(0.0, ge=0, lt=1, description="Random shift, as a fraction of height and width.")
    contrast: float = Field(0.0, ge=0, le=1, description="Random contrast factor.")
    flip_features: bool = Field(
        True,
        description="When flips are the only augmentation and the base is frozen, compute the features of each training image and of its flipped copy once, and let the `RandomFlip` layer's own draws pick one per image per epoch (the same training as on flipped images, without running the base every epoch); `false` flips the images every epoch.",
    )

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any((self.rotation, self.zoom, self.translation, self.contrast))

    @property
    def flips_only(self) -> str | None:
        """The flip mode when flips are the only augmentation (they can be precomputed), else None."""
        if self.flip == "none" or any((self.rotation, self.zoom, self.translation, self.contrast)):
            return None
        return self.flip


class DataConfig(_Section):
    """Where the images are and how they are fed to the model."""

    dir: Path | None = Field(
        None,
        description="A folder of class folders, or a parent holding `train/` plus `val/` or `validation/` (and optionally `test/`). Relative paths are relative to the working directory.",
    )
    train_dir: Path | None = Field(None, description="Explicit training folder (overrides what `dir` detects).")
    val_dir: Path | None = Field(None, description="Explicit validation folder (overrides what `dir` detects).")
    test_dir: Path | None = Field(None, description="Explicit test folder (overrides what `dir` detects).")
    val_split: float = Field(
        0.2, gt=0, lt=1, description="Fraction held out for validation when there is no validation folder; chosen per file by a hash of its relative path, so adding images never reshuffles existing ones."
    )
    image_size: tuple[int, int] = Field((224, 224), description="Height and width the images are resized to (one number for square).")
    batch_size: int = Field(32, ge=1, le=4096, description="Images per batch.")
    color_mode: Literal["rgb", "grayscale"] = Field(
        "rgb", description="`grayscale` trains on one channel (replicated to three for bases that need RGB)."
    )
    shuffle: bool = Field(True, description="Shuffle the training images every epoch.")
    on_bad_file: Literal["skip", "fail"] = Field("skip", description="What to do with a file that cannot be decoded: skip it (and list it in the run) or stop.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Augmentation (training only).")

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("image_size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1 or max(value) > 4096:
            raise ValueError(f"must be between 1 and 4096 pixels, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _has_data(self) -> DataConfig:
        if self.dir is None and self.train_dir is None:
            raise ValueError("set data.dir (or data.train_dir) to your image folder")
        return self


class BaseModelConfig(_Section):
    """The pretrained base: a keras.applications model, the built-in SmallCNN, or an earlier run's model."""

    name: str = Field("MobileNetV2", description="A `keras.applications` model name (e.g. `MobileNet`, `EfficientNetB0`, `ResNet50`) or `SmallCNN` (built in, for images under 32 px). Ignored when `run` is set.")
    weights: str = Field("imagenet", description="`imagenet`, `none` (random init), or a path to a weights file for this base.")
    run: str | None = Field(None, description="Use an earlier run's model (without its head) as the base: a run folder, or a run name (the newest completed run of that name in the runs folder).")
    args: dict[str, Any] = Field(default_factory=dict, description="Extra constructor arguments for the base, e.g. `{alpha: 0.25}` for MobileNet.")
    trainable: Trainable = Field(
        "auto",
        description="Which base layers train in the first phase: `none` (frozen), `all`, an integer N (the last N layers, in Keras layer order), or a layer name (that layer and all after it). `auto` = `none` for pretrained weights, `all` for `weights: none`.",
    )

    @field_validator("args")
    @classmethod
    def _small_cnn_args(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # keras.applications arguments are checked when the base is built; SmallCNN's
        # would otherwise surface as a TypeError from inside model building.
        if info.data.get("name") == "SmallCNN":
            import inspect

            from tlcli.bases import small_cnn

            accepted = [name for name in inspect.signature(small_cnn).parameters if name != "input_shape"]
            unknown = [key for key in value if key not in accepted]
            if unknown:
                raise ValueError(f"{unknown[0]} is not an argument of SmallCNN (accepted: {', '.join(accepted)})")
        return value

    @field_validator("trainable")
    @classmethod
    def _non_negative(cls, value: Trainable) -> Trainable:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be none, all, a number of layers >= 0, or a layer name")
        return value

    @property
    def pretrained(self) -> bool:
        """True when the base starts from learned weights (BatchNorm then stays in inference mode)."""
        return self.run is not None or self.weights != "none"


class DenseLayerConfig(_Section):
    units: int = Field(..., ge=1, description="Units of this dense layer.")
    activation: str = Field("relu", description="Keras activation name.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after this layer.")


class HeadConfig(_Section):
    """The new classification head put on top of the base."""

    pooling: Literal["avg", "max", "flatten"] = Field("avg", description="How the base's feature map becomes a vector.")
    dense: list[DenseLayerConfig] = Field(default_factory=list, description="Optional hidden layers, each `{units, activation, dropout}`.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout before the output layer.")
    activation: Literal["softmax", "sigmoid"] = Field("softmax", description="`softmax` over all classes, or `sigmoid` (a single unit; two classes only).")


class EarlyStoppingConfig(_Section):
    patience: int | None = Field(None, ge=1, description="Stop after this many epochs without improvement of `monitor`; off when unset.")
    monitor: str = Field("val_loss", description="Metric watched for early stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")


class OptimizerConfig(_Section):
    """Keys shared by the training and fine-tuning phases."""

    optimizer: OptimizerName = Field("adam", description="`adam`, `adamw`, `sgd` or `rmsprop`.")
    optimizer_args: dict[str, Any] = Field(default_factory=dict, description="Extra optimizer arguments, e.g. `{weight_decay: 0.01}` or `{momentum: 0.9}`.")
    schedule: ScheduleName = Field("constant", description="Learning-rate schedule: `constant`, `cosine` (decays to 0 over the phase) or `exponential`.")
    schedule_args: dict[str, Any] = Field(default_factory=dict, description="Schedule arguments: `alpha` for cosine; `decay_rate` (per epoch, default 0.9) for exponential.")


class TrainConfig(OptimizerConfig):
    """The first phase: the head (and any trainable base layers) on the new data."""

    epochs: int = Field(10, ge=1, description="Epochs of the first phase.")
    learning_rate: float = Field(1e-3, gt=0, description="Initial learning rate.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing for the cross-entropy loss.")
    top_k: int = Field(0, ge=0, description="Also report top-k accuracy for this k (0 = off; capped at the number of classes).")
    class_weight: Union[Literal["none", "auto"], dict[str, float]] = Field(
        "none", description="`auto` weights classes inversely to their image counts; or a map `{class: weight}`."
    )
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig, description="Early stopping (off by default).")
    monitor: str = Field("val_accuracy", description="Metric that picks the best epoch; its weights are kept when `restore_best` is on.")
    restore_best: bool = Field(True, description="End each phase with the weights of its best epoch.")


class FineTuneConfig(OptimizerConfig):
    """The optional second phase: unfreeze the top of the base and train at a lower rate."""

    epochs: int = Field(10, ge=1, description="Epochs of the fine-tuning phase.")
    unfreeze: Unfreeze = Field(20, description="Base layers to unfreeze: an integer N (the last N), a layer name (from it on), or `all`.")
    learning_rate: float = Field(1e-5, gt=0, description="Initial learning rate of the fine-tuning phase.")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig, description="Early stopping for this phase.")

    @field_validator("unfreeze")
    @classmethod
    def _positive(cls, value: Unfreeze) -> Unfreeze:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be all, a number of layers >= 1, or a layer name")
        return value


class RuntimeConfig(_Section):
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="`auto` uses every visible GPU (MirroredStrategy when more than one), else the CPU.")
    mixed_precision: Literal["auto", "on", "off"] = Field("auto", description="`auto` = on for GPUs with compute capability 7.0 or newer.")
    deterministic: bool = Field(False, description="TensorFlow op determinism: same config and seed give the same metrics on the same machine (slower).")


class OutputConfig(_Section):
    runs_dir: Path = Field(Path("runs"), description="Folder that receives the run folders (`--runs-dir` overrides).")


class ExperimentConfig(_Section):
    """A whole experiment: what `tlcli train` reads."""

    name: str = Field("experiment", description="Run name: the suffix of the run folder, and how `base.run` finds the newest run.")
    seed: int = Field(42, ge=0, description="Seed for splits, shuffling, initialisation and augmentation.")
    data: DataConfig = Field(..., description="The images.")
    base: BaseModelConfig = Field(default_factory=BaseModelConfig, description="The pretrained base.")
    head: HeadConfig = Field(default_factory=HeadConfig, description="The new head.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The first phase.")
    fine_tune: FineTuneConfig | None = Field(None, description="The optional fine-tuning phase (absent = no second phase).")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Devices and numerics.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where runs go.")
    cache: Literal["auto", "memory", "off"] = Field(
        "auto",
        description="Frozen-feature caching: `auto` trains phases whose base is frozen (wholly or below the top N layers) and unaugmented on features computed once and cached on disk (`$TLCLI_CACHE_DIR`); `memory` does the same without the disk cache; `off` trains the full model on decoded images every epoch.",
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
            raise ValueError("fine_tune: the base already trains fully (weights: none); remove fine_tune or freeze the base")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-friendly values (paths as strings, tuples as lists)."""
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------- loading


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment config.

    Args:
        source: a YAML file path, or an already-parsed mapping.
        overrides: `key.path=value` strings; values are parsed as YAML
            (`3`, `0.5`, `[64, 64]`, `null`).

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, or a
            value is invalid. The message names the key path.
    """
    raw = read_yaml(source) if not isinstance(source, dict) else copy.deepcopy(source)
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(raw, key, value)
    return validate_config(raw)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError("", f"{path}{where}: not valid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{path}: not a text file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: the config must be a mapping of keys (data:, base:, ...), got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`train.epochs=3` -> ("train.epochs", 3)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError("--set", f"expected KEY.PATH=VALUE, got {text!r}")
    try:
        return key, yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: depth + 1]), f"is a value, not a section; cannot set {key}")
        node = child
    node[parts[-1]] = value


def validate_config(raw: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        key, message = describe_error(first)
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''}; run `tlcli validate` to list them)"
        err = ConfigError(key, message)
        err.all_problems = [": ".join(describe_error(e)) for e in exc.errors()]  # type: ignore[attr-defined]
        raise err from None


def config_problems(raw: dict[str, Any]) -> list[str]:
    """Every schema problem of a raw config, one line each (empty when valid)."""
    try:
        ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        return [": ".join(p for p in describe_error(e) if p) for e in exc.errors()]
    return []


def describe_error(error: dict[str, Any]) -> tuple[str, str]:
    """Turn one pydantic error into (dotted key, human message)."""
    loc = [str(part) for part in error["loc"] if not _is_union_tag(part)]
    key = ".".join(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        hint = f", did you mean {close[0]}?" if close else f" (known keys: {', '.join(known)})"
        return key, f"unknown key{hint}"
    if kind == "missing":
        return key, "required key is missing"
    value = error.get("input")
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    elif kind == "literal_error":
        message = "must be " + message.removeprefix("Input should be ")
    got = f" (got {value!r})" if not isinstance(value, (dict, list)) and kind not in ("value_error", "assertion_error") else ""
    return key, message[0].lower() + message[1:] + got


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member it tried into the location, e.g. 'literal[...]' or 'int'.
    return isinstance(part, str) and (part.startswith(("literal[", "function-", "tuple[", "dict[", "list[")) or part in ("int", "str", "float", "bool", "nullable"))


def _known_keys(loc: list[str]) -> list[str]:
    model: Any = ExperimentConfig
    for part in loc:
        if part.isdigit():
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = _section_type(field.annotation)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _section_type(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] or list[...] annotations, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None


# ----------------------------------------------------------------------------- documentation


def reference_rows(model: type[BaseModel] = ExperimentConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, description) for every key, depth first: the README table."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section_type(field.annotation)
        if section is not None and typing.get_origin(field.annotation) is not list:
            default = "absent" if field.default is None and not field.is_required() else ""
            rows.append((key, default, field.description or ""))
            rows.extend(reference_rows(section, f"{key}."))
            continue
        if section is not None:  # a list of sections, e.g. head.dense
            rows.append((key, "[]", field.description or ""))
            rows.extend(reference_rows(section, f"{key}[]."))
            continue
        rows.append((key, _format_default(field), field.description or ""))
    return rows


def _format_default(field: Any) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if isinstance(default, tuple):
        default = list(default)
    if isinstance(default, Path):
        default = str(default)
    return "null" if default is None else yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()


def reference_markdown() -> str:
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, default, description in reference_rows():
        lines.append(f"| `{key}` | {f'`{default}`' if default else ''} | {description} |")
    return "\n".join(lines) + "\n"


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
