"""Build the Keras model: raw pixels -> augmentation -> preprocessing -> base -> head.

The model is one `keras.Model` whose parts are named layers, so later stages
can find them: `augmentation` (training only), `to_rgb` (grayscale input on an
RGB base), `preprocess` (the family's `preprocess_input` as built-in layers),
`base` (a nested model: the part that transfers), then `head_*` layers and
`predictions`. Everything is a built-in Keras layer, so `model.keras` loads
with `keras.models.load_model` in safe mode, and takes 0-255 pixels.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any

from tlcli import bases
from tlcli.config import AugmentConfig, ExperimentConfig, HeadConfig
from tlcli.errors import ConfigError

BASE_LAYER = "base"
OUTPUT_LAYER = "predictions"


@dataclass(frozen=True)
class ModelInfo:
    """What a run folder's `model.json` records about its model."""

    base_name: str
    preprocess: str
    image_size: tuple[int, int]
    channels: int
    activation: str
    pretrained: bool
    base_layers: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["image_size"] = tuple(fields["image_size"])
        return cls(**fields)


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

    inputs = keras.Input((height, width, channels), name="image")
    x = inputs
    augmentation = augmentation_layers(config.data.augment, config.seed)
    if augmentation is not None:
        x = augmentation(x)
    if channels == 1 and base_channels == 3:
        x = keras.layers.Concatenate(name="to_rgb")([x, x, x])
    elif channels == 3 and base_channels == 1:
        raise ConfigError("data.color_mode", f"the base from {source.run_dir if source else 'this run'} was trained on grayscale images; set data.color_mode: grayscale")
    for layer in bases.preprocessing_layers(mode):
        x = layer(x)
    x = base(x)
    outputs = head_layers(x, config.head, num_classes)
    model = keras.Model(inputs, outputs, name="tlcli")
    info = ModelInfo(base_name, mode, (height, width), channels, config.head.activation, pretrained, len(base.layers))
    return model, info


def _check_source_shape(source: SourceBase, size: tuple[int, int]) -> None:
    if tuple(size) != tuple(source.info.image_size):
        h, w = source.info.image_size
        raise ConfigError("data.image_size", f"the base from {source.run_dir} was built for {h}x{w} images; set data.image_size: [{h}, {w}]")


def augmentation_layers(augment: AugmentConfig, seed: int):
    """A `keras.Sequential` of random layers (identity at inference), or None."""
    import keras

    if not augment.enabled:
        return None
    layers = []
    if augment.flip != "none":
        layers.append(keras.layers.RandomFlip(augment.flip, seed=seed))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation, seed=seed + 1))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom(augment.zoom, seed=seed + 2))
    if augment.translation:
        layers.append(keras.layers.RandomTranslation(augment.translation, augment.translation, seed=seed + 3))
    if augment.contrast:
        layers.append(keras.layers.RandomContrast(augment.contrast, seed=seed + 4))
    return keras.Sequential(layers, name="augmentation")


def head_layers(x, head: HeadConfig, num_classes: int):
    import keras

    if head.activation == "sigmoid" and num_classes != 2:
        raise ConfigError("head.activation", f"sigmoid is for exactly two classes, found {num_classes}; use softmax")
    pooling = {
        "avg": keras.layers.GlobalAveragePooling2D(name="head_pool"),
        "max": keras.layers.GlobalMaxPooling2D(name="head_pool"),
        "flatten": keras.layers.Flatten(name="head_pool"),
    }[head.pooling]
    x = pooling(x)
    for index, dense in enumerate(head.dense, start=1):
        try:
            x = keras.layers.Dense(dense.units, activation=dense.activation, name=f"head_dense{index}")(x)
        except ValueError as exc:
            raise ConfigError(f"head.dense.{index - 1}.activation", f"unknown activation {dense.activation!r} ({exc})") from None
        if dense.dropout:
            x = keras.layers.Dropout(dense.dropout, name=f"head_dropout{index}")(x)
    if head.dropout:
        x = keras.layers.Dropout(head.dropout, name="head_dropout")(x)
    units = 1 if head.activation == "sigmoid" else num_classes
    # float32 output keeps the softmax stable under mixed precision.
    return keras.layers.Dense(units, activation=head.activation, dtype="float32", name=OUTPUT_LAYER)(x)


# ----------------------------------------------------------------------------- freezing


def set_base_trainable(model, spec: Any, *, pretrained: bool, key: str) -> int:
    """Make the requested top of the base trainable; return how many base layers train.

    `spec` is `none`, `all`, an integer N (the last N layers, in Keras layer
    order, as the TF tutorial's `fine_tune_at` counts), or a layer name (that
    layer and every later one). A pretrained base keeps every BatchNorm layer
    frozen, which in Keras 3 also keeps it in inference mode: the Keras
    guide's recipe, and the fix for fine-tuning ResNet-style bases.
    """
    base = model.get_layer(BASE_LAYER)
    layers = base.layers
    start = first_trainable_index(layers, spec, key)
    base.trainable = True
    for index, layer in enumerate(layers):
        layer.trainable = index >= start
    if pretrained:
        import keras

        for layer in layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    if start >= len(layers):
        base.trainable = False
    return sum(1 for layer in layers[start:] if layer.trainable and layer.weights)


def first_trainable_index(layers: list, spec: Any, key: str) -> int:
    if spec == "none":
        return len(layers)
    if spec == "all":
        return 0
    if isinstance(spec, int):
        if spec > len(layers):
            raise ConfigError(key, f"asks for the last {spec} layers, but the base has only {len(layers)}; use a smaller number or all")
        return len(layers) - spec
    names = [layer.name for layer in layers]
    if spec in names:
        return names.index(spec)
    close = difflib.get_close_matches(str(spec), names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "see `tlcli layers CONFIG` for the names"
    raise ConfigError(key, f"no layer named {spec!r} in the base; {hint}")


def trainable_spec(config: ExperimentConfig) -> Any:
    """The first phase's `base.trainable`, with `auto` resolved."""
    spec = config.base.trainable
    if spec == "auto":
        return "none" if config.base.pretrained else "all"
    return spec
