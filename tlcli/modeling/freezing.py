"""Freezing: which base layers train in a phase.

A phase names its trainable layers as `none`, `all`, the last N layers (in
Keras layer order, as the TF tutorial's `fine_tune_at` counts), the top share
of them (a fraction, so one setting means the same on a shallow and a deep
base) or a layer name and everything after it.
"""

from __future__ import annotations

from typing import Any

from tlcli.config.schema import ExperimentConfig
from tlcli.errors import ConfigError, did_you_mean
from tlcli.modeling import layers as names


def set_base_trainable(model, spec: Any, *, pretrained: bool, key: str) -> int:
    """Make the requested top of the base trainable; return how many base layers train.

    `spec` is `none`, `all`, an integer N (the last N layers, in Keras layer
    order, as the TF tutorial's `fine_tune_at` counts), a fraction f (the last
    round(f x layers), at least one), or a layer name (that
    layer and every later one). A pretrained base keeps every BatchNorm layer
    frozen, which in Keras 3 also keeps it in inference mode: the Keras
    guide's recipe, and the fix for fine-tuning ResNet-style bases.
    """
    base = model.get_layer(names.BASE)
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
    if isinstance(spec, float):  # the top share of the layers, at least one
        return len(layers) - max(1, round(spec * len(layers)))
    if isinstance(spec, int):
        if spec > len(layers):
            raise ConfigError(
                key,
                f"asks for the last {spec} layers, but the base has only {len(layers)}; use a smaller number or all",
            )
        return len(layers) - spec
    layer_names = [layer.name for layer in layers]
    if spec in layer_names:
        return layer_names.index(spec)
    close = did_you_mean(str(spec), layer_names)
    hint = f"did you mean {close}?" if close else "see `tlcli layers CONFIG` for the names"
    raise ConfigError(key, f"no layer named {spec!r} in the base; {hint}")


def trainable_spec(config: ExperimentConfig) -> Any:
    """The first phase's `base.trainable`, with `auto` resolved."""
    spec = config.base.trainable
    if spec == "auto":
        return "none" if config.base.pretrained else "all"
    return spec


def depth_rate_factors(model, bottom_ratio: float) -> dict[str, float]:
    """The learning-rate factor of each trainable base variable (by its path): 1 at the top trainable layer,
    `bottom_ratio` at the lowest, spaced geometrically between by the layer's rank among the trainable layers with
    weights. Variables absent (the head's, a frozen base's) learn at the full rate."""
    if bottom_ratio >= 1.0:
        return {}
    layers = [layer for layer in model.get_layer(names.BASE).layers if layer.trainable and layer.trainable_weights]
    factors: dict[str, float] = {}
    for rank, layer in enumerate(layers):
        height = (len(layers) - 1 - rank) / max(1, len(layers) - 1)  # 1 at the lowest trainable layer, 0 at the top
        factors.update({v.path: float(bottom_ratio**height) for v in layer.trainable_weights})
    return factors
