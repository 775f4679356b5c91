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

# C as scikit-learn spells it: the inverse of the penalty. The head's Keras penalty is l2 = 1 / (2 C n).
PENALTY_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
PROBE_MAX_ITER = 5000


@dataclass(frozen=True)
class ProbeFit:
    """One exact fit of the linear head at penalty C on the training split, scored on validation."""

    C: float
    l2: float  # the same penalty for the Keras head: l2 * sum(kernel**2) added to the mean loss
    val_loss: float
    val_accuracy: float


@dataclass
class HeadSelection:
    """The grid's figures, what was chosen, and what the run did with it (recorded in selection.json and metrics.json)."""

    grid: list[ProbeFit]
    chosen: ProbeFit
    selected: bool  # the penalty was chosen for the head (else the fits are only the probe reference)
    refit: bool = False
    why: str = ""
    seconds: float = 0.0
    test_accuracy: float | None = None  # the probe at the chosen penalty on the test split, when there is one
    refit_epochs: int = 0  # epochs trained after the refit (as many as training added to the exact start)
    models: dict[float, Any] = field(default_factory=dict, repr=False)  # C -> fitted LogisticRegression (not saved)

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


def fit_probes(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, num_classes: int, class_weight: dict[int, float] | None, grid=PENALTY_GRID) -> HeadSelection:
    """Fit the linear head exactly at every penalty of `grid`; choose the lowest validation loss.

    Returns a selection with `selected` False: the caller decides whether the penalty is used or only reported.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    started = time.perf_counter()
    fits, models = [], {}
    labels = list(range(num_classes))
    for C in grid:
        model = LogisticRegression(C=C, max_iter=PROBE_MAX_ITER, class_weight=class_weight).fit(train_x, train_y)
        probabilities = _all_classes(model, model.predict_proba(val_x), num_classes)
        fits.append(ProbeFit(C, l2=1.0 / (2.0 * C * len(train_x)), val_loss=round(float(log_loss(val_y, probabilities, labels=labels)), 6), val_accuracy=round(float((probabilities.argmax(1) == val_y).mean()), 6)))
        models[C] = model
    chosen = min(fits, key=lambda fit: (fit.val_loss, -fit.C))
    return HeadSelection(fits, chosen, selected=False, seconds=time.perf_counter() - started, models=models)


def refit_probe(selection: HeadSelection, x: np.ndarray, y: np.ndarray, class_weight: dict[int, float] | None):
    """The chosen penalty fitted again on `x` (train + validation), as scikit-learn's refit=True does."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=selection.chosen.C, max_iter=PROBE_MAX_ITER, class_weight=class_weight).fit(x, y)


def probe_accuracy(model, x: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    return round(float((_all_classes(model, model.predict_proba(x), num_classes).argmax(1) == y).mean()), 6)


def _all_classes(model, probabilities: np.ndarray, num_classes: int) -> np.ndarray:
    """Probabilities over every class (a class missing from the training split gets 0)."""
    full = np.zeros((len(probabilities), num_classes))
    full[:, model.classes_] = probabilities
    return full / np.maximum(full.sum(axis=1, keepdims=True), 1e-12)


def warm_start(output_layer, probe, num_classes: int, binary: bool) -> None:
    """Give the head's output layer the probe's solution: the same logits, so the same probabilities.

    Raises:
        ValueError: the probe did not see every class (a class absent from the training split).
    """
    coef, intercept = np.asarray(probe.coef_, dtype="float32"), np.asarray(probe.intercept_, dtype="float32")
    if len(probe.classes_) != num_classes:
        raise ValueError(f"the training split holds {len(probe.classes_)} of the {num_classes} classes")
    kernel, bias = [np.array(w) for w in output_layer.get_weights()]
    if binary:  # one sigmoid unit: the probe's logit
        kernel[:, 0], bias[0] = coef[0], intercept[0]
    elif num_classes == 2:  # softmax over two: logits -z/2 and z/2 give sigmoid(z)
        kernel[:, 0], kernel[:, 1], bias[0], bias[1] = -coef[0] / 2, coef[0] / 2, -intercept[0] / 2, intercept[0] / 2
    else:
        kernel[:], bias[:] = coef.T, intercept
    output_layer.set_weights([kernel, bias])


# ----------------------------------------------------------------------------- in a run


def head_penalty(fit: ProbeFit, num_classes: int, binary: bool) -> float:
    """The Keras penalty that makes the head's objective the probe's: a two-class softmax splits the probe's weights in halves (see `warm_start`)."""
    return 2 * fit.l2 if num_classes == 2 and not binary else fit.l2


def probe_splits(inputs, fresh: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(pooled features, labels) of every split the probe uses (`fresh`: with the model's current weights, after fine-tuning)."""
    from tlcli.features.cut import Cut

    pool = Cut("pool")
    return {split: (inputs.features(pool, split, fresh=fresh), inputs.sets[split].labels) for split in ("train", "val", "test") if split in inputs.sets and len(inputs.sets[split])}


def choose_head(inputs, plan, class_weight: dict[int, float] | None) -> HeadSelection:
    """The probe's fits; when the plan selects the head, its penalty and starting weights go into the model."""
    from tlcli.modeling import layers as names
    from tlcli.modeling.build import set_head_regularisation

    data = probe_splits(inputs)
    (train_x, train_y), (val_x, val_y) = data["train"], data["val"]
    selection = fit_probes(train_x, train_y, val_x, val_y, inputs.num_classes, class_weight)
    if "test" in data:
        selection.test_accuracy = probe_accuracy(selection.models[selection.chosen.C], *data["test"], inputs.num_classes)
    if not plan.select_head:
        selection.why = plan.no_selection
        return selection
    model, config = inputs.model, inputs.config
    try:
        warm_start(model.get_layer(names.OUTPUT), selection.models[selection.chosen.C], inputs.num_classes, inputs.binary)
    except ValueError as exc:
        selection.why = f"not selected: {exc}"
        return selection
    set_head_regularisation(model, head_penalty(selection.chosen, inputs.num_classes, inputs.binary), 0.0 if config.head.dropout == "auto" else None)
    selection.selected, selection.refit = True, plan.refit
    selection.why = f"penalty C={selection.chosen.C:g} (lowest validation loss of {len(selection.grid)} exact fits); the head starts from that fit"
    return selection


def refit_head(inputs, selection: HeadSelection, class_weight: dict[int, float] | None, fresh: bool = False) -> None:
    """The chosen penalty fitted again on train + validation; the head takes that solution (scikit-learn's refit=True).

    `fresh`: on the features of the base as it is now (fine-tuning changed it since the penalty was chosen).
    """
    from tlcli.modeling import layers as names

    data = probe_splits(inputs, fresh=fresh)
    x = np.concatenate([data["train"][0], data["val"][0]])
    y = np.concatenate([data["train"][1], data["val"][1]])
    probe = refit_probe(selection, x, y, class_weight)
    warm_start(inputs.model.get_layer(names.OUTPUT), probe, inputs.num_classes, inputs.binary)
