"""Build the Keras model: raw pixels -> augmentation -> preprocessing -> base -> head.

The model is one `keras.Model` whose parts are named layers, so later stages
can find them: `augmentation` (training only), `to_rgb` (grayscale input on an
RGB base), `preprocess` (the family's `preprocess_input` as built-in layers),
`base` (a nested model: the part that transfers), then `head_*` layers and
`predictions`. Everything is a built-in Keras layer, so `model.keras` loads
with `keras.models.load_model` in safe mode, and takes 0-255 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcli.config.schema import AugmentConfig, ExperimentConfig, HeadConfig
from tlcli.data.augment import classic_layers
from tlcli.errors import ConfigError, RunError
from tlcli.modeling import bases
from tlcli.modeling import layers as names
from tlcli.runs.folder import require_model
from tlcli.runs.records import ACTIVATIONS, ModelInfo, read_model_info


@dataclass(frozen=True)
class SourceBase:
    """A base taken from an earlier run's model."""

    layer: Any  # the keras.Model named "base"
    info: ModelInfo
    run_dir: str


def build_model(config: ExperimentConfig, num_classes: int, source: SourceBase | None = None):
    """Assemble the full model for `config` (not compiled).

    Args:
        num_classes: number of class folders found.
        source: an earlier run's base, when `base.run` is set.

    Returns:
        (model, ModelInfo).

    Raises:
        ConfigError: the base cannot take the image size, a sigmoid head has
            more than two classes, a weights file is missing or does not fit.
    """
    import keras

    height, width = config.data.image_size
    channels = 1 if config.data.color_mode == "grayscale" else 3
    if source is not None:
        base, base_name, mode, pretrained = source.layer, source.info.base_name, source.info.preprocess, True
        _check_source_shape(source, (height, width))
        base_channels = source.info.channels if base_name == bases.SMALL_CNN else 3
    else:
        base_name, pretrained = config.base.name, config.base.pretrained
        bases.check_base_name(base_name)
        mode = bases.preprocess_mode(base_name)
        base_channels = 3 if bases.needs_rgb(base_name) else channels
        base = bases.build_base(base_name, config.base.weights, (height, width, base_channels), config.base.args)

    inputs = keras.Input((height, width, channels), name=names.INPUT)
    x = inputs
    augmentation = augmentation_layers(config.data.augment, config.seed)
    if augmentation is not None:
        x = augmentation(x)
    if channels == 1 and base_channels == 3:
        x = keras.layers.Concatenate(name=names.TO_RGB)([x, x, x])
    elif channels == 3 and base_channels == 1:
        raise ConfigError(
            "data.color_mode",
            (
                f"the base from {source.run_dir if source else 'this run'} was trained on grayscale images; set "
                "data.color_mode: grayscale"
            ),
        )
    for layer in bases.preprocessing_layers(mode, names.PREPROCESS):
        x = layer(x)
    x = base(x)
    multi = config.data.multi_label
    outputs = head_layers(
        x, config.head, num_classes, l2=0.0 if config.train.l2 == "auto" else config.train.l2, multi_label=multi
    )
    model = keras.Model(inputs, outputs, name="tlcli")
    activation = "sigmoid" if multi else config.head.activation
    info = ModelInfo(
        base_name,
        mode,
        (height, width),
        channels,
        activation,
        pretrained,
        len(base.layers),
        task="multi_label" if multi else "single_label",
    )
    return model, info


def _check_source_shape(source: SourceBase, size: tuple[int, int]) -> None:
    if tuple(size) != tuple(source.info.image_size):
        h, w = source.info.image_size
        raise ConfigError(
            "data.image_size",
            f"the base from {source.run_dir} was built for {h}x{w} images; set data.image_size: [{h}, {w}]",
        )


def augmentation_layers(augment: AugmentConfig, seed: int):
    """A `keras.Sequential` of random layers (identity at inference), or None. The batch keys (`tlcli.data.augment`)
    run in the input pipeline instead."""
    import keras

    random_layers = classic_layers(augment, seed)
    return keras.Sequential(random_layers, name=names.AUGMENTATION) if random_layers else None


DEFAULT_DROPOUT = 0.2  # `head.dropout: auto` when the head's penalty is not chosen on validation


def head_layers(x, head: HeadConfig, num_classes: int, l2: float = 0.0, multi_label: bool = False):
    """Pooling, optional hidden layers, dropout and the output layer; `l2` penalises every kernel.

    With `head.dropout: auto` the dropout layer is always built (at 0.2) so that
    `set_head_regularisation` can set its rate once the penalty is chosen.
    """
    import keras

    if head.activation == "sigmoid" and num_classes != 2 and not multi_label:
        raise ConfigError(
            "head.activation",
            (
                f"sigmoid is for exactly two classes, found {num_classes}; use softmax (or data.multi_label for "
                "several labels an image)"
            ),
        )
    pooling = {
        "avg": keras.layers.GlobalAveragePooling2D(name=names.POOL),
        "max": keras.layers.GlobalMaxPooling2D(name=names.POOL),
        "flatten": keras.layers.Flatten(name=names.POOL),
    }[head.pooling]
    x = pooling(x)
    for index, dense in enumerate(head.dense, start=1):
        try:
            x = keras.layers.Dense(
                dense.units, activation=dense.activation, kernel_regularizer=_penalty(l2), name=f"head_dense{index}"
            )(x)
        except ValueError as exc:
            raise ConfigError(
                f"head.dense.{index - 1}.activation", f"unknown activation {dense.activation!r} ({exc})"
            ) from None
        if dense.dropout:
            x = keras.layers.Dropout(dense.dropout, name=f"head_dropout{index}")(x)
    if head.dropout == "auto" or head.dropout:
        x = keras.layers.Dropout(DEFAULT_DROPOUT if head.dropout == "auto" else head.dropout, name=names.DROPOUT)(x)
    units = 1 if head.activation == "sigmoid" and not multi_label else num_classes
    activation = "sigmoid" if multi_label else head.activation  # multi-label: one independent sigmoid per class
    # float32 output keeps the softmax stable under mixed precision.
    return keras.layers.Dense(
        units, activation=activation, dtype="float32", kernel_regularizer=_penalty(l2), name=names.OUTPUT
    )(x)


def _penalty(l2: float):
    import keras

    return keras.regularizers.L2(l2) if l2 else None


def set_head_regularisation(model, l2: float, dropout: float | None) -> None:
    """Give the head's kernels the penalty `l2` (saved with the model) and its dropout layer the rate `dropout` (None:
    leave it)."""
    for layer in model.layers:
        if layer.name == names.OUTPUT or layer.name.startswith("head_dense"):
            layer.kernel_regularizer = _penalty(l2)
            layer.kernel.regularizer = layer.kernel_regularizer
        elif layer.name == names.DROPOUT and dropout is not None:
            layer.rate = float(dropout)


def load_run_model(run_dir: Path, class_names: list[str] | None = None):
    """Load a run's model with Keras safe mode on (nothing custom to register), checked against its model.json.

    Args:
        class_names: the run's labels.json; when given, the model's outputs must match them.

    Raises:
        RunError: no model.keras, one that does not load, a model.json it contradicts, or outputs that do not match
            the labels.
    """
    import keras

    model_path = require_model(Path(run_dir))
    info = read_model_info(Path(run_dir))  # its ranges first: before the model loads
    try:
        model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    except Exception as exc:
        raise RunError(
            f"{model_path}: cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    contradiction = _contradiction(info, model)
    if contradiction is not None:
        raise RunError(f"{Path(run_dir) / 'model.json'}: {contradiction}; restore it or remove the run folder")
    if class_names is not None:
        units = int(model.output_shape[-1])
        expected = 1 if len(class_names) == 2 and info.binary else len(class_names)
        if units != expected:
            raise RunError(
                f"{Path(run_dir) / 'labels.json'}: lists {len(class_names)} classes but model.keras has "
                f"{units} outputs; the run folder is damaged"
            )
    return model


def _contradiction(info: ModelInfo, model) -> str | None:
    """The first field of model.json that the model it describes contradicts (an edit), or None.

    Every consumer decodes images at model.json's size and channels and reads the outputs by its activation, task
    and thresholds: a contradiction would fail on every image, or silently misread the outputs.
    """
    _, height, width, channels = model.input_shape
    units = int(model.output_shape[-1])
    try:
        activation = model.get_layer(names.OUTPUT).get_config().get("activation")
    except ValueError:  # no layer of that name: nothing to compare
        activation = None
    if None not in (height, width) and tuple(info.image_size) != (height, width):
        return f"image_size {list(info.image_size)} does not match model.keras, which takes {height}x{width} images"
    if channels is not None and info.channels != channels:
        return f"channels {info.channels} does not match model.keras, which takes {channels}-channel images"
    if activation in ACTIVATIONS and info.activation != activation:
        return f"activation {info.activation} does not match model.keras's output layer ({activation})"
    if info.binary and units != 1:
        return f"task {info.task} with activation sigmoid means one output, but model.keras has {units}"
    if info.thresholds is not None and len(info.thresholds) != units:
        return f"thresholds lists {len(info.thresholds)} classes but model.keras has {units} outputs"
    return None


def source_base(run_dir: Path) -> SourceBase:
    """An earlier run's base (for `base.run`), with what its model.json says about it."""
    model = load_run_model(run_dir)
    return SourceBase(model.get_layer(names.BASE), read_model_info(run_dir), str(run_dir))
