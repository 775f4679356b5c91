"""`tlcli runs`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlcli.cli import Debug, Json, app, command, output
from tlcli.cli.printing import with_interval

# ----------------------------------------------------------------------------- runs


@app.command("runs")
@command
def runs_command(
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Folder holding run folders.")] = Path("runs"),
    json_output: Json = False,
    debug: Debug = False,
) -> None:
    """List the runs in the runs folder (and, after them, its studies: `tlcli tune` folders)."""
    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from rich.console import Console
    from rich.table import Table

    from tlcli.runs.listing import list_runs, list_studies

    summaries = list_runs(runs_dir)
    if json_output:
        output().print_json([s.to_dict() for s in summaries])
        return
    studies = list_studies(runs_dir)
    if not summaries and studies:
        _print_studies(studies, runs_dir)
        return
    if not summaries:
        # An empty table looks like a bug; say where we looked and what to do.
        output().stderr.print(
            f"no runs in {runs_dir}; train one with `tlcli train CONFIG`, or pass --runs-dir", highlight=False
        )
        return
    caption = "(low-high): the 95% interval" if any(s.intervals for s in summaries) else None
    table = Table(title=f"runs in {runs_dir}", caption=caption)
    tracked = any(s.mlflow_run_id for s in summaries)  # the MLflow column only when some run is tracked
    for column in (
        "run",
        "name",
        "date",
        "base",
        "best val acc",
        "accuracy (on)",
        "status",
        "resumes",
        *(["mlflow run"] if tracked else []),
    ):
        # The run folder is what `tlcli evaluate` and `--run` take: never cut it.
        table.add_column(
            column,
            no_wrap=column in ("run", "date", "status", "mlflow run"),
            overflow="fold",
            justify="right" if column in ("best val acc", "accuracy (on)") else "left",
        )
    for s in summaries:
        unit = " mAP" if s.metric == "map" else ""  # a multi-label run's figures are mean average precision
        best = f"{s.best_val:.4f}{unit}" if s.best_val is not None else "-"
        estimate = (
            f"{with_interval(s.estimate, s.intervals.get('estimate'))}{unit} ({s.estimate_on})"
            if s.estimate is not None
            else "-"
        )
        mlflow = [s.mlflow_run_id or "-"] if tracked else []
        table.add_row(
            s.path.name,
            s.name,
            s.started.replace("T", " ")[:16],
            s.base,
            best,
            estimate,
            s.status,
            str(s.resumes),
            *mlflow,
        )
    # Piped output is read by people later or by grep: do not squeeze it to 80 columns.
    console = output().stdout if output().stdout.is_terminal else Console(width=160, soft_wrap=True)
    console.print(table)
    for s in summaries:
        if s.problem:
            console.print(f"{s.path.name}: {s.problem}", highlight=False, markup=False)
    if studies:
        _print_studies(studies, runs_dir)


def _print_studies(studies, runs_dir: Path) -> None:
    """Tune folders are studies, not runs: their own table (the JSON list stays runs only)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"studies in {runs_dir} (tlcli tune)")
    for column in ("tune folder", "study", "date", "trials", "best", "status"):
        table.add_column(
            column,
            no_wrap=column in ("tune folder", "date", "status"),
            overflow="fold",
            justify="right" if column in ("trials", "best") else "left",
        )
    for s in studies:
        best = f"{s.best_value:.4f} {s.metric} (trial {s.best_trial})" if s.best_value is not None else "-"
        trials = f"{s.finished}/{s.target}" if s.target else str(s.finished)
        table.add_row(s.path.name, s.study, s.started.replace("T", " ")[:16], trials, best, s.status)
    console = output().stdout if output().stdout.is_terminal else Console(width=160, soft_wrap=True)
    console.print(table)
    for s in studies:
        if s.problem:
            console.print(f"{s.path.name}: {s.problem}", highlight=False, markup=False)
