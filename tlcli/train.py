"""`train`: config -> data -> model -> two phases of fit -> a complete run folder.

Everything that can be wrong with the user's input (config, data folders,
base name, weights, layer names, optimizer arguments) is checked in
`prepare` before a run folder exists, so a user error leaves no trace. Once
the run folder exists, any failure marks it `failed` with the reason, Ctrl-C
marks it `interrupted`, and earlier runs are never touched.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcli import runs
from tlcli.config import EarlyStoppingConfig, ExperimentConfig, OptimizerConfig, dump_config, load_config
from tlcli.data import DataSplits, DecodedImages, check_class_weight, class_weights, decode_samples, discover_splits, make_dataset
from tlcli.devices import DevicePlan, apply_device_plan, enable_determinism, plan_devices, visible_gpus
from tlcli.errors import ConfigError, TlcliError, TrainingError
from tlcli.model import BASE_LAYER, ModelInfo, SourceBase, _first_trainable_index, build_model, set_base_trainable, trainable_spec
from tlcli.progress import Reporter

FEATURE_STEPS_PER_EXECUTION = 16  # measured: W1's head phase 4.4 s -> see benchmarks/RESULTS.md
DECODER_VERSION = 1  # bump when decoding or resizing changes the pixels (invalidates cached features)

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

    Returns:
        The run folder and its metrics.

    Raises:
        ConfigError, DataError: bad input; nothing was written.
        TrainingError: training failed; the run folder is marked failed.
        KeyboardInterrupt: the run folder is marked interrupted.
    """
    started = time.perf_counter() if started is None else started
    reporter = reporter or Reporter()
    prepared = prepare(config, overrides=overrides, runs_dir=runs_dir, device=device, reporter=reporter)
    run_dir = runs.create_run_dir(prepared.runs_dir, prepared.config.name)
    file_log = _attach_log_file(run_dir / "train.log")
    try:
        runs.start_run(run_dir, prepared.config.name)
        reporter.info(f"run folder: {run_dir}")
        result = _train_in_run(prepared, run_dir, reporter, started, strict=strict)
        runs.finish_run(run_dir, "completed")
        return result
    except KeyboardInterrupt:
        runs.finish_run(run_dir, "interrupted", "interrupted by Ctrl-C")
        raise
    except TlcliError as exc:
        runs.finish_run(run_dir, "failed", str(exc))
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log.exception("training failed")
        runs.finish_run(run_dir, "failed", reason)
        raise TrainingError(f"training failed ({reason}); the run folder {run_dir} is marked failed, see its train.log") from exc
    finally:
        logging.getLogger("tlcli").removeHandler(file_log)
        file_log.close()


def validate(config: ExperimentConfig | str | Path, *, overrides=(), runs_dir=None, build: bool = True) -> Prepared | DataSplits:
    """Check a config and its data folders without training.

    With `build`, also builds the model (checks the base name, image size,
    weights and layer names). Returns what was prepared.
    """
    if not build:
        config = _as_config(config, overrides)
        return discover_splits(config.data, config.seed)
    return prepare(config, overrides=overrides, runs_dir=runs_dir, reporter=Reporter())


def prepare(config, *, overrides=(), runs_dir=None, device=None, reporter: Reporter) -> Prepared:
    config = _as_config(config, overrides)
    if device is not None:
        config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"device": device})})
    runs_dir = Path(runs_dir) if runs_dir is not None else config.output.runs_dir
    source_run = runs.resolve_run(config.base.run, runs_dir) if config.base.run else None
    config = resolve_paths(config, runs_dir, source_run)
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
        _first_trainable_index(base_layers, phase.trainable, phase.trainable_key)
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


def _train_in_run(prepared: Prepared, run_dir: Path, reporter: Reporter, started: float, strict: bool = False) -> TrainResult:
    config, splits, model, info = prepared.config, prepared.splits, prepared.model, prepared.info
    timings: dict[str, float] = {"startup": round(time.perf_counter() - started, 3)}
    _write_inputs(run_dir, prepared)
    phases = phases_of(config)
    cuts = _plan_cuts(model, config, phases, reporter)

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

    from tlcli.callbacks import HistoryRecorder, is_better

    clock = time.perf_counter()
    history = HistoryRecorder(run_dir / "history.csv")
    best: dict[str, Any] = {}
    epoch_offset = 0
    with prepared.strategy.scope():
        for phase, cut in zip(phases, cuts):
            trainable = set_base_trainable(model, phase.trainable, pretrained=info.pretrained, key=phase.trainable_key)
            reporter.info(f"phase {phase.name}: {phase.epochs} epochs, {trainable} trainable base layers, learning rate {phase.learning_rate:g}")
            fitted, train_ds, val_ds = inputs.for_phase(cut)
            # On features a step is tiny, so Keras's per-step dispatch dominates: run several per call.
            per_call = FEATURE_STEPS_PER_EXECUTION if cut is not None else 1
            fitted.compile(optimizer=make_optimizer(phase, steps), loss=make_loss(config), metrics=make_metrics(config, num_classes), steps_per_execution=per_call)
            ran, phase_best = _fit_phase(fitted, phase, config, train_ds, val_ds, weights, epoch_offset, steps, history, reporter, run_dir)
            if is_better(phase_best, best, config.train.monitor):
                best = phase_best
            epoch_offset += ran
        final, probabilities = inputs.evaluate(cuts[-1], make_loss(config), make_metrics(config, num_classes))
    timings["train"] = round(time.perf_counter() - clock, 3)

    clock = time.perf_counter()
    runs.save_model_atomic(model, run_dir / "model.keras")
    timings["save"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    from tlcli.evaluate import write_training_report  # the final validation report and curves.png

    write_training_report(run_dir, model, sets["val"], splits.class_names, binary=binary, top_k=config.train.top_k, batch_size=batch, reporter=reporter, probabilities=probabilities.get("val"))
    timings["report"] = round(time.perf_counter() - clock, 3)
    trained_images = len(sets["train"]) * epoch_offset
    metrics = {
        "final": final,
        "best": best,
        "epochs": {"total": epoch_offset, **history.epochs_per_phase()},
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


def _plan_cuts(model, config: ExperimentConfig, phases: list[Phase], reporter: Reporter) -> list:
    """Per phase, where its frozen part ends (None: it trains the full model on images)."""
    from tlcli.features import find_cut

    cuts = []
    for phase in phases:
        if config.cache == "off":
            cut, why = None, "cache: off"
        elif config.data.augment.enabled:
            cut, why = None, "random augmentation changes every epoch"
        else:
            cut, why = find_cut(model, phase.trainable, phase.trainable_key)
        reporter.info(f"phase {phase.name}: " + (f"training on cached features ({why})" if cut else f"training the full model on decoded images ({why})"))
        cuts.append(cut)
    return cuts


def _deepest(cuts: list):
    """The cut nearest the input: every other phase's features derive from its output."""
    layer_cuts = [cut for cut in cuts if cut.kind == "layer"]
    return min(layer_cuts, key=lambda cut: cut.index) if layer_cuts else cuts[0]


class PhaseInputs:
    """What each phase fits: the full model on images, or its trainable part on features."""

    def __init__(self, model, sets: dict, extraction_cut, config: ExperimentConfig, num_classes: int, binary: bool):
        self.model, self.sets, self.extraction_cut, self.config = model, sets, extraction_cut, config
        self.num_classes, self.binary = num_classes, binary
        self._features: dict[tuple[str, str], Any] = {}

    def features(self, cut, split: str):
        from tlcli.features import bridge, extractor_for, run_in_batches

        key = (cut.label, split)
        if key not in self._features:
            source = self.sets[split]
            if self.extraction_cut is None:  # images are decoded: one inference pass per cut
                extractor = extractor_for(self.model, cut)
                self._features[key] = run_in_batches(extractor, source.images, cast="float32")
            elif cut == self.extraction_cut:
                self._features[key] = source.features
            else:  # the head-first phase of a run extracted below the fine-tuning cut
                self._features[key] = run_in_batches(bridge(self.model, self.extraction_cut), source.features)
        return self._features[key]

    def datasets(self, cut, split: str, shuffle: bool):
        from tlcli.features import features_dataset

        batch = self.config.data.batch_size
        if cut is None:
            return make_dataset(self.sets[split], batch_size=batch, num_classes=self.num_classes, binary=self.binary, shuffle=shuffle, seed=self.config.seed)
        return features_dataset(self.features(cut, split), self.sets[split].labels, batch_size=batch, num_classes=self.num_classes, binary=self.binary, shuffle=shuffle, seed=self.config.seed)

    def for_phase(self, cut):
        from tlcli.features import trainable_part

        fitted = self.model if cut is None else trainable_part(self.model, cut)
        return fitted, self.datasets(cut, "train", self.config.data.shuffle), self.datasets(cut, "val", False)

    def evaluate(self, cut, loss, metrics) -> tuple[dict[str, float], dict[str, Any]]:
        """Final loss/metrics and class probabilities on val (and test), with the final weights.

        One inference pass per split; loss and metrics come from its outputs,
        so the saved model is not recompiled for evaluation.
        """
        import numpy as np

        from tlcli.data import encode_targets
        from tlcli.features import trainable_part

        fitted = self.model if cut is None else trainable_part(self.model, cut)
        final: dict[str, float] = {}
        probabilities: dict[str, Any] = {}
        for split in ("val", "test"):
            if split not in self.sets or not len(self.sets[split]):
                continue
            outputs = np.asarray(fitted.predict(self.datasets(cut, split, False), verbose=0), dtype="float32")
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
        "decoder": DECODER_VERSION,
    }
    store = cache.FeatureStore(cache.model_key(describe), describe) if config.cache == "auto" else None
    sets = {}
    for split in ("train", "val", "test"):
        samples = getattr(splits, split)
        if not samples and split == "test":
            continue
        with reporter.task(f"features {split}", len(samples)) as advance:
            sets[split] = extract_features(samples, extractor, store, size=config.data.image_size, channels=channels, batch_size=64, on_bad_file=config.data.on_bad_file, progress=advance)
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


def _write_inputs(run_dir: Path, prepared: Prepared) -> None:
    config, splits = prepared.config, prepared.splits
    runs.write_text_atomic(run_dir / "config.yaml", dump_config(config))
    runs.write_json_atomic(run_dir / "labels.json", splits.class_names)
    runs.write_json_atomic(run_dir / "model.json", prepared.info.to_dict())
    for split in ("train", "val", "test"):
        samples = getattr(splits, split)
        if samples or split != "test":
            runs.write_csv_atomic(run_dir / "splits" / f"{split}.csv", ["path", "relpath", "label"], ((s.path, s.relpath, splits.class_names[s.label]) for s in samples))
    runs.write_json_atomic(run_dir / "env.json", environment(prepared.plan, config.seed))


def _decode_splits(prepared: Prepared, reporter: Reporter) -> dict[str, DecodedImages]:
    config, splits = prepared.config, prepared.splits
    channels = 1 if config.data.color_mode == "grayscale" else 3
    decoded = {}
    for split in ("train", "val", "test"):
        samples = getattr(splits, split)
        if not samples and split == "test":
            continue
        with reporter.task(f"decoding {split}", len(samples)) as advance:
            decoded[split] = decode_samples(samples, config.data.image_size, channels, on_bad_file=config.data.on_bad_file, progress=advance)
    return decoded


def _write_dataset_record(run_dir: Path, splits: DataSplits, decoded: dict) -> None:
    fingerprint = hashlib.sha256()
    for split, images in decoded.items():
        for sample, content_hash in sorted(zip(images.samples, images.content_hashes), key=lambda pair: pair[0].relpath):
            fingerprint.update(f"{split}\0{sample.relpath}\0{content_hash}\n".encode())
    record = {
        "fingerprint": fingerprint.hexdigest(),
        "class_names": splits.class_names,
        "sources": splits.sources,
        "counts": {split: {name: int((d.labels == i).sum()) for i, name in enumerate(splits.class_names)} for split, d in decoded.items()},
        "ignored_files": [{"path": p, "reason": r} for p, r in splits.ignored],
    }
    runs.write_json_atomic(run_dir / "dataset.json", record)


def _fit_phase(model, phase: Phase, config, train_ds, val_ds, weights, offset: int, steps: int, history, reporter, run_dir: Path):
    import keras

    from tlcli.callbacks import BestWeights, KerasProgress, monitor_mode

    best_keeper = BestWeights(config.train.monitor, phase.name, offset)
    callbacks = [
        history.for_phase(phase.name, offset),
        best_keeper,
        KerasProgress(reporter, phase.name, offset, phase.epochs, steps),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False),
    ]
    if phase.early_stopping.patience:
        stop = phase.early_stopping
        callbacks.append(keras.callbacks.EarlyStopping(monitor=stop.monitor, patience=stop.patience, min_delta=stop.min_delta, mode=monitor_mode(stop.monitor)))
    reporter.phase_start(phase.name, phase.epochs, steps)
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=offset + phase.epochs, initial_epoch=offset, class_weight=weights, callbacks=callbacks, verbose=0, shuffle=False)  # the dataset shuffles itself
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
