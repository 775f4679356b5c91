"""The public tuning API: `tune` and `resume_tune`.

A study is prepared as a run is (`tlcli.training.prepare`: config, data,
model, devices), so everything wrong with the input is exit 2 before a tune
folder exists. When every searched key leaves the frozen features alone and
the config trains the head on a frozen base, the features are extracted once
(`tlcli.training.passes.extract_splits`, through the feature cache) and every
trial trains only a head on them (`tlcli.tuning.objective.HeadTrials`);
otherwise every trial trains as a run does, and the study says so at the
start. Trial 0 is the config as written, so the study can only improve on it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcli.config.loading import load_config
from tlcli.config.schema import ExperimentConfig
from tlcli.errors import ConfigError, Interrupted, TlcliError, TrainingError, UserError
from tlcli.global_state import restores_global_state, traced_graphs_released
from tlcli.progress import Reporter
from tlcli.runs.folder import RunLock
from tlcli.runs.records import now_iso
from tlcli.tracking import StudyEnd, TrackingRequest, suspended, trackers
from tlcli.training.api import RunOptions, train
from tlcli.training.compile import epoch_metric_names
from tlcli.training.prepare import Prepared, prepare
from tlcli.tuning import folder as files
from tlcli.tuning.objective import HeadTrials, full_trial
from tlcli.tuning.record import TrialRecord, TuneRecord, TuneResult
from tlcli.tuning.shared import share_extraction, trial_kind, trial_zero
from tlcli.tuning.space import SearchSpace, base_label, pins
from tlcli.tuning.study import (
    StudyProgress,
    count,
    create_or_join,
    make_pruner,
    open_storage,
    redact,
    require_study,
    run_trials,
    spent_minutes,
)
from tlcli.tuning.summary import all_failed, best_config, best_trial, summarize, trial_counts

__all__ = ["TuneResult", "resume_tune", "tune"]


@dataclass
class _Study:
    """One process's part in a study: what it searches, where, and how a trial trains."""

    config: ExperimentConfig
    space: SearchSpace
    tune_dir: Path
    result: TuneResult
    total: int
    timeout: float | None
    storage_url: str
    prepared: Prepared | None = None
    heads: HeadTrials | None = None  # for kind "head"
    penalty: float | None = None  # what `train.l2: auto` stands for, chosen once for the study
    study: Any = None  # the optuna.Study
    tracking: TrackingRequest | None = None  # `--mlflow [URI]`


def _require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError("tlcli tune needs Optuna: pip install 'tlcli[tune]'") from None


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # tlcli's progress says what each trial did


@restores_global_state
def tune(
    config: ExperimentConfig | str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study: str | None = None,
    runs_dir: str | Path | None = None,
    train_best: bool = False,
    reporter: Reporter | None = None,
    progress: StudyProgress | None = None,
    tracking: TrackingRequest | None = None,
) -> TuneResult:
    """Search the config's `tune.space` with Optuna and write a tune folder `runs/<stamp>-<name>-tune/`.

    Trial 0 is the config as written. Trials that only change the head share
    one extraction of the frozen features and train in memory (no run folder
    per trial); the others train as runs do. Every epoch reports `tune.metric`
    to the study, whose pruner stops bad trials early.

    Example:
        >>> from tlcli import tune
        >>> result = tune("flowers.yaml", trials=30)
        >>> result.best["value"], result.best_config          # best.yaml: ready for `tlcli train`

    Args:
        config: an `ExperimentConfig` with a `tune` section, or the path of a YAML config.
        overrides: `key.path=value` strings applied before validation.
        trials: the study's total of finished trials (default `tune.trials`), counted over every process.
        timeout: start no trial after this many seconds (default `tune.timeout`).
        storage: an RDB URL (`postgresql://...`) or `journal:PATH` shared by several processes; default an
            SQLite file in the tune folder.
        study: the study's name in the storage (default: the config's name); a process naming an existing
            study joins it.
        train_best: then train `best.yaml` into a normal run folder.
        tracking: `--mlflow [URI]` (`tlcli.tracking.TrackingRequest`): log the study, its trials and the
            `train_best` run to MLflow there (also on with the config's `tracking.mlflow` or $MLFLOW_TRACKING_URI).

    Raises:
        ConfigError, DataError, UserError: bad input; nothing was written.
        TrainingError: every trial failed (exit 1): the first one's reason; tune.json says `failed` and why.
        Interrupted: Ctrl-C; the study is kept (`resume_tune` continues it).
    """
    from tlcli.runs.folder import RunLock, create_stamped_dir
    from tlcli.training.prepare import as_config, prepare

    _require_optuna()
    _quiet_optuna()
    reporter, progress = reporter or Reporter(), progress or StudyProgress()
    config = as_config(config, overrides)
    SearchSpace(config)  # no tune section: exit 2 before any work
    prepared = prepare(config, runs_dir=runs_dir, reporter=reporter)
    try:
        tune_dir = create_stamped_dir(prepared.runs_dir, f"{prepared.config.name}-tune")
    except OSError as exc:
        raise UserError(
            f"runs_dir: cannot create a tune folder in {prepared.runs_dir} ({exc.strerror or exc})"
        ) from None
    with RunLock(tune_dir):
        try:
            run = _begin(prepared, tune_dir, trials, timeout, storage, study or prepared.config.name, reporter)
            run.tracking = tracking
        except BaseException:
            shutil.rmtree(tune_dir, ignore_errors=True)  # nothing was searched yet: leave no trace
            raise
        return _search(run, reporter, progress, train_best)


@restores_global_state
def resume_tune(
    tune_dir: str | Path,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    train_best: bool = False,
    reporter: Reporter | None = None,
    progress: StudyProgress | None = None,
    tracking: TrackingRequest | None = None,
) -> TuneResult:
    """Continue the study of a tune folder (after Ctrl-C, a kill, or to add trials with a higher `trials`).

    The folder's own config.yaml, storage and study name are used; `storage` gives the URL again when it had a
    password (tune.json keeps it without).

    Raises:
        RunError: not a tune folder, its study's database is gone (or holds no such study), or another process
            works in it.
        TrainingError: every trial failed (as `tune`).
    """
    _require_optuna()
    _quiet_optuna()
    reporter, progress = reporter or Reporter(), progress or StudyProgress()
    tune_dir = Path(tune_dir)
    record = files.read_record(tune_dir)
    url = storage or (files.default_storage_url(tune_dir) if record.storage_url_default else record.result.storage)
    start_again = f"start a new study folder: tlcli tune {shlex.quote(str(tune_dir / 'config.yaml'))}"
    require_study(url, record.result.study, start_again)  # before any work: --resume never starts a new study
    with RunLock(tune_dir):
        config = load_config(files.read_config(tune_dir))
        prepared = prepare(config, runs_dir=tune_dir.parent, reporter=reporter)
        total = trials if trials is not None else record.target or config.tune.trials
        run = _begin(prepared, tune_dir, total, timeout, url, record.result.study, reporter)
        run.tracking = tracking
        reporter.info(f"resuming study {record.result.study} in {tune_dir}")
        return _search(run, reporter, progress, train_best)


def _begin(
    prepared: Prepared,
    tune_dir: Path,
    trials: int | None,
    timeout: float | None,
    storage: str | None,
    name: str,
    reporter: Reporter,
) -> _Study:
    """Plan the trials, share the extraction, create or join the study; tune.json says `running`."""
    config = prepared.config
    tune = config.tune
    space = SearchSpace(config)
    metric = tune.resolved_metric(config.multi_label)
    figures = sorted(name_ for name_ in epoch_metric_names(config, prepared.num_classes) if name_.startswith("val_"))
    if metric not in figures:
        raise ConfigError(
            "tune.metric", f"{metric!r} is not a per-epoch validation figure of this run ({', '.join(figures)})"
        )
    url = storage or files.default_storage_url(tune_dir)
    kind, why = trial_kind(prepared, space)
    result = TuneResult(
        tune_dir, name, redact(url), metric, tune.goal(config.multi_label), kind, why, "running", started=now_iso()
    )
    result.pid = os.getpid()
    total, timeout = trials or tune.trials, timeout if timeout is not None else tune.timeout
    run = _Study(config, space, tune_dir, result, total, timeout, url, prepared)
    clock = time.perf_counter()
    _prepare_trials(run, reporter)
    result.timings_s["extract"] = round(time.perf_counter() - clock, 3)
    first = trial_zero(space, config, run.penalty, reporter)
    storage_ = open_storage(url)
    pruner = make_pruner(tune.pruner, tune.pruner_args)
    joined = create_or_join(storage_, name, result.direction, space.fingerprint(), pruner, config.seed, first)
    run.study = joined.study
    how = "new" if joined.created else f"joined: {count(joined.study)} trials finished"
    reporter.info(
        f"study {name} ({how}) in {result.storage}: {result.direction} {metric} over {run.total} trials; "
        f"tune folder {tune_dir}"
    )
    files.write_config(tune_dir, config)
    _write_record(run)
    return run


def _prepare_trials(run: _Study, reporter: Reporter) -> None:
    """Head trials: the study's one extraction, shared; full trials: say what each costs."""
    if run.result.kind == "head":
        shared = share_extraction(run.prepared, reporter)
        run.heads, run.penalty = shared.heads, shared.penalty
        run.result.extraction, run.result.folds = shared.extraction, shared.heads.folds
        run.result.fold_method = shared.heads.fold_method
        return
    scored = (
        "; they are scored on the validation split (tune.folds is for head trials)"
        if run.config.tune.folds not in ("auto", 1)
        else ""
    )
    reporter.warn(f"trials train the full model ({run.result.why}): each costs what a run costs{scored}")


def _objective(run: _Study):
    def objective(trial) -> float:
        values = run.space.draw(trial)
        fixed = pins(run.space.config_for(values), run.penalty)
        TrialRecord(pins=fixed, kind=run.result.kind).save(trial)
        try:
            config = run.space.config_for(values, fixed)
            TrialRecord(backbone=base_label(config)).save(trial)
            with traced_graphs_released():  # else each trial's graphs stay alive until the study ends
                outcome = _trial(run, trial, config)
        except TlcliError as exc:
            TrialRecord(error=redact(str(exc))).save(trial)
            raise
        TrialRecord(epochs=outcome.epochs, folds=run.result.folds, figures=outcome.figures).save(trial)
        return outcome.value

    return objective


def _trial(run: _Study, trial, config: ExperimentConfig):
    """One trial's outcome: a head on the study's shared features, or a full training run."""
    if run.result.kind == "head":
        return run.heads.run(trial, config, run.result.metric)
    return full_trial(trial, config, run.result.metric, run.tune_dir / ".trials")


def _search(run: _Study, reporter: Reporter, progress: StudyProgress, train_best: bool) -> TuneResult:
    """Run the trials, then write trials.csv, best.yaml, the plots and tune.json; Ctrl-C keeps the study."""
    study, result = run.study, run.result
    progress.start(run.total, count(study), result.kind)
    clock = time.perf_counter()
    try:
        with suspended():  # MLflow: the trials are the study's nested runs (`_finish`), not runs of their own
            loop = run_trials(
                study,
                _objective(run),
                total=run.total,
                timeout=run.timeout,
                progress=progress,
                warn=reporter.warn,
                on_trial=lambda ran: _checkpoint(run, ran),
                budget=run.config.tune.budget,
            )
    except BaseException as exc:
        result.status = "failed"
        with contextlib.suppress(Exception):
            _finish(run, 0, reporter)
        raise exc
    result.timings_s["trials"] = round(time.perf_counter() - clock, 3)
    result.stopped_by = loop.stopped_by
    if loop.stopped_by == "budget":
        spent, budget = spent_minutes(study), run.config.tune.budget
        reporter.info(f"tune.budget spent: the trials took {spent:.1f} of {budget:g} minutes; no new trial started")
    result.error = None if loop.interrupted else all_failed(study.get_trials(deepcopy=False))
    result.status = "interrupted" if loop.interrupted else "failed" if result.error else "completed"
    _finish(run, loop.ran, reporter)
    if loop.interrupted:
        raise _interrupted(run)
    if result.error is not None:
        raise _failed(run, train_best)
    if train_best:
        _train_best(run, reporter)
    return result


def _train_best(run: _Study, reporter: Reporter) -> None:
    """`--train-best`: train best.yaml into a normal run folder, or say plainly that there is nothing to train."""
    result = run.result
    if result.best_config is None:
        counts = result.trials
        reporter.warn(
            f"--train-best: nothing to train, no trial completed ({counts.get('pruned', 0)} pruned, "
            f"{counts.get('fail', 0)} failed)"
        )
        return
    reporter.info(f"training the best trial's config: {result.best_config}")
    result.train_best = train(
        result.best_config, runs_dir=run.prepared.runs_dir, reporter=reporter, options=RunOptions(tracking=run.tracking)
    )
    _write_record(run)


def _failed(run: _Study, train_best: bool) -> TrainingError:
    """Every trial failed: exit 1 with the first one's reason (a study that searched nothing is no success)."""
    nothing = "; --train-best has nothing to train" if train_best else ""
    error = TrainingError(f"{run.result.error}{nothing} (the study is kept in {run.tune_dir})")
    error.run_dir = run.tune_dir  # the CLI's JSON names the folder
    return error


def _interrupted(run: _Study) -> Interrupted:
    error = Interrupted(
        f"interrupted; the study is kept ({run.result.trials.get('finished', 0)} trials finished). "
        f"continue with: tlcli tune --resume {shlex.quote(str(run.tune_dir))}"
    )
    error.run_dir = run.tune_dir
    return error


def _record_trials(run: _Study, ran: int):
    """The study's trials (every process's) into the result: counts, trial 0, the best so far. Returns the best."""
    result = run.result
    trials = run.study.get_trials(deepcopy=False)
    result.trials = trial_counts(trials, run.total, ran)
    result.baseline = next((summarize(t) for t in trials if t.number == 0), None)
    best = best_trial(trials, result.direction)
    result.best = summarize(best) if best is not None else result.best
    budget = run.config.tune.budget
    if budget is not None:
        result.budget = {"minutes": budget, "spent": round(spent_minutes(run.study), 3)}
    return best


def _checkpoint(run: _Study, ran: int) -> None:
    """After every finished trial, tune.json (atomically) with the trials so far: a study killed outright (SIGKILL,
    a power cut) still lists what it finished; its pid, dead, then shows it `interrupted`."""
    _record_trials(run, ran)
    _write_record(run)


def _finish(run: _Study, ran: int, reporter: Reporter) -> None:
    """What the study holds now (every process's trials), into the tune folder's files."""
    study, result = run.study, run.result
    best = _record_trials(run, ran)
    files.write_trials(run.tune_dir, study, run.space.keys)
    if best is not None:
        result.best_config = files.write_best(run.tune_dir, best_config(run.space, run.config, best, result.kind))
    result.plots = files.write_plots(run.tune_dir, study)
    result.timings_s["total"] = round(sum(result.timings_s.get(k, 0.0) for k in ("extract", "trials")), 3)
    result.pid = None
    _write_record(run)
    # When tracking is on: in MLflow, a parent run and a nested run per trial.
    trackers(run.tracking).log_study(StudyEnd(run.config, run.tune_dir, study, result.to_dict(), reporter))


def _write_record(run: _Study) -> None:
    TuneRecord(run.result, run.storage_url == files.default_storage_url(run.tune_dir)).write(run.tune_dir)
