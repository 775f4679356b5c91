"""The fit loop: each planned phase fitted in turn, checkpointed every epoch, resumable from any epoch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcli.config.schema import ExperimentConfig
from tlcli.data.batches import ArrayBatches
from tlcli.modeling.freezing import set_base_trainable
from tlcli.progress import Reporter
from tlcli.runs import checkpoints
from tlcli.runs.checkpoints import Checkpoint, CheckpointState, EarlyStopState
from tlcli.training.callbacks import (
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
from tlcli.training.compile import make_loss, make_metrics, make_optimizer
from tlcli.training.distributed import fit_distributed, is_distributed
from tlcli.training.fit_in_memory import fit_in_memory
from tlcli.training.inputs import PhaseInputs
from tlcli.training.phases import PhasePlan

# On features a step is tiny, so Keras's per-step dispatch dominates: run several per call
# (measured: the cats-vs-dogs benchmark's 10 head epochs on features, 4.4 s -> see benchmarks/RESULTS.md).
FEATURE_STEPS_PER_EXECUTION = 16


@dataclass
class ResumePoint:
    """Where a phase continues from a checkpoint (already loaded into the model); the default is a fresh start."""

    done: int = 0  # epochs of the phase already done
    best: dict[str, Any] = field(default_factory=dict)  # the phase's best epoch so far
    best_weights: list | None = None  # its weights, for restore_best
    early_stopping: EarlyStopState | None = None
    best_file: Path | None = None  # best.weights.npz of the checkpoint, hard-linked by the next one


@dataclass
class Fitting:
    """What every phase of one run shares: the run folder, the full model, the history, the run's best epoch so far."""

    run_dir: Path
    model: Any
    config: ExperimentConfig
    inputs: PhaseInputs
    reporter: Reporter
    history: HistoryRecorder
    class_weight: dict[int, float] | None
    steps: int  # training steps per epoch
    pretrained: bool
    best: dict[str, Any] = field(default_factory=dict)
    offset: int = 0  # epochs done in the run before the current phase
    session_epochs: int = 0  # epochs run by this process (for images per second)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # per phase: its start, its best, which was kept
    alpha: list[float] | None = None  # multi-label class weights: each class's positives' weight in the loss
    strategy: Any = None  # the tf.distribute strategy; several replicas train with `fit_distributed`
    tracking: Any = None  # `tlcli.tracking.runs.RunTracking`: each epoch goes to MLflow once its checkpoint is on disk

    @property
    def monitor(self) -> str:
        return self.config.best_monitor


def fit_phases(fitting: Fitting, plans: list[PhasePlan], restored: Checkpoint | None) -> None:
    """Fit each phase in turn, from the checkpoint `restored` when resuming."""
    start_index = restored.state.phase_index if restored is not None else 0
    for plan in plans[start_index:]:
        at = restored if restored is not None and plan.index == start_index else None
        if at is not None and _phase_is_over(at, plan):
            _end_as_uninterrupted(fitting, at, plan)
            continue
        ran, phase_best = _exact_phase(fitting, plan) if plan.exact else _fit_phase(fitting, plan, at)
        if is_better(phase_best, fitting.best, fitting.monitor):
            fitting.best = phase_best
        fitting.session_epochs += ran - (at.state.phase_epoch if at else 0)
        fitting.offset += ran


def _phase_is_over(at: Checkpoint, plan: PhasePlan) -> bool:
    """The checkpoint is this phase's last epoch (all of them, or early-stopped and not extended)."""
    extended = plan.phase.epochs > at.state.phase_epochs
    return at.state.phase_epoch >= plan.phase.epochs or (at.state.stopped_early and not extended)


def _end_as_uninterrupted(fitting: Fitting, at: Checkpoint, plan: PhasePlan) -> None:
    if fitting.config.train.restore_best and at.best_weights_file is not None:
        checkpoints.load_weights(fitting.model, at.best_weights_file)
    if is_better(at.state.phase_best, fitting.best, fitting.monitor):
        fitting.best = at.state.phase_best
    _keep_the_better(fitting, plan, at.state.phase_start, at.state.phase_best)
    fitting.offset += at.state.phase_epoch


def _fit_phase(fitting: Fitting, plan: PhasePlan, at: Checkpoint | None) -> tuple[int, dict[str, Any]]:
    """Compile and fit one phase; returns the epochs it has run (in the phase) and its best epoch."""
    config, phase, reporter = fitting.config, plan.phase, fitting.reporter
    done = at.state.phase_epoch if at else 0
    trainable = set_base_trainable(
        fitting.model, phase.trainable, pretrained=fitting.pretrained, key=phase.trainable_key
    )
    reporter.info(
        f"phase {phase.name}: {phase.epochs} epochs, {trainable} trainable base layers, learning rate {phase.learning_rate:g}"
        + (f", resuming at epoch {done + 1}" if done else "")
    )
    distributed = is_distributed(fitting.strategy)
    fitted, train_data, val_data = fitting.inputs.for_phase(plan, first_epoch=done, arrays=distributed)
    per_call = FEATURE_STEPS_PER_EXECUTION if plan.cut is not None else 1
    fitted.compile(
        optimizer=make_optimizer(phase, fitting.steps),
        loss=make_loss(config, fitting.alpha),
        metrics=make_metrics(config, fitting.inputs.num_classes),
        steps_per_execution=per_call,
    )
    point = _resume_point(fitting, at, fitted, plan) if at is not None else ResumePoint()
    start = at.state.phase_start if at is not None else _start_of(fitting, plan)
    validation = (
        fitting.inputs.validation(
            plan, make_loss(config, fitting.alpha), make_metrics(config, fitting.inputs.num_classes)
        )
        if val_data is None
        else None
    )
    keeper = BestWeights(
        fitting.monitor, phase.name, fitting.offset, best=point.best, weights=point.best_weights, epochs_run=point.done
    )
    interrupt = StopOnSigint(reporter)
    callbacks = _callbacks(fitting, plan, keeper, interrupt, validation, point, start)
    reporter.phase_start(phase.name, phase.epochs, fitting.steps)
    try:
        with interrupt.installed():
            epochs, initial = fitting.offset + phase.epochs, fitting.offset + point.done
            if distributed:  # several replicas (Keras's fit fails across workers: `tlcli.training.distributed`)
                fit_distributed(
                    fitted,
                    train_data,
                    fitting.strategy,
                    epochs=epochs,
                    initial_epoch=initial,
                    class_weight=fitting.class_weight,
                    callbacks=callbacks,
                )
            elif isinstance(train_data, ArrayBatches):  # the in-memory fast path
                fit_in_memory(
                    fitted,
                    train_data,
                    epochs=epochs,
                    initial_epoch=initial,
                    class_weight=fitting.class_weight,
                    callbacks=callbacks,
                )
            else:  # the dataset shuffles itself
                fitted.fit(
                    train_data,
                    validation_data=val_data,
                    epochs=epochs,
                    initial_epoch=initial,
                    class_weight=fitting.class_weight,
                    callbacks=callbacks,
                    verbose=0,
                    shuffle=False,
                )
    finally:
        reporter.phase_end(phase.name)
    if config.train.restore_best and keeper.weights is not None:
        fitted.set_weights(keeper.weights)
    _keep_the_better(fitting, plan, start, keeper.best)
    return keeper.epochs_run, keeper.best


def _exact_phase(fitting: Fitting, plan: PhasePlan) -> tuple[int, dict[str, Any]]:
    """The head the selection fitted exactly (`tlcli.training.selection`), recorded as the phase's one epoch: a history row and a checkpoint."""
    config, inputs = fitting.config, fitting.inputs
    loss, metrics = make_loss(config, fitting.alpha), make_metrics(config, inputs.num_classes)
    figures = {
        key.removeprefix("train_"): value
        for key, value in inputs.figures("train", inputs.outputs(plan.cut, "train"), loss, metrics).items()
    }
    figures |= inputs.figures("val", inputs.outputs(plan.val_cut, "val"), loss, metrics)
    best = {"epoch": fitting.offset + 1, "phase": plan.phase.name, **figures}
    fitting.history.append(
        {
            "epoch": best["epoch"],
            "phase": plan.phase.name,
            "phase_epoch": 1,
            **figures,
            "learning_rate": 0.0,
            "seconds": 0.0,
            "fit": "exact",
        }
    )
    state = CheckpointState(
        epoch=best["epoch"],
        phase=plan.phase.name,
        phase_index=plan.index,
        phase_epoch=1,
        phase_epochs=1,
        phase_best=best,
        run_best=fitting.best,
        history=fitting.history.rows,
    )
    checkpoints.write_checkpoint(fitting.run_dir, fitting.model, fitting.model, state, "current")
    if fitting.tracking is not None:
        fitting.tracking.log_epoch(fitting.history.rows[-1])
    fitting.outcomes[plan.phase.name] = {"start": {}, "best": best, "kept": "best"}
    fitting.reporter.epoch_end(plan.phase.name, 1, 1, figures)
    return 1, best


def rolls_back(plan: PhasePlan) -> bool:
    """Phases that start from trained weights (fine-tuning; a head started from its exact fit) keep them if they end worse."""
    return plan.index > 0 or plan.select_head


def _start_of(fitting: Fitting, plan: PhasePlan) -> dict[str, Any]:
    """The validation figures of the weights the phase starts from (saved with them, for the rollback), or {}."""
    if not rolls_back(plan):
        return {}
    config = fitting.config
    outputs = fitting.inputs.outputs(plan.val_cut if plan.val_cut is not None else plan.cut, "val")
    figures = fitting.inputs.figures(
        "val", outputs, make_loss(config, fitting.alpha), make_metrics(config, fitting.inputs.num_classes)
    )
    checkpoints.save_phase_start(fitting.run_dir, plan.index, fitting.model)
    return {"epoch": fitting.offset, "phase": plan.phase.name, **figures}


def _keep_the_better(fitting: Fitting, plan: PhasePlan, start: dict[str, Any], best: dict[str, Any]) -> None:
    """End the phase with its starting weights when none of its epochs beat them on validation (and say so)."""
    worse = bool(start) and not is_better(best, start, fitting.monitor)
    fitting.outcomes[plan.phase.name] = {"start": start, "best": best, "kept": "start" if worse else "best"}
    if not worse:
        return
    checkpoints.load_weights(fitting.model, checkpoints.phase_start_file(fitting.run_dir, plan.index))
    shown = fitting.monitor
    fitting.reporter.warn(
        f"phase {plan.phase.name} ended no better on validation than it started ({shown} {best.get(shown, float('nan')):.4f} at best, {start[shown]:.4f} at its start): kept the weights it started from"
    )


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

    phase = plan.phase
    callbacks = [
        interrupt,
        fitting.history.for_phase(phase.name, fitting.offset),
        keeper,
        KerasProgress(fitting.reporter, phase.name, fitting.offset, phase.epochs, fitting.steps),
        keras.callbacks.TensorBoard(log_dir=str(fitting.run_dir / "tensorboard"), write_graph=False),
    ]
    if validation is not None:
        callbacks.insert(0, validation)  # first: the others read the val_* figures it writes into the epoch logs
    early = None
    if phase.early_stopping.patience:
        stop = phase.early_stopping
        early = ResumableEarlyStopping(
            monitor=stop.monitor,
            patience=stop.patience,
            min_delta=stop.min_delta,
            mode=monitor_mode(stop.monitor),
            resume_state=point.early_stopping,
        )
        callbacks.append(early)
    first = next(
        (float(row["loss"]) for row in fitting.history.rows if row.get("phase") == phase.name and "loss" in row), None
    )
    callbacks.append(StopOnDivergence(phase.name, first))  # before the checkpoint: a diverged epoch is not kept
    # Last: it records what the callbacks above decided this epoch (history row, best, early stop).
    callbacks.append(
        EpochCheckpoint(
            fitting.run_dir,
            fitting.model,
            plan,
            fitting.offset,
            fitting.history,
            keeper,
            early,
            fitting.best,
            point.best_file,
            start,
        )
    )
    if fitting.tracking is not None:  # after the checkpoint: MLflow never has an epoch the run folder could lose
        callbacks.append(TrackEpochs(fitting.tracking, fitting.history))
    return callbacks


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
    if stop_state is not None and state.stopped_early and extended:
        stop_state = EarlyStopState(
            0, stop_state.best
        )  # an early-stopped phase given more epochs restarts its patience
    return ResumePoint(state.phase_epoch, state.phase_best, keeper_weights, stop_state, at.best_weights_file)
