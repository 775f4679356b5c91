"""Groups of images that must stay on one side of every split (`data.group`): a patient, a product, a video.

A group is named by a manifest column, or by a regular expression searched in each file's relative path (its first
capture group, else the whole match). The hash split hashes the group's name instead of the file's path, so a
group's side depends only on its name: whole groups move together, and adding groups never moves existing ones.
A file the pattern does not match (an empty cell) has no group: it is split on its own, as without `data.group`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from tlcli.errors import DataError

if TYPE_CHECKING:  # splits imports this module
    from tlcli.data.splits import Sample

KEY = "data.group"
SHOWN_FILES = 3  # files named per crossing group (a group of thousands needs no full list to be fixed)


def match_group(pattern: re.Pattern[str], path: str) -> str | None:
    """The group `pattern` names in `path` (its first capture group, else the whole match), or None."""
    found = pattern.search(path)
    if found is None:
        return None
    name = found.group(1) if pattern.groups else found.group(0)
    return name or None  # an empty match (an optional group that took nothing) names no group


def assign_groups(samples: Sequence[Sample], pattern: str) -> list[Sample]:
    """`samples` with the group `pattern` names in each relative path (None where it matches nothing)."""
    compiled = re.compile(pattern)
    return [replace(sample, group=match_group(compiled, sample.relpath)) for sample in samples]


def ungrouped_warning(ungrouped: Sequence[str], total: int, what: str) -> str | None:
    """One line for the files without a group, each split on its own (None: every file has one).

    Raises:
        DataError: no file has a group: the pattern (or the column) is wrong, and a per-file split would pass for a
            group-aware one.
    """
    if not ungrouped:
        return None
    if len(ungrouped) == total:
        raise DataError(
            f"{KEY}: {what} names no group for any of the {total} files (e.g. {ungrouped[0]!r}); fix it, or unset "
            "it for a per-file split"
        )
    return (
        f"{KEY}: {len(ungrouped)} of {total} files have no group ({what} names none, e.g. {ungrouped[0]!r}); each is "
        "split on its own"
    )


def groups_of(samples: Sequence[Sample]) -> list[str] | None:
    """Each sample's group for grouped cross-validation (a file without one: its own path, a group of one), or None
    when no sample has a group (`data.group` unset: plain folds)."""
    if not any(sample.group is not None for sample in samples):
        return None
    return [sample.group if sample.group is not None else f"file:{sample.path}" for sample in samples]


@dataclass(frozen=True)
class CrossingGroup:
    """A group with images in more than one split: its name, its images per split, and a few of its files."""

    group: str
    splits: dict[str, int]
    files: list[dict[str, str]] = field(default_factory=list)  # [{path, split}], at most SHOWN_FILES per split

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "splits": self.splits, "files": self.files}

    def describe(self) -> str:
        """`patient_07: train 3, val 1`."""
        return f"{self.group}: " + ", ".join(f"{split} {n}" for split, n in self.splits.items())


def crossing_groups(listed: Mapping[str, Sequence[Sample]]) -> list[CrossingGroup]:
    """The groups whose images sit in more than one of the `{split: samples}`, by name."""
    members: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for split, samples in listed.items():
        for sample in samples:
            if sample.group is not None:
                members[sample.group][split].append(sample)
    return [
        CrossingGroup(
            name,
            {split: len(files) for split, files in by_split.items()},
            [{"path": str(s.path), "split": split} for split, files in by_split.items() for s in files[:SHOWN_FILES]],
        )
        for name, by_split in sorted(members.items())
        if len(by_split) > 1
    ]


def group_folds(
    labels: np.ndarray, folds: int, seed: int, groups: Sequence[str] | None = None
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """`folds` (fit rows, held-out rows) pairs over `labels`, and the scikit-learn splitter that drew them.

    Stratified by class (multi-label: plain); with `groups` (`groups_of`), no group is ever on both sides of a fold:
    `StratifiedGroupKFold` (multi-label: `GroupKFold`), shuffled by `seed` as the plain ones are.

    Raises:
        DataError: fewer groups than folds.
    """
    import warnings

    from sklearn import model_selection

    if groups is not None and len(set(groups)) < folds:
        raise DataError(f"{KEY}: {folds} folds need at least {folds} groups; the images hold {len(set(groups))}")
    method = fold_method(labels.ndim == 1, groups is not None)
    splitter = getattr(model_selection, method)(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class with fewer images than folds is simply absent from some folds
        pairs = list(splitter.split(np.zeros((len(labels), 1)), labels, groups))
    return pairs, method


def fold_method(stratified: bool, grouped: bool) -> str:
    """The scikit-learn splitter `group_folds` uses: stratified for single-label labels, grouped with `groups`."""
    return ("Stratified" if stratified else "") + ("Group" if grouped else "") + "KFold"
