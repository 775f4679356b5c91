"""The floor: the least any tool can do for a frozen-base workload.

One process that imports TensorFlow, builds the base (MobileNet, the same
ImageNet weights, preprocessing inside the model) and makes ONE
decode-and-forward pass over the training and validation images, with
`image_dataset_from_directory` + `prefetch`, as the baseline reads them.
Nothing is trained and nothing is written: a tool that caches the frozen
base's features cannot beat this by much on a cold cache.

Prints one JSON line: {"images", "timings_s": {startup, build, forward},
"wall_time_s", "peak_memory_mb"}.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=Path, help="folder holding train/ and validation/")
    p.add_argument("--train-dir", type=Path)
    p.add_argument("--val-dir", type=Path)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--alpha", type=float, default=0.25)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    timings = {"startup": round(time.perf_counter() - STARTED, 3)}
    clock = time.perf_counter()
    size = (args.image_size, args.image_size)
    shape = size + (3,)
    base = keras.applications.MobileNet(alpha=args.alpha, include_top=False, weights="imagenet", input_shape=shape)
    inputs = keras.Input(shape=shape)
    x = keras.applications.mobilenet.preprocess_input(inputs)
    x = base(x, training=False)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    timings["build"] = round(time.perf_counter() - clock, 3)

    clock = time.perf_counter()
    train_dir = args.train_dir or args.data_dir / "train"
    val_dir = args.val_dir or next(
        (args.data_dir / n for n in ("validation", "val") if (args.data_dir / n).is_dir()), args.data_dir / "validation"
    )
    images = {}
    for split, folder in (("train", train_dir), ("val", val_dir)):
        ds = keras.utils.image_dataset_from_directory(
            folder, shuffle=False, batch_size=args.batch_size, image_size=size, verbose=False
        )
        ds = ds.map(lambda x, y: x).prefetch(tf.data.AUTOTUNE)
        features = model.predict(ds, verbose=0)
        images[split] = int(features.shape[0])
    timings["forward"] = round(time.perf_counter() - clock, 3)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "images": images,
        "timings_s": timings,
        "wall_time_s": round(time.perf_counter() - STARTED, 3),
        "peak_memory_mb": round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
