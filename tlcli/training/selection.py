"""What tlcli chooses on the validation split when the config leaves it open, and the linear-probe reference.

A frozen base's head is a linear model on the cached features, and its
L2-regularised cross-entropy is convex: it has one optimum per penalty, which
scikit-learn's `LogisticRegression` (L-BFGS) finds in a fraction of a second.
So the penalty is chosen by fitting each candidate of `PENALTY_GRID` exactly on
the training split and keeping the one with the lowest validation loss
(candidates trained with Adam for a few epochs each would be compared before
they converge: measured on cats vs dogs, Adam's heads land 0.2-1 point apart
for the same penalty, by learning rate and epoch count alone). The chosen fit
becomes the head's starting weights (`warm_start`); training then continues
from it with the phase's optimizer until the validation loss stops improving,
and keeps the start if it never does.

The same fits are the linear-probe reference reported by every run that has
cached features: a recipe that ends below the probe is visibly worse than a
logistic regression on its own features.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tlcli.features.cut import Cut
from tlcli.modeling import layers as names
from tlcli.modeling.build import set_head_regularisation
from tlcli.training.compile import Objective
from tlcli.training.phases import HeadPolicy

# C as scikit-learn spells it: the inverse of the penalty. The head's Keras penalty is l2 = 1 / (2 C n).
PENALTY_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
PROBE_MAX_ITER = 5000
POOL = Cut("pool")  # the probe's features: the base's pooled output, the head's input


@dataclass(frozen=True)
class ProbeFit:
    """One exact fit of the linear head at penalty C on the training split, scored on validation."""

    C: float
    l2: float  # the same penalty for the Keras head: l2 * sum(kernel**2) added to the mean loss
    val_loss: float
    val_accuracy: float  # multi-label: the fraction of (image, class) decisions right at 0.5
    val_map: float | None = None  # multi-label: mean over classes of the average precision


@dataclass
class HeadSelection:
    """The grid's figures, what was chosen, and what the run did with it (recorded in selection.json and
    metrics.json)."""

    grid: list[ProbeFit]
    chosen: ProbeFit
    selected: bool  # the penalty was chosen for the head (else the fits are only the probe reference)
    refit: bool = False
    why: str = ""
    seconds: float = 0.0
    test_accuracy: float | None = None  # the probe at the chosen penalty on the test split, when there is one
    refit_epochs: int = 0  # epochs trained after the refit (as many as training added to the exact start)
    models: dict[float, Probe] = field(default_factory=dict, repr=False)  # C -> the fitted probe (not saved)

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": [asdict(fit) for fit in self.grid],
            "chosen": asdict(self.chosen),
            "selected": self.selected,
            "refit": self.refit,
            "refit_epochs": self.refit_epochs,
            "why": self.why,
            "seconds": round(self.seconds, 3),
            "probe_test_accuracy": self.test_accuracy,
        }


@dataclass
class Probe:
    """A fitted linear head: one multinomial logistic regression, or (multi-label) one binary one per class.

    A multi-label class that the training split shows only present (or only
    absent) cannot be fitted; it gets a constant logit instead.
    """

    num_classes: int
    multi: bool
    models: list[
        Any
    ]  # scikit-learn LogisticRegression, or (multi-label) a float: the constant logit of an unfittable class

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        if self.multi:
            columns = [
                m.predict_proba(x)[:, 1] if not isinstance(m, float) else np.full(len(x), 1 / (1 + np.exp(-m)))
                for m in self.models
            ]
            return np.stack(columns, axis=1)
        model = self.models[0]
        full = np.zeros((len(x), self.num_classes))  # a class missing from the training split gets 0
        full[:, model.classes_] = model.predict_proba(x)
        return full / np.maximum(full.sum(axis=1, keepdims=True), 1e-12)

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(coef, intercept) with one row per output logit.

        Raises:
            ValueError: a single-label probe that did not see every class (a class absent from the training split).
        """
        if self.multi:
            rows = [(m.coef_[0], m.intercept_[0]) if not isinstance(m, float) else (None, m) for m in self.models]
            width = next(len(c) for c, _ in rows if c is not None)
            coef = np.stack([c if c is not None else np.zeros(width) for c, _ in rows])
            return coef.astype("float32"), np.array([b for _, b in rows], dtype="float32")
        model = self.models[0]
        if len(model.classes_) != self.num_classes:
            raise ValueError(f"the training split holds {len(model.classes_)} of the {self.num_classes} classes")
        return np.asarray(model.coef_, dtype="float32"), np.asarray(model.intercept_, dtype="float32")


def fit_probe(
    x: np.ndarray,
    y: np.ndarray,
    C: float,
    num_classes: int,
    class_weight: dict[int, float] | None = None,
    alpha: list[float] | None = None,
) -> Probe:
    """The linear head fitted exactly at penalty C: single-label `y` (n,) with Keras-style class weights,
    multi-label `y` (n, k) with each class's positive weight `alpha`."""
    from sklearn.linear_model import LogisticRegression

    if y.ndim == 1:
        return Probe(
            num_classes, False, [LogisticRegression(C=C, max_iter=PROBE_MAX_ITER, class_weight=class_weight).fit(x, y)]
        )
    models: list[Any] = []
    for c in range(y.shape[1]):
        column = y[:, c].astype(int)
        if column.min() == column.max():
            prevalence = np.clip(column.mean(), 1e-3, 1 - 1e-3)
            models.append(float(np.log(prevalence / (1 - prevalence))))
            continue
        weight = None if alpha is None else np.where(column == 1, alpha[c], 1 - alpha[c])
        models.append(LogisticRegression(C=C, max_iter=PROBE_MAX_ITER).fit(x, column, sample_weight=weight))
    return Probe(num_classes, True, models)


def score(probabilities: np.ndarray, y: np.ndarray, alpha: list[float] | None = None) -> dict[str, float]:
    """Loss (the head's loss: cross-entropy, multi-label weighted by `alpha` as the Keras loss is) and accuracy;
    mAP for multi-label."""
    from sklearn.metrics import average_precision_score, log_loss

    if y.ndim == 1:
        return {
            "loss": float(log_loss(y, probabilities, labels=list(range(probabilities.shape[1])))),
            "accuracy": float((probabilities.argmax(1) == y).mean()),
        }
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    if alpha is not None:
        a = np.asarray(alpha)[None, :]
        losses = losses * np.where(y == 1, a, 1 - a)
    present = [c for c in range(y.shape[1]) if 0 < y[:, c].sum()]
    average_precision = (
        float(np.mean([average_precision_score(y[:, c], probabilities[:, c]) for c in present]))
        if present
        else float("nan")
    )
    return {
        "loss": float(losses.mean()),
        "accuracy": float(((probabilities >= 0.5) == (y == 1)).mean()),
        "map": average_precision,
    }


def fit_probes(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    num_classes: int,
    class_weight: dict[int, float] | None,
    grid=PENALTY_GRID,
    alpha: list[float] | None = None,
) -> HeadSelection:
    """Fit the linear head exactly at every penalty of `grid`; choose the lowest validation loss.

    Returns a selection with `selected` False: the caller decides whether the penalty is used or only reported.
    """
    started = time.perf_counter()
    fits, models = [], {}
    for C in grid:
        probe = fit_probe(train_x, train_y, C, num_classes, class_weight, alpha)
        figures = score(probe.probabilities(val_x), val_y, alpha)
        fits.append(
            ProbeFit(
                C,
                l2=1.0 / (2.0 * C * len(train_x)),
                val_loss=round(figures["loss"], 6),
                val_accuracy=round(figures["accuracy"], 6),
                val_map=round(figures["map"], 6) if "map" in figures else None,
            )
        )
        models[C] = probe
    chosen = min(fits, key=lambda fit: (fit.val_loss, -fit.C))
    return HeadSelection(fits, chosen, selected=False, seconds=time.perf_counter() - started, models=models)


def probe_accuracy(probe: Probe, x: np.ndarray, y: np.ndarray) -> float:
    return round(score(probe.probabilities(x), y)["accuracy"], 6)


def warm_start(output_layer, probe: Probe, binary: bool) -> None:
    """Give the head's output layer the probe's solution: the same logits, so the same probabilities.

    Raises:
        ValueError: the probe did not see every class (a class absent from the training split).
    """
    coef, intercept = probe.weights()
    kernel, bias = [np.array(w) for w in output_layer.get_weights()]
    if binary:  # one sigmoid unit: the probe's logit
        kernel[:, 0], bias[0] = coef[0], intercept[0]
    elif probe.num_classes == 2 and not probe.multi:  # softmax over two: logits -z/2 and z/2 give sigmoid(z)
        kernel[:, 0], kernel[:, 1], bias[0], bias[1] = -coef[0] / 2, coef[0] / 2, -intercept[0] / 2, intercept[0] / 2
    else:
        kernel[:], bias[:] = coef.T, intercept
    output_layer.set_weights([kernel, bias])


# ----------------------------------------------------------------------------- in a run


def head_penalty(fit: ProbeFit, num_classes: int, binary: bool, multi_label: bool = False) -> float:
    """The Keras penalty that makes the head's objective the probe's.

    A two-class softmax splits the probe's weights in halves (see `warm_start`);
    a multi-label head's loss is the mean over its k classes of each class's probe loss, so its penalty is 1/k of
    each probe's.
    """
    if multi_label:
        return fit.l2 / num_classes
    return 2 * fit.l2 if num_classes == 2 and not binary else fit.l2


def probe_splits(inputs, only: tuple[str, ...] = ("train", "val", "test")) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(pooled features, labels) of every split the probe uses (of `only`, and not empty)."""
    return {
        split: (inputs.features(POOL, split), kept.labels)
        for split, kept in inputs.splits.items()
        if len(kept) and split in only
    }


def choose_head(inputs, head: HeadPolicy, objective: Objective) -> HeadSelection:
    """The probe's fits; when the head policy selects the head, its penalty and starting weights go into the model."""
    data = probe_splits(inputs)
    (train_x, train_y), (val_x, val_y) = data["train"], data["val"]
    weights, alpha = objective.class_weight, objective.alpha
    selection = fit_probes(train_x, train_y, val_x, val_y, inputs.num_classes, weights, alpha=alpha)
    if "test" in data:
        selection.test_accuracy = probe_accuracy(selection.models[selection.chosen.C], *data["test"])
    if not head.selects:
        selection.why = head.why_not_selected
        return selection
    model, config = inputs.model, inputs.config
    try:
        warm_start(model.get_layer(names.OUTPUT), selection.models[selection.chosen.C], inputs.binary)
    except ValueError as exc:
        selection.why = f"not selected: {exc}"
        return selection
    set_head_regularisation(
        model,
        head_penalty(selection.chosen, inputs.num_classes, inputs.binary, config.multi_label),
        0.0 if config.head.dropout == "auto" else None,
    )
    selection.selected, selection.refit = True, head.refits
    selection.why = (
        f"penalty C={selection.chosen.C:g} (lowest validation loss of {len(selection.grid)} exact fits); "
        "the head starts from that fit"
    )
    return selection


def refit_head(inputs, selection: HeadSelection, objective: Objective) -> None:
    """The chosen penalty fitted again on train + validation, on the base's features as they are now (after a kept
    fine-tuning phase, its own); the head takes that solution (scikit-learn's refit=True)."""
    data = probe_splits(inputs, only=("train", "val"))
    x = np.concatenate([data["train"][0], data["val"][0]])
    y = np.concatenate([data["train"][1], data["val"][1]])
    weights, alpha = objective.class_weight, objective.alpha
    probe = fit_probe(x, y, selection.chosen.C, inputs.num_classes, weights, alpha)  # scikit-learn's refit=True
    warm_start(inputs.model.get_layer(names.OUTPUT), probe, inputs.binary)
