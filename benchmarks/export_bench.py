"""Export a run in every format and measure each artifact: size, export time, latency per image, agreement, accuracy.

    python benchmarks/export_bench.py RUN_DIR                     # tlcli export RUN_DIR --format all, then latency
    python benchmarks/export_bench.py RUN_DIR --int8-calibration 50,100,200,300   # and int8 at each calibration size

The export is `tlcli.export.export_run(RUN_DIR, ["all"])` with the default
gates (a failed gate is reported, not fatal here). Latency is the mean wall
time of one image through `ExportedModel.predict_probabilities` (batch 1,
the artifact's own runtime, after 5 warm-up calls) over the first
`--latency-images` validation images; Keras's row is `model.predict_on_batch`
on the same images. Prints a Markdown table and one JSON document
(`--json FILE` writes it too).
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--latency-images", type=int, default=50)
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument(
        "--int8-calibration", default="", help="comma-separated calibration sizes to re-export tflite-int8 with"
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
    print_table(document)
    text = json.dumps(document, indent=2)
    if args.json_path:
        args.json_path.write_text(text + "\n")
    print(text)
    return 0


def print_table(document: dict) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
