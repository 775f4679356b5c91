"""`tlcli train`, `validate`, `layers`, `bases`, `config-reference`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tlcli.cli import (
    ConfigFile,
    Debug,
    Json,
    Quiet,
    RunsDir,
    Sets,
    _error,
    _import_tensorflow,
    _print_json,
    _reporter,
    app,
    command,
    fail,
    stdout,
)

# ----------------------------------------------------------------------------- train / validate


@app.command()
@command
def train(
    config: Annotated[Optional[Path], typer.Argument(help="Experiment YAML file (not with --resume).")] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option(
            "--resume",
            help="Continue RUN_DIR from its last completed epoch with its own config.yaml; with --set train.epochs=N (or fine_tune.epochs=N), extend a finished run.",
        ),
    ] = None,
    set_: Sets = None,
    runs_dir: RunsDir = None,
    device: Annotated[
        Optional[str], typer.Option("--device", help="auto, cpu or gpu (overrides runtime.device).")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Stop (exit 2) on any data problem `tlcli check` reports: unreadable files, duplicates, leakage.",
        ),
    ] = False,
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers",
            help="Train as a cluster of N local worker processes (MultiWorkerMirroredStrategy, one TF_CONFIG each); data.batch_size stays the global batch.",
        ),
    ] = None,
    mlflow: Annotated[
        Optional[str],
        typer.Option(
            "--mlflow",
            flag_value="",
            metavar="[URI]",
            help="Log the run to MLflow at URI (alone: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db here); also on with the config's tracking.mlflow or $MLFLOW_TRACKING_URI.",
        ),
    ] = None,
    strict_tracking: Annotated[
        bool,
        typer.Option(
            "--strict-tracking",
            help="An MLflow store that cannot be reached is an error (exit 2) at start-up, instead of one warning and training untracked.",
        ),
    ] = False,
    json_output: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Train a model from CONFIG into a new run folder, or resume one (--resume RUN_DIR)."""
    from tlcli.errors import EXIT_INTERRUPTED, UserError

    if (config is None) == (resume is None):
        raise UserError("give a CONFIG to start a run, or --resume RUN_DIR to continue one (not both)")
    if resume is not None and runs_dir is not None:
        raise UserError("--runs-dir: not with --resume (the run stays in its folder)")
    if device is not None and device not in ("auto", "cpu", "gpu"):
        raise UserError(f"--device: expected auto, cpu or gpu, got {device!r}")
    if workers is not None:
        from tlcli.training.launcher import launch

        args = _worker_args(config, resume, set_ or [], runs_dir, device, strict, json_output, quiet, debug)
        args += (["--mlflow", mlflow] if mlflow else ["--mlflow"] if mlflow is not None else []) + (
            ["--strict-tracking"] if strict_tracking else []
        )
        raise typer.Exit(launch(args, workers, resume=resume))
    _prepare_determinism(config if config is not None else resume / "config.yaml", set_ or [])
    from tlcli.evaluation.worker import ReportWorker
    from tlcli.system import process_started

    worker = ReportWorker.start()  # first: it loads the report's libraries while TensorFlow loads here
    _import_tensorflow(debug)
    from tlcli.errors import Interrupted
    from tlcli.training.api import RunOptions
    from tlcli.training.api import resume as resume_training
    from tlcli.training.api import train as run_training

    reporter = _reporter(quiet, json_output)
    from tlcli.tracking import TrackingRequest

    tracking = TrackingRequest(mlflow_uri=mlflow, strict=strict_tracking)
    options = RunOptions(
        strict=strict, device=device, started=process_started(), report_worker=worker, tracking=tracking
    )  # training closes the worker
    try:
        if resume is not None:
            result = resume_training(resume, overrides=set_ or [], reporter=reporter, options=options)
        else:
            result = run_training(config, overrides=set_ or [], runs_dir=runs_dir, reporter=reporter, options=options)
    except Interrupted as exc:
        if exc.run_dir is None:
            raise
        import shlex

        message = f"interrupted; the run is kept at its last completed epoch. resume with: tlcli train --resume {shlex.quote(str(exc.run_dir))}"
        fail(message, EXIT_INTERRUPTED, json_output, extra={"run_dir": str(exc.run_dir)})
    if json_output:
        _print_json(result.to_dict())
    elif not quiet:
        _print_train_summary(result)


def _worker_args(config, resume, sets, runs_dir, device, strict, json_output, quiet, debug) -> list[str]:  # noqa: PLR0913  (the command's own options, passed on)
    """The `tlcli train` arguments of every worker: this command's, without --workers (paths absolute: workers may start elsewhere)."""
    args = (
        ["train", str(Path(config).absolute())]
        if config is not None
        else ["train", "--resume", str(Path(resume).absolute())]
    )
    for override in sets:
        args += ["--set", override]
    if runs_dir is not None:
        args += ["--runs-dir", str(Path(runs_dir).absolute())]
    if device is not None:
        args += ["--device", device]
    args += [
        flag
        for flag, on in (("--strict", strict), ("--json", json_output), ("--quiet", quiet), ("--debug", debug))
        if on
    ]
    return args


def _prepare_determinism(config_path: Path, overrides: list[str]) -> None:
    """With runtime.deterministic, turn oneDNN's op reordering off: it must be set before TensorFlow loads.

    A peek at the YAML only; any problem is left for the real config loading to report.
    """
    import os

    if "tensorflow" in sys.modules:
        return
    try:
        from tlcli.config.loading import parse_override, read_yaml

        raw = read_yaml(config_path)  # the guarded reader: a hostile file fails there, not here
        deterministic = bool((raw.get("runtime") or {}).get("deterministic"))
        for override in overrides:
            key, value = parse_override(override)
            if key == "runtime.deterministic":
                deterministic = bool(value)
    except Exception:  # noqa: BLE001
        return
    if deterministic:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _print_train_summary(result) -> None:
    """The figures people should trust first first: an untouched split, then the ones that chose something (marked)."""
    metrics = result.metrics
    table = Table(title="training summary", show_header=False)
    table.add_column("what")
    table.add_column("value")
    order = sorted(metrics.final, key=lambda key: (not key.startswith(f"{metrics.untouched_split}_"), key))
    for key in order:
        split = key.split("_", 1)[0]
        meaning = metrics.figures.get(split, "")
        mark = "" if meaning in ("", "untouched") else f"  ({meaning.split(':')[0]})"
        table.add_row(key + ("  (untouched)" if meaning == "untouched" else mark), f"{metrics.final[key]:.4f}")
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
        if outcome.get("kept") == "start":
            table.add_row(f"{phase}", "ended no better than it started: its starting weights were kept")
    table.add_row("epochs", str(metrics.epochs["total"]))
    table.add_row("images", ", ".join(f"{k} {v}" for k, v in metrics.images.items()))
    if metrics.devices.get("description"):
        table.add_row("devices", metrics.devices["description"])
    table.add_row("wall time", f"{metrics.wall_time_s:.1f} s")
    table.add_row("run folder", str(result.run_dir))
    stdout.print(table)


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
    from tlcli.config.loading import dump_config

    validation = _validated(config, set_ or [], runs_dir, debug)
    if json_output:
        _print_json(validation.to_dict(str(config)))
        return
    if print_config:
        stdout.print(dump_config(validation.config), highlight=False, markup=False)
    stdout.print(
        f"{config}: OK. {validation.splits.describe()}; base {validation.base}; {validation.devices}", highlight=False
    )


def _validated(config: Path, overrides: list[str], runs_dir: Path | None, debug: bool):
    """`tlcli.validate` on a config file, every schema problem printed (one line each) before the first is raised."""
    from tlcli.config.loading import config_problems, parse_override, read_yaml, set_dotted
    from tlcli.errors import ConfigError
    from tlcli.training.api import validate as run_validation

    _import_tensorflow(debug)
    raw = read_yaml(config)
    for override in overrides:
        set_dotted(raw, *parse_override(override))
    problems = config_problems(raw)
    if problems:
        for problem in problems[1:]:
            _error(problem)
        raise ConfigError("", problems[0])
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
    from tlcli.modeling import layers as names

    validation = _validated(config, set_ or [], runs_dir, debug)
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
    stdout.print(table)


@app.command()
@command
def bases(debug: Debug = False) -> None:
    """List the base model names a config can use."""
    from tlcli.modeling.bases import base_names, preprocess_mode

    table = Table(title="bases")
    table.add_column("name")
    table.add_column("preprocessing")
    for name in base_names():
        table.add_row(name, preprocess_mode(name))
    stdout.print(table)


@app.command("config-reference")
@command
def config_reference(debug: Debug = False) -> None:
    """Print every config key with its default, as a Markdown table."""
    from tlcli.config.reference import reference_markdown

    sys.stdout.write(reference_markdown())
