"""Per-class learning curves from cached embeddings: which classes would still gain from more labelled images.

Cross-validated like `tlcli.audit.labels` (stratified folds; groups kept whole). In each fold the probe is trained on
nested, stratified subsets of the fold's training images (the 50% subset contains the 25% one) and scores the held-out
fold, so every image of a class is scored once per fraction. A class is "climbing" only when the accuracy it gained
from the last step exceeds that gain's standard error; otherwise its curve is within noise.

The standard error is the paired one: the gain is the mean over the class's n images of d_i = correct_i(last) -
correct_i(previous), each d_i in {-1, 0, 1} (averaged over `repeats` cross-validations), so SE = sd(d) / sqrt(n)
(sample standard deviation, ddof 1). Both accuracies are measured on the same images, so an image's difficulty cancels;
treating them as two independent binomials (sqrt(p1(1-p1)/n + p2(1-p2)/n)) ignores that correlation: about 4 points at
90% on 100 images, more than any realistic last-step gain. One net image gained is never "climbing" (gain = SE).
What the SE leaves out is the luck of which images one subset drew: measured on eurosat (100 images a class), the
climbing classes changed from one fold seed to the next; `repeats` averages that luck away, at `repeats` times the cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlcli.audit.labels import check_inputs, fit_probe, fold_plan, probe_probabilities
from tlcli.errors import DataError, UserError

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class ClassCurve:
    """One class's accuracy (recall) at each training fraction, and whether it is still climbing."""

    name: str
    accuracy: tuple[float, ...]  # fraction of the class's images predicted as the class, per training fraction
    images: tuple[float, ...]  # training images of the class at each fraction (mean over folds)
    gain: float  # accuracy points gained by the last step (last fraction minus the one before)
    standard_error: float  # paired standard error of `gain`, in points (module docstring)
    climbing: bool  # gain > standard_error
    advice: str
    scored: int = 0  # images of the class scored at each fraction (n)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassCurve:
        return cls(
            str(data["name"]),
            tuple(float(a) for a in data["accuracy"]),
            tuple(float(n) for n in data["images"]),
            float(data["gain"]),
            float(data["standard_error"]),
            bool(data["climbing"]),
            str(data["advice"]),
            int(data.get("scored", 0)),
        )


@dataclass(frozen=True)
class LearningCurve:
    """Per-class and overall probe accuracy at each fraction of the training images, cross-validated."""

    fractions: tuple[float, ...]
    classes: tuple[ClassCurve, ...]
    accuracy: tuple[float, ...]  # overall accuracy per fraction (all images)
    folds: int
    note: str = ""
    repeats: int = 1  # cross-validations averaged

    @property
    def climbing(self) -> tuple[str, ...]:
        """The classes that would still gain from more images."""
        return tuple(c.name for c in self.classes if c.climbing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fractions": list(self.fractions),
            "accuracy": list(self.accuracy),
            "folds": self.folds,
            "repeats": self.repeats,
            "note": self.note,
            "climbing": list(self.climbing),
            "classes": [asdict(c) for c in self.classes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearningCurve:
        """What `to_dict` wrote (`climbing` is derived, not read)."""
        return cls(
            tuple(float(f) for f in data["fractions"]),
            tuple(ClassCurve.from_dict(c) for c in data["classes"]),
            tuple(float(a) for a in data["accuracy"]),
            int(data["folds"]),
            str(data.get("note", "")),
            int(data.get("repeats", 1)),
        )


def learning_curve(
    features,
    labels,
    class_names: Sequence[str],
    *,
    fractions: Sequence[float] = FRACTIONS,
    folds: int = 5,
    seed: int = 0,
    groups=None,
    repeats: int = 1,
) -> LearningCurve:
    """Probe accuracy per class at each fraction of the training images, pooled over the cross-validation folds.

    Args:
        features: (n, d) embeddings.
        labels: (n,) class indices into `class_names`; every class needs at least 2 images.
        class_names: one name per class.
        fractions: increasing fractions of each fold's training images, in (0, 1]; at least two.
        folds, seed, groups: as `tlcli.audit.labels.out_of_fold_probabilities`.
        repeats: cross-validations to average (fold seeds seed, seed + 1, ...): each image's change is averaged over
            them before the standard error is taken, so the luck of one fold and subset draw weighs less.

    Raises:
        DataError: shapes disagree, a class has fewer than 2 images, or `class_names` does not fit the labels.
        UserError: `fractions` is not increasing within (0, 1], has fewer than two values, or `repeats` is below 1.
    """
    features, labels, groups = check_inputs(features, labels, groups)
    fractions = _check_fractions(fractions)
    if len(class_names) < int(labels.max()) + 1:
        raise DataError(f"class_names: {len(class_names)} names for labels up to {int(labels.max())}")
    if repeats < 1:
        raise UserError(f"repeats: {repeats}; at least 1")
    correct = np.zeros((len(fractions), len(labels)))
    trained = np.zeros((len(fractions), len(class_names)))
    for repeat in range(repeats):
        plan = fold_plan(labels, folds, seed + repeat, groups)
        right, images = _cross_validated(features, labels, plan, fractions, np.random.default_rng(seed + repeat))
        correct += right / repeats
        trained += images[:, : len(class_names)] / (repeats * plan.folds)
    last = f"{fractions[-1] - fractions[-2]:.0%}"
    classes = tuple(
        _class_curve(str(name), correct[:, labels == k], trained[:, k], last)
        for k, name in enumerate(class_names)
        if np.any(labels == k)
    )
    overall = tuple(float(x) for x in correct.mean(axis=1))
    return LearningCurve(tuple(fractions), classes, overall, plan.folds, plan.note, repeats)


def _cross_validated(features, labels, plan, fractions, rng) -> tuple[np.ndarray, np.ndarray]:
    """(fractions, n) whether each image was right when held out, and (fractions, k) training images per class summed
    over the folds, for one cross-validation."""
    num_classes = int(labels.max()) + 1
    correct = np.zeros((len(fractions), len(labels)), dtype=bool)
    trained = np.zeros((len(fractions), num_classes))
    for train, test in plan.splits:
        for step, subset in enumerate(nested_subsets(labels[train], fractions, rng)):
            rows = train[subset]
            probe = fit_probe(features[rows], labels[rows])
            predicted = probe_probabilities(probe, features[test], num_classes).argmax(axis=1)
            correct[step, test] = predicted == labels[test]
            trained[step] += np.bincount(labels[rows], minlength=num_classes)
    return correct, trained


def nested_subsets(labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of `labels` holding each fraction of every class (at least one image), each containing the last.

    One random order per class; fraction f takes the first round(f * count) of it, so the subsets are nested.
    """
    orders = {k: rng.permutation(np.flatnonzero(labels == k)) for k in np.unique(labels)}
    subsets = []
    for fraction in fractions:
        taken = [order[: max(1, int(round(fraction * len(order))))] for order in orders.values()]
        subsets.append(np.sort(np.concatenate(taken)))
    return subsets


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(f) for f in fractions)
    if len(values) < 2 or any(not 0 < f <= 1 for f in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise UserError(f"fractions: {list(values)} must be at least two increasing values in (0, 1], e.g. 0.5 1.0")
    return values


def _class_curve(name: str, correct: np.ndarray, images: np.ndarray, last: str) -> ClassCurve:
    """`correct`: (fractions, n) how often each of the class's images was right at each fraction (0 to 1)."""
    n = correct.shape[1]
    change = correct[-1] - correct[-2]
    gain = round(100 * float(change.mean()), 9) + 0.0  # no "-0.0 pt" from averaging
    error = 100 * float(change.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    climbing = gain > error + 1e-9  # one image gained and none lost gives gain == error, which rounding may tip
    if climbing:
        advice = f"{name}: {gain:+.1f} pt from the last {last} of its images (± {error:.1f}), label more"
    else:
        advice = f"{name}: within noise ({gain:+.1f} pt ± {error:.1f} from the last {last})"
    accuracy = tuple(float(x) for x in correct.mean(axis=1))
    return ClassCurve(name, accuracy, tuple(float(x) for x in images), gain, error, climbing, advice, n)


def plot_learning_curve(curve: LearningCurve, path) -> Path:
    """A PNG of each class's accuracy against its training images, with binomial error bars (sqrt(p(1-p)/n))."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for cls in curve.classes:
        accuracy = np.array(cls.accuracy)
        error = np.sqrt(accuracy * (1 - accuracy) / max(cls.scored, 1))
        style = "-" if cls.climbing else ":"
        label = f"{cls.name} ({cls.gain:+.1f} pt{', climbing' if cls.climbing else ''})"
        axes.errorbar(cls.images, 100 * accuracy, yerr=100 * error, fmt="o" + style, capsize=3, label=label)
    axes.set_xlabel("training images of the class (mean over folds)")
    axes.set_ylabel("accuracy of the class, % (cross-validated)")
    axes.set_title(f"Learning curve per class ({curve.folds}-fold; solid: still climbing)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    return path
