"""Augmentation on training batches, in the input pipeline: Keras 3's preprocessing layers applied to
(pixels 0-255, targets) batches of the training split only.

The model itself carries the classic layers (`flip`, `rotation`, `zoom`, `translation`, `contrast`, see
`tlcli.modeling.build.augmentation_layers`); what runs here is what a saved model should not carry or cannot: layers
that mix labels (MixUp, CutMix), RandAugment, erasing, colour jitter, random crops and quarter turns. A phase that
augments in its own right (`fine_tune.augment`) runs all of its keys here, so the model stays the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tlcli.config.data_schema import AugmentConfig
from tlcli.errors import ConfigError

BatchFn = Callable[[Any, Any], tuple[Any, Any]]


def batch_augmenter(augment: AugmentConfig, seed: int, *, in_model: bool, key: str = "data.augment") -> BatchFn | None:
    """A function (images, targets) -> (images, targets) for training batches, or None when nothing runs here.

    `in_model`: the model already applies the classic keys (they are skipped here).
    """
    image_layers = _image_layers(augment, seed, in_model)
    mixing = _mixing_layers(augment, seed)
    if not image_layers and not mixing and not augment.rot90:
        return None

    def apply(images, targets):
        for layer in image_layers:
            images = layer(images, training=True)
        if augment.rot90:
            images = quarter_turns(images, seed)
        for layer in mixing:  # last: they mix images and their targets together
            mixed = layer({"images": images, "labels": targets}, training=True)
            images, targets = mixed["images"], mixed["labels"]
        return images, targets

    apply.key = key  # type: ignore[attr-defined]
    return apply


def check_batch_augment(augment: AugmentConfig, image_size: tuple[int, int], key: str = "data.augment") -> None:
    """Refuse what cannot run, before any work.

    Raises:
        ConfigError: quarter turns of images that are not square.
    """
    if augment.rot90 and image_size[0] != image_size[1]:
        raise ConfigError(f"{key}.rot90", f"quarter turns need square images, got {list(image_size)}")


def _image_layers(augment: AugmentConfig, seed: int, in_model: bool) -> list:
    import keras

    layers: list = []
    if augment.crop:  # zoom in only: a random crop resized back to the input size
        layers.append(keras.layers.RandomZoom((-augment.crop, 0.0), seed=seed + 11))
    if not in_model:
        layers += classic_layers(augment, seed)
    if augment.color_jitter:
        factor = augment.color_jitter
        layers.append(
            keras.layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=factor,
                contrast_factor=factor,
                saturation_factor=(max(0.0, 0.5 - factor / 2), 0.5 + factor / 2),
                hue_factor=factor / 4,
                seed=seed + 12,
            )
        )
    if augment.rand_augment:
        layers.append(keras.layers.RandAugment(value_range=(0, 255), factor=augment.rand_augment, seed=seed + 13))
    if augment.erasing:
        layers.append(keras.layers.RandomErasing(factor=augment.erasing, value_range=(0, 255), seed=seed + 14))
    return layers


def classic_layers(augment: AugmentConfig, seed: int) -> list:
    """The classic keys as Keras layers: what the model carries for `data.augment` (`tlcli.modeling.build`), and
    what a phase's own augmentation runs in the pipeline."""
    import keras

    layers: list = []
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
    return layers


def _mixing_layers(augment: AugmentConfig, seed: int) -> list:
    import keras

    layers: list = []
    if augment.mixup:
        layers.append(keras.layers.MixUp(alpha=augment.mixup, seed=seed + 15))
    if augment.cutmix:
        layers.append(keras.layers.CutMix(factor=augment.cutmix, seed=seed + 16))
    return layers


def quarter_turns(images, seed: int):
    """Each (square) image of the batch turned by a random multiple of 90 degrees (an op-level seed: with the run's
    global seed, reproducible)."""
    import tensorflow as tf

    turns = tf.random.uniform(tf.shape(images)[:1], minval=0, maxval=4, dtype=tf.int32, seed=seed + 17)
    choice = tf.reshape(turns, (-1, 1, 1, 1))
    out = images
    for k in range(1, 4):
        out = tf.where(choice == k, tf.image.rot90(images, k), out)
    return out
