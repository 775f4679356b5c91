"""How sure a figure is: 95% intervals, and whether one model beats another on the same images.

- A proportion (accuracy, top-k accuracy, a class's recall, subset accuracy) gets the Wilson score interval: it
  stays inside [0, 1], is not degenerate at 0/n or n/n, and covers close to its nominal 95% even for small n
  (Newcombe 1998, "Two-sided confidence intervals for the single proportion").
- A figure with no closed form (macro F1) gets a percentile bootstrap over the images: `BOOTSTRAP_RESAMPLES`
  resamples drawn with a fixed seed (`BOOTSTRAP_SEED`), so the same predictions always give the same interval. When
  every resample gives the same value (no mistakes at all) it gives none: a bootstrap cannot see variation the
  sample lacks (the accuracy's Wilson interval still says how sure that is).
- Two models on the same images: the exact McNemar test (a two-sided exact binomial test on the images exactly one
  of them got right), and the difference of their accuracies with Newcombe's interval for paired proportions
  (Newcombe 1998, "Improving the confidence interval for the difference between two paired proportions", method
  10: the Wilson intervals of both accuracies combined through their correlation).

Intervals are `(low, high)` tuples here; `metrics.json` writes them as `[low, high]` lists in its `intervals`
object, keyed by the figure's name (`accuracy`, `per_class.<class>.recall`, `val_accuracy`, ...).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
SIGNIFICANCE = 0.05  # the McNemar p-value below which `compare` says one model is better
METHODS = (
    f"{LEVEL:.0%} intervals: Wilson score for proportions (accuracy, top-k accuracy, recall); percentile bootstrap "
    f"({BOOTSTRAP_RESAMPLES} resamples of the images, seed {BOOTSTRAP_SEED}) for macro F1"
)

Interval = tuple[float, float]


def _z(level: float) -> float:
    """The two-sided standard normal quantile of `level` (1.959964 for 0.95)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(successes: int, n: int, level: float = LEVEL) -> Interval | None:
    """The Wilson score interval of the proportion `successes / n`; None when n is 0 (nothing to be sure of)."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes: expected 0..{n}, got {successes}")
    z = _z(level)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # Exact at the edges: 0/n starts at 0 and n/n ends at 1 (rounding would leave 1e-17 either side).
    return (0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half))


def bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> Interval | None:
    """The percentile bootstrap interval of a statistic of n images.

    Args:
        statistic: `(b, n) indices -> (b,) values`: the statistic of each of b resamples (rows of image indices).
        n: the number of images.
        resamples: how many resamples; `seed`: the generator's seed (same seed, same interval).

    Returns:
        (low, high), or None for no images or when every resample gives the same value.
    """
    if n <= 0:
        return None
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)  # resamples per batch: bounded memory whatever n
    values = np.concatenate(
        [statistic(rng.integers(0, n, size=(min(chunk, resamples - start), n))) for start in range(0, resamples, chunk)]
    )
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    # Every resample alike (no mistakes at all): the bootstrap cannot see variation the sample lacks; claim nothing.
    return None if low == high else (float(low), float(high))


def macro_f1_statistic(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """Macro F1 of resampled images, as scikit-learn computes it over all `n_classes` (a class never true nor
    predicted counts 0): the statistic `bootstrap` takes."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)

    def statistic(indices: np.ndarray) -> np.ndarray:
        b = len(indices)
        offsets = np.arange(b)[:, None] * n_classes
        truth, guess = labels[indices] + offsets, predicted[indices] + offsets

        def counts(cells: np.ndarray) -> np.ndarray:
            return np.bincount(cells, minlength=b * n_classes).reshape(b, n_classes)

        hits = counts(truth[labels[indices] == predicted[indices]])
        both = counts(truth.ravel()) + counts(guess.ravel())
        f1 = np.divide(2 * hits, both, out=np.zeros(both.shape), where=both > 0)
        return f1.mean(axis=1)

    return statistic


def rounded(interval: Interval | None, digits: int = 6) -> list[float] | None:
    """The interval as metrics.json writes it: `[low, high]`."""
    return None if interval is None else [round(interval[0], digits), round(interval[1], digits)]


def single_label_intervals(
    labels: np.ndarray, predicted: np.ndarray, rank: np.ndarray, class_names: Sequence[str], k: int
) -> dict[str, list[float]]:
    """The intervals of a single-label evaluation's figures: accuracy, top-k accuracy and each class's recall
    (Wilson), macro F1 (bootstrap). `rank`: how many classes scored above the true one, per image."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    n = len(labels)
    found = {
        "accuracy": wilson(int((labels == predicted).sum()), n),
        f"top{k}_accuracy": wilson(int((rank < k).sum()), n),
    }
    for i, name in enumerate(class_names):
        mine = labels == i
        found[f"per_class.{name}.recall"] = wilson(int((predicted[mine] == i).sum()), int(mine.sum()))
    found["macro_avg.f1"] = bootstrap(macro_f1_statistic(labels, predicted, len(class_names)), n)
    return {key: rounded(interval) for key, interval in found.items() if interval is not None}


def multilabel_intervals(labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]) -> dict[str, list]:
    """The intervals of a multi-label evaluation's proportions: subset accuracy and each class's recall (Wilson)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    found = {"subset_accuracy": wilson(int((labels == predicted).all(axis=1).sum()), len(labels))}
    for i, name in enumerate(class_names):
        positives = labels[:, i] == 1
        found[f"per_class.{name}.recall"] = wilson(int(predicted[positives, i].sum()), int(positives.sum()))
    return {key: rounded(interval) for key, interval in found.items() if interval is not None}


def accuracy_intervals(final: Mapping[str, Any], images: Mapping[str, int]) -> dict[str, list[float]]:
    """Training's `final` accuracies (`val_accuracy`, `test_top5_accuracy`, ...) with their Wilson intervals, from
    each split's image count. A multi-label run's `binary_accuracy` counts image-class decisions, which are not
    independent draws: it gets none."""
    found = {}
    for key, value in final.items():
        split, _, metric = key.partition("_")
        n = int(images.get(split) or 0)
        if metric == "accuracy" or (metric.startswith("top") and metric.endswith("_accuracy")):
            interval = wilson(min(n, max(0, round(float(value) * n))), n)
            if interval is not None:
                found[key] = rounded(interval)
    return found


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """The exact McNemar test's two-sided p-value: under "both models are as good", each image only one of them got
    right is A's or B's with probability 1/2, so it is the exact binomial test of `a_only` of `a_only + b_only`."""
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(a_only, discordant, 0.5, alternative="two-sided").pvalue)


def paired_difference(both: int, a_only: int, b_only: int, neither: int, level: float = LEVEL) -> Interval:
    """Newcombe's interval (method 10) for B's accuracy minus A's on the same n images.

    Args:
        both / a_only / b_only / neither: images both models got right, only A, only B, neither.
    """
    n = both + a_only + b_only + neither
    p_a, p_b = (both + a_only) / n, (both + b_only) / n
    (l_a, u_a), (l_b, u_b) = wilson(both + a_only, n, level), wilson(both + b_only, n, level)
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    cross = both * neither - a_only * b_only
    # The correlation of the two accuracies, with Newcombe's continuity correction of a positive one.
    phi = 0.0 if margins == 0 else (max(cross - n / 2, 0) if cross > 0 else cross) / math.sqrt(margins)
    difference = p_b - p_a
    low = difference - math.sqrt(max(0.0, (p_b - l_b) ** 2 - 2 * phi * (p_b - l_b) * (u_a - p_a) + (u_a - p_a) ** 2))
    high = difference + math.sqrt(max(0.0, (u_b - p_b) ** 2 - 2 * phi * (u_b - p_b) * (p_a - l_a) + (p_a - l_a) ** 2))
    return max(-1.0, low), min(1.0, high)
