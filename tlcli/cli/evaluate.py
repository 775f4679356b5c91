"""`tlcli evaluate`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

from tlcli.cli import Columns, Debug, Json, Quiet, _import_tensorflow, app, command, output, parse_columns
from tlcli.cli.predict import Accept, NoUnknown
from tlcli.cli.printing import with_interval
from tlcli.errors import UserError

ExplainLayer = Annotated[
    Optional[str],
    typer.Option("--explain-layer", help="The base layer Grad-CAM weighs (default: its last feature map)."),
]
UnknownDir = Annotated[
    Optional[Path],
    typer.Option(
        "--unknown",
        help="A folder of images of no class: adds the AUROC of the run's unknown-image score and the share "
        "of them accepted at its threshold.",
    ),
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
    unknown_dir: UnknownDir = None,
    accept: Accept = None,
    no_unknown: NoUnknown = False,
    json_output: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Evaluate a run's model (or an exported artifact of it, --model); write a report into RUN_DIR/eval/."""
    _refuse_unknown_conflicts(no_unknown, accept, unknown_dir)
    run_evaluation = _evaluator(model, debug)
    from tlcli.tracking import trackers

    judging = {"unknown_dir": unknown_dir, "accept": accept, "unknown": not no_unknown}
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
        **judging,
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
    _print_unknown(m.get("unknown"))
    if m.get("model"):
        output().stdout.print(
            f"model: {m['model']['path']} ({m['model']['format']}, {m['model']['runtime']})", highlight=False
        )
    output().stdout.print(f"report: {evaluation.eval_dir}", highlight=False)


def _evaluator(model: Path | None, debug: bool):
    """The library's evaluate for the run's model.keras, or for the exported artifact `model`."""
    if model is None or model.is_dir():  # a SavedModel runs in TensorFlow; LiteRT and onnxruntime do not need it
        _import_tensorflow(debug)
    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from tlcli.evaluation.evaluate import evaluate as evaluate_run
    from tlcli.export.artifacts import evaluate_artifact

    return functools.partial(evaluate_artifact, model=model) if model is not None else evaluate_run


def _refuse_unknown_conflicts(no_unknown: bool, accept: float | None, unknown_dir: Path | None) -> None:
    if no_unknown and (accept is not None or unknown_dir is not None):
        raise UserError("--no-unknown turns the rule for unknown images off; drop --accept and --unknown with it")


def _print_unknown(unknown: dict | None) -> None:
    """The rule for unknown images: what it accepts and, with --unknown, how well it rejects."""
    if not unknown:
        return
    accepted = unknown["accuracy_accepted"]
    line = (
        f"unknown images: score {unknown['score']}, temperature {unknown['temperature']:.3f} (ECE "
        f"{unknown['ece_before']:.3f} -> {unknown['ece_after']:.3f}); at accept {unknown['accept']:.2f} it accepts "
        f"{unknown['coverage']:.1%} of these images, accuracy on them "
        + ("-" if accepted is None else f"{accepted:.4f}")
        + f" (all: {unknown['accuracy_all']:.4f})"
    )
    if "auroc" in unknown:
        auroc = "-" if unknown["auroc"] is None else f"{unknown['auroc']:.4f}"
        line += f"; {unknown['n_unknown']} unknown images: AUROC {auroc}, {unknown['false_accept_rate']:.1%} accepted"
    output().stdout.print(line, highlight=False)


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
