"""The `predict:` section of the schema: how a run's predictions are served (docs/guides/unknown-images.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tlcli.config.fields import Section

UnknownScore = Literal["msp", "energy", "knn", "mahalanobis", "knn_energy"]


class UnknownConfig(Section):
    """Rejecting images of no class: a score of how much an image is like the training data, and a threshold."""

    accept: float = Field(
        0.95,
        gt=0,
        le=1,
        description=(
            "The share of in-distribution images to accept: the threshold is set on the validation split so that "
            "this fraction of its images scores above it; `tlcli predict`/`evaluate --accept F` move it without "
            "retraining. Images below it are predicted `unknown` (with their score and the would-be label)."
        ),
    )
    score: UnknownScore = Field(
        "knn_energy",
        description=(
            "How an image is scored: `knn_energy` (the default: `knn` plus `energy`, each standardised by its mean "
            "and standard deviation on validation; see docs/guides/unknown-images.md for the measured comparison), "
            "`knn` (the distance to the 5th nearest training image in the normalised pooled features), "
            "`mahalanobis` (the class-conditional Mahalanobis distance on them), `msp` (the highest calibrated "
            "probability, as log-odds) or `energy` (the log-sum-exp of the logits). Exported models apply `msp`: "
            "for another score, the msp rule recorded on the same validation images. Single-label runs only."
        ),
    )


class PredictConfig(Section):
    """Serving the trained model: `tlcli predict`, `tlcli evaluate` and exported models read it from the run."""

    unknown: UnknownConfig = Field(
        default_factory=UnknownConfig,
        description="Calibrated rejection of images that belong to no class (docs/guides/unknown-images.md).",
    )
