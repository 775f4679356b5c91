"""The run's rule for images of no class, carried into an export (docs/guides/unknown-images.md).

The artifacts keep giving the model's own (uncalibrated) probabilities. `export.json`'s `unknown` gives the
temperature, the formula, the score with its parameters and the threshold. The artifacts output probabilities only,
so they reject by a score computed from probabilities (`msp`): the export folder holds the rule they apply as its
`unknown.json` (with its validation scores: `--accept` moves the threshold here too) and `tlcli predict --model`
applies it. A run whose score needs the logits or the pooled features (`energy`, `knn`, `mahalanobis`,
`knn_energy`) recorded, from the same held-out validation outputs, an msp rule at the same accept fraction
(`portable`): its exports reject by that, and export.json names both scores (`in_place_of`). Only a run recorded
without it exports without rejection (`rejects: false`, `why`), and `predict --model` then predicts as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlcli.inference.unknown import UNKNOWN_FILE, UnknownRule, logits_of_probabilities, read_unknown_rule, score_images
from tlcli.runs.atomic import write_json_atomic

FROM_PROBABILITIES = ("msp",)  # the scores an artifact's probabilities give
NEEDS = {"energy": "logits", "knn_energy": "pooled features and logits"}  # what the others need (else features)


def exported_rule(rule: UnknownRule | None) -> UnknownRule | None:
    """The rule an export's artifacts apply: the run's own when its score comes from probabilities, else the msp
    rule the run recorded for its exports (None: no rule, or none they can apply)."""
    if rule is None or rule.score in FROM_PROBABILITIES:
        return rule
    return rule.portable


def unknown_record(rule: UnknownRule | None, applied: UnknownRule | None) -> dict[str, Any] | None:
    """export.json's `unknown`: the rule the artifacts apply (`applied`, the run's `rule` as `exported_rule` gives
    it) without its validation scores (and the run's own score when it is another), or why they apply none."""
    if rule is None:
        return None
    if applied is None:
        return {
            **rule.summary(),
            "applied_by": "tlcli predict --model",
            "rejects": False,
            "why": (
                f"score {rule.score} needs the model's {NEEDS.get(rule.score, 'pooled features')}, "
                "and the artifacts output probabilities only: predict with the run to reject unknown images, or train "
                "with predict.unknown.score: msp"
            ),
        }
    record = {**applied.summary(), "applied_by": "tlcli predict --model", "rejects": True, "file": UNKNOWN_FILE}
    if applied is not rule:
        record["why"] = (
            f"the run rejects by {rule.score}, which needs more than the probabilities the artifacts output; they "
            f"reject by msp, its threshold chosen on the same validation images to accept {rule.accept:.0%} of them"
        )
    return record


def copy_rule(applied: UnknownRule | None, export_dir: Path) -> None:
    """The rule the artifacts apply (`exported_rule`'s), as the export folder's unknown.json."""
    if applied is not None:
        write_json_atomic(Path(export_dir) / UNKNOWN_FILE, applied.to_dict())


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
