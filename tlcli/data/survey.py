"""What a folder of images holds, in seconds: classes, counts per split, image sizes, imbalance (`tlcli init`).

The files are listed as training lists them (`discover_splits`); image sizes come from the headers of a sample of
files (PIL reads the header on open and decodes no pixels), so a folder of thousands of photos is surveyed in about a
second. Nothing is cached and nothing is decoded: `tlcli check` is the thorough look.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from tlcli.config.schema import DataConfig
from tlcli.data.splits import DataSplits, discover_splits
from tlcli.errors import DataError

SIZE_SAMPLE = 400  # files whose headers are read (spread evenly over every split and class)


@dataclass(frozen=True)
class ImageSizes:
    """Widths and heights of the sampled files (pixels), and how many could not be read."""

    sampled: int
    unreadable: int
    median_width: int
    median_height: int
    min_side: int
    max_side: int

    def describe(self) -> str:
        if not self.sampled:
            return "no readable image header"
        median = f"median {self.median_width}x{self.median_height}"
        return f"{median}, sides {self.min_side} to {self.max_side} px ({self.sampled} headers read)"


@dataclass(frozen=True)
class FolderSurvey:
    """A labelled image folder at a glance.

    `counts` holds each split's images per class (`val` is held out of train by `val_split` when there is no
    validation folder: `val_folder` False); `imbalance` is the largest training class over the smallest.
    """

    data_dir: str
    class_names: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    sources: dict[str, str]
    val_folder: bool
    test_folder: bool
    sizes: ImageSizes
    ignored: int

    @property
    def imbalance(self) -> float:
        train = [n for n in self.counts["train"].values() if n]
        return max(train) / min(train) if train else 1.0

    def images(self, split: str) -> int:
        return sum(self.counts.get(split, {}).values())

    def to_dict(self) -> dict:
        return {**asdict(self), "imbalance": round(self.imbalance, 3)}


def survey_folder(data_dir: str | Path, val_split: float = 0.2) -> FolderSurvey:
    """List a folder of class folders (or a parent of `train/`, `val/`, `test/`) and read a sample of image headers.

    Raises:
        DataError: `data_dir` is not a folder, or it has fewer than two classes or an empty class (as training says it).
    """
    if not Path(data_dir).is_dir():
        what = "is a file" if Path(data_dir).exists() else "does not exist"
        raise DataError(
            f"data_dir: {data_dir} {what}; give a folder of class folders, or a parent of train/ (a CSV manifest "
            "needs a config written by hand: data.manifest)"
        )
    splits = discover_splits(DataConfig(dir=Path(data_dir), val_split=val_split))
    counts = {split: splits.counts(split) for split, _ in splits.listed()}
    return FolderSurvey(
        data_dir=str(data_dir),
        class_names=tuple(splits.class_names),
        counts=counts,
        sources=dict(splits.sources),
        val_folder="%" not in splits.sources.get("val", ""),
        test_folder=bool(splits.test),
        sizes=header_sizes(_spread(splits, SIZE_SAMPLE)),
        ignored=len(splits.ignored),
    )


def _spread(splits: DataSplits, count: int) -> list[Path]:
    """About `count` files taken at even steps through every split (each split sorted by class)."""
    every = [sample.path for _, samples in splits.listed() for sample in samples]
    step = max(1, len(every) // count)
    return every[::step][:count]


def header_sizes(paths: list[Path]) -> ImageSizes:
    """The sizes the files' headers give (PIL opens lazily: no pixel is decoded)."""
    from PIL import Image, UnidentifiedImageError

    widths, heights, unreadable = [], [], 0
    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, UnidentifiedImageError, ValueError):
            unreadable += 1
            continue
        widths.append(width)
        heights.append(height)
    sides = widths + heights
    return ImageSizes(
        sampled=len(widths),
        unreadable=unreadable,
        median_width=int(statistics.median(widths)) if widths else 0,
        median_height=int(statistics.median(heights)) if heights else 0,
        min_side=min(sides, default=0),
        max_side=max(sides, default=0),
    )
