"""`tlcli export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tlcli.cli import Debug, Json, Quiet, _import_tensorflow, app, command, output
from tlcli.errors import UserError
from tlcli.export.formats import parse_formats, parse_gate_overrides

GateOption = Optional[list[str]]


ExportRun = Annotated[
    Optional[Path],
    typer.Argument(
        help="Completed run folder (see `tlcli runs`); with --verify, the run to check against "
        "(default: the one export.json names)."
    ),
]
Formats = Annotated[
    Optional[list[str]],
    typer.Option(
        "--format",
        "-f",
        help="saved_model, tflite, tflite-fp16, tflite-int8, onnx or all "
        "(repeatable; default: saved_model and tflite).",
    ),
]
Out = Annotated[
    Optional[Path],
    typer.Option(
        "--out", "-o", help="Export into this new (or empty) folder instead of RUN_DIR/export/<stamp>-<formats>/."
    ),
]
Verify = Annotated[
    Optional[Path],
    typer.Option("--verify", help="Re-run the parity gates of this export folder against its run; writes nothing."),
]
CalibrationImages = Annotated[
    int,
    typer.Option("--calibration-images", help="Training images that calibrate tflite-int8 (a fixed seeded subset)."),
]
ParityImages = Annotated[
    Optional[int],
    typer.Option(
        "--parity-images",
        help="Validation images for the parity gate "
        "(default: all, up to 500; with --verify, as many as the export used).",
    ),
]
MinAgreement = Annotated[
    GateOption,
    typer.Option(
        "--min-agreement",
        help="FORMAT=SHARE: least top-1 agreement with Keras, 0-1 (repeatable; FORMAT all = every format).",
    ),
]
MaxDifference = Annotated[
    GateOption,
    typer.Option("--max-difference", help="FORMAT=X: largest absolute probability difference from Keras (repeatable)."),
]
MaxAccuracyDrop = Annotated[
    GateOption,
    typer.Option(
        "--max-accuracy-drop", help="FORMAT=POINTS: accuracy points the format may lose against Keras (repeatable)."
    ),
]


@app.command()
@command
def export(
    run_dir: ExportRun = None,
    formats: Formats = None,
    out: Out = None,
    verify: Verify = None,
    calibration_images: CalibrationImages = 300,
    parity_images: ParityImages = None,
    min_agreement: MinAgreement = None,
    max_difference: MaxDifference = None,
    max_accuracy_drop: MaxAccuracyDrop = None,
    json_output: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Export a run's model (SavedModel, TFLite, ONNX), each artifact checked against Keras on the validation
    images (exit 3 when a gate fails)."""

    if run_dir is None and verify is None:
        raise UserError("tlcli export: give RUN_DIR (a completed run), or --verify EXPORT_DIR")
    if verify is not None and out is not None:
        raise UserError("--out and --verify exclude each other: --verify writes nothing")
    chosen = parse_formats(formats) if formats or verify is None else None
    gates = parse_gate_overrides(min_agreement or [], max_difference or [], max_accuracy_drop or [])
    _import_tensorflow(debug)
    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from tlcli.export.api import DEFAULT_PARITY_IMAGES, export_run, verify_export

    reporter = output().reporter(silent=json_output)
    if verify is not None:
        result = verify_export(
            verify, run_dir=run_dir, formats=chosen, gates=gates, parity_images=parity_images, reporter=reporter
        )
    else:
        result = export_run(
            run_dir,
            chosen,
            out=out,
            gates=gates,
            calibration_images=calibration_images,
            parity_images=parity_images or DEFAULT_PARITY_IMAGES,
            reporter=reporter,
        )
    if json_output:
        output().print_json(result.to_dict())
    elif not quiet:
        print_export(result)
    result.raise_for_gates()


def print_export(result) -> None:
    """The parity table, one row per format (agreement: top-1 with Keras, or per label for a multi-label run); a
    failed gate's details follow as the error line (exit 3)."""
    from rich.table import Table

    images = result.record.get("parity_images") or {}
    keras = next((entry.parity.keras_accuracy for entry in result.formats if entry.parity), None)
    multi = result.record.get("task") == "multi_label"  # agreement and accuracy are then per (image, class) decision
    title = (
        f"{'verified' if result.verified else 'exported'} {result.export_dir}\n"
        f"{images.get('images', '?')} validation images"
        + (f", Keras {'per-label ' if multi else ''}accuracy {keras:.4f}" if keras is not None else "")
        + (", agreement per label at the run's thresholds" if multi else "")
    )
    table = Table(title=title)
    for column in ("format", "size", "export", "agreement", "max |dp|", "accuracy", "gate"):
        table.add_column(column, justify="left" if column in ("format", "gate") else "right", no_wrap=column != "gate")
    for entry in result.formats:
        p = entry.parity
        seconds = f"{entry.export_seconds:.1f} s" if entry.export_seconds is not None else ""
        figures = (f"{p.agreement:.4f}", f"{p.max_difference:.2g}", f"{p.accuracy:.4f}") if p else ("", "", "")
        table.add_row(
            entry.format,
            _size(entry.bytes),
            seconds,
            *figures,
            "pass" if entry.passed else "FAIL",
            style=None if entry.passed else "red",
        )
    output().stdout.print(table)
    for line in result.problems:
        output().stdout.print(f"FAIL: {line}", style="red", highlight=False)


def _size(count: int) -> str:
    return f"{count / 1e6:.2f} MB" if count >= 1e5 else f"{count / 1e3:.1f} kB"
