"""The linear-probe ceiling of issue 12, on tlcli's own decoded images.

    python benchmarks/probe_ceiling.py DATA_DIR --seed 1

DATA_DIR holds `train/` and `test/`. The frozen MobileNet (alpha 0.25,
ImageNet weights, 224 px) features are average-pooled, exactly as tlcli
computes them (its decoder, its extraction), for every image of `train/` and
`test/`. Then scikit-learn's `LogisticRegression(max_iter=5000)` on the
unscaled features: `C` chosen from (0.03, 0.1, 0.3, 1, 3) by accuracy on a
fixed random 20% of the training folder (drawn with `--seed`), refitted on all
of it, scored on `test/`. Prints one JSON line.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

CS = (0.03, 0.1, 0.3, 1, 3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="draws the 20% of the training folder that chooses C")
    args = parser.parse_args(argv)

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from tlcli import load_config
    from tlcli.features.cut import Cut
    from tlcli.progress import Reporter
    from tlcli.system import peak_memory_mb
    from tlcli.training.passes import extract_splits
    from tlcli.training.prepare import prepare

    # train/ and test/ as tlcli lists them; its validation hold-out is joined back: the ceiling sees the whole training
    # folder.
    config = load_config(
        {"data": {"dir": str(args.data_dir)}, "base": {"name": "MobileNet", "args": {"alpha": 0.25}}, "cache": "memory"}
    )
    prepared = prepare(config, reporter=Reporter())
    sets, _ = extract_splits(prepared, Cut("pool"), Reporter())
    x, y = (
        np.concatenate([sets["train"].features, sets["val"].features]),
        np.concatenate([sets["train"].labels, sets["val"].labels]),
    )
    test_x, test_y = sets["test"].features, sets["test"].labels
    order = np.random.default_rng(args.seed).permutation(len(x))
    held, fitted = order[: len(x) // 5], order[len(x) // 5 :]
    scores = {C: LogisticRegression(C=C, max_iter=5000).fit(x[fitted], y[fitted]).score(x[held], y[held]) for C in CS}
    best = max(CS, key=lambda C: (scores[C], -C))
    accuracy = LogisticRegression(C=best, max_iter=5000).fit(x, y).score(test_x, test_y)
    print(
        json.dumps(
            {
                "test_accuracy": round(float(accuracy), 6),
                "C": best,
                "holdout_accuracy": {str(C): round(s, 4) for C, s in scores.items()},
                "images": {"train": len(x), "test": len(test_x)},
                "wall_time_s": round(time.perf_counter() - STARTED, 3),
                "peak_memory_mb": peak_memory_mb(),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
