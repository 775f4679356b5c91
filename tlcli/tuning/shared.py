"""What every trial of a study shares: the kind of its trials, the one extraction of the frozen features, trial 0.

When every searched key leaves the frozen features alone and the config trains the head on a frozen base, the
features are extracted once (`tlcli.training.passes.extract_splits`, through the feature cache) and every trial
trains only a head on them (`tlcli.tuning.objective.HeadTrials`); otherwise every trial trains as a run does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tlcli.config.schema import ExperimentConfig
from tlcli.data.groups import groups_of
from tlcli.data.problems import unusable_reason
from tlcli.errors import UnusableData
from tlcli.features.cut import Cut
from tlcli.progress import Reporter
from tlcli.runs.provenance import class_counts
from tlcli.training.inputs import FeatureInputs
from tlcli.training.passes import extract_splits
from tlcli.training.phases import plan_run
from tlcli.training.prepare import Prepared
from tlcli.tuning.objective import HeadTrials, resolve_folds
from tlcli.tuning.space import SearchSpace, pins


def trial_kind(prepared: Prepared, space: SearchSpace) -> tuple[str, str]:
    """`head` when every trial can train a head on the one extraction (and why), else `full` and why not."""
    plans = plan_run(prepared.model, prepared.config, len(prepared.splits.train))
    first = plans[0]
    if len(plans) > 1:
        return "full", "the config fine-tunes the base"
    if not first.head_alone:
        return "full", first.why
    key = space.head_only()
    if key is not None:
        return "full", f"{key} is searched, which changes more than the head"
    return "head", f"every trial trains a head on the frozen base's cached features ({first.why})"


@dataclass
class SharedExtraction:
    """The study's one extraction: the head trials on it, the feature cache's part, and `train.l2: auto`'s penalty."""

    heads: HeadTrials
    extraction: dict[str, Any]  # tune.json `extraction`: the feature cache's use and the files skipped
    penalty: float | None  # the penalty `train.l2: auto` stands for (None: not auto, or none chosen)


def share_extraction(prepared: Prepared, reporter: Reporter) -> SharedExtraction:
    """The one extraction of the study (through the disk feature cache), and the penalty `train.l2: auto` stands for.

    Raises:
        UnusableData: the extracted splits cannot train a head (a class without images, no validation image).
    """
    features, cache_use = extract_splits(prepared, Cut("pool"), reporter)
    skipped = sum(len(s.skipped) for s in features.values())
    if skipped:
        reporter.warn(f"skipped {skipped} unreadable file{'s' if skipped > 1 else ''} (`tlcli check` lists them)")
    reason = unusable_reason(class_counts(features["train"].labels, prepared.splits.class_names), len(features["val"]))
    if reason is not None:
        raise UnusableData(reason)
    heads = HeadTrials(
        prepared, FeatureInputs(prepared.model, features, Cut("pool"), prepared.config, prepared.num_classes)
    )
    heads.groups = groups_of(features["train"].samples + features["val"].samples)  # in the order folds see them
    heads.folds, how = resolve_folds(
        prepared.config.tune.folds,
        len(features["train"]) + len(features["val"]),
        heads.flipped is not None,
        _smallest_class(features, prepared.splits.class_names),
        len(set(heads.groups)) if heads.groups is not None else None,
    )
    reporter.info(f"trials are scored {how}")
    penalty = None
    if prepared.config.train.l2 == "auto":
        penalty = heads.penalty()
        shown = f"{penalty:.3g}" if penalty is not None else "none (0)"
        reporter.info(
            f"train.l2: auto is the penalty chosen once for the study on validation: {shown}; "
            "trials start from scratch with it, without a refit"
        )
    return SharedExtraction(heads, cache_use.to_dict() | {"skipped": skipped}, penalty)


def _smallest_class(features: dict[str, Any], class_names: list[str]) -> tuple[str, int] | None:
    """The class with the fewest decoded training + validation images, and their number (None: multi-label, whose
    folds are not stratified)."""
    labels = np.concatenate([features["train"].labels, features["val"].labels])
    if labels.ndim != 1:
        return None
    counts = class_counts(labels, class_names)
    name = min(counts, key=counts.__getitem__)
    return name, counts[name]


def trial_zero(space: SearchSpace, config: ExperimentConfig, penalty: float | None, reporter: Reporter) -> dict:
    """Trial 0's parameters: the config as written (a value outside its range is used anyway, with a warning)."""
    pinned = space.config_for({}, pins(config, penalty))
    params = space.trial_zero(pinned)
    for param in space.params:
        value = params.get(param.key)
        if value is not None and not param.distribution()._contains(param.distribution().to_internal_repr(value)):
            reporter.warn(
                f"tune.space.{param.key}: the config's own value {value} is outside the range; "
                "trial 0 (the config as written) uses it anyway"
            )
    return params
