"""The parity figures of an artifact against the run's Keras model, and its gate's verdict.

Single-label: an image agrees when both give the same top-1 class. Multi-label: each (image, class) is a
decision, a label given when its probability reaches the class's threshold (the run's); agreement is the share
of decisions that agree, accuracy the share that match the labels (1 - Hamming loss), and `image_agreement`
the share of images whose every decision agrees.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from tlcli.export.formats import OPTIONS, Gate
from tlcli.export.unknown import decision_agreement
from tlcli.inference.unknown import UnknownRule

# The accept/reject decisions for unknown images an artifact must share with the run on the parity images: a gate of
# its own (not one of `Gate`'s figures); int8's probabilities move most, so the decisions at the threshold flip most.
MIN_UNKNOWN_AGREEMENT = {"tflite-int8": 0.95}
MIN_UNKNOWN_AGREEMENT_DEFAULT = 0.99


@dataclass(frozen=True)
class Parity:
    """An artifact's outputs on the parity images, compared with the Keras model's.

    agreement: share of images whose top-1 class is Keras's top-1 class (multi-label: of (image, class) decisions
        at the thresholds that are Keras's decisions).
    max_difference / mean_difference: over every image and class, |p_artifact - p_keras|.
    keras_accuracy / accuracy: top-1 accuracy against the labels, of Keras and of the artifact (multi-label: the
        share of decisions that match the labels).
    seconds: wall time of the artifact's runtime over the images (batches of 32).
    image_agreement: multi-label only: the share of images whose every decision is Keras's.
    nonfinite: how many of the artifact's probabilities are NaN or infinite (any fails every gate: a comparison
        with NaN is never "too far", so the figures alone cannot see it).
    unknown_agreement: the share of images the artifact accepts or rejects as unknown as the run does
        (`tlcli.export.unknown`; None: no rule the artifacts apply), gated by `MIN_UNKNOWN_AGREEMENT`.
    """

    images: int
    agreement: float
    max_difference: float
    mean_difference: float
    keras_accuracy: float
    accuracy: float
    seconds: float
    image_agreement: float | None = None
    nonfinite: int = 0
    unknown_agreement: float | None = None

    @property
    def multi_label(self) -> bool:
        return self.image_agreement is not None

    @property
    def accuracy_drop(self) -> float:
        """Accuracy points (0-100) lost against Keras (negative when the artifact does better)."""
        return 100.0 * (self.keras_accuracy - self.accuracy)

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "accuracy_drop": round(self.accuracy_drop, 4)}
        if data["image_agreement"] is None:
            del data["image_agreement"]  # single-label records stay as they were
        if not data["nonfinite"]:
            del data["nonfinite"]
        if data["unknown_agreement"] is None:
            del data["unknown_agreement"]
        # export.json stays standard JSON: a NaN figure is written as null
        return {key: None if isinstance(v, float) and not np.isfinite(v) else v for key, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parity:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def compare(
    reference: np.ndarray,
    probabilities: np.ndarray,
    labels: np.ndarray,
    seconds: float,
    thresholds: Sequence[float] | None = None,
    rule: UnknownRule | None = None,
) -> Parity:
    """Parity of `probabilities` against the Keras model's `reference` ((n, classes) each) on images labelled `labels`
    ((n,) class indices; multi-label, `thresholds` given: (n, classes) 0/1 rows); with the run's `rule` for unknown
    images, also how often the accept/reject decisions agree."""
    reference = np.asarray(reference, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if reference.shape != probabilities.shape:
        raise ValueError(f"outputs of shape {probabilities.shape}, the Keras model's are {reference.shape}")
    if not len(reference):
        raise ValueError("no parity images")
    difference = np.abs(probabilities - reference)
    nonfinite = int((~np.isfinite(probabilities)).sum())
    if thresholds is not None:
        parity = _compare_decisions(
            reference, probabilities, np.asarray(labels), np.asarray(thresholds, dtype=np.float64), difference, seconds
        )
        return dataclasses.replace(parity, nonfinite=nonfinite)
    keras_top, top = reference.argmax(axis=1), probabilities.argmax(axis=1)
    return Parity(
        nonfinite=nonfinite,
        unknown_agreement=decision_agreement(rule, reference, probabilities),
        images=len(reference),
        agreement=float((keras_top == top).mean()),
        max_difference=float(difference.max()),
        mean_difference=float(difference.mean()),
        keras_accuracy=float((keras_top == labels).mean()),
        accuracy=float((top == labels).mean()),
        seconds=round(float(seconds), 4),
    )


def _compare_decisions(reference, probabilities, labels, thresholds, difference, seconds: float) -> Parity:
    """Multi-label parity: every (image, class) decision at the class's threshold, as `predict` and `evaluate` make
    it."""
    keras_on, on = reference >= thresholds[None, :], probabilities >= thresholds[None, :]
    truth = labels.astype(bool)
    return Parity(
        images=len(reference),
        agreement=float((keras_on == on).mean()),
        max_difference=float(difference.max()),
        mean_difference=float(difference.mean()),
        keras_accuracy=float((keras_on == truth).mean()),
        accuracy=float((on == truth).mean()),
        seconds=round(float(seconds), 4),
        image_agreement=float((keras_on == on).all(axis=1).mean()),
    )


def gate_failures(name: str, parity: Parity, gate: Gate) -> list[str]:
    """One line per figure of `parity` on the wrong side of `gate`, naming the format and how to change the
    threshold."""
    failures = []
    if parity.nonfinite:
        failures.append(
            f"{name}: gives {parity.nonfinite} NaN or infinite probabilities on {parity.images} images "
            "(a damaged artifact; no gate passes it)"
        )
    what = "per-label agreement" if parity.multi_label else "top-1 agreement"
    if gate.min_agreement is not None and parity.agreement < gate.min_agreement:
        failures.append(
            f"{name}: {what} {parity.agreement:.4f} < {gate.min_agreement:g} ({OPTIONS['min_agreement']} {name}=X)"
        )
    if gate.max_difference is not None and parity.max_difference > gate.max_difference:
        failures.append(
            f"{name}: max probability difference {parity.max_difference:.3g} > {gate.max_difference:g} "
            f"({OPTIONS['max_difference']} {name}=X)"
        )
    if gate.max_accuracy_drop is not None and parity.accuracy_drop > gate.max_accuracy_drop:
        failures.append(
            f"{name}: {'per-label accuracy' if parity.multi_label else 'accuracy'} {parity.accuracy:.4f} is "
            f"{parity.accuracy_drop:.2f} points below Keras's {parity.keras_accuracy:.4f} "
            f"(> {gate.max_accuracy_drop:g}; {OPTIONS['max_accuracy_drop']} {name}=X)"
        )
    return failures + unknown_failures(name, parity)


def unknown_failures(name: str, parity: Parity) -> list[str]:
    """A failure line when the artifact accepts or rejects unknown images differently from the run too often."""
    least = MIN_UNKNOWN_AGREEMENT.get(name, MIN_UNKNOWN_AGREEMENT_DEFAULT)
    if parity.unknown_agreement is None or parity.unknown_agreement >= least:
        return []
    return [
        f"{name}: accepts or rejects unknown images as the run does on {parity.unknown_agreement:.4f} of the images "
        f"< {least:g} (its probabilities move the decisions at the threshold)"
    ]
