"""Grad-CAM heatmaps: where in an image the run's model found the evidence for a class.

Grad-CAM (Selvaraju et al., 2017) weighs each channel of a convolutional feature map by the mean gradient of the
class's score with respect to it, sums the weighted channels and keeps the positive part: the regions whose
features raised the score. tlcli takes the base's last feature map with a spatial extent (the last layer of the
nested `base` model whose output is 4-D and larger than 1x1), or the base layer a user names. The gradient is taken
with `tf.GradientTape` through the run's own model: the same 0-255 input, preprocessing, base and head as
prediction (augmentation is skipped, dropout and batch normalisation run in inference mode).

A heatmap is at the feature map's resolution (7x7 for MobileNetV2 at 224 px), normalised to [0, 1] (all zeros when
nothing raised the score); `write_overlay` upsamples it over the image. It shows where, not what or why: a coarse
map of the evidence for one class, not a segmentation, and not a proof that the model uses the right cue.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlcli.errors import UserError
from tlcli.modeling import layers as names

HEATMAP_ALPHA = 0.45  # the heatmap's opacity over the image in the overlay


def grad_cam(model, pixels: np.ndarray, class_index: int | Sequence[int], layer: str | None = None) -> np.ndarray:
    """The Grad-CAM heatmap of `class_index` for one image (or a batch).

    Args:
        model: a run's model (`tlcli.modeling.build.load_run_model`): 0-255 pixels in, class probabilities out.
        pixels: (height, width, channels) 0-255 pixels, or a batch (n, height, width, channels).
        class_index: the class to explain (a batch: one for all, or one per image). A single-unit sigmoid head
            explains class 1 by its probability p and class 0 by 1 - p.
        layer: the base layer whose feature map is weighed (default: the base's last one larger than 1x1).

    Returns:
        (h, w) float32 in [0, 1] at the feature map's resolution, or (n, h, w) for a batch.

    Raises:
        UserError: `layer` is not a layer of the base, or its output is not a feature map.
    """
    batch = np.asarray(pixels, dtype=np.float32)
    single = batch.ndim == 3
    batch = batch[None] if single else batch
    indices = np.broadcast_to(np.asarray(class_index, dtype=np.int32), (len(batch),))
    maps = _explainer(model, layer)(batch, indices)
    peaks = maps.max(axis=(1, 2), keepdims=True)
    maps = np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)
    return maps[0] if single else maps


def feature_layer(model, layer: str | None = None) -> str:
    """The name of the base layer Grad-CAM weighs: `layer` when given (checked), else the base's last layer whose
    output is 4-D with a spatial size above 1x1.

    Raises:
        UserError: `layer` is not in the base or is not a feature map; the base has no feature map.
    """
    base = model.get_layer(names.BASE)
    maps = [item.name for item in base.layers if _is_feature_map(item)]
    if layer is None:
        if not maps:
            raise UserError("explain_layer: the base has no feature map larger than 1x1 to explain with")
        return maps[-1]
    if layer not in maps:
        known = {item.name for item in base.layers}
        why = "its output is not a feature map larger than 1x1" if layer in known else "no such layer in the base"
        raise UserError(f"explain_layer: {layer!r}: {why}; the last feature maps are {', '.join(maps[-3:])}")
    return layer


def _is_feature_map(layer) -> bool:
    shape = getattr(layer, "output", None)
    shape = getattr(shape, "shape", None)
    return shape is not None and len(shape) == 4 and (shape[1] or 0) * (shape[2] or 0) > 1


class _Explainer:
    """Unnormalised Grad-CAM maps of (pixels, class indices) through `network` (pixels -> (feature map, outputs)).

    Eager for the first `COMPILE_AFTER` images, then a compiled `tf.function` (one trace, any batch size): on
    MobileNetV2 at 224 px eager costs about 170 ms an image in a batch (470 ms alone), compiled about 35 ms, after a
    3 s trace that a handful of images (an evaluation's gallery, a few predictions) would not repay.
    """

    COMPILE_AFTER = 16

    def __init__(self, network):
        self.network, self.explained, self.compiled = network, 0, None

    def __call__(self, batch: np.ndarray, indices: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        self.explained += len(batch)
        if self.compiled is None and self.explained > self.COMPILE_AFTER:
            shape = [None, *self.network.input_shape[1:]]
            self.compiled = tf.function(
                self._maps, input_signature=[tf.TensorSpec(shape, tf.float32), tf.TensorSpec([None], tf.int32)]
            )
        run = self.compiled or self._maps
        return np.asarray(run(tf.constant(batch), tf.constant(indices)), dtype=np.float32)

    def _maps(self, x, indices):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)  # every operation from the input on is recorded, frozen layers included
            features, outputs = self.network(x, training=False)
            if outputs.shape[-1] == 1:  # one sigmoid unit: p is class 1's probability, 1 - p class 0's
                score = tf.where(tf.equal(indices, 1), outputs[:, 0], 1.0 - outputs[:, 0])
            else:
                score = tf.gather(outputs, indices, axis=1, batch_dims=1)
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # a channel's weight: its mean gradient
        return tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))


def _explainer(model, layer: str | None) -> _Explainer:
    """The Grad-CAM of `layer` in `model`, built once per model and layer (kept on the model)."""
    import keras

    cache = model.__dict__.setdefault("_tlcli_explainers", {})
    name = feature_layer(model, layer)
    if name not in cache:
        base = model.get_layer(names.BASE)
        inner = keras.Model(base.input, [base.get_layer(name).output, base.output])
        inputs = keras.Input(model.input_shape[1:])
        x = inputs
        for item in model.layers[1:]:  # the preprocessing (never the augmentation), the base, then the head
            if item.name == names.AUGMENTATION:
                continue
            if item.name == names.BASE:
                features, x = inner(x)
            else:
                x = item([x, x, x]) if item.name == names.TO_RGB else item(x)
        cache[name] = _Explainer(keras.Model(inputs, [features, x], name="grad_cam"))
    return cache[name]


def upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`heatmap` resized (bilinear) to (height, width) `size`, still in [0, 1]."""
    from PIL import Image

    height, width = size
    resized = Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F").resize((width, height), Image.BILINEAR)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def write_overlay(path: str | Path, pixels: np.ndarray, heatmap: np.ndarray, title: str) -> Path:
    """A PNG of the image, its heatmap, and both overlaid, side by side, titled `title`."""
    return write_overlay_rows(path, [(pixels, heatmap, title)])


def write_overlay_rows(path: str | Path, rows: Sequence[tuple[np.ndarray, np.ndarray, str]]) -> Path:
    """A PNG with one row per (pixels, heatmap, title): the image, its heatmap, both overlaid (a multi-label image's
    labels, an evaluation's gallery of mistakes). Written beside and renamed: never a half file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    figure, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.7 * len(rows)), squeeze=False)
    for (pixels, heatmap, title), row in zip(rows, axes):
        image = np.asarray(pixels, dtype=np.uint8)
        image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
        warm = upsample(heatmap, image.shape[:2])
        row[0].imshow(image)
        row[1].imshow(warm, cmap="jet", vmin=0.0, vmax=1.0)
        row[2].imshow(image)
        row[2].imshow(warm, cmap="jet", vmin=0.0, vmax=1.0, alpha=HEATMAP_ALPHA)
        for axis, caption in zip(row, ("image", "Grad-CAM", "overlay")):
            axis.set_title(caption, fontsize=8)
            axis.axis("off")
        row[0].text(0.0, 1.18, title, transform=row[0].transAxes, fontsize=9, ha="left", va="bottom")
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / (2.7 * len(rows)), hspace=0.35)
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, dpi=80, format="png")
    plt.close(figure)
    partial.replace(path)
    return path


# ----------------------------------------------------------------------------- predict --explain


def prepare_explain_dir(folder: str | Path) -> Path:
    """The folder `predict` writes overlays into: created, or an existing empty one (never a file overwritten).

    Raises:
        UserError: `folder` exists and is not an empty folder.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        what = "is not a folder" if not folder.is_dir() else "exists and is not empty"
        raise UserError(f"explain_dir: {folder} {what}; name a new or empty folder (overlays never overwrite files)")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def overlay_name(number: int, total: int, key: str) -> str:
    """`<number>-<file stem>.png`: input order, and unique even when two folders hold files of the same name."""
    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(key).stem)[:80] or "image"
    return f"{number:0{len(str(total))}d}-{stem}.png"


def explained_classes(
    top: Sequence[tuple[str, float]],
    labels: Sequence[str] | None,
    class_names: Sequence[str],
    scores: Sequence[tuple[str, float]] = (),
):
    """[(class index, title)] to explain: a multi-label prediction's every label (its top class when it has none, said
    so), else the top class; `scores`: every class's probability (multi-label), for the titles."""
    probability = dict(scores) or dict(top)
    if labels:
        return [(list(class_names).index(name), f"{name} ({probability.get(name, 0.0):.2f})") for name in labels]
    name, p = top[0]
    return [
        (list(class_names).index(name), f"{name} ({p:.2f})" + (", no label predicted" if labels is not None else ""))
    ]


def heatmaps_by_image(
    model, images: Sequence[np.ndarray], classes: Sequence[Sequence[int]], layer: str | None = None
) -> list[np.ndarray]:
    """Each image's heatmaps, (k, h, w) for its k `classes`: every (image, class) pair in one gradient pass."""
    pairs = [(image, index) for image, chosen in zip(images, classes) for index in chosen]
    if not pairs:
        return [np.zeros((0, 0, 0), dtype=np.float32) for _ in images]
    maps = grad_cam(model, np.stack([image for image, _ in pairs]), [index for _, index in pairs], layer)
    bounds = np.cumsum([0, *(len(chosen) for chosen in classes)])
    return [maps[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class Explanations:
    """Writes each predicted image's Grad-CAM overlay into `folder` (`tlcli.inference.explain`), in the main process."""

    model: Any
    folder: Path
    total: int  # the number of input files (the width of the overlays' numbers)
    class_names: list[str]
    layer: str | None = None

    def __call__(self, numbers: Sequence[int], images: Sequence[np.ndarray], predictions: Sequence[Any]):
        """`predictions` with their overlays written (the `number`th input files): one gradient pass a batch."""
        classes = [explained_classes(p.top, p.labels, self.class_names, p.scores) for p in predictions]
        maps = heatmaps_by_image(self.model, images, [[index for index, _ in chosen] for chosen in classes], self.layer)
        done = []
        for number, image, prediction, chosen, heatmaps in zip(numbers, images, predictions, classes, maps):
            path = self.folder / overlay_name(number, self.total, prediction.path)
            name = Path(prediction.path).name
            write_overlay_rows(path, [(image, heat, f"{name}: {title}") for heat, (_, title) in zip(heatmaps, chosen)])
            done.append(dataclasses.replace(prediction, explanation=str(path)))
        return done
