"""Which out-of-distribution score should tlcli's default be? A library-level comparison on tlcli's own features.

    python benchmarks/unknown_scores.py                 # hymenoptera vs cats_and_dogs + eurosat leave-one-class-out
    python benchmarks/unknown_scores.py --quick         # smoke: eurosat with 2 held-out classes only

Running time: about 4 minutes on 2 shared cores with a cold feature cache (extraction of about 4,400 images at
224 px dominates), under 30 s warm.

Features: tlcli's own extraction (`tlcli.audit.embed.embed_splits`: MobileNetV2 1.0, ImageNet weights, 224 px,
average pooling, through the feature cache `tlcli train` uses). Head: the smallest config's exact linear probe
(`tlcli.training.selection.fit_probes`: a multinomial logistic regression at each C of `PENALTY_GRID`, the lowest
validation loss kept) fitted on the training part; the validation part (tlcli's 20% hash split of train/) fits the
temperature (by likelihood) and the 95%-acceptance thresholds. Scores (all oriented so that higher = more like the
training data):

- `msp`: the maximum calibrated probability, softmax(logits / T);
- `energy`: T * logsumexp(logits / T) (minus the energy) at T = 1 and at the calibrated T;
- `knn1`, `knn5`, `knn10`: minus the distance to the k-th nearest training feature, features L2-normalised;
- `knn5+energy`, `knn5+msp`: the sum of the two scores, each standardised by its validation mean and deviation;
- `mahalanobis`: minus the smallest class-conditional Mahalanobis distance, class means of the training part and one
  shared covariance (Ledoit-Wolf shrinkage), on the raw pooled features; `mahalanobis_l2`: the same on L2-normalised
  features.

A two-class logistic regression has one logit z; its softmax logits are taken as (-z/2, z/2) (what tlcli's
two-unit softmax head holds: `tlcli.training.selection.warm_start`), so energy ranks like msp there.

Setups: (a) hymenoptera (train/ -> train + validation by tlcli's hash split; in-distribution = its val/ images)
against cats_and_dogs_filtered's 1,000 validation images; (b) eurosat leave-one-class-out: 9 classes' train/
(with the same hash split), the 10th class's test/ images are unknown, in-distribution = the 9 classes' test/
images, each class in turn. Writes `<out>/score_choice.json` and `<out>/score_choice.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared"
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
SCORES = (
    "msp",
    "energy",
    "energy_T1",
    "knn1",
    "knn5",
    "knn10",
    "mahalanobis",
    "mahalanobis_l2",
    "knn5+energy",
    "knn5+msp",
)
COMBINED = {"knn5+energy": ("knn5", "energy_T1"), "knn5+msp": ("knn5", "msp")}
ACCEPT = 0.95


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # (n, d) pooled features
    y: np.ndarray  # (n,) class indices (-1: unknown)


@dataclass(frozen=True)
class Task:
    """One setup: training part, validation part, in-distribution test images and unknown images."""

    name: str
    train: Split
    val: Split
    test: Split
    unknown: np.ndarray


# ----------------------------------------------------------------------------- features (tlcli's own)


def link_layout(work: Path, name: str, train: Path, test: Path | None) -> Path:
    """`<work>/data/<name>/{train,test}` as symlinks (the shared data is never copied)."""
    folder = work / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    for link, target in (("train", train), ("test", test)):
        if target is not None and not (folder / link).exists():
            (folder / link).symlink_to(target)
    return folder


def embed_folder(folder: Path) -> dict[str, Split]:
    """Every split of `folder` (train/ [+ test/], validation by tlcli's hash split) embedded by tlcli."""
    from tlcli.audit.embed import embed_splits, embedding_config
    from tlcli.config.schema import DataConfig
    from tlcli.data.splits import discover_splits

    config = embedding_config(DataConfig(dir=folder))
    embedded = embed_splits(discover_splits(config.data), config)
    return {s.name: Split(s.features.astype(np.float64), np.asarray(s.labels)) for s in embedded.splits}


def hymenoptera_task(work: Path, data: Path) -> Task:
    hym = embed_folder(link_layout(work, "hymenoptera", data / "hymenoptera" / "train", data / "hymenoptera" / "val"))
    cats = link_layout(work, "cats_dogs_val", data / "cats_and_dogs_filtered" / "validation", None)
    unknown = np.concatenate([s.x for s in embed_folder(cats).values()])
    return Task("hymenoptera vs cats_and_dogs", hym["train"], hym["val"], hym["test"], unknown)


def eurosat_tasks(work: Path, data: Path, held_out: list[int] | None = None) -> list[Task]:
    """Leave-one-class-out tasks made from one embedding of the whole set (the hash split is per file, so a
    9-class folder would give the same training and validation parts)."""
    euro = embed_folder(link_layout(work, "eurosat", data / "eurosat" / "train", data / "eurosat" / "test"))
    classes = sorted(int(c) for c in np.unique(euro["train"].y))
    names = sorted(p.name for p in (data / "eurosat" / "train").iterdir() if p.is_dir())
    tasks = []
    for k in held_out if held_out is not None else classes:

        def keep(split: Split, k=k) -> Split:
            mask = split.y != k
            y = split.y[mask]
            return Split(split.x[mask], np.where(y > k, y - 1, y))

        unknown = euro["test"].x[euro["test"].y == k]
        tasks.append(
            Task(f"eurosat without {names[k]}", keep(euro["train"]), keep(euro["val"]), keep(euro["test"]), unknown)
        )
    return tasks


# ----------------------------------------------------------------------------- the head and the scores


def fit_head(task: Task):
    """The smallest config's head: the exact probe at the penalty of lowest validation loss."""
    from tlcli.training.selection import fit_probes

    classes = int(task.train.y.max()) + 1
    selection = fit_probes(task.train.x, task.train.y, task.val.x, task.val.y, classes, None)
    return selection.models[selection.chosen.C], selection.chosen.C


def logits(probe, x: np.ndarray) -> np.ndarray:
    """The head's logits: (-z/2, z/2) for a two-class probe (tlcli's two-unit softmax), else coef x + b."""
    coef, intercept = probe.weights()
    z = x @ coef.T.astype(np.float64) + intercept.astype(np.float64)
    return np.concatenate([-z / 2, z / 2], axis=1) if z.shape[1] == 1 else z


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1)
    return m + np.log(np.exp(z - m[:, None]).sum(axis=1))


def fit_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """The temperature of lowest validation negative log-likelihood (one scalar, searched on log T)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        return float((logsumexp(s) - s[np.arange(len(y)), y]).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded").x))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top class (equal-width confidence bins)."""
    conf, right = p.max(axis=1), p.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(conf[inside].mean() - right[inside].mean())
    return float(total)


class Scorer:
    """Every score of one fitted head and its training features."""

    def __init__(self, probe, temperature: float, train: Split):
        from sklearn.covariance import LedoitWolf

        self.probe, self.t = probe, temperature
        self.bank = normalise(train.x)
        classes = np.unique(train.y)
        self.means = np.stack([train.x[train.y == c].mean(axis=0) for c in classes])
        centred = train.x - self.means[np.searchsorted(classes, train.y)]
        self.precision = LedoitWolf().fit(centred).precision_
        unit = normalise(train.x)
        self.unit_means = np.stack([unit[train.y == c].mean(axis=0) for c in classes])
        self.unit_precision = LedoitWolf().fit(unit - self.unit_means[np.searchsorted(classes, train.y)]).precision_

    def all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        z = logits(self.probe, x)
        out = {
            "msp": softmax(z / self.t).max(axis=1),
            "energy": self.t * logsumexp(z / self.t),
            "energy_T1": logsumexp(z),
        }
        distances = knn_distances(normalise(x), self.bank, 10)
        out["knn1"], out["knn5"], out["knn10"] = -distances[:, 0], -distances[:, 4], -distances[:, 9]
        out["mahalanobis"] = -mahalanobis(x, self.means, self.precision)
        out["mahalanobis_l2"] = -mahalanobis(normalise(x), self.unit_means, self.unit_precision)
        return out


def mahalanobis(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """The smallest squared Mahalanobis distance of each row to a class mean (one shared precision matrix)."""
    best = np.full(len(x), np.inf)
    for mean in means:
        d = x - mean
        best = np.minimum(best, ((d @ precision) * d).sum(axis=1))  # BLAS (einsum here took minutes)
    return best


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_distances(x: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """The k smallest Euclidean distances of each row of x to the bank, ascending (rows L2-normalised)."""
    squared = np.maximum(2.0 - 2.0 * x @ bank.T, 0.0)
    k = min(k, bank.shape[0])
    return np.sqrt(np.sort(np.partition(squared, k - 1, axis=1)[:, :k], axis=1))


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.ones(len(inside)), np.zeros(len(outside))], np.r_[inside, outside]))


def evaluate_task(task: Task) -> dict:
    """AUROC of every score, and at each score's 95%-acceptance threshold (on validation): the unknowns accepted,
    the in-distribution test images accepted, and the accuracy on accepted test images."""
    probe, c = fit_head(task)
    zval = logits(probe, task.val.x)
    t = fit_temperature(zval, task.val.y)
    scorer = Scorer(probe, t, task.train)
    val, test, unknown = scorer.all(task.val.x), scorer.all(task.test.x), scorer.all(task.unknown)
    for name, parts in COMBINED.items():  # the sum of the parts, each standardised on validation
        scale = {p: (val[p].mean(), val[p].std() or 1.0) for p in parts}
        for scores in (val, test, unknown):
            scores[name] = sum((scores[p] - scale[p][0]) / scale[p][1] for p in parts)
    right = logits(probe, task.test.x).argmax(axis=1) == task.test.y
    ztest = logits(probe, task.test.x)
    row = {
        "task": task.name,
        "C": c,
        "temperature": round(t, 4),
        "images": {
            "train": len(task.train.y),
            "val": len(task.val.y),
            "test": len(task.test.y),
            "unknown": len(task.unknown),
        },
        "ece_val_before": round(ece(softmax(zval), task.val.y), 4),
        "ece_val_after": round(ece(softmax(zval / t), task.val.y), 4),
        "ece_test_before": round(ece(softmax(ztest), task.test.y), 4),
        "ece_test_after": round(ece(softmax(ztest / t), task.test.y), 4),
        "accuracy_all": round(float(right.mean()), 4),
        "scores": {},
    }
    for name in SCORES:
        threshold = float(np.quantile(val[name], 1 - ACCEPT))
        accepted = test[name] >= threshold
        row["scores"][name] = {
            "auroc": round(auroc(test[name], unknown[name]), 4),
            "false_accept_rate": round(float((unknown[name] >= threshold).mean()), 4),
            "test_accepted": round(float(accepted.mean()), 4),
            "accuracy_accepted": round(float(right[accepted].mean()), 4) if accepted.any() else None,
        }
    return row


# ----------------------------------------------------------------------------- the report


def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean (and min) over tasks of each score's AUROC and false-acceptance rate."""
    out = {}
    for name in SCORES:
        aurocs = [r["scores"][name]["auroc"] for r in rows]
        fars = [r["scores"][name]["false_accept_rate"] for r in rows]
        out[name] = {
            "auroc_mean": round(float(np.mean(aurocs)), 4),
            "auroc_min": round(float(np.min(aurocs)), 4),
            "far_mean": round(float(np.mean(fars)), 4),
        }
    return out


def markdown(result: dict) -> str:
    hym, euro = result["hymenoptera"], result["eurosat"]
    mean = result["eurosat_mean"]
    lines = [
        "# Which OOD score is the default: measured on tlcli's own features",
        "",
        f"`benchmarks/unknown_scores.py` ({result['when']}, {result['seconds']:.0f} s, load before/after "
        f"{result['load_before']} / {result['load_after']}). MobileNetV2 1.0 ImageNet 224 px average-pooled features "
        "from tlcli's feature cache; head = the smallest config's exact probe (multinomial logistic regression, C of "
        "lowest validation loss over `PENALTY_GRID`) fitted on the training part (tlcli's 20% hash split held out as "
        "validation); temperature fitted on validation by likelihood; thresholds accept 95% of validation images. "
        "Scores are higher = more in-distribution.",
        "",
        "| score | hymenoptera vs cats/dogs AUROC | FAR @95% val | test accepted | acc. accepted "
        "| eurosat LOCO mean AUROC | min | mean FAR @95% val |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in SCORES:
        s = hym["scores"][name]
        lines.append(
            f"| {name} | {s['auroc']:.4f} | {s['false_accept_rate']:.3f} | {s['test_accepted']:.3f} | "
            f"{s['accuracy_accepted']} | {mean[name]['auroc_mean']:.4f} | {mean[name]['auroc_min']:.4f} | "
            f"{mean[name]['far_mean']:.3f} |"
        )
    lines += [
        "",
        f"hymenoptera: C={hym['C']}, T={hym['temperature']}, accuracy on all test images {hym['accuracy_all']}, "
        f"ECE (test) {hym['ece_test_before']} -> {hym['ece_test_after']}, images {hym['images']}.",
        "",
        "## eurosat leave-one-class-out, AUROC per held-out class",
        "",
        "| held out | C | T | acc. all | " + " | ".join(SCORES) + " |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in SCORES) + " |",
    ]
    for r in euro:
        cells = " | ".join(f"{r['scores'][n]['auroc']:.4f}" for n in SCORES)
        lines.append(f"| {r['task'].split()[-1]} | {r['C']} | {r['temperature']} | {r['accuracy_all']} | {cells} |")
    lines += ["", "## Recommendation", "", result["recommendation"], ""]
    return "\n".join(lines)


def recommend(hym: dict, mean: dict) -> str:
    """Among the scores that meet the hymenoptera target (AUROC >= 0.95), the best eurosat mean; none: the best
    worst-case of the two."""
    meeting = [n for n in SCORES if hym["scores"][n]["auroc"] >= 0.95]
    ranked = sorted(meeting, key=lambda n: -mean[n]["auroc_mean"]) or sorted(
        SCORES, key=lambda n: -min(hym["scores"][n]["auroc"], mean[n]["auroc_mean"])
    )
    best = ranked[0]
    why = (
        "the best eurosat mean among the scores with hymenoptera AUROC >= 0.95"
        if meeting
        else "no score reaches hymenoptera AUROC 0.95; the best worst-case of the two setups"
    )
    return (
        f"Default: `{best}` ({why}: "
        f"hymenoptera AUROC {hym['scores'][best]['auroc']:.4f}, eurosat mean {mean[best]['auroc_mean']:.4f}; the "
        f"max-probability baseline `msp`: {hym['scores']['msp']['auroc']:.4f} and {mean['msp']['auroc_mean']:.4f}). "
        "Eurosat means, best first: "
        + ", ".join(f"{n} {mean[n]['auroc_mean']:.4f}" for n in sorted(SCORES, key=lambda n: -mean[n]["auroc_mean"]))
        + "."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "datasets")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "unknown_scores")
    parser.add_argument("--out", type=Path, default=HERE / "work" / "unknown_scores")
    parser.add_argument("--quick", action="store_true", help="eurosat with 2 held-out classes only")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    load_before, started = Path("/proc/loadavg").read_text().split()[:3], time.perf_counter()
    hym = evaluate_task(hymenoptera_task(args.work, args.data))
    print(json.dumps(hym), flush=True)
    euro = []
    for task in eurosat_tasks(args.work, args.data, [0, 1] if args.quick else None):
        euro.append(evaluate_task(task))
        print(task.name, {n: s["auroc"] for n, s in euro[-1]["scores"].items()}, flush=True)
    mean = summary(euro)
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": round(time.perf_counter() - started, 1),
        "load_before": " ".join(load_before),
        "load_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "hymenoptera": hym,
        "eurosat": euro,
        "eurosat_mean": mean,
        "recommendation": recommend(hym, mean),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "score_choice.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "score_choice.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
