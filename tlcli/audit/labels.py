"""Likely label errors: confident learning on out-of-fold probabilities of a probe on cached embeddings.

Every image is scored by a logistic-regression probe trained on the other folds only (stratified k-fold; with
`groups`, the folds keep each group whole), so no image is judged by a model that saw its label. Confident learning
(Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021) then flags
the images whose given label the probabilities contradict: `cleanlab`'s `find_label_issues` when the optional extra is
installed (`pip install 'tlcli[audit]'`), else tlcli's own implementation of the same published method (per-class
thresholds, confident joint, then the lowest self-confidences or prune by noise rate), which `method="own"` runs
explicitly; the two agree image for image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tlcli.data.groups import group_folds
from tlcli.errors import DataError, UserError

# The probe: multinomial logistic regression (L-BFGS) on standardized features, C = 0.1. Standardizing makes C mean the
# same whatever a base's activation scale. Measured on eurosat's 1,000 training embeddings (MobileNetV2 1.0, 224 px),
# 50 labels flipped, 5 folds, medians of 3 seeds, precision in the top 50 / recall in the top 100 (low_self_confidence):
# standardized C=1 0.80/0.98, C=0.1 0.82/0.94, C=0.01 0.84/0.86, C=0.001 0.80/0.80; raw C=1 0.82/0.96, C=0.1
# 0.86/0.90; L2-normalized C=10 0.84/0.84. Softer probabilities (stronger penalty, L2-normalizing) rank flips as well
# but lower the issue count confident learning estimates, cutting recall; C=0.1 clears both 80% targets with margin
# (one flip is 2 points, so the top few are within noise of each other).
PROBE_C = 0.1
PROBE_MAX_ITER = 3000  # lbfgs converges well below this on 1,000 x 1,280; the cap only guards against a stall
METHODS = ("auto", "cleanlab", "own")
# How confident learning picks the issues. On eurosat (above, standardized C=0.1) "low_self_confidence" (as many
# images as confident learning estimates are mislabelled, lowest self-confidence first) found 0.82/0.94; cleanlab's
# default "prune_by_noise_rate" 0.80/0.88: it drops flipped images once their class pair's pruning quota is used up.
FILTERS = ("low_self_confidence", "prune_by_noise_rate")
# Constants of cleanlab 2.x's filter, kept equal so both paths rank the same images.
_FLOAT_TOLERANCE = 1e-6
_THRESHOLD_FLOOR = 2e-6


@dataclass(frozen=True)
class OutOfFold:
    """Each row's class probabilities from a probe that never saw it (`fold`: the fold that scored the row)."""

    probabilities: np.ndarray  # (n, k) float64, rows sum to 1
    fold: np.ndarray  # (n,) int: the held-out fold in which each row was scored
    folds: int
    note: str = ""  # why fewer folds than asked were used, or why some rows cannot be judged
    unjudged: tuple[int, ...] = ()  # rows whose class their probe never saw (groups held all of it out): no verdict


@dataclass(frozen=True)
class LabelSuspect:
    """One image whose label the data contradicts."""

    index: int  # row of `features` / `labels`
    given: int  # the label it has
    suggested: int  # the label the data suggests: the most probable other class, out of fold
    confidence: float  # out-of-fold probability of `suggested`
    given_probability: float  # out-of-fold probability of `given` (its self-confidence; lower is more suspect)


@dataclass(frozen=True)
class LabelSuspects:
    """Likely label errors, most suspect first, and how they were found."""

    suspects: tuple[LabelSuspect, ...]
    method: str  # which confident-learning implementation ran
    folds: int
    note: str = ""
    images: int = 0  # images examined

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "folds": self.folds,
            "note": self.note,
            "images": self.images,
            "count": len(self.suspects),
            "suspects": [asdict(s) for s in self.suspects],
        }


@dataclass(frozen=True)
class FoldPlan:
    """The cross-validation folds: (train rows, held-out rows) pairs, and why there are fewer than asked."""

    splits: tuple[tuple[np.ndarray, np.ndarray], ...]
    note: str = ""
    assignments: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # (n,) held-out fold of each row

    @property
    def folds(self) -> int:
        return len(self.splits)


def check_inputs(features, labels, groups=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features as a 2-D float array and labels as non-negative ints of the same length (groups too, when given).

    Raises:
        DataError: shapes disagree, a label is negative, or a class has fewer than 2 images.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise DataError("labels: expected a 1-D array of non-negative class indices")
    if features is not None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != len(labels):
            raise DataError(f"features: expected shape ({len(labels)}, d), one row per label; got {features.shape}")
        if not np.isfinite(features).all():
            row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
            raise DataError(f"features: row {row} is not finite (NaN or infinity); re-extract that image's features")
    if groups is not None:
        if len(groups) != len(labels):
            raise DataError(f"groups: expected one group id per label ({len(labels)}); got {len(groups)}")
        codes: dict = {}
        groups = np.array([codes.setdefault(g, len(codes)) for g in groups])  # any hashable id: str, int, tuple
    counts = np.bincount(labels) if labels.size else np.zeros(0, dtype=int)
    if len(counts) < 2:
        raise DataError("labels: a classifier needs images of at least two classes")
    small = [(k, int(c)) for k, c in enumerate(counts) if c < 2]
    if small:
        k, c = small[0]
        raise DataError(
            f"labels: class {k} has {c} image{'s' if c != 1 else ''}; cross-validation needs at least 2 of every class "
            "(add images or remove the class)"
        )
    return features, labels.astype(np.int64), groups


def fold_plan(labels: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None) -> FoldPlan:
    """Stratified folds (StratifiedGroupKFold when `groups` is given: a group is never split across folds).

    Fewer folds than asked when the smallest class (or the number of groups) is smaller, and `note` says so.

    Raises:
        UserError: `folds` is below 2.
        DataError: fewer than two groups.
    """
    if folds < 2:
        raise UserError(f"folds: {folds} is too few; cross-validation needs at least 2")
    smallest = int(np.bincount(labels).min())
    usable, notes = folds, []
    if smallest < folds:
        usable = smallest
        notes.append(f"{usable} folds instead of {folds}: the smallest class has {smallest} images")
    if groups is not None:
        distinct = len(np.unique(groups))
        if distinct < 2:
            raise DataError("groups: all images are in one group; cross-validation needs at least two groups")
        if distinct < usable:
            usable = distinct
            notes.append(f"{usable} folds instead of {folds}: there are {distinct} groups")
    pairs, _ = group_folds(labels, usable, seed, groups)  # the same folds as tune's cross-validation
    splits = tuple((np.sort(train), np.sort(test)) for train, test in pairs)
    assignments = np.full(len(labels), -1, dtype=int)
    for number, (_, test) in enumerate(splits):
        assignments[test] = number
    return FoldPlan(splits, "; ".join(notes), assignments)


def fit_probe(features: np.ndarray, labels: np.ndarray):
    """The probe (standardize, then multinomial logistic regression), fitted; its `classes_` are the labels seen.

    Raises:
        DataError: the rows hold a single class (groups put every other class in the held-out fold).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(labels)) < 2:
        raise DataError("groups: a training fold holds a single class; use fewer folds, or smaller or more groups")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER))
    return probe.fit(features, labels)


def probe_probabilities(probe, features: np.ndarray, num_classes: int) -> np.ndarray:
    """(n, num_classes) probabilities; a class the probe never saw (a fold without it) gets probability 0."""
    out = np.zeros((len(features), num_classes))
    out[:, probe.classes_] = probe.predict_proba(features)
    return out


def out_of_fold_probabilities(features, labels, *, folds: int = 5, seed: int = 0, groups=None) -> OutOfFold:
    """Each row's class probabilities from a probe trained on the other folds only.

    Args:
        features: (n, d) embeddings.
        labels: (n,) class indices 0..k-1; every class needs at least 2 images.
        folds: k of the stratified k-fold (fewer when the smallest class is smaller; `note` says so).
        seed: shuffles the fold assignment.
        groups: (n,) group ids; a group's images are all scored in the same fold (never train on a sibling).

    Raises:
        DataError: shapes disagree or a class has fewer than 2 images.
    """
    features, labels, groups = check_inputs(features, labels, groups)
    plan = fold_plan(labels, folds, seed, groups)
    num_classes = int(labels.max()) + 1
    probabilities = np.zeros((len(labels), num_classes))
    unjudged: list[int] = []
    for train, test in plan.splits:
        probe = fit_probe(features[train], labels[train])
        probabilities[test] = probe_probabilities(probe, features[test], num_classes)
        unjudged.extend(int(i) for i in test[~np.isin(labels[test], probe.classes_)])
    notes = [plan.note] if plan.note else []
    if unjudged:
        classes = ", ".join(str(k) for k in sorted({int(labels[i]) for i in unjudged}))
        notes.append(
            f"{len(unjudged)} images of class {classes} cannot be judged: groups hold all of the class in a fold"
        )
    note = "; ".join(notes)
    return OutOfFold(probabilities, plan.assignments, plan.folds, note, tuple(sorted(unjudged)))


def find_label_suspects(
    features,
    labels,
    *,
    folds: int = 5,
    seed: int = 0,
    groups=None,
    out_of_fold: OutOfFold | None = None,
    method: str = "auto",
    filter_by: str = "low_self_confidence",
) -> LabelSuspects:
    """Likely label errors, most suspect first (lowest out-of-fold probability of the given label).

    Args:
        features: (n, d) embeddings (unused, may be None, when `out_of_fold` is given).
        labels: (n,) class indices.
        folds, seed, groups: as `out_of_fold_probabilities`.
        out_of_fold: probabilities computed already (e.g. shared with other findings).
        method: "auto" (cleanlab when installed, else tlcli's own), "cleanlab" or "own".
        filter_by: which images count as issues (`confident_learning_issues`): "low_self_confidence" (default,
            measured best) or "prune_by_noise_rate" (cleanlab's default).

    Raises:
        DataError: shapes disagree or a class has fewer than 2 images.
        UserError: an unknown `method` or `filter_by`, or "cleanlab" when it is not installed.
    """
    if method not in METHODS:
        raise UserError(f"method: '{method}' is not one of {', '.join(METHODS)}")
    if filter_by not in FILTERS:
        raise UserError(f"filter_by: '{filter_by}' is not one of {', '.join(FILTERS)}")
    if out_of_fold is None:
        out_of_fold = out_of_fold_probabilities(features, labels, folds=folds, seed=seed, groups=groups)
    _, labels, _ = check_inputs(None, labels)
    probabilities = out_of_fold.probabilities
    if probabilities.shape[0] != len(labels):
        raise DataError(f"out_of_fold: {probabilities.shape[0]} rows of probabilities for {len(labels)} labels")
    judged = np.setdiff1d(np.arange(len(labels)), np.asarray(out_of_fold.unjudged, dtype=int))
    labels, probabilities = labels[judged], probabilities[judged]
    if len(np.unique(labels)) < 2:  # every other class held out whole (by its groups): nothing to weigh a label against
        raise DataError(
            f"labels: the images the probe could judge hold a single class ({out_of_fold.note or 'groups'}); "
            "label suspects need two"
        )
    ranked, described = _rank(labels, probabilities, method, filter_by)
    suspects = tuple(_suspect(int(judged[i]), int(labels[i]), probabilities[i]) for i in ranked)
    return LabelSuspects(suspects, described, out_of_fold.folds, out_of_fold.note, len(labels))


def _rank(labels: np.ndarray, probabilities: np.ndarray, method: str, filter_by: str) -> tuple[np.ndarray, str]:
    """The issues' row indices, most suspect first, by cleanlab (when `method` allows and it is installed) or tlcli's
    own confident learning, and which of them ran."""
    version = _cleanlab_version() if method != "own" else None
    if method == "cleanlab" and version is None:
        raise UserError("method: cleanlab is not installed; pip install 'tlcli[audit]', or use method='own'")
    if version is None:
        described = f"confident learning (Northcutt et al. 2021, {filter_by}), tlcli's own, ranked by self_confidence"
        return confident_learning_issues(labels, probabilities, filter_by), described
    from cleanlab.filter import find_label_issues

    ranked = find_label_issues(
        labels, probabilities, filter_by=filter_by, return_indices_ranked_by="self_confidence", n_jobs=1
    )
    return ranked, f"cleanlab {version} find_label_issues ({filter_by}), ranked by self_confidence"


def _cleanlab_version() -> str | None:
    try:
        import cleanlab
    except ImportError:
        return None
    return str(cleanlab.__version__)


def _suspect(index: int, given: int, probabilities: np.ndarray) -> LabelSuspect:
    """`probabilities`: the row's out-of-fold probabilities."""
    others = probabilities.copy()
    others[given] = -1.0
    suggested = int(np.argmax(others))
    return LabelSuspect(index, given, suggested, float(probabilities[suggested]), float(probabilities[given]))


def confident_learning_issues(
    labels: np.ndarray, probabilities: np.ndarray, filter_by: str = "low_self_confidence"
) -> np.ndarray:
    """Rows with likely label errors, lowest self-confidence (probability of the given label) first.

    The published method (Northcutt et al. 2021, sections 3.1-3.2), as cleanlab 2.x computes it:
    1. per-class threshold t_j = mean probability of class j over the images labelled j;
    2. an image labelled i "confidently belongs" to j when its probability of j reaches t_j (the most probable such j
       when several do); the confident joint C[i][j] counts them;
    then, by `filter_by`:
    - "low_self_confidence": the number of issues is the count off C's diagonal (dropping images whose most probable
      class is their label); that many images with the lowest self-confidence are the issues;
    - "prune_by_noise_rate": C calibrated to the label counts; for each off-diagonal C[i][j], the C[i][j] images
      labelled i with the largest margin p_j - p_i, keeping only those whose most probable class is not their label.
    """
    labels = np.asarray(labels)
    self_confidence = probabilities[np.arange(len(labels)), labels]
    if filter_by == "low_self_confidence":
        issues = np.argsort(self_confidence, kind="stable")[: _estimated_issue_count(labels, probabilities)]
    else:
        issues = np.flatnonzero(_pruned_by_noise_rate(labels, probabilities) & ~_label_is_argmax(labels, probabilities))
    return issues[np.argsort(self_confidence[issues], kind="stable")]


def _label_is_argmax(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    boosted = probabilities.copy()
    boosted[np.arange(len(labels)), labels] += _FLOAT_TOLERANCE  # a tie with the given label keeps the label
    return boosted.argmax(axis=1) == labels


def _confident_guesses(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-2: which rows confidently belong to some class (mask), and to which (guess)."""
    k = probabilities.shape[1]
    counts = np.bincount(labels, minlength=k)
    means = [probabilities[labels == j, j].mean() if counts[j] else 2.0 for j in range(k)]  # 2: never reached
    thresholds = np.array(means).clip(min=_THRESHOLD_FLOOR)
    confident = probabilities >= thresholds - _FLOAT_TOLERANCE
    guess = np.where(confident.sum(axis=1) > 1, probabilities.argmax(axis=1), confident.argmax(axis=1))
    return confident.any(axis=1), guess


def _estimated_issue_count(labels: np.ndarray, probabilities: np.ndarray) -> int:
    """cleanlab's `num_label_issues` ("off_diagonal"): confidently off-diagonal rows whose argmax is not their label."""
    some, guess = _confident_guesses(labels, probabilities)
    return int(np.sum(some & (guess != labels) & ~_label_is_argmax(labels, probabilities)))


def _pruned_by_noise_rate(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Prune by noise rate: for each (given i, true j), flag the C[i][j] images labelled i with largest p_j - p_i."""
    n, k = probabilities.shape
    prune = _keep_one_per_class(_confident_joint(labels, probabilities).T)  # prune[j, i]: labelled i, truly j
    flagged = np.zeros(n, dtype=bool)
    for given in range(k):
        rows = np.flatnonzero(labels == given)
        if len(rows) <= 1:
            continue
        for true in range(k):
            count = int(prune[true, given])
            if true != given and count > 0:
                margin = probabilities[rows, true] - probabilities[rows, given]
                flagged[rows[np.argsort(-margin, kind="stable")[:count]]] = True
    return flagged


def _confident_joint(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The confident joint C[given][true], calibrated so row i sums to the count of label i and the whole to n, in
    integers (rounded keeping each row's total)."""
    k = probabilities.shape[1]
    counts = np.bincount(labels, minlength=k)
    some, guess = _confident_guesses(labels, probabilities)
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[some], guess[some]), 1)
    np.fill_diagonal(joint, joint.diagonal().clip(min=1))
    joint = joint / joint.sum(axis=1, keepdims=True).clip(min=1e-100) * counts[:, None]
    joint = joint / joint.sum().clip(min=1e-100) * counts.sum()
    return np.array([_round_keeping_sum(row) for row in joint])


def _keep_one_per_class(prune: np.ndarray) -> np.ndarray:
    """Integer prune counts (columns: given labels) that leave at least one image in each class: cleanlab's
    `_keep_at_least_n_per_class` with n = 1, whose counts are truncated to integers (not rounded)."""
    diagonal = np.diagonal(prune)
    raised = np.maximum(diagonal, 1)
    noise_rates = np.maximum(np.count_nonzero(prune, axis=0) - 1.0, 1.0)
    adjusted = prune - (raised - diagonal) / noise_rates
    adjusted[adjusted < 0] = 0
    np.fill_diagonal(adjusted, raised)
    return adjusted.astype(int)


def _round_keeping_sum(values: np.ndarray) -> np.ndarray:
    """Round to integers whose sum is the rounded sum of `values` (largest remainders take the difference)."""
    floats = np.asarray(values, dtype=float)
    ints = floats.round()
    target = np.sum(floats).round()
    while abs(np.sum(ints).round() - target) > _FLOAT_TOLERANCE:
        difference = np.round(target - np.sum(ints).round())
        step = -1 if difference < 0 else 1
        for i in np.argsort(floats - ints)[::-step][: min(int(abs(difference)), len(ints))]:
            ints[i] += step
    return ints.astype(int)
