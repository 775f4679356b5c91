"""The public training API: `train`, `resume` and `validate`.

Everything that can be wrong with the user's input (config, data folders,
base name, weights, layer names, optimizer arguments) is checked in
`prepare` before a run folder exists, so a user error leaves no trace. Once
the run folder exists, any failure marks it `failed` with the reason, Ctrl-C
marks it `interrupted`, and earlier runs are never touched
(`tlcli.runs.lifecycle`).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from tlcli.config.loading import load_config, parse_override, read_yaml
from tlcli.config.schema import ExperimentConfig
from tlcli.errors import RunError, UnusableData
from tlcli.evaluation.html_report import write_report
from tlcli.global_state import restores_global_state
from tlcli.progress import Reporter
from tlcli.runs.checkpoints import newest_state
from tlcli.runs.folder import RunLock, create_run_dir, is_complete
from tlcli.runs.lifecycle import recording_outcome
from tlcli.runs.metrics import TrainResult
from tlcli.runs.records import read_run_record, resume_run, start_run
from tlcli.tracking import RunStart, trackers
from tlcli.training import resume_checks as checks
from tlcli.training.cluster import peers_lost, worker_copy, worker_scratch
from tlcli.training.launcher import tell_launcher
from tlcli.training.options import RunOptions
from tlcli.training.phases import epochs_key
from tlcli.training.prepare import Prepared, Validation, prepare, validate

__all__ = ["RunOptions", "TrainResult", "Validation", "resume", "train", "validate"]


@restores_global_state
def train(
    config: ExperimentConfig | str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    runs_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    options: RunOptions | None = None,
) -> TrainResult:
    """Train a model as `config` describes and write a new run folder.

    Example:
        >>> from tlcli import load_config, train
        >>> result = train(load_config("configs/quickstart/source.yaml"))
        >>> result.metrics.final["val_accuracy"]

    Args:
        config: an `ExperimentConfig`, or the path of a YAML config.
        overrides: `key.path=value` strings applied before validation.
        runs_dir: where run folders go (default: `output.runs_dir`).
        reporter: receives progress; the default only logs.
        options: `RunOptions` (strict data checks, device, start time, report worker).

    Returns:
        The run folder and its metrics (`TrainResult`).

    Raises:
        ConfigError, DataError: bad input; nothing was written.
        TrainingError: training failed; the run folder is marked failed.
        Interrupted: Ctrl-C; the run folder is marked interrupted.
    """
    options, reporter = options or RunOptions(), reporter or Reporter()
    with options.report_worker or contextlib.nullcontext(), worker_scratch() as scratch:
        prepared = prepare(config, overrides=overrides, runs_dir=runs_dir, device=options.device, reporter=reporter)
        _check_tracking(prepared, options)
        # Only the chief writes the run folder; another worker trains in scratch.
        run_dir = create_run_dir(prepared.runs_dir if scratch is None else scratch, prepared.config.name)
        if scratch is None:
            tell_launcher(run_dir)
        return _train_new(prepared, run_dir, reporter, options)


def _train_new(prepared: Prepared, run_dir: Path, reporter: Reporter, options: RunOptions) -> TrainResult:
    try:
        with (
            RunLock(run_dir),
            recording_outcome(run_dir),
            peers_lost(prepared.config.runtime.collective_timeout_s, run_dir),
        ):
            start_run(run_dir, prepared.config.name)
            reporter.info(f"run folder: {run_dir}")
            result = _train_tracked(prepared, run_dir, reporter, options)
    except UnusableData:
        # Found by the pass over the files, which runs inside the folder (so it can resume); nothing was trained.
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    _write_html_report(prepared, run_dir, reporter)  # once run.json says completed
    return result


@restores_global_state
def resume(
    run_dir: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    reporter: Reporter | None = None,
    options: RunOptions | None = None,
) -> TrainResult:
    """Continue a run from its last completed epoch, or extend a finished one.

    The run's own config.yaml is used. `overrides` may only change epoch
    counts and early-stopping patience (`tlcli.training.resume_checks.RESUMABLE_KEYS`);
    raising the epochs of the last phase that ran extends a finished run (an
    early-stopped phase restarts its patience). The run folder keeps its
    name; run.json records the resume.

    Raises:
        RunError: not a run folder, an incompatible run format, a run still
            running, or a completed run with nothing to add.
        ConfigError: an override that cannot change on resume.
        TrainingError, Interrupted: as `train`.
    """
    options, reporter, run_dir = options or RunOptions(), reporter or Reporter(), Path(run_dir)
    with options.report_worker or contextlib.nullcontext(), worker_scratch() as scratch:
        if not run_dir.is_dir():
            raise RunError(f"run_dir: {run_dir}: run folder not found")
        read_run_record(run_dir)  # refuses non-runs and other run-format versions
        if scratch is not None:  # another worker: resume a copy, taken before the cluster forms and the chief writes
            run_dir = worker_copy(run_dir, scratch)
        with RunLock(run_dir):
            return _resume_locked(run_dir, list(overrides), reporter, options)


def _resume_locked(run_dir: Path, overrides: list[str], reporter: Reporter, options: RunOptions) -> TrainResult:
    record = read_run_record(run_dir)
    if record.is_live():
        raise RunError(f"{run_dir} is still running (pid {record.pid}); stop that process first or wait for it")
    if not (run_dir / "config.yaml").is_file():
        raise RunError(f"{run_dir}: no config.yaml (the run was stopped before it began); start a new run instead")
    raw = read_yaml(run_dir / "config.yaml")
    state = newest_state(run_dir)
    checks.check_overrides([parse_override(text) for text in overrides], raw, state, run_dir)
    config = load_config(raw, overrides)
    if (
        state is not None
        and record.status == "completed"
        and is_complete(run_dir)
        and checks.nothing_left(config, state)
    ):
        extend = (
            f"--resume {run_dir} --set {epochs_key(config, state.phase)}=N (N > {checks.planned_epochs(config, state)})"
        )
        raise RunError(f"{run_dir} is already complete ({state.epoch} epochs); to extend it: tlcli train {extend}")
    prepared = prepare(config, runs_dir=run_dir.parent, device=options.device, reporter=reporter)
    checks.check_same_splits(prepared.splits, run_dir)
    checks.check_same_contents(prepared.splits, run_dir, prepared.config.data.max_bytes)
    _check_tracking(prepared, options)
    with recording_outcome(run_dir), peers_lost(prepared.config.runtime.collective_timeout_s, run_dir):
        resume_run(run_dir, state.epoch if state else 0, state.phase if state else None, overrides)
        reporter.info(f"resuming run folder: {run_dir}")
        result = _train_tracked(prepared, run_dir, reporter, options, overrides)
    _write_html_report(prepared, run_dir, reporter)
    return result


def _check_tracking(prepared: Prepared, options: RunOptions) -> None:
    """`--strict-tracking`: an unusable tracking store is exit 2 before anything starts (the chief checks)."""
    if prepared.plan.chief:
        trackers(options.tracking).check(prepared.config)


def _train_tracked(
    prepared: Prepared, run_dir: Path, reporter: Reporter, options: RunOptions, overrides: list[str] | None = None
) -> TrainResult:
    """`train_in_run`, tracked by every tracker `options.tracking` and the config turn on; `overrides`: a resume's."""
    # The session pulls in Keras (its callbacks subclass Keras's): imported once a run starts, so that importing the
    # API (the CLI does) loads no TensorFlow before the CLI has set TF_ENABLE_ONEDNN_OPTS and started the report worker.
    from tlcli.training.session import Session, train_in_run

    plan = prepared.plan
    start = RunStart(run_dir, prepared.config, reporter, plan.chief, plan.describe(), overrides)
    with trackers(options.tracking).run(start) as tracking:
        session = Session(prepared, run_dir, reporter, options, resuming=overrides is not None, tracking=tracking)
        return train_in_run(session)


def _write_html_report(prepared: Prepared, run_dir: Path, reporter: Reporter) -> None:
    """`report.html` of a completed run (the chief's; `output.report: false`: none). The run is complete without it:
    a failure to write it is a warning, and `tlcli report RUN_DIR` writes it again."""
    if not (prepared.plan.chief and prepared.config.output.report):
        return
    try:
        reporter.info(f"report: {write_report(run_dir)}")
    except OSError as exc:
        reporter.warn(f"report.html not written ({exc}); write it with `tlcli report {run_dir}`")
