"""`tlcli init` (a starting config from a folder of images) and `tlcli config-schema` (the config's JSON Schema)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tlcli.cli import Debug, Json, Quiet, _import_tensorflow, app, command, output


@app.command()
@command(flags={"output": "--output", "data_dir": "DATA_DIR"})
def init(
    data_dir: Annotated[Path, typer.Argument(help="A folder of class folders, or a parent of train/ (val/, test/).")],
    output_file: Annotated[
        Path, typer.Option("--output", "-o", help="The config file to write (refused if it exists, unless --force).")
    ] = Path("config.yaml"),
    base: Annotated[str, typer.Option("--base", help="The keras.applications base (ImageNet weights).")] = (
        "MobileNetV2"
    ),
    deep: Annotated[
        bool,
        typer.Option(
            "--deep",
            help="Also embed the training images with the base and write the learning curve's advice "
            "(more images or fine-tuning?) as comments; a minute or more.",
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the output file.")] = False,
    json_output: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Write a commented starting config for DATA_DIR (classes, counts, image sizes, imbalance), ready to train."""
    if deep:
        _import_tensorflow(debug)
    from tlcli.audit.starter import init_config

    result = init_config(
        data_dir, output_file, base=base, deep=deep, force=force, reporter=output().reporter(silent=json_output)
    )
    if json_output:
        output().print_json(result.to_dict())
        return
    survey = result.survey
    splits = ", ".join(f"{split} {survey.images(split)}" for split in survey.counts)
    say = output().stdout.print
    say(
        f"wrote {result.path}: {len(survey.class_names)} classes, {splits}; images {survey.sizes.describe()}",
        markup=False,
    )
    if result.schema_written:
        say(f"wrote {result.schema_written} (the JSON Schema the config's first line points editors at)", markup=False)
    for note in result.notes:
        say(note, markup=False)
    curve = result.learning_curve
    for line in result.advice[: 1 + bool(curve and curve.climbing)]:  # the advice, not the per-class lines
        say(line, markup=False)
    if not quiet:
        say(f"next: tlcli validate {result.path} && tlcli train {result.path}", markup=False)


@app.command("config-schema")
@command
def config_schema(
    output_file: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write the schema to this file instead of stdout.")
    ] = None,
    debug: Debug = False,
) -> None:
    """Print the config's JSON Schema (for editors: `# yaml-language-server: $schema=PATH` in a config)."""
    from tlcli.config.json_schema import config_json_schema_text

    text = config_json_schema_text()
    if output_file is None:
        sys.stdout.write(text)
        return
    from tlcli.runs.atomic import write_text_atomic

    write_text_atomic(output_file, text)
    output().stderr.print(f"wrote {output_file}", markup=False, highlight=False)
