"""Inside the run folder: a fixed sequence of small steps from a prepared run to a complete folder.

1. write the inputs (config, labels, model info, splits, environment);
2. plan the phases and the head policy (`tlcli.training.phases`);
3. one pass over the files: features or decoded images (`tlcli.training.passes`), then the objective and the
   head policy's probe and selection (`tlcli.training.head_policy`);
4. restore the newest checkpoint when resuming;
5. fit the phases (`tlcli.training.loop`), record the rule for unknown images (`tlcli.training.unknown`), refit the
   head as its policy says, and evaluate the final weights;
6. save the model, write the validation report, and last `metrics.json`; then the model card from them (chief).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tlcli.config.loading import dump_config
from tlcli.evaluation.intervals import accuracy_intervals
from tlcli.evaluation.model_card import write_model_card
from tlcli.evaluation.multilabel import choose_thresholds
from tlcli.evaluation.training_report import ReportJob, write_training_report
from tlcli.progress import Reporter
from tlcli.runs import checkpoints
from tlcli.runs.atomic import save_model_atomic, write_json_atomic, write_text_atomic
from tlcli.runs.checkpoints import Checkpoint
from tlcli.runs.metrics import CacheUse, Metrics, TrainResult
from tlcli.runs.provenance import environment, write_splits
from tlcli.runs.records import read_run_record
from tlcli.system import peak_memory_mb
from tlcli.training.callbacks import HistoryRecorder
from tlcli.training.compile import Objective, saved_loss
from tlcli.training.distributed import broadcast_weights
from tlcli.training.head_policy import HeadWork, Refit, after_fitting, before_fitting, figures_meaning
from tlcli.training.inputs import FeatureInputs, ImageInputs, PhaseInputs
from tlcli.training.loop import Fitting, RunProgress, fit_phases
from tlcli.training.options import RunOptions
from tlcli.training.passes import decode_splits, extract_splits, record_pass
from tlcli.training.phases import PhasePlan, evaluation_cut, extraction_cut, plan_run
from tlcli.training.prepare import Prepared
from tlcli.training.records import Timings
from tlcli.training.trust import DataTrust, check_trust
from tlcli.training.unknown import record_unknown


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
    prepared, config = session.prepared, session.prepared.config
    timings = Timings(startup=time.perf_counter() - session.options.start_time())
    _write_inputs(session)  # 1.
    plans = _plan(session)  # 2.
    single = _single_pass(session, plans, timings)  # 3.
    inputs = single.inputs
    objective = Objective.for_labels(config, inputs.splits.train.labels, prepared.splits.class_names)
    head = before_fitting(inputs, plans, objective, session.run_dir, session.reporter, timings)
    with timings.measure("train"):
        restored = _restore(session) if session.resuming else None  # 4.
        fitting = _fitting(session, inputs, objective, restored)
        with prepared.scope():
            fit_phases(fitting, head.plans, restored)  # 5.
            with timings.measure("unknown"):  # before any refit: the validation outputs stay held out
                record_unknown(inputs, session.run_dir, session.reporter, prepared.plan.chief)
            refit = after_fitting(fitting, head)
            final, probabilities = inputs.evaluate(evaluation_cut(head.plans), objective)
    if config.multi_label:  # 6. thresholds from validation probabilities the model was not fitted on (before a refit)
        held_out = refit.held_out if refit.held_out is not None else probabilities["val"]
        _set_thresholds(session, inputs.splits.val.labels, held_out)
    _save_and_report(session, inputs, objective, probabilities["val"], timings)
    metrics = _metrics(session, single, fitting, head, refit, final, timings)
    metrics.write(session.run_dir)  # last: a run with metrics.json is complete
    if prepared.plan.chief and config.output.report:  # the model card reads the final metrics.json
        write_model_card(session.run_dir)
    if session.tracking is not None:
        session.tracking.log_completed(metrics, prepared.model)
    return TrainResult(session.run_dir, metrics, single.skipped)


@dataclass(frozen=True)
class SinglePass:
    """What training's one pass over the files left: the inputs every phase fits, how the cache served them, and
    the files it skipped."""

    inputs: PhaseInputs
    cache_use: CacheUse
    skipped: list[dict[str, str]]
    trust: DataTrust


def _plan(session: Session) -> list[PhasePlan]:
    """The phases and where each is cut (`tlcli.training.phases`), each told."""
    prepared = session.prepared
    plans = plan_run(prepared.model, prepared.config, len(prepared.splits.train))
    for plan in plans:
        session.reporter.info(plan.describe())
    return plans


def _fitting(session: Session, inputs: PhaseInputs, objective: Objective, restored: Checkpoint | None) -> Fitting:
    """What every phase shares, from the checkpoint `restored` when resuming (its history rows not yet tracked go to
    the tracker: its log stopped, or the process did)."""
    prepared = session.prepared
    broadcast_weights(prepared.strategy, prepared.model)  # several workers: all start from the chief's weights
    rows = restored.state.history if restored else ([] if session.resuming else None)
    history = HistoryRecorder(session.run_dir / "history.csv", rows=rows)
    if session.tracking is not None:
        for row in history.rows:
            session.tracking.log_epoch(row)
    return Fitting(
        session.run_dir,
        inputs,
        objective,
        session.reporter,
        history,
        prepared.info.pretrained,
        strategy=prepared.strategy,
        tracking=session.tracking,
        progress=RunProgress.after(restored),
    )


def _metrics(
    session: Session, single: SinglePass, fitting: Fitting, head: HeadWork, refit: Refit, final, timings: Timings
) -> Metrics:
    """metrics.json's record of the run."""
    prepared, inputs, progress = session.prepared, single.inputs, fitting.progress
    trained = timings.get("train")
    images = {split: len(kept) for split, kept in inputs.splits.items()} | {"skipped": len(single.skipped)}
    return Metrics(
        final=final,
        intervals=accuracy_intervals(final, images),
        best=progress.best,
        epochs={"total": progress.offset, **fitting.history.epochs_per_phase()},
        resumes=len(read_run_record(session.run_dir).resumes),
        images=images,
        cache=single.cache_use,
        wall_time_s=round(time.perf_counter() - session.options.start_time(), 3),
        timings_s=timings.as_dict(),
        images_per_second=round(len(inputs.splits.train) * progress.session_epochs / trained, 1) if trained else None,
        peak_memory_mb=peak_memory_mb(),
        selection=head.selection.to_dict() if head.selected else None,
        linear_probe=head.probe,
        data_trust=single.trust.record(),
        phases=progress.phases_record(),
        figures=figures_meaning(inputs, head),
        refit=refit.record,
        devices={**prepared.plan.to_dict(), "description": prepared.plan.describe()},
    )


def _set_thresholds(session: Session, labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Multi-label: each class's threshold (`head.threshold`, or chosen on validation by the best F1), recorded in
    model.json."""
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


def _write_inputs(session: Session) -> None:
    prepared, run_dir = session.prepared, session.run_dir
    write_text_atomic(run_dir / "config.yaml", dump_config(prepared.config))
    write_json_atomic(run_dir / "labels.json", prepared.splits.class_names)
    prepared.info.write(run_dir)
    write_splits(run_dir, prepared.splits)
    if not (session.resuming and (run_dir / "env.json").is_file()):  # a resume keeps the first session's environment
        write_json_atomic(run_dir / "env.json", environment(prepared.plan.to_dict(), prepared.config.seed))


def _single_pass(session: Session, plans: list[PhasePlan], timings: Timings) -> SinglePass:
    """Extract frozen features when every phase can train on them, else decode the images once and keep them."""
    prepared, reporter = session.prepared, session.reporter
    clock = time.perf_counter()
    cut = extraction_cut(plans)
    if cut is not None:
        features, cache_use = extract_splits(prepared, cut, reporter)
        inputs: PhaseInputs = FeatureInputs(prepared.model, features, cut, prepared.config, prepared.num_classes)
    else:
        decoded, cache_use = decode_splits(prepared, reporter), CacheUse("images")
        inputs = ImageInputs(prepared.model, decoded, prepared.config, prepared.num_classes)
    timings.record("extract" if cut is not None else "decode", clock)
    skipped = record_pass(session.run_dir, prepared, inputs.splits, reporter, strict=session.options.strict)
    with timings.measure("trust"):
        trust = check_trust(prepared, inputs, session.run_dir, reporter, cache_use)
    return SinglePass(inputs, cache_use, skipped, trust)


def _restore(session: Session) -> Checkpoint | None:
    run_dir, reporter = session.run_dir, session.reporter
    checkpoints.clean_partial(run_dir)
    with session.prepared.scope():
        restored = checkpoints.restore(run_dir, session.prepared.model)
    if restored is None:
        reporter.warn("no usable checkpoint in the run folder: training it from the start")
        return None
    checkpoints.drop_newer_than(run_dir, restored.state.epoch)
    state = restored.state
    reporter.info(
        f"resuming after epoch {state.epoch} ({state.phase} epoch {state.phase_epoch}), from {restored.path.name}"
    )
    return restored


def _save_and_report(
    session: Session, inputs: PhaseInputs, objective: Objective, val_probabilities, timings: Timings
) -> None:
    """Save model.keras while the report worker (if any) draws the validation report; then collect it."""
    prepared, run_dir = session.prepared, session.run_dir
    job = ReportJob.for_split(
        run_dir,
        inputs.splits.val,
        prepared.splits.class_names,
        top_k=prepared.config.train.top_k,
        probabilities=val_probabilities,
    )
    job.thresholds, job.separator = prepared.info.thresholds, prepared.splits.separator
    worker = session.options.report_worker
    worker = worker if worker is not None and worker.submit(job) else None
    clock = time.perf_counter()
    if prepared.config.multi_label and prepared.model.compiled:  # class weights' alpha does not load back
        prepared.model.compile(
            optimizer=prepared.model.optimizer, loss=saved_loss(prepared.config), metrics=objective.metrics()
        )
    if not prepared.plan.chief:  # another worker of a cluster: its folder is scratch, the chief saves and reports
        return
    save_model_atomic(prepared.model, run_dir / "model.keras")
    timings.record("save", clock)
    with timings.measure("report"):
        write_training_report(job, reporter=session.reporter, images=inputs.splits.val.pixels, worker=worker)
