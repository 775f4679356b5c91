"""Evaluation reports: metrics from predicted probabilities, plots, the eval folder.

`tlcli evaluate` and the end of `tlcli train` both call `write_evaluation`,
so a run's final validation report and a later evaluation look the same. An
evaluation lives in `RUN_DIR/eval/<YYYYMMDD-HHMMSS>-<dataset>/`, a folder
created exclusively (never reused), holding `metrics.json`,
`predictions.csv`, `confusion_matrix.csv` / `.png`, `reliability.png` and
`mistakes.png`. Every file is written atomically.

Plots use matplotlib's object API on an Agg canvas (no pyplot), so they never
need a display and never touch global figure state. scikit-learn and
matplotlib are imported inside the functions, so `import tlcli` stays light.
"""

from __future__ import annotations

import csv
import difflib
import io
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlcli import runs
from tlcli.errors import EXIT_GATE_FAILED, TlcliError, UserError

log = logging.getLogger("tlcli")

EVAL_FILES = {
    "metrics.json": "accuracy, top-k accuracy, loss, per-class precision/recall/F1/support, macro and weighted averages, confusion matrix, calibration",
    "predictions.csv": "one row per image: path, true_label, predicted_label, confidence, correct",
    "confusion_matrix.csv": "rows are true classes, columns predicted classes",
    "confusion_matrix.png": "the confusion matrix as a picture",
    "reliability.png": "reliability diagram: accuracy against confidence, with the expected calibration error",
    "mistakes.png": "the most confident mistakes, as a picture grid",
}

CALIBRATION_BINS = 10
MISTAKES_SHOWN = 16
MISTAKE_PIXELS = 160  # display size of each mistake
# Keras clips probabilities to [1e-7, 1 - 1e-7] in its cross-entropy; doing the
# same makes `loss` comparable with the val_loss of training.
_EPSILON = 1e-7


class GateFailed(TlcliError):
    """A `--fail-under` or `--fail-over` quality gate failed (exit code 3)."""

    exit_code = EXIT_GATE_FAILED


@dataclass
class Evaluation:
    """One written evaluation: its folder and the content of its metrics.json."""

    eval_dir: Path
    metrics: dict[str, Any]
    gate_failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"eval_dir": str(self.eval_dir), **self.metrics}

    def raise_for_gates(self) -> None:
        """Raise `GateFailed` naming every gate that failed, if any did."""
        if self.gate_failures:
            raise GateFailed("quality gate failed: " + "; ".join(self.gate_failures) + f" (report in {self.eval_dir})")


# ----------------------------------------------------------------------------- metrics


def compute_metrics(probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str], top_k: int) -> dict[str, Any]:
    """Every figure of an evaluation, as JSON-ready values.

    Args:
        probabilities: (n, classes) class probabilities (softmax, or [1-p, p]
            for a sigmoid head).
        labels: (n,) true class indices.
        class_names: names in output order.
        top_k: k of the top-k accuracy (capped at the number of classes).

    Returns:
        A dict with `accuracy`, `top{k}_accuracy`, `loss`, `per_class`,
        `macro_avg`, `weighted_avg`, `confusion_matrix` and `calibration`.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = len(class_names)
    k = max(1, min(top_k, n_classes))
    indices = list(range(n_classes))
    predicted = probabilities.argmax(axis=1)

    # Top-k by rank of the true class's probability: ties count in the model's favour, as in Keras.
    true_scores = probabilities[np.arange(len(labels)), labels]
    rank = (probabilities > true_scores[:, None]).sum(axis=1)
    clipped = np.clip(probabilities / probabilities.sum(axis=1, keepdims=True), _EPSILON, 1 - _EPSILON)
    loss = float(-np.log(clipped[np.arange(len(labels)), labels]).mean())

    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=indices, zero_division=0)
    averages = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(labels, predicted, labels=indices, average=average, zero_division=0)
        averages[f"{average}_avg"] = {"precision": _r(p), "recall": _r(r), "f1": _r(f), "support": int(len(labels))}
    matrix = confusion_matrix(labels, predicted, labels=indices)
    return {
        "accuracy": _r(accuracy_score(labels, predicted)),
        f"top{k}_accuracy": _r(float((rank < k).mean())),
        "loss": _r(loss),
        "images": int(len(labels)),
        **averages,
        "per_class": {
            name: {"precision": _r(precision[i]), "recall": _r(recall[i]), "f1": _r(f1[i]), "support": int(support[i])} for i, name in enumerate(class_names)
        },
        "confusion_matrix": {"labels": list(class_names), "matrix": matrix.astype(int).tolist()},
        "calibration": calibration(probabilities, labels),
    }


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Expected calibration error over equal-width confidence bins, and the bins themselves.

    ECE is the support-weighted mean gap between confidence (top-1
    probability) and accuracy in each bin: 0 for a perfectly calibrated model.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins, the first one also taking 0.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        row = {"low": _r(edges[b]), "high": _r(edges[b + 1]), "count": count, "confidence": None, "accuracy": None}
        if count:
            mean_confidence, accuracy = float(confidence[mask].mean()), float(correct[mask].mean())
            row.update(confidence=_r(mean_confidence), accuracy=_r(accuracy))
            ece += count / len(labels) * abs(accuracy - mean_confidence)
        rows.append(row)
    return {"ece": _r(ece), "bins": rows}


def _r(value: Any) -> float:
    return round(float(value), 6)


def flatten_numbers(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """{dotted key: value} for every number in nested dicts (lists are not walked)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_numbers(value, dotted + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[dotted] = float(value)
    return flat


def metric_keys(class_names: Sequence[str], top_k: int) -> list[str]:
    """The numeric keys a report for these classes will have (for checking gates up front)."""
    n = len(class_names)
    dummy = compute_metrics(np.eye(n), np.arange(n), class_names, top_k)
    return sorted(flatten_numbers({**dummy, "dataset": {"images": 0, "skipped": 0}}))


# ----------------------------------------------------------------------------- quality gates


@dataclass(frozen=True)
class Gate:
    """`--fail-under KEY=VALUE` (fail when metrics[KEY] < VALUE) or `--fail-over KEY=VALUE` (fail when it is > VALUE)."""

    key: str
    threshold: float
    over: bool = False  # for figures where lower is better: loss, calibration.ece

    @property
    def option(self) -> str:
        return "--fail-over" if self.over else "--fail-under"

    def fails(self, value: float) -> bool:
        return value > self.threshold if self.over else value < self.threshold

    def describe(self, value: float) -> str:
        return f"{self.key} {value:.4f} {'>' if self.over else '<'} {self.threshold:g}"


def parse_gates(specs: Sequence[str], over: bool = False) -> list[Gate]:
    """Parse `KEY=NUMBER` strings (of `--fail-over` when `over`, else `--fail-under`).

    Raises:
        UserError: a spec is not `KEY=NUMBER`.
    """
    gates = []
    for spec in specs:
        key, sep, value = spec.partition("=")
        try:
            threshold = float(value)
        except ValueError:
            threshold = math.nan
        if not sep or not key.strip() or not math.isfinite(threshold):
            example = "loss=0.5" if over else "accuracy=0.9"
            raise UserError(f"{'--fail-over' if over else '--fail-under'}: expected METRIC=NUMBER such as {example}, got {spec!r}")
        gates.append(Gate(key.strip(), threshold, over))
    return gates


def check_gate_keys(gates: Sequence[Gate], keys: Sequence[str]) -> None:
    """Every gate must name a numeric metric.

    Raises:
        UserError: an unknown metric, with a did-you-mean.
    """
    for gate in gates:
        if gate.key not in keys:
            close = difflib.get_close_matches(gate.key, keys, n=1, cutoff=0.5)
            hint = (
                f"did you mean {close[0]}?"
                if close
                else "known: " + ", ".join(k for k in keys if "." not in k or k.startswith(("macro_avg", "calibration.ece")))
            )
            raise UserError(f"{gate.option}: unknown metric {gate.key!r}; {hint}")


def gate_failures(metrics: dict[str, Any], gates: Sequence[Gate]) -> list[str]:
    """One line per gate whose metric is on the wrong side of its threshold."""
    flat = flatten_numbers(metrics)
    check_gate_keys(gates, sorted(flat))
    return [g.describe(flat[g.key]) for g in gates if g.fails(flat[g.key])]


# ----------------------------------------------------------------------------- the eval folder


def create_eval_dir(run_dir: Path, name: str, now: datetime | None = None) -> Path:
    """Make `run_dir/eval/<stamp>-<name>/`; never returns a folder that existed (suffix -2, -3...).

    Raises:
        UserError: the run folder is not writable.
    """
    from tlcli.runs import create_stamped_dir

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "data"
    try:
        return create_stamped_dir(run_dir / "eval", slug, now)
    except OSError as exc:
        raise UserError(f"{run_dir}: cannot write the evaluation ({exc.strerror or exc}); the run folder must be writable") from None


def write_evaluation(
    run_dir: Path,
    *,
    name: str,
    probabilities: np.ndarray,
    labels: np.ndarray,
    paths: Sequence[str | Path],
    class_names: Sequence[str],
    images: np.ndarray | None = None,
    top_k: int = 5,
    source: str = "",
    skipped: Sequence[dict[str, str]] = (),
    gates: Sequence[Gate] = (),
) -> Evaluation:
    """Compute the metrics of one evaluation and write its folder.

    Args:
        run_dir: the run folder; the evaluation goes into its `eval/`.
        name: dataset name, the suffix of the folder (`val`, `test`, a folder name).
        probabilities: (n, classes) predicted class probabilities.
        labels: (n,) true class indices.
        paths: the n image files, in the same order.
        class_names: the run's labels.
        images: (n, h, w, c) uint8 pixels, for the picture of mistakes (optional).
        top_k: k of the top-k accuracy.
        source: where the images came from, recorded in metrics.json.
        skipped: files that could not be decoded ({path, reason}).
        gates: quality gates checked against the metrics.

    Returns:
        The folder, the metrics, and the failed gates (not raised).
    """
    metrics = {
        "run_dir": str(Path(run_dir).absolute()),
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "dataset": {"name": name, "source": source, "images": int(len(labels)), "skipped": len(skipped)},
        **compute_metrics(probabilities, labels, class_names, top_k),
        "skipped_files": list(skipped),
    }
    failures = gate_failures(metrics, gates)
    eval_dir = create_eval_dir(Path(run_dir), name)
    runs.write_json_atomic(eval_dir / "metrics.json", metrics)
    write_predictions_csv(eval_dir / "predictions.csv", probabilities, labels, paths, class_names)
    matrix = np.asarray(metrics["confusion_matrix"]["matrix"])
    runs.write_csv_atomic(
        eval_dir / "confusion_matrix.csv", ["true \\ predicted", *class_names], ([name_, *row] for name_, row in zip(class_names, matrix.tolist()))
    )
    plot_confusion_matrix(matrix, class_names, eval_dir / "confusion_matrix.png")
    plot_reliability(metrics["calibration"], eval_dir / "reliability.png")
    plot_mistakes(probabilities, labels, paths, class_names, images, eval_dir / "mistakes.png")
    return Evaluation(eval_dir, metrics, failures)


def write_predictions_csv(path: Path, probabilities: np.ndarray, labels: np.ndarray, paths: Sequence, class_names: Sequence[str]) -> None:
    predicted = probabilities.argmax(axis=1)
    rows = (
        (str(p), class_names[t], class_names[q], f"{probabilities[i, q]:.6f}", "true" if t == q else "false")
        for i, (p, t, q) in enumerate(zip(paths, labels.tolist(), predicted.tolist()))
    )
    runs.write_csv_atomic(path, ["path", "true_label", "predicted_label", "confidence", "correct"], rows)


def read_history(history_csv: Path) -> list[dict[str, str]]:
    with open(history_csv, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


# ----------------------------------------------------------------------------- plots


def _figure(width: float, height: float, margins: dict[str, float] | None = None):
    """A figure on an Agg canvas; fixed `margins` (subplots_adjust) where the labels are known,
    else constrained layout, which fits any label but costs about 0.1 s a figure (measured)."""
    from matplotlib.figure import Figure

    if margins is None:
        return Figure(figsize=(width, height), layout="constrained")
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(**margins)
    return figure


def save_figure(figure, path: Path, dpi: int = 110) -> None:
    """Render to memory, then write atomically (a crash never leaves half a PNG)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    _write_bytes_atomic(path, buffer.getvalue())


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], out_png: Path) -> None:
    n = len(class_names)
    size = min(4 + 0.45 * n, 24)
    figure = _figure(size + 1, size)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("confusion matrix")
    if n <= 60:  # beyond that the names overlap whatever the size
        axes.set_xticks(range(n), labels=list(class_names), rotation=90 if n > 6 else 0, fontsize=8 if n > 20 else 10)
        axes.set_yticks(range(n), labels=list(class_names), fontsize=8 if n > 20 else 10)
    if n <= 25:
        top = matrix.max() if matrix.size else 0
        for (i, j), count in np.ndenumerate(matrix):
            axes.text(j, i, str(count), ha="center", va="center", fontsize=8 if n > 10 else 10, color="white" if top and count > top / 2 else "black")
    save_figure(figure, out_png)


def plot_reliability(calibration_record: dict[str, Any], out_png: Path) -> None:
    bins = calibration_record["bins"]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"]
    accuracy = [b["accuracy"] or 0.0 for b in bins]
    counts = [b["count"] for b in bins]
    figure = _figure(5, 6, margins={"left": 0.15, "right": 0.94, "bottom": 0.09, "top": 0.94, "hspace": 0.08})
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(centres, accuracy, width=width * 0.95, color="tab:blue", edgecolor="black", label="accuracy")
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"reliability (expected calibration error {calibration_record['ece']:.3f})")
    top.legend(loc="upper left")
    bottom.bar(centres, counts, width=width * 0.95, color="tab:gray")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("images")
    save_figure(figure, out_png)


def plot_mistakes(probabilities, labels, paths, class_names, images, out_png: Path, shown: int = MISTAKES_SHOWN) -> None:
    """A grid of the most confident mistakes (wrong predictions, highest confidence first).

    The few files shown are decoded again at a size people can see (the
    model's input may be 16 pixels); `images` is the fallback for a file
    that has gone since. Drawn with Pillow: a picture of pictures needs no
    axes, and matplotlib took 0.4 s to lay out and resample it (measured).
    """
    from PIL import Image, ImageDraw

    from tlcli.images import ImageDecodeError, decode_image

    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:shown]
    font = _font(11)
    if len(order) == 0:
        canvas = Image.new("RGB", (440, 160), "white")
        ImageDraw.Draw(canvas).text((220, 80), "no mistakes", fill="black", font=_font(18), anchor="mm")
        _save_image(canvas, out_png)
        return
    columns = min(4, len(order))
    rows = -(-len(order) // columns)
    tile, band, title, gap = MISTAKE_PIXELS, 34, 30, 8  # a caption band under each picture
    canvas = Image.new("RGB", (columns * (tile + gap) + gap, title + rows * (tile + band)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((canvas.width // 2, title // 2), "most confident mistakes (true -> predicted)", fill="black", font=_font(14), anchor="mm")
    for cell, index in enumerate(order):
        top, left = title + (cell // columns) * (tile + band), gap + (cell % columns) * (tile + gap)
        try:
            pixels = decode_image(paths[index], (tile, tile), 3)[0]
        except (ImageDecodeError, OSError):
            pixels = _tile(images[index], tile) if images is not None else None
        if pixels is not None:
            canvas.paste(Image.fromarray(pixels), (left, top))
        caption = f"{class_names[labels[index]]} -> {class_names[predicted[index]]} ({confidence[index]:.0%})\n{Path(str(paths[index])).name[:24]}"
        draw.multiline_text((left + tile // 2, top + tile + 3), caption, fill="black", font=font, anchor="ma", align="center")
    _save_image(canvas, out_png)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled font, when built with FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _save_image(image, path: Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    _write_bytes_atomic(path, buffer.getvalue())


def _tile(pixels, size: int) -> np.ndarray:
    """A stored model-input image (maybe 16 px, maybe grayscale) scaled up to a tile."""
    from PIL import Image

    pixels = np.asarray(pixels)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    return np.asarray(image.resize((size, size), Image.NEAREST))


def plot_curves(history_csv: Path, out_png: Path) -> bool:
    """Loss and accuracy per epoch from history.csv, the train/fine_tune boundary marked.

    Returns:
        False (and writes nothing) when history.csv is missing or empty.
    """
    try:
        rows = read_history(Path(history_csv))
    except OSError:
        return False
    if not rows:
        return False
    epochs = [int(r["epoch"]) for r in rows]
    from matplotlib.ticker import MaxNLocator

    figure = _figure(10, 4, margins={"left": 0.07, "right": 0.98, "bottom": 0.13, "top": 0.91, "wspace": 0.2})
    panels = figure.subplots(1, 2)
    for axes, metric in zip(panels, ("loss", "accuracy")):
        for key, style in ((metric, "-o"), (f"val_{metric}", "-s")):
            values = [_float(r.get(key)) for r in rows]
            if any(v is not None for v in values):
                axes.plot(epochs, [math.nan if v is None else v for v in values], style, markersize=3, label=key)
        # The phase boundary: the first epoch of a new phase.
        for previous, row in zip(rows, rows[1:]):
            if row["phase"] != previous["phase"]:
                boundary = int(previous["epoch"]) + 0.5
                axes.axvline(boundary, color="gray", linestyle="--")
                axes.annotate(
                    row["phase"], (boundary, 1), xycoords=("data", "axes fraction"), xytext=(3, -12), textcoords="offset points", fontsize=8, color="gray"
                )
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.legend()
    save_figure(figure, out_png)
    return True


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
