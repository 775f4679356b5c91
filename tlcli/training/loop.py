"""The fit loop: each planned phase fitted in turn, checkpointed every epoch, resumable from any epoch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcli.config.schema import ExperimentConfig
from tlcli.data.batches import ArrayBatches
from tlcli.modeling.freezing import depth_rate_factors, set_base_trainable
from tlcli.progress import Reporter
from tlcli.runs import checkpoints
from tlcli.runs.checkpoints import Checkpoint, CheckpointState, EarlyStopState
from tlcli.training.budget import as_sized, within_budget
from tlcli.training.callbacks import (
    AveragedValidation,
    BestWeights,
    EpochCheckpoint,
    HistoryRecorder,
    KerasProgress,
    ResumableEarlyStopping,
    StopOnDivergence,
    StopOnSigint,
    TrackEpochs,
    is_better,
    monitor_mode,
)
from tlcli.training.compile import Objective, make_optimizer
from tlcli.training.distributed import fit_distributed, is_distributed
from tlcli.training.fit_in_memory import fit_in_memory
from tlcli.training.inputs import PhaseInputs
from tlcli.training.phases import PhasePlan
from tlcli.training.records import PhaseOutcome

# On features a step is tiny, so Keras's per-step dispatch dominates: run several per call
# (measured: the cats-vs-dogs benchmark's 10 head epochs on features, 4.4 s -> see benchmarks/RESULTS.md).
FEATURE_STEPS_PER_EXECUTION = 16
ONE_IMAGE = 1.5  # a later phase must beat its start by more than this many validation images (see `_needed_gain`)
# The fewest validation errors of the head that make fine-tuning worth running under `when: auto`: a one-sided sign
# test at 5% calls a gain real only from 5 fixed images and none broken (0.5**5 = 0.031; 0.5**4 = 0.063). On cats with
# MobileNetV2 the head missed 4 of 396; fine-tuning "gained" 2 of them, lost 0.5 test points and took 3.6x the time.
SIGN_TEST_ERRORS = 5


@dataclass
class ResumePoint:
    """Where a phase continues from a checkpoint (already loaded into the model); the default is a fresh start."""

    done: int = 0  # epochs of the phase already done
    best: dict[str, Any] = field(default_factory=dict)  # the phase's best epoch so far
    best_weights: list | None = None  # its weights, for restore_best
    early_stopping: EarlyStopState | None = None
    best_file: Path | None = None  # best.weights.npz of the checkpoint, hard-linked by the next one


@dataclass
class RunProgress:
    """Where the run stands between phases, kept up to date by the fit loop: its best epoch so far, the epochs done
    before the current phase, the epochs this process ran (for images per second), and each phase's outcome."""

    best: dict[str, Any] = field(default_factory=dict)
    offset: int = 0
    session_epochs: int = 0
    outcomes: dict[str, PhaseOutcome] = field(default_factory=dict)

    @classmethod
    def after(cls, restored: Checkpoint | None) -> RunProgress:
        """The progress a run starts from: fresh, or the checkpoint's when resuming."""
        if restored is None:
            return cls()
        return cls(best=dict(restored.state.run_best), offset=restored.state.offset)

    def outcome(self, phase: str) -> PhaseOutcome:
        """How the phase ended (an empty outcome when it did not run)."""
        return self.outcomes.get(phase, PhaseOutcome())

    def phases_record(self) -> dict[str, dict[str, Any]]:
        """metrics.json's `phases`: per phase, its start, best epoch, and which was kept."""
        return {name: outcome.to_dict() for name, outcome in self.outcomes.items()}


@dataclass(frozen=True)
class Fitting:
    """What every phase of one run shares: the run folder, the inputs (with the full model), the objective, the
    history, and the run's progress (which only the fit loop changes)."""

    run_dir: Path
    inputs: PhaseInputs
    objective: Objective
    reporter: Reporter
    history: HistoryRecorder
    pretrained: bool  # the base starts from pretrained weights (`set_base_trainable` keeps BatchNorm frozen)
    strategy: Any = None  # the tf.distribute strategy; several replicas train with `fit_distributed`
    tracking: Any = None  # `tlcli.tracking.runs.RunTracking`: each epoch goes to MLflow once its checkpoint is on disk
    progress: RunProgress = field(default_factory=RunProgress)

    @property
    def model(self):
        return self.inputs.model

    @property
    def config(self) -> ExperimentConfig:
        return self.inputs.config

    @property
    def monitor(self) -> str:
        return self.objective.monitor

    @property
    def class_weight(self) -> dict[int, float] | None:
        return self.objective.class_weight

    @property
    def steps(self) -> int:
        """Training steps per epoch."""
        return self.inputs.steps_per_epoch()


def fit_phases(fitting: Fitting, plans: list[PhasePlan], restored: Checkpoint | None) -> RunProgress:
    """Fit each phase in turn, from the checkpoint `restored` when resuming; returns the run's progress."""
    progress = fitting.progress
    start_index = restored.state.phase_index if restored is not None else 0
    for plan in plans[start_index:]:
        at = restored if restored is not None and plan.index == start_index else None
        plan = as_sized(plan, at.state) if at is not None else plan
        if at is not None and _phase_is_over(at, plan):
            _end_as_uninterrupted(fitting, at, plan)
            continue
        if at is None and _nothing_to_gain(fitting, plan):
            continue
        ran, phase_best = _exact_phase(fitting, plan) if plan.head.exact else _fit_phase(fitting, plan, at)
        _update_run_best(fitting, plan, phase_best)
        progress.session_epochs += ran - (at.state.phase_epoch if at else 0)
        progress.offset += ran
    return progress


def _update_run_best(fitting: Fitting, plan: PhasePlan, phase_best: dict[str, Any]) -> None:
    """The run's best epoch: the kept epoch of a later phase (its monitor and loss may differ from the first phase's,
    so they are not compared); else the better of the two by `train.monitor`."""
    progress = fitting.progress
    if plan.index > 0:
        outcome = progress.outcome(plan.phase.name)
        if outcome.kept != "start" and outcome.ended:
            progress.best = outcome.ended
    elif is_better(phase_best, progress.best, fitting.monitor):
        progress.best = phase_best


def _nothing_to_gain(fitting: Fitting, plan: PhasePlan) -> bool:
    """`fine_tune.when: auto` and validation could not show a gain over the weights the phase would start from: record
    the phase as skipped, with why, and say so."""
    config = fitting.config
    if plan.phase.name != "fine_tune" or config.fine_tune.when != "auto":
        return False
    start, monitor = _start_of(fitting, plan), plan.phase.monitor
    why = skip_reason(start, monitor, len(fitting.inputs.splits.val))
    if not why:
        return False
    outcome = PhaseOutcome(start=start, best=start, kept="start", monitor=monitor, skipped=why)
    fitting.progress.outcomes[plan.phase.name] = outcome
    fitting.reporter.info(f"phase {plan.phase.name}: {outcome.verdict}")
    return True


def skip_reason(start: dict[str, Any], monitor: str, val_images: int) -> str:
    """Why `when: auto` skips a later phase, or "" to run it: the head is already perfect by `monitor`, or (accuracy)
    it misses fewer validation images than a one-sided sign test needs to call a gain real, even if fine-tuning fixed
    every one and broke none (SIGN_TEST_ERRORS). A loss never skips: it has no ceiling."""
    if "loss" in monitor or not start:
        return ""
    value, always = float(start.get(monitor, 0.0)), "(fine_tune.when: auto; `always` runs it)"
    if value >= 1.0 - 1e-9:
        return f"the head's {monitor} is already {value:.4f} {always}"
    errors = round((1.0 - value) * val_images)
    if monitor != "val_accuracy" or errors >= SIGN_TEST_ERRORS:
        return ""
    return (
        f"the head misses {errors} of {val_images} validation images: fixing all of them would not show a gain "
        f"(a sign test needs {SIGN_TEST_ERRORS}) {always}"
    )


def _phase_is_over(at: Checkpoint, plan: PhasePlan) -> bool:
    """The checkpoint is this phase's last epoch (all of them, or early-stopped and not extended)."""
    extended = plan.phase.epochs > at.state.phase_epochs
    return at.state.phase_epoch >= plan.phase.epochs or (at.state.stopped_early and not extended)


def _end_as_uninterrupted(fitting: Fitting, at: Checkpoint, plan: PhasePlan) -> None:
    progress = fitting.progress
    if fitting.config.train.restore_best and at.best_weights_file is not None:
        checkpoints.load_weights(fitting.model, at.best_weights_file)
    _keep_the_better(fitting, plan, at.state.phase_start, at.state.phase_best)
    _update_run_best(fitting, plan, at.state.phase_best)
    progress.offset += at.state.phase_epoch


def _fit_phase(fitting: Fitting, plan: PhasePlan, at: Checkpoint | None) -> tuple[int, dict[str, Any]]:
    """Compile and fit one phase; returns the epochs it has run (in the phase) and its best epoch."""
    reporter, offset = fitting.reporter, fitting.progress.offset
    done = at.state.phase_epoch if at else 0
    trainable = _unfreeze(fitting, plan)
    distributed = is_distributed(fitting.strategy)
    fitted, train_data, val_data = fitting.inputs.for_phase(plan, first_epoch=done, arrays=distributed)
    plan = within_budget(fitting, plan, fitted) if at is None else plan
    phase = plan.phase
    reporter.info(
        f"phase {phase.name}: {phase.epochs} epochs, {trainable} trainable base layers, "
        f"learning rate {phase.learning_rate:g}" + (f", resuming at epoch {done + 1}" if done else "")
    )
    per_call = FEATURE_STEPS_PER_EXECUTION if plan.cut is not None else 1
    objective = fitting.objective.for_phase(phase)
    accumulate = fitting.config.data.accumulation
    rates = depth_rate_factors(fitting.model, phase.optimizer.bottom_lr_ratio)
    optimizer = make_optimizer(phase, fitting.steps, fitted.trainable_variables, accumulate=accumulate, rates=rates)
    objective.compile(fitted, optimizer, steps_per_execution=per_call)
    point = _resume_point(fitting, at, fitted, plan) if at is not None else ResumePoint()
    start = at.state.phase_start if at is not None else _start_of(fitting, plan)
    validation = fitting.inputs.validation(plan, objective) if val_data is None else None
    keeper = _keeper(fitting, plan, point, objective)
    interrupt = StopOnSigint(reporter)
    callbacks = _callbacks(fitting, plan, keeper, interrupt, validation, point, start)
    reporter.phase_start(phase.name, phase.epochs, fitting.steps)
    try:
        with interrupt.installed():
            fit = dict(epochs=offset + phase.epochs, initial_epoch=offset + point.done, callbacks=callbacks)
            _fit(fitting, fitted, train_data, val_data, **fit)
    finally:
        reporter.phase_end(phase.name)
    if fitting.config.train.restore_best and keeper.weights is not None:
        fitted.set_weights(keeper.weights)
    _keep_the_better(fitting, plan, start, keeper.best)
    return keeper.epochs_run, keeper.best


def _keeper(fitting: Fitting, plan: PhasePlan, point: ResumePoint, objective) -> BestWeights:
    """The callback that keeps the phase's best weights: with `ema_epochs`, the better of each epoch's weights and
    their moving average, which it validates as `_start_of` validates the phase's start."""
    phase, inputs = plan.phase, fitting.inputs
    averaged = None
    if phase.averages:
        cut = plan.validation_cut
        loss, metrics = objective.loss(), objective.metrics()
        averaged = AveragedValidation(lambda: inputs.figures("val", inputs.outputs(cut, "val"), loss, metrics))
    return BestWeights(
        phase.monitor,
        phase.name,
        fitting.progress.offset,
        best=point.best,
        weights=point.best_weights,
        epochs_run=point.done,
        tie_break=phase.tie_break,
        averaged=averaged,
    )


def _unfreeze(fitting: Fitting, plan: PhasePlan) -> int:
    """Make the phase's layers of the base trainable; returns how many are."""
    phase = plan.phase
    return set_base_trainable(fitting.model, phase.trainable, pretrained=fitting.pretrained, key=phase.trainable_key)


def _fit(fitting: Fitting, fitted, train_data, val_data, **fit) -> None:
    """One of the three ways a phase fits: `epochs`, `initial_epoch` and `callbacks` in `fit`."""
    class_weight = fitting.class_weight
    if is_distributed(fitting.strategy):  # several replicas (Keras's fit fails across workers: `distributed`)
        fit_distributed(fitted, train_data, fitting.strategy, class_weight=class_weight, **fit)
    elif isinstance(train_data, ArrayBatches):  # the in-memory fast path
        fit_in_memory(fitted, train_data, class_weight=class_weight, **fit)
    else:  # the dataset shuffles itself
        fitted.fit(train_data, validation_data=val_data, class_weight=class_weight, verbose=0, shuffle=False, **fit)


def _exact_phase(fitting: Fitting, plan: PhasePlan) -> tuple[int, dict[str, Any]]:
    """The head the selection fitted exactly (`tlcli.training.selection`), recorded as the phase's one epoch: a
    history row and a checkpoint."""
    progress, name = fitting.progress, plan.phase.name
    figures = _exact_figures(fitting, plan)
    best = {"epoch": progress.offset + 1, "phase": name, **figures}
    row = {"epoch": best["epoch"], "phase": name, "phase_epoch": 1, **figures}
    fitting.history.append(row | {"learning_rate": 0.0, "seconds": 0.0, "fit": "exact"})
    state = CheckpointState(
        epoch=best["epoch"],
        phase=name,
        phase_index=plan.index,
        phase_epoch=1,
        phase_epochs=1,
        phase_best=best,
        run_best=progress.best,
        history=fitting.history.rows,
    )
    checkpoints.write_checkpoint(fitting.run_dir, fitting.model, fitting.model, state, "current")
    if fitting.tracking is not None:
        fitting.tracking.log_epoch(fitting.history.rows[-1])
    progress.outcomes[name] = PhaseOutcome(start={}, best=best, kept="best")
    fitting.reporter.epoch_end(name, 1, 1, figures)
    return 1, best


def _exact_figures(fitting: Fitting, plan: PhasePlan) -> dict[str, float]:
    """The exact fit's figures, as an epoch's logs hold them: training's unprefixed, then validation's."""
    inputs = fitting.inputs
    loss, metrics = fitting.objective.loss(), fitting.objective.metrics()
    train = inputs.figures("train", inputs.outputs(plan.cut, "train"), loss, metrics)
    figures = {key.removeprefix("train_"): value for key, value in train.items()}
    return figures | inputs.figures("val", inputs.outputs(plan.val_cut, "val"), loss, metrics)


def rolls_back(plan: PhasePlan) -> bool:
    """Phases that start from trained weights (fine-tuning; a head started from its exact fit) keep them if they end
    worse."""
    return plan.index > 0 or plan.head.selects


def _start_of(fitting: Fitting, plan: PhasePlan) -> dict[str, Any]:
    """The validation figures of the weights the phase starts from (saved with them, for the rollback), or {}."""
    if not rolls_back(plan):
        return {}
    objective = fitting.objective.for_phase(plan.phase)
    outputs = fitting.inputs.outputs(plan.validation_cut, "val")
    figures = fitting.inputs.figures("val", outputs, objective.loss(), objective.metrics())
    checkpoints.save_phase_start(fitting.run_dir, plan.index, fitting.model)
    return {"epoch": fitting.progress.offset, "phase": plan.phase.name, **figures}


def _keep_the_better(fitting: Fitting, plan: PhasePlan, start: dict[str, Any], best: dict[str, Any]) -> None:
    """End the phase with its starting weights when the epoch it ends with (its best; its last without
    `train.restore_best`) does not beat them on validation (and say which was kept, by how much)."""
    phase = plan.phase
    needed = _needed_gain(fitting, plan)
    last = {} if fitting.config.train.restore_best else fitting.history.last_epoch(phase.name)
    worse = bool(start) and not _beats_its_start(phase, last or best, start, needed)
    kept = "start" if worse else ("last" if last else "best")
    outcome = PhaseOutcome(start, best, kept, phase.monitor, needed=needed, budget=plan.budget, last=last)
    fitting.progress.outcomes[phase.name] = outcome
    if not worse and not plan.head_alone:  # it may have trained the base: the features computed so far moved
        fitting.inputs.base_changed()
    if not start:
        return
    if worse:
        checkpoints.load_weights(fitting.model, checkpoints.phase_start_file(fitting.run_dir, plan.index))
        fitting.reporter.warn(f"phase {phase.name}: {outcome.verdict}")
    else:
        fitting.reporter.info(f"phase {phase.name}: {outcome.verdict}")


def _needed_gain(fitting: Fitting, plan: PhasePlan) -> float:
    """How much a later phase must gain on an accuracy to be kept: more than one validation image (one image is noise
    on a small split: on hymenoptera's 47 validation images, two fine-tuning recipes gained one image there and lost
    4 and 5 test points; benchmarks/FINETUNE.md); 0 for a loss, or a first phase."""
    if plan.index == 0 or "loss" in plan.phase.monitor:
        return 0.0
    return ONE_IMAGE / max(1, len(fitting.inputs.splits.val))


def _beats_its_start(phase, best: dict[str, Any], start: dict[str, Any], needed: float) -> bool:
    if not needed:
        return is_better(best, start, phase.monitor, phase.tie_break)
    return bool(best) and float(best.get(phase.monitor, 0.0)) - float(start.get(phase.monitor, 0.0)) > needed


def _callbacks(
    fitting: Fitting,
    plan: PhasePlan,
    keeper: BestWeights,
    interrupt: StopOnSigint,
    validation,
    point: ResumePoint,
    start: dict[str, Any],
) -> list:
    import keras

    phase, offset, history = plan.phase, fitting.progress.offset, fitting.history
    callbacks = [
        interrupt,
        history.for_phase(phase.name, offset),
        keeper,
        KerasProgress(fitting.reporter, phase.name, offset, phase.epochs, fitting.steps),
        keras.callbacks.TensorBoard(log_dir=str(fitting.run_dir / "tensorboard"), write_graph=False),
    ]
    if keeper.averaged is not None:  # next: it reads the val_* figures and writes ema_val_* for the keeper
        callbacks.insert(0, keeper.averaged)
    if validation is not None:
        callbacks.insert(0, validation)  # first: the others read the val_* figures it writes into the epoch logs
    early = _early_stopping(phase, point)
    callbacks += [early] if early is not None else []
    callbacks.append(StopOnDivergence(phase.name, _first_loss(history, phase.name)))  # before the checkpoint...
    # ...(a diverged epoch is not kept), which comes last: it records what the callbacks above decided this epoch.
    callbacks.append(_checkpoint(fitting, plan, keeper, early, point, start))
    if fitting.tracking is not None:  # after the checkpoint: MLflow never has an epoch the run folder could lose
        callbacks.append(TrackEpochs(fitting.tracking, history))
    return callbacks


def _checkpoint(fitting: Fitting, plan: PhasePlan, keeper, early, point: ResumePoint, start) -> EpochCheckpoint:
    """The callback that checkpoints every epoch of the phase, with the state of its `keeper` and `early` stopping."""
    return EpochCheckpoint(
        fitting.run_dir,
        fitting.model,
        plan,
        offset=fitting.progress.offset,
        history=fitting.history,
        keeper=keeper,
        early_stopping=early,
        run_best=fitting.progress.best,
        best_file=point.best_file,
        start=start,
    )


def _early_stopping(phase, point: ResumePoint) -> ResumableEarlyStopping | None:
    """The phase's early stopping (None without patience), continuing from the checkpoint's state when resuming."""
    if not phase.early_stopping.patience:
        return None
    stop = phase.early_stopping
    return ResumableEarlyStopping(
        monitor=stop.monitor,
        patience=stop.patience,
        min_delta=stop.min_delta,
        mode=monitor_mode(stop.monitor),
        resume_state=point.early_stopping,
    )


def _first_loss(history: HistoryRecorder, phase: str) -> float | None:
    """The training loss of the phase's first epoch, when the history has it (a resumed phase)."""
    return next((float(row["loss"]) for row in history.rows if row.get("phase") == phase and "loss" in row), None)


def _resume_point(fitting: Fitting, at: Checkpoint, fitted, plan: PhasePlan) -> ResumePoint:
    """What the phase needs to continue from checkpoint `at` (already loaded into the model)."""
    model, state = fitting.model, at.state
    keeper_weights = None
    if fitting.config.train.restore_best and at.best_weights_file is not None and state.phase_best:
        checkpoints.load_weights(model, at.best_weights_file)
        keeper_weights = fitted.get_weights()
        checkpoints.load_weights(model, at.path / "model.weights.npz")
    checkpoints.restore_optimizer(fitted, at.optimizer)
    stop_state = state.early_stopping
    extended = plan.phase.epochs > state.phase_epochs
    if stop_state is not None and state.stopped_early and extended:  # given more epochs: patience starts again
        stop_state = EarlyStopState(0, stop_state.best)
    return ResumePoint(state.phase_epoch, state.phase_best, keeper_weights, stop_state, at.best_weights_file)
