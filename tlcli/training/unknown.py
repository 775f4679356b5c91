"""Training's step for images of no class: the run's `unknown.json` and the training features beside it.

Taken after the phases are fitted and BEFORE any refit on train + validation (`tlcli.training.head_policy`): the
temperature and the threshold come from validation outputs of a model that was not fitted on them (after a refit
they would be in-sample, as multi-label thresholds would). The pooled features do not change in a refit (it fits the
head only), so the training images' features stored here are the final model's: after fine-tuning, the fine-tuned
base's, computed again here (docs/guides/unknown-images.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlcli.evaluation.calibration import calibration_errors, fit_temperature
from tlcli.inference.outputs import head_logits
from tlcli.inference.unknown import (
    KNN_K,
    STANDARDISE,
    UNKNOWN_FEATURES_FILE,
    UNKNOWN_FILE,
    FeatureBank,
    UnknownRule,
    score_images,
    standardisation,
    threshold_at,
)
from tlcli.progress import Reporter
from tlcli.runs.atomic import write_json_atomic
from tlcli.training.inputs import PhaseInputs
from tlcli.training.selection import POOL

MIN_VALIDATION = 2  # fewer validation images: no temperature, no threshold


def why_not_recorded(inputs: PhaseInputs, chief: bool) -> str | None:
    """Why this run writes no unknown.json (None: it does)."""
    if inputs.config.multi_label:
        return "multi-label runs keep their per-label thresholds and reject nothing"
    if len(inputs.splits.val) < MIN_VALIDATION:
        return f"fewer than {MIN_VALIDATION} validation images"
    return None if chief else "another worker of the cluster: the chief writes it"


def record_unknown(inputs: PhaseInputs, run_dir: Path, reporter: Reporter, chief: bool = True) -> UnknownRule | None:
    """Fit the temperature, score the validation images and set the threshold; write unknown.json and the
    training features (None, and said, when `why_not_recorded`)."""
    why = why_not_recorded(inputs, chief)
    if why is not None:
        if chief and not inputs.config.multi_label:
            reporter.info(f"no rejection of unknown images: {why}")
        return None
    config = inputs.config.predict.unknown
    logits, pooled = _validation_outputs(inputs)
    labels = inputs.splits.val.labels
    temperature = fit_temperature(logits, labels)
    before, after = calibration_errors(logits, labels, temperature)
    bank = FeatureBank.of(inputs.features(POOL, "train"), inputs.splits.train.labels, inputs.config.seed)
    statistics = standardisation(logits, pooled, bank, temperature)  # whatever the score: evaluate compares them all
    scores = np.asarray(score_images(config.score, logits, pooled, bank, temperature, statistics), dtype=np.float64)
    rule = UnknownRule(
        score=config.score,
        temperature=temperature,
        accept=config.accept,
        threshold=threshold_at(scores, config.accept),
        validation_scores=tuple(float(s) for s in scores),
        ece_before=before,
        ece_after=after,
        params=_params(config.score, bank, statistics),
    )
    rule = _with_portable(rule, logits)
    bank.save(run_dir / UNKNOWN_FEATURES_FILE)
    write_json_atomic(run_dir / UNKNOWN_FILE, rule.to_dict())
    reporter.info(_described(rule, bank, run_dir))
    return rule


def _validation_outputs(inputs: PhaseInputs) -> tuple[np.ndarray, np.ndarray]:
    """The validation images' logits and pooled features with the current weights (before any refit)."""
    pooled = np.asarray(inputs.features(POOL, "val"), dtype=np.float32).reshape(len(inputs.splits.val), -1)
    return head_logits(inputs.model, pooled, inputs.binary), pooled


def _with_portable(rule: UnknownRule, logits: np.ndarray) -> UnknownRule:
    """The rule with the msp rule from the same validation outputs, for exports of a run whose score needs more than
    the probabilities the artifacts output (unchanged: the run's score is msp already)."""
    if rule.score == "msp":
        return rule
    scores = np.asarray(score_images("msp", logits, temperature=rule.temperature), dtype=np.float64)
    return rule.with_portable(threshold_at(scores, rule.accept), tuple(float(s) for s in scores))


def _params(score: str, bank: FeatureBank, statistics: dict) -> dict:
    found = {"features": "pooled, L2-normalised", "bank_images": len(bank.features), "file": UNKNOWN_FEATURES_FILE}
    if score in ("knn", "knn_energy"):
        found["k"] = min(KNN_K, len(bank.features))
    return found | {STANDARDISE: statistics}  # the validation mean and std of knn and energy (knn_energy's)


def _described(rule: UnknownRule, bank: FeatureBank, run_dir: Path) -> str:
    size = (run_dir / UNKNOWN_FEATURES_FILE).stat().st_size / 1e6
    return (
        f"unknown images: temperature {rule.temperature:.3f} (validation ECE {rule.ece_before:.3f} -> "
        f"{rule.ece_after:.3f}); score {rule.score}, threshold {rule.threshold:.4g} accepts {rule.accept:.0%} of "
        f"validation; {len(bank.features)} training images' features in {UNKNOWN_FEATURES_FILE} ({size:.1f} MB)"
    )
