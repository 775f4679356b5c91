"""The pixel check that confirms a near-duplicate candidate: do small grayscale thumbnails of the two images agree?

Each image is kept as one `GRID` x `GRID` grayscale square (4 KB, whatever the number of candidates: memory stays
linear). Two scores, both correlations of zero-mean thumbnails (so brightness and contrast changes do not count):

- `view_score`: one image's whole thumbnail against the other's whole, mirrored, centred crops (75-100% of each
  side) and corner crops (85%), both ways;
- `shifted_crop_score`: the whole thumbnail slid over the other image at every position and at crops keeping 75-95%
  of each side (normalised cross-correlation), for off-centre crops. Only for textured images: on plain ones (a
  calm sea) correlation measures noise.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

GRID = 64  # side of the stored grayscale square
THUMB = 32  # side of the compared thumbnails
CROPS = (0.95, 0.9, 0.85, 0.8, 0.75)  # centred crops, and the scales of the sliding search (kept fraction a side)
CORNER_CROP = 0.85
MIN_TEXTURE = 8.0  # grey-level standard deviation under which an image is plain (no sliding search)


def grey_square(path: str | Path) -> np.ndarray | None:
    """The image as a GRID x GRID uint8 grayscale square (squashed: crops keep their fraction of each side), or None
    when it cannot be decoded."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.draft("L", (GRID * 2, GRID * 2))  # JPEG: decode at a reduced scale, several times faster
            grey = ImageOps.exif_transpose(image).convert("L")
            return np.asarray(grey.resize((GRID, GRID), Image.BILINEAR), dtype=np.uint8)
    except Exception:  # noqa: BLE001 - an unreadable file is simply not confirmed
        return None


def _unit(pixels: np.ndarray) -> np.ndarray:
    """Rows (or one array) made zero-mean and unit-length."""
    pixels = np.asarray(pixels, dtype=np.float32).reshape(-1, THUMB * THUMB)
    pixels = pixels - pixels.mean(axis=1, keepdims=True)
    return pixels / np.maximum(np.linalg.norm(pixels, axis=1, keepdims=True), 1e-6)


@functools.lru_cache(maxsize=64)
def _area(size: int, start: float = 0.0, stop: float = GRID) -> np.ndarray:
    """The (size, GRID) matrix that resamples [start, stop) of a GRID-pixel line to `size` pixels, each the average
    of the span it covers (area resampling: no aliasing, and a view is two small matrix products)."""
    edges = start + (stop - start) * np.arange(size + 1) / size
    left, right = np.arange(GRID), np.arange(1, GRID + 1)
    overlap = np.clip(np.minimum(edges[1:, None], right) - np.maximum(edges[:-1, None], left), 0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _view_operators() -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Names, row and column operators of the views: whole, centred crops, corner crops (mirrored: the whole's
    columns reversed)."""
    boxes = {"whole": (0.0, 0.0, GRID, GRID)}
    for kept in CROPS:
        margin = GRID * (1 - kept) / 2
        boxes[f"crop{kept:g}"] = (margin, margin, GRID - margin, GRID - margin)
    side = GRID * CORNER_CROP
    for corner, (x, y) in enumerate(((0, 0), (GRID - side, 0), (0, GRID - side), (GRID - side, GRID - side))):
        boxes[f"corner{corner}"] = (x, y, x + side, y + side)
    rows = np.stack([_area(THUMB, top, bottom) for _, top, _, bottom in boxes.values()])
    columns = np.stack([_area(THUMB, left, right) for left, _, right, _ in boxes.values()])
    return tuple(boxes), rows, columns


def views(square: np.ndarray) -> dict[str, np.ndarray]:
    """The whole, mirrored, centred-crop and corner-crop thumbnails of a square, each a zero-mean unit vector."""
    names, rows, columns = _view_operators()
    thumbs = (rows @ np.asarray(square, dtype=np.float32)) @ columns.transpose(0, 2, 1)
    found = dict(zip(names, _unit(thumbs)))
    found["mirrored"] = _unit(thumbs[0][:, ::-1])[0]
    return found


def view_score(a: np.ndarray, b: np.ndarray) -> float:
    """The best correlation of a's whole thumbnail with b's views, or of b's whole with a's crops."""
    va, vb = views(a), views(b)
    scores = [float(va["whole"] @ view) for view in vb.values()]
    scores += [float(vb["whole"] @ view) for name, view in va.items() if name not in ("whole", "mirrored")]
    return max(scores)


def textured(square: np.ndarray) -> bool:
    return float(np.asarray(square, dtype=np.float32).std()) >= MIN_TEXTURE


def shifted_crop_score(a: np.ndarray, b: np.ndarray) -> float:
    """The best normalised cross-correlation of either whole thumbnail slid over the other at each crop scale."""
    from numpy.lib.stride_tricks import sliding_window_view

    best = -1.0
    for small, big in ((a, b), (b, a)):
        whole = _unit(_area(THUMB) @ np.asarray(small, dtype=np.float32) @ _area(THUMB).T)[0]
        for kept in CROPS:
            operator = _area(round(THUMB / kept))
            scaled = operator @ np.asarray(big, dtype=np.float32) @ operator.T
            windows = sliding_window_view(scaled, (THUMB, THUMB)).reshape(-1, THUMB * THUMB)
            spread = (windows * windows).sum(1) - windows.sum(1) ** 2 / (THUMB * THUMB)
            best = max(best, float(((windows @ whole) / np.sqrt(np.maximum(spread, 1e-6))).max()))
    return best
