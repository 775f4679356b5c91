"""`train`: config -> data -> model -> two phases of fit -> a complete run folder.

Everything that can be wrong with the user's input (config, data folders,
base name, weights, layer names, optimizer arguments) is checked in
`prepare` before a run folder exists, so a user error leaves no trace. Once
the run folder exists, any failure marks it `failed` with the reason, Ctrl-C
marks it `interrupted`, and earlier runs are never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcli import images, runs
from tlcli.config import EarlyStoppingConfig, ExperimentConfig, OptimizerConfig, dump_config, load_config
from tlcli.data import (
    ArrayBatches,
    DataSplits,
    DecodedImages,
    check_class_weight,
    class_weights,
    decode_samples,
    discover_splits,
    make_dataset,
)
from tlcli.devices import DevicePlan, apply_device_plan, enable_determinism, plan_devices, visible_gpus
from tlcli.errors import ConfigError, TlcliError, TrainingError
from tlcli.model import BASE_LAYER, ModelInfo, SourceBase, build_model, first_trainable_index, set_base_trainable, trainable_spec
from tlcli.progress import Reporter

FEATURE_STEPS_PER_EXECUTION = 16  # measured: W1's head phase 4.4 s -> see benchmarks/RESULTS.md

log = logging.getLogger("tlcli")


@dataclass(frozen=True)
class Phase:
    """One `fit`: the first phase (`train`) or the fine-tuning phase (`fine_tune`)."""

    name: str
    epochs: int
    learning_rate: float
    optimizer: OptimizerConfig
    trainable: Any
    trainable_key: str
    early_stopping: EarlyStoppingConfig


def phases_of(config: ExperimentConfig) -> list[Phase]:
    phases = [Phase("train", config.train.epochs, config.train.learning_rate, config.train, trainable_spec(config), "base.trainable", config.train.early_stopping)]
    if config.fine_tune is not None:
        ft = config.fine_tune
        phases.append(Phase("fine_tune", ft.epochs, ft.learning_rate, ft, ft.unfreeze, "fine_tune.unfreeze", ft.early_stopping))
    return phases


@dataclass
class Prepared:
    """Everything checked and built before the run folder is created."""

    config: ExperimentConfig
    splits: DataSplits
    plan: DevicePlan
    strategy: Any
    model: Any
    info: ModelInfo
    runs_dir: Path
    source_run: Path | None = None


@dataclass
class TrainResult:
    """What `train` returns (and `tlcli train --json` prints)."""

    run_dir: Path
    metrics: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "status": "completed", "skipped_files": len(self.skipped), **self.metrics}


# ----------------------------------------------------------------------------- public entry points


def train(
    config: ExperimentConfig | str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    runs_dir: str | Path | None = None,
    device: str | None = None,
    reporter: Reporter | None = None,
    strict: bool = False,
    started: float | None = None,
    report_worker=None,
) -> TrainResult:
    """Train a model as `config` describes and write a new run folder.

    Args:
        config: an `ExperimentConfig`, or the path of a YAML config.
        overrides: `key.path=value` strings applied before validation.
        runs_dir: where run folders go (default: `output.runs_dir`).
        device: `cpu`, `gpu` or `auto`, overriding `runtime.device`.
        reporter: receives progress; the default only logs.
        started: `time.perf_counter()` value the wall time counts from
            (the CLI passes its process start); default now.
        strict: stop (DataError) on any data problem `tlcli check` reports:
            unreadable files, duplicates, leakage (else they are warned).
        report_worker: a started `tlcli.report_worker.ReportWorker` to write
            the final validation report in (default: written in this process);
            training closes it, whatever happens.

    Returns:
        The run folder and its metrics.

    Raises:
        ConfigError, DataError: bad input; nothing was written.
        TrainingError: training failed; the run folder is marked failed.
        KeyboardInterrupt: the run folder is marked interrupted.
    """
    started = time.perf_counter() if started is None else started
    reporter = reporter or Reporter()
    with report_worker or contextlib.nullcontext():
        prepared = prepare(config, overrides=overrides, runs_dir=runs_dir, device=device, reporter=reporter)
        run_dir = runs.create_run_dir(prepared.runs_dir, prepared.config.name)
        with runs.RunLock(run_dir):
            return _run_guarded(prepared, run_dir, reporter, started, strict, resume=None, report_worker=report_worker)


def resume(
    run_dir: str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    device: str | None = None,
    reporter: Reporter | None = None,
    strict: bool = False,
    started: float | None = None,
    report_worker=None,
) -> TrainResult:
    """Continue a run from its last completed epoch, or extend a finished one.

    The run's own config.yaml is used. `overrides` may only change epoch
    counts and early-stopping patience (`RESUMABLE_KEYS`); raising the epochs
    of the last phase that ran extends a finished run (an early-stopped phase
    restarts its patience). The run folder keeps its name; run.json records
    the resume.

    Raises:
        RunError: not a run folder, an incompatible run format, a run still
            running, or a completed run with nothing to add.
        ConfigError: an override that cannot change on resume.
        TrainingError, KeyboardInterrupt: as `train`.
    """
    from tlcli.errors import RunError

    started = time.perf_counter() if started is None else started
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    with report_worker or contextlib.nullcontext():
        if not run_dir.is_dir():
            raise RunError(f"--resume: {run_dir}: run folder not found")
        runs.read_run_record(run_dir)  # refuses non-runs and other run-format versions
        with runs.RunLock(run_dir):
            return _resume_locked(run_dir, overrides, device, reporter, strict, started, report_worker)


def _resume_locked(run_dir: Path, overrides, device, reporter: Reporter, strict: bool, started: float, report_worker=None) -> TrainResult:
    from tlcli import checkpoint
    from tlcli.config import parse_override, read_yaml
    from tlcli.errors import RunError

    record = runs.read_run_record(run_dir)
    if runs.run_is_live(record):
        raise RunError(f"{run_dir} is still running (pid {record.get('pid')}); stop that process first or wait for it")
    if not (run_dir / "config.yaml").is_file():
        raise RunError(f"{run_dir}: no config.yaml (the run was stopped before it began); start a new run instead")
    raw = read_yaml(run_dir / "config.yaml")
    state = checkpoint.newest_state(run_dir)
    parsed = [parse_override(text) for text in overrides]
    _check_resume_overrides(parsed, raw, state, run_dir)
    config = load_config(raw, overrides)
    if state is not None and record.get("status") == "completed" and runs.is_complete(run_dir) and _nothing_left(config, state):
        last = state["phase"]
        raise RunError(f"{run_dir} is already complete ({state['epoch']} epochs); to extend it: tlcli train --resume {run_dir} --set {last}.epochs=N (N > {_phase_epochs(config, last)})")
    prepared = prepare(config, runs_dir=run_dir.parent, device=device, reporter=reporter)
    _check_same_splits(prepared.splits, run_dir)
    _check_same_contents(prepared.splits, run_dir)
    entry = {"from_epoch": state["epoch"] if state else 0, "phase": state["phase"] if state else None, "overrides": list(overrides), "previous_status": record.get("status")}
    return _run_guarded(prepared, run_dir, reporter, started, strict, resume=entry, report_worker=report_worker)


RESUMABLE_KEYS = (
    "train.epochs",
    "fine_tune.epochs",
    "train.early_stopping.patience",
    "fine_tune.early_stopping.patience",
    "train.early_stopping.min_delta",
    "fine_tune.early_stopping.min_delta",
)


def _phase_epochs(config: ExperimentConfig, phase: str) -> int:
    return config.train.epochs if phase == "train" else config.fine_tune.epochs  # type: ignore[union-attr]


def _check_resume_overrides(parsed: list[tuple[str, Any]], raw: dict, state: dict | None, run_dir: Path) -> None:
    for key, value in parsed:
        if key not in RESUMABLE_KEYS:
            raise ConfigError("--set", f"{key} cannot change when resuming (only {', '.join(RESUMABLE_KEYS)}); to change it, start a new run: tlcli train {run_dir / 'config.yaml'} --set {key}=...")
        phase = key.split(".")[0]
        if phase == "fine_tune" and not raw.get("fine_tune"):
            raise ConfigError(key, "this run has no fine-tuning phase, and a phase cannot be added on resume")
        if state is None or not key.endswith(".epochs"):
            continue
        if phase == "train" and state["phase"] != "train":
            raise ConfigError(key, f"phase train is over (the run went on to {state['phase']}); extend {state['phase']}.epochs instead")
        if phase == state["phase"] and isinstance(value, int) and not isinstance(value, bool) and value < int(state["phase_epoch"]):
            raise ConfigError(key, f"the run already did {state['phase_epoch']} epochs of {phase}; give at least that many")


def _nothing_left(config: ExperimentConfig, state: dict) -> bool:
    """True when the checkpoint is at the end of the last phase under `config`."""
    names = [phase.name for phase in phases_of(config)]
    if state["phase"] != names[-1]:
        return False
    epochs = _phase_epochs(config, state["phase"])
    extended = epochs > int(state.get("phase_epochs") or 0)
    return int(state["phase_epoch"]) >= epochs or (bool(state.get("stopped_early")) and not extended)


def _check_same_splits(splits: DataSplits, run_dir: Path) -> None:
    """Resuming on other images would silently train a different run."""
    import csv

    from tlcli.errors import RunError

    for split in ("train", "val", "test"):
        path = run_dir / "splits" / f"{split}.csv"
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8") as stream:
            saved = sorted((row["relpath"], row["label"]) for row in csv.DictReader(stream))
        now = sorted((s.relpath, splits.class_names[s.label]) for s in getattr(splits, split))
        if saved != now:
            raise RunError(f"{run_dir}: the {split} images changed since the run started ({len(saved)} then, {len(now)} now, or other files); resuming would train on other data, start a new run")


def _check_same_contents(splits: DataSplits, run_dir: Path) -> None:
    """Same file names are not enough: an image edited in place would change the run too.

    Hashes the files (a fraction of a second for thousands of photos) and
    compares with the fingerprint in dataset.json, before anything is written.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tlcli.errors import RunError

    try:
        recorded = json.loads((run_dir / "dataset.json").read_text(encoding="utf-8"))["fingerprint"]
    except (OSError, ValueError, KeyError):
        return  # stopped before its first pass over the files: nothing to compare with
    try:
        unreadable = {entry["path"] for entry in json.loads((run_dir / "skipped_files.json").read_text(encoding="utf-8"))}
    except (OSError, ValueError, KeyError, TypeError):
        unreadable = set()

    def content_hash(path) -> str:
        try:
            return hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            return ""

    rows = []
    with ThreadPoolExecutor(max_workers=images.cpu_workers()) as pool:
        for split, samples in splits.listed():
            kept = sorted((s for s in samples if str(s.path) not in unreadable), key=lambda s: s.relpath)
            rows += [(split, s.relpath, h) for s, h in zip(kept, pool.map(content_hash, [s.path for s in kept]))]
    if dataset_fingerprint(rows) != recorded:
        raise RunError(f"{run_dir}: the contents of the images changed since the run started (same file names, other bytes); resuming would train on other data, start a new run")


def _run_guarded(prepared: Prepared, run_dir: Path, reporter: Reporter, started: float, strict: bool, resume: dict | None, report_worker=None) -> TrainResult:
    """Train inside `run_dir`, recording the outcome in run.json whatever happens."""
    from tlcli.checkpoint import Interrupted
    from tlcli.errors import UserError

    file_log = _attach_log_file(run_dir / "train.log")
    try:
        if resume is None:
            runs.start_run(run_dir, prepared.config.name)
            reporter.info(f"run folder: {run_dir}")
        else:
            runs.resume_run(run_dir, resume)
            reporter.info(f"resuming run folder: {run_dir}")
        result = _train_in_run(prepared, run_dir, reporter, started, strict=strict, resume=resume is not None, report_worker=report_worker)
        runs.finish_run(run_dir, "completed")
        return result
    except KeyboardInterrupt as exc:
        _finish_quietly(run_dir, "interrupted", "interrupted by Ctrl-C")
        interrupted = exc if isinstance(exc, Interrupted) else Interrupted("interrupted by Ctrl-C")
        interrupted.run_dir = run_dir
        if interrupted is exc:
            raise
        raise interrupted from None
    except TlcliError as exc:
        _finish_quietly(run_dir, "failed", str(exc))
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        full = _disk_full(exc)
        if full is not None:
            _finish_quietly(run_dir, "failed", f"disk full ({full})")
            raise UserError(f"disk full while writing {run_dir} ({full}); free some space, then continue with: tlcli train --resume {run_dir}") from exc
        log.exception("training failed")
        _finish_quietly(run_dir, "failed", reason)
        raise TrainingError(f"training failed ({reason}); the run folder {run_dir} is marked failed, see its train.log") from exc
    finally:
        logging.getLogger("tlcli").removeHandler(file_log)
        file_log.close()


def _finish_quietly(run_dir: Path, status: str, error: str | None) -> None:
    """Record the outcome; a full disk must not hide the original error."""
    try:
        runs.finish_run(run_dir, status, error)
    except OSError as exc:
        log.warning("could not update run.json (%s)", exc)


def _disk_full(exc: BaseException) -> str | None:
    import errno

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc.strerror or "no space left on device"
        if "No space left on device" in str(exc):
            return "no space left on device"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def validate(config: ExperimentConfig | str | Path, *, overrides=(), runs_dir=None) -> Prepared:
    """Check a config, its data folders and its model (base name, image size,
    weights, layer names) without training; returns what was prepared."""
    return prepare(config, overrides=overrides, runs_dir=runs_dir, reporter=Reporter())


def prepare(config, *, overrides=(), runs_dir=None, device=None, reporter: Reporter) -> Prepared:
    config = _as_config(config, overrides)
    if device is not None:
        config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"device": device})})
    runs_dir = Path(runs_dir) if runs_dir is not None else config.output.runs_dir
    source_run = runs.resolve_run(config.base.run, runs_dir) if config.base.run else None
    config = resolve_paths(config, runs_dir, source_run)
    if source_run is None:
        from tlcli.bases import check_base_name

        check_base_name(config.base.name)  # a typo in the base name is reported before the data is listed
    splits = discover_splits(config.data, config.seed)
    reporter.info(f"data: {splits.describe()}")
    for warning in splits.warnings:
        reporter.warn(warning)
    plan = plan_devices(config.runtime.device, config.runtime.mixed_precision, visible_gpus())
    strategy = apply_device_plan(plan)
    import keras

    keras.utils.set_random_seed(config.seed)
    if config.runtime.deterministic:
        enable_determinism(config.seed)
    with strategy.scope():
        source = _source_base(source_run) if source_run else None
        model, info = build_model(config, len(splits.class_names), source)
    base_layers = model.get_layer(BASE_LAYER).layers
    for phase in phases_of(config):
        first_trainable_index(base_layers, phase.trainable, phase.trainable_key)
        make_optimizer(phase, steps_per_epoch=1)
    _check_monitors(config, len(splits.class_names))
    check_class_weight(config.train.class_weight, splits.class_names)
    reporter.info(f"device: {plan.describe()}")
    return Prepared(config, splits, plan, strategy, model, info, runs_dir, source_run)


def _as_config(config, overrides) -> ExperimentConfig:
    if isinstance(config, ExperimentConfig):
        return load_config(config.to_dict(), overrides) if overrides else config
    return load_config(config, overrides)


def resolve_paths(config: ExperimentConfig, runs_dir: Path, source_run: Path | None) -> ExperimentConfig:
    """Absolute paths everywhere, so the saved config reproduces the run from any folder."""
    data = config.data.model_copy(update={k: getattr(config.data, k).absolute() for k in ("dir", "train_dir", "val_dir", "test_dir") if getattr(config.data, k) is not None})
    base_update: dict[str, Any] = {}
    if config.base.weights not in ("imagenet", "none"):
        base_update["weights"] = str(Path(config.base.weights).absolute())
    if source_run is not None:
        base_update["run"] = str(source_run.absolute())
    return config.model_copy(update={"data": data, "base": config.base.model_copy(update=base_update), "output": config.output.model_copy(update={"runs_dir": runs_dir.absolute()})})


def _source_base(run_dir: Path) -> SourceBase:
    model = runs.load_run_model(run_dir)
    info = ModelInfo.from_dict(runs.read_json(run_dir / "model.json"))
    return SourceBase(model.get_layer(BASE_LAYER), info, str(run_dir))


def _check_monitors(config: ExperimentConfig, num_classes: int) -> None:
    names = {"loss", "accuracy"}
    if config.train.top_k:
        names.add(top_k_name(config.train.top_k, num_classes))
    names |= {f"val_{name}" for name in names}
    checks = [("train.monitor", config.train.monitor), ("train.early_stopping.monitor", config.train.early_stopping.monitor)]
    if config.fine_tune is not None:
        checks.append(("fine_tune.early_stopping.monitor", config.fine_tune.early_stopping.monitor))
    for key, value in checks:
        if value not in names:
            import difflib

            close = difflib.get_close_matches(value, sorted(names), n=1)
            raise ConfigError(key, f"unknown metric {value!r}" + (f", did you mean {close[0]}?" if close else f" (known: {', '.join(sorted(names))})"))


def top_k_name(k: int, num_classes: int) -> str:
    return f"top{min(k, num_classes)}_accuracy"


# ----------------------------------------------------------------------------- inside the run folder


def _train_in_run(prepared: Prepared, run_dir: Path, reporter: Reporter, started: float, strict: bool = False, resume: bool = False, report_worker=None) -> TrainResult:
    config, splits, model, info = prepared.config, prepared.splits, prepared.model, prepared.info
    timings: dict[str, float] = {"startup": round(time.perf_counter() - started, 3)}
    _write_inputs(run_dir, prepared, keep_env=resume)
    phases = phases_of(config)
    cuts, val_cuts = _plan_cuts(model, config, phases, reporter, len(splits.train))

    # One pass over the files: extract frozen features when every phase can
    # train on them, else decode the images once and keep them.
    clock = time.perf_counter()
    extraction_cut = _deepest(cuts) if all(cuts) else None
    if extraction_cut is not None:
        sets, cache_record = _extract_splits(prepared, extraction_cut, reporter)
    else:
        sets, cache_record = _decode_splits(prepared, reporter), {"mode": "images"}
    timings["extract" if extraction_cut is not None else "decode"] = round(time.perf_counter() - clock, 3)
    skipped = [{"path": s.path, "reason": s.reason, "split": split} for split, d in sets.items() for s in d.skipped]
    runs.write_json_atomic(run_dir / "skipped_files.json", skipped)
    if skipped:
        reporter.warn(f"skipped {len(skipped)} unreadable file{'s' if len(skipped) > 1 else ''} (listed in skipped_files.json), e.g. {skipped[0]['path']}: {skipped[0]['reason']}")
    from tlcli.check import find_problems, record_problems  # duplicates and leakage, from this same pass

    record_problems(run_dir, find_problems(splits, sets), reporter, strict=strict)
    _write_dataset_record(run_dir, splits, sets)
    for split in ("train", "val"):
        if len(sets[split]) == 0:
            raise TrainingError(f"no readable {split} images left after skipping {len(sets[split].skipped)} unreadable files")

    binary = config.head.activation == "sigmoid"
    num_classes = len(splits.class_names)
    batch = config.data.batch_size
    weights = class_weights(sets["train"].labels, num_classes, config.train.class_weight, splits.class_names)
    steps = -(-len(sets["train"]) // batch)
    inputs = PhaseInputs(model, sets, extraction_cut, config, num_classes, binary)

    from tlcli import checkpoint
    from tlcli.callbacks import HistoryRecorder, is_better

    clock = time.perf_counter()
    restored = None
    if resume:
        checkpoint.clean_partial(run_dir)
        with prepared.strategy.scope():
            restored = checkpoint.restore(run_dir, model)
        if restored is not None:
            checkpoint.drop_newer_than(run_dir, restored.epoch)
            reporter.info(f"resuming after epoch {restored.epoch} ({restored.phase} epoch {restored.phase_epoch}), from {restored.path.name}")
        else:
            reporter.warn("no usable checkpoint in the run folder: training it from the start")
    state = restored.state if restored is not None else None
    history = HistoryRecorder(run_dir / "history.csv", rows=state["history"] if state else ([] if resume else None))
    best: dict[str, Any] = dict(state["run_best"]) if state else {}
    epoch_offset = int(state["epoch"]) - int(state["phase_epoch"]) if state else 0
    start_index = int(state["phase_index"]) if state else 0
    session_epochs = 0
    with prepared.strategy.scope():
        for index, (phase, cut, val_cut) in enumerate(zip(phases, cuts, val_cuts)):
            if index < start_index:
                continue
            at = restored if restored is not None and index == start_index else None
            done = at.phase_epoch if at else 0
            extended = at is not None and phase.epochs > int(at.state.get("phase_epochs") or 0)
            if at is not None and (done >= phase.epochs or (at.state.get("stopped_early") and not extended)):
                # The checkpoint is this phase's last epoch: end it as the uninterrupted run did.
                if config.train.restore_best and at.best_weights_file is not None:
                    checkpoint.load_weights(model, at.best_weights_file)
                phase_best = at.state.get("phase_best") or {}
                if is_better(phase_best, best, config.train.monitor):
                    best = phase_best
                epoch_offset += done
                continue
            trainable = set_base_trainable(model, phase.trainable, pretrained=info.pretrained, key=phase.trainable_key)
            reporter.info(f"phase {phase.name}: {phase.epochs} epochs, {trainable} trainable base layers, learning rate {phase.learning_rate:g}" + (f", resuming at epoch {done + 1}" if done else ""))
            fitted, train_ds, val_ds = inputs.for_phase(cut, first_epoch=done, val_cut=val_cut)
            # On features a step is tiny, so Keras's per-step dispatch dominates: run several per call.
            per_call = FEATURE_STEPS_PER_EXECUTION if cut is not None else 1
            fitted.compile(optimizer=make_optimizer(phase, steps), loss=make_loss(config), metrics=make_metrics(config, num_classes), steps_per_execution=per_call)
            point = _resume_point(at, model, fitted, config, extended) if at is not None else {}
            validation = inputs.feature_validation(val_cut, make_loss(config), make_metrics(config, num_classes)) if val_ds is None else None
            ran, phase_best = _fit_phase(fitted, phase, config, train_ds, val_ds, weights, epoch_offset, steps, history, reporter, run_dir, full_model=model, phase_index=index, run_best=best, validation=validation, **point)
            if is_better(phase_best, best, config.train.monitor):
                best = phase_best
            session_epochs += ran - done
            epoch_offset += ran
        final, probabilities = inputs.evaluate(cuts[-1] or val_cuts[-1], make_loss(config), make_metrics(config, num_classes))
    timings["train"] = round(time.perf_counter() - clock, 3)

    from tlcli.evaluate import training_report_job, write_training_report  # the final validation report and curves.png

    # The worker draws the report while the model is saved.
    job = training_report_job(run_dir, sets["val"], splits.class_names, top_k=config.train.top_k, probabilities=probabilities["val"])
    worker = report_worker if report_worker is not None and report_worker.submit(job) else None
    clock = time.perf_counter()
    runs.save_model_atomic(model, run_dir / "model.keras")
    timings["save"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    write_training_report(run_dir, model, sets["val"], splits.class_names, binary=binary, top_k=config.train.top_k, batch_size=batch, reporter=reporter, probabilities=probabilities["val"], worker=worker)
    timings["report"] = round(time.perf_counter() - clock, 3)
    trained_images = len(sets["train"]) * session_epochs
    metrics = {
        "final": final,
        "best": best,
        "epochs": {"total": epoch_offset, **history.epochs_per_phase()},
        "resumes": len(runs.read_run_record(run_dir).get("resumes") or []),
        "images": {split: len(d) for split, d in sets.items()} | {"skipped": len(skipped)},
        "cache": cache_record,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "timings_s": timings,
        "images_per_second": round(trained_images / timings["train"], 1) if timings["train"] else None,
        "peak_memory_mb": peak_memory_mb(),
    }
    # Written last: a run with metrics.json is complete.
    runs.write_json_atomic(run_dir / "metrics.json", metrics)
    return TrainResult(run_dir, metrics, skipped)


def flip_mode(config: ExperimentConfig) -> str | None:
    """The RandomFlip mode whose flipped copies are precomputed (flips are the only augmentation), else None."""
    augment = config.data.augment
    return augment.flips_only if augment.flip_features else None


def _plan_cuts(model, config: ExperimentConfig, phases: list[Phase], reporter: Reporter, train_images: int) -> tuple[list, list]:
    """Per phase, where its frozen part ends for training (None: the full model on images),
    and for validation (validation images are never augmented, so an augmented phase
    can still validate on features)."""
    from tlcli.features import cut_bytes, find_cut
    from tlcli.fit_in_memory import FIT_IN_MEMORY_MAX_BYTES

    augment = config.data.augment
    flip = flip_mode(config)
    cuts, val_cuts = [], []
    for phase in phases:
        if config.cache == "off":
            val_cut, why = None, "cache: off"
        else:
            val_cut, why = find_cut(model, phase.trainable, phase.trainable_key)
        cut = val_cut
        if val_cut is not None and augment.enabled:
            if flip is None:
                cut, why = None, "random augmentation changes every epoch; validation uses cached features"
            elif 2 * train_images * cut_bytes(model, val_cut) > FIT_IN_MEMORY_MAX_BYTES:
                cut, why = None, "the features of the images and their flipped copies would not fit in memory; validation uses cached features"
            else:
                why += f"; random flips ({flip}) pick each image's features or its flipped copy's"
        reporter.info(f"phase {phase.name}: " + (f"training on cached features ({why})" if cut else f"training the full model on decoded images ({why})"))
        cuts.append(cut)
        val_cuts.append(val_cut)
    return cuts, val_cuts


def _deepest(cuts: list):
    """The cut nearest the input: every other phase's features derive from its output."""
    layer_cuts = [cut for cut in cuts if cut.kind == "layer"]
    return min(layer_cuts, key=lambda cut: cut.index) if layer_cuts else cuts[0]


class PhaseInputs:
    """What each phase fits: the full model on images, or its trainable part on features."""

    def __init__(self, model, sets: dict, extraction_cut, config: ExperimentConfig, num_classes: int, binary: bool):
        self.model, self.sets, self.extraction_cut, self.config = model, sets, extraction_cut, config
        self.num_classes, self.binary = num_classes, binary
        self._features: dict[tuple[str, str, bool], Any] = {}
        # Phases on features with augmentation on are the ones `_plan_cuts` allowed: flips only.
        self.flip = flip_mode(config)

    def features(self, cut, split: str, flipped: bool = False):
        """The features of `split` at `cut`; `flipped`: of the images' flipped copies (see `flip_mode`)."""
        from tlcli.features import bridge, extractor_for, flip_pixels, run_in_batches

        key = (cut.label, split, flipped)
        if key not in self._features:
            source = self.sets[split]
            if self.extraction_cut is None:  # images are decoded: one inference pass per cut
                extractor = extractor_for(self.model, cut)
                self._features[key] = run_in_batches(extractor, flip_pixels(source.images, self.flip) if flipped else source.images)
            elif cut == self.extraction_cut:
                self._features[key] = source.flipped if flipped else source.features
            else:  # a phase cut above the extraction cut (e.g. the head-first phase of a fine-tuned run)
                self._features[key] = run_in_batches(bridge(self.model, self.extraction_cut, cut), source.flipped if flipped else source.features)
        return self._features[key]

    def datasets(self, cut, split: str, shuffle: bool, first_epoch: int = 0):
        if cut is None:
            batch = self.config.data.batch_size
            return make_dataset(self.sets[split], batch_size=batch, num_classes=self.num_classes, binary=self.binary, shuffle=shuffle, seed=self.config.seed, first_epoch=first_epoch)
        return self.arrays(cut, split, shuffle, first_epoch).dataset()

    def arrays(self, cut, split: str, shuffle: bool, first_epoch: int = 0) -> ArrayBatches:
        """The features of `split` at `cut` and how they are batched."""
        config = self.config
        return ArrayBatches(self.features(cut, split), self.sets[split].labels, config.data.batch_size, self.num_classes, self.binary, shuffle, config.seed, first_epoch)

    def for_phase(self, cut, first_epoch: int = 0, val_cut=None):
        """The model to fit and its datasets; `first_epoch` (in the phase) sets where shuffling resumes.

        The validation dataset is None when the phase can validate on features
        at `val_cut` (see `feature_validation`): one inference call per epoch
        instead of Keras's evaluate loop (measured: 75 ms an epoch on W1's
        1,000 validation features).
        """
        from tlcli.features import trainable_part

        fitted = self.model if cut is None else trainable_part(self.model, cut)
        val_ds = self.datasets(cut, "val", False) if val_cut is None else None
        return fitted, self.in_memory(cut, first_epoch) or self.datasets(cut, "train", self.config.data.shuffle, first_epoch), val_ds

    def in_memory(self, cut, first_epoch: int = 0) -> ArrayBatches | None:
        """The training features as arrays for `fit_in_memory` (with the flipped copies' when flips augment)."""
        from tlcli.fit_in_memory import FIT_IN_MEMORY_MAX_BYTES

        if cut is None:
            return None
        data = self.arrays(cut, "train", self.config.data.shuffle, first_epoch)
        if self.flip:  # `_plan_cuts` checked that both copies fit
            return dataclasses.replace(data, flipped=self.features(cut, "train", flipped=True), flip_layer=self.model.get_layer("augmentation").layers[0])
        return data if data.inputs.nbytes <= FIT_IN_MEMORY_MAX_BYTES else None  # else Keras's fit over batches streamed from the array

    def feature_validation(self, val_cut, loss, metrics):
        """A callback that validates through the trainable part on validation features."""
        import numpy as np

        from tlcli.callbacks import FeatureValidation
        from tlcli.data import encode_targets
        from tlcli.features import trainable_part

        targets = np.asarray(encode_targets(self.sets["val"].labels, self.num_classes, self.binary))
        return FeatureValidation(trainable_part(self.model, val_cut), self.features(val_cut, "val"), targets, loss, metrics)

    def evaluate(self, cut, loss, metrics) -> tuple[dict[str, float], dict[str, Any]]:
        """Final loss/metrics and class probabilities on val (and test), with the final weights.

        One inference pass per split; loss and metrics come from its outputs,
        so the saved model is not recompiled for evaluation.
        """
        import numpy as np

        from tlcli.data import encode_targets
        from tlcli.features import run_in_batches, trainable_part

        fitted = self.model if cut is None else trainable_part(self.model, cut)
        final: dict[str, float] = {}
        probabilities: dict[str, Any] = {}
        for split in ("val", "test"):
            if split not in self.sets or not len(self.sets[split]):
                continue
            if cut is None:
                outputs = np.asarray(fitted.predict(self.datasets(cut, split, False), verbose=0), dtype="float32")
            else:
                outputs = np.asarray(run_in_batches(fitted, self.features(cut, split)), dtype="float32")
            targets = np.asarray(encode_targets(self.sets[split].labels, self.num_classes, self.binary))
            final[f"{split}_loss"] = round(float(loss(targets, outputs)), 6)
            for metric in metrics:
                metric.reset_state()
                metric.update_state(targets, outputs)
                final[f"{split}_{metric.name}"] = round(float(metric.result()), 6)
            probabilities[split] = _class_probabilities(outputs, self.binary)
        return final, probabilities


def _class_probabilities(outputs, binary: bool):
    import numpy as np

    outputs = np.asarray(outputs, dtype="float64")
    return np.concatenate([1.0 - outputs, outputs], axis=1) if binary else outputs


def _extract_splits(prepared: Prepared, cut, reporter: Reporter) -> tuple[dict, dict[str, Any]]:
    """Frozen features of every split, from the feature cache where it has them."""
    from tlcli import cache
    from tlcli.features import extract_features, extractor_for

    config, splits, model = prepared.config, prepared.splits, prepared.model
    channels = 1 if config.data.color_mode == "grayscale" else 3
    extractor = extractor_for(model, cut)
    base = model.get_layer(BASE_LAYER)
    frozen = base.layers if cut.kind == "pool" else base.layers[: cut.index + 1]
    describe = {
        "base": prepared.info.base_name,
        "args": config.base.args,
        "source_run": config.base.run,
        "weights": cache.weights_digest(frozen),
        "image_size": list(config.data.image_size),
        "channels": channels,
        "color_mode": config.data.color_mode,
        "preprocess": prepared.info.preprocess,
        "cut": cut.label,
        "pooling": config.head.pooling,
        "decoder": images.DECODER_VERSION,
    }
    store = cache.FeatureStore(cache.model_key(describe), describe) if config.cache == "auto" else None
    sets = {}
    for split, samples in splits.listed():
        with reporter.task(f"features {split}", len(samples)) as advance:
            flip = flip_mode(config) if split == "train" else None
            sets[split] = extract_features(samples, extractor, store, size=config.data.image_size, channels=channels, batch_size=64, on_bad_file=config.data.on_bad_file, progress=advance, flip=flip)
    hits = sum(s.hits for s in sets.values())
    extracted = sum(s.extracted for s in sets.values())
    seconds = sum(s.seconds for s in sets.values())
    per_image = store.seconds_per_image() if store is not None else None
    record = {"mode": "features", "cut": cut.label, "hits": hits, "extracted": extracted, "seconds": round(seconds, 3)}
    if store is not None:
        record |= {"key": store.key, "folder": str(store.folder), "saved_s": round(hits * per_image, 1) if per_image and hits else 0.0}
        store.finish(seconds / extracted if extracted else None)
    reporter.info(f"features ({cut.label}): {hits} from cache, {extracted} computed in {seconds:.1f} s" + (f", about {record['saved_s']:.0f} s saved" if record.get("saved_s") else ""))
    return sets, record


def _write_inputs(run_dir: Path, prepared: Prepared, keep_env: bool = False) -> None:
    config, splits = prepared.config, prepared.splits
    runs.write_text_atomic(run_dir / "config.yaml", dump_config(config))
    runs.write_json_atomic(run_dir / "labels.json", splits.class_names)
    runs.write_json_atomic(run_dir / "model.json", prepared.info.to_dict())
    for split, samples in splits.listed():
        runs.write_csv_atomic(run_dir / "splits" / f"{split}.csv", ["path", "relpath", "label"], ((s.path, s.relpath, splits.class_names[s.label]) for s in samples))
    if not (keep_env and (run_dir / "env.json").is_file()):  # a resume keeps the first session's environment
        runs.write_json_atomic(run_dir / "env.json", environment(prepared.plan, config.seed))


def _decode_splits(prepared: Prepared, reporter: Reporter) -> dict[str, DecodedImages]:
    config, splits = prepared.config, prepared.splits
    channels = 1 if config.data.color_mode == "grayscale" else 3
    decoded = {}
    for split, samples in splits.listed():
        with reporter.task(f"decoding {split}", len(samples)) as advance:
            decoded[split] = decode_samples(samples, config.data.image_size, channels, on_bad_file=config.data.on_bad_file, progress=advance)
    return decoded


def dataset_fingerprint(rows) -> str:
    """dataset.json's `fingerprint`: a hash of (split, relative path, content hash) of every readable image, per split by path."""
    fingerprint = hashlib.sha256()
    for split, relpath, content_hash in rows:
        fingerprint.update(f"{split}\0{relpath}\0{content_hash}\n".encode())
    return fingerprint.hexdigest()


def _write_dataset_record(run_dir: Path, splits: DataSplits, decoded: dict) -> None:
    rows = [
        (split, sample.relpath, content_hash)
        for split, listed in decoded.items()
        for sample, content_hash in sorted(zip(listed.samples, listed.content_hashes), key=lambda pair: pair[0].relpath)
    ]
    record = {
        "fingerprint": dataset_fingerprint(rows),
        "class_names": splits.class_names,
        "sources": splits.sources,
        "counts": {split: {name: int((d.labels == i).sum()) for i, name in enumerate(splits.class_names)} for split, d in decoded.items()},
        "ignored_files": [{"path": p, "reason": r} for p, r in splits.ignored],
    }
    runs.write_json_atomic(run_dir / "dataset.json", record)


def _resume_point(at, model, fitted, config: ExperimentConfig, extended: bool) -> dict[str, Any]:
    """What `_fit_phase` needs to continue a phase from checkpoint `at` (already loaded into `model`)."""
    from tlcli import checkpoint

    keeper_weights = None
    if config.train.restore_best and at.best_weights_file is not None and at.state.get("phase_best"):
        checkpoint.load_weights(model, at.best_weights_file)
        keeper_weights = fitted.get_weights()
        checkpoint.load_weights(model, at.path / "model.weights.npz")
    checkpoint.restore_optimizer(fitted, at.optimizer)
    stop_state = at.state.get("early_stopping")
    if stop_state and at.state.get("stopped_early") and extended:
        stop_state = {**stop_state, "wait": 0}  # an early-stopped phase given more epochs restarts its patience
    return {
        "done": at.phase_epoch,
        "resume_best": at.state.get("phase_best") or {},
        "resume_weights": keeper_weights,
        "stop_state": stop_state,
        "best_file": at.best_weights_file,
    }


def _fit_phase(model, phase: Phase, config, train_ds, val_ds, weights, offset: int, steps: int, history, reporter, run_dir: Path, *, full_model, phase_index: int, run_best: dict, validation=None, done: int = 0, resume_best=None, resume_weights=None, stop_state=None, best_file=None):
    import keras

    from tlcli.callbacks import BestWeights, KerasProgress, monitor_mode
    from tlcli.checkpoint import EpochCheckpoint, ResumableEarlyStopping, StopOnSigint
    from tlcli.fit_in_memory import fit_in_memory

    best_keeper = BestWeights(config.train.monitor, phase.name, offset, best=resume_best, weights=resume_weights, epochs_run=done)
    interrupt = StopOnSigint(reporter)
    callbacks = [
        interrupt,
        history.for_phase(phase.name, offset),
        best_keeper,
        KerasProgress(reporter, phase.name, offset, phase.epochs, steps),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False),
    ]
    early = None
    if validation is not None:
        callbacks.insert(0, validation)  # first: the others read the val_* figures it writes into the epoch logs
    if phase.early_stopping.patience:
        stop = phase.early_stopping
        early = ResumableEarlyStopping(monitor=stop.monitor, patience=stop.patience, min_delta=stop.min_delta, mode=monitor_mode(stop.monitor), resume_state=stop_state)
        callbacks.append(early)
    # Last: it records what the callbacks above decided this epoch (history row, best, early stop).
    callbacks.append(EpochCheckpoint(run_dir, full_model, phase.name, phase_index, offset, phase.epochs, history, best_keeper, early, run_best, best_file))
    reporter.phase_start(phase.name, phase.epochs, steps)
    try:
        with interrupt.installed():
            if isinstance(train_ds, ArrayBatches):
                fit_in_memory(model, train_ds, epochs=offset + phase.epochs, initial_epoch=offset + done, class_weight=weights, callbacks=callbacks)
            else:
                model.fit(train_ds, validation_data=val_ds, epochs=offset + phase.epochs, initial_epoch=offset + done, class_weight=weights, callbacks=callbacks, verbose=0, shuffle=False)  # the dataset shuffles itself
    finally:
        reporter.phase_end(phase.name)
    if config.train.restore_best and best_keeper.weights is not None:
        model.set_weights(best_keeper.weights)
    return best_keeper.epochs_run, best_keeper.best


# ----------------------------------------------------------------------------- compile pieces


def make_optimizer(phase: Phase, steps_per_epoch: int):
    import keras

    opt = phase.optimizer
    key = phase.name
    rate: Any = phase.learning_rate
    args = dict(opt.schedule_args)
    try:
        if opt.schedule == "cosine":
            rate = keras.optimizers.schedules.CosineDecay(phase.learning_rate, decay_steps=max(1, steps_per_epoch * phase.epochs), **args)
        elif opt.schedule == "exponential":
            rate = keras.optimizers.schedules.ExponentialDecay(phase.learning_rate, decay_steps=max(1, steps_per_epoch), decay_rate=args.pop("decay_rate", 0.9), **args)
    except TypeError as exc:
        raise ConfigError(f"{key}.schedule_args", f"not accepted by the {opt.schedule} schedule ({exc})") from None
    classes = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    try:
        return classes[opt.optimizer](learning_rate=rate, **opt.optimizer_args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}.optimizer_args", f"not accepted by {opt.optimizer} ({exc})") from None


def make_loss(config: ExperimentConfig):
    import keras

    if config.head.activation == "sigmoid":
        return keras.losses.BinaryCrossentropy(label_smoothing=config.train.label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=config.train.label_smoothing)


def make_metrics(config: ExperimentConfig, num_classes: int) -> list:
    import keras

    if config.head.activation == "sigmoid":
        return [keras.metrics.BinaryAccuracy(name="accuracy")]
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if config.train.top_k:
        k = min(config.train.top_k, num_classes)
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=k, name=top_k_name(k, num_classes)))
    return metrics


# ----------------------------------------------------------------------------- environment


def environment(plan: DevicePlan, seed: int) -> dict[str, Any]:
    import keras
    import numpy
    import tensorflow as tf

    from tlcli import __version__

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "tlcli": __version__,
        "devices": plan.to_dict(),
        "seed": seed,
        "git": git_state(Path.cwd()),
        "command": sys.argv,
    }


def git_state(folder: Path) -> dict[str, Any] | None:
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def peak_memory_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def _attach_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("tlcli")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
