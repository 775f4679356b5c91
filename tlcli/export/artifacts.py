"""Predicting and evaluating with an exported artifact, as with the run's own model.

`predict_artifact` runs a SavedModel folder, a `.tflite` or an `.onnx` file
(`ExportedModel`, its own runtime) through `tlcli.inference.predict`'s
decoding, batching and output: the same `PredictResult`, the same formats.
`evaluate_artifact` scores one on a run's splits (or `data`) with
`tlcli.evaluation.evaluate`'s full report, metrics.json recording which
artifact and format. Both hand the lower stages a `ModelSource`: this stage
ranks above inference and evaluation, so they never import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from tlcli.data.listing import collect_images
from tlcli.errors import UserError
from tlcli.evaluation.evaluate import check_source, evaluate
from tlcli.evaluation.report import Evaluation
from tlcli.export.formats import RUNTIMES
from tlcli.export.record import EXPORT_RECORD
from tlcli.export.runtime import ExportedModel
from tlcli.export.unknown import artifact_rule, probability_rows
from tlcli.inference.predict import ModelSource, PredictResult, check_predict_options, predict_with
from tlcli.progress import Reporter
from tlcli.runs.records import read_labels, read_model_info


def artifact_source(model: str | Path, *, threads: int | None = None, reporter: Reporter | None = None) -> ModelSource:
    """An exported artifact, loaded in its runtime, as the `ModelSource` prediction and evaluation take.

    Args:
        model: a SavedModel folder, a `.tflite` or `.onnx` file (with labels.txt / export.json beside it),
            or an export folder holding exactly one artifact.
        threads: CPU threads for the runtime (default: the runtime's own choice).

    Raises:
        UserError: not an artifact, an export folder holding several (name one), no class names beside it,
            an artifact that does not load, or the runtime not installed (one line, exit 2).
    """
    artifact = ExportedModel(model, threads=threads)
    if artifact.record is None:
        # Nothing tells a sigmoid-per-class output from a softmax one but export.json's task: say what is assumed.
        (reporter or Reporter()).warn(
            f"{artifact.path}: no {EXPORT_RECORD} beside it; taken as a single-label model of the classes in labels.txt"
        )
    unknown = artifact.record.unknown if artifact.record is not None else None
    if unknown and not unknown.get("rejects"):
        (reporter or Reporter()).warn(f"{artifact.path}: no rejection of unknown images here ({unknown.get('why')})")
    return source_of(artifact)


def source_of(artifact: ExportedModel) -> ModelSource:
    """`artifact` as a `ModelSource`: its classes, size, thresholds, its export's rule for unknown images (when its
    probabilities can apply it: `tlcli.export.unknown`), and what a result records of it."""
    run = artifact.record.run if artifact.record is not None else None
    rule = artifact_rule(Path(artifact.path).parent, artifact.record.unknown) if artifact.record is not None else None
    judging = {"unknown": rule, "outputs": probability_rows(artifact.predict_probabilities)} if rule else {}
    return ModelSource(
        run_dir=Path(run.dir) if run is not None and run.dir is not None else None,
        class_names=list(artifact.class_names),
        image_size=artifact.image_size,
        channels=artifact.channels,
        probabilities=artifact.predict_probabilities,
        thresholds=artifact.thresholds,
        separator=artifact.separator,
        described={
            "path": str(Path(artifact.path).absolute()),
            "format": artifact.format,
            "runtime": RUNTIMES[artifact.format],
        },
        views=tuple(artifact.record.tta_views) if artifact.record and artifact.record.tta_views else None,
        **judging,
    )


def predict_artifact(
    images: Sequence[str | Path],
    model: str | Path,
    *,
    top_k: int = 3,
    batch_size: int = 32,
    workers: int | None = None,
    threads: int | None = None,
    reporter: Reporter | None = None,
    on_model: Callable[[ModelSource], None] | None = None,
    accept: float | None = None,
    unknown: bool = True,
    tta: bool = False,
) -> PredictResult:
    """Predict the labels of image files with an exported artifact, exactly as `tlcli.predict` does with a run.

    Images are decoded as in training at the artifact's own size and channels; a multi-label artifact
    (export.json `task: multi_label`) gives every label at or above its threshold. The result's
    `model` is {"path", "format", "runtime"}; its `run_dir` is the run export.json names (None without one).

    Args:
        images: files, folders (searched recursively) and globs.
        model: see `artifact_source`.
        on_model: called with the loaded model before any image is decoded.
        accept, unknown: as `tlcli.predict`'s, for the export's rule for unknown images (`tlcli.export.unknown`).
        tta: average over the views the exported run trained with (export.json `tta_views`; the mirror alone for an
            export that does not record them).

    Raises:
        UserError: bad options, a path or glob matching nothing, or what `artifact_source` raises.
    """
    check_predict_options(top_k, batch_size)
    keys = collect_images(images)
    source = artifact_source(model, threads=threads, reporter=reporter).with_unknown(accept, unknown)
    if on_model is not None:
        on_model(source)
    if tta:
        if source.views is None:
            (reporter or Reporter()).warn(f"{model}: export.json records no views for --tta; averaging over the mirror")
        source = source.with_tta()
    return predict_with(source, keys, top_k=top_k, batch_size=batch_size, workers=workers, reporter=reporter)


def evaluate_artifact(
    run_dir: str | Path,
    model: str | Path,
    *,
    threads: int | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> Evaluation:
    """Evaluate an exported artifact on a run's files (its test or val split, or `data`) with the full report.

    The report is `tlcli.evaluate`'s, in a new `RUN_DIR/eval/<stamp>-<dataset>-<format>/`; metrics.json adds
    `model` ({"path", "format", "runtime"}). A multi-label run's decisions use the run's thresholds.

    Args:
        options: `tlcli.evaluate`'s keywords (data, split, top_k, batch_size, fail_under, fail_over, columns).

    Raises:
        UserError: an artifact of other classes, image size, channels or task than the run's, or what
            `artifact_source` and `tlcli.evaluate` raise.
    """
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    info = read_model_info(run_dir)
    artifact = ExportedModel(model, threads=threads)  # loaded once, checked against the run before any decoding
    # Without export.json the artifact cannot say: the run's task it is.
    if artifact.record is not None and artifact.task != info.task:
        raise UserError(
            f"{artifact.path}: a {artifact.task.replace('_', '-')} model, the run {run_dir} is "
            f"{info.task.replace('_', '-')}; evaluate it on its own run"
        )
    source = source_of(artifact)
    check_source(source, run_dir, read_labels(run_dir), info)  # before the warning below: a wrong model is one line
    if source.run_dir is not None and source.run_dir.resolve() != run_dir.resolve():
        reporter.warn(f"{artifact.path} was exported from {source.run_dir}; evaluating it on the files of {run_dir}")
    return evaluate(run_dir, source=source, reporter=reporter, **options)
