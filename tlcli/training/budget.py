"""`fine_tune.budget_min`: a phase's epochs sized to a time budget before it starts.

An epoch is estimated from what it runs: its training steps (one forward and backward pass of what the phase trains,
timed on a batch of the phase's input shape, the median of three after one untimed call that traces it) and its
validation (timed once, twice over with a moving average to validate). The warmup + cosine schedule is then built
for that many epochs, so the phase ends at the end of its schedule rather than being cut off in the middle of it.
Not counted: the optimizer's update, input pipelines that decode or augment images, the per-epoch checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from tlcli.training.distributed import chief_count, is_distributed

if TYPE_CHECKING:
    from tlcli.runs.checkpoints import CheckpointState
    from tlcli.training.loop import Fitting
    from tlcli.training.phases import PhasePlan

TIMED_STEPS = 3


@dataclass(frozen=True)
class EpochBudget:
    """The epochs that fit `minutes`, and the timings that sized them; recorded in metrics.json's phase."""

    minutes: float
    steps: int  # training steps an epoch
    step_s: float  # one training step
    validation_s: float  # the epoch's validation
    epochs: int

    @property
    def epoch_s(self) -> float:
        return self.steps * self.step_s + self.validation_s

    @property
    def why(self) -> str:
        return (
            f"epochs auto: {self.epochs} to fit budget_min {self.minutes:g} (an epoch estimated at "
            f"{self.epoch_s:.1f} s: {self.steps} steps of {1000 * self.step_s:.0f} ms, validation "
            f"{self.validation_s:.1f} s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "minutes": self.minutes,
            "epochs": self.epochs,
            "epoch_s": round(self.epoch_s, 3),
            "steps": self.steps,
            "step_s": round(self.step_s, 5),
            "validation_s": round(self.validation_s, 3),
        }

    def state(self) -> dict[str, Any]:
        """Its fields unrounded, for a checkpoint (`from_state` gives it back exactly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> EpochBudget:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def within_budget(fitting: Fitting, plan: PhasePlan, fitted) -> PhasePlan:
    """The phase with its epochs sized to `budget_min` from timings of what it runs (`tlcli.training.budget`); every
    worker runs the chief's count. Unchanged without a budget."""
    phase = plan.phase
    if phase.budget_min is None:
        return plan
    inputs, cut = fitting.inputs, plan.validation_cut
    budget = size_to_budget(
        fitted,
        fitting.config.data.step_batch,
        fitting.steps,
        lambda: inputs.outputs(cut, "val"),
        phase.budget_min,
        phase.epochs,
        validations=2 if phase.averages else 1,
        strategy=fitting.strategy if is_distributed(fitting.strategy) else None,
    )
    budget = dataclasses.replace(budget, epochs=chief_count(fitting.strategy, budget.epochs))
    fitting.reporter.info(f"phase {phase.name}: {budget.why}")
    return _sized(plan, budget)


def as_sized(plan: PhasePlan, state: CheckpointState) -> PhasePlan:
    """A resumed phase as it was sized when it started: the checkpoint's epoch count (not a new timing), and the
    timings that sized it, for metrics.json."""
    if plan.phase.budget_min is None:
        return plan
    if state.phase_budget is None:  # a checkpoint written before its budget was kept: the count alone
        return dataclasses.replace(plan, phase=dataclasses.replace(plan.phase, epochs=state.phase_epochs))
    return _sized(plan, dataclasses.replace(EpochBudget.from_state(state.phase_budget), epochs=state.phase_epochs))


def _sized(plan: PhasePlan, budget: EpochBudget) -> PhasePlan:
    """The plan running `budget.epochs`, carrying the budget to its checkpoints and its outcome."""
    return dataclasses.replace(plan, phase=dataclasses.replace(plan.phase, epochs=budget.epochs), budget=budget)


def epochs_within(minutes: float, epoch_s: float, most: int) -> int:
    """Whole epochs of `epoch_s` seconds that fit `minutes`: at least 1, at most `most`."""
    return max(1, min(most, math.floor(60.0 * minutes / max(epoch_s, 1e-9))))


def size_to_budget(
    fitted,
    batch_size: int,
    steps: int,
    validate: Callable[[], Any],
    minutes: float,
    most: int,
    validations: int = 1,
    strategy=None,
) -> EpochBudget:
    """The phase's `EpochBudget`: `fitted` (what the phase trains, on `strategy`'s replicas) timed on batches of
    `batch_size`, `steps` an epoch, `validate` run and timed once (counted `validations` times an epoch), at most
    `most` epochs."""
    step_s = time_training_step(fitted, batch_size, strategy)
    start = time.perf_counter()
    validate()
    validation_s = validations * (time.perf_counter() - start)
    epoch_s = steps * step_s + validation_s
    return EpochBudget(minutes, steps, step_s, validation_s, epochs_within(minutes, epoch_s, most))


def time_training_step(fitted, batch_size: int, strategy=None) -> float:
    """Seconds of one forward and backward pass of `fitted` on a batch of zeros (the weights are not changed: the
    gradients are computed, not applied; inference mode, so no random state or batch statistics move). Under a
    `tf.distribute` strategy every replica takes its share of the batch at once, as in training."""
    import keras
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    x = tf.zeros((max(1, batch_size // replicas), *fitted.inputs[0].shape[1:]))
    variables = fitted.trainable_variables

    def gradients():
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.ops.square(fitted(x, training=False)))
        return [g for g in tape.gradient(loss, variables) if g is not None]

    step = tf.function(gradients if strategy is None else lambda: strategy.run(gradients))

    def timed() -> float:
        start = time.perf_counter()
        results = step()
        for value in tf.nest.flatten(results):  # wait for every replica's gradients
            for local in strategy.experimental_local_results(value) if strategy is not None else [value]:
                local.numpy()
        return time.perf_counter() - start

    timed()  # traced, untimed
    return statistics.median(timed() for _ in range(TIMED_STEPS))
