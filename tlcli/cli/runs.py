"""`tlcli runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tlcli.cli import Debug, Json, _print_json, app, command, stdout

# ----------------------------------------------------------------------------- runs


@app.command("runs")
@command
def runs_command(
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Folder holding run folders.")] = Path("runs"),
    json_output: Json = False,
    debug: Debug = False,
) -> None:
    """List the runs in the runs folder."""
    from tlcli.runs import list_runs

    summaries = list_runs(runs_dir)
    if json_output:
        _print_json([s.to_dict() for s in summaries])
        return
    table = Table(title=f"runs in {runs_dir}")
    for column in ("run", "name", "started", "base", "best val acc", "status"):
        table.add_column(column)
    for s in summaries:
        best = f"{s.best_val_accuracy:.4f}" if s.best_val_accuracy is not None else "-"
        table.add_row(s.path.name, s.name, s.started.replace("T", " ")[:19], s.base, best, s.status)
    stdout.print(table)


