"""From a data folder to the listed files of each split (nothing is decoded here).

`discover_splits` finds the train / validation / test folders and lists the
image files of every class. Without a validation folder, a `val_split`
fraction of the training files is held out, chosen by a hash of each file's
relative path (with `data.group`, of its group's name: `tlcli.data.groups`), so
adding images never moves existing ones between splits.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tlcli.config.schema import DataConfig
from tlcli.data.groups import assign_groups, ungrouped_warning
from tlcli.data.listing import list_class_files
from tlcli.data.manifest import read_manifest
from tlcli.errors import DataError

VALIDATION_FOLDER_NAMES = ("val", "validation", "valid")
TEST_FOLDER_NAMES = ("test",)
TRAIN_FOLDER_NAMES = ("train", "training")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One image file and its class index (a multi-label manifest: a tuple of class indices, maybe empty);
    `relpath` is relative to its split folder (a manifest's path as written).

    `row`: the file's row in the manifest it came from (None for class folders); `group`: the group `data.group`
    names for it (None: unset, or the file has none), which the hash split and grouped folds keep whole.
    """

    path: Path
    label: int | tuple[int, ...]
    relpath: str
    row: int | None = None
    group: str | None = None

    @property
    def split_key(self) -> str:
        """What the hash split hashes: the group's name, else the relative path."""
        return self.relpath if self.group is None else self.group


def label_array(samples: Sequence[Sample], num_classes: int | None = None) -> np.ndarray:
    """The labels of `samples` for Keras: (n,) int32 class indices, or for multi-label samples (n, classes) 0/1
    uint8."""
    if samples and isinstance(samples[0].label, tuple):
        if num_classes is None:
            raise ValueError("multi-label samples need the number of classes")
        hot = np.zeros((len(samples), num_classes), dtype=np.uint8)
        for row, sample in enumerate(samples):
            hot[row, list(sample.label)] = 1
        return hot
    return np.fromiter((s.label for s in samples), dtype=np.int32, count=len(samples))


@dataclass
class DataSplits:
    """The listed (not yet decoded) files of each split, and where they came from."""

    class_names: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    warnings: list[str] = field(default_factory=list)
    bad_rows: list = field(default_factory=list)  # a manifest's skipped rows (`tlcli.data.manifest.BadRow`)
    multi_label: bool = False
    separator: str = "|"

    def label_name(self, label: int | tuple[int, ...]) -> str:
        """A sample's label as people and CSV files write it: the class name, or `a|b` (empty: no label)."""
        if isinstance(label, tuple):
            return self.separator.join(self.class_names[i] for i in label)
        return self.class_names[label]

    def listed(self) -> list[tuple[str, list[Sample]]]:
        """(split, samples) for train, val, and test when there is one."""
        return [(split, getattr(self, split)) for split in SPLITS if split != "test" or self.test]

    def counts(self, split: str) -> dict[str, int]:
        """Images of each class in `split` (multi-label: images that have the label)."""
        counter = Counter(
            index
            for sample in getattr(self, split)
            for index in (sample.label if isinstance(sample.label, tuple) else (sample.label,))
        )
        return {name: counter.get(index, 0) for index, name in enumerate(self.class_names)}

    def describe(self) -> str:
        parts = [
            f"{len(self.class_names)} classes",
            f"train {len(self.train)} ({self.sources['train']})",
            f"val {len(self.val)} ({self.sources['val']})",
        ]
        if self.test:
            parts.append(f"test {len(self.test)} ({self.sources['test']})")
        return ", ".join(parts)


def discover_splits(config: DataConfig, seed: int = 0) -> DataSplits:
    """Find the splits of `config` and list their files.

    `data.dir` is either a folder of class folders, or a parent holding
    `train/` plus `val/` / `validation/` (and optionally `test/`). Explicit
    `train_dir` / `val_dir` / `test_dir` win. Without a validation folder, a
    `val_split` fraction of the training files is held out, chosen by a hash
    of each file's relative path (stable as the folder grows; `seed` is not
    used, on purpose).

    Raises:
        DataError: a folder is missing, has fewer than two classes, a class has
            no images, or validation/test hold a class training does not.
    """
    if config.manifest is not None:
        return manifest_splits(config)
    train_dir, val_dir, test_dir, sources = _locate_folders(config)
    ignored: list[tuple[str, str]] = []
    train_files = list_class_files(train_dir, _key_for(config, "train"), ignored)
    class_names = sorted(train_files)
    if len(class_names) < 2:
        found = f"only class '{class_names[0]}'" if class_names else "no class folders"
        raise DataError(
            f"{_key_for(config, 'train')}: {train_dir} has {found}; a classifier needs at least two class "
            "folders with images"
        )
    empty = [name for name in class_names if not train_files[name]]
    if empty:
        raise DataError(
            f"{_key_for(config, 'train')}: class folder '{empty[0]}' in {train_dir} has no images; add images "
            "or remove the folder"
        )
    index = {name: i for i, name in enumerate(class_names)}
    train = [Sample(path, index[name], rel) for name in class_names for path, rel in train_files[name]]
    warnings: list[str] = []
    val = _split_samples(val_dir, _key_for(config, "val"), index, ignored) if val_dir is not None else []
    test = _split_samples(test_dir, _key_for(config, "test"), index, ignored) if test_dir is not None else []
    if config.group is not None:
        train, val, test = (assign_groups(samples, config.group) for samples in (train, val, test))
        ungrouped = [s.relpath for samples in (train, val, test) for s in samples if s.group is None]
        warning = ungrouped_warning(ungrouped, len(train) + len(val) + len(test), f"pattern '{config.group}'")
        warnings += [warning] if warning else []
    if val_dir is None:
        train, val = hash_split(train, config.val_split)
        by = "file hash" if config.group is None else "group hash (data.group)"
        sources["val"] = f"{config.val_split:.0%} of train by {by}"
    splits = DataSplits(class_names, train, val, test, sources, ignored, warnings)
    for split in ("train", "val"):
        missing = [name for name, count in splits.counts(split).items() if count == 0]
        if missing:
            warnings.append(f"{split} has no images of class {', '.join(missing)}")
    if not val:
        raise DataError(f"{_key_for(config, 'val')}: no validation images; add a val/ folder or raise data.val_split")
    return splits


def _key_for(config: DataConfig, split: str) -> str:
    explicit = getattr(config, f"{split}_dir")
    return f"data.{split}_dir" if explicit is not None else "data.dir"


def _locate_folders(config: DataConfig) -> tuple[Path, Path | None, Path | None, dict[str, str]]:
    root = config.dir
    train_dir = val_dir = test_dir = None
    sources: dict[str, str] = {}
    if root is not None:
        if not root.is_dir():
            raise DataError(f"data.dir: folder not found: {root}")
        train_dir = _child(root, TRAIN_FOLDER_NAMES)
        if train_dir is not None:
            val_dir = _child(root, VALIDATION_FOLDER_NAMES)
            test_dir = _child(root, TEST_FOLDER_NAMES)
        else:
            train_dir = root
    for split in SPLITS:
        explicit = getattr(config, f"{split}_dir")
        if explicit is not None:
            if not explicit.is_dir():
                raise DataError(f"data.{split}_dir: folder not found: {explicit}")
            if split == "train":
                train_dir = explicit
            elif split == "val":
                val_dir = explicit
            else:
                test_dir = explicit
    for split, folder in (("train", train_dir), ("val", val_dir), ("test", test_dir)):
        if folder is not None:
            sources[split] = str(folder)
    assert train_dir is not None
    return train_dir, val_dir, test_dir, sources


def _child(root: Path, names: Sequence[str]) -> Path | None:
    by_lower = {entry.name.lower(): entry for entry in root.iterdir() if entry.is_dir()}
    for name in names:
        if name in by_lower:
            return by_lower[name]
    return None


def _split_samples(folder: Path, key: str, index: dict[str, int], ignored: list[tuple[str, str]]) -> list[Sample]:
    files = list_class_files(folder, key, ignored)
    unknown = [name for name in files if name not in index]
    if unknown:
        raise DataError(
            f"{key}: class folder '{unknown[0]}' in {folder} is not a training class ({', '.join(index)}); "
            "rename or remove it"
        )
    return [Sample(path, index[name], rel) for name in sorted(files) for path, rel in files[name]]


def hash_split(samples: list[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """Split by a hash of each relative path (a grouped sample: of its group's name, so a group goes whole): a file's
    side never changes as files are added."""
    train, val = [], []
    for sample in samples:
        (val if split_bucket(sample.split_key) < fraction else train).append(sample)
    return train, val


def split_bucket(relpath: str) -> float:
    digest = hashlib.sha1(relpath.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def manifest_splits(config: DataConfig) -> DataSplits:
    """The splits of a CSV manifest (`tlcli.data.manifest`): its split column, else the hash split of the path as
    written.

    Within a split, files are ordered by class then path, as class folders list them.

    Raises:
        DataError: what `read_manifest` raises; fewer than two training classes; a label in val/test that train lacks.
    """
    manifest = read_manifest(config)
    where = str(manifest.source)
    _check_usable(manifest.rows, manifest.bad, where)
    listed = {split: [row for row in manifest.rows if row.split == split] for split in SPLITS}
    unsplit = [row for row in manifest.rows if not row.split]
    held = (
        {row.row for row in unsplit if split_bucket(row.split_key) < config.val_split} if not listed["val"] else set()
    )
    listed["train"] += [row for row in unsplit if row.row not in held]
    listed["val"] += [row for row in unsplit if row.row in held]
    class_names = (
        list(config.label_columns)
        if config.label_columns
        else sorted({label for row in listed["train"] for label in row.labels})
    )
    if len(class_names) < 2:
        raise DataError(
            f"data.manifest: {where} has "
            f"{'only label ' + repr(class_names[0]) if class_names else 'no training rows'}; a classifier "
            "needs at least two labels"
        )
    index = {name: i for i, name in enumerate(class_names)}
    samples = {}
    for split, rows in listed.items():
        unknown = next(((row, label) for row in rows for label in row.labels if label not in index), None)
        if unknown is not None:
            hint = (
                "; several labels an image? set data.multi_label: true"
                if not config.multi_label and config.label_separator in unknown[1]
                else ""
            )
            raise DataError(
                f"data.manifest: row {unknown[0].row} of {where} labels a {split} file {unknown[1]!r}, which "
                f"no training row has ({', '.join(class_names)}){hint}"
            )
        samples[split] = sorted(
            (
                Sample(row.path, _indices(row, index, config.multi_label), row.written, row.row, row.group)
                for row in rows
            ),
            key=lambda s: (s.label, s.relpath),
        )
    sources = {
        split: f"{where} (split column)" if any(row.split == split for row in manifest.rows) else where
        for split in SPLITS
        if samples[split]
    }
    if held:
        sources["val"] = f"{config.val_split:.0%} of {where} by {'path' if config.group is None else 'group'} hash"
    splits = DataSplits(
        class_names,
        samples["train"],
        samples["val"],
        samples["test"],
        sources,
        bad_rows=manifest.bad,
        multi_label=config.multi_label,
        separator=config.label_separator,
    )
    splits.warnings += _manifest_warnings(class_names, manifest, config)
    if not splits.val:
        raise DataError("data.manifest: no validation rows; give some rows split val, or raise data.val_split")
    return splits


def _manifest_warnings(class_names: list[str], manifest, config: DataConfig) -> list[str]:
    """A label that looks like several joined, rows `data.group` names no group for, skipped rows."""
    warnings = []
    joined = (
        next((name for name in class_names if config.label_separator in name), None) if not config.multi_label else None
    )
    if joined is not None:
        warnings.append(
            f"label {joined!r} looks like several labels joined by {config.label_separator!r}; if images have "
            "several labels, set data.multi_label: true"
        )
    if manifest.ungrouped:
        warnings.append(manifest.ungrouped)
    if manifest.bad:
        warnings.append(
            f"{len(manifest.bad)} manifest row{'s' if len(manifest.bad) > 1 else ''} skipped (listed in "
            f"data_problems.json), e.g. row {manifest.bad[0].row}: {manifest.bad[0].problem}"
        )
    return warnings


def _check_usable(rows: list, bad: list, where: str) -> None:
    """Refuse a manifest of which under 1% of the rows can be used: it is the wrong file or the wrong folder, not data
    with a few problems (the bad rows would be trained past and only listed)."""
    total = len(rows) + len(bad)
    if bad and len(rows) * 100 < total:
        raise DataError(
            f"data.manifest: only {len(rows)} of {total} rows of {where} are usable (under 1%), e.g. row "
            f"{bad[0].row}: {bad[0].problem}; is it the right manifest? (`tlcli check --manifest` lists the rows)"
        )


def _indices(row, index: dict[str, int], multi_label: bool) -> int | tuple[int, ...]:
    return tuple(sorted(index[label] for label in row.labels)) if multi_label else index[row.label]
