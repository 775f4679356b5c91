"""Inside the run folder: a fixed sequence of small steps from a prepared run to a complete folder.

1. write the inputs (config, labels, model info, splits, environment);
2. plan the phases (`tlcli.training.phases`);
3. one pass over the files: features or decoded images (`tlcli.training.passes`);
4. restore the newest checkpoint when resuming;
5. fit the phases (`tlcli.training.loop`) and evaluate the final weights;
6. save the model, write the validation report, and last `metrics.json`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlcli.config.loading import dump_config
from tlcli.data.batches import class_weights, positive_weights
from tlcli.progress import Reporter
from tlcli.runs import checkpoints
from tlcli.runs.atomic import save_model_atomic, write_json_atomic, write_text_atomic
from tlcli.runs.checkpoints import Checkpoint
from tlcli.runs.metrics import Metrics, TrainResult
from tlcli.runs.provenance import environment, write_splits
from tlcli.runs.records import read_run_record
from tlcli.system import peak_memory_mb
from tlcli.training.distributed import broadcast_weights
from tlcli.training.options import RunOptions
from tlcli.training.prepare import Prepared


@dataclass
class Session:
    """One process training in one run folder."""

    prepared: Prepared
    run_dir: Path
    reporter: Reporter
    options: RunOptions
    resuming: bool = False
    tracking: Any = None  # a `tlcli.tracking.runs.RunTracking`: this run's MLflow run (None: not tracked)


def train_in_run(session: Session) -> TrainResult:
    """The steps of the module docstring; the run folder ends complete (or the error says why not)."""
    from tlcli.training.callbacks import HistoryRecorder
    from tlcli.training.compile import make_loss, make_metrics
    from tlcli.training.loop import Fitting, fit_phases
    from tlcli.training.phases import plan_run, unselect

    prepared, reporter, run_dir = session.prepared, session.reporter, session.run_dir
    config = prepared.config
    timings = {"startup": round(time.perf_counter() - session.options.start_time(), 3)}
    _write_inputs(session)
    plans = plan_run(prepared.model, config, len(prepared.splits.train))
    for plan in plans:
        reporter.info(plan.describe())
    inputs, cache_use, skipped = _single_pass(session, plans, timings)
    weights = class_weights(
        inputs.sets["train"].labels, prepared.num_classes, config.train.class_weight, prepared.splits.class_names
    )
    alpha = positive_weights(inputs.sets["train"].labels, config.train.class_weight, prepared.splits.class_names)
    selection, probe = _choose(session, inputs, plans[0], (weights, alpha), timings)
    if plans[0].select_head and not (selection is not None and selection.selected):
        plans[0] = unselect(config, plans[0], selection.why if selection is not None else "no features for the head")
        reporter.info(plans[0].describe() + f" (the head's penalty was not chosen: {plans[0].no_selection})")
    recipe_refit = plans[0].refit and not plans[0].select_head
    if plans[0].no_refit:
        reporter.warn(f"train.refit: true is not done: {plans[0].no_refit}; validation figures stay held out")
    initial = (
        _head_weights(prepared.model) if recipe_refit else None
    )  # before a resume loads a checkpoint: the head as built
    clock = time.perf_counter()
    restored = _restore(session) if session.resuming else None
    broadcast_weights(
        prepared.strategy, prepared.model
    )  # several workers: all start from the chief's weights (exact fit, checkpoint)
    history = HistoryRecorder(
        run_dir / "history.csv", rows=restored.state.history if restored else ([] if session.resuming else None)
    )
    steps = -(-len(inputs.sets["train"]) // config.data.batch_size)
    if (
        session.tracking is not None
    ):  # a resume: epochs checkpointed but not yet in MLflow (its log stopped, or the process did)
        for row in history.rows:
            session.tracking.log_epoch(row)
    fitting = Fitting(
        run_dir,
        prepared.model,
        config,
        inputs,
        reporter,
        history,
        weights,
        steps,
        prepared.info.pretrained,
        alpha=alpha,
        strategy=prepared.strategy,
        tracking=session.tracking,
    )
    if restored is not None:
        fitting.best, fitting.offset = dict(restored.state.run_best), restored.state.offset
    cut = plans[-1].cut or plans[-1].val_cut
    with prepared.scope():
        fit_phases(fitting, plans, restored)
        refit = (selection is not None and selection.refit) or recipe_refit
        held_out = (
            inputs.evaluate(cut, make_loss(config, fitting.alpha), make_metrics(config, prepared.num_classes))[1]["val"]
            if config.multi_label and refit
            else None
        )
        refitted = None
        if recipe_refit:
            refitted = _refit_recipe(fitting, plans[0], initial)
        elif refit:
            _refit(fitting, plans, selection)
        if refit:
            broadcast_weights(prepared.strategy, prepared.model)
        final, probabilities = inputs.evaluate(
            cut, make_loss(config, fitting.alpha), make_metrics(config, prepared.num_classes)
        )
    timings["train"] = round(time.perf_counter() - clock, 3)
    if (
        config.multi_label
    ):  # thresholds from validation probabilities the model was not fitted on (those before a refit)
        _set_thresholds(session, inputs.sets["val"].labels, held_out if held_out is not None else probabilities["val"])
    _save_and_report(session, inputs, probabilities["val"], timings)
    metrics = Metrics(
        final=final,
        best=fitting.best,
        epochs={"total": fitting.offset, **history.epochs_per_phase()},
        resumes=len(read_run_record(run_dir).resumes),
        images={split: len(kept) for split, kept in inputs.sets.items()} | {"skipped": len(skipped)},
        cache=cache_use,
        wall_time_s=round(time.perf_counter() - session.options.start_time(), 3),
        timings_s=timings,
        images_per_second=round(len(inputs.sets["train"]) * fitting.session_epochs / timings["train"], 1)
        if timings["train"]
        else None,
        peak_memory_mb=peak_memory_mb(),
        selection=selection.to_dict() if selection is not None and selection.selected else None,
        linear_probe=probe,
        phases=fitting.outcomes,
        figures=_what_figures_mean(inputs, plans, selection, refit),
        refit=refitted,
        devices={**prepared.plan.to_dict(), "description": prepared.plan.describe()},
    )
    metrics.write(run_dir)  # last: a run with metrics.json is complete
    if session.tracking is not None:
        session.tracking.log_completed(metrics, prepared.model)
    return TrainResult(run_dir, metrics, skipped)


def _choose(session: Session, inputs, plan, weights: tuple, timings: dict[str, float]):
    """`weights`: the class weights of single-label and multi-label losses (`class_weights`, `positive_weights`).

    The linear probe (and, when the plan selects the head, its penalty and starting weights); selection.json records them.

    Returns the selection (or None) and the probe record of metrics.json.
    """
    from tlcli.training.inputs import FeatureInputs
    from tlcli.training.selection import choose_head

    config, reporter = session.prepared.config, session.reporter
    if (
        not isinstance(inputs, FeatureInputs) and not plan.select_head
    ):  # selecting needs only the head's features, an inference pass
        return None, {"skipped": f"no cached features ({plan.why})"}
    if config.probe == "off" and not plan.select_head:
        return None, {"skipped": "probe: off"}
    clock = time.perf_counter()
    selection = choose_head(inputs, plan, *weights)
    timings["select"] = round(time.perf_counter() - clock, 3)
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
    shown = (
        f"validation mAP {chosen.val_map:.4f}"
        if chosen.val_map is not None
        else f"validation accuracy {chosen.val_accuracy:.4f}"
    )
    reporter.info(f"linear probe: {shown} at C={chosen.C:g}" + (f"; {selection.why}" if selection.why else ""))
    if selection.selected:
        write_json_atomic(session.run_dir / "selection.json", selection.to_dict())
    return selection, probe


def _refit(fitting, plans, selection) -> None:
    """The head fitted again on train + validation at the chosen penalty (after fine-tuning, on the fine-tuned base's features);
    without fine-tuning, then as many epochs as training added to its start."""
    from tlcli.training.selection import refit_head

    inputs, plan = fitting.inputs, plans[0]
    fine_tuned = len(plans) > 1
    refit_head(inputs, selection, fitting.class_weight, fresh=fine_tuned, alpha=fitting.alpha)
    outcome = fitting.outcomes.get(plan.phase.name, {})
    added = (
        int(outcome["best"].get("epoch", 0)) - int(outcome["start"].get("epoch", 0))
        if outcome.get("kept") == "best" and outcome.get("start") and not fine_tuned
        else 0
    )
    if added > 0:
        _train_head_on_all(fitting, plan, added)
    selection.refit_epochs = added
    write_json_atomic(fitting.run_dir / "selection.json", selection.to_dict())
    fitting.reporter.info(
        f"refitted the head on train + validation ({len(inputs.sets['train']) + len(inputs.sets['val'])} images) at C={selection.chosen.C:g}, then {added} epochs: validation figures are now in-sample"
    )


def _head_weights(model) -> list:
    from tlcli.features.cut import Cut, trainable_part

    return trainable_part(model, Cut("pool")).get_weights()


def _refit_recipe(fitting, plan, initial: list) -> dict[str, Any]:
    """A pinned recipe trained again from the head as built, on train + validation, for as many epochs as validation
    chose (the best epoch kept, else every epoch run): scikit-learn's `refit=True` for a head trained by epochs."""
    best_epoch = int(fitting.outcomes.get(plan.phase.name, {}).get("best", {}).get("epoch", 0))
    chosen = fitting.config.train.restore_best and best_epoch
    epochs = best_epoch if chosen else fitting.offset
    clock = time.perf_counter()
    images = _train_head_on_all(fitting, plan, epochs, start=initial)
    why = "the count validation chose" if chosen else "every epoch the recipe ran (train.restore_best: false)"
    fitting.reporter.info(
        f"refitted the recipe on train + validation ({images} images) for {epochs} epochs, {why}: validation figures are now in-sample"
    )
    return {"how": "recipe", "epochs": epochs, "images": images, "seconds": round(time.perf_counter() - clock, 3)}


def _train_head_on_all(fitting, plan, epochs: int, start: list | None = None) -> int:
    """The head (the pool cut's trainable part) trained `epochs` epochs on train + validation with the phase's optimizer,
    from `start` weights when given, else from its current ones; returns the images it trained on."""
    from tlcli.data.batches import ArrayBatches
    from tlcli.features.cut import Cut, trainable_part
    from tlcli.training.compile import make_loss, make_metrics, make_optimizer
    from tlcli.training.distributed import fit_arrays
    from tlcli.training.selection import probe_splits

    inputs, config = fitting.inputs, fitting.config
    data = probe_splits(inputs)
    x, y = (np.concatenate([data["train"][i], data["val"][i]]) for i in (0, 1))
    part = trainable_part(inputs.model, Cut("pool"))
    if start is not None:
        part.set_weights(start)
    part.compile(
        optimizer=make_optimizer(plan.phase, -(-len(x) // config.data.batch_size)),
        loss=make_loss(config, fitting.alpha),
        metrics=make_metrics(config, inputs.num_classes),
    )
    fit_arrays(
        part,
        ArrayBatches(x, y, config.data.batch_size, inputs.num_classes, inputs.binary, config.data.shuffle, config.seed),
        fitting.strategy,
        epochs=epochs,
        class_weight=fitting.class_weight,
    )
    return len(x)


def _set_thresholds(session: Session, labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Multi-label: each class's threshold (`head.threshold`, or chosen on validation by the best F1), recorded in model.json."""
    from dataclasses import replace

    from tlcli.evaluation.multilabel import choose_thresholds

    prepared = session.prepared
    threshold = prepared.config.head.threshold
    chosen = (
        choose_thresholds(probabilities, labels)
        if threshold == "per_class"
        else (float(threshold),) * prepared.num_classes
    )
    prepared.info = replace(prepared.info, thresholds=chosen)
    prepared.info.write(session.run_dir)
    if threshold == "per_class":
        session.reporter.info(
            "thresholds chosen on validation (best F1 per class): "
            + ", ".join(f"{name} {t:.3f}" for name, t in zip(prepared.splits.class_names, chosen))
        )


def _what_figures_mean(inputs, plans, selection, refit: bool) -> dict[str, str]:
    """Which splits' figures chose something (in-sample, optimistic) and which are untouched estimates."""
    used = ["the best epoch"] if inputs.config.train.restore_best else []
    if any(plan.phase.early_stopping.patience for plan in plans):
        used.append("when to stop")
    if selection is not None and selection.selected:
        used.append("the head's penalty")
    if inputs.config.multi_label and inputs.config.head.threshold == "per_class":
        used.append("the thresholds")
    meaning = {"val": "selection: it chose " + ", ".join(used) if used else "untouched"}
    if refit:
        meaning["val"] = "in-sample: the head was refitted on it" + (
            f" (it also chose {', '.join(used)})" if used else ""
        )
    if "test" in inputs.sets and len(inputs.sets["test"]):
        meaning["test"] = "untouched"
    return meaning


def _write_inputs(session: Session) -> None:
    prepared, run_dir = session.prepared, session.run_dir
    write_text_atomic(run_dir / "config.yaml", dump_config(prepared.config))
    write_json_atomic(run_dir / "labels.json", prepared.splits.class_names)
    prepared.info.write(run_dir)
    write_splits(run_dir, prepared.splits)
    if not (session.resuming and (run_dir / "env.json").is_file()):  # a resume keeps the first session's environment
        write_json_atomic(run_dir / "env.json", environment(prepared.plan.to_dict(), prepared.config.seed))


def _single_pass(session: Session, plans, timings: dict[str, float]):
    """Extract frozen features when every phase can train on them, else decode the images once and keep them."""
    from tlcli.runs.metrics import CacheUse
    from tlcli.training.inputs import FeatureInputs, ImageInputs
    from tlcli.training.passes import decode_splits, extract_splits, record_pass
    from tlcli.training.phases import extraction_cut

    prepared, reporter = session.prepared, session.reporter
    clock = time.perf_counter()
    cut = extraction_cut(plans)
    if cut is not None:
        features, cache_use = extract_splits(prepared, cut, reporter)
        inputs: Any = FeatureInputs(prepared.model, features, cut, prepared.config, prepared.num_classes)
    else:
        decoded, cache_use = decode_splits(prepared, reporter), CacheUse("images")
        inputs = ImageInputs(prepared.model, decoded, prepared.config, prepared.num_classes)
    timings["extract" if cut is not None else "decode"] = round(time.perf_counter() - clock, 3)
    skipped = record_pass(session.run_dir, prepared, inputs.sets, reporter, strict=session.options.strict)
    return inputs, cache_use, skipped


def _restore(session: Session) -> Checkpoint | None:
    run_dir, reporter = session.run_dir, session.reporter
    checkpoints.clean_partial(run_dir)
    with session.prepared.scope():
        restored = checkpoints.restore(run_dir, session.prepared.model)
    if restored is None:
        reporter.warn("no usable checkpoint in the run folder: training it from the start")
        return None
    checkpoints.drop_newer_than(run_dir, restored.state.epoch)
    reporter.info(
        f"resuming after epoch {restored.state.epoch} ({restored.state.phase} epoch {restored.state.phase_epoch}), from {restored.path.name}"
    )
    return restored


def _save_and_report(session: Session, inputs, val_probabilities, timings: dict[str, float]) -> None:
    """Save model.keras while the report worker (if any) draws the validation report; then collect it."""
    from tlcli.evaluation.training_report import ReportJob, write_training_report

    prepared, run_dir = session.prepared, session.run_dir
    job = ReportJob.for_split(
        run_dir,
        inputs.sets["val"],
        prepared.splits.class_names,
        top_k=prepared.config.train.top_k,
        probabilities=val_probabilities,
    )
    job.thresholds, job.separator = prepared.info.thresholds, prepared.splits.separator
    worker = session.options.report_worker
    worker = worker if worker is not None and worker.submit(job) else None
    clock = time.perf_counter()
    if (
        prepared.config.multi_label and prepared.model.compiled
    ):  # class weights' alpha array does not load back (`saved_loss`)
        from tlcli.training.compile import make_metrics, saved_loss

        prepared.model.compile(
            optimizer=prepared.model.optimizer,
            loss=saved_loss(prepared.config),
            metrics=make_metrics(prepared.config, prepared.num_classes),
        )
    if not prepared.plan.chief:  # another worker of a cluster: its folder is scratch, the chief saves and reports
        return
    save_model_atomic(prepared.model, run_dir / "model.keras")
    timings["save"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    write_training_report(job, reporter=session.reporter, images=inputs.sets["val"].pixels, worker=worker)
    timings["report"] = round(time.perf_counter() - clock, 3)
