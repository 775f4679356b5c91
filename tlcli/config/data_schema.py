"""The `data:` section of the schema: where the images are and how they are fed to the model."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from tlcli.config.fields import OFF_WORD, PathValue, Section
from tlcli.config.plain import DEFAULT_MAX_FILE_MB

MAX_IMAGE_SIZE = 4096  # pixels a side: `data.image_size`, and what a run's model.json may say


# Named augmentation recipes: the keys each sets (a key the config sets itself wins). `light` is the plain fine-tuning
# baseline's (benchmarks/baseline_finetune.py); `strong` adds RandAugment, random erasing and MixUp (timm's and Model
# Garden's defaults, lighter); `overhead` is `light` for images with no up (satellite, microscopy): every flip and
# quarter turn.
AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "light": {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1, "translation": 0.05},
    "strong": {
        "flip": "horizontal",
        "rotation": 0.05,
        "zoom": 0.1,
        "translation": 0.05,
        "rand_augment": 0.5,
        "erasing": 0.25,
        "mixup": 0.2,
    },
    "overhead": {"flip": "horizontal_and_vertical", "rot90": True, "zoom": 0.1, "translation": 0.05},
}
AugmentPreset = Literal["none", "light", "strong", "overhead"]
# Keys that run on batches in the input pipeline (outside the model): they mix labels (MixUp, CutMix) or have no
# layer the saved model should carry.
BATCH_KEYS = ("rot90", "crop", "rand_augment", "color_jitter", "erasing", "mixup", "cutmix")


class AugmentConfig(Section):
    """Random augmentation, active only in training: Keras preprocessing layers inside the model (`flip`,
    `rotation`, `zoom`, `translation`, `contrast`) and on training batches in the input pipeline (the rest)."""

    preset: AugmentPreset = Field(
        "none",
        description=(
            "A named recipe that sets the other keys (those set here win): `light` (flip, rotation 0.05, zoom "
            "0.1, translation 0.05), `strong` (light + RandAugment 0.5, erasing 0.25, MixUp 0.2), `overhead` "
            "(every flip and quarter turn, zoom and translation: aerial and microscope images)."
        ),
    )
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = Field(
        "none", description="Random flips (`keras.layers.RandomFlip` mode)."
    )
    rotation: float = Field(
        0.0, ge=0, le=1, description="Random rotation, as a fraction of a full turn (0.1 = up to 36 degrees)."
    )
    zoom: float = Field(0.0, ge=0, lt=1, description="Random zoom in or out, as a fraction of the image size.")
    translation: float = Field(0.0, ge=0, lt=1, description="Random shift, as a fraction of height and width.")
    contrast: float = Field(0.0, ge=0, le=1, description="Random contrast factor.")
    rot90: bool = Field(False, description="Random quarter turns (0, 90, 180 or 270 degrees): images with no up.")
    crop: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Random crop of up to this fraction of the side, resized back (a random-resized crop, zoom in).",
    )
    rand_augment: float = Field(
        0.0, ge=0, le=1, description="RandAugment (`keras.layers.RandAugment`, 2 operations) at this magnitude."
    )
    color_jitter: float = Field(
        0.0, ge=0, le=1, description="Random brightness, contrast and saturation by this factor, hue by a quarter."
    )
    erasing: float = Field(
        0.0, ge=0, le=1, description="Probability of erasing a random rectangle (`keras.layers.RandomErasing`)."
    )
    mixup: float = Field(
        0.0, ge=0, description="MixUp's alpha (`keras.layers.MixUp`): images and labels mixed in pairs; 0 = off."
    )
    cutmix: float = Field(
        0.0, ge=0, le=1, description="CutMix's factor (`keras.layers.CutMix`): a patch and its share of labels."
    )
    flip_features: bool = Field(
        True,
        description=(
            "When flips are the only augmentation and the base is frozen, compute the features of each training "
            "image and of its flipped copy once, and let the `RandomFlip` layer's own draws pick one per image "
            "per epoch (the same training as on flipped images, without running the base every epoch); `false` "
            "flips the images every epoch."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, str):  # `augment: light` is `augment: {preset: light}`
            value = {"preset": value}
        if isinstance(value, dict) and value.get("preset") in AUGMENT_PRESETS:
            return AUGMENT_PRESETS[value["preset"]] | value
        return value

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any((self.rotation, self.zoom, self.translation, self.contrast, self.in_batches))

    @property
    def in_batches(self) -> bool:
        """Some augmentation runs on training batches in the input pipeline."""
        return any(getattr(self, key) for key in BATCH_KEYS)

    @property
    def flips_only(self) -> str | None:
        """The flip mode when flips are the only augmentation (they can be precomputed), else None."""
        others = (self.rotation, self.zoom, self.translation, self.contrast, self.in_batches)
        if self.flip == "none" or any(others):
            return None
        return self.flip


# `data.group` made only of these characters names a manifest column; anything else is a regular expression.
_COLUMN_NAME = re.compile(r"[\w -]+")


def is_column_name(group: str) -> bool:
    """Whether `data.group` names a manifest column (letters, digits, `_`, `-`, spaces) rather than a pattern."""
    return _COLUMN_NAME.fullmatch(group) is not None


class ManifestColumns(Section):
    """Which columns of `data.manifest` hold what."""

    path: str = Field("path", min_length=1, description="The column of image paths.")
    label: str = Field("label", min_length=1, description="The column of class names.")
    split: str = Field("split", min_length=1, description="The optional column of splits (`train`, `val`, `test`).")


class DataConfig(Section):
    """Where the images are and how they are fed to the model."""

    dir: PathValue | None = Field(
        None,
        description=(
            "A folder of class folders, or a parent holding `train/` plus `val/` or `validation/` (and "
            "optionally `test/`). Relative paths are relative to the working directory."
        ),
    )
    train_dir: PathValue | None = Field(None, description="Explicit training folder (overrides what `dir` detects).")
    val_dir: PathValue | None = Field(None, description="Explicit validation folder (overrides what `dir` detects).")
    test_dir: PathValue | None = Field(None, description="Explicit test folder (overrides what `dir` detects).")
    manifest: PathValue | None = Field(
        None,
        description=(
            "Instead of folders: a CSV (or TSV) file with a path column (relative to the manifest's folder, or "
            "absolute) and a label column, and optionally a split column (`train`, `val`, `test`; empty or "
            "absent = the hash split, on the path as written)."
        ),
    )
    columns: ManifestColumns = Field(
        default_factory=lambda: ManifestColumns(), description="The manifest's column names."
    )
    delimiter: Literal["auto", ",", "\t", ";", "|"] = Field(
        "auto",
        description=(
            "The manifest's delimiter: `auto` = tab for `.tsv`, else what the header line uses (comma, tab, "
            "semicolon or pipe)."
        ),
    )
    multi_label: bool = Field(
        False,
        description=(
            "Each image has any number of labels (a manifest only: class folders give one label an image): a "
            "sigmoid per class, binary cross-entropy, multi-label metrics. Labels come from the label column, "
            "split by `label_separator` (an empty cell is an image with no label), or from `label_columns`."
        ),
    )
    label_separator: str = Field(
        "|", min_length=1, description="With `multi_label`, what separates the labels in one cell (`dog|person`)."
    )
    label_columns: list[str] | None = Field(
        None,
        description=(
            "With `multi_label`, one 0/1 column per class instead of one label column: the classes are these "
            "columns, in this order."
        ),
    )
    val_split: float = Field(
        0.2,
        gt=0,
        lt=1,
        description=(
            "Fraction held out for validation when there is no validation folder; chosen per file by a hash of "
            "its relative path (per group by a hash of its name, with `data.group`), so adding images never "
            "reshuffles existing ones."
        ),
    )
    group: str | None = Field(
        None,
        min_length=1,
        description=(
            "Images that must stay on one side of every split (a patient, a product, a video): a manifest column "
            "(a name of letters, digits, `_`, `-`, spaces), or a regular expression searched in each path "
            "relative to its split folder (class folder included: `cats/patient_07_a.jpg`; a manifest's path as "
            "written) whose first capture group, else whole match, names the group (`'patient_\\d+'`). The hash "
            "split then assigns whole groups, `tune.folds` keeps them whole, and `tlcli check` reports groups "
            "that cross given splits. A path it does not match (an empty cell) is a group of its own, warned. "
            "Unset: per file."
        ),
    )
    leakage: Annotated[Literal["warn", "error", "off"], OFF_WORD] = Field(
        "warn",
        description=(
            "Near-duplicates across splits (the same photo resized, recompressed, cropped, mirrored or "
            "re-exposed: the base's pooled features, confirmed on thumbnails, as `tlcli check --deep`), searched "
            "on the features the run caches: `warn` lists them in data_trust.json, metrics.json and the summary, "
            "`error` stops the run before fitting, `off` skips the search. Skipped, and said, without pretrained "
            "weights or cached features."
        ),
    )
    label_suspects: bool = Field(
        True,
        description=(
            "Rank likely label errors of the training and validation images (confident learning on out-of-fold "
            "probe probabilities of the cached features, as `tlcli check --deep`): counted in metrics.json, "
            "listed in data_trust.json. Single-label runs with pretrained weights and cached features."
        ),
    )
    image_size: tuple[int, int] = Field(
        (224, 224), description="Height and width the images are resized to (one number for square)."
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Images per batch (per optimizer update).")
    micro_batch: int | None = Field(
        None,
        ge=1,
        description=(
            "Train on micro-batches of this many images and accumulate their gradients over `batch_size` (a "
            "multiple of it): one optimizer update per batch, the same effective batch and schedule, a fraction "
            "of the activation memory. Unset: whole batches."
        ),
    )
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
        description=(
            "Files larger than this many megabytes are skipped unread, as unreadable (so a huge or endless file "
            "can never exhaust memory); only regular files are read at all (a FIFO, a device or a socket named "
            "like an image is unreadable)."
        ),
    )

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1_000_000)

    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Augmentation (training only).")

    @field_validator("group")
    @classmethod
    def _pattern(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if is_column_name(value):
            if info.data.get("manifest") is None:  # a pattern without any special character puts all in one group
                raise ValueError(
                    f"{value!r} names a manifest column, but there is no data.manifest; with folders it is a "
                    "regular expression whose match names the group, e.g. 'patient_\\d+' or '^[^/]+/([^/]+)/' "
                    "(the folder inside each class folder)"
                )
            return value
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(
                f"{value!r} is not a valid regular expression ({exc}); escape special characters with a backslash "
                "(e.g. '\\.' for a dot), or name a manifest column"
            ) from None
        return value

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("image_size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1 or max(value) > MAX_IMAGE_SIZE:
            raise ValueError(f"must be between 1 and {MAX_IMAGE_SIZE} pixels, got {list(value)}")
        return value

    @property
    def step_batch(self) -> int:
        """Images a training step feeds: the micro-batch when accumulating, else the batch."""
        return self.micro_batch or self.batch_size

    @property
    def accumulation(self) -> int:
        """Micro-batches whose gradients make one update (1: none)."""
        return self.batch_size // self.step_batch

    @model_validator(mode="after")
    def _has_data(self) -> DataConfig:
        folders = [key for key in ("dir", "train_dir", "val_dir", "test_dir") if getattr(self, key) is not None]
        if self.multi_label and self.manifest is None:
            raise ValueError(
                "data.multi_label: class folders give each image one label; list the images and their labels "
                "in a data.manifest"
            )
        if self.label_columns is not None and not self.multi_label:
            raise ValueError(
                "data.label_columns: one 0/1 column per class describes several labels an image; set "
                "data.multi_label: true"
            )
        if self.label_columns is not None and len(set(self.label_columns)) < 2:
            raise ValueError("data.label_columns: name at least two distinct columns (one per class)")
        repeated = next((n for i, n in enumerate(self.label_columns or []) if n in self.label_columns[:i]), None)
        if repeated is not None:  # two outputs would share one class name, and one key in every report
            raise ValueError(f"data.label_columns: column {repeated!r} is named twice; name each class once")
        if self.micro_batch is not None and (self.micro_batch >= self.batch_size or self.batch_size % self.micro_batch):
            raise ValueError(
                f"data.micro_batch: {self.micro_batch} must divide data.batch_size ({self.batch_size}) and be smaller"
            )
        if self.manifest is not None and folders:
            raise ValueError(
                f"data.manifest and data.{folders[0]} exclude each other: the manifest lists every file and its split"
            )
        if self.dir is None and self.train_dir is None and self.manifest is None:
            raise ValueError(
                "set data.dir (or data.train_dir) to your image folder, or data.manifest to a CSV of paths and labels"
            )
        return self
