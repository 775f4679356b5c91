"""The experiment config schema: the single source of truth for keys, defaults and validation.

Loading (YAML, `--set`, error text) is `tlcli.config.loading`; the README's
reference table is generated from these classes by `tlcli.config.reference`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tlcli.config.search import TuneConfig, check_tune
from tlcli.settings import CACHE_DIR

Trainable = Union[Literal["auto", "none", "all"], int, str]
Unfreeze = Union[Literal["all"], int, str]
DEFAULT_MAX_FILE_MB = 100.0  # generous for photos and scans; far below what would exhaust memory
OptimizerName = Literal["adam", "adamw", "sgd", "rmsprop"]
ScheduleName = Literal["constant", "cosine", "exponential"]


def _layer_count(value: Any, minimum: int, words: str) -> Any:
    """A number of layers must be at least `minimum`; names and keywords pass (they are checked against the built base)."""
    if isinstance(value, int) and value < minimum:
        raise ValueError(f"must be {words}, a number of layers >= {minimum}, or a layer name")
    return value


def _epoch_count(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise ValueError(f"must be auto or a number of epochs >= 1, got {value}")
    return value


def _auto_or(value: Any, kinds: tuple[type, ...], what: str) -> Any:
    """One clear error for a key that is `auto` or a value of `kinds` (pydantic would report each alternative)."""
    if value == "auto" or (isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)):
        return value
    raise ValueError(f"must be auto or {what}, got {value!r}")


class _Section(BaseModel):
    # Unknown keys are errors, so a typo never silently falls back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(_Section):
    """Random augmentation, as Keras preprocessing layers active only in training."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = Field(
        "none", description="Random flips (`keras.layers.RandomFlip` mode)."
    )
    rotation: float = Field(
        0.0, ge=0, le=1, description="Random rotation, as a fraction of a full turn (0.1 = up to 36 degrees)."
    )
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


class ManifestColumns(_Section):
    """Which columns of `data.manifest` hold what."""

    path: str = Field("path", min_length=1, description="The column of image paths.")
    label: str = Field("label", min_length=1, description="The column of class names.")
    split: str = Field("split", min_length=1, description="The optional column of splits (`train`, `val`, `test`).")


class DataConfig(_Section):
    """Where the images are and how they are fed to the model."""

    dir: Path | None = Field(
        None,
        description="A folder of class folders, or a parent holding `train/` plus `val/` or `validation/` (and optionally `test/`). Relative paths are relative to the working directory.",
    )
    train_dir: Path | None = Field(None, description="Explicit training folder (overrides what `dir` detects).")
    val_dir: Path | None = Field(None, description="Explicit validation folder (overrides what `dir` detects).")
    test_dir: Path | None = Field(None, description="Explicit test folder (overrides what `dir` detects).")
    manifest: Path | None = Field(
        None,
        description="Instead of folders: a CSV (or TSV) file with a path column (relative to the manifest's folder, or absolute) and a label column, and optionally a split column (`train`, `val`, `test`; empty or absent = the hash split, on the path as written).",
    )
    columns: ManifestColumns = Field(
        default_factory=lambda: ManifestColumns(), description="The manifest's column names."
    )
    delimiter: Literal["auto", ",", "\t", ";", "|"] = Field(
        "auto",
        description="The manifest's delimiter: `auto` = tab for `.tsv`, else what the header line uses (comma, tab, semicolon or pipe).",
    )
    multi_label: bool = Field(
        False,
        description="Each image has any number of labels (a manifest only: class folders give one label an image): a sigmoid per class, binary cross-entropy, multi-label metrics. Labels come from the label column, split by `label_separator` (an empty cell is an image with no label), or from `label_columns`.",
    )
    label_separator: str = Field(
        "|", min_length=1, description="With `multi_label`, what separates the labels in one cell (`dog|person`)."
    )
    label_columns: list[str] | None = Field(
        None,
        description="With `multi_label`, one 0/1 column per class instead of one label column: the classes are these columns, in this order.",
    )
    val_split: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Fraction held out for validation when there is no validation folder; chosen per file by a hash of its relative path, so adding images never reshuffles existing ones.",
    )
    image_size: tuple[int, int] = Field(
        (224, 224), description="Height and width the images are resized to (one number for square)."
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Images per batch.")
    color_mode: Literal["rgb", "grayscale"] = Field(
        "rgb", description="`grayscale` trains on one channel (replicated to three for bases that need RGB)."
    )
    shuffle: bool = Field(True, description="Shuffle the training images every epoch.")
    on_bad_file: Literal["skip", "fail"] = Field(
        "skip", description="What to do with a file that cannot be decoded: skip it (and list it in the run) or stop."
    )
    max_file_mb: float = Field(
        DEFAULT_MAX_FILE_MB,
        gt=0,
        le=100_000,
        description="Files larger than this many megabytes are skipped unread, as unreadable (so a huge or endless file can never exhaust memory); only regular files are read at all (a FIFO, a device or a socket named like an image is unreadable).",
    )

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1_000_000)

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
        folders = [key for key in ("dir", "train_dir", "val_dir", "test_dir") if getattr(self, key) is not None]
        if self.multi_label and self.manifest is None:
            raise ValueError(
                "data.multi_label: class folders give each image one label; list the images and their labels in a data.manifest"
            )
        if self.label_columns is not None and not self.multi_label:
            raise ValueError(
                "data.label_columns: one 0/1 column per class describes several labels an image; set data.multi_label: true"
            )
        if self.label_columns is not None and len(set(self.label_columns)) < 2:
            raise ValueError("data.label_columns: name at least two distinct columns (one per class)")
        if self.manifest is not None and folders:
            raise ValueError(
                f"data.manifest and data.{folders[0]} exclude each other: the manifest lists every file and its split"
            )
        if self.dir is None and self.train_dir is None and self.manifest is None:
            raise ValueError(
                "set data.dir (or data.train_dir) to your image folder, or data.manifest to a CSV of paths and labels"
            )
        return self


class BaseModelConfig(_Section):
    """The pretrained base: a keras.applications model, the built-in SmallCNN, or an earlier run's model."""

    name: str = Field(
        "MobileNetV2",
        description="A `keras.applications` model name (e.g. `MobileNet`, `EfficientNetB0`, `ResNet50`) or `SmallCNN` (built in, for images under 32 px). Ignored when `run` is set.",
    )
    weights: str = Field(
        "imagenet", description="`imagenet`, `none` (random init), or a path to a weights file for this base."
    )
    run: str | None = Field(
        None,
        description="Use an earlier run's model (without its head) as the base: a run folder, or a run name (the newest completed run of that name in the runs folder).",
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra constructor arguments for the base, e.g. `{alpha: 0.25}` for MobileNet.",
    )
    trainable: Trainable = Field(
        "auto",
        description="Which base layers train in the first phase: `none` (frozen), `all`, an integer N (the last N layers, in Keras layer order), or a layer name (that layer and all after it). `auto` = `none` for pretrained weights, `all` for `weights: none`.",
    )

    @field_validator("trainable")
    @classmethod
    def _non_negative(cls, value: Trainable) -> Trainable:
        return _layer_count(value, minimum=0, words="none, all")

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
    dense: list[DenseLayerConfig] = Field(
        default_factory=list, description="Optional hidden layers, each `{units, activation, dropout}`."
    )
    dropout: Union[Literal["auto"], float] = Field(
        "auto",
        description="Dropout before the output layer. `auto`: 0 when the head's L2 penalty is chosen on the validation split (`train.l2: auto`: the penalty regularises), else 0.2.",
    )
    threshold: Union[Literal["per_class"], float] = Field(
        0.5,
        description="With `data.multi_label`, the probability above which a label is predicted; `per_class` chooses each class's threshold on the validation split (the best F1; recorded in model.json, and the validation figures marked as selection figures).",
    )

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_kind(cls, value):
        if value == "per_class" or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1):
            return value
        raise ValueError(f"must be per_class or a probability between 0 and 1, got {value!r}")

    @field_validator("dropout", mode="before")
    @classmethod
    def _dropout_kind(cls, value):
        return _auto_or(value, (int, float), "a rate in [0, 1)")

    @field_validator("dropout")
    @classmethod
    def _rate(cls, value):
        if not isinstance(value, str) and not 0 <= value < 1:
            raise ValueError(f"must be auto or a rate in [0, 1), got {value}")
        return value

    activation: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="`softmax` over all classes, or `sigmoid` (a single unit; two classes only)."
    )


class EarlyStoppingConfig(_Section):
    patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without improvement of `monitor`; off when unset."
    )
    monitor: str = Field("val_loss", description="Metric watched for early stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")


class OptimizerConfig(_Section):
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


class TrainConfig(OptimizerConfig):
    """The first phase: the head (and any trainable base layers) on the new data."""

    epochs: Union[Literal["auto"], int] = Field(
        "auto",
        description="Epochs of the first phase. `auto`: on cached features (seconds per hundred epochs), until the validation loss has not improved for `early_stopping.patience` epochs (default 10), at most `max_epochs`, the best epoch's weights kept; on decoded images, 10. A number trains exactly that many (with early stopping only if its `patience` is set).",
    )
    max_epochs: int = Field(
        200,
        ge=1,
        description="With `epochs: auto`, the most epochs the phase runs (raise it with `--resume RUN --set train.max_epochs=N` to extend a run).",
    )
    learning_rate: float = Field(1e-3, gt=0, description="Initial learning rate.")
    l2: Union[Literal["auto"], float] = Field(
        "auto",
        description="L2 penalty on the head's kernels (l2 * sum(w**2) added to the loss). `auto`: on cached features with a linear head (no `head.dense`, no label smoothing), chosen on the validation split: the head is fitted exactly (a logistic regression, L-BFGS) at each penalty of a built-in grid and the one with the lowest validation loss is kept and used as the head's starting weights (`selection.json`); elsewhere 0.",
    )
    refit: Union[Literal["auto"], bool] = Field(
        "auto",
        description="After the last phase, fit the head again on train + validation, as scikit-learn's `refit=True` does: the model learns from every labelled image. With a chosen penalty (`train.l2: auto`), at that penalty (and the epochs training added to it); with fine-tuning, on the fine-tuned base's features, after fine-tuning chose its epochs on validation. `true` with a pinned recipe (a set `train.l2`, `head.dense`; `tlcli tune`'s best.yaml) retrains the head from its initial weights on train + validation for the epoch count validation chose (a head trained alone on cached features, no augmentation). `auto` = on whenever the penalty was chosen; validation figures are then in-sample, and marked so.",
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
        description="Metric that picks the best epoch; its weights are kept when `restore_best` is on. `auto`: `val_loss` with `epochs: auto` (the figure the epochs are counted on), else `val_accuracy`.",
    )
    restore_best: bool = Field(True, description="End each phase with the weights of its best epoch.")

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs_kind(cls, value):
        return _auto_or(value, (int,), "a number of epochs")

    @field_validator("l2", mode="before")
    @classmethod
    def _l2_kind(cls, value):
        return _auto_or(value, (int, float), "a penalty >= 0")

    @field_validator("refit", mode="before")
    @classmethod
    def _refit_kind(cls, value):
        return _auto_or(value, (bool,), "true or false")

    @field_validator("epochs")
    @classmethod
    def _some_epochs(cls, value):
        return _epoch_count(value)

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
    """The optional second phase: unfreeze the top of the base and train at a lower rate."""

    epochs: Union[Literal["auto"], int] = Field(
        "auto",
        description="Epochs of the fine-tuning phase; `auto` as `train.epochs: auto` (until the validation loss has not improved for `early_stopping.patience` epochs, default 10, at most `max_epochs`; on decoded images at most 10).",
    )
    max_epochs: int = Field(30, ge=1, description="With `epochs: auto`, the most epochs the phase runs.")
    unfreeze: Unfreeze = Field(
        40,
        description="Base layers to unfreeze: an integer N (the last N), a layer name (from it on), or `all`. The default and the learning rate's were measured (benchmarks/QUALITY.md).",
    )
    learning_rate: float = Field(1e-4, gt=0, description="Initial learning rate of the fine-tuning phase.")
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig, description="Early stopping for this phase."
    )

    @field_validator("unfreeze")
    @classmethod
    def _positive(cls, value: Unfreeze) -> Unfreeze:
        return _layer_count(value, minimum=1, words="all")

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs_kind(cls, value):
        return _auto_or(value, (int,), "a number of epochs")

    @field_validator("epochs")
    @classmethod
    def _some_epochs(cls, value):
        return _epoch_count(value)


class RuntimeConfig(_Section):
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="`auto` uses every visible GPU (MirroredStrategy when more than one), else the CPU."
    )
    mixed_precision: Literal["auto", "on", "off"] = Field(
        "auto", description="`auto` = on for GPUs with compute capability 7.0 or newer."
    )
    deterministic: bool = Field(
        False,
        description="TensorFlow op determinism: same config and seed give the same metrics on the same machine (slower).",
    )
    collective_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Several machines (`TF_CONFIG`): a collective operation (gradients, the feature exchange) that waits longer than this fails the run, so a dead or stalled worker stops the others within this bound. Raise it when an epoch's slowest step is longer.",
    )
    worker_start_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Several machines: how long a worker waits for every worker of the cluster to join before it gives up (exit 1, one line, nothing written).",
    )


def redact_uri(uri: str) -> str:
    """A URL without the password of its `user:password@` part (run folders are shared; MLflow also reads MLFLOW_TRACKING_PASSWORD)."""
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@", r"\1@", uri)


class MlflowConfig(_Section):
    """Experiment tracking in MLflow (README "Experiment tracking: MLflow")."""

    tracking_uri: str | None = Field(
        None,
        description="The MLflow tracking URI (`http://host:5000`, `sqlite:///mlruns.db`, `file:./mlruns`); unset: `$MLFLOW_TRACKING_URI`, else `sqlite:///mlruns.db` in the working directory. A password in it is never written into the run folder (use `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD`).",
    )
    experiment: str | None = Field(
        None, description="The MLflow experiment the runs go to (created when missing); unset: the config's `name`."
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags set on every MLflow run of this config.")


class TrackingConfig(_Section):
    """Where runs are tracked besides their run folder (off unless a tracker is configured)."""

    mlflow: MlflowConfig | None = Field(
        None,
        description="Log every run (params, per-epoch metrics, artifacts, model) to MLflow; `{}` turns it on with the defaults. Also on with `tlcli train --mlflow [URI]` (and `tlcli tune --mlflow [URI]`) or `$MLFLOW_TRACKING_URI`.",
    )


class OutputConfig(_Section):
    runs_dir: Path = Field(Path("runs"), description="Folder that receives the run folders (`--runs-dir` overrides).")


class ExperimentConfig(_Section):
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
    probe: Literal["auto", "off"] = Field(
        "auto",
        description="The linear-probe reference: a logistic regression on the cached features (penalty chosen on validation), reported beside the trained model in the summary and metrics.json, so a recipe worse than the probe shows at once. `off` skips it (about a second); runs without cached features skip it and say why.",
    )
    tune: Union[TuneConfig, None] = Field(
        None, description="The hyperparameter search of `tlcli tune` (absent = none); `tlcli train` ignores it."
    )
    cache: Literal["auto", "disk", "memory", "off"] = Field(
        "auto",
        description=f"Frozen-feature caching: `auto` trains phases whose base is frozen (wholly or below the top N layers) and unaugmented on features computed once and cached on disk (`${CACHE_DIR.name}`; if that folder cannot be used, one warning and the features stay in memory); `disk` the same, but an unusable cache folder is an error (exit 2) before anything starts; `memory` never uses the disk cache; `off` trains the full model on decoded images every epoch.",
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
        """`train.monitor` with `auto` resolved: `val_loss` with `epochs: auto`, else `val_map` (multi-label) or `val_accuracy`."""
        if self.train.monitor != "auto" or self.train.epochs == "auto" or not self.data.multi_label:
            return self.train.best_monitor
        return "val_map"

    @property
    def multi_label(self) -> bool:
        return self.data.multi_label

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-friendly values (paths as strings, tuples as lists)."""
        return self.model_dump(mode="json")
