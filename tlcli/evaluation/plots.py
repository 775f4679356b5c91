"""The pictures of a report: confusion matrix, reliability diagram, most confident mistakes, training curves.

Plots use matplotlib's object API on an Agg canvas (no pyplot), so they never
need a display and never touch global figure state; matplotlib is imported
inside the functions, so `import tlcli` stays light. Every picture is rendered
to memory and written atomically (a crash never leaves half a PNG).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlcli.data.images import ImageDecodeError, decode_image
from tlcli.runs.atomic import write_bytes_atomic

MISTAKES_SHOWN = 16
MISTAKE_PIXELS = 160  # display size of each mistake


def read_history(history_csv: Path) -> list[dict[str, str]]:
    with open(history_csv, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def new_figure(width: float, height: float, margins: dict[str, float] | None = None):
    """A figure on an Agg canvas; fixed `margins` (subplots_adjust) where the labels are known,
    else constrained layout, which fits any label but costs about 0.1 s a figure (measured)."""
    from matplotlib.figure import Figure

    if margins is None:
        return Figure(figsize=(width, height), layout="constrained")
    figure = Figure(figsize=(width, height))
    figure.subplots_adjust(**margins)
    return figure


def savefigure(figure, path: Path, dpi: int = 110) -> None:
    """Render to memory, then write atomically (a crash never leaves half a PNG)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    write_bytes_atomic(path, buffer.getvalue())


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], out_png: Path) -> None:
    n = len(class_names)
    size = min(4 + 0.45 * n, 24)
    figure = new_figure(size + 1, size)
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
            axes.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=8 if n > 10 else 10,
                color="white" if top and count > top / 2 else "black",
            )
    savefigure(figure, out_png)


def plot_reliability(calibration_record: dict[str, Any], out_png: Path) -> None:
    bins = calibration_record["bins"]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"]
    accuracy = [b["accuracy"] or 0.0 for b in bins]
    counts = [b["count"] for b in bins]
    figure = new_figure(5, 6, margins={"left": 0.15, "right": 0.94, "bottom": 0.09, "top": 0.94, "hspace": 0.08})
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
    savefigure(figure, out_png)


def plot_mistakes(
    probabilities, labels, paths, class_names, images, out_png: Path, shown: int = MISTAKES_SHOWN
) -> None:
    """A grid of the most confident mistakes (wrong predictions, highest confidence first).

    The few files shown are decoded again at a size people can see (the
    model's input may be 16 pixels); `images` is the fallback for a file
    that has gone since. Drawn with Pillow: a picture of pictures needs no
    axes, and matplotlib took 0.4 s to lay out and resample it (measured).
    """
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:shown]
    captions = [f"{class_names[labels[i]]} -> {class_names[predicted[i]]} ({confidence[i]:.0%})" for i in order]
    _picture_grid(order, captions, "most confident mistakes (true -> predicted)", paths, images, out_png)


def plot_label_mistakes(
    probabilities, labels, thresholds, paths, class_names, images, out_png: Path, shown: int = MISTAKES_SHOWN
) -> None:
    """Multi-label: the images whose wrong decisions are the most confident (a missed label scored near 0, a spurious
    one near 1)."""
    predicted = probabilities >= np.asarray(thresholds)[None, :]
    truth = np.asarray(labels) == 1
    wrongness = np.where(predicted != truth, np.abs(probabilities - truth), 0.0)
    worst = wrongness.max(axis=1)
    order = np.flatnonzero(worst > 0)
    order = order[np.argsort(-worst[order], kind="stable")][:shown]
    captions = []
    for i in order:
        missed = [class_names[c] for c in np.flatnonzero(truth[i] & ~predicted[i])]
        spurious = [class_names[c] for c in np.flatnonzero(predicted[i] & ~truth[i])]
        captions.append(
            " ".join(
                part
                for part in ("-" + ",".join(missed) if missed else "", "+" + ",".join(spurious) if spurious else "")
                if part
            )[:40]
        )
    _picture_grid(order, captions, "most confident wrong labels (-missed +spurious)", paths, images, out_png)


def _picture_grid(order, captions: list[str], title_text: str, paths, images, out_png: Path) -> None:
    from PIL import Image, ImageDraw

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
    draw.text((canvas.width // 2, title // 2), title_text, fill="black", font=_font(14), anchor="mm")
    for cell, (index, caption) in enumerate(zip(order, captions)):
        top, left = title + (cell // columns) * (tile + band), gap + (cell % columns) * (tile + gap)
        try:
            pixels = decode_image(paths[index], (tile, tile), 3)[0]
        except (ImageDecodeError, OSError):
            pixels = _tile(images[index], tile) if images is not None else None
        if pixels is not None:
            canvas.paste(Image.fromarray(pixels), (left, top))
        draw.multiline_text(
            (left + tile // 2, top + tile + 3),
            f"{caption}\n{Path(str(paths[index])).name[:24]}",
            fill="black",
            font=font,
            anchor="ma",
            align="center",
        )
    _save_image(canvas, out_png)


def plot_pr_curves(probabilities, labels, class_names, thresholds, out_png: Path, shown: int = 20) -> None:
    """Each class's precision-recall curve (the `shown` most frequent classes), its average precision in the legend
    and a dot where its threshold operates."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    labels = np.asarray(labels)
    figure = new_figure(7, 6)
    axes = figure.add_subplot()
    classes = [c for c in np.argsort(-labels.sum(axis=0), kind="stable")[:shown] if labels[:, c].sum() > 0]
    for c in classes:
        precision, recall, _ = precision_recall_curve(labels[:, c], probabilities[:, c])
        line = axes.step(
            recall,
            precision,
            where="post",
            label=f"{class_names[c]} (AP {average_precision_score(labels[:, c], probabilities[:, c]):.3f})",
        )[0]
        chosen = probabilities[:, c] >= thresholds[c]
        hits = int((chosen & (labels[:, c] == 1)).sum())
        axes.plot(
            [hits / labels[:, c].sum()], [hits / chosen.sum() if chosen.sum() else 1.0], "o", color=line.get_color()
        )
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title("precision-recall per class (dot: the class's threshold)")
    if classes:
        axes.legend(loc="lower left", fontsize=8)
    savefigure(figure, out_png)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled font, when built with FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _save_image(image, path: Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


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

    figure = new_figure(10, 4, margins={"left": 0.07, "right": 0.98, "bottom": 0.13, "top": 0.91, "wspace": 0.2})
    panels = figure.subplots(1, 2)
    second = "accuracy" if "accuracy" in rows[0] else "map"  # multi-label runs: mean average precision
    for axes, metric in zip(panels, ("loss", second)):
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
                    row["phase"],
                    (boundary, 1),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, -12),
                    textcoords="offset points",
                    fontsize=8,
                    color="gray",
                )
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.legend()
    savefigure(figure, out_png)
    return True


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
