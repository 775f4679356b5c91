"""`tlcli predict`."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tlcli.cli import Debug, Quiet, _import_tensorflow, app, command, output
from tlcli.errors import UserError

if TYPE_CHECKING:
    from rich.table import Table


ExplainDir = Annotated[
    Optional[Path],
    typer.Option(
        "--explain",
        help="Write a Grad-CAM overlay per image (image, heatmap, both) into this new or empty folder, "
        "named in each row's `explanation`.",
    ),
]
Accept = Annotated[
    Optional[float],
    typer.Option(
        "--accept",
        help="The share of validation images to accept (the run's predict.unknown.accept moved without "
        "retraining); images scoring below the threshold are predicted `unknown`.",
    ),
]
NoUnknown = Annotated[
    bool,
    typer.Option("--no-unknown", help="No rejection of unknown images and uncalibrated probabilities (as before)."),
]
ExplainLayer = Annotated[
    Optional[str],
    typer.Option("--explain-layer", help="The base layer Grad-CAM weighs (default: its last feature map)."),
]


@app.command()
@command
def predict(
    images: Annotated[
        list[str], typer.Argument(help="Image files, folders (searched recursively) and globs.", show_default=False)
    ],
    run: Annotated[
        Optional[str],
        typer.Option("--run", help="Run folder or run name (default: the newest completed run in --runs-dir)."),
    ] = None,
    model: Annotated[
        Optional[Path],
        typer.Option(
            "--model",
            help="Predict with an exported artifact instead "
            "(a SavedModel folder, .tflite or .onnx file; see `tlcli export`).",
        ),
    ] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Folder holding run folders.")] = Path("runs"),
    top_k: Annotated[int, typer.Option("--top-k", help="Labels per image (capped at the number of classes).")] = 3,
    output_format: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            "-f",
            help="table, json, jsonl or csv "
            "(default: table on a terminal, else jsonl; with -o, from the file's suffix).",
        ),
    ] = None,
    output_file: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Write the output to this file (atomically) instead of stdout."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model call.")] = 32,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average over the mirror images and turns the run trained with.")
    ] = False,
    explain_dir: ExplainDir = None,
    explain_layer: ExplainLayer = None,
    accept: Accept = None,
    no_unknown: NoUnknown = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Predict the labels of IMAGES with a run's model, or an exported one (exit 4 when some files cannot be read)."""
    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from tlcli.inference.formats import FORMATS, format_predictions

    fmt = output_format or _default_format(output_file)
    if fmt not in FORMATS:
        raise UserError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    _refuse_conflicts(model, run, tta, explain_dir, explain_layer)
    if accept is not None and no_unknown:
        raise UserError("--accept moves the threshold of unknown images, --no-unknown turns rejection off: pick one")
    if model is None or model.is_dir():  # a SavedModel runs in TensorFlow; LiteRT and onnxruntime do not need it
        _import_tensorflow(debug)
    explain, unknown = (explain_dir, explain_layer), (accept, not no_unknown)
    result = _predict(images, run, runs_dir, model, top_k, batch_size, quiet, tta, explain, unknown)
    if output_file is not None:
        from tlcli.runs.atomic import write_text_atomic

        write_text_atomic(output_file, _table_text(result) if fmt == "table" else format_predictions(result, fmt))
        if not quiet:
            output().stderr.print(
                f"wrote {len(result.predictions)} predictions ({len(result.errors)} errors) to {output_file}",
                highlight=False,
            )
    elif fmt == "table":
        from rich.console import Console

        (output().stdout if output().stdout.is_terminal else Console(width=160, soft_wrap=True)).print(
            _table(result)
        )  # piped: no 80-column squeeze
    else:
        output().document(format_predictions(result, fmt))
    result.raise_for_errors()


def _refuse_conflicts(
    model: Path | None, run: str | None, tta: bool, explain_dir: Path | None, explain_layer: str | None
) -> None:
    """Options that exclude each other, refused before any work (UserError, exit 2)."""
    if model is not None and run is not None:
        raise UserError(
            "--model and --run exclude each other: "
            "--model predicts with an exported artifact, --run with a run's model.keras"
        )
    if model is not None and (explain_dir is not None or explain_layer is not None):
        raise UserError(
            "--explain and --model exclude each other: Grad-CAM takes the gradients of a run's model.keras, an "
            "exported artifact has none; predict with --run instead"
        )
    if explain_layer is not None and explain_dir is None:
        raise UserError("--explain-layer chooses the layer of --explain's heatmaps; add --explain DIR")


def _predict(
    images: list[str],
    run: str | None,
    runs_dir: Path,
    model: Path | None,
    top_k: int,
    batch_size: int,
    quiet: bool,
    tta: bool = False,
    explain: tuple[Path | None, str | None] = (None, None),
    unknown: tuple[float | None, bool] = (None, True),
):
    """The library call, saying on stderr which run or artifact predicts; `unknown` is (accept, enabled)."""
    reporter = output().reporter()
    from tlcli.export.artifacts import predict_artifact
    from tlcli.inference.predict import predict as run_prediction

    if model is not None:

        def announce_model(source) -> None:
            if not quiet:
                output().stderr.print(
                    f"using {source.described['format']} model {source.described['path']}", highlight=False
                )

        return predict_artifact(
            images,
            model,
            top_k=top_k,
            batch_size=batch_size,
            reporter=reporter,
            on_model=announce_model,
            accept=unknown[0],
            unknown=unknown[1],
            tta=tta,
        )

    def announce(run_dir: Path) -> None:
        if not quiet:
            output().stderr.print(
                f"using run {run_dir}" + ("" if run else f" (newest completed run in {runs_dir})"), highlight=False
            )

    return run_prediction(
        images,
        run=run,
        runs_dir=runs_dir,
        top_k=top_k,
        batch_size=batch_size,
        reporter=reporter,
        on_run=announce,
        tta=tta,
        explain_dir=explain[0],
        explain_layer=explain[1],
        accept=unknown[0],
        unknown=unknown[1],
    )


def _default_format(file: Path | None) -> str:
    if file is not None:
        return {".json": "json", ".csv": "csv", ".txt": "table"}.get(file.suffix.lower(), "jsonl")
    return "table" if sys.stdout.isatty() else "jsonl"


def _table(result) -> Table:
    from rich.table import Table

    from tlcli.inference.formats import rows_for_table

    by = (
        f"{result.model['format']} model {Path(result.model['path']).name}"
        if result.model
        else f"run {result.run_dir.name}"
    )
    table = Table(title=f"{len(result.predictions)} images, {by}")
    table.add_column(
        "path", no_wrap=True, overflow="fold"
    )  # the path is what scripts and people look up: keep it whole when it fits
    table.add_column("labels" if result.multi_label else "label", no_wrap=True)
    table.add_column("top probability" if result.multi_label else "confidence", justify="right", no_wrap=True)
    table.add_column("top-k probabilities / error" if result.multi_label else "other labels / error", overflow="fold")
    if result.explained:
        table.add_column("explanation", overflow="fold")
    for (path, label, confidence, details), p in zip(rows_for_table(result), result.predictions):
        extra = [p.explanation or ""] if result.explained else []
        style = "red" if label == "error" and not confidence else ("yellow" if p.rejected else None)
        table.add_row(path, label, confidence, details, *extra, style=style)
    return table


def _table_text(result) -> str:
    """The table as plain text, for -o FILE."""
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=False, color_system=None, width=160, soft_wrap=False)
    console.print(_table(result))
    return console.file.getvalue()
