"""`export_run` and `verify_export`: a completed run's model as deployable artifacts, each checked against Keras.

An export is a new folder, `RUN_DIR/export/<YYYYMMDD-HHMMSS>-<formats>/` (or
`out`), built hidden and renamed whole: one artifact per format, `labels.txt`,
`export.json` and `MODEL_CARD.md` (the run's card with this export's formats).
After writing each artifact, its own runtime runs it on the run's validation
images and the parity gate compares it with the Keras model; a failed gate
still publishes the folder (its export.json records the failure) and
`ExportResult.raise_for_gates()` raises `GateFailed` (exit 3).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tlcli.errors import RunError, UserError
from tlcli.evaluation.model_card import refresh_model_card, write_model_card
from tlcli.export.convert import converting, inference_model, write_onnx, write_saved_model, write_tflite
from tlcli.export.formats import FILES, FORMATS, OPTIONS, TFLITE_FORMATS, Gate, gates_for, parse_formats, require_extras
from tlcli.export.images import SplitImages, load_split_images
from tlcli.export.parity import compare, gate_failures
from tlcli.export.record import (
    EXPORT_FORMAT_VERSION,
    EXPORT_RECORD,
    LABELS_FILE,
    ExportRecord,
    ExportResult,
    FormatResult,
    RunOrigin,
    artifact_bytes,
    file_sha256,
    read_export_record,
    versions,
)
from tlcli.export.runtime import ExportedModel, own_artifact
from tlcli.export.unknown import artifact_rule, copy_rule, exported_rule, unknown_record
from tlcli.inference.probabilities import predict_probabilities
from tlcli.inference.tta import tta_views
from tlcli.inference.unknown import read_unknown_rule
from tlcli.modeling.build import load_run_model
from tlcli.progress import Reporter
from tlcli.runs.atomic import fsync_dir, fsync_file, write_text_atomic
from tlcli.runs.folder import publish_stamped_dir, require_model, staged_dir
from tlcli.runs.records import (
    ModelInfo,
    RunRecord,
    now_iso,
    read_labels,
    read_model_info,
    read_run_config,
    read_run_record,
)

DEFAULT_CALIBRATION_IMAGES = 300
DEFAULT_PARITY_IMAGES = 500
BATCH = 32

GateSpec = Mapping[str, "Gate | Mapping[str, float]"]


def export_run(
    run_dir: str | Path,
    formats: Sequence[str] | None = None,
    *,
    out: str | Path | None = None,
    gates: GateSpec | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    parity_images: int = DEFAULT_PARITY_IMAGES,
    reporter: Reporter | None = None,
) -> ExportResult:
    """Export a completed run's model and check every artifact against it.

    Args:
        formats: saved_model, tflite, tflite-fp16, tflite-int8, onnx, all (default: saved_model and tflite).
        out: the export folder (must not exist, or be empty); default a new `RUN_DIR/export/<stamp>-<formats>/`.
        gates: per format, a `Gate` or the figures to change (`{"tflite-int8": {"min_agreement": 0.9}}`);
            the rest keep `DEFAULT_GATES`.
        calibration_images: training images (a fixed seeded subset) that calibrate int8.
        parity_images: validation images (a fixed seeded subset when there are more) for the parity gate.

    Returns:
        The published folder and each format's parity; call `raise_for_gates()` for exit 3 on a failed gate.

    Raises:
        RunError: not a completed run, or its folder is incomplete.
        UserError: a bad option, an `out` that is not empty, or a missing export extra (before any work).
        ExportError: a converter failed (exit 1; nothing is published).
    """
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    names = parse_formats(formats)
    _check_counts(calibration_images, parity_images)
    record = require_completed(run_dir)
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"out: {out} exists and is not empty; choose a new folder (an export never overwrites another)")
    require_extras(names)
    table = gates_for(names, _figures(gates))
    class_names, info = read_labels(run_dir), read_model_info(run_dir)
    task = _task(info)
    model = load_run_model(run_dir, class_names)
    parity = load_split_images(run_dir, "val", class_names, info, parity_images, reporter)
    calibration = (
        load_split_images(run_dir, "train", class_names, info, calibration_images, reporter)
        if "tflite-int8" in names
        else None
    )
    reference = predict_probabilities(model, parity.images, BATCH, info.binary)
    head = _record_head(run_dir, record, class_names, info, task, names, _calibration_record(calibration))
    run_rule = read_unknown_rule(run_dir) if not info.multi_label else None  # carried, and its decisions checked
    rule = exported_rule(run_rule)  # what the artifacts apply: the run's msp rule for a score they cannot compute
    head = dataclasses.replace(head, unknown=unknown_record(run_rule, rule))
    parent, label = (
        (out.absolute().parent, out.name)
        if out is not None
        else (run_dir / "export", "all" if names == FORMATS else "+".join(names))
    )
    with staged_dir(parent, label) as staged:
        write_text_atomic(staged / LABELS_FILE, "".join(f"{name}\n" for name in class_names))
        copy_rule(rule, staged)
        results = _write_and_check(
            inference_model(model), staged, names, table, calibration, parity, reference, info, reporter, rule
        )
        export_record = head.with_results(results, parity.to_dict())
        export_record.write(staged)
        write_model_card(run_dir, export_dir=staged)  # the run's card, with this export's formats and parity
        export_dir = _publish(staged, parent, label, out)
    refresh_model_card(run_dir)  # the run's own card lists its exports
    reporter.info(f"exported {', '.join(names)} to {export_dir}")
    return ExportResult(export_dir, run_dir, results, export_record)


def _calibration_record(calibration: SplitImages | None) -> dict[str, Any] | None:
    """The calibration images as export.json lists them, with their pixel range (anchored to 0-255 when short of it)."""
    if calibration is None:
        return None
    low, high = int(calibration.images.min()), int(calibration.images.max())
    return {**calibration.to_dict(), "pixel_range": [low, high], "range_anchored": (low, high) != (0, 255)}


def _check_counts(calibration_images: int, parity_images: int | None) -> None:
    if calibration_images < 1:
        raise UserError(f"calibration_images: must be at least 1, got {calibration_images}")
    if parity_images is not None and parity_images < 1:
        raise UserError(f"parity_images: must be at least 1, got {parity_images}")


def require_completed(run_dir: Path) -> RunRecord:
    """The run's record, when the run completed and has its model.

    Raises:
        RunError: not a run folder, or a run that is not completed (one line, exit 2).
    """
    record = read_run_record(run_dir)
    status = record.shown_status()
    if status != "completed":
        hint = "wait for it to finish" if status == "running" else f"resume it with `tlcli train --resume {run_dir}`"
        raise RunError(f"{run_dir}: the run is {status}, not completed; only a completed run can be exported ({hint})")
    require_model(run_dir)
    return record


def _task(info: ModelInfo) -> str:
    if info.task not in ("single_label", "multi_label"):
        raise UserError(f"tlcli export handles single-label and multi-label runs; this run's task is {info.task}")
    return info.task


def run_thresholds(info: ModelInfo, class_names: list[str]) -> tuple[float, ...] | None:
    """A multi-label run's per-class thresholds (0.5 where model.json has none), which its parity decisions use;
    else None."""
    return (info.thresholds or (0.5,) * len(class_names)) if info.multi_label else None


def _figures(gates: GateSpec | None) -> dict[str, dict[str, Any]]:
    """Gate arguments as per-figure changes: a whole `Gate` sets all three figures."""
    unknown = [name for name in (gates or {}) if name not in FORMATS]
    if unknown:
        raise UserError(f"gates: unknown format {unknown[0]!r}; expected one of {', '.join(FORMATS)}")
    figures = {
        name: (value.to_dict() if isinstance(value, Gate) else dict(value)) for name, value in (gates or {}).items()
    }
    for name, changes in figures.items():
        wrong = [key for key in changes if key not in OPTIONS]
        if wrong:
            raise UserError(f"gates[{name!r}]: unknown figure {wrong[0]!r}; expected {', '.join(OPTIONS)}")
    return figures


def _record_head(
    run_dir: Path,
    record: RunRecord,
    class_names: list[str],
    info: ModelInfo,
    task: str,
    names: Sequence[str],
    calibration: dict[str, Any] | None,
) -> ExportRecord:
    """export.json before any format is written: the run, its task and classes, the model, the versions."""
    thresholds = run_thresholds(info, class_names)
    return ExportRecord(
        format_version=EXPORT_FORMAT_VERSION,
        created=now_iso(),
        task=task,
        class_names=list(class_names),
        thresholds=dict(zip(class_names, thresholds)) if thresholds is not None else None,
        label_separator=_separator(run_dir) if thresholds is not None else None,
        labels_file=LABELS_FILE,
        run=RunOrigin(str(run_dir.resolve()), record.name, record.started, file_sha256(run_dir / "model.keras")),
        model={
            "base_name": info.base_name,
            "image_size": list(info.image_size),
            "channels": info.channels,
            "activation": info.activation,
            "input": "raw 0-255 pixels, float32 (uint8 for tflite-int8), batch of any size; "
            "preprocessing is inside the model",
            "output": _output_text(info),
        },
        versions=versions(list(names)),
        formats={},
        tta_views=list(tta_views(read_run_config(run_dir))),
        calibration_images=calibration,
    )


def _output_text(info: ModelInfo) -> str:
    if info.multi_label:
        return (
            "one probability per class (a sigmoid each), in labels.txt order; "
            "a label is given at or above its class's threshold (thresholds)"
        )
    return (
        "p of class 1 (a sigmoid unit; class 0 is 1 - p)"
        if info.binary
        else "class probabilities (softmax), in labels.txt order"
    )


def _separator(run_dir: Path) -> str:
    config = read_run_config(run_dir)
    return config.data.label_separator if config else "|"


def _write_and_check(
    model, staged: Path, names, table, calibration, parity, reference, info, reporter, rule=None
) -> list[FormatResult]:
    """Write each format into `staged` (the TFLite variants from the SavedModel) and run its parity check."""
    results = []
    saved_model = staged / FILES["saved_model"]
    if "saved_model" not in names and any(name in TFLITE_FORMATS for name in names):
        saved_model = staged / ".saved_model-for-tflite"  # the converters' input, not published
        with converting("saved_model"):
            write_saved_model(model, saved_model)
    for name in names:
        path = staged / FILES[name]
        reporter.info(f"{name}: writing {FILES[name]}")
        started = time.perf_counter()
        with converting(name):
            if name == "saved_model":
                write_saved_model(model, path)
            elif name == "onnx":
                write_onnx(model, path)
            else:
                write_tflite(saved_model, path, name, calibration.images if calibration is not None else None)
        seconds = round(time.perf_counter() - started, 3)
        result = check_format(name, path, table[name], parity, reference, info, rule)
        result.export_seconds = seconds
        reporter.info(_describe(result))
        results.append(result)
    if saved_model.name.startswith("."):
        shutil.rmtree(saved_model, ignore_errors=True)
    return results


def check_format(
    name: str, path: Path, gate: Gate, parity: SplitImages, reference: np.ndarray, info: ModelInfo, rule=None
) -> FormatResult:
    """Run one artifact with its own runtime on the parity images and judge it by `gate` and, with the run's `rule`
    for unknown images, by its accept/reject decisions (every problem is a failure line)."""
    result = FormatResult(name, path.name, artifact_bytes(path) if path.exists() else 0, gate)
    if not path.exists():
        result.failures.append(f"{name}: {path.name} is missing from the export folder")
        return result
    try:
        artifact = ExportedModel(path, format=name)
    except UserError as exc:
        result.failures.append(f"{name}: {str(exc).removeprefix(str(path) + ': ')}")
        return result
    result.tensors = artifact.describe()
    takes, expected = (*artifact.image_size, artifact.channels), (*info.image_size, info.channels)
    if takes != expected:
        result.failures.append(
            f"{name}: takes {'x'.join(map(str, takes))} images, the run's model {'x'.join(map(str, expected))} "
            "(an artifact of another model?)"
        )
        return result
    started = time.perf_counter()
    try:
        probabilities = artifact.predict_probabilities(parity.images, BATCH)
        thresholds = run_thresholds(info, artifact.class_names)
        seconds = time.perf_counter() - started
        result.parity = compare(reference, probabilities, parity.labels, seconds, thresholds, rule)
    except Exception as exc:  # a runtime refusing the artifact is what the check is for
        result.failures.append(
            f"{name}: fails to run ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
        )
        return result
    result.failures += gate_failures(name, result.parity, gate)
    return result


def _describe(result: FormatResult) -> str:
    if result.parity is None:
        return f"{result.format}: {'; '.join(result.failures)}"
    p = result.parity
    verdict = "passed" if result.passed else "FAILED"
    return (
        f"{result.format}: {result.bytes / 1e6:.2f} MB, {'per-label' if p.multi_label else 'top-1'} agreement "
        f"{p.agreement:.4f}, max |dp| {p.max_difference:.2g}, accuracy {p.accuracy:.4f} "
        f"(Keras {p.keras_accuracy:.4f}): {verdict}"
    )


def _publish(staged: Path, parent: Path, label: str, out: Path | None) -> Path:
    """Rename the complete staged folder into place: `out`, or the first free stamped name in `parent`."""
    for path in staged.rglob("*"):
        if path.is_file():
            fsync_file(path)  # the SavedModel's files too, not only the folder's top level
    if out is None:
        return publish_stamped_dir(staged, parent, label)
    try:
        os.rename(staged, out)  # onto an empty folder, or none: the export appears whole
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise UserError(f"out: {out} is no longer empty; choose a new folder") from None
        raise
    fsync_dir(parent)
    return out


def verify_export(
    export_dir: str | Path,
    *,
    run_dir: str | Path | None = None,
    formats: Sequence[str] | None = None,
    gates: GateSpec | None = None,
    parity_images: int | None = None,
    reporter: Reporter | None = None,
) -> ExportResult:
    """Re-run the parity gates of an existing export folder against its run (export.json names it); nothing is written.

    Args:
        run_dir: the run to check against (default: the one export.json names).
        formats: a subset of the folder's formats (default: all it holds).
        gates: changes to the gates export.json recorded, as for `export_run`.
        parity_images: default: as many as the export was checked on (the same seeded subset).

    Returns:
        The folder, each format's fresh parity and failures (`raise_for_gates()`: exit 3), labels.txt problems included.

    Raises:
        UserError: not an export folder, a format it does not hold, or a missing export extra.
        RunError: the run is gone or not completed.
    """
    reporter = reporter or Reporter()
    export_dir = Path(export_dir)
    record = read_export_record(export_dir)
    run_dir = Path(run_dir) if run_dir is not None else Path(record.run.dir)
    if not run_dir.is_dir():
        raise RunError(
            f"{export_dir / EXPORT_RECORD} names the run {run_dir}, which is not found; "
            f"pass the run: tlcli export RUN_DIR --verify {export_dir}"
        )
    require_completed(run_dir)
    names = _verified_formats(record, formats, export_dir)
    artifacts = {name: own_artifact(export_dir, record, name) for name in names}
    _check_counts(1, parity_images)
    require_extras(names)
    recorded = {name: record.gate(name) for name in names}
    table = gates_for(names, _figures(gates), base=recorded)
    class_names, info = read_labels(run_dir), read_model_info(run_dir)
    problems, warnings = _folder_problems(export_dir, record, run_dir, class_names)
    for line in warnings:
        reporter.warn(line)
    model = load_run_model(run_dir, class_names)
    limit = parity_images or record.parity_requested() or DEFAULT_PARITY_IMAGES
    parity = load_split_images(run_dir, "val", class_names, info, limit, reporter)
    reference = predict_probabilities(model, parity.images, BATCH, info.binary)
    results, rule = [], artifact_rule(export_dir, record.unknown)
    for name in names:
        result = check_format(name, artifacts[name], table[name], parity, reference, info, rule)
        result.export_seconds = record.export_seconds(name)
        reporter.info(_describe(result))
        results.append(result)
    checked = dataclasses.replace(
        record.with_results(results, parity.to_dict()), verified={"at": now_iso(), "run_dir": str(run_dir.resolve())}
    )
    return ExportResult(export_dir, run_dir, results, checked, verified=True, problems=problems, warnings=warnings)


def _verified_formats(record: ExportRecord, formats: Sequence[str] | None, export_dir: Path) -> tuple[str, ...]:
    held = tuple(name for name in FORMATS if name in record.formats)
    if not formats:
        return held
    wanted = parse_formats(formats)
    missing = [name for name in wanted if name not in held]
    if missing:
        raise UserError(f"formats: {export_dir} holds no {missing[0]} artifact (it holds {', '.join(held)})")
    return wanted


def _folder_problems(
    export_dir: Path, record: ExportRecord, run_dir: Path, class_names: list[str]
) -> tuple[list[str], list[str]]:
    """(failures, warnings) of the folder as a whole: labels.txt against the run's classes; a model.keras changed
    since."""
    problems, warnings = [], []
    labels = export_dir / LABELS_FILE
    written = [line for line in labels.read_text(encoding="utf-8").splitlines() if line] if labels.is_file() else None
    if written != class_names:
        problems.append(
            f"{LABELS_FILE}: {'missing' if written is None else 'lists ' + ', '.join(written)}; "
            f"the run's classes are {', '.join(class_names)}"
        )
    if record.class_names != class_names:
        problems.append(f"{EXPORT_RECORD}: class_names differ from the run's labels.json ({', '.join(class_names)})")
    thresholds = run_thresholds(read_model_info(run_dir), class_names)
    if thresholds is not None and record.thresholds != dict(zip(class_names, thresholds)):
        problems.append(
            f"{EXPORT_RECORD}: thresholds differ from the run's model.json "
            f"({', '.join(f'{n} {t:g}' for n, t in zip(class_names, thresholds))})"
        )
    recorded = record.run.model_sha256 if record.run is not None else None
    if recorded and recorded != file_sha256(run_dir / "model.keras"):
        warnings.append(
            f"{run_dir / 'model.keras'} changed since this export (resumed or replaced); "
            "the check compares the artifacts with the model as it is now"
        )
    return problems, warnings
