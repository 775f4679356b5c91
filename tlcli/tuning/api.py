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
import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcli.config.schema import ExperimentConfig
from tlcli.errors import ConfigError, Interrupted, TlcliError, UserError
from tlcli.progress import Reporter
from tlcli.runs.metrics import TrainResult
from tlcli.runs.records import now_iso
from tlcli.tracking.settings import TrackingRequest
from tlcli.tuning import folder as files
from tlcli.tuning.space import SearchSpace, pins
from tlcli.tuning.study import StudyProgress, count, create_or_join, make_pruner, open_storage, redact, run_trials

__all__ = ["TuneResult", "resume_tune", "tune"]


@dataclass
class TuneResult:
    """What `tune` returns (and `tlcli tune --json` prints; tune.json holds the same)."""

    tune_dir: Path
    study: str
    storage: str  # without a password
    metric: str
    direction: str
    kind: str  # "head": trials train a head on cached features; "full": every trial trains as a run does
    why: str
    status: str  # running, completed, interrupted, failed
    trials: dict[str, int] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None  # trial 0, the config as written
    best_config: Path | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    extraction: dict[str, Any] | None = None
    folds: int = 1  # head trials' scoring: 1, the validation split; k, k-fold cross-validation over train + validation
    plots: dict[str, str] = field(default_factory=dict)
    started: str = ""
    pid: int | None = None
    train_best: TrainResult | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data |= {"tune_dir": str(self.tune_dir), "best_config": str(self.best_config) if self.best_config else None}
        if self.train_best is not None:
            result = self.train_best
            data["train_best"] = {
                "run_dir": str(result.run_dir),
                "final": result.metrics.final,
                "figures": result.metrics.figures,
                "refit": result.metrics.refit,
            }
        return data


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
    prepared: Any = None
    heads: Any = None  # HeadTrials, for kind "head"
    penalty: float | None = None
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
        RunError: not a tune folder, or another process works in it.
    """
    from tlcli.config.loading import load_config
    from tlcli.runs.folder import RunLock
    from tlcli.training.prepare import prepare

    _require_optuna()
    _quiet_optuna()
    reporter, progress = reporter or Reporter(), progress or StudyProgress()
    tune_dir = Path(tune_dir)
    record = files.read_record(tune_dir)
    with RunLock(tune_dir):
        config = load_config(files.read_config(tune_dir))
        prepared = prepare(config, runs_dir=tune_dir.parent, reporter=reporter)
        total = trials if trials is not None else int((record.get("trials") or {}).get("target") or config.tune.trials)
        url = storage or (
            files.default_storage_url(tune_dir) if record.get("storage_url_default") else record["storage"]
        )
        run = _begin(prepared, tune_dir, total, timeout, url, record["study"], reporter)
        run.tracking = tracking
        reporter.info(f"resuming study {record['study']} in {tune_dir}")
        return _search(run, reporter, progress, train_best)


def _begin(
    prepared,
    tune_dir: Path,
    trials: int | None,
    timeout: float | None,
    storage: str | None,
    name: str,
    reporter: Reporter,
) -> _Study:
    """Plan the trials, share the extraction, create or join the study; tune.json says `running`."""
    from tlcli.training.compile import epoch_metric_names

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
    kind, why = _kind(prepared, space)
    result = TuneResult(
        tune_dir,
        name,
        redact(url),
        metric,
        tune.goal(config.multi_label),
        kind,
        why,
        "running",
        started=now_iso(),
        pid=os.getpid(),
    )
    run = _Study(
        config,
        space,
        tune_dir,
        result,
        trials or tune.trials,
        timeout if timeout is not None else tune.timeout,
        url,
        prepared,
    )
    clock = time.perf_counter()
    if kind == "head":
        _share_extraction(run, reporter)
    else:
        reporter.warn(
            f"trials train the full model ({why}): each costs what a run costs"
            + (
                "; they are scored on the validation split (tune.folds is for head trials)"
                if tune.folds not in ("auto", 1)
                else ""
            )
        )
    result.timings_s["extract"] = round(time.perf_counter() - clock, 3)
    trial_zero = _trial_zero(run, reporter)
    storage_ = open_storage(url)
    joined = create_or_join(
        storage_,
        name,
        result.direction,
        space.fingerprint(),
        make_pruner(tune.pruner, tune.pruner_args),
        config.seed,
        trial_zero,
    )
    run.study = joined.study
    done = count(joined.study)
    reporter.info(
        f"study {name} ({'new' if joined.created else f'joined: {done} trials finished'}) in {result.storage}: {result.direction} {metric} over {run.total} trials; tune folder {tune_dir}"
    )
    files.write_config(tune_dir, config)
    _write_record(run)
    return run


def _kind(prepared, space: SearchSpace) -> tuple[str, str]:
    """`head` when every trial can train a head on the one extraction (and why), else `full` and why not."""
    from tlcli.training.phases import plan_run

    plans = plan_run(prepared.model, prepared.config, len(prepared.splits.train))
    first = plans[0]
    if len(plans) > 1:
        return "full", "the config fine-tunes the base"
    if first.cut is None or first.cut.kind != "pool":
        return "full", first.why
    key = space.head_only()
    if key is not None:
        return "full", f"{key} is searched, which changes more than the head"
    return "head", f"every trial trains a head on the frozen base's cached features ({first.why})"


def _share_extraction(run: _Study, reporter: Reporter) -> None:
    """The one extraction of the study (through the disk feature cache), and the penalty `train.l2: auto` stands for."""
    from tlcli.data.problems import unusable_reason
    from tlcli.errors import UnusableData
    from tlcli.features.cut import Cut
    from tlcli.runs.provenance import class_counts
    from tlcli.training.inputs import FeatureInputs
    from tlcli.training.passes import extract_splits
    from tlcli.tuning.objective import HeadTrials, resolve_folds

    prepared = run.prepared
    features, cache_use = extract_splits(prepared, Cut("pool"), reporter)
    skipped = sum(len(s.skipped) for s in features.values())
    if skipped:
        reporter.warn(f"skipped {skipped} unreadable file{'s' if skipped > 1 else ''} (`tlcli check` lists them)")
    reason = unusable_reason(class_counts(features["train"].labels, prepared.splits.class_names), len(features["val"]))
    if reason is not None:
        raise UnusableData(reason)
    run.result.extraction = cache_use.to_dict() | {"skipped": skipped}
    run.heads = HeadTrials(
        prepared, FeatureInputs(prepared.model, features, Cut("pool"), prepared.config, prepared.num_classes)
    )
    run.heads.folds, how = resolve_folds(
        prepared.config.tune.folds, len(features["train"]) + len(features["val"]), run.heads.flipped is not None
    )
    run.result.folds = run.heads.folds
    reporter.info(f"trials are scored {how}")
    if prepared.config.train.l2 == "auto":
        run.penalty = run.heads.penalty()
        shown = f"{run.penalty:.3g}" if run.penalty is not None else "none (0)"
        reporter.info(
            f"train.l2: auto is the penalty chosen once for the study on validation: {shown}; trials start from scratch with it, without a refit"
        )


def _trial_zero(run: _Study, reporter: Reporter) -> dict[str, Any]:
    pinned = run.space.config_for({}, pins(run.config, run.penalty))
    params = run.space.trial_zero(pinned)
    for param in run.space.params:
        value = params.get(param.key)
        if value is not None and not param.distribution()._contains(param.distribution().to_internal_repr(value)):
            reporter.warn(
                f"tune.space.{param.key}: the config's own value {value} is outside the range; trial 0 (the config as written) uses it anyway"
            )
    return params


def _objective(run: _Study):
    from tlcli.tuning.objective import full_trial

    def objective(trial) -> float:
        values = run.space.draw(trial)
        fixed = pins(run.space.config_for(values), run.penalty)
        trial.set_user_attr("pins", fixed)
        trial.set_user_attr("kind", run.result.kind)
        try:
            config = run.space.config_for(values, fixed)
            if run.result.kind == "head":
                outcome = run.heads.run(trial, config, run.result.metric)
            else:
                outcome = full_trial(trial, config, run.result.metric, run.tune_dir / ".trials")
        except TlcliError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        trial.set_user_attr("epochs", outcome.epochs)
        trial.set_user_attr("folds", run.result.folds)
        trial.set_user_attr("figures", outcome.figures)
        return outcome.value

    return objective


def _search(run: _Study, reporter: Reporter, progress: StudyProgress, train_best: bool) -> TuneResult:
    """Run the trials, then write trials.csv, best.yaml, the plots and tune.json; Ctrl-C keeps the study."""
    study, result = run.study, run.result
    progress.start(run.total, count(study), result.kind)
    clock = time.perf_counter()
    from tlcli.tracking import suspended

    try:
        with suspended():  # MLflow: the trials are the study's nested runs (`_finish`), not runs of their own
            loop = run_trials(
                study, _objective(run), total=run.total, timeout=run.timeout, progress=progress, warn=reporter.warn
            )
    except BaseException as exc:
        result.status = "failed"
        with contextlib.suppress(Exception):
            _finish(run, 0, reporter)
        raise exc
    result.timings_s["trials"] = round(time.perf_counter() - clock, 3)
    result.status = "interrupted" if loop.interrupted else "completed"
    _finish(run, loop.ran, reporter)
    if loop.interrupted:
        raise _interrupted(run)
    if train_best and result.best_config is not None:
        from tlcli.training.api import RunOptions, train

        reporter.info(f"training the best trial's config: {result.best_config}")
        result.train_best = train(
            result.best_config,
            runs_dir=run.prepared.runs_dir,
            reporter=reporter,
            options=RunOptions(tracking=run.tracking),
        )
        _write_record(run)
    return result


def _interrupted(run: _Study) -> Interrupted:
    import shlex

    error = Interrupted(
        f"interrupted; the study is kept ({run.result.trials.get('finished', 0)} trials finished). continue with: tlcli tune --resume {shlex.quote(str(run.tune_dir))}"
    )
    error.run_dir = run.tune_dir
    return error


def _finish(run: _Study, ran: int, reporter: Reporter) -> None:
    """What the study holds now (every process's trials), into the tune folder's files."""
    from optuna.trial import TrialState

    study, result = run.study, run.result
    trials = study.get_trials(deepcopy=False)
    states = {
        name.lower(): sum(t.state == getattr(TrialState, name) for t in trials)
        for name in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
    }
    result.trials = {
        "target": run.total,
        "finished": states["complete"] + states["pruned"] + states["fail"],
        **states,
        "this_process": ran,
    }
    result.baseline = next((_summary(t) for t in trials if t.number == 0), None)
    files.write_trials(run.tune_dir, study, run.space.keys)
    best = next(
        iter(
            sorted(
                (t for t in trials if t.state == TrialState.COMPLETE),
                key=lambda t: t.value,
                reverse=result.direction == "maximize",
            )
        ),
        None,
    )
    if best is not None:
        result.best = _summary(best)
        values = run.space.from_params(best.params)
        name = f"{run.config.name[:59]}-best"
        # The trial's recipe, then (a head on cached features) retrained on train + validation for the epochs it chose:
        # a trial is scored on validation so it cannot learn from it, the config it wins does.
        refit = run.result.kind == "head" and run.config.train.refit is not False
        # Cross-validated, the trial's epochs are its folds' median: best.yaml trains that many (validation on one split would choose again, noisily).
        epochs = (
            {"train.epochs": int(best.user_attrs["epochs"]), "train.restore_best": False}
            if best.user_attrs.get("folds", 1) > 1 and best.user_attrs.get("epochs")
            else {}
        )
        config = run.space.config_for(
            values,
            {
                **best.user_attrs.get("pins", {}),
                **epochs,
                "train.refit": refit,
                "probe": run.config.probe,
                "name": name,
            },
        )
        result.best_config = files.write_best(run.tune_dir, config)
    result.plots = files.write_plots(run.tune_dir, study)
    result.timings_s["total"] = round(sum(result.timings_s.get(k, 0.0) for k in ("extract", "trials")), 3)
    result.pid = None
    _write_record(run)
    from tlcli.tracking.studies import track_study

    track_study(
        run.config, run.tune_dir, study, result.to_dict(), reporter, run.tracking
    )  # when tracking is on: a parent run, a nested run per trial


def _summary(trial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value,
        "params": dict(trial.params),
        "figures": trial.user_attrs.get("figures", {}),
        "epochs": trial.user_attrs.get("epochs"),
        "seconds": round(trial.duration.total_seconds(), 3) if trial.duration is not None else None,
    }


def _write_record(run: _Study) -> None:
    files.write_record(
        run.tune_dir,
        run.result.to_dict()
        | {"format": "tlcli-tune", "storage_url_default": run.storage_url == files.default_storage_url(run.tune_dir)},
    )
