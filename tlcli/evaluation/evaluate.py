"""`evaluate`: a run's model on its recorded validation/test files, or on any folder.

By default the files are exactly those the run recorded in `splits/test.csv`
(when the run had a test set) or `splits/val.csv`, decoded the same way as
in training, so the accuracy matches what training reported for them.
`data=DIR` evaluates on any folder of class folders named like the run's
classes. The report is written by `tlcli.evaluation.report.write_evaluation`
into a new `RUN_DIR/eval/<stamp>-<dataset>/` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from tlcli.data.decoded import decode_samples
from tlcli.data.images import DEFAULT_MAX_BYTES
from tlcli.data.listing import list_class_files
from tlcli.data.splits import Sample
from tlcli.errors import DataError, RunError, UserError
from tlcli.evaluation.gates import check_gate_keys, parse_gates
from tlcli.evaluation.metrics import metric_keys
from tlcli.evaluation.report import DEFAULT_TOP_K, Evaluation, write_evaluation
from tlcli.inference.probabilities import predict_probabilities
from tlcli.modeling.build import load_run_model
from tlcli.progress import Reporter
from tlcli.runs.folder import require_model
from tlcli.runs.provenance import read_split
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
) -> Evaluation:
    """Evaluate a run's model and write a new evaluation folder in the run.

    Args:
        run_dir: the run folder.
        data: a folder of class folders, or a CSV manifest (every usable row), to evaluate on instead of the run's own split.
        columns: the manifest's column names, as `data.columns`.
        split: `val` or `test` (default: test when the run had one, else val).
        top_k: k of the top-k accuracy (default: the run's `train.top_k`, else 5;
            capped at the number of classes).
        batch_size: images per model call.
        fail_under: `METRIC=NUMBER` quality gates, failing when the metric is
            below NUMBER; checked by name before any work, and against the
            results in `Evaluation.gate_failures`.
        fail_over: the same, failing when the metric is above NUMBER (for
            figures where lower is better: `loss`, `calibration.ece`).
        reporter: receives progress.

    Returns:
        The evaluation folder and its metrics (call `raise_for_gates()` to
        turn failed gates into `GateFailed`, exit 3).

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
    if batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {batch_size}")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k: must be at least 1, got {top_k}")
    config = read_run_config(run_dir)
    k = top_k or (config.train.top_k if config else 0) or DEFAULT_TOP_K
    gates = parse_gates(fail_under) + parse_gates(fail_over, over=True)
    check_gate_keys(gates, metric_keys(class_names, k))

    name, samples, source, bad_rows = _what_to_evaluate(run_dir, data, split, class_names, columns)
    model = load_run_model(run_dir, class_names)  # before any work: a damaged run fails in one line
    reporter.info(f"evaluating {run_dir} on {len(samples)} images ({source})")

    with reporter.task("decoding", len(samples)) as advance:
        decoded = decode_samples(samples, info.image_size, info.channels, on_bad_file="skip", progress=advance, max_bytes=config.data.max_bytes if config else DEFAULT_MAX_BYTES)
    skipped = bad_rows + [{"path": s.path, "reason": s.reason} for s in decoded.skipped]
    if skipped:
        reporter.warn(
            f"skipped {len(skipped)} unreadable file{'s' if len(skipped) > 1 else ''} (listed in metrics.json), e.g. {skipped[0]['path']}: {skipped[0]['reason']}"
        )
    if not len(decoded):
        raise DataError(f"{source}: none of the {len(samples)} images could be decoded; nothing to evaluate")

    probabilities = predict_probabilities(model, decoded.images, batch_size, info.binary)
    return write_evaluation(
        run_dir,
        name=name,
        probabilities=probabilities,
        labels=decoded.labels,
        paths=[s.path for s in decoded.samples],
        class_names=class_names,
        images=decoded.images,
        top_k=k,
        source=source,
        skipped=skipped,
        gates=gates,
    )


def _what_to_evaluate(run_dir: Path, data: str | Path | None, split: str | None, class_names: list[str], columns: dict[str, str] | None) -> tuple[str, list[Sample], str, list[dict[str, str]]]:
    """(dataset name, its files, where they came from, bad manifest rows): `data` (a folder or a manifest), else the run's `split`
    (default test when it had one, else val)."""
    from tlcli.data.manifest import is_manifest

    if data is not None:
        if split is not None:
            raise UserError("--split and --data exclude each other: --split picks one of the run's own splits")
        data = Path(data)
        samples, bad = manifest_samples(data, class_names, columns) if is_manifest(data) else (folder_samples(data, class_names)[0], [])
        return (data.stem if is_manifest(data) else data.absolute().name), samples, str(data.absolute()), bad
    name = split or ("test" if read_split(run_dir, "test") else "val")
    return name, split_samples(run_dir, name, class_names), f"splits/{name}.csv", []


def split_samples(run_dir: Path, split: str, class_names: list[str]) -> list[Sample]:
    """The files of `splits/<split>.csv` (columns path, relpath, label = class name).

    Raises:
        UserError: `split` is not val or test.
        RunError: the file is missing, or names a class the run does not have.
    """
    if split not in ("val", "test"):
        raise UserError(f"--split: expected val or test, got {split!r}")
    rows = read_split(run_dir, split)
    if rows is None:
        hint = "; the run had no test set, use --split val" if split == "test" else "; the run folder is incomplete"
        raise RunError(f"{run_dir}: no splits/{split}.csv{hint}")
    index = {name: i for i, name in enumerate(class_names)}
    samples = []
    for row in rows:
        if row.label not in index:
            raise RunError(f"{run_dir / 'splits' / f'{split}.csv'}: label {row.label!r} is not in labels.json")
        samples.append(Sample(Path(row.path), index[row.label], row.relpath))
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
        raise DataError(f"--data: folder not found: {folder}")
    ignored: list[tuple[str, str]] = []
    files = list_class_files(folder, "--data", ignored)
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [name for name in files if name not in index]
    if unknown:
        raise DataError(f"--data: class folder '{unknown[0]}' in {folder} is not a class of the run ({', '.join(class_names)}); rename or remove it")
    samples = [Sample(path, index[name], rel) for name in sorted(files) for path, rel in files[name]]
    if not samples:
        raise DataError(f"--data: no images in class folders under {folder}")
    return samples, ignored


def manifest_samples(manifest: Path, class_names: list[str], columns: dict[str, str] | None = None) -> tuple[list[Sample], list[dict[str, str]]]:
    """Every usable row of a manifest (whatever its split), labelled by the run's class names; and its bad rows.

    Raises:
        DataError: what reading the manifest raises, or a label the run does not know (its row named).
    """
    from tlcli.config.schema import DataConfig
    from tlcli.data.manifest import read_manifest

    read = read_manifest(DataConfig(manifest=manifest, columns=columns or {}), key="--data")
    index = {name: i for i, name in enumerate(class_names)}
    unknown = next((row for row in read.rows if row.label not in index), None)
    if unknown is not None:
        raise DataError(f"--data: row {unknown.row} of {manifest} labels {unknown.written} {unknown.label!r}, not a class of the run ({', '.join(class_names)})")
    samples = [Sample(row.path, index[row.label], row.written, row.row) for row in read.rows]
    if not samples:
        raise DataError(f"--data: no usable rows in {manifest}")
    return samples, [{"path": b.path, "reason": f"row {b.row}: {b.problem}"} for b in read.bad]





def describe(evaluation: Evaluation) -> dict[str, Any]:
    """The headline figures, in display order."""
    m = evaluation.metrics
    top_key = next(key for key in m if key.startswith("top") and key.endswith("_accuracy"))
    return {
        "accuracy": m["accuracy"],
        top_key: m[top_key],
        "loss": m["loss"],
        "macro F1": m["macro_avg"]["f1"],
        "weighted F1": m["weighted_avg"]["f1"],
        "calibration error (ECE)": m["calibration"]["ece"],
    }
