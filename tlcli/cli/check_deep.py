"""`tlcli check --deep`: the audit's tables, its check folder, and its exit code (the plain check is `check`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from tlcli.cli import output
from tlcli.errors import UserError

SHOWN = 20  # rows per table; the check folder and --json have them all


def default_folder(data_dir: Path) -> Path:
    """A new timestamped folder under ./checks/ (never inside the data folder: training would list its pictures)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("checks") / f"{stamp}-{data_dir.stem or 'data'}"


def check_folder(data_dir: Path, out: Path | None) -> Path:
    """Where the check folder goes: `out`, or the default; refused inside the data folder or when it exists.

    Raises:
        UserError: the folder is inside the data folder, or exists.
    """
    folder = out if out is not None else default_folder(data_dir)
    images = data_dir if data_dir.is_dir() else data_dir.parent  # a manifest: its folder
    if folder.absolute().resolve().is_relative_to(images.absolute().resolve()):
        flag = "--out" if out is not None else "the default ./checks/ (run from elsewhere, or pass --out)"
        raise UserError(f"{flag}: {folder} is inside {images}; training would list the check's pictures as images")
    if folder.exists():
        raise UserError(f"--out: {folder} already exists; a check folder is never overwritten, choose another")
    return folder


def run_deep(data_dir: Path, base, config, out, *, strict: bool, json_output: bool, quiet: bool, **listing):
    """Audit `data_dir`, write the check folder, print the tables (unless --json or --quiet); returns the report
    (with its folder)."""
    from tlcli.audit import audit_dataset, write_check_folder

    if base is not None and config is not None:
        raise UserError("--base and --config both name the base; give one")
    folder = check_folder(data_dir, out)
    try:
        report = audit_dataset(
            data_dir, base=base, config=config, reporter=output().reporter(silent=json_output), **listing
        )
    except UserError as exc:  # the library names its arguments; the command line knows them as flags
        raise UserError(
            str(exc).replace("base (a base", "--base (a base").replace("or a config", "or --config")
        ) from None
    write_check_folder(report, folder)
    report = dataclasses.replace(report, folder=str(folder.absolute()))
    if not json_output and not quiet:
        print_deep(report, strict)
    return report


def print_deep(report, strict: bool) -> None:
    console = output().stdout
    console.print(
        f"\n[bold]deep check[/] ({report.base} at {report.image_size[0]} px): {report.embedded} images embedded, "
        f"{report.from_cache} from the feature cache, {report.seconds:.1f} s",
        highlight=False,
    )
    _print_pairs(report, console)
    _print_suspects(report, console)
    _print_curve(report, console)
    for note in report.notes:
        console.print(f"note: {note}", style="dim", highlight=False)
    console.print(f"check folder: {report.folder}", highlight=False)
    near = report.near_duplicates
    if near.leakage:
        console.print(
            f"[bold red]leakage:[/] {near.leakage} near-duplicate pair{'s' if near.leakage > 1 else ''} across splits",
            highlight=False,
        )
    elif strict and report.advice:
        console.print("[bold yellow]--strict:[/] label suspects or classes still climbing", highlight=False)
    else:
        console.print("[bold green]deep check:[/] no near-duplicate leakage", highlight=False)


def _rel(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def _print_pairs(report, console) -> None:
    from rich.table import Table

    near, root = report.near_duplicates, Path(report.data_dir)
    if not near.confirmed:
        console.print(f"near-duplicates: none ({near.candidates} candidate pairs compared)", highlight=False)
        return
    table = Table(
        title=f"near-duplicate pairs ({len(near.confirmed)}, {near.leakage} across splits)", title_justify="left"
    )
    for column in ("a", "b", "splits", "cosine", "thumbnails"):
        table.add_column(column, justify="right" if column in ("cosine", "thumbnails") else "left")
    shown = sorted(near.confirmed, key=lambda p: (not p.cross_split, -p.similarity))
    for pair in shown[:SHOWN]:
        splits = f"{pair.split_a} / {pair.split_b}"
        table.add_row(
            _rel(pair.a, root),
            _rel(pair.b, root),
            f"[red]{splits}[/]" if pair.cross_split else splits,
            f"{pair.similarity:.3f}",
            f"{pair.thumbnail:.3f}",
        )
    console.print(table)
    if len(shown) > SHOWN:
        console.print(f"  ... and {len(shown) - SHOWN} more (near_duplicates.csv)", highlight=False)
    for cluster in [c for c in near.clusters if len(c.paths) > 2][:SHOWN]:
        console.print(
            f"  cluster of {len(cluster.paths)} ({', '.join(sorted(set(cluster.splits)))}): "
            + ", ".join(_rel(p, root) for p in cluster.paths[:6])
            + (" ..." if len(cluster.paths) > 6 else ""),
            highlight=False,
            markup=False,
        )
    if near.lookalikes:
        console.print(
            f"  {near.lookalikes} look-alike pair{'s' if near.lookalikes > 1 else ''} whose thumbnails differ "
            "(not counted; near_duplicates.csv)",
            style="dim",
            highlight=False,
        )


def _print_suspects(report, console) -> None:
    from rich.table import Table

    found, root = report.label_suspects, Path(report.data_dir)
    if found is None:
        return
    if not found.suspects:
        console.print(f"label suspects: none among {found.images} images ({found.method})", highlight=False)
        return
    table = Table(
        title=f"likely label errors ({len(found.suspects)} of {found.images} images, {found.method})",
        title_justify="left",
    )
    for column in ("path", "split", "given", "suggested", "confidence"):
        table.add_column(column, justify="right" if column == "confidence" else "left")
    for suspect in found.suspects[:SHOWN]:
        table.add_row(
            _rel(suspect.path, root), suspect.split, suspect.given, suspect.suggested, f"{suspect.confidence:.0%}"
        )
    console.print(table)
    if len(found.suspects) > SHOWN:
        console.print(f"  ... and {len(found.suspects) - SHOWN} more (label_suspects.csv)", highlight=False)


def _print_curve(report, console) -> None:
    from rich.table import Table

    curve = report.learning_curve
    if curve is None:
        return
    table = Table(title="per-class learning curve (probe accuracy, cross-validated)", title_justify="left")
    table.add_column("class")
    for fraction in curve.fractions:
        table.add_column(f"{fraction:.0%}", justify="right")
    table.add_column("advice")
    for c in curve.classes:
        table.add_row(c.name, *(f"{a:.1%}" for a in c.accuracy), c.advice, style="bold" if c.climbing else None)
    console.print(table)
