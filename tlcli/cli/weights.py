"""`tlcli weights import|list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tlcli.cli import Debug, Json, app, command, output
from tlcli.paths import keras_weights_dir

weights_app = typer.Typer(help="Pretrained weights in the Keras cache (for offline machines).", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


# ----------------------------------------------------------------------------- weights and datasets


@weights_app.command("import")
@command
def weights_import(
    file: Annotated[Path, typer.Argument(help="A Keras weights file, e.g. mobilenet_2_5_224_tf_no_top.h5.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a different file of the same name already in the cache.")
    ] = False,
    debug: Debug = False,
) -> None:
    """Copy a weights file into the Keras cache ($KERAS_HOME/models), so `weights: imagenet` works offline."""
    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from tlcli.modeling.weights import import_weights

    imported = import_weights(file, force=force)
    if imported.unchanged:
        output().stdout.print(f"{file.name}: already in the cache, unchanged ({imported.path})", highlight=False)
    else:
        output().stdout.print(f"imported {file.name} -> {imported.path}", highlight=False)


@weights_app.command("list")
@command
def weights_list(json_output: Json = False, debug: Debug = False) -> None:
    """List the weights files in the Keras cache."""
    from tlcli.modeling.weights import cached_weights

    files = cached_weights()
    if json_output:
        output().print_json({"folder": str(keras_weights_dir()), "files": [str(p) for p in files]})
        return
    output().stdout.print(f"{keras_weights_dir()}: {len(files)} file(s)", highlight=False)
    for path in files:
        output().stdout.print(f"  {path.name}  {path.stat().st_size / 1e6:.1f} MB", highlight=False)
