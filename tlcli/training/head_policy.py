"""The head policy carried out: the linear probe, the penalty chosen on validation, the refit on train + validation.

`tlcli.training.phases` decides the policy once, with the plan (`HeadPolicy`: whether the first phase selects the
head's penalty, whether the head is refitted, and why not); this module applies it around the fit loop:

- `before_fitting`: the probe's exact fits (metrics.json's linear-probe reference) and, when the policy selects,
  the chosen penalty and starting weights; a selection that fails at run time (a class absent from the training
  split) falls back to the config's recipe, with the reason; the head as built is kept for a recipe refit.
- `after_fitting`: the refit the policy asks for (at the chosen penalty, or the pinned recipe retrained for the
  epochs validation chose), and the validation probabilities held out before it (multi-label thresholds).
- `figures_meaning`: which splits' figures chose something and which are untouched estimates.

Decisions about the head that later work adds (fine-tuning) belong in `HeadPolicy` and are applied here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlcli.data.batches import ArrayBatches, steps_per_epoch
from tlcli.features.cut import trainable_part
from tlcli.progress import Reporter
from tlcli.runs.atomic import write_json_atomic
from tlcli.training.compile import Objective, make_optimizer
from tlcli.training.distributed import broadcast_weights, fit_arrays
from tlcli.training.inputs import FeatureInputs, PhaseInputs
from tlcli.training.loop import Fitting
from tlcli.training.phases import HeadPolicy, PhasePlan, evaluation_cut, unselect
from tlcli.training.records import Timings
from tlcli.training.selection import POOL, HeadSelection, choose_head, probe_splits, refit_head


@dataclass(frozen=True)
class HeadWork:
    """The head policy as this run carries it out: the plans (the first phase's policy as it stands after the
    probe), the probe's selection and metrics.json record, and the head as built (kept for a recipe refit)."""

    plans: list[PhasePlan]
    selection: HeadSelection | None
    probe: dict[str, Any]
    initial: list | None = None  # the head's weights before any training (a recipe refit starts from them)

    @property
    def policy(self) -> HeadPolicy:
        return self.plans[0].head

    @property
    def selected(self) -> bool:
        """The head's penalty was chosen on validation and the head started from that fit."""
        return self.selection is not None and self.selection.selected


@dataclass(frozen=True)
class Refit:
    """What `after_fitting` did: metrics.json's `refit` record (a recipe refit, else None) and the validation
    probabilities of the model before the refit (multi-label runs that refit: their thresholds come from these)."""

    record: dict[str, Any] | None = None
    held_out: np.ndarray | None = None


def before_fitting(
    inputs: PhaseInputs,
    plans: list[PhasePlan],
    objective: Objective,
    run_dir: Path,
    reporter: Reporter,
    timings: Timings,
) -> HeadWork:
    """The probe and the selection the first phase's policy asks for, with the fallback when selection fails."""
    selection, probe = _choose(inputs, plans[0], objective, run_dir, reporter, timings)
    plans = list(plans)
    if plans[0].head.selects and not (selection is not None and selection.selected):
        plans[0] = unselect(
            inputs.config, plans[0], selection.why if selection is not None else "no features for the head"
        )
        reporter.info(plans[0].describe() + f" (the head's penalty was not chosen: {plans[0].head.why_not_selected})")
    policy = plans[0].head
    if policy.why_not_refitted:
        reporter.warn(f"train.refit: true is not done: {policy.why_not_refitted}; validation figures stay held out")
    initial = trainable_part(inputs.model, POOL).get_weights() if policy.recipe_refit else None  # before a resume
    return HeadWork(plans, selection, probe, initial)


def _choose(
    inputs: PhaseInputs, plan: PhasePlan, objective: Objective, run_dir: Path, reporter: Reporter, timings: Timings
) -> tuple[HeadSelection | None, dict[str, Any]]:
    """The linear probe (and, when the policy selects the head, its penalty and starting weights); selection.json
    records them. Returns the selection (or None) and the probe record of metrics.json."""
    selects = plan.head.selects
    if not isinstance(inputs, FeatureInputs) and not selects:  # selecting needs only the head's features
        return None, {"skipped": f"no cached features ({plan.why})"}
    if inputs.config.probe == "off" and not selects:
        return None, {"skipped": "probe: off"}
    with timings.measure("select"):
        selection = choose_head(inputs, plan.head, objective)
    chosen = selection.chosen
    probe = {
        "C": chosen.C,
        "val_accuracy": chosen.val_accuracy,
        "val_loss": chosen.val_loss,
        "test_accuracy": selection.test_accuracy,
        "seconds": round(selection.seconds, 3),
    }
    if chosen.val_map is not None:
        probe["val_map"] = chosen.val_map
    shown = f"mAP {chosen.val_map:.4f}" if chosen.val_map is not None else f"accuracy {chosen.val_accuracy:.4f}"
    reporter.info(
        f"linear probe: validation {shown} at C={chosen.C:g}" + (f"; {selection.why}" if selection.why else "")
    )
    if selection.selected:
        write_json_atomic(run_dir / "selection.json", selection.to_dict())
    return selection, probe


def after_fitting(fitting: Fitting, head: HeadWork) -> Refit:
    """The refit the policy asks for, once the phases are fitted (all workers then take the chief's head)."""
    if not head.policy.refits:
        return Refit()
    held_out = None
    if fitting.config.multi_label:  # the thresholds are chosen on probabilities the model was not fitted on
        held_out = fitting.inputs.evaluate(evaluation_cut(head.plans), fitting.objective)[1]["val"]
    record = None
    if head.policy.recipe_refit:
        record = _refit_recipe(fitting, head)
    else:
        _refit_selected(fitting, head)
    broadcast_weights(fitting.strategy, fitting.model)
    return Refit(record, held_out)


def _refit_selected(fitting: Fitting, head: HeadWork) -> None:
    """The head fitted again on train + validation at the chosen penalty (after fine-tuning, on the fine-tuned
    base's features); without fine-tuning, then as many epochs as training added to its start."""
    inputs, plan, selection = fitting.inputs, head.plans[0], head.selection
    fine_tuned = len(head.plans) > 1
    refit_head(inputs, selection, fitting.objective)
    added = 0 if fine_tuned else fitting.progress.outcome(plan.phase.name).added_epochs
    if added > 0:
        _train_head_on_all(fitting, plan, added)
    selection.refit_epochs = added
    write_json_atomic(fitting.run_dir / "selection.json", selection.to_dict())
    images = len(inputs.splits.train) + len(inputs.splits.val)
    fitting.reporter.info(
        f"refitted the head on train + validation ({images} images) at C={selection.chosen.C:g}, "
        f"then {added} epochs: validation figures are now in-sample"
    )


def _refit_recipe(fitting: Fitting, head: HeadWork) -> dict[str, Any]:
    """A pinned recipe trained again from the head as built, on train + validation, for as many epochs as validation
    chose (the best epoch kept, else every epoch run): scikit-learn's `refit=True` for a head trained by epochs."""
    plan, progress = head.plans[0], fitting.progress
    best_epoch = progress.outcome(plan.phase.name).best_epoch
    chosen = fitting.config.train.restore_best and best_epoch
    epochs = best_epoch if chosen else progress.offset
    clock = time.perf_counter()
    images = _train_head_on_all(fitting, plan, epochs, start=head.initial)
    why = "the count validation chose" if chosen else "every epoch the recipe ran (train.restore_best: false)"
    fitting.reporter.info(
        f"refitted the recipe on train + validation ({images} images) for {epochs} epochs, {why}: "
        "validation figures are now in-sample"
    )
    return {"how": "recipe", "epochs": epochs, "images": images, "seconds": round(time.perf_counter() - clock, 3)}


def _train_head_on_all(fitting: Fitting, plan: PhasePlan, epochs: int, start: list | None = None) -> int:
    """The head (the pool cut's trainable part) trained `epochs` epochs on train + validation with the phase's
    optimizer, from `start` weights when given, else from its current ones; returns the images it trained on."""
    inputs, config = fitting.inputs, fitting.config
    data = probe_splits(inputs)
    x, y = (np.concatenate([data["train"][i], data["val"][i]]) for i in (0, 1))
    part = trainable_part(inputs.model, POOL)
    if start is not None:
        part.set_weights(start)
    fitting.objective.compile(part, make_optimizer(plan.phase, steps_per_epoch(len(x), config.data.batch_size)))
    batches = ArrayBatches(
        x, y, config.data.batch_size, inputs.num_classes, inputs.binary, config.data.shuffle, config.seed
    )
    fit_arrays(part, batches, fitting.strategy, epochs=epochs, class_weight=fitting.class_weight)
    return len(x)


def figures_meaning(inputs: PhaseInputs, head: HeadWork) -> dict[str, str]:
    """Which splits' figures chose something (in-sample, optimistic) and which are untouched estimates."""
    config = inputs.config
    used = ["the best epoch"] if config.train.restore_best else []
    if any(plan.phase.early_stopping.patience for plan in head.plans):
        used.append("when to stop")
    if head.selected:
        used.append("the head's penalty")
    if config.multi_label and config.head.threshold == "per_class":
        used.append("the thresholds")
    meaning = {"val": "selection: it chose " + ", ".join(used) if used else "untouched"}
    if head.policy.refits:
        meaning["val"] = "in-sample: the head was refitted on it" + (
            f" (it also chose {', '.join(used)})" if used else ""
        )
    if inputs.splits.has_test:
        meaning["test"] = "untouched"
    return meaning
