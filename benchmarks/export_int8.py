"""What TensorFlow's converter offers for a run's tflite-int8, each measured against the Keras model.

    python benchmarks/export_int8.py RUN_DIR [--json FILE]

Variants, each converted from the run's SavedModel with tlcli's calibration
images (its seeded subset of the training images, range anchored at 0-255) and
checked on the run's validation images, as `tlcli export` checks it:

- `tlcli`: what `tlcli export --format tflite-int8` writes (per-channel weights, uint8 input and output);
- `per-tensor`: per-channel quantisation switched off, to show it was on;
- `float fallback: N worst` (N = 1, 3, 10): the N operators the quantization
  debugger (`tf.lite.experimental.QuantizationDebugger`, on 64 calibration
  images) finds losing most (RMSE of the quantised output against the float
  one, over its scale) kept in float (`denylisted_nodes`);
- `float fallback: classifier` / `first conv`: the last FULLY_CONNECTED
  operator (the head's output layer) or the first CONV_2D kept in float.

The debugger's models take and give float32 (the uint8 input of raw pixels is
exact; the uint8 output's 1/256 steps are left out).
Float-fallback models are no longer full-integer (an NPU or microcontroller
that needs full integer cannot run them); they are measured to say where the
loss is, not as a format tlcli writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def converter_for(saved_model: Path, images: np.ndarray, full_integer: bool = True):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in images)
    if full_integer:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter


def worst_layers(saved_model: Path, images: np.ndarray) -> tuple[list[dict], object]:
    """The quantization debugger's per-operator statistics, worst first by RMSE over scale."""
    import tensorflow as tf

    converter = converter_for(saved_model, images)
    options = tf.lite.experimental.QuantizationDebugOptions(fully_quantize=True)
    dataset = lambda: ([image[None].astype(np.float32)] for image in images[:64])  # noqa: E731
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=dataset, debug_options=options
    )
    debugger.run()
    with tempfile.NamedTemporaryFile("w+", suffix=".csv") as dump:
        debugger.layer_statistics_dump(dump)
        dump.flush()
        import csv

        rows = list(csv.DictReader(open(dump.name)))
    for row in rows:
        scale = float(row["scale"]) or 1e-12
        row["rmse_over_scale"] = float(row["mean_squared_error"]) ** 0.5 / scale
    rows.sort(key=lambda row: -row["rmse_over_scale"])
    keep = ("op_name", "tensor_name", "tensor_idx", "scale", "mean_squared_error", "rmse_over_scale")
    return [{key: row.get(key) for key in keep} for row in rows], debugger


def selective(saved_model: Path, images: np.ndarray, nodes: list[str]) -> bytes:
    """int8 with `nodes` (tensor names) kept in float (uint8 input and output kept)."""
    import tensorflow as tf

    converter = converter_for(saved_model, images, full_integer=False)
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes, fully_quantize=True)
    dataset = lambda: ([image[None].astype(np.float32)] for image in images[:8])  # noqa: E731
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=dataset, debug_options=options
    )
    return debugger.get_nondebug_quantized_model()


def measure(data: bytes, folder: Path, export_dir: Path, val, reference) -> dict:
    from tlcli.export import ExportedModel
    from tlcli.export.parity import compare

    path = folder / f"v{len(list(folder.iterdir()))}" / "model-int8.tflite"
    path.parent.mkdir()
    for sibling in ("labels.txt", "export.json"):
        (path.parent / sibling).write_bytes((export_dir / sibling).read_bytes())
    path.write_bytes(data)
    probabilities = ExportedModel(path, format="tflite-int8").predict_probabilities(val.images)
    return {"bytes": len(data), **compare(reference, probabilities, val.labels, 0.0).to_dict()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument(
        "--variants",
        type=lambda text: text.split(","),
        default=["tlcli", "per-tensor", "classifier", "first conv", "worst"],
        help="comma-separated: tlcli, per-tensor, classifier, first conv, worst",
    )
    p.add_argument("--json", type=Path, dest="json_path")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(REPO))
    from tlcli.cli import import_keras

    import_keras()
    from tlcli.export.api import BATCH, DEFAULT_PARITY_IMAGES
    from tlcli.export.convert import anchored_range, inference_model, write_saved_model
    from tlcli.export.images import load_split_images
    from tlcli.inference.probabilities import predict_probabilities
    from tlcli.modeling.build import load_run_model
    from tlcli.runs.records import read_labels, read_model_info

    names, info = read_labels(args.run_dir), read_model_info(args.run_dir)
    val = load_split_images(args.run_dir, "val", names, info, DEFAULT_PARITY_IMAGES)
    train = load_split_images(args.run_dir, "train", names, info, args.calibration_images)
    model = load_run_model(args.run_dir, names)
    reference = predict_probabilities(model, val.images, BATCH, info.binary)
    images = anchored_range(train.images)
    export_dir = sorted((args.run_dir / "export").iterdir())[-1]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        saved_model = folder / "saved_model"
        write_saved_model(inference_model(model), saved_model)
        (folder / "out").mkdir()
        out = folder / "out"
        if "tlcli" in args.variants:
            data = converter_for(saved_model, images).convert()
            rows.append({"variant": "tlcli", **measure(data, out, export_dir, val, reference)})
        if "per-tensor" in args.variants:
            converter = converter_for(saved_model, images)
            converter._experimental_disable_per_channel = True
            rows.append({"variant": "per-tensor", **measure(converter.convert(), out, export_dir, val, reference)})
        layers, _ = worst_layers(saved_model, images)
        by_index = sorted(layers, key=lambda row: int(row["tensor_idx"]))
        chosen = {
            "classifier": [row["tensor_name"] for row in by_index if row["op_name"] == "FULLY_CONNECTED"][-1:],
            "first conv": [row["tensor_name"] for row in by_index if row["op_name"] == "CONV_2D"][:1],
        }
        for name, nodes in chosen.items():
            if name in args.variants and nodes:
                data = selective(saved_model, images, nodes)
                rows.append(
                    {
                        "variant": f"float fallback: {name}",
                        "nodes": nodes,
                        **measure(data, out, export_dir, val, reference),
                    }
                )
        worst = layers[:10]
        for count in (1, 3, 10) if "worst" in args.variants else ():
            nodes = [row["tensor_name"] for row in worst[:count]]
            data = selective(saved_model, images, nodes)
            rows.append(
                {
                    "variant": f"float fallback: {count} worst",
                    "nodes": nodes,
                    **measure(data, out, export_dir, val, reference),
                }
            )
    document = {"run_dir": str(args.run_dir), "worst_layers": worst, "rows": rows}
    for row in rows:
        print(
            f"| {row['variant']} | {row['bytes'] / 1e6:.2f} MB | {row['agreement']:.4f} | "
            f"{row['max_difference']:.3g} | {row['accuracy']:.3f} ({row['keras_accuracy']:.3f}) |"
        )
    for row in worst:
        print(row)
    text = json.dumps(document, indent=2, default=str)
    if args.json_path:
        args.json_path.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
