"""`tlcli datasets digits`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlcli.cli import Debug, app, command, output

datasets_app = typer.Typer(help="Example datasets that ship with dependencies.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("digits")
@command
def datasets_digits(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write source/ and target/ into.")] = Path("data/digits"),
    target_train_per_class: Annotated[
        int, typer.Option(help="Labelled training images per class in the target task.")
    ] = 10,
    debug: Debug = False,
) -> None:
    """Export scikit-learn's bundled digits as class folders: source = 0-4, target = 5-9."""
    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from tlcli.data.digits import export_digits

    counts = export_digits(out_dir, target_train_per_class)
    for task, splits in counts.items():
        output().stdout.print(
            f"{out_dir / task}: " + ", ".join(f"{split} {n}" for split, n in splits.items()), highlight=False
        )
