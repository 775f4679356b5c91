"""Test-time augmentation: a model's class probabilities averaged over fixed views of each image.

The views are the symmetries the run trained with: the horizontal mirror always (every preset flips), the vertical
mirror when the run flipped vertically, and the quarter turns when it turned images (`rot90`, the `overhead`
preset). Nothing random: the same image always gets the same answer, and with one view TTA is the model itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Probabilities = Callable[[np.ndarray, int], np.ndarray]
VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x,
    "flip_h": lambda x: x[:, :, ::-1, :],
    "flip_v": lambda x: x[:, ::-1, :, :],
    "rot90": lambda x: np.rot90(x, 1, axes=(1, 2)),
    "rot180": lambda x: np.rot90(x, 2, axes=(1, 2)),
    "rot270": lambda x: np.rot90(x, 3, axes=(1, 2)),
}


def tta_views(config) -> tuple[str, ...]:
    """The views of a run whose config is `config` (None: an unknown run, the mirror only)."""
    views = ["identity", "flip_h"]
    augments = [config.data.augment] if config is not None else []
    if config is not None and config.fine_tune is not None and config.fine_tune.augment != "none":
        from tlcli.config.data_schema import AugmentConfig

        augments.append(AugmentConfig(preset=config.fine_tune.augment))
    if any(a.flip in ("vertical", "horizontal_and_vertical") for a in augments):
        views.append("flip_v")
    square = config is None or config.data.image_size[0] == config.data.image_size[1]
    if square and any(a.rot90 for a in augments):
        views += ["rot90", "rot180", "rot270"]
    return tuple(views)


def with_tta(probabilities: Probabilities, views: tuple[str, ...]) -> Probabilities:
    """`probabilities` averaged over `views` of the images (the mean of each view's class probabilities)."""

    def averaged(images: np.ndarray, batch_size: int) -> np.ndarray:
        outputs = [probabilities(np.ascontiguousarray(VIEWS[view](images)), batch_size) for view in views]
        return np.mean(outputs, axis=0)

    return averaged
