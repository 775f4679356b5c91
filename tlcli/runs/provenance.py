"""Provenance in the run folder: the exact splits, the dataset's fingerprint, the environment.

`splits/<split>.csv` lists every file of a split (path, relpath, label); resume
and evaluation read them back with `read_split`. `dataset.json` holds the
fingerprint (a hash of every readable image's split, relative path and
content), per-split class counts and where the splits came from. `env.json`
holds versions, devices, seed, git state and the command line.
"""

from __future__ import annotations

import csv
import hashlib
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from tlcli.config.schema import redact_uri
from tlcli.data.decoded import ScreenedSplit
from tlcli.data.splits import DataSplits, Sample
from tlcli.errors import RunError
from tlcli.runs.atomic import read_json, write_csv_atomic, write_json_atomic
from tlcli.version import __version__

SPLIT_COLUMNS = ["path", "relpath", "label"]


@dataclass(frozen=True)
class SplitRow:
    """One line of `splits/<split>.csv`."""

    path: str
    relpath: str
    label: str


def write_splits(run_dir: Path, splits: DataSplits) -> None:
    for split, samples in splits.listed():
        write_csv_atomic(
            run_dir / "splits" / f"{split}.csv",
            SPLIT_COLUMNS,
            ((s.path, s.relpath, splits.label_name(s.label)) for s in samples),
        )


def read_split(run_dir: Path, split: str) -> list[SplitRow] | None:
    """The rows of `splits/<split>.csv`, or None when the run has no such split.

    Raises:
        RunError: the file is not a split file.
    """
    path = Path(run_dir) / "splits" / f"{split}.csv"
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
        return [SplitRow(row["path"], row.get("relpath") or Path(row["path"]).name, row["label"]) for row in rows]
    except (OSError, UnicodeDecodeError, KeyError, TypeError, csv.Error) as exc:
        raise RunError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None


def labelled_split(
    run_dir: Path, split: str, class_names: list[str], separator: str | None = None
) -> list[Sample] | None:
    """The files of `splits/<split>.csv` labelled by the run's class indices (multi-label, `separator` given: the
    sorted tuple of the indices its cell joins, empty for an image without labels), or None without that split.

    Raises:
        RunError: the file is unreadable or names a class the run does not have.
    """
    rows = read_split(run_dir, split)
    if rows is None:
        return None
    index = {name: i for i, name in enumerate(class_names)}
    samples = []
    for row in rows:
        names = [name for name in row.label.split(separator) if name] if separator is not None else [row.label]
        unknown = next((name for name in names if name not in index), None)
        if unknown is not None:
            raise RunError(f"{Path(run_dir) / 'splits' / f'{split}.csv'}: label {unknown!r} is not in labels.json")
        label = tuple(sorted(index[name] for name in names)) if separator is not None else index[row.label]
        samples.append(Sample(Path(row.path), label, row.relpath))
    return samples


FINGERPRINT_VERSION = (
    2  # 2: the labels are part of it (a relabelled manifest is another dataset); 1: split, path, content
)


def dataset_fingerprint(rows: Iterable[tuple[str, str, str, str]], version: int = FINGERPRINT_VERSION) -> str:
    """dataset.json's `fingerprint`: a hash of (split, relative path, label, content hash) of every readable image, per
    split by path.

    Version 1 (runs written before labels counted) leaves the label out.
    """
    fingerprint = hashlib.sha256()
    for split, relpath, label, content_hash in rows:
        fields = (split, relpath, label, content_hash) if version >= 2 else (split, relpath, content_hash)
        fingerprint.update(("\0".join(fields) + "\n").encode())
    return fingerprint.hexdigest()


def fingerprint_rows(splits: DataSplits, screened: dict[str, ScreenedSplit]) -> list[tuple[str, str, str, str]]:
    return [
        (split, sample.relpath, splits.label_name(sample.label), content_hash)
        for split, kept in screened.items()
        for sample, content_hash in sorted(zip(kept.samples, kept.content_hashes), key=lambda pair: pair[0].relpath)
    ]


def write_dataset_record(run_dir: Path, splits: DataSplits, screened: dict[str, ScreenedSplit]) -> None:
    record = {
        "fingerprint": dataset_fingerprint(fingerprint_rows(splits, screened)),
        "fingerprint_version": FINGERPRINT_VERSION,
        "class_names": splits.class_names,
        "sources": splits.sources,
        "counts": {split: class_counts(kept.labels, splits.class_names) for split, kept in screened.items()},
        "ignored_files": [{"path": p, "reason": r} for p, r in splits.ignored],
    }
    write_json_atomic(run_dir / "dataset.json", record)


def class_counts(labels: np.ndarray, class_names: list[str]) -> dict[str, int]:
    """Images of each class in a label array (multi-label 0/1 rows: images that have the class)."""
    if labels.ndim == 2:
        return {name: int(labels[:, i].sum()) for i, name in enumerate(class_names)}
    return {name: int((labels == i).sum()) for i, name in enumerate(class_names)}


def recorded_fingerprint(run_dir: Path) -> tuple[str, int] | None:
    """(fingerprint, version) from dataset.json, or None when the run stopped before its first pass over the files."""
    try:
        record = read_json(Path(run_dir) / "dataset.json")
        return str(record["fingerprint"]), int(record.get("fingerprint_version", 1))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def environment(devices: dict[str, Any], seed: int) -> dict[str, Any]:
    """env.json: versions, devices, seed, git state and the command line."""
    import keras
    import numpy
    import tensorflow as tf

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "tlcli": __version__,
        "devices": devices,
        "seed": seed,
        "git": git_state(Path.cwd()),
        "command": [redact_uri(arg) for arg in sys.argv],  # a tracking URI's password stays out of the run folder
    }


def git_state(folder: Path) -> dict[str, Any] | None:
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain"], capture_output=True, text=True, timeout=5
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None
