"""The catalogue of bases: every `keras.applications` model, plus `SmallCNN`.

For each base tlcli knows how its family preprocesses pixels, and rebuilds that
`preprocess_input` from built-in Keras layers, so a saved model takes raw
0-255 pixels and loads with `keras.models.load_model` in safe mode.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from tlcli.errors import ConfigError, did_you_mean
from tlcli.modeling.weights import recording_downloads
from tlcli.paths import keras_weights_dir

SMALL_CNN = "SmallCNN"

# keras.applications module -> preprocess_input mode (see imagenet_utils).
_FAMILY_MODES = {
    "convnext": "none",
    "densenet": "torch",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "inception_resnet_v2": "tf",
    "inception_v3": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "mobilenet_v3": "none",
    "nasnet": "tf",
    "resnet": "caffe",
    "resnet_v2": "tf",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "xception": "tf",
}
# Constructor arguments that tlcli sets itself (from data.image_size, head, base.weights).
_SET_BY_TLCLI = (
    "include_top",
    "input_shape",
    "input_tensor",
    "weights",
    "classes",
    "classifier_activation",
    "pooling",
    "include_preprocessing",
)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def application_names() -> list[str]:
    """Names of the keras.applications bases tlcli accepts."""
    import keras

    return sorted(name for name in dir(keras.applications) if name[0].isupper() and _family(name) in _FAMILY_MODES)


def base_names() -> list[str]:
    return application_names() + [SMALL_CNN]


def _family(name: str) -> str:
    import keras

    constructor = getattr(keras.applications, name, None)
    module = inspect.getmodule(constructor) if constructor is not None else None
    return module.__name__.rsplit(".", 1)[-1] if module is not None else ""


def check_base_name(name: str) -> None:
    names = base_names()
    if name not in names:
        close = did_you_mean(name, names, cutoff=0.5)
        hint = f"did you mean {close}?" if close else "see `tlcli bases` for the list"
        raise ConfigError("base.name", f"unknown base {name!r}; {hint}")


def preprocess_mode(name: str) -> str:
    """`tf`, `caffe`, `torch`, `none` (the base rescales itself) or `unit` (SmallCNN: x/255)."""
    return "unit" if name == SMALL_CNN else _FAMILY_MODES[_family(name)]


def preprocessing_layers(mode: str, name: str = "preprocess") -> list:
    """Built-in Keras layers equal to the family's `preprocess_input` on 0-255 RGB."""
    import keras
    import numpy as np

    if mode == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=name)]
    if mode == "unit":
        return [keras.layers.Rescaling(1 / 255.0, name=name)]
    if mode == "torch":
        mean = [m * 255.0 for m in _TORCH_MEAN]
        variance = [(s * 255.0) ** 2 for s in _TORCH_STD]
        return [keras.layers.Normalization(mean=mean, variance=variance, name=name)]
    if mode == "caffe":
        # RGB -> BGR and mean subtraction as a fixed 1x1 convolution: a
        # permutation kernel is exact, and needs no custom layer to load.
        kernel = np.zeros((1, 1, 3, 3), dtype="float32")
        for out_channel, in_channel in enumerate((2, 1, 0)):
            kernel[0, 0, in_channel, out_channel] = 1.0
        bias = -np.asarray(_CAFFE_MEAN_BGR, dtype="float32")
        layer = keras.layers.Conv2D(
            3,
            1,
            name=name,
            trainable=False,
            kernel_initializer=keras.initializers.Constant(kernel),
            bias_initializer=keras.initializers.Constant(bias),
        )
        return [layer]
    return []


def build_base(name: str, weights: str, input_shape: tuple[int, int, int], args: dict[str, Any]):
    """Construct the base (no top) named "base"; translate Keras's errors to config errors."""
    import keras

    if name == SMALL_CNN:
        accepted = [key for key in inspect.signature(small_cnn).parameters if key != "input_shape"]
        unknown = [key for key in args if key not in accepted]
        if unknown:
            raise ConfigError(
                "base.args", f"{unknown[0]} is not an argument of SmallCNN (accepted: {', '.join(accepted)})"
            )
        return small_cnn(input_shape, **args)
    check_base_name(name)
    constructor = getattr(keras.applications, name)
    passable = [key for key in inspect.signature(constructor).parameters if key not in _SET_BY_TLCLI]
    for key in args:
        if key not in passable:
            raise ConfigError(
                f"base.args.{key}", f"not an argument tlcli passes to {name} (accepted: {', '.join(passable)})"
            )
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise ConfigError(
            "base.weights", f"weights file not found: {weights} (use imagenet, none, or the path of a weights file)"
        )
    keras_weights = None if weights == "none" else weights

    with recording_downloads() as requested:
        try:
            model = constructor(include_top=False, weights=keras_weights, input_shape=input_shape, **args)
        except ValueError as exc:
            raise _config_error_from(name, exc) from None
        except Exception as exc:  # a failed download surfaces as several exception types
            if weights == "imagenet" and requested:
                raise missing_weights_error(name, requested[-1], exc) from None
            if weights not in ("imagenet", "none"):
                raise ConfigError(
                    "base.weights",
                    f"{weights} does not fit {name} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})",
                ) from None
            raise
    return keras.Model(model.input, model.output, name="base")


def _config_error_from(name: str, exc: ValueError) -> ConfigError:
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if (
        "input size" in lowered
        or "input_shape" in lowered
        or "should have 3 input channels" in lowered
        or "too small" in lowered
    ):
        return ConfigError("data.image_size", f"{name} cannot take this input: {text}")
    if "alpha" in lowered or "depth_multiplier" in lowered or "weights" in lowered:
        return ConfigError("base.args", f"{name}: {text}")
    return ConfigError("base", f"{name}: {text}")


def missing_weights_error(name: str, file_name: str, exc: Exception) -> ConfigError:
    return ConfigError(
        "base.weights",
        f"ImageNet weights for {name} ({file_name}) are not in {keras_weights_dir()} and could not be downloaded "
        f"({type(exc).__name__}); copy the file there with `tlcli weights import {file_name}`, or use weights: none",
    )


def needs_rgb(name: str) -> bool:
    """keras.applications bases take three channels; SmallCNN takes whatever it is given."""
    return name != SMALL_CNN


def small_cnn(
    input_shape: tuple[int, int, int],
    filters: int = 32,
    blocks: int | None = None,
    dropout: float = 0.0,
    batch_norm: bool = True,
):
    """A small convolutional base for tiny images (e.g. 8x8 digits), where keras.applications need at least 32 px.

    Args:
        filters: width of the first block; each later block doubles it.
        blocks: conv blocks, each halving the size (default: up to 3, as the size allows).
        batch_norm: normalise after each convolution (off: each replica of a distributed run then computes
            exactly what one device would, since batch statistics are per replica).
    """
    import math

    import keras

    height, width = input_shape[:2]
    possible = max(1, int(math.log2(max(2, min(height, width)))))
    blocks = min(blocks or 3, possible)
    inputs = keras.Input(input_shape)
    x = inputs
    for block in range(blocks):
        units = filters * 2**block
        for repeat in range(2):
            x = keras.layers.Conv2D(
                units, 3, padding="same", use_bias=not batch_norm, name=f"block{block + 1}_conv{repeat + 1}"
            )(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{block + 1}_bn{repeat + 1}")(
                    x
                )  # settles within a few small epochs
            x = keras.layers.ReLU(name=f"block{block + 1}_relu{repeat + 1}")(x)
        if min(x.shape[1], x.shape[2]) >= 2:
            x = keras.layers.MaxPooling2D(name=f"block{block + 1}_pool")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"block{block + 1}_dropout")(x)
    return keras.Model(inputs, x, name="base")
