"""`tlcli compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tlcli.cli import Debug, Json, Quiet, _import_tensorflow, app, command, output
from tlcli.cli.printing import with_interval


@app.command()
@command(flags={"run_a": "RUN_A", "run_b": "RUN_B"})
def compare(
    run_a: Annotated[Path, typer.Argument(help="The reference run folder (A).")],
    run_b: Annotated[Path, typer.Argument(help="The run to test against it (B).")],
    split: Annotated[
        Optional[str],
        typer.Option(
            "--split", help="val or test: the runs' own split, the same files in both (default: test, else val)."
        ),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option("--data", help="Compare on this folder of class folders, or CSV manifest, instead."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per model call.")] = 32,
    json_output: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Is run B better than run A? Both models on the same images: each accuracy and the difference with their 95%
    intervals, and the exact McNemar test."""
    _import_tensorflow(debug)
    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from tlcli.evaluation.compare import compare_runs

    reporter = output().reporter(silent=json_output)
    comparison = compare_runs(run_a, run_b, split=split, data=data, batch_size=batch_size, reporter=reporter)
    if json_output:
        output().print_json(comparison.to_dict())
    elif not quiet:
        print_comparison(comparison)
    else:
        output().stdout.print(comparison.verdict, highlight=False, markup=False)


def print_comparison(comparison) -> None:
    from rich.table import Table

    intervals = comparison.intervals
    table = Table(
        title=f"{comparison.dataset}: {comparison.images} images ({comparison.source})",
        caption="(low-high): the 95% interval; difference: Newcombe's paired interval",
    )
    for column in ("", "run", "accuracy"):
        table.add_column(column, justify="right" if column == "accuracy" else "left", overflow="fold")
    table.add_row("A", str(comparison.a.run_dir), with_interval(comparison.a.accuracy, intervals["a.accuracy"]))
    table.add_row("B", str(comparison.b.run_dir), with_interval(comparison.b.accuracy, intervals["b.accuracy"]))
    low, high = intervals["difference"]
    table.add_row("B - A", "", f"{comparison.difference:+.4f} ({low:+.3f} to {high:+.3f})")
    output().stdout.print(table)
    output().stdout.print(
        f"A right, B wrong: {comparison.a_only}; A wrong, B right: {comparison.b_only} "
        f"(exact McNemar p = {comparison.p_value:.2g})",
        highlight=False,
    )
    if comparison.skipped:
        output().stdout.print(f"{comparison.skipped} file(s) could not be decoded and were left out", highlight=False)
    if comparison.caution:
        output().stdout.print(f"caution: {comparison.caution}", highlight=False, markup=False)
    output().stdout.print(comparison.verdict, highlight=False, markup=False)
