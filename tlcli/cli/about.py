"""`tlcli --version` (instant: package metadata only) and `tlcli env` (the devices too, which load TensorFlow)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tlcli.cli import Debug, Json, _import_tensorflow, app, command, output


def _print_version(value: bool) -> None:
    if not value:
        return
    from tlcli.version import versions

    typer.echo(versions().describe())
    raise typer.Exit(0)


@app.callback()
def main(
    version: Annotated[
        Optional[bool],
        typer.Option(
            "--version",
            "-V",
            callback=_print_version,
            is_eager=True,
            help="Print the versions of tlcli, Python, TensorFlow and Keras, and exit (`tlcli env`: devices too).",
        ),
    ] = None,
) -> None:
    """Config-driven transfer learning for Keras 3 / TensorFlow."""


@app.command()
@command
def env(json_output: Json = False, debug: Debug = False) -> None:
    """Print the versions, the devices TensorFlow sees and where weights and caches are read from (for bug reports)."""
    _import_tensorflow(debug)
    from tlcli.modeling.environment import environment_report

    found = environment_report()
    if json_output:
        output().print_json(found.to_dict())
        return
    rows = [
        ("tlcli", found.versions.tlcli),
        ("Python", f"{found.versions.python} ({found.python_executable})"),
        ("TensorFlow", found.versions.tensorflow or "not installed"),
        ("Keras", found.versions.keras or "not installed"),
        ("platform", found.platform),
        ("CPUs", str(found.cpus)),
        ("devices", found.devices),
        ("weights folder", found.keras_weights_dir),
        ("weights files", ", ".join(found.weights_files) or "none (`tlcli weights import FILE` adds one)"),
        ("cache folder", found.cache_dir),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        output().stdout.print(f"{name:<{width}}  {value}", highlight=False, markup=False)
