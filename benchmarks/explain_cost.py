"""What `tlcli predict --explain` adds per image: Grad-CAM overlays on MobileNetV2 at 224 px (issue 28).

    KERAS_HOME=/path/with/models/mobilenet_v2_weights... python benchmarks/explain_cost.py [RUN_DIR]

Without RUN_DIR it trains a one-epoch head-only MobileNetV2 run (ImageNet weights, frozen base) on
`../shared/datasets/hymenoptera` into a temporary folder. Then, for 8 and for 48 validation photos (half ants,
half bees), it times `tlcli.predict` with and without `explain_dir` (the best of 2, after a warm-up that loads the
libraries) and prints the difference per image. Every call loads the model, as the command does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HYMENOPTERA = REPO.parent / "shared" / "datasets" / "hymenoptera"


def quick_run(data: Path, runs_dir: Path) -> Path:
    from tlcli import load_config, train

    config = {
        "name": "explain-cost",
        "seed": 1,
        "data": {"dir": str(data), "image_size": 224, "batch_size": 32},
        "base": {"name": "MobileNetV2", "weights": "imagenet", "trainable": "none"},
        "train": {"epochs": 1, "learning_rate": 0.001},
        "probe": "off",
        "output": {"runs_dir": str(runs_dir)},
    }
    return train(load_config(config)).run_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--data", type=Path, default=HYMENOPTERA)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tlcli import predict

    run = args.run_dir or quick_run(args.data, Path(tempfile.mkdtemp()) / "runs")
    val = args.data / "val"
    ants, bees = (sorted(str(p) for p in (val / name).glob("*.jpg")) for name in ("ants", "bees"))
    predict(ants[:2], run=run, explain_dir=tempfile.mkdtemp())  # warm-up: TensorFlow, matplotlib
    for count in (8, 48):
        images = ants[: count // 2] + bees[: count // 2]
        plain, explained = [], []
        for _ in range(2):
            started = time.perf_counter()
            predict(images, run=run)
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            predict(images, run=run, explain_dir=tempfile.mkdtemp())
            explained.append(time.perf_counter() - started)
        extra = (min(explained) - min(plain)) / count
        print(
            f"{count} images: predict {min(plain):.2f} s, with --explain {min(explained):.2f} s: "
            f"+{extra * 1000:.0f} ms an image"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
