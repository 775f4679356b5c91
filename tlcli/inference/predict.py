"""`predict`: image files in, top-k labels out, through the run's own model.

Images are decoded with `tlcli.data.images.decode_image` at the run's image size and channels (the same decoding as
training) in a thread pool, a bounded window ahead of inference, and fed to the model in batches as 0-255 float32
pixels; the model holds its own preprocessing. A file that cannot be read or decoded becomes an error entry and the
others go on.

Output formats (`tlcli.inference.formats`), documented in the README:

- `jsonl`: one object per image: `{"path", "label", "confidence", "top_k": [{"label", "probability"}...], "error"}`;
  errors have `label` and `confidence` null, `top_k` empty and `error` set.
- `json`: one document `{"run_dir", "labels", "top_k", "count", "errors", "predictions": [the objects above]}`.
- `csv`: `path,label,confidence,label_2,probability_2,...,error`.

With `explain_dir` (`tlcli.inference.explain`), every row also has `explanation`: the overlay PNG written for the
image (null for an error), placed before `error` in csv; later per-image columns sit beside it. A run with a rule for
unknown images (`tlcli.inference.unknown`) adds `unknown_score` and `would_be` (the class of an image predicted
`unknown`, else null) the same way, and its probabilities are calibrated.

A multi-label run predicts every label whose probability reaches its class's threshold (model.json): `jsonl` objects
are `{"path", "labels": [...], "probabilities": {class: p}, "top_k", "error"}`, `csv` is
`path,labels,<one probability column per class>,error` with the labels joined by the run's separator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from tlcli.data.images import DEFAULT_MAX_BYTES, ImageDecodeError, decode_image
from tlcli.data.listing import collect_images
from tlcli.data.prefetch import bounded_map
from tlcli.errors import PartialSuccess, UserError
from tlcli.inference.explain import Explanations, feature_layer, prepare_explain_dir
from tlcli.inference.outputs import outputs_function
from tlcli.inference.probabilities import predict_probabilities
from tlcli.inference.tta import tta_views, with_tta
from tlcli.inference.unknown import (
    UNKNOWN_LABEL,
    FeatureBank,
    Judged,
    UnknownRule,
    check_accept,
    judge,
    read_unknown_rule,
)
from tlcli.modeling.build import load_run_model
from tlcli.progress import Reporter
from tlcli.runs.folder import newest_run, require_model, resolve_run
from tlcli.runs.records import read_labels, read_model_info, read_run_config


@dataclass(frozen=True)
class Prediction:
    """The result for one file: its top-k (label, probability), or why it failed."""

    path: str
    top: tuple[tuple[str, float], ...] = ()
    error: str | None = None
    labels: tuple[str, ...] | None = None  # multi-label: every label at or above its threshold (maybe none)
    scores: tuple[tuple[str, float], ...] = ()  # multi-label: every class's probability, in class order
    multi_label: bool = False
    explanation: str | None = None  # the Grad-CAM overlay written for the image (predict's explain_dir)
    unknown_score: float | None = None  # the run's rule judged it: its score (None: no rule applied)
    rejected: bool = False  # the score is below the threshold: predicted `unknown`

    @property
    def label(self) -> str | None:
        return UNKNOWN_LABEL if self.rejected else (self.top[0][0] if self.top else None)

    @property
    def confidence(self) -> float | None:
        return None if self.rejected else (self.top[0][1] if self.top else None)

    @property
    def would_be(self) -> str | None:
        """A rejected image's most probable class (None: accepted, or no rule)."""
        return self.top[0][0] if self.rejected and self.top else None

    def to_dict(self, explained: bool = False, judged: bool = False) -> dict[str, Any]:
        """The output row; `explained` (predict wrote overlays): with its `explanation`, null when there is none;
        `judged` (a rule for unknown images applied): with its `unknown_score` and `would_be` label."""
        extra = {"explanation": self.explanation} if explained else {}
        if judged:
            extra |= {"unknown_score": self.unknown_score, "would_be": self.would_be}
        if self.multi_label:
            return {
                "path": self.path,
                "labels": list(self.labels) if self.labels is not None else None,
                "probabilities": dict(self.scores) if self.scores else None,
                "top_k": [{"label": label, "probability": p} for label, p in self.top],
                **extra,
                "error": self.error,
            }
        return {
            "path": self.path,
            "label": self.label,
            "confidence": self.confidence,
            "top_k": [{"label": label, "probability": p} for label, p in self.top],
            **extra,
            "error": self.error,
        }


@dataclass
class PredictResult:
    """What `predict` returns: the run used (or the exported model) and one `Prediction` per input file, in input
    order."""

    run_dir: Path | None  # None: an exported model whose run is not known
    class_names: list[str]
    top_k: int
    predictions: list[Prediction] = field(default_factory=list)
    thresholds: tuple[float, ...] | None = None  # a multi-label run's (None: single-label)
    separator: str = "|"  # a multi-label run's label separator (the csv's labels cell)
    model: dict[str, Any] | None = None  # an exported model's {"path", "format", "runtime"} (None: model.keras)
    explain_dir: Path | None = None  # where the Grad-CAM overlays went (None: not asked for)
    unknown: UnknownRule | None = None  # the rule that judged every image (None: none applied)

    @property
    def explained(self) -> bool:
        return self.explain_dir is not None

    @property
    def multi_label(self) -> bool:
        return self.thresholds is not None

    @property
    def errors(self) -> list[Prediction]:
        return [p for p in self.predictions if p.error is not None]

    def to_dict(self) -> dict[str, Any]:
        task = (
            {"task": "multi_label", "thresholds": dict(zip(self.class_names, self.thresholds))}
            if self.thresholds is not None
            else {}
        )
        return {
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
            **({"model": dict(self.model)} if self.model is not None else {}),
            "labels": self.class_names,
            **task,
            "top_k": self.top_k,
            "count": len(self.predictions),
            "errors": len(self.errors),
            **({"explain_dir": str(self.explain_dir)} if self.explained else {}),
            **({"unknown": self.unknown.summary()} if self.unknown is not None else {}),
            "predictions": [p.to_dict(self.explained, self.unknown is not None) for p in self.predictions],
        }

    def raise_for_errors(self) -> None:
        """Raise `PartialSuccess` when some files could not be predicted."""
        bad = self.errors
        if bad:
            done = len(self.predictions) - len(bad)
            raise PartialSuccess(
                f"{len(bad)} of {len(self.predictions)} files could not be read or decoded (see their error "
                f"entries, e.g. {bad[0].path}: {bad[0].error}); {done} predicted"
            )


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ModelSource:
    """What prediction and evaluation need of a model, whatever runs it: the run's Keras model here, an exported
    artifact in its own runtime from `tlcli.export` (which ranks above this stage, so it hands this object down).

    `probabilities(images, batch_size)` maps (n, height, width, channels) uint8 pixels to (n, classes) class
    probabilities (a multi-label model: one sigmoid per class). `described` is what a result records about it:
    None for a run's own model.keras, else e.g. {"path", "format", "runtime"}.
    """

    run_dir: Path | None  # the run the model came from (None: not known)
    class_names: list[str]
    image_size: tuple[int, int]
    channels: int
    probabilities: Callable[[np.ndarray, int], np.ndarray]
    thresholds: tuple[float, ...] | None = None  # multi-label: each class's threshold (None: single-label)
    separator: str = "|"  # multi-label: what joins an image's labels
    max_bytes: int = DEFAULT_MAX_BYTES  # larger files are unreadable unread (the run's data.max_file_mb)
    described: dict[str, Any] | None = None
    model: Any = None  # the run's Keras model, whose gradients Grad-CAM takes (None: an exported artifact)
    unknown: UnknownRule | None = None  # rejects images of no class (None: predicts as before)
    outputs: Callable[[np.ndarray, int], np.ndarray] | None = None  # `(images, batch_size) -> [logits | features]`
    bank: FeatureBank | None = None  # the training features a feature-space score compares with
    views: tuple[str, ...] | None = None  # the views `--tta` averages over (`tta_views`; None: not recorded)

    def with_unknown(self, accept: float | None = None, enabled: bool = True) -> ModelSource:
        """This source with its rule at another accept fraction (`enabled` False: without it, as before); UserError
        for an `accept` when there is no rule (multi-label, trained before it, an artifact that cannot apply it)."""
        if accept is not None and enabled and self.unknown is None:
            raise UserError("accept: this model has no rule for unknown images (docs/guides/unknown-images.md)")
        if self.unknown is None or not enabled:
            return dataclasses.replace(self, unknown=None, outputs=None, bank=None)
        return dataclasses.replace(self, unknown=self.unknown.with_accept(accept))

    def with_tta(self) -> ModelSource:
        """This source averaging its probabilities and rule's outputs over its `views` (none recorded: the mirror)."""
        views = self.views or tta_views(None)
        outputs = with_tta(self.outputs, views) if self.outputs is not None else None
        probabilities = with_tta(self.probabilities, views)
        return dataclasses.replace(self, probabilities=probabilities, outputs=outputs, views=views)

    def judge(self, images: np.ndarray, batch_size: int) -> Judged:
        """The images' calibrated probabilities, scores and decisions under this source's rule."""
        rows = self.outputs(images, batch_size)
        classes = len(self.class_names)
        features = rows[:, classes:] if rows.shape[1] > classes else None
        return judge(self.unknown, rows[:, :classes], features, self.bank)


def resolve_predict_run(run: str | Path | None, runs_dir: str | Path) -> Path:
    """`run` (a folder or run name), else the newest completed run in `runs_dir`, with a model.

    Raises:
        RunError: no such run, or a run folder without a model (exit 2).
    """
    run_dir = resolve_run(run, Path(runs_dir)) if run is not None else newest_run(Path(runs_dir))
    require_model(run_dir)
    return run_dir


def run_source(run_dir: Path, unknown: bool = True) -> ModelSource:
    """The run's model.keras as a `ModelSource` (loaded once, here), with the run's rule for unknown images when it
    has one (`unknown` False: without it).

    Raises:
        RunError: damaged run records, or labels that do not match the model's outputs.
    """
    class_names, info, config = read_labels(run_dir), read_model_info(run_dir), read_run_config(run_dir)
    model = load_run_model(run_dir, class_names)
    thresholds = (info.thresholds or (0.5,) * len(class_names)) if info.multi_label else None
    rule = read_unknown_rule(run_dir) if unknown and not info.multi_label else None
    judging = {}
    if rule is not None:
        judging = {"unknown": rule, "outputs": outputs_function(model, info.binary), "bank": rule.bank()}
    return ModelSource(
        run_dir,
        class_names,
        info.image_size,
        info.channels,
        lambda images, batch_size: predict_probabilities(model, images, batch_size, info.binary),
        thresholds,
        config.data.label_separator if config else "|",
        config.data.max_bytes if config else DEFAULT_MAX_BYTES,
        model=model,
        views=tta_views(config),
        **judging,
    )


# ----------------------------------------------------------------------------- inference


def predict(
    images: Sequence[str | Path],
    *,
    run: str | Path | None = None,
    runs_dir: str | Path = "runs",
    top_k: int = 3,
    batch_size: int = 32,
    workers: int | None = None,
    reporter: Reporter | None = None,
    on_run: Callable[[Path], None] | None = None,
    tta: bool = False,
    explain_dir: str | Path | None = None,
    explain_layer: str | None = None,
    accept: float | None = None,
    unknown: bool = True,
) -> PredictResult:
    """Predict the top-k labels of image files with a run's model.

    Args:
        images: files, folders (searched recursively) and globs.
        run: a run folder or run name (default: the newest completed run).
        runs_dir: where to look for runs.
        top_k: labels per image (capped at the number of classes).
        batch_size: images per model call.
        workers: decoding threads (default: CPU count, at most 8).
        reporter: receives progress.
        on_run: called with the run folder once it is chosen (before the model loads).
        tta: average each image's probabilities over the views the run trained with (`tlcli.inference.tta`).
        explain_dir: write a Grad-CAM overlay per image into this new (or empty) folder
            (`tlcli.inference.explain`; multi-label: a row per predicted label), named in each row's `explanation`.
        explain_layer: the base layer Grad-CAM weighs (default: the base's last feature map larger than 1x1).
        accept: with the run's rule for unknown images (`unknown.json`), accept this share of validation images
            instead of the run's `predict.unknown.accept` (the threshold moves on the stored validation scores).
        unknown: False: no rejection and uncalibrated probabilities, as runs without the rule predict.

    Returns:
        One `Prediction` per file, in input order; unreadable files carry an
        error instead of labels (call `raise_for_errors` to turn them into exit 4).

    Raises:
        UserError: bad arguments, a path or glob matching nothing, an `explain_dir` that is not empty, an
            `explain_layer` the base does not have.
        RunError: no run, or a run without a model.
    """
    check_predict_options(top_k, batch_size)
    if accept is not None:
        check_accept(accept)
    keys = collect_images(images)
    if explain_dir is not None and Path(explain_dir).exists():
        prepare_explain_dir(explain_dir)  # refused before the model loads
    run_dir = resolve_predict_run(run, runs_dir)
    if on_run is not None:
        on_run(run_dir)
    source = run_source(run_dir, unknown).with_unknown(accept, unknown)
    if tta:
        source = source.with_tta()
    explain = None
    if explain_dir is not None:
        feature_layer(source.model, explain_layer)  # a layer the base does not have fails before any work
        explain = Explanations(
            source.model, prepare_explain_dir(explain_dir), len(keys), source.class_names, explain_layer
        )
    return predict_with(
        source, keys, top_k=top_k, batch_size=batch_size, workers=workers, reporter=reporter, explain=explain
    )


def check_predict_options(top_k: int, batch_size: int) -> None:
    """Raises UserError for a top_k or batch_size below 1 (before any work)."""
    if top_k < 1:
        raise UserError(f"top_k: must be at least 1, got {top_k}")
    if batch_size < 1:
        raise UserError(f"batch_size: must be at least 1, got {batch_size}")


def predict_with(
    source: ModelSource,
    keys: dict[Path, str],
    *,
    top_k: int = 3,
    batch_size: int = 32,
    workers: int | None = None,
    reporter: Reporter | None = None,
    explain: Explanations | None = None,
) -> PredictResult:
    """Predict the files of `keys` (path -> the path as the user wrote it; `collect_images`) with any model.

    Decoding (at the source's size and channels, as in training) runs a bounded window ahead of inference;
    unreadable files become error entries; `explain` writes each predicted image's overlay. Returns one
    `Prediction` per file, in input order.
    """
    reporter = reporter or Reporter()
    paths = list(keys)
    class_names, thresholds = source.class_names, source.thresholds
    k = min(top_k, len(class_names))
    predictions: list[Prediction] = []
    batch_paths: list[Path] = []
    batch_pixels: list[np.ndarray] = []
    number = {path: i for i, path in enumerate(paths, start=1)}

    def flush() -> None:
        if batch_pixels:
            batch = _predict_batch(source, [keys[path] for path in batch_paths], np.stack(batch_pixels), k, batch_size)
            predictions.extend(explain([number[p] for p in batch_paths], batch_pixels, batch) if explain else batch)
        batch_paths.clear()
        batch_pixels.clear()

    decoded = decode_stream(
        paths, source.image_size, source.channels, workers, window=2 * batch_size, max_bytes=source.max_bytes
    )
    with reporter.task("predicting", len(paths)) as advance:
        for done, (path, result) in enumerate(decoded, start=1):
            if isinstance(result, str):
                predictions.append(Prediction(keys[path], error=result, multi_label=thresholds is not None))
            else:
                batch_paths.append(path)
                batch_pixels.append(result)
                if len(batch_pixels) == batch_size:
                    flush()
            advance(done)
        flush()
    # Errors are recorded as they come while their batch is still filling: restore input order.
    index_of = {keys[p]: i for i, p in enumerate(paths)}
    predictions.sort(key=lambda p: index_of[p.path])
    return PredictResult(
        source.run_dir,
        class_names,
        k,
        predictions,
        thresholds,
        source.separator,
        source.described,
        explain.folder if explain else None,
        source.unknown,
    )


def _predict_batch(source: ModelSource, names: list[str], pixels: np.ndarray, k: int, batch_size: int):
    """The batch's predictions; under the source's rule, with calibrated probabilities and each image judged."""
    if source.unknown is None:
        rows = source.probabilities(pixels, batch_size)
        return [_prediction(name, row, source.class_names, k, source.thresholds) for name, row in zip(names, rows)]
    judged = source.judge(pixels, batch_size)
    return [
        dataclasses.replace(
            _prediction(name, row, source.class_names, k, None), unknown_score=round(float(s), 6) + 0.0, rejected=not a
        )
        for name, row, s, a in zip(names, judged.probabilities, judged.scores, judged.accepted)
    ]


def _prediction(
    key: str, row: np.ndarray, class_names: list[str], k: int, thresholds: tuple[float, ...] | None
) -> Prediction:
    """One image's top-k; a multi-label run's also every label at or above its threshold, and every class's
    probability."""
    order = np.argsort(-row, kind="stable")[:k]
    top = tuple((class_names[i], round(float(row[i]), 6)) for i in order)
    if thresholds is None:
        return Prediction(key, top)
    on = tuple(name for name, p, t in zip(class_names, row, thresholds) if p >= t)
    return Prediction(
        key,
        top,
        labels=on,
        scores=tuple((name, round(float(p), 6)) for name, p in zip(class_names, row)),
        multi_label=True,
    )


def decode_stream(
    paths: Sequence[Path],
    size: tuple[int, int],
    channels: int,
    workers: int | None,
    window: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[tuple[Path, np.ndarray | str]]:
    """(path, pixels or error reason) in input order, decoding at most `window` files ahead (`bounded_map`)."""

    def one(path: Path) -> np.ndarray | str:
        try:
            return decode_image(path, size, channels, max_bytes)[0]
        except ImageDecodeError as exc:
            return exc.reason
        except Exception as exc:  # one odd file must not stop the others
            return f"cannot decode ({type(exc).__name__}: {str(exc)[:120]})"

    return bounded_map(one, paths, window=window, workers=workers)
