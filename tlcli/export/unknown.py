"""The run's rule for images of no class, carried into an export (docs/guides/unknown-images.md).

The artifacts keep giving the model's own (uncalibrated) probabilities. `export.json`'s `unknown` gives the
temperature, the formula, the score with its parameters and the threshold. The artifacts output probabilities only,
so they can reject by a score computed from probabilities (`msp`): then the export folder holds a copy of the run's
`unknown.json` (its validation scores: `--accept` moves the threshold here too) and `tlcli predict --model` applies
it. With a score that needs the logits or the pooled features (`energy`, `knn`, `mahalanobis`, `knn_energy`),
export.json says so (`rejects: false`, `why`) and `predict --model` predicts as before (the run's `tlcli predict`
rejects).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tlcli.inference.unknown import UNKNOWN_FILE, UnknownRule, logits_of_probabilities, read_unknown_rule, score_images

FROM_PROBABILITIES = ("msp",)  # the scores an artifact's probabilities give
NEEDS = {"energy": "logits", "knn_energy": "pooled features and logits"}  # what the others need (else features)


def unknown_record(rule: UnknownRule | None) -> dict[str, Any] | None:
    """export.json's `unknown`: the rule without its validation scores, and whether the artifacts can apply it."""
    if rule is None:
        return None
    rejects = rule.score in FROM_PROBABILITIES
    record = {**rule.summary(), "applied_by": "tlcli predict --model", "rejects": rejects}
    if rejects:
        record["file"] = UNKNOWN_FILE  # beside the artifacts: its validation scores move the threshold (--accept)
    else:
        record["why"] = (
            f"score {rule.score} needs the model's {NEEDS.get(rule.score, 'pooled features')}, "
            "and the artifacts output probabilities only: predict with the run to reject unknown images, or train "
            "with predict.unknown.score: msp"
        )
    return record


def copy_rule(rule: UnknownRule | None, export_dir: Path) -> None:
    """The run's unknown.json into the export folder, when the artifacts can apply it."""
    if rule is not None and rule.run_dir is not None and rule.score in FROM_PROBABILITIES:
        shutil.copyfile(Path(rule.run_dir) / UNKNOWN_FILE, Path(export_dir) / UNKNOWN_FILE)


def artifact_rule(folder: Path, record: dict[str, Any] | None) -> UnknownRule | None:
    """The rule an artifact in `folder` applies (None: no rule, or one its probabilities cannot give)."""
    if not record or not record.get("rejects"):
        return None
    rule = read_unknown_rule(folder)
    return rule if rule is not None and rule.score in FROM_PROBABILITIES else None


def probability_rows(probabilities):
    """An artifact's `(images, batch_size) -> probabilities` as the rows a rule judges (log-probabilities)."""
    return lambda images, batch_size: logits_of_probabilities(probabilities(images, batch_size))


def decision_agreement(rule: UnknownRule | None, reference: np.ndarray, probabilities: np.ndarray) -> float | None:
    """The share of images the artifact accepts or rejects as the run does (None: the artifacts cannot reject)."""
    if rule is None or rule.score not in FROM_PROBABILITIES:
        return None
    run = rule.accepts(score_images(rule.score, logits_of_probabilities(reference), temperature=rule.temperature))
    own = rule.accepts(score_images(rule.score, logits_of_probabilities(probabilities), temperature=rule.temperature))
    return float((run == own).mean())
