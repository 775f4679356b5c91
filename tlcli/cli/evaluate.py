"""`tlcli evaluate`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

from tlcli.cli import Columns, Debug, Json, Quiet, _import_tensorflow, app, command, output, parse_columns
from tlcli.cli.printing import with_interval

ExplainLayer = Annotated[
    Optional[str],
    typer.Option("--explain-layer", help="The base layer Grad-CAM weighs (default: its last feature map)."),
]
Explain = Annotated[
    bool,
    typer.Option(
        "--explain/--no-explain",
        help="Write mistakes_gradcam.png: the most confident mistakes with their Grad-CAM heatmaps "
        "(the run's model.keras only, not --model).",
    ),
]


@app.command()
@command
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Run folder (see `tlcli runs`).")],
    model: Annotated[
        Optional[Path],
        typer.Option(
            "--model",
            help="Evaluate this exported artifact of the run (SavedModel folder, .tflite or .onnx) "
            "instead of its model.keras.",
        ),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data",
            help="Evaluate on this folder of class folders, or CSV manifest, instead of the run's test/val files.",
        ),
    ] = None,
    column: Columns = None,
    split: Annotated[
        Optional[str], typer.Option("--split", help="val or test (default: test when the run had one, else val).")
    ] = None,
    top_k: Annotated[
        Optional[int], typer.Option("--top-k", help="k of the top-k accuracy (default: the run's train.top_k, else 5).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model call.")] = 32,
    fail_under: Annotated[
        Optional[list[str]],
        typer.Option(
            "--fail-under",
            help="Exit 3 when a metric of metrics.json is below NUMBER: accuracy=0.9, macro_avg.f1=0.8 (repeatable).",
        ),
    ] = None,
    fail_over: Annotated[
        Optional[list[str]],
        typer.Option(
            "--fail-over",
            help="Exit 3 when a metric of metrics.json is above NUMBER: loss=0.5, calibration.ece=0.05 (repeatable).",
        ),
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average over the mirror images and turns the run trained with.")
    ] = False,
    explain: Explain = True,
    explain_layer: ExplainLayer = None,
    json_output: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Evaluate a run's model (or an exported artifact of it, --model); write a report into RUN_DIR/eval/."""
    if model is None or model.is_dir():  # a SavedModel runs in TensorFlow; LiteRT and onnxruntime do not need it
        _import_tensorflow(debug)
    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from tlcli.evaluation.evaluate import evaluate as evaluate_run
    from tlcli.export.artifacts import evaluate_artifact
    from tlcli.tracking import trackers

    run_evaluation = functools.partial(evaluate_artifact, model=model) if model is not None else evaluate_run
    reporter = output().reporter(silent=json_output)
    evaluation = run_evaluation(
        run_dir,
        data=data,
        split=split,
        top_k=top_k,
        batch_size=batch_size,
        fail_under=fail_under or [],
        fail_over=fail_over or [],
        reporter=reporter,
        columns=parse_columns(column),
        tta=tta,
        explain=explain,
        explain_layer=explain_layer,
    )

    # A tracked run: its figures go to the run's tracked run too (never fails the command).
    trackers().log_evaluation(run_dir, evaluation, reporter)
    if json_output:
        output().print_json(evaluation.to_dict())
    elif not quiet:
        print_evaluation(evaluation)
    evaluation.raise_for_gates()


def print_evaluation(evaluation) -> None:
    from rich.table import Table

    from tlcli.evaluation.evaluate import describe, describe_intervals  # imported when used, as in `evaluate`

    m = evaluation.metrics
    multi = m.get("task") == "multi_label"
    table = Table(title=f"{m['dataset']['name']}: {m['dataset']['images']} images ({m['dataset']['source']})")
    columns = (
        ("class", "threshold", "precision", "recall", "f1", "AP", "support")
        if multi
        else ("class", "precision", "recall", "f1", "support")
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "class" else "right")
    intervals = m.get("intervals") or {}  # none in an evaluation written before format_version 2
    for name, row in m["per_class"].items():
        recall = with_interval(row["recall"], intervals.get(f"per_class.{name}.recall"), digits=3)
        figures = [f"{row['precision']:.3f}", recall, f"{row['f1']:.3f}"]
        if multi:
            figures = [
                f"{row['threshold']:.3f}",
                *figures,
                "-" if row["average_precision"] is None else f"{row['average_precision']:.3f}",
            ]
        table.add_row(name, *figures, str(row["support"]))
    table.add_section()
    for key in ("micro_avg", "macro_avg", "weighted_avg", "samples_avg") if multi else ("macro_avg", "weighted_avg"):
        row = m[key]
        figures = [f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}"]
        table.add_row(key.replace("_", " "), *(["", *figures, "", ""] if multi else [*figures, str(row["support"])]))
    output().stdout.print(table)
    headline = Table(show_header=False, box=None)
    headline.add_column("what")
    headline.add_column("value", justify="right")
    shown_intervals = describe_intervals(evaluation)
    for label, value in describe(evaluation).items():
        headline.add_row(label, "-" if value is None else with_interval(value, shown_intervals.get(label)))
    if shown_intervals:
        how = "Wilson" + ("; macro F1: bootstrap" if "macro F1" in shown_intervals else "")
        headline.add_row("(low-high)", f"95% interval ({how})")
    if m["dataset"]["skipped"]:
        headline.add_row("skipped files", str(m["dataset"]["skipped"]))
    output().stdout.print(headline)
    _print_copies(m.get("training_copies") or {})
    if m.get("model"):
        output().stdout.print(
            f"model: {m['model']['path']} ({m['model']['format']}, {m['model']['runtime']})", highlight=False
        )
    output().stdout.print(f"report: {evaluation.eval_dir}", highlight=False)


def _print_copies(copies: dict) -> None:
    """The evaluated images that are near-copies of training images, and the accuracy without them."""
    if not copies.get("images"):
        return
    without = copies.get("accuracy_without")
    output().stdout.print(
        f"[yellow]{copies['images']} image(s) are near-copies of training images[/] (listed in metrics.json's "
        "training_copies)"
        + (f": accuracy {copies['accuracy']:.4f} with them, {without:.4f} without" if without is not None else ""),
        highlight=False,
    )
