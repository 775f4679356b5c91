"""`mistakes_gradcam.png`: an evaluation's most confident mistakes, each with the Grad-CAM heatmap of the class it
wrongly chose (a multi-label run: of the label it wrongly added or missed), computed in the main process where the
model is (`tlcli.inference.explain`).

A single-label mistake is an image whose top class is not its label, ranked by that class's probability; a
multi-label mistake is one wrong (image, class) decision, ranked by how far the probability is on the wrong side
(p for a spurious label, 1 - p for a missed one). No mistakes: no file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tlcli.inference.explain import write_overlay_rows

GALLERY = "mistakes_gradcam.png"
GALLERY_SIZE = 8  # mistakes shown, most confident first

# (pixels (n, h, w, c), class index per image) -> (n, fh, fw) heatmaps in [0, 1]: `grad_cam` bound to the model.
HeatmapsOf = Callable[[np.ndarray, Sequence[int]], np.ndarray]


@dataclass(frozen=True)
class Mistake:
    """One wrong decision: which image, the class whose heatmap is shown, and its caption."""

    row: int  # the image's index among the evaluated images
    class_index: int
    title: str
    severity: float  # the probability on the wrong side: the gallery's order


def single_label_mistakes(
    probabilities: np.ndarray, labels: np.ndarray, paths: Sequence, class_names: Sequence[str]
) -> list[Mistake]:
    """Images whose top class is wrong, most confident first: the heatmap of the class predicted."""
    predicted = np.argmax(probabilities, axis=1)
    found = []
    for i in np.flatnonzero(predicted != np.asarray(labels)):
        q, t = int(predicted[i]), int(labels[i])
        p = float(probabilities[i, q])
        found.append(
            Mistake(int(i), q, f"{Path(paths[i]).name}: true {class_names[t]}, predicted {class_names[q]} ({p:.2f})", p)
        )
    return sorted(found, key=lambda m: -m.severity)


def multi_label_mistakes(
    probabilities: np.ndarray,
    labels: np.ndarray,
    thresholds: Sequence[float],
    paths: Sequence,
    class_names: Sequence[str],
) -> list[Mistake]:
    """Wrong (image, class) decisions, furthest on the wrong side first: the heatmap of that class."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    on = probabilities >= np.asarray(thresholds)[None, :]
    found = []
    for i, c in zip(*np.nonzero(on != labels.astype(bool))):
        p = float(probabilities[i, c])
        spurious = bool(on[i, c])
        what = "added" if spurious else "missed"
        title = f"{Path(paths[i]).name}: {what} {class_names[c]} ({p:.2f})"
        found.append(Mistake(int(i), int(c), title, p if spurious else 1.0 - p))
    return sorted(found, key=lambda m: -m.severity)


def write_mistakes_gradcam(path: Path, images: np.ndarray, mistakes: Sequence[Mistake], heatmaps_of: HeatmapsOf):
    """The gallery of the first `GALLERY_SIZE` mistakes (a row each: the image, its heatmap, both), or None when
    there are none."""
    shown = list(mistakes)[:GALLERY_SIZE]
    if not shown:
        return None
    pixels = np.stack([images[m.row] for m in shown])
    maps = heatmaps_of(pixels, [m.class_index for m in shown])
    return write_overlay_rows(path, [(pixels[k], maps[k], m.title) for k, m in enumerate(shown)])


def write_gallery(path: Path, scored) -> Path | None:
    """The gallery of an evaluation's `Scored` images (`tlcli.evaluation.report`), with its `heatmaps_of`."""
    probabilities, labels = np.asarray(scored.probabilities), np.asarray(scored.labels)
    if scored.multi_label:
        thresholds = scored.thresholds if scored.thresholds is not None else [0.5] * len(scored.class_names)
        mistakes = multi_label_mistakes(probabilities, labels, thresholds, scored.paths, scored.class_names)
    else:
        mistakes = single_label_mistakes(probabilities, labels, scored.paths, scored.class_names)
    return write_mistakes_gradcam(path, scored.images, mistakes, scored.heatmaps_of)
