"""`evaluate`'s figures of the run's rule for images of no class (metrics.json's `unknown`).

The headline figures stay over all images; this adds the share of images the rule accepts (`coverage`) and the
accuracy on them, the calibration error before and after the temperature on these images and, given a folder of
images of no class (`unknown_dir`), how well the score tells them apart (`auroc`, and `auroc_by_score` for every
candidate score this model can give, `auroc_omitted` saying why for the others) and the share of them accepted at
the threshold (`false_accept_rate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tlcli.data.listing import collect_images
from tlcli.errors import DataError, UserError
from tlcli.evaluation.calibration import calibration_errors
from tlcli.inference.predict import ModelSource, decode_stream
from tlcli.inference.unknown import (
    COMBINED,
    FEATURE_SCORES,
    SCORES,
    UNKNOWN_FEATURES_FILE,
    FeatureBank,
    UnknownRule,
    calibrated,
    score_images,
)
from tlcli.progress import Reporter


def judged_probabilities(
    source: ModelSource,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    unknown_dir: str | Path | None = None,
    reporter: Reporter | None = None,
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The evaluated images' probabilities (calibrated under the source's rule) and the `unknown` record (None: no
    rule, so the probabilities are the model's own).

    Raises:
        UserError: `unknown_dir` for a model without a rule.
        DataError: an `unknown_dir` with no image that decodes.
    """
    rule = source.unknown
    if rule is None:
        if unknown_dir is not None:
            raise UserError(
                "unknown_dir: this model has no rule for unknown images (a multi-label run, a run trained before "
                "it, or rejection turned off); train the run again to measure it"
            )
        return source.probabilities(images, batch_size), None
    known, bank = _Outputs.of(source, images, batch_size), _bank(source)
    record = _figures(rule, known, np.asarray(labels, dtype=np.int64), bank)
    if unknown_dir is not None:
        pixels = decode_folder(unknown_dir, source, reporter)
        record |= _separation(rule, known, _Outputs.of(source, pixels, batch_size), bank)
    return calibrated(known.logits, rule.temperature), record


class _Outputs:
    """A model's logits and pooled features of some images (features None: an exported artifact, whose logits are
    the log of its probabilities)."""

    def __init__(self, logits: np.ndarray, features: np.ndarray | None):
        self.logits, self.features = logits, features

    @classmethod
    def of(cls, source: ModelSource, images: np.ndarray, batch_size: int) -> _Outputs:
        rows = source.outputs(images, batch_size)
        classes = len(source.class_names)
        return cls(rows[:, :classes], rows[:, classes:] if rows.shape[1] > classes else None)

    def scores(self, name: str, rule: UnknownRule, bank: FeatureBank | None) -> np.ndarray | None:
        """Score `name` of these images, or None when this model cannot give it (`why_not`)."""
        if self.why_not(name, rule, bank) is not None:
            return None
        return score_images(name, self.logits, self.features, bank, rule.temperature, rule.standardise)

    def why_not(self, name: str, rule: UnknownRule, bank: FeatureBank | None) -> str | None:
        """Why this model cannot give score `name` (None: it can)."""
        if self.features is None and name != "msp":  # log-probabilities: no energy, no features
            return "an exported model outputs probabilities only: msp alone"
        if name in FEATURE_SCORES and bank is None:
            return f"no {UNKNOWN_FEATURES_FILE} (the training images' features) beside the run"
        missing = [part for part in COMBINED.get(name, ()) if part not in (rule.standardise or {})]
        if missing:  # not derivable from the stored record: the validation logits and features are not kept
            return (
                f"unknown.json has no validation mean and standard deviation of {' and '.join(missing)} "
                f"(a run trained before {name}): train the run again to measure it"
            )
        return None


def _figures(rule: UnknownRule, known: _Outputs, labels: np.ndarray, bank: FeatureBank | None) -> dict[str, Any]:
    scores = score_images(rule.score, known.logits, known.features, bank, rule.temperature, rule.standardise)
    accepted = rule.accepts(scores)
    correct = known.logits.argmax(axis=1) == labels
    before, after = calibration_errors(known.logits, labels, rule.temperature)
    return {
        "score": rule.score,
        "params": dict(rule.params),
        "temperature": rule.temperature,
        "formula": rule.to_dict()["formula"],
        "ece_before": before,
        "ece_after": after,
        "accept": rule.accept,
        "threshold": rule.threshold,
        "images": int(len(labels)),
        "accepted": int(accepted.sum()),
        "coverage": _share(accepted),
        "accuracy_all": _share(correct),
        "accuracy_accepted": _share(correct[accepted]) if accepted.any() else None,
    }


def _separation(rule: UnknownRule, known: _Outputs, unknown: _Outputs, bank: FeatureBank | None) -> dict[str, Any]:
    """AUROC of telling the evaluated images (positive) from the unknown ones, and the unknown ones accepted."""
    by_score, omitted = {}, {}
    for name in SCORES:
        why = known.why_not(name, rule, bank) or unknown.why_not(name, rule, bank)
        if why is not None:
            omitted[name] = why
            continue
        by_score[name] = auroc(known.scores(name, rule, bank), unknown.scores(name, rule, bank))
    chosen = unknown.scores(rule.score, rule, bank)
    return {
        "n_unknown": int(len(unknown.logits)),
        "auroc": by_score.get(rule.score),
        "false_accept_rate": _share(rule.accepts(chosen)) if chosen is not None else None,
        "auroc_by_score": by_score,
        "auroc_omitted": omitted,
    }


def auroc(inside: np.ndarray, outside: np.ndarray) -> float | None:
    """The area under the ROC curve of telling `inside` scores (higher) from `outside` ones (None: one side empty)."""
    if not len(inside) or not len(outside):
        return None
    from sklearn.metrics import roc_auc_score

    truth = np.concatenate([np.ones(len(inside)), np.zeros(len(outside))])
    return round(float(roc_auc_score(truth, np.concatenate([inside, outside]))), 6)


def decode_folder(folder: str | Path, source: ModelSource, reporter: Reporter | None = None) -> np.ndarray:
    """Every image under `folder` (recursively) decoded at the model's size; unreadable files are skipped, said.

    Raises:
        DataError: no image under it decodes.
    """
    paths = list(collect_images([str(folder)]))
    decoded = decode_stream(paths, source.image_size, source.channels, None, 64, source.max_bytes)
    pixels = [result for _, result in decoded if not isinstance(result, str)]
    if len(pixels) < len(paths) and reporter is not None:
        reporter.warn(f"unknown_dir: {len(paths) - len(pixels)} of {len(paths)} files could not be decoded; skipped")
    if not pixels:
        raise DataError(f"unknown_dir: none of the {len(paths)} files under {folder} could be decoded")
    return np.stack(pixels)


def _bank(source: ModelSource) -> FeatureBank | None:
    """The training features for every feature-space score (the run's, when its folder holds them)."""
    if source.bank is not None:
        return source.bank.with_statistics()
    folder = source.unknown.run_dir if source.unknown is not None else None
    path = Path(folder) / UNKNOWN_FEATURES_FILE if folder is not None else None
    return FeatureBank.load(path).with_statistics() if path is not None and path.is_file() else None


def _share(flags: np.ndarray) -> float:
    return round(float(np.mean(flags)), 6) if len(flags) else 0.0
