"""`tlcli report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlcli.cli import Debug, Json, Quiet, app, command, output


@app.command("report")
@command(flags={"folder": "RUN_DIR"})
def report_command(
    folder: Annotated[Path, typer.Argument(help="A run folder, or one of its evaluation folders (RUN_DIR/eval/...).")],
    json_output: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """(Re)build report.html: one self-contained page of the run's config, data, curves, figures with their
    intervals, mistakes and provenance (in a run folder: with its latest evaluation)."""
    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from tlcli.evaluation.html_report import write_report

    path = write_report(folder)
    if json_output:
        output().print_json({"report": str(path)})
    elif not quiet:
        output().stdout.print(str(path), highlight=False, markup=False)
