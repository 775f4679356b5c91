"""The plain Keras baseline: the TensorFlow transfer-learning tutorial's recipe.

https://www.tensorflow.org/tutorials/images/transfer_learning, written out by
hand the way a user would, with nothing cached:

    image_dataset_from_directory(...).prefetch(AUTOTUNE)
    inputs -> [RandomFlip] -> preprocess_input -> base(training=False)
           -> GlobalAveragePooling2D -> Dropout(0.2) -> Dense(1) (logits)
    Adam(1e-3), BinaryCrossentropy(from_logits=True), BinaryAccuracy(threshold=0)
    fine-tuning: the last N base layers trainable, RMSprop(lr) (as the tutorial)

Every epoch decodes every JPEG again and runs the frozen base on it again.

Prints one JSON line on stdout at the end:
    {"val_accuracy": final model.evaluate on the validation set,
     "val_accuracy_last_epoch": the last epoch's val_accuracy from fit,
     "timings_s": {startup, build, train, fine_tune, evaluate}, "wall_time_s",
     "peak_memory_mb": this process's ru_maxrss, ...}

Weights: keras.applications looks in $KERAS_HOME/models/ first; the harness
(benchmarks/run.py) points KERAS_HOME at a temporary copy of the weights file.
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", type=Path, help="folder holding train/ and validation/ (class folders inside)")
    p.add_argument("--train-dir", type=Path, help="explicit training folder (default DATA_DIR/train)")
    p.add_argument(
        "--val-dir", type=Path, help="explicit validation folder (default DATA_DIR/validation, else DATA_DIR/val)"
    )
    p.add_argument("--epochs", type=int, default=10, help="epochs with the base frozen")
    p.add_argument(
        "--learning-rate", type=float, default=1e-3, help="Adam learning rate of the frozen phase (Keras default)"
    )
    p.add_argument("--fine-tune-epochs", type=int, default=0, help="epochs of fine-tuning (0 = none)")
    p.add_argument("--fine-tune-layers", type=int, default=30, help="last N base layers to unfreeze")
    p.add_argument("--fine-tune-lr", type=float, default=1e-5)
    p.add_argument(
        "--fine-tune-optimizer", choices=("rmsprop", "adam"), default="rmsprop", help="the tutorial uses RMSprop"
    )
    p.add_argument("--flip", action="store_true", help="RandomFlip('horizontal') on the training images")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--alpha", type=float, default=0.25, help="MobileNet width multiplier")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def peak_memory_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    timings = {"startup": round(time.perf_counter() - STARTED, 3)}

    clock = time.perf_counter()
    train_dir = args.train_dir or args.data_dir / "train"
    val_dir = args.val_dir or next(
        (args.data_dir / n for n in ("validation", "val") if (args.data_dir / n).is_dir()), args.data_dir / "validation"
    )
    size = (args.image_size, args.image_size)
    train_ds = keras.utils.image_dataset_from_directory(
        train_dir, shuffle=True, batch_size=args.batch_size, image_size=size, seed=args.seed, verbose=False
    )
    val_ds = keras.utils.image_dataset_from_directory(
        val_dir, shuffle=False, batch_size=args.batch_size, image_size=size, verbose=False
    )
    class_names = train_ds.class_names
    counts = {"train": len(train_ds.file_paths), "val": len(val_ds.file_paths)}
    if len(class_names) != 2:
        raise SystemExit(f"the tutorial recipe is binary; found classes {class_names}")
    autotune = tf.data.AUTOTUNE
    train_ds = train_ds.prefetch(buffer_size=autotune)
    val_ds = val_ds.prefetch(buffer_size=autotune)

    shape = size + (3,)
    base_model = keras.applications.MobileNet(
        alpha=args.alpha, include_top=False, weights="imagenet", input_shape=shape
    )
    base_model.trainable = False

    inputs = keras.Input(shape=shape)
    x = inputs
    if args.flip:
        x = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=args.seed)], name="data_augmentation")(x)
    x = keras.applications.mobilenet.preprocess_input(x)
    x = base_model(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(1)(x)
    model = keras.Model(inputs, outputs)

    def compile_(optimizer):
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
        )

    compile_(keras.optimizers.Adam(learning_rate=args.learning_rate))
    timings["build"] = round(time.perf_counter() - clock, 3)

    clock = time.perf_counter()
    history = model.fit(train_ds, epochs=args.epochs, validation_data=val_ds, verbose=0)
    timings["train"] = round(time.perf_counter() - clock, 3)
    val_history = list(history.history["val_accuracy"])

    if args.fine_tune_epochs > 0:
        clock = time.perf_counter()
        base_model.trainable = True
        fine_tune_at = len(base_model.layers) - args.fine_tune_layers
        for layer in base_model.layers[:fine_tune_at]:
            layer.trainable = False
        if args.fine_tune_optimizer == "rmsprop":
            optimizer = keras.optimizers.RMSprop(learning_rate=args.fine_tune_lr)
        else:
            optimizer = keras.optimizers.Adam(learning_rate=args.fine_tune_lr)
        compile_(optimizer)
        total = args.epochs + args.fine_tune_epochs
        history_fine = model.fit(
            train_ds, epochs=total, initial_epoch=len(history.epoch), validation_data=val_ds, verbose=0
        )
        val_history += list(history_fine.history["val_accuracy"])
        timings["fine_tune"] = round(time.perf_counter() - clock, 3)

    clock = time.perf_counter()
    loss, accuracy = model.evaluate(val_ds, verbose=0)
    timings["evaluate"] = round(time.perf_counter() - clock, 3)

    result = {
        "recipe": "keras-tutorial",
        "val_accuracy": round(float(accuracy), 6),
        "val_loss": round(float(loss), 6),
        "val_accuracy_last_epoch": round(float(val_history[-1]), 6),
        "val_accuracy_per_epoch": [round(float(v), 4) for v in val_history],
        "epochs": {"train": args.epochs, "fine_tune": args.fine_tune_epochs},
        "images": counts,
        "class_names": class_names,
        "timings_s": timings,
        "wall_time_s": round(time.perf_counter() - STARTED, 3),
        "peak_memory_mb": peak_memory_mb(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
