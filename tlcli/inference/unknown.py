"""Images of no class: a calibrated temperature, a score of how like the training data an image is, and a threshold.

Training fits the record (`tlcli.training.unknown`) and writes it as the run's `unknown.json` (`UNKNOWN_FILE`), the
training images' pooled features the feature-space scores need beside it (`UNKNOWN_FEATURES_FILE`); `predict`,
`evaluate` and exported models read it back as an `UnknownRule` and judge each image with it
(docs/guides/unknown-images.md).

Every score is "higher = more like the training data", and an image is accepted when its score reaches the
threshold, set on the validation split so that the `accept` fraction of its images reaches it:

- `msp`: the highest calibrated probability p of softmax(logits / T), as its log-odds log(p / (1 - p)) (the same
  order; confident images would otherwise all tie at p = 1.0 in floating point);
- `energy`: logsumexp(logits) (the negative free energy of Liu et al. 2020, at temperature 1);
- `knn`: minus the distance from the image's L2-normalised pooled features to its k-th nearest training image's
  (Sun et al. 2022);
- `mahalanobis`: minus the smallest class-conditional Mahalanobis distance on the same normalised features, with
  one shrunk covariance shared by the classes (Lee et al. 2018);
- `knn_energy` (`COMBINED`): `knn` plus `energy`, each standardised by its mean and standard deviation over the
  validation images (`standardisation`, recorded at training as the rule's `params["standardise"]`): `knn` finds
  images unlike the training data, `energy` a new class from the same domain, where `knn` fails.

Calibration works from the model's probabilities alone (`FORMULA`), so an exported artifact's outputs calibrate
the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlcli.errors import RunError, UserError
from tlcli.runs.atomic import read_json
from tlcli.runs.folder import UNKNOWN_FEATURES_FILE, UNKNOWN_FILE

UNKNOWN_LABEL = "unknown"
SCORES = ("msp", "energy", "knn", "mahalanobis", "knn_energy")
FEATURE_SCORES = ("knn", "mahalanobis", "knn_energy")
COMBINED = {"knn_energy": ("knn", "energy")}  # a sum of these scores, each standardised on validation
STANDARDISE = "standardise"  # the key of the components' validation statistics in the rule's params
KNN_K = 5  # the k-th nearest training image (capped by the bank's size)
BANK_MAX = 5000  # training images kept for the feature-space scores (a seeded sample above this)
SHRINKAGE = 0.1  # mahalanobis: the covariance shrunk this far towards its mean variance (fewer images than features)
FORMULA = "p = softmax(log(p_model) / temperature)"
RECORD_VERSION = 1


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature), row by row (logits may be the log of probabilities: the same result)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


SMALLEST = float(np.finfo(np.float32).tiny)  # float32 probabilities below this (or flushed to 0) count as this


def logits_of_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """log(p): logits up to a constant per row, which neither softmax nor `msp` sees."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), SMALLEST, 1.0))


def class_logits(outputs: np.ndarray, binary: bool) -> np.ndarray:
    """(n, classes) logits; a sigmoid head's single logit z becomes [-z/2, z/2]: softmax gives [1 - p, p], and the
    pair is symmetric like a two-unit softmax head's, so `energy` ranks a confident class 0 above an undecided image."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if binary:
        z = outputs.reshape(len(outputs), -1)[:, 0] / 2
        return np.stack([-z, z], axis=1)
    return outputs


def normalised(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class FeatureBank:
    """The training images' L2-normalised pooled features and labels, and the class means and shared precision
    matrix `mahalanobis` derives from them."""

    features: np.ndarray  # (n, d) float32, rows of norm 1
    labels: np.ndarray  # (n,) int
    means: np.ndarray = field(repr=False, default=None)  # (classes, d)
    precision: np.ndarray = field(repr=False, default=None)  # (d, d)

    @classmethod
    def of(cls, features: np.ndarray, labels: np.ndarray, seed: int = 0, limit: int = BANK_MAX) -> FeatureBank:
        """The bank of these training features (a seeded sample of `limit` images when there are more)."""
        features, labels = normalised(features), np.asarray(labels, dtype=np.int64)
        if len(features) > limit:
            keep = np.sort(np.random.default_rng(seed).choice(len(features), limit, replace=False))
            features, labels = features[keep], labels[keep]
        return cls(features.astype(np.float16).astype(np.float32), labels)  # as stored: training scores as predict

    def with_statistics(self) -> FeatureBank:
        """The bank with the class means and the shrunk shared precision `mahalanobis` uses (computed once)."""
        if self.means is not None:
            return self
        classes = np.unique(self.labels)
        means = np.stack([self.features[self.labels == c].mean(axis=0) for c in classes])
        centred = self.features - means[np.searchsorted(classes, self.labels)]
        covariance = centred.T @ centred / max(len(centred), 1)
        spread = float(np.trace(covariance)) / covariance.shape[0] or 1.0
        shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * spread * np.eye(covariance.shape[0], dtype=np.float32)
        return dataclasses.replace(self, means=means, precision=np.linalg.inv(shrunk).astype(np.float32))

    def knn(self, features: np.ndarray, k: int = KNN_K) -> np.ndarray:
        """Minus the distance to the k-th nearest bank image (features normalised here)."""
        k = max(1, min(k, len(self.features)))
        query, found = normalised(features), []
        for start in range(0, len(query), 512):  # bounded memory: 512 x bank distances at a time
            similarity = query[start : start + 512] @ self.features.T
            kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
            found.append(-np.sqrt(np.maximum(2.0 - 2.0 * kth, 0.0)))
        return np.concatenate(found) if found else np.zeros(0)

    def mahalanobis(self, features: np.ndarray) -> np.ndarray:
        """Minus the smallest class-conditional squared Mahalanobis distance (features normalised here)."""
        bank = self.with_statistics()
        query = normalised(features)
        if not len(query):
            return np.zeros(0)
        # (f - m)' P (f - m) = f'Pf - 2 f'Pm + m'Pm for every class mean m: one d x d product for all the classes
        projected_means = bank.means @ bank.precision
        quadratic = np.einsum("nd,nd->n", query @ bank.precision, query)
        distances = (
            quadratic[:, None] - 2 * query @ projected_means.T + np.einsum("cd,cd->c", projected_means, bank.means)
        )
        return -np.min(distances, axis=1)

    def save(self, path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, features=self.features.astype(np.float16), labels=self.labels.astype(np.int32))

    @classmethod
    def load(cls, path: Path) -> FeatureBank:
        try:
            with np.load(path) as stored:
                return cls(stored["features"].astype(np.float32), stored["labels"].astype(np.int64))
        except (OSError, KeyError, ValueError) as exc:
            raise RunError(f"{path}: cannot be read ({exc}); train the run again to restore it") from None


def score_images(
    name: str,
    logits: np.ndarray,
    features: np.ndarray | None = None,
    bank: FeatureBank | None = None,
    temperature: float = 1.0,
    standardise: dict[str, dict[str, float]] | None = None,
) -> np.ndarray:
    """Score `name` of each image (higher = more like the training data) from its logits and pooled features
    (`standardise`: a combined score's components' validation `mean` and `std`, from `standardisation`)."""
    if name in COMBINED:
        return _combined(name, logits, features, bank, temperature, standardise)
    if name == "msp":  # as log-odds, log(p / (1 - p)): confident images do not all tie at p = 1.0
        # from the float32 probabilities a model (or an exported artifact) outputs: the same score from either
        z = logits_of_probabilities(calibrated(logits, 1.0).astype(np.float32)) / float(temperature)
        top = z.argmax(axis=1)
        others = z.copy()
        others[np.arange(len(z)), top] = -np.inf
        return z[np.arange(len(z)), top] - _logsumexp(others)
    if name == "energy":
        return _logsumexp(np.asarray(logits, dtype=np.float64))
    if name not in FEATURE_SCORES:
        raise UserError(f"score: expected one of {', '.join(SCORES)}, got {name!r}")
    if bank is None or features is None:
        raise RunError(f"score {name} needs the pooled features and the run's {UNKNOWN_FEATURES_FILE}")
    return bank.knn(features) if name == "knn" else bank.mahalanobis(features)


def _combined(
    name: str,
    logits: np.ndarray,
    features: np.ndarray | None,
    bank: FeatureBank | None,
    temperature: float,
    standardise: dict[str, dict[str, float]] | None,
) -> np.ndarray:
    """The sum of the components of `name`, each standardised by its validation mean and standard deviation."""
    missing = [part for part in COMBINED[name] if part not in (standardise or {})]
    if missing:
        raise RunError(
            f"score {name} needs the validation mean and standard deviation of {' and '.join(missing)} "
            f"(params.{STANDARDISE} in {UNKNOWN_FILE}); train the run again"
        )
    total = np.zeros(len(logits), dtype=np.float64)
    for part in COMBINED[name]:
        stats = standardise[part]
        scores = score_images(part, logits, features, bank, temperature)
        total += (scores - float(stats["mean"])) / (float(stats["std"]) or 1.0)  # std 0: all alike, only shifted
    return total


def standardisation(
    logits: np.ndarray, features: np.ndarray, bank: FeatureBank, temperature: float = 1.0
) -> dict[str, dict[str, float]]:
    """The mean and standard deviation over these (validation) images of every score a combined score sums."""
    parts = sorted({part for combined in COMBINED.values() for part in combined})
    found = {}
    for part in parts:
        scores = np.asarray(score_images(part, logits, features, bank, temperature), dtype=np.float64)
        found[part] = {"mean": float(scores.mean()), "std": float(scores.std())}
    return found


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1)
    return top + np.log(np.exp(z - top[:, None]).sum(axis=1))


def threshold_at(scores: np.ndarray, accept: float) -> float:
    """A threshold that accepts (score >= threshold) the smallest number of `scores` not below the `accept` fraction:
    halfway between the last score accepted and the next (below the lowest when all are), so that the rounding of
    another runtime or batch does not flip the image at the edge."""
    check_accept(accept)
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if not len(ordered):
        raise RunError("no validation scores to set the threshold from")
    count = max(1, math.ceil(accept * len(ordered) - 1e-9))
    if count < len(ordered):
        return float((ordered[count - 1] + ordered[count]) / 2)
    return float(ordered[-1] - max(1e-6, 1e-3 * (ordered[0] - ordered[-1])))


def check_accept(accept: float) -> None:
    if not 0 < accept <= 1:
        raise UserError(f"accept: the share of in-distribution images to accept, in (0, 1]; got {accept}")


@dataclass(frozen=True)
class UnknownRule:
    """A run's `unknown.json`: the temperature, the score and its parameters, the validation scores and the
    threshold that accepts the `accept` fraction of them."""

    score: str
    temperature: float
    accept: float
    threshold: float
    validation_scores: tuple[float, ...]
    ece_before: float | None = None
    ece_after: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None  # where it was read from (the feature bank beside it)
    # The msp rule from the same held-out validation outputs, at the same accept fraction, for a run whose score the
    # exported artifacts cannot compute (they output probabilities only; `with_portable`). Stored as its threshold and
    # validation scores: the rest is this rule's.
    portable: UnknownRule | None = None

    @property
    def needs_features(self) -> bool:
        return self.score in FEATURE_SCORES

    @property
    def standardise(self) -> dict[str, dict[str, float]] | None:
        """The validation statistics a combined score standardises its components with (None: not recorded)."""
        return self.params.get(STANDARDISE)

    def with_accept(self, accept: float | None) -> UnknownRule:
        """The rule at another accept fraction: the threshold moved on the stored validation scores."""
        if accept is None or accept == self.accept:
            return self
        return dataclasses.replace(
            self, accept=accept, threshold=threshold_at(np.array(self.validation_scores), accept)
        )

    def accepts(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) >= self.threshold

    def bank(self) -> FeatureBank | None:
        """The training images' features, for a feature-space score (read from the run folder), else None."""
        if not self.needs_features:
            return None
        if self.run_dir is None:
            raise RunError(f"score {self.score} needs {UNKNOWN_FEATURES_FILE}, and this rule has no folder")
        bank = FeatureBank.load(Path(self.run_dir) / UNKNOWN_FEATURES_FILE)
        return bank.with_statistics() if self.score == "mahalanobis" else bank  # once, not per batch

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": RECORD_VERSION,
            "score": self.score,
            "params": dict(self.params),
            "temperature": self.temperature,
            "formula": FORMULA,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            "accept": self.accept,
            "threshold": self.threshold,
            "validation_scores": list(self.validation_scores),
            **({"portable": self.portable.scores_record()} if self.portable is not None else {}),
        }

    def scores_record(self) -> dict[str, Any]:
        """The threshold and validation scores: what a rule nested as another's `portable` stores of itself."""
        return {"threshold": self.threshold, "validation_scores": list(self.validation_scores)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_dir: Path | None = None) -> UnknownRule:
        rule = cls(
            score=str(data["score"]),
            temperature=float(data["temperature"]),
            accept=float(data["accept"]),
            threshold=float(data["threshold"]),
            validation_scores=tuple(float(s) for s in data["validation_scores"]),
            ece_before=data.get("ece_before"),
            ece_after=data.get("ece_after"),
            params=dict(data.get("params") or {}),
            run_dir=run_dir,
        )
        if not data.get("portable"):
            return rule
        stored = data["portable"]
        return rule.with_portable(float(stored["threshold"]), tuple(float(s) for s in stored["validation_scores"]))

    def with_portable(self, threshold: float, validation_scores: tuple[float, ...]) -> UnknownRule:
        """This rule carrying the msp rule with this threshold and these validation scores, for its exports."""
        portable = dataclasses.replace(
            self,
            score="msp",
            threshold=threshold,
            validation_scores=validation_scores,
            params={"in_place_of": self.score},
            run_dir=None,
            portable=None,
        )
        return dataclasses.replace(self, portable=portable)

    def summary(self) -> dict[str, Any]:
        """The record without the validation scores (export.json, evaluate's `unknown`)."""
        found = self.to_dict()
        del found["validation_scores"], found["format_version"]
        found.pop("portable", None)
        return found


def read_unknown_rule(folder: Path) -> UnknownRule | None:
    """The rule in `folder`'s `unknown.json` (a run or an export folder), or None: a run from before it, or a
    multi-label run (predicted as before).

    Raises:
        RunError: an unknown.json that cannot be read.
    """
    path = Path(folder) / UNKNOWN_FILE
    if not path.is_file():
        return None
    try:
        return UnknownRule.from_dict(read_json(path), Path(folder))
    except (ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{path}: damaged ({type(exc).__name__}: {exc}); train the run again or remove it") from None


@dataclass(frozen=True)
class Judged:
    """A batch judged: calibrated probabilities, each image's score, and whether it is accepted."""

    probabilities: np.ndarray
    scores: np.ndarray
    accepted: np.ndarray


def judge(rule: UnknownRule, logits: np.ndarray, features: np.ndarray | None, bank: FeatureBank | None) -> Judged:
    """One batch of `predict`, judged between two of the model's batches (so on one BLAS thread: `one_blas_thread`)."""
    with one_blas_thread():
        scores = score_images(rule.score, logits, features, bank, rule.temperature, rule.standardise)
    return Judged(calibrated(logits, rule.temperature), scores, rule.accepts(scores))


@functools.cache
def _blas_threads():
    from threadpoolctl import ThreadpoolController  # scikit-learn's dependency: already installed

    return ThreadpoolController()


@contextlib.contextmanager
def one_blas_thread():
    """NumPy's BLAS limited to one thread inside, restored after. A batch's score is a small product (milliseconds),
    but a threaded BLAS's workers spin-wait after it, taking the cores from TensorFlow's next batch and the decoding
    threads: `predict` measured 15% more CPU time with the rule than without, and none more on one thread."""
    with _blas_threads().limit(limits=1, user_api="blas"):
        yield
