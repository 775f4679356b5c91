"""The decode pass: every listed file decoded once, in parallel, into uint8 pixels.

Decoded images stay in memory when they fit, else in a temporary file on
disk, so later epochs never decode again and data larger than memory streams
from disk. `ScreenedSplit` is what training's single pass over the files
yields, whether it kept pixels (`DecodedImages`, here) or only the frozen
base's features (`tlcli.features.FeatureSet`): the labels, the files kept,
the files skipped and each kept file's content hash.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tlcli.data.images import DEFAULT_MAX_BYTES, ImageDecodeError, ImageInfo, decode_image
from tlcli.data.screening import Loaded, ScreenedFiles
from tlcli.data.splits import Sample, label_array
from tlcli.errors import DataError
from tlcli.settings import cache_dir

DEFAULT_MEMORY_BUDGET = 4 * 1024**3  # decoded images above this go to a temporary file


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass(kw_only=True)
class ScreenedSplit:
    """One split after the pass over its files: what was kept (in order) and what was skipped."""

    labels: np.ndarray  # (n,) int32 class indices of the kept files
    samples: list[Sample]
    content_hashes: list[str]
    skipped: list[SkippedFile]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def pixels(self) -> np.ndarray | None:
        """The decoded images, when the pass kept them (None when it kept only features)."""
        return None


@dataclass(kw_only=True)
class DecodedImages(ScreenedSplit):
    """The decodable images of one split, resized, as uint8 pixels."""

    images: np.ndarray  # (n, height, width, channels); an np.memmap when spilled to disk
    infos: list[ImageInfo]
    spill: tempfile.TemporaryDirectory | None = None

    @property
    def on_disk(self) -> bool:
        return self.spill is not None

    @property
    def pixels(self) -> np.ndarray:
        return self.images


def decode_samples(
    samples: Sequence[Sample],
    size: tuple[int, int],
    channels: int,
    *,
    on_bad_file: str = "skip",
    memory_budget: int | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    use_cache: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    num_classes: int | None = None,
) -> DecodedImages:
    """Decode `samples` once, in parallel, skipping files that fail.

    This is also the screening pass (`tlcli.data.screening.ScreenedFiles`):
    every verdict is stored in the screening cache, and files the cache
    already knows to be unusable are skipped without being opened.

    Args:
        on_bad_file: "skip" records bad files in `skipped`; "fail" raises.
        memory_budget: bytes of decoded pixels kept in memory; above it they
            go to a temporary file (default: 4 GiB or 40% of free memory).
        progress: called with the number of files done after each file.
        use_cache: read and update the screening cache.
        max_bytes: larger files are skipped unread (`data.max_file_mb`).
        num_classes: the number of classes, needed for multi-label samples (their labels become 0/1 rows).

    Raises:
        DataError: a file failed and on_bad_file is "fail".
    """
    height, width = size
    budget = memory_budget if memory_budget is not None else _default_memory_budget()
    spill = None
    if height * width * channels * len(samples) > budget:
        spill = tempfile.TemporaryDirectory(prefix="tlcli-decoded-", dir=cache_dir())
        images = np.lib.format.open_memmap(
            Path(spill.name) / "images.npy", mode="w+", dtype=np.uint8, shape=(len(samples), height, width, channels)
        )
    else:
        images = np.empty((len(samples), height, width, channels), dtype=np.uint8)
    kept: list[Sample] = []
    infos: list[ImageInfo] = []
    skipped: list[SkippedFile] = []

    def load(path: Path) -> Loaded:
        pixels, info = decode_image(path, size, channels, max_bytes)
        return Loaded(info, pixels, info.content_hash)

    with ScreenedFiles(
        [s.path for s in samples], load, use_cache=use_cache, workers=workers, progress=progress
    ) as files:
        for sample, (_, outcome) in zip(samples, files):
            if isinstance(outcome, ImageDecodeError):
                skipped.append(bad_file(sample, outcome, on_bad_file))
                continue
            images[len(kept)] = outcome.pixels
            kept.append(sample)
            infos.append(outcome.info)
    labels = label_array(kept, num_classes)
    return DecodedImages(
        images=images[: len(kept)],
        labels=labels,
        samples=kept,
        infos=infos,
        content_hashes=[i.content_hash for i in infos],
        skipped=skipped,
        spill=spill,
    )


def bad_file(sample: Sample, error: ImageDecodeError, on_bad_file: str) -> SkippedFile:
    """The record of a file the pass skips; with `data.on_bad_file: fail`, the error that stops it.

    Raises:
        DataError: `on_bad_file` is "fail".
    """
    if on_bad_file == "fail":
        raise DataError(f"{sample.path}: {error.reason} (data.on_bad_file is fail; set it to skip to train without it)")
    return SkippedFile(str(sample.path), error.reason)


def _default_memory_budget() -> int:
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_MEMORY_BUDGET
    return int(min(DEFAULT_MEMORY_BUDGET, 0.4 * available))
