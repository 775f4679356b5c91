"""The run's own images for export: training images to calibrate int8, validation images for the parity gate.

Both come from the files the run recorded (`splits/<split>.csv`) and are
decoded exactly as training decoded them (`decode_samples` at the run's image
size and channels). A split larger than the limit is cut to a seeded subset,
kept in file order, so the same limit picks the same files every time (and
`--verify` re-checks on the images the export was checked on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlcli.data.decoded import DecodedImages, decode_samples
from tlcli.data.images import DEFAULT_MAX_BYTES
from tlcli.data.splits import Sample
from tlcli.errors import DataError, RunError
from tlcli.progress import Reporter
from tlcli.runs.provenance import labelled_split
from tlcli.runs.records import ModelInfo, read_run_config

SUBSET_SEED = 0  # fixed: the subset is a property of the run's files, not of the session


@dataclass
class SplitImages:
    """Decoded images of one of the run's splits (a seeded subset when it has more than `requested`)."""

    split: str
    requested: int
    listed: int  # files in the split
    decoded: DecodedImages

    @property
    def images(self) -> np.ndarray:
        return self.decoded.images

    @property
    def labels(self) -> np.ndarray:
        """(n,) class indices; a multi-label run's (n, classes) 0/1 rows."""
        return self.decoded.labels

    def __len__(self) -> int:
        return len(self.decoded)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "file": f"splits/{self.split}.csv",
            "requested": self.requested,
            "listed": self.listed,
            "images": len(self.decoded),
            "seed": SUBSET_SEED,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.decoded.skipped],
        }


def split_samples(run_dir: Path, split: str, class_names: list[str], separator: str | None = None) -> list[Sample]:
    """Every file of `splits/<split>.csv`, labelled by the run's class indices (a multi-label run, `separator`
    given: the tuple of its labels' indices, from the cell that joins them, empty for an image without labels).

    Raises:
        RunError: the split file is missing or names a class the run does not have.
    """
    samples = labelled_split(run_dir, split, class_names, separator)
    if samples is None:
        raise RunError(f"{run_dir}: no splits/{split}.csv; the run folder is incomplete")
    return samples


def subset(samples: list[Sample], limit: int) -> list[Sample]:
    """`limit` of `samples`, a seeded choice kept in file order (all of them when there are no more)."""
    if len(samples) <= limit:
        return list(samples)
    chosen = np.sort(np.random.default_rng(SUBSET_SEED).choice(len(samples), size=limit, replace=False))
    return [samples[i] for i in chosen]


def load_split_images(
    run_dir: Path, split: str, class_names: list[str], info: ModelInfo, limit: int, reporter: Reporter | None = None
) -> SplitImages:
    """Decode up to `limit` of the run's `split` files as training did; unreadable files are skipped (and listed).

    Raises:
        RunError: no such split file.
        DataError: none of the chosen files can be decoded.
    """
    reporter = reporter or Reporter()
    config = read_run_config(run_dir)
    separator = (config.data.label_separator if config else "|") if info.multi_label else None
    samples = split_samples(run_dir, split, class_names, separator)
    chosen = subset(samples, limit)
    max_bytes = config.data.max_bytes if config else DEFAULT_MAX_BYTES
    with reporter.task(f"decoding {split} images", len(chosen)) as advance:
        decoded = decode_samples(
            chosen,
            info.image_size,
            info.channels,
            on_bad_file="skip",
            use_cache=False,
            progress=advance,
            max_bytes=max_bytes,
            num_classes=len(class_names) if info.multi_label else None,  # multi-label labels become 0/1 rows
        )
    if chosen and not len(decoded):
        raise DataError(
            f"{run_dir}/splits/{split}.csv: none of the {len(chosen)} chosen images can be decoded "
            f"(e.g. {decoded.skipped[0].path}: {decoded.skipped[0].reason})"
        )
    if not chosen:
        raise RunError(f"{run_dir}: splits/{split}.csv lists no files")
    return SplitImages(split, limit, len(samples), decoded)
