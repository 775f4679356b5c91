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

from tlcli.config.loading import dump_config
from tlcli.data.batches import class_weights
from tlcli.progress import Reporter
from tlcli.runs import checkpoints
from tlcli.runs.atomic import save_model_atomic, write_json_atomic, write_text_atomic
from tlcli.runs.checkpoints import Checkpoint
from tlcli.runs.metrics import Metrics, TrainResult
from tlcli.runs.provenance import environment, write_splits
from tlcli.runs.records import read_run_record
from tlcli.system import peak_memory_mb
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


def train_in_run(session: Session) -> TrainResult:
    """The steps of the module docstring; the run folder ends complete (or the error says why not)."""
    from tlcli.training.callbacks import HistoryRecorder
    from tlcli.training.compile import make_loss, make_metrics
    from tlcli.training.loop import Fitting, fit_phases
    from tlcli.training.phases import cut_options, phases_of, plan_phases

    prepared, reporter, run_dir = session.prepared, session.reporter, session.run_dir
    config = prepared.config
    timings = {"startup": round(time.perf_counter() - session.options.start_time(), 3)}
    _write_inputs(session)
    phases = phases_of(config)
    plans = plan_phases(config, phases, cut_options(prepared.model, config, phases), len(prepared.splits.train))
    for plan in plans:
        reporter.info(plan.describe())
    inputs, cache_use, skipped = _single_pass(session, plans, timings)
    clock = time.perf_counter()
    restored = _restore(session) if session.resuming else None
    history = HistoryRecorder(run_dir / "history.csv", rows=restored.state.history if restored else ([] if session.resuming else None))
    steps = -(-len(inputs.sets["train"]) // config.data.batch_size)
    weights = class_weights(inputs.sets["train"].labels, prepared.num_classes, config.train.class_weight, prepared.splits.class_names)
    fitting = Fitting(run_dir, prepared.model, config, inputs, reporter, history, weights, steps, prepared.info.pretrained)
    if restored is not None:
        fitting.best, fitting.offset = dict(restored.state.run_best), restored.state.offset
    with prepared.scope():
        fit_phases(fitting, plans, restored)
        final, probabilities = inputs.evaluate(plans[-1].cut or plans[-1].val_cut, make_loss(config), make_metrics(config, prepared.num_classes))
    timings["train"] = round(time.perf_counter() - clock, 3)
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
        images_per_second=round(len(inputs.sets["train"]) * fitting.session_epochs / timings["train"], 1) if timings["train"] else None,
        peak_memory_mb=peak_memory_mb(),
    )
    metrics.write(run_dir)  # last: a run with metrics.json is complete
    return TrainResult(run_dir, metrics, skipped)


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
    reporter.info(f"resuming after epoch {restored.state.epoch} ({restored.state.phase} epoch {restored.state.phase_epoch}), from {restored.path.name}")
    return restored


def _save_and_report(session: Session, inputs, val_probabilities, timings: dict[str, float]) -> None:
    """Save model.keras while the report worker (if any) draws the validation report; then collect it."""
    from tlcli.evaluation.training_report import ReportJob, write_training_report

    prepared, run_dir = session.prepared, session.run_dir
    job = ReportJob.for_split(run_dir, inputs.sets["val"], prepared.splits.class_names, top_k=prepared.config.train.top_k, probabilities=val_probabilities)
    worker = session.options.report_worker
    worker = worker if worker is not None and worker.submit(job) else None
    clock = time.perf_counter()
    save_model_atomic(prepared.model, run_dir / "model.keras")
    timings["save"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    write_training_report(job, reporter=session.reporter, images=inputs.sets["val"].pixels, worker=worker)
    timings["report"] = round(time.perf_counter() - clock, 3)
