"""`evaluate`: a run's model on its recorded validation/test files, or on any folder.

By default the files are exactly those the run recorded in `splits/test.csv`
(when the run had a test set) or `splits/val.csv`, decoded the same way as
in training, so the accuracy matches what training reported for them.
`data=DIR` evaluates on any folder of class folders named like the run's
classes. The report is written by `tlcli.evaluation.report.write_evaluation`
into a new `RUN_DIR/eval/<stamp>-<dataset>/` folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tlcli.config.schema import DataConfig
from tlcli.data.decoded import decode_samples
from tlcli.data.images import DEFAULT_MAX_BYTES
from tlcli.data.listing import list_class_files
from tlcli.data.manifest import is_manifest, read_manifest
from tlcli.data.splits import Sample
from tlcli.errors import DataError, RunError, UserError
from tlcli.evaluation.gates import check_gate_keys, parse_gates
from tlcli.evaluation.metrics import metric_keys
from tlcli.evaluation.model_card import refresh_model_card
from tlcli.evaluation.multilabel import multilabel_metric_keys
from tlcli.evaluation.report import DEFAULT_TOP_K, EvalSpec, Evaluation, Scored, write_evaluation
from tlcli.evaluation.unknown_report import judged_probabilities
from tlcli.inference.explain import feature_layer, grad_cam
from tlcli.inference.predict import ModelSource, run_source
from tlcli.progress import Reporter
from tlcli.runs.folder import require_model
from tlcli.runs.provenance import labelled_split, read_split
from tlcli.runs.records import read_labels, read_model_info, read_run_config, read_run_record


def evaluate(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    top_k: int | None = None,
    batch_size: int = 32,
    fail_under: Sequence[str] = (),
    fail_over: Sequence[str] = (),
    reporter: Reporter | None = None,
    columns: dict[str, str] | None = None,
    source: ModelSource | None = None,
    tta: bool = False,
    explain: bool = True,
    explain_layer: str | None = None,
    unknown_dir: str | Path | None = None,
    accept: float | None = None,
    unknown: bool = True,
) -> Evaluation:
    """Evaluate a run's model (or another model of the run, `source`) and write a new evaluation folder in the run.

    Args:
        run_dir: the run folder.
        data: a folder of class folders, or a CSV manifest (every usable row), instead of the run's own split.
        columns: the manifest's column names, as `data.columns`.
        split: `val` or `test` (default: test when the run had one, else val).
        top_k: k of the top-k accuracy (default: the run's `train.top_k`, else 5; capped at the number of classes).
        batch_size: images per model call.
        fail_under: `METRIC=NUMBER` quality gates, failing when the metric is below NUMBER; checked by name before any
            work, and against the results in `Evaluation.gate_failures`.
        fail_over: the same, failing when the metric is above NUMBER (lower is better: `loss`, `calibration.ece`).
        reporter: receives progress.
        source: a model to evaluate instead of model.keras (an exported artifact, `tlcli.export.evaluate_artifact`);
            its `described` becomes metrics.json's `model`, and its format ends the folder's name.
        tta: average the probabilities over the views the run trained with (`tlcli.inference.tta`); recorded in
            metrics.json's `tta`, the folder's name ends with `-tta`.
        explain, explain_layer: write `mistakes_gradcam.png` (`tlcli.evaluation.gallery`; model.keras only, not a
            `source`), Grad-CAM on base layer `explain_layer` (default: the last feature map larger than 1x1).
        unknown_dir, accept, unknown: images of no class, scored by the run's rule (at `accept`, else its own;
            `unknown` False: no rule, as before) into metrics.json's `unknown` (`tlcli.evaluation.unknown_report`).

    Returns:
        The evaluation folder and its metrics (call `raise_for_gates()` to turn failed gates into `GateFailed`, exit 3).

    Raises:
        RunError: not a run folder, or no model / labels / split file.
        DataError: `data` is missing, empty, or has a class the run does not know.
        UserError: bad option, or a gate naming an unknown metric.
    """
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    read_run_record(run_dir)
    require_model(run_dir)
    class_names = read_labels(run_dir)
    info = read_model_info(run_dir)
    _check_counts(batch_size, top_k)
    config = read_run_config(run_dir)
    k = top_k or (config.train.top_k if config else 0) or DEFAULT_TOP_K
    gates = parse_gates(fail_under) + parse_gates(fail_over, over=True)
    check_gate_keys(gates, multilabel_metric_keys(class_names) if info.multi_label else metric_keys(class_names, k))
    labelling = _Labelling(class_names, info.multi_label, config.data if config else None, columns)

    name, samples, origin, bad_rows = _what_to_evaluate(run_dir, data, split, labelling)
    # Before any work: a damaged run fails in one line.
    described = source.described if source is not None else None
    judging = (accept, unknown and not info.multi_label)
    source, heatmaps_of = _model_of(run_dir, class_names, info, source, tta, (explain, explain_layer), judging)
    views = source.views if tta else ()
    reporter.info(f"evaluating {_model_name(described, run_dir)} on {len(samples)} images ({origin})")
    decoded, skipped = _decode(samples, bad_rows, len(class_names), info, config, origin, reporter)
    probabilities, judged = judged_probabilities(source, decoded.images, decoded.labels, batch_size, unknown_dir)
    paths, own = [s.path for s in decoded.samples], data is None and described is None and not views
    found = (probabilities, decoded.labels, paths, class_names, decoded.images, info.thresholds, labelling.separator)
    scored = Scored(*found, heatmaps_of)
    html = config.output.report if config else True  # report.html, unless the run's config turned it off
    spec = EvalSpec(name, origin, skipped, k, gates, model=described, tta=views, html=html, unknown=judged)
    return _on_card(write_evaluation(run_dir, scored, spec), run_dir, own)


def _check_counts(batch_size: int, top_k: int | None) -> None:
    if batch_size < 1:
        raise UserError(f"batch_size: must be at least 1, got {batch_size}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k: must be at least 1, got {top_k}")


def _on_card(evaluation: Evaluation, run_dir: Path, own_split: bool) -> Evaluation:
    """The run's model card shows the newest evaluation of its own model.keras on its own split: refresh it (when
    the run has one) after such an evaluation."""
    if own_split:
        refresh_model_card(run_dir)
    return evaluation


def _model_of(
    run_dir: Path,
    class_names: list[str],
    info,
    source: ModelSource | None,
    tta: bool = False,
    explaining: tuple[bool, str | None] = (False, None),
    judging: tuple[float | None, bool] = (None, True),
) -> tuple[ModelSource, Any]:
    """`source`, else the run's model.keras (loaded here), with its rule for unknown images at `judging` = (accept,
    enabled), averaged over its views with `tta` (test-time augmentation); and, with `explaining` = (explain, layer)
    and model.keras, its Grad-CAM as `(pixels, class indices) -> heatmaps` (else None; a `layer` the base lacks
    fails here, before any work)."""
    heatmaps, (explain, layer), (accept, unknown) = None, explaining, judging
    if source is not None:
        if layer is not None:
            raise UserError("explain_layer: an exported artifact has no Grad-CAM here; evaluate the run's model.keras")
        check_source(source, run_dir, class_names, info)
    else:
        source = run_source(run_dir, unknown)
        model = source.model
        if explain:
            feature_layer(model, layer)
            heatmaps = lambda pixels, classes: grad_cam(model, pixels, classes, layer)  # noqa: E731
    source = source.with_unknown(accept, unknown)
    return (source.with_tta() if tta else source), heatmaps


def _model_name(described: dict[str, Any] | None, run_dir: Path) -> str:
    return f"{described.get('path')} ({described.get('format')})" if described else str(run_dir)


def check_source(source: ModelSource, run_dir: Path, class_names: list[str], info) -> None:
    """Raises UserError unless `source` takes the run's images (size, channels) and gives its classes, in order:
    the files are decoded at the run's size and scored against its labels, so another model's answers would be noise."""
    takes, expected = (
        (tuple(source.image_size), source.channels, list(source.class_names)),
        (tuple(info.image_size), info.channels, list(class_names)),
    )
    if takes != expected:
        what = (source.described or {}).get("path", "the model")

        def shape(t) -> str:
            return f"{t[0][0]}x{t[0][1]}x{t[1]} images, classes {', '.join(t[2])}"

        raise UserError(f"{what}: takes {shape(takes)}; the run {run_dir}: {shape(expected)}")


def _decode(
    samples: list[Sample],
    bad_rows: list[dict[str, str]],
    num_classes: int,
    info,
    config,
    source: str,
    reporter: Reporter,
):
    """The images decoded as in training, and the files that could not be used: a manifest's bad rows, then undecodable
    files (warned about once).

    Raises:
        DataError: none could be decoded.
    """
    decoded = decode_as_trained(samples, info, config, num_classes, reporter)
    skipped = bad_rows + [{"path": s.path, "reason": s.reason} for s in decoded.skipped]
    if skipped:
        reporter.warn(
            f"skipped {len(skipped)} unreadable file{'s' if len(skipped) > 1 else ''} (listed in "
            f"metrics.json), e.g. {skipped[0]['path']}: {skipped[0]['reason']}"
        )
    if not len(decoded):
        raise DataError(f"{source}: none of the {len(samples)} images could be decoded; nothing to evaluate")
    return decoded, skipped


def decode_as_trained(
    samples: list[Sample], info, config, num_classes: int, reporter: Reporter, task: str = "decoding"
):
    """The samples decoded as the run trained (its size, channels and `data.max_file_mb`), the unreadable skipped."""
    with reporter.task(task, len(samples)) as advance:
        return decode_samples(
            samples,
            info.image_size,
            info.channels,
            on_bad_file="skip",
            progress=advance,
            max_bytes=config.data.max_bytes if config else DEFAULT_MAX_BYTES,
            num_classes=num_classes,
        )


@dataclass(frozen=True)
class _Labelling:
    """How files to evaluate are labelled: the run's classes, and for a multi-label run its manifest settings."""

    class_names: list[str]
    multi_label: bool
    data: DataConfig | None  # the run's data section (None for a run without config.yaml)
    columns: dict[str, str] | None  # --column overrides for a manifest

    @property
    def separator(self) -> str:
        return self.data.label_separator if self.data is not None else "|"


def _what_to_evaluate(
    run_dir: Path, data: str | Path | None, split: str | None, labelling: _Labelling
) -> tuple[str, list[Sample], str, list[dict[str, str]]]:
    """(dataset name, its files, where they came from, bad manifest rows): `data` (a folder or a manifest), else the
    run's `split`
    (default test when it had one, else val)."""
    class_names = labelling.class_names
    if data is not None:
        if split is not None:
            raise UserError("--split and --data exclude each other: --split picks one of the run's own splits")
        data = Path(data)
        if is_manifest(data):
            columns = ({} if labelling.data is None else labelling.data.columns.model_dump()) | (
                labelling.columns or {}
            )  # the run's column names, unless --column
            samples, bad = manifest_samples(data, class_names, columns, _manifest_settings(labelling))
            return data.stem, samples, str(data.absolute()), bad
        if labelling.multi_label:
            raise UserError(
                f"--data {data}: class folders give each image one label; a multi-label run evaluates on a "
                "manifest (.csv/.tsv) listing each image's labels"
            )
        return data.absolute().name, folder_samples(data, class_names)[0], str(data.absolute()), []
    name = split or ("test" if read_split(run_dir, "test") else "val")
    return (
        name,
        split_samples(run_dir, name, class_names, separator=labelling.separator if labelling.multi_label else None),
        f"splits/{name}.csv",
        [],
    )


def _manifest_settings(labelling: _Labelling) -> dict:
    """A multi-label run reads a manifest's labels as it did in training (separator, label columns)."""
    if not labelling.multi_label or labelling.data is None:
        return {"multi_label": labelling.multi_label}
    return {
        "multi_label": True,
        "label_separator": labelling.data.label_separator,
        "label_columns": labelling.data.label_columns,
    }


def split_samples(run_dir: Path, split: str, class_names: list[str], separator: str | None = None) -> list[Sample]:
    """The files of `splits/<split>.csv` (columns path, relpath, label = class name; multi-label runs
    (`separator` given): the labels joined by it, empty for an image without labels).

    Raises:
        UserError: `split` is not val or test.
        RunError: the file is missing, or names a class the run does not have.
    """
    if split not in ("val", "test"):
        raise UserError(f"split: expected val or test, got {split!r}")
    samples = labelled_split(run_dir, split, class_names, separator)
    if samples is None:
        hint = "; the run had no test set, use --split val" if split == "test" else "; the run folder is incomplete"
        raise RunError(f"{run_dir}: no splits/{split}.csv{hint}")
    if not samples:
        raise RunError(f"{run_dir}: splits/{split}.csv lists no files")
    return samples


def folder_samples(folder: Path, class_names: list[str]) -> tuple[list[Sample], list[tuple[str, str]]]:
    """The images of a class-per-subfolder folder, labelled by the run's class names.

    A class of the run may be absent from the folder (its support is 0).

    Raises:
        DataError: the folder is missing, has no images, or a class folder the run does not know.
    """
    if not folder.is_dir():
        raise DataError(f"data: folder not found: {folder}")
    ignored: list[tuple[str, str]] = []
    files = list_class_files(folder, "--data", ignored)
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [name for name in files if name not in index]
    if unknown:
        raise DataError(
            f"--data: class folder '{unknown[0]}' in {folder} is not a class of the run "
            f"({', '.join(class_names)}); rename or remove it"
        )
    samples = [Sample(path, index[name], rel) for name in sorted(files) for path, rel in files[name]]
    if not samples:
        raise DataError(f"data: no images in class folders under {folder}")
    return samples, ignored


def manifest_samples(
    manifest: Path, class_names: list[str], columns: dict[str, str] | None = None, settings: dict | None = None
) -> tuple[list[Sample], list[dict[str, str]]]:
    """Every usable row of a manifest (whatever its split), labelled by the run's class names; and its bad rows.

    `settings`: more `data` keys to read it with (a multi-label run's `multi_label`, `label_separator`,
    `label_columns`).

    Raises:
        DataError: what reading the manifest raises, or a label the run does not know (its row named).
    """
    settings = settings or {}
    read = read_manifest(DataConfig(manifest=manifest, columns=columns or {}, **settings), key="--data")
    index = {name: i for i, name in enumerate(class_names)}
    unknown = next(((row, label) for row in read.rows for label in row.labels if label not in index), None)
    if unknown is not None:
        raise DataError(
            f"--data: row {unknown[0].row} of {manifest} labels {unknown[0].written} {unknown[1]!r}, not a "
            f"class of the run ({', '.join(class_names)})"
        )
    multi = settings.get("multi_label", False)
    samples = [
        Sample(
            row.path, tuple(sorted(index[n] for n in row.labels)) if multi else index[row.label], row.written, row.row
        )
        for row in read.rows
    ]
    if not samples:
        raise DataError(f"data: no usable rows in {manifest}")
    return samples, [{"path": b.path, "reason": f"row {b.row}: {b.problem}"} for b in read.bad]


def describe(evaluation: Evaluation) -> dict[str, Any]:
    """The headline figures, in display order."""
    m = evaluation.metrics
    if m.get("task") == "multi_label":
        return {
            "mAP": m["map"],
            "micro F1": m["micro_avg"]["f1"],
            "macro F1": m["macro_avg"]["f1"],
            "subset accuracy": m["subset_accuracy"],
            "Hamming loss": m["hamming_loss"],
            "loss": m["loss"],
        }
    top_key = next(key for key in m if key.startswith("top") and key.endswith("_accuracy"))
    return {
        "accuracy": m["accuracy"],
        top_key: m[top_key],
        "loss": m["loss"],
        "macro F1": m["macro_avg"]["f1"],
        "weighted F1": m["weighted_avg"]["f1"],
        "calibration error (ECE)": m["calibration"]["ece"],
    }


def describe_intervals(evaluation: Evaluation) -> dict[str, list[float]]:
    """The 95% intervals of `describe`'s figures that have one, by the same labels (none for an evaluation written
    before metrics.json's format_version 2)."""
    intervals = evaluation.metrics.get("intervals") or {}
    keys = {"subset accuracy": "subset_accuracy", "macro F1": "macro_avg.f1"}
    return {
        label: intervals[keys.get(label, label)]
        for label in describe(evaluation)
        if keys.get(label, label) in intervals
    }
