"""Every linear head on the frozen features, scored on the test split: how far any head search could get.

    python benchmarks/linear_heads.py DATA_DIR

DATA_DIR holds `train/` and `test/` (the layout of `benchmarks/quality.py`). The
smallest config (MobileNet alpha 0.25, ImageNet weights, 224 px) is prepared as
`tlcli train` prepares it: the same decoder, extraction (through
$TLCLI_CACHE_DIR) and 20% validation hold-out by file hash. Then, with tlcli's
own exact fit (`tlcli.training.selection.fit_probe`, L-BFGS to convergence), at
every penalty C of a fine grid (quarter decades from 1e-3 to 10, plus the
defaults' own grid): the validation loss of the head fitted on the training
split (what the defaults choose C by), and the test accuracy of the head refitted
on train + validation at that C (what a default run ends with). A linear head
trained by epochs (any optimizer, rate, batch size, dropout, number of epochs)
approaches one of these optima, so the curve's maximum bounds what a search over
those settings can reach on the test split. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FINE_GRID = tuple(round(10 ** (k / 4), 6) for k in range(-12, 5))  # 1e-3 .. 10 in quarter decades


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    args = parser.parse_args(argv)

    import numpy as np

    from tlcli import load_config
    from tlcli.data.batches import class_weights
    from tlcli.features.cut import Cut
    from tlcli.progress import Reporter
    from tlcli.training.passes import extract_splits
    from tlcli.training.prepare import prepare
    from tlcli.training.selection import PENALTY_GRID, fit_probe, score

    config = load_config({"data": {"dir": str(args.data_dir)}, "base": {"name": "MobileNet", "args": {"alpha": 0.25}}})
    prepared = prepare(config, reporter=Reporter())
    sets, _ = extract_splits(prepared, Cut("pool"), Reporter())
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (
        (sets[s].features, sets[s].labels) for s in ("train", "val", "test")
    )
    n, names = prepared.num_classes, prepared.splits.class_names
    all_x, all_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    on_train, on_all = (
        class_weights(train_y, n, config.train.class_weight, names),
        class_weights(all_y, n, config.train.class_weight, names),
    )
    rows = []
    for C in sorted(set(FINE_GRID) | set(PENALTY_GRID)):
        val = score(fit_probe(train_x, train_y, C, n, on_train).probabilities(val_x), val_y)
        test = score(fit_probe(all_x, all_y, C, n, on_all).probabilities(test_x), test_y)
        rows.append(
            {
                "C": C,
                "val_loss": round(val["loss"], 4),
                "val_accuracy": round(val["accuracy"], 4),
                "test_accuracy": round(test["accuracy"], 4),
                "in_defaults_grid": C in PENALTY_GRID,
            }
        )
    chosen = min((r for r in rows if r["in_defaults_grid"]), key=lambda r: (r["val_loss"], -r["C"]))
    best = max(rows, key=lambda r: r["test_accuracy"])
    print(
        json.dumps(
            {
                "images": {"train": len(train_x), "val": len(val_x), "test": len(test_x)},
                "defaults_C": chosen["C"],
                "defaults_test_accuracy": chosen["test_accuracy"],
                "best_test_accuracy": best["test_accuracy"],
                "rows": rows,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
