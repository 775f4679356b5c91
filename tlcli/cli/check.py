"""`tlcli check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tlcli.cli import Columns, Debug, Json, Quiet, app, command, output, parse_columns
from tlcli.config.plain import DEFAULT_MAX_FILE_MB
from tlcli.errors import UserError

SHOWN = 20  # files listed per section in the table view; --json has them all


DataDir = Annotated[
    Optional[Path],
    typer.Argument(
        help="A folder of class folders, or a parent of train/ and val/ (as data.dir); "
        "or a CSV manifest (as data.manifest)."
    ),
]
Manifest = Annotated[
    Optional[Path], typer.Option("--manifest", help="A CSV/TSV manifest of paths and labels (instead of DATA_DIR).")
]
MultiLabel = Annotated[
    bool,
    typer.Option("--multi-label", help="The manifest gives each image any number of labels (as data.multi_label)."),
]
LabelSeparator = Annotated[
    str,
    typer.Option(
        "--label-separator", help="With --multi-label, what separates the labels in one cell (as data.label_separator)."
    ),
]
LabelColumns = Annotated[
    Optional[str],
    typer.Option(
        "--label-columns",
        help="With --multi-label, one 0/1 column per class, comma-separated (as data.label_columns).",
        show_default=False,
    ),
]
ValSplit = Annotated[
    float, typer.Option("--val-split", help="Held-out fraction when there is no val/ folder (as data.val_split).")
]
NoCache = Annotated[
    bool, typer.Option("--no-cache", help="Decode every file again instead of trusting the screening cache.")
]
Group = Annotated[
    Optional[str],
    typer.Option(
        "--group",
        help="Images that must stay on one side of the split (as data.group): a regular expression over the paths "
        "whose match names the group, or a manifest's column; a group in more than one split is a problem.",
        show_default=False,
    ),
]
MaxFileMb = Annotated[
    float, typer.Option("--max-file-mb", help="Files larger than this are unreadable, unread (as data.max_file_mb).")
]
# --deep: the audit of tlcli.audit (tlcli/cli/check_deep.py prints it).
Deep = Annotated[
    bool,
    typer.Option(
        "--deep",
        help="Also embed every image with a pretrained base (through the feature cache training uses) and report "
        "near-duplicates within and across splits, likely label errors and per-class learning curves.",
    ),
]
DeepBase = Annotated[
    Optional[str],
    typer.Option("--base", help="With --deep: the keras.applications base that embeds (default MobileNetV2)."),
]
DeepConfig = Annotated[
    Optional[Path],
    typer.Option("--config", help="With --deep: embed with this config's base (its features are shared with train)."),
]
Strict = Annotated[
    bool, typer.Option("--strict", help="With --deep: exit 4 on label suspects or classes still climbing too.")
]
Out = Annotated[
    Optional[Path],
    typer.Option("--out", help="With --deep: the check folder to write (default: a new one under ./checks/)."),
]


@app.command("check")
@command(flags={"data.group": "--group"})
def check_command(
    data_dir: DataDir = None,
    manifest: Manifest = None,
    column: Columns = None,
    multi_label: MultiLabel = False,
    label_separator: LabelSeparator = "|",
    label_columns: LabelColumns = None,
    val_split: ValSplit = 0.2,
    no_cache: NoCache = False,
    max_file_mb: MaxFileMb = DEFAULT_MAX_FILE_MB,
    group: Group = None,
    deep: Deep = False,
    base: DeepBase = None,
    config: DeepConfig = None,
    strict: Strict = False,
    out: Out = None,
    json_output: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Decode every image in DATA_DIR as training would and report what is wrong.

    Exit 0: clean. 4: problems (unreadable files, duplicates, leakage, groups across splits; with --deep also
    near-duplicate leakage, and with --strict label suspects or classes still climbing). 2: unusable.
    """
    if (data_dir is None) == (manifest is None):
        raise UserError("give a DATA_DIR (or a manifest file) or --manifest FILE (not both)")
    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from tlcli.data.manifest import check_regular
    from tlcli.data.problems import check_dataset

    data_dir = data_dir or manifest
    if manifest is not None and not manifest.exists():
        raise UserError(f"--manifest: file not found: {manifest}")
    if manifest is not None:
        check_regular(manifest, "--manifest")
    if not 0 < val_split < 1:
        raise UserError(f"--val-split: must be between 0 and 1, got {val_split}")
    if not max_file_mb > 0:
        raise UserError(f"--max-file-mb: must be above 0, got {max_file_mb}")
    if not deep and (base, config, out, strict) != (None, None, None, False):
        raise UserError("--base, --config, --out and --strict belong to --deep; add --deep")
    if (label_columns is not None or label_separator != "|") and not multi_label:
        raise UserError("--label-separator and --label-columns describe a multi-label manifest; add --multi-label")
    labels = (
        {
            "multi_label": True,
            "label_separator": label_separator,
            "label_columns": label_columns.split(",") if label_columns else None,
        }
        if multi_label
        else None
    )
    listing = {
        "val_split": val_split,
        "max_file_mb": max_file_mb,
        "columns": parse_columns(column),
        "labels": labels,
        "group": group,
    }
    report = check_dataset(data_dir, use_cache=not no_cache, reporter=output().reporter(silent=json_output), **listing)
    if not json_output and not quiet:
        _print_report(report)
    audit = None
    if deep and not report.unusable:
        from tlcli.cli.check_deep import run_deep

        audit = run_deep(data_dir, base, config, out, strict=strict, json_output=json_output, quiet=quiet, **listing)
    if json_output:
        output().print_json(report.to_dict() | ({"deep": audit.to_dict()} if audit is not None else {}))
    if report.unusable:
        output().error(f"{data_dir}: {report.unusable}")
    raise typer.Exit(
        report.exit_code if report.unusable else max(report.exit_code, audit.exit_code(strict) if audit else 0)
    )


def _print_counts(report, console) -> None:
    from rich.table import Table

    table = Table(title=f"{report.data_dir}: images per class", title_justify="left")
    table.add_column("class")
    for split in report.counts:
        table.add_column(split, justify="right")
    for name in report.classes:
        table.add_row(name, *(str(report.counts[split][name]) for split in report.counts))
    table.add_row("files listed", *(str(report.listed[split]) for split in report.counts), style="dim")
    console.print(table)
    for split, source in report.sources.items():
        console.print(f"  {split}: {source}", highlight=False)
    if report.imbalance_ratio is not None:
        console.print(
            f"imbalance ratio (largest / smallest training class): {report.imbalance_ratio:g}", highlight=False
        )


def _sections(report) -> list[tuple[str, list[str], str | None]]:
    """Each kind of problem or note: its title, one line per file, its colour."""
    root = Path(report.data_dir)

    def rel(path: str) -> str:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            return path

    def where(file) -> str:
        # Name the split only when the path does not already show it (a val_split hold-out).
        shown = rel(file.path)
        source = report.sources.get(file.split, "")
        return shown if Path(source).is_dir() and Path(file.path).is_relative_to(source) else f"{shown} ({file.split})"

    problems = report.problems
    return [
        (
            "bad manifest rows (training skips them)",
            [f"row {b.row}: {b.path + ': ' if b.path else ''}{b.problem}" for b in problems.bad_rows],
            "red",
        ),
        (
            "unreadable files (training skips them)",
            [f"{'row ' + str(f.row) + ': ' if f.row else ''}{rel(f.path)}: {f.reason}" for f in problems.unreadable],
            "red",
        ),
        (
            "exact duplicates",
            [
                f"{', '.join(k.replace('_', ' ') for k in g.kinds)}: " + " = ".join(where(f) for f in g.files)
                for g in problems.duplicates
            ],
            "red",
        ),
        (
            "groups in more than one split",
            [f"{g.describe()} (e.g. {rel(g.files[0]['path'])})" for g in problems.crossing_groups],
            "red",
        ),
        ("classes with fewer than 10 images", [f"{c['class']}: {c['images']}" for c in report.small_classes], "yellow"),
        (
            "content does not match the extension",
            [f"{rel(m['path'])}: {m['format']} named {m['extension']}" for m in report.extension_mismatches],
            "yellow",
        ),
        ("colour conversions", [f"{rel(c['path'])}: {c['mode']}, {c['conversion']}" for c in report.conversions], None),
        ("EXIF-rotated (rotation applied)", [rel(p) for p in report.exif_rotated], None),
        ("animated (first frame used)", [f"{rel(a['path'])}: {a['frames']} frames" for a in report.animated], None),
        (
            "very small images (< 32 px on a side)",
            [f"{rel(s['path'])}: {s['width']}x{s['height']}" for s in report.small_images],
            "yellow",
        ),
        ("ignored files", [f"{rel(i['path'])}: {i['reason']}" for i in report.ignored], None),
        ("warnings", report.warnings, "yellow"),
    ]


def _print_report(report) -> None:
    """The counts per class and split, then each kind of problem (up to SHOWN files each), then the verdict."""
    console = output().stdout
    _print_counts(report, console)
    problems = report.problems
    for title, lines, style in _sections(report):
        if not lines:
            continue
        console.print(f"\n[bold{' ' + style if style else ''}]{title}[/] ({len(lines)})")
        for line in lines[:SHOWN]:
            console.print(f"  {line}", highlight=False, markup=False)
        if len(lines) > SHOWN:
            console.print(f"  ... and {len(lines) - SHOWN} more (--json lists all)", highlight=False)
    cache = report.cache
    console.print(
        f"\n{cache.get('decoded', 0)} files decoded, {cache.get('cached', 0)} from the screening cache",
        highlight=False,
        style="dim",
    )
    if report.unusable:
        console.print(f"[bold red]unusable:[/] {report.unusable}", highlight=False)
    elif problems.count:
        console.print(f"[bold yellow]problems:[/] {problems.summary()}", highlight=False)
    else:
        console.print("[bold green]clean:[/] no problems found", highlight=False)
