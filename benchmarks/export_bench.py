"""Export a run in every format and measure each artifact: size, export time, latency per image, agreement, accuracy.

    python benchmarks/export_bench.py RUN_DIR                     # tlcli export RUN_DIR --format all, then latency
    python benchmarks/export_bench.py RUN_DIR --int8-calibration 50,100,200,300   # and int8 at each calibration size
    python benchmarks/export_bench.py RUN_DIR --broken            # and broken fp16/int8 artifacts against the gates

The export is `tlcli.export.export_run(RUN_DIR, ["all"])` with the default
gates (a failed gate is reported, not fatal here). Latency is the mean wall
time of one image through `ExportedModel.predict_probabilities` (batch 1,
the artifact's own runtime, after 5 warm-up calls) over the first
`--latency-images` validation images; Keras's row is `model.predict_on_batch`
on the same images. Prints a Markdown table and one JSON document
(`--json FILE` writes it too).

`--broken` builds, for each reduced-precision format (and float32 tflite), the
artifacts a deployer could end up with by mistake and measures their parity
against the healthy Keras model on the same validation images: preprocessing
dropped (the model converted without its `preprocess` layer, int8 calibrated
on raw pixels), channels in the wrong order (the artifact fed BGR), a damaged
file (a block of bytes overwritten in the middle; the file cut in half) and
labels shuffled (its output columns permuted). Each row says whether the
default gates fail it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def latency_ms(predict, images, warmup: int = 5) -> float:
    for image in images[:warmup]:
        predict(image[None])
    started = time.perf_counter()
    for image in images:
        predict(image[None])
    return 1000 * (time.perf_counter() - started) / len(images)


def calibration_sweep(run_dir: Path, counts: list[int]) -> list[dict]:
    """tflite-int8 exported with each calibration size (into a temporary folder), and its parity."""
    from tlcli.export import Gate, export_run

    rows = []
    for count in counts:
        with tempfile.TemporaryDirectory() as folder:
            result = export_run(
                run_dir,
                ["tflite-int8"],
                out=Path(folder) / "out",
                calibration_images=count,
                gates={"tflite-int8": Gate()},
            )
            calibrated = result.record["calibration_images"]["images"]
            rows.append({"requested": count, "calibration_images": calibrated, **result.formats[0].parity.to_dict()})
    return rows


BROKEN_FORMATS = ("tflite", "tflite-fp16", "tflite-int8")


def broken_rows(run_dir: Path, export_dir: Path, calibration_images: int) -> list[dict]:
    """Parity and default-gate verdict of each format's healthy artifact and of its broken variants."""
    from tlcli.export.api import BATCH, DEFAULT_PARITY_IMAGES
    from tlcli.export.formats import DEFAULT_GATES
    from tlcli.export.images import load_split_images
    from tlcli.export.parity import compare, gate_failures
    from tlcli.inference.probabilities import predict_probabilities
    from tlcli.modeling.build import load_run_model
    from tlcli.runs.records import read_labels, read_model_info

    names, info = read_labels(run_dir), read_model_info(run_dir)
    val = load_split_images(run_dir, "val", names, info, DEFAULT_PARITY_IMAGES)
    train = load_split_images(run_dir, "train", names, info, calibration_images)
    model = load_run_model(run_dir, names)
    reference = predict_probabilities(model, val.images, BATCH, info.binary)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        unprocessed = _without_preprocessing(model, folder / "saved_model")
        for name in BROKEN_FORMATS:
            healthy = export_dir / FILES_BY_FORMAT[name]
            cases = _broken_cases(name, healthy, unprocessed, train.images, folder)
            for case, make in cases:
                try:
                    probabilities = make(val.images)
                except Exception as exc:  # a damaged artifact that does not load or run: the gate fails it
                    rows.append({"format": name, "case": case, "failures": [f"{type(exc).__name__}: {exc}"[:160]]})
                    continue
                parity = compare(reference, probabilities, val.labels, 0.0)
                failures = gate_failures(name, parity, DEFAULT_GATES[name])
                rows.append({"format": name, "case": case, **parity.to_dict(), "failures": failures})
    return rows


FILES_BY_FORMAT = {"tflite": "model.tflite", "tflite-fp16": "model-fp16.tflite", "tflite-int8": "model-int8.tflite"}


def _broken_cases(name: str, healthy: Path, unprocessed: Path, calibration, folder: Path) -> list:
    """(case, images -> probabilities) for the healthy artifact and each broken one of format `name`."""
    import numpy as np

    from tlcli.export import ExportedModel
    from tlcli.export.convert import write_tflite

    def run(path: Path):
        return lambda images: ExportedModel(path, format=name).predict_probabilities(images)

    def copy(label: str, data: bytes) -> Path:
        path = folder / name / label / healthy.name
        path.parent.mkdir(parents=True)
        for sibling in ("labels.txt", "export.json"):
            (path.parent / sibling).write_bytes((healthy.parent / sibling).read_bytes())
        path.write_bytes(data)
        return path

    data = healthy.read_bytes()
    no_preprocessing = copy("no-preprocessing", b"")
    write_tflite(unprocessed, no_preprocessing, name, calibration if name == "tflite-int8" else None)
    block = bytearray(data)
    start, size = len(data) // 2, max(1024, len(data) // 100)
    block[start : start + size] = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    return [
        ("healthy", run(healthy)),
        ("preprocessing dropped", run(no_preprocessing)),
        ("channels swapped (fed BGR)", lambda images: run(healthy)(np.ascontiguousarray(images[..., ::-1]))),
        ("labels shuffled (output columns rolled)", lambda images: np.roll(run(healthy)(images), 1, axis=1)),
        (f"damaged: {size} bytes overwritten mid-file", run(copy("damaged-block", bytes(block)))),
        ("damaged: cut in half", run(copy("damaged-cut", data[: len(data) // 2]))),
    ]


def _without_preprocessing(model, path: Path) -> Path:
    """A SavedModel of the run's inference model without its `preprocess` layer (raw 0-255 pixels reach the base)."""
    import keras

    from tlcli.export.convert import write_saved_model
    from tlcli.modeling import layers

    inputs = keras.Input(model.input_shape[1:], name=layers.INPUT)
    x = inputs
    for layer in model.layers[1:]:
        if layer.name not in (layers.AUGMENTATION, layers.PREPROCESS):
            x = layer(x, training=False)
    write_saved_model(keras.Model(inputs, x), path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--latency-images", type=int, default=50)
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument(
        "--int8-calibration", default="", help="comma-separated calibration sizes to re-export tflite-int8 with"
    )
    p.add_argument("--broken", action="store_true", help="measure broken fp16/int8/tflite artifacts (see above)")
    p.add_argument(
        "--broken-only", type=Path, metavar="EXPORT_DIR", help="only the broken artifacts, of this existing export"
    )
    p.add_argument("--json", type=Path, dest="json_path")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(REPO))
    from tlcli.cli import import_keras

    import_keras()
    from tlcli.export import ExportedModel, export_run
    from tlcli.export.images import load_split_images
    from tlcli.modeling.build import load_run_model
    from tlcli.runs.records import read_labels, read_model_info

    if args.broken_only:
        document = {"run_dir": str(args.run_dir), "export_dir": str(args.broken_only), "rows": []}
        document["broken"] = broken_rows(args.run_dir, args.broken_only, args.calibration_images)
        return finish(document, args.json_path)
    result = export_run(args.run_dir, ["all"], calibration_images=args.calibration_images)
    names, info = read_labels(args.run_dir), read_model_info(args.run_dir)
    images = load_split_images(args.run_dir, "val", names, info, args.latency_images).images
    model = load_run_model(args.run_dir, names)
    rows = [
        {
            "format": "keras (model.keras)",
            "bytes": (args.run_dir / "model.keras").stat().st_size,
            "latency_ms": latency_ms(lambda x: model.predict_on_batch(x.astype("float32")), images),
        }
    ]
    for entry in result.formats:
        artifact = ExportedModel(result.export_dir / entry.file)
        rows.append(
            {
                "format": entry.format,
                "bytes": entry.bytes,
                "export_seconds": entry.export_seconds,
                "latency_ms": latency_ms(artifact.predict_probabilities, images),
                **entry.parity.to_dict(),
                "passed": entry.passed,
            }
        )
    document = {
        "run_dir": str(args.run_dir),
        "export_dir": str(result.export_dir),
        "latency_images": len(images),
        "cpus": os.cpu_count(),
        "rows": rows,
        "failures": result.failures,
    }
    if args.int8_calibration:
        document["int8_calibration"] = calibration_sweep(
            args.run_dir, [int(n) for n in args.int8_calibration.split(",")]
        )
    if args.broken:
        document["broken"] = broken_rows(args.run_dir, result.export_dir, args.calibration_images)
    return finish(document, args.json_path)


def finish(document: dict, json_path: Path | None) -> int:
    text = json.dumps(document, indent=2)
    if json_path:
        json_path.write_text(text + "\n")
    print_table(document)
    print(text)
    return 0


def _figure(value) -> str:
    return "NaN" if value is None else f"{value:.3g}"


def print_table(document: dict) -> None:
    if document["rows"]:
        print_formats(document)
    print_broken(document)


def print_formats(document: dict) -> None:
    print(
        "| format | size | export time | latency / image | top-1 agreement | max abs prob. diff | accuracy "
        "(Keras) | default gate |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for row in document["rows"]:
        size = f"{row['bytes'] / 1e6:.2f} MB"
        if "agreement" not in row:
            print(f"| {row['format']} | {size} | | {row['latency_ms']:.2f} ms | | | | |")
            continue
        accuracy = f"{row['accuracy']:.3f} ({row['keras_accuracy']:.3f})"
        verdict = "pass" if row["passed"] else "**fail**"
        print(
            f"| {row['format']} | {size} | {row['export_seconds']:.1f} s | {row['latency_ms']:.2f} ms | "
            f"{row['agreement']:.4f} | {row['max_difference']:.2g} | {accuracy} | {verdict} |"
        )
    for row in document.get("int8_calibration", []):
        print(
            f"int8, {row['calibration_images']} calibration images: agreement {row['agreement']:.4f}, "
            f"accuracy {row['accuracy']:.4f}, drop {row['accuracy_drop']:.2f} points"
        )


def print_broken(document: dict) -> None:
    if document.get("broken"):
        print(
            "\n| format | artifact | top-1 agreement | max abs prob. diff | mean abs prob. diff | accuracy (Keras) "
            "| default gate |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for row in document.get("broken", []):
        if row.get("agreement") is None:
            print(f"| {row['format']} | {row['case']} | | | | | **fail**: {row['failures'][0]} |")
            continue
        verdict = "pass" if not row["failures"] else "**fail**"
        if row.get("nonfinite"):
            verdict += f" ({row['nonfinite']} NaN/inf)"
        print(
            f"| {row['format']} | {row['case']} | {row['agreement']:.4f} | {_figure(row['max_difference'])} | "
            f"{_figure(row['mean_difference'])} | {row['accuracy']:.3f} ({row['keras_accuracy']:.3f}) | {verdict} |"
        )


if __name__ == "__main__":
    sys.exit(main())
