"""Evaluated images that are near-copies of training images, and the figures without them.

Training searched its splits for near-duplicates on the features it cached (`data_trust.json`, written by the run's
data-trust step); an evaluation of the run's own validation or test images reads the pairs from there, so it needs
no embedding and no training image. Images the run did not list (another folder) were not searched: the record says
so, and `tlcli check --deep` with the training folder beside them finds their copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlcli.audit.report import read_audit_report
from tlcli.errors import RunError
from tlcli.runs.folder import TRUST_FILE
from tlcli.runs.provenance import read_split


@dataclass(frozen=True)
class TrainingCopies:
    """Which evaluated images have a near-duplicate among the training images (`copies[i]` is a copy of
    `partners[i]`), or why that is not known (`why`)."""

    copies: tuple[str, ...] = ()
    partners: tuple[str, ...] = ()
    why: str | None = None

    @property
    def known(self) -> bool:
        return self.why is None


def training_copies(run_dir: Path, evaluated: Sequence[str]) -> TrainingCopies:
    """The evaluated images with a confirmed near-duplicate in the run's training split, from data_trust.json (a
    damaged one: not known, and why)."""
    run_dir = Path(run_dir)
    try:
        report = read_audit_report(run_dir / TRUST_FILE) if (run_dir / TRUST_FILE).is_file() else None
    except RunError as exc:
        return TrainingCopies(why=str(exc))
    if report is None or report.near_duplicates is None:
        return TrainingCopies(why="the run searched no near-duplicates (older run, data.leakage: off, or skipped)")
    searched = {row.path for split in ("val", "test") for row in read_split(run_dir, split) or ()}
    unsearched = [path for path in evaluated if str(path) not in searched]
    if unsearched:
        return TrainingCopies(
            why=f"{len(unsearched)} image(s) are not the run's own validation or test files (e.g. {unsearched[0]}); "
            "`tlcli check --deep` with the training folder finds their copies"
        )
    wanted = {str(path) for path in evaluated}
    found: dict[str, str] = {}
    for pair in report.near_duplicates.confirmed:
        for copy, split_copy, partner, split_partner in (
            (pair.a, pair.split_a, pair.b, pair.split_b),
            (pair.b, pair.split_b, pair.a, pair.split_a),
        ):
            if copy in wanted and split_partner == "train" and split_copy != "train":
                found.setdefault(copy, partner)
    return TrainingCopies(tuple(found), tuple(found.values()))


def copies_record(copies: TrainingCopies, paths: Sequence[str], correct: np.ndarray | None) -> dict[str, Any]:
    """metrics.json's `training_copies`: the copies and their partners, and the accuracy with and without them
    (`correct`: each evaluated image's top-1 hit; None for multi-label)."""
    if not copies.known:
        return {"known": False, "why": copies.why}
    record: dict[str, Any] = {
        "known": True,
        "images": len(copies.copies),
        "pairs": [{"image": c, "training_image": p} for c, p in zip(copies.copies, copies.partners)],
        "source": TRUST_FILE,
    }
    if correct is not None and len(correct):
        near = set(copies.copies)
        keep = np.array([str(path) not in near for path in paths])
        record["accuracy"] = round(float(np.mean(correct)), 6)
        record["accuracy_without"] = round(float(np.mean(correct[keep])), 6) if keep.any() else None
    return record
