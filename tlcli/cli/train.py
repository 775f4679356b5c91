"""`tlcli train`, `validate`, `layers`, `bases`, `config-reference`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tlcli import settings
from tlcli.cli import (
    ConfigFile,
    Debug,
    Json,
    RunsDir,
    Sets,
    _import_tensorflow,
    app,
    command,
    fail,
    output,
    with_options,
)
from tlcli.cli.printing import with_interval
from tlcli.errors import EXIT_INTERRUPTED, ConfigError, Interrupted, UserError
from tlcli.system import process_started
from tlcli.training.options import TRAIN_OPTIONS, RunOptions, check_options, worker_argv

# The library each command calls is imported when it runs (the CLI's boundary): `tlcli --help` loads none of it.

# ----------------------------------------------------------------------------- train / validate


TrainConfig = Annotated[Optional[Path], typer.Argument(help="Experiment YAML file (not with --resume).")]


@app.command()
@command(flags={"run_dir": "--resume", "tracking.strict": "--strict-tracking"})
@with_options(TRAIN_OPTIONS, config=TrainConfig)
def train(**values: Any) -> None:
    """Train a model from CONFIG into a new run folder, or resume one (--resume RUN_DIR)."""
    config, resume, overrides = values["config"], values["resume"], values["set_"] or []
    if (config is None) == (resume is None):
        raise UserError("give a CONFIG to start a run, or --resume RUN_DIR to continue one (not both)")
    if resume is not None and values["runs_dir"] is not None:
        raise UserError("--runs-dir: not with --resume (the run stays in its folder)")
    check_options(values)
    if values["workers"] is not None:
        from tlcli.training.launcher import launch

        raise typer.Exit(launch(worker_argv(config, values), values["workers"], resume=resume))
    from tlcli.training.launcher import watch_launcher

    watch_launcher()  # a worker of a `--workers` launcher ends when the launcher does
    _prepare_determinism(config if config is not None else resume / "config.yaml", overrides)
    from tlcli.evaluation.worker import ReportWorker

    worker = ReportWorker.start()  # first: it loads the report's libraries while TensorFlow loads here
    _import_tensorflow(output().debug)
    options = RunOptions.from_options(values, started=process_started(), report_worker=worker)  # closes the worker
    reporter = output().reporter()
    from tlcli.training.api import resume as resume_training
    from tlcli.training.api import train as run_training

    try:
        if resume is not None:
            result = resume_training(resume, overrides=overrides, reporter=reporter, options=options)
        else:
            result = run_training(
                config, overrides=overrides, runs_dir=values["runs_dir"], reporter=reporter, options=options
            )
    except Interrupted as exc:
        if exc.run_dir is None:
            raise
        message = (
            "interrupted; the run is kept at its last completed epoch. "
            f"resume with: tlcli train --resume {shlex.quote(str(exc.run_dir))}"
        )
        fail(message, EXIT_INTERRUPTED, extra={"run_dir": str(exc.run_dir)})
    if output().json:
        output().print_json(result.to_dict())
    elif not output().quiet:
        _print_train_summary(result)


def _prepare_determinism(config_path: Path, overrides: list[str]) -> None:
    """With runtime.deterministic, turn oneDNN's op reordering off: it must be set before TensorFlow loads.

    A peek at the YAML only; any problem is left for the real config loading to report.
    """
    if "tensorflow" in sys.modules:
        return
    from tlcli.config.loading import parse_override, read_yaml

    try:
        raw = read_yaml(config_path)  # the guarded reader: a hostile file fails there, not here
        deterministic = bool((raw.get("runtime") or {}).get("deterministic"))
        for override in overrides:
            key, value = parse_override(override)
            if key == "runtime.deterministic":
                deterministic = bool(value)
    except Exception:  # noqa: BLE001
        return
    if deterministic:
        settings.set_process_default(settings.TF_ENABLE_ONEDNN_OPTS, "0")


def _print_train_summary(result) -> None:
    """The figures people should trust first first: an untouched split, then the ones that chose something (marked)."""
    from rich.table import Table

    metrics = result.metrics
    caption = "(low-high): the 95% interval (Wilson)" if metrics.intervals else None
    table = Table(title="training summary", show_header=False, caption=caption)
    table.add_column("what")
    table.add_column("value")
    order = sorted(metrics.final, key=lambda key: (not key.startswith(f"{metrics.untouched_split}_"), key))
    for key in order:
        split = key.split("_", 1)[0]
        meaning = metrics.figures.get(split, "")
        mark = "" if meaning in ("", "untouched") else f"  ({meaning.split(':')[0]})"
        shown = with_interval(metrics.final[key], metrics.intervals.get(key))  # the 95% interval, when it has one
        table.add_row(key + ("  (untouched)" if meaning == "untouched" else mark), shown)
    probe = metrics.linear_probe or {}
    if "val_accuracy" in probe:
        shown = f"val {probe['val_accuracy']:.4f}" + (
            f", test {probe['test_accuracy']:.4f}" if probe.get("test_accuracy") is not None else ""
        )
        if probe.get("val_map") is not None:  # multi-label: mean average precision
            shown = f"val mAP {probe['val_map']:.4f}"
        table.add_row("linear probe (reference)", f"{shown}  (C={probe['C']:g}, fitted on train)")
    elif probe.get("skipped"):
        table.add_row("linear probe (reference)", f"skipped: {probe['skipped']}")
    best = metrics.best
    if best:
        table.add_row("best epoch", f"{best.get('epoch')} ({best.get('phase')})")
    for phase, outcome in metrics.phases.items():
        if outcome.get("verdict"):  # a phase that started from trained weights: which it kept, by how much
            table.add_row(f"{phase}", outcome["verdict"])
        elif outcome.get("kept") == "start":
            table.add_row(f"{phase}", "ended no better than it started: its starting weights were kept")
    table.add_row("epochs", str(metrics.epochs["total"]))
    table.add_row("images", ", ".join(f"{k} {v}" for k, v in metrics.images.items()))
    if metrics.devices.get("description"):
        table.add_row("devices", metrics.devices["description"])
    table.add_row("wall time", f"{metrics.wall_time_s:.1f} s")
    table.add_row("run folder", str(result.run_dir))
    output().stdout.print(table)


@app.command()
@command
def validate(
    config: ConfigFile,
    set_: Sets = None,
    runs_dir: RunsDir = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved config (all defaults filled in).")
    ] = False,
    json_output: Json = False,
    debug: Debug = False,
) -> None:
    """Check CONFIG, its data folders and its base without training."""
    validation = _validated(config, set_ or [], runs_dir, debug)
    if json_output:
        output().print_json(validation.to_dict(str(config)))
        return
    if print_config:
        from tlcli.config.loading import dump_config

        output().stdout.print(dump_config(validation.config), highlight=False, markup=False)
    output().stdout.print(
        f"{config}: OK. {validation.splits.describe()}; base {validation.base}; {validation.devices}", highlight=False
    )


def _validated(config: Path, overrides: list[str], runs_dir: Path | None, debug: bool):
    """`tlcli.validate` on a config file, every schema problem printed (one line each) before the first is raised."""
    _import_tensorflow(debug)
    from tlcli.config.loading import config_problems, parse_override, read_yaml, set_dotted

    raw = read_yaml(config)
    for override in overrides:
        set_dotted(raw, *parse_override(override))
    problems = config_problems(raw)
    if problems:
        for problem in problems[1:]:
            output().error(problem)
        raise ConfigError("", problems[0])
    from tlcli.training.api import validate as run_validation

    return run_validation(raw, runs_dir=runs_dir)


# ----------------------------------------------------------------------------- helpers for configs


@app.command()
@command
def layers(
    config: ConfigFile,
    set_: Sets = None,
    runs_dir: RunsDir = None,
    debug: Debug = False,
) -> None:
    """Print the base's layers in Keras order (for base.trainable and fine_tune.unfreeze)."""
    validation = _validated(config, set_ or [], runs_dir, debug)
    from rich.table import Table

    from tlcli.modeling import layers as names

    base_layers = validation.model.get_layer(names.BASE).layers
    table = Table(title=f"{validation.base}: {len(base_layers)} layers")
    for column in ("index", "from the top", "name", "type", "weights"):
        table.add_column(column)
    for index, layer in enumerate(base_layers):
        table.add_row(
            str(index),
            str(len(base_layers) - index),
            layer.name,
            type(layer).__name__,
            str(sum(int(w.numpy().size) for w in layer.weights)),
        )
    output().stdout.print(table)


@app.command()
@command
def bases(debug: Debug = False) -> None:
    """List the base model names a config can use."""
    from rich.table import Table

    from tlcli.modeling.bases import base_names, preprocess_mode

    table = Table(title="bases")
    table.add_column("name")
    table.add_column("preprocessing")
    for name in base_names():
        table.add_row(name, preprocess_mode(name))
    output().stdout.print(table)


@app.command("config-reference")
@command
def config_reference(debug: Debug = False) -> None:
    """Print every config key with its default, as a Markdown table."""
    from tlcli.config.reference import reference_markdown

    sys.stdout.write(reference_markdown())
