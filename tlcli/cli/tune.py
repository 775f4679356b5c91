"""`tlcli tune`: hyperparameter search over the config's `tune.space` (library: `tlcli.tuning`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tlcli.cli import Debug, Json, Quiet, RunsDir, Sets, _import_tensorflow, app, command, fail, output
from tlcli.errors import EXIT_INTERRUPTED, ConfigError, Interrupted, TrainingError, UserError
from tlcli.tuning.study import StudyProgress


class RichStudyProgress(StudyProgress):
    """A bar over the study's trials with the best value so far, and one line per finished trial, on stderr."""

    def __init__(self, console, metric: str = ""):
        self.console, self.metric = console, metric
        self._progress: Any = None
        self._task: Any = None

    def start(self, total: int, done: int, kind: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        super().start(total, done, kind)
        self._progress = Progress(
            TextColumn("trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[best]}"),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("trials", total=total, completed=min(done, total), best="")

    def trial_end(self, trial, best, done: int, total: int) -> None:
        from tlcli.tuning.record import TrialRecord

        super().trial_end(trial, best, done, total)
        state = trial.state.name.lower()
        record = TrialRecord.of(trial)
        epochs = record.epochs
        seconds = trial.duration.total_seconds() if trial.duration is not None else 0.0
        if state == "complete":
            what = f"{trial.value:.4f}" + (f" after {epochs} epochs" if epochs else "")
        elif state == "pruned":
            what = f"pruned at epoch {trial.last_step}" if trial.last_step is not None else "pruned"
        else:
            what = f"failed: {record.error if record.error is not None else 'see --debug'}"
        shown = f"best {best.value:.4f} (trial {best.number})" if best is not None else ""
        self.console.print(
            f"trial {trial.number} {state}: {what}, {seconds:.1f} s; {shown}", highlight=False, markup=False
        )
        if self._progress is not None:
            self._progress.update(self._task, completed=min(done, total), best=shown)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = None


TuneConfig = Annotated[
    Optional[Path], typer.Argument(help="Experiment YAML file with a tune: section (not with --resume).")
]
TuneResume = Annotated[
    Optional[Path],
    typer.Option("--resume", help="Continue the study of TUNE_DIR (a runs/<stamp>-<name>-tune/ folder)."),
]
Trials = Annotated[
    Optional[int],
    typer.Option("--trials", help="The study's total of finished trials, over every process (default tune.trials)."),
]
Timeout = Annotated[Optional[float], typer.Option("--timeout", help="Start no trial after this many seconds.")]
Storage = Annotated[
    Optional[str],
    typer.Option(
        "--storage",
        help="Shared study storage: postgresql://USER@HOST/DB, mysql://..., sqlite:///FILE or journal:PATH "
        "(default: study.db in the tune folder).",
    ),
]
Study = Annotated[
    Optional[str],
    typer.Option(
        "--study", help="The study's name in the storage (default: the config's name); an existing study is joined."
    ),
]
TrainBest = Annotated[bool, typer.Option("--train-best", help="Then train best.yaml into a normal run folder.")]
TuneMlflow = Annotated[
    Optional[str],
    typer.Option(
        "--mlflow",
        flag_value="",
        metavar="[URI]",
        help="Log the study (a parent run, a nested run per trial) and the --train-best run to MLflow at URI "
        "(alone: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db here); "
        "also on with the config's tracking.mlflow or $MLFLOW_TRACKING_URI.",
    ),
]


@app.command("tune")
@command(flags={"tune_dir": "--resume"})
def tune_command(
    config: TuneConfig = None,
    resume: TuneResume = None,
    trials: Trials = None,
    timeout: Timeout = None,
    storage: Storage = None,
    study: Study = None,
    train_best: TrainBest = False,
    mlflow: TuneMlflow = None,
    set_: Sets = None,
    runs_dir: RunsDir = None,
    json_output: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Search CONFIG's tune.space with Optuna (trial 0 is CONFIG as written) into runs/<stamp>-<name>-tune/,
    or continue one (--resume)."""

    if (config is None) == (resume is None):
        raise UserError("give a CONFIG to start a study, or --resume TUNE_DIR to continue one (not both)")
    if resume is not None and (set_ or runs_dir is not None or study is not None):
        raise UserError(
            "--resume: the tune folder keeps its config, runs folder and study name (no --set, --runs-dir or --study)"
        )
    if trials is not None and trials < 1:
        raise UserError(f"--trials: expected a number >= 1, got {trials}")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout: expected seconds > 0, got {timeout}")
    if config is not None:
        _check_config(config, set_ or [])  # exit 2 on a bad tune: section before TensorFlow loads

    # The library is imported when the command runs (the CLI's boundary): `tlcli --help` need not load it.
    from tlcli.tracking import TrackingRequest
    from tlcli.tuning.api import _require_optuna, resume_tune, tune

    _require_optuna()
    _import_tensorflow(debug)

    reporter = output().reporter()
    progress = StudyProgress() if quiet else RichStudyProgress(output().stderr)
    tracking = TrackingRequest(mlflow_uri=mlflow) if mlflow is not None else None
    try:
        if resume is not None:
            result = resume_tune(
                resume,
                trials=trials,
                timeout=timeout,
                storage=storage,
                train_best=train_best,
                reporter=reporter,
                progress=progress,
                tracking=tracking,
            )
        else:
            result = tune(
                config,
                overrides=set_ or [],
                trials=trials,
                timeout=timeout,
                storage=storage,
                study=study,
                runs_dir=runs_dir,
                train_best=train_best,
                reporter=reporter,
                progress=progress,
                tracking=tracking,
            )
    except Interrupted as exc:
        if exc.run_dir is None:
            raise
        fail(str(exc), EXIT_INTERRUPTED, extra={"tune_dir": str(exc.run_dir)})
    except TrainingError as exc:  # every trial failed: the study is kept
        if exc.run_dir is None:
            raise
        fail(str(exc), exc.exit_code, extra={"tune_dir": str(exc.run_dir)})
    if json_output:
        output().print_json(result.to_dict())
    elif not quiet:
        _print_summary(result)


def _check_config(config: Path, overrides: list[str]) -> None:
    from tlcli.config.loading import load_config

    if load_config(config, overrides).tune is None:
        raise ConfigError("tune", f"{config} has no tune: section; add tune.space (see docs/guides/tune.md)")


def _print_summary(result) -> None:
    """The best trial first (its value, parameters, figures), then trial 0 to compare, the counts, the times,
    the files."""
    from rich.table import Table

    table = Table(title=f"study {result.study}", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    best, baseline = result.best, result.baseline
    if best is not None:
        table.add_row(
            f"best trial ({result.direction} {result.metric})", f"{best['value']:.4f}  (trial {best['number']})"
        )
        for key, value in best["params"].items():
            table.add_row(f"  {key}", f"{value:.4g}" if isinstance(value, float) else str(value))
        for key, value in (best.get("figures") or {}).items():
            if key != "epoch":
                table.add_row(f"  {key}", f"{value:.4f}" if isinstance(value, float) else str(value))
    else:
        table.add_row("best trial", "none completed")
    if baseline is not None and baseline.get("value") is not None:
        table.add_row("trial 0 (the config as written)", f"{baseline['value']:.4f}")
    counts = result.trials
    table.add_row(
        "trials",
        f"{counts.get('finished', 0)} of {counts.get('target')} finished: {counts.get('complete', 0)} complete, "
        f"{counts.get('pruned', 0)} pruned, {counts.get('fail', 0)} failed; "
        f"{counts.get('this_process', 0)} by this process",
    )
    times = result.timings_s
    table.add_row(
        "time",
        f"extraction {times.get('extract', 0):.1f} s, trials {times.get('trials', 0):.1f} s"
        + (" (each trial trains the full model)" if result.kind == "full" else ""),
    )
    table.add_row("tune folder", str(result.tune_dir))
    if result.best_config is not None:
        table.add_row("best config (for tlcli train)", str(result.best_config))
    if result.train_best is not None:
        final = result.train_best.metrics.final
        table.add_row(
            "best config trained",
            f"{result.train_best.run_dir}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k.endswith(("accuracy", "map"))),
        )
    output().stdout.print(table)
