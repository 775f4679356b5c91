"""`predict`: image files in, top-k labels out, through the run's own model.

Images are decoded with `tlcli.images.decode_image` at the run's image size
and channels (the same decoding as training) in a thread pool, a bounded
window ahead of inference, and fed to the model in batches as 0-255 float32
pixels; the model holds its own preprocessing. A file that cannot be read or
decoded becomes an error entry and the others go on.

Output formats (`format_predictions`), documented in the README:

- `jsonl`: one object per image: `{"path", "label", "confidence", "top_k":
  [{"label", "probability"}...], "error"}`; errors have `label` and
  `confidence` null, `top_k` empty and `error` set.
- `json`: one document `{"run_dir", "labels", "top_k", "count", "errors",
  "predictions": [the objects above]}`.
- `csv`: `path,label,confidence,label_2,probability_2,...,error`.
"""

from __future__ import annotations

import collections
import csv
import glob
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from tlcli import runs
from tlcli.errors import EXIT_PARTIAL, RunError, TlcliError, UserError
from tlcli.images import IMAGE_EXTENSIONS, ImageDecodeError, cpu_workers, decode_image, is_image_candidate
from tlcli.progress import Reporter

FORMATS = ("table", "json", "jsonl", "csv")


class PartialSuccess(TlcliError):
    """Some inputs could not be used; the rest were done (exit code 4)."""

    exit_code = EXIT_PARTIAL


@dataclass(frozen=True)
class Prediction:
    """The result for one file: its top-k (label, probability), or why it failed."""

    path: str
    top: tuple[tuple[str, float], ...] = ()
    error: str | None = None

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.top else None

    @property
    def confidence(self) -> float | None:
        return self.top[0][1] if self.top else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "label": self.label,
            "confidence": self.confidence,
            "top_k": [{"label": label, "probability": p} for label, p in self.top],
            "error": self.error,
        }


@dataclass
class PredictResult:
    """What `predict` returns: the run used and one `Prediction` per input file, in input order."""

    run_dir: Path
    class_names: list[str]
    top_k: int
    predictions: list[Prediction] = field(default_factory=list)

    @property
    def errors(self) -> list[Prediction]:
        return [p for p in self.predictions if p.error is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "labels": self.class_names,
            "top_k": self.top_k,
            "count": len(self.predictions),
            "errors": len(self.errors),
            "predictions": [p.to_dict() for p in self.predictions],
        }

    def raise_for_errors(self) -> None:
        """Raise `PartialSuccess` when some files could not be predicted."""
        bad = self.errors
        if bad:
            done = len(self.predictions) - len(bad)
            raise PartialSuccess(
                f"{len(bad)} of {len(self.predictions)} files could not be read or decoded (see their error entries, e.g. {bad[0].path}: {bad[0].error}); {done} predicted"
            )


# ----------------------------------------------------------------------------- inputs


def collect_images(specs: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (recursively, image extensions only) and globs, keeping order, without duplicates.

    A file named explicitly (or matched by a glob) is always tried, whatever
    its extension; inside folders only image files count, hidden ones left out.

    Raises:
        UserError: nothing given, or a path or glob that matches no image.
    """
    if not specs:
        raise UserError("no images given; pass image files, folders or globs")
    found: dict[Path, None] = {}
    for spec in specs:
        text = os.path.expanduser(str(spec))
        path = Path(text)
        if path.exists():
            matches = [path]
        elif glob.has_magic(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if not matches:
                raise UserError(f"{spec}: the pattern matches no files")
        else:
            raise UserError(f"{spec}: no such file or folder")
        before = len(found)
        for match in matches:
            if match.is_dir():
                found.update(dict.fromkeys(_images_under(match)))
            else:
                found[match] = None
        if len(found) == before and not any(m.is_file() for m in matches):
            raise UserError(f"{spec}: no image files in it ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return list(found)


def _images_under(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if is_image_candidate(path):
                yield path


# ----------------------------------------------------------------------------- the run


def resolve_predict_run(run: str | Path | None, runs_dir: str | Path) -> Path:
    """`run` (a folder or run name), else the newest completed run in `runs_dir`, with a model.

    Raises:
        RunError: no such run, or a run folder without a model (exit 2).
    """
    run_dir = runs.resolve_run(run, Path(runs_dir)) if run is not None else runs.newest_run(Path(runs_dir))
    runs.require_model(run_dir)
    return run_dir


def read_model_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "model.json"
    try:
        info = runs.read_json(path)
        return {"image_size": tuple(info["image_size"]), "channels": int(info["channels"]), "activation": info.get("activation", "softmax")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{path}: missing or unreadable ({type(exc).__name__}); the run folder is incomplete") from None


# ----------------------------------------------------------------------------- inference


def to_class_probabilities(outputs: np.ndarray, binary: bool) -> np.ndarray:
    """(n, classes) probabilities; a sigmoid head's p (class 1) becomes [1 - p, p]."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if binary:
        p = outputs.reshape(len(outputs), -1)[:, 0]
        return np.stack([1.0 - p, p], axis=1)
    return outputs


def predict_probabilities(model, images: np.ndarray, batch_size: int, binary: bool) -> np.ndarray:
    """Class probabilities of uint8 `images`, converted to float32 one batch at a time."""
    outputs = [
        np.asarray(model.predict_on_batch(np.asarray(images[start : start + batch_size], dtype=np.float32))) for start in range(0, len(images), batch_size)
    ]
    if not outputs:
        return np.zeros((0, 2 if binary else 0))
    return to_class_probabilities(np.concatenate(outputs), binary)


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

    Returns:
        One `Prediction` per file, in input order; unreadable files carry an
        error instead of labels (call `raise_for_errors` to turn them into exit 4).

    Raises:
        UserError: bad arguments, or a path or glob matching nothing.
        RunError: no run, or a run without a model.
    """
    if top_k < 1:
        raise UserError(f"--top-k: must be at least 1, got {top_k}")
    if batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {batch_size}")
    reporter = reporter or Reporter()
    paths = collect_images(images)
    run_dir = resolve_predict_run(run, runs_dir)
    if on_run is not None:
        on_run(run_dir)
    class_names = runs.run_labels(run_dir)
    info = read_model_info(run_dir)
    k = min(top_k, len(class_names))
    model = runs.load_run_model(run_dir)
    binary = info["activation"] == "sigmoid"

    predictions: list[Prediction] = []
    batch_paths: list[Path] = []
    batch_pixels: list[np.ndarray] = []

    def flush() -> None:
        if batch_pixels:
            probabilities = predict_probabilities(model, np.stack(batch_pixels), batch_size, binary)
            for path, row in zip(batch_paths, probabilities):
                order = np.argsort(-row, kind="stable")[:k]
                predictions.append(Prediction(str(path), tuple((class_names[i], round(float(row[i]), 6)) for i in order)))
        batch_paths.clear()
        batch_pixels.clear()

    with reporter.task("predicting", len(paths)) as advance:
        for done, (path, result) in enumerate(decode_stream(paths, info["image_size"], info["channels"], workers, window=2 * batch_size), start=1):
            if isinstance(result, str):
                predictions.append(Prediction(str(path), error=result))
            else:
                batch_paths.append(path)
                batch_pixels.append(result)
                if len(batch_pixels) == batch_size:
                    flush()
            advance(done)
        flush()
    # Errors are recorded as they come while their batch is still filling: restore input order.
    index_of = {str(p): i for i, p in enumerate(paths)}
    predictions.sort(key=lambda p: index_of[p.path])
    return PredictResult(run_dir, class_names, k, predictions)


def decode_stream(paths: Sequence[Path], size: tuple[int, int], channels: int, workers: int | None, window: int) -> Iterator[tuple[Path, np.ndarray | str]]:
    """(path, pixels or error reason) in input order, decoding at most `window` files ahead.

    The bounded window keeps memory flat for any number of files while the
    thread pool decodes the next images as the model runs on the current batch.
    """

    def one(path: Path) -> np.ndarray | str:
        try:
            return decode_image(path, size, channels)[0]
        except ImageDecodeError as exc:
            return exc.reason
        except Exception as exc:  # one odd file must not stop the others
            return f"cannot decode ({type(exc).__name__}: {str(exc)[:120]})"

    iterator = iter(paths)
    with ThreadPoolExecutor(max_workers=workers or cpu_workers()) as pool:
        pending: collections.deque = collections.deque()
        for path in iterator:
            pending.append((path, pool.submit(one, path)))
            if len(pending) >= window:
                break
        while pending:
            path, future = pending.popleft()
            following = next(iterator, None)
            if following is not None:
                pending.append((following, pool.submit(one, following)))
            yield path, future.result()


# ----------------------------------------------------------------------------- output


def format_predictions(result: PredictResult, fmt: str) -> str:
    """The text of `json`, `jsonl` or `csv` output (`table` is drawn by the CLI)."""
    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(p.to_dict()) + "\n" for p in result.predictions)
    if fmt == "csv":
        return _csv_text(result)
    raise UserError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")


def csv_header(top_k: int) -> list[str]:
    header = ["path", "label", "confidence"]
    for rank in range(2, top_k + 1):
        header += [f"label_{rank}", f"probability_{rank}"]
    return header + ["error"]


def _csv_text(result: PredictResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_header(result.top_k))
    for p in result.predictions:
        cells: list[Any] = [p.path]
        for rank in range(result.top_k):
            cells += [p.top[rank][0], f"{p.top[rank][1]:.6f}"] if rank < len(p.top) else ["", ""]
        writer.writerow(cells + [p.error or ""])
    return buffer.getvalue()


def rows_for_table(result: PredictResult) -> Iterable[tuple[str, str, str, str]]:
    """(path, label or "error", confidence, the other top-k or the error's reason) for a human-readable table."""
    for p in result.predictions:
        if p.error is not None:
            yield p.path, "error", "", p.error
        else:
            yield p.path, p.label or "", f"{p.confidence:.3f}", ", ".join(f"{label} {prob:.3f}" for label, prob in p.top[1:])
