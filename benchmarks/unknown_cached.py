"""`tlcli evaluate RUN --unknown DIR`'s `unknown` figures, computed from the feature cache instead of the pixels.

    python benchmarks/unknown_cached.py loco EUROSAT_ALL RUN:HELD_OUT [RUN:HELD_OUT ...]   # one JSON row per run
    python benchmarks/unknown_cached.py check RUN DATA UNKNOWN     # DATA: train/ + test/; UNKNOWN: train/ (any split)

A frozen base's pooled features are what the feature cache holds (keyed by each image's bytes), so a run's logits
are its head on those features (`tlcli.inference.outputs.head_logits`) and its scores are
`tlcli.inference.unknown.score_images` on them, with the run's own rule (unknown.json) and training features
(unknown_features.npz): the same figures as `evaluate --unknown` without passing 2,000 images through MobileNetV2
once per run (about 5 minutes a run on the shared machine). `benchmarks/unknown.py` checks the two agree on a
hymenoptera run (its `cached_check`) before it uses this for eurosat's leave-one-class-out runs.

EUROSAT_ALL: a train/ + test/ folder of all ten classes; RUN:HELD_OUT: a run trained on the nine other classes and
the index (in sorted class order) of the class held out, whose test/ images are the unknowns.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def fast_mahalanobis() -> None:
    """tlcli's `FeatureBank.mahalanobis` (at 105cfab) with its einsum replaced by a matrix product: the same values
    (checked with np.allclose), 50x faster (500 images x 9 classes: 129 s vs 2.5 s on the shared machine), so that
    scoring 30 eurosat runs takes minutes, not hours. Reported to the lead as a defect of the einsum."""
    from tlcli.inference.unknown import FeatureBank, normalised

    def mahalanobis(self, features: np.ndarray) -> np.ndarray:
        bank, query = self.with_statistics(), normalised(features)
        distances = [(((query - mean) @ bank.precision) * (query - mean)).sum(axis=1) for mean in bank.means]
        return -np.min(np.stack(distances, axis=1), axis=1) if len(query) else np.zeros(0)

    FeatureBank.mahalanobis = mahalanobis


def figures(run_dir: Path, features: np.ndarray, labels: np.ndarray, unknown: np.ndarray) -> dict:
    """The `unknown` object of `evaluate RUN --unknown` for in-distribution `features` (class indices `labels` of
    the run) and unknown images' features `unknown`."""
    from tlcli.evaluation.calibration import calibration_errors
    from tlcli.inference.outputs import head_logits
    from tlcli.inference.predict import run_source
    from tlcli.inference.unknown import SCORES, STANDARDISE, score_images
    from tlcli.runs.records import read_model_info

    source = run_source(run_dir)
    rule, bank, binary = source.unknown, source.bank, read_model_info(run_dir).binary
    known, outside = (head_logits(source.model, x, binary) for x in (features, unknown))
    stats = rule.params.get(STANDARDISE)  # knn_energy's validation statistics (runs trained before it: none)
    by_score = {}
    for name in SCORES:
        if name == "knn_energy" and not stats:
            continue
        inside = score_images(name, known, features, bank, rule.temperature, stats)
        out = score_images(name, outside, unknown, bank, rule.temperature, stats)
        by_score[name] = auroc(inside, out)
    chosen = score_images(rule.score, known, features, bank, rule.temperature, stats)
    accepted = rule.accepts(chosen)
    correct = known.argmax(axis=1) == labels
    before, after = calibration_errors(known, labels, rule.temperature)
    return {
        "score": rule.score,
        "temperature": rule.temperature,
        "ece_before": before,
        "ece_after": after,
        "accept": rule.accept,
        "threshold": rule.threshold,
        "images": int(len(labels)),
        "coverage": round(float(accepted.mean()), 6),
        "accuracy_all": round(float(correct.mean()), 6),
        "accuracy_accepted": round(float(correct[accepted].mean()), 6) if accepted.any() else None,
        "n_unknown": int(len(unknown)),
        "auroc": by_score[rule.score],
        "false_accept_rate": round(
            float(rule.accepts(score_images(rule.score, outside, unknown, bank, rule.temperature, stats)).mean()), 6
        ),
        "auroc_by_score": by_score,
        "from": "feature cache (benchmarks/unknown_cached.py)",
    }


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    truth = np.concatenate([np.ones(len(inside)), np.zeros(len(outside))])
    return round(float(roc_auc_score(truth, np.concatenate([inside, outside]))), 6)


def main(argv: list[str]) -> int:
    import unknown_scores

    fast_mahalanobis()
    if argv[0] == "check":
        run_dir, data, unknown = (Path(a) for a in argv[1:4])
        test = unknown_scores.embed_folder(data)["test"]
        outside = np.concatenate([s.x for s in unknown_scores.embed_folder(unknown).values()]).astype(np.float32)
        row = figures(run_dir, test.x.astype(np.float32), test.y, outside)
        print(json.dumps({"run_dir": str(run_dir), "unknown": row}), flush=True)
        return 0
    test = unknown_scores.embed_folder(Path(argv[1]))["test"]
    for item in argv[2:]:
        run_dir, k = item.rsplit(":", 1)
        k = int(k)
        inside = test.y != k
        labels = np.where(test.y[inside] > k, test.y[inside] - 1, test.y[inside])
        row = figures(Path(run_dir), test.x[inside].astype(np.float32), labels, test.x[~inside].astype(np.float32))
        print(json.dumps({"run_dir": run_dir, "held_out": k, "unknown": row}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
