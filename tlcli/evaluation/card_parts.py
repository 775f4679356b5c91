"""Parts of `MODEL_CARD.md` with some reading to do: an evaluation's table, the limitations, the loading snippet and
an export's parity table (`tlcli.evaluation.card_render` puts them in order)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tlcli.evaluation.model_card import CardSources, ExportSummary


def dotted(data: Any, key: str) -> Any:
    """`data["per_class"]["a"]["recall"]` for `per_class.a.recall` (a class name holding dots is tried whole)."""
    if not isinstance(data, dict):
        return None
    if key in data:
        return data[key]
    head, _, rest = key.partition(".")
    while rest:
        if head in data:
            found = dotted(data[head], rest)
            if found is not None:
                return found
        more, _, rest = rest.partition(".")
        head = f"{head}.{more}"
    return None


def interval_text(interval: Any) -> str:
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        return f"{interval[0]:.3f} to {interval[1]:.3f}"
    return "none"


def value_text(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def evaluation_table(split: str, folder: str, data: dict[str, Any]) -> list[str]:
    """An evaluation's figures with their intervals (its metrics.json `intervals`), then loss and calibration."""
    dataset = data.get("dataset") or {}
    lines = [
        f"`eval/{folder}` ({dataset.get('images', data.get('images', '?'))} {split} images, {data.get('created')}):"
    ]
    lines += ["", "| figure | value | 95% interval |", "| --- | ---: | --- |"]
    intervals = data.get("intervals") if isinstance(data.get("intervals"), dict) else {}
    for key, interval in intervals.items():
        lines.append(f"| {key} | {value_text(dotted(data, key))} | {interval_text(interval)} |")
    for key in ("macro_avg.f1", "loss", "calibration.ece"):
        if key not in intervals and dotted(data, key) is not None:
            lines.append(f"| {key} | {value_text(dotted(data, key))} | |")
    return lines


def few_images(s: CardSources, fewest: int) -> list[str]:
    counts = ((s.dataset or {}).get("counts") or {}).get("train") if isinstance(s.dataset, dict) else None
    if not isinstance(counts, dict):
        return ["- Images per class unknown (dataset.json is missing)."]
    few = {name: n for name, n in counts.items() if isinstance(n, int) and n < fewest}
    if not few:
        return []
    listed = ", ".join(f"`{name}` {n}" for name, n in few.items())
    return [f"- Few training images (under {fewest}): {listed}. Expect its figures on these classes to be rough."]


def uncertainty(s: CardSources, wide: float) -> list[str]:
    """Accuracies whose 95% interval is wider than `wide`: more images would narrow them."""
    if s.metrics is None:
        return []
    lines = []
    for key, (low, high) in s.metrics.intervals.items():
        if high - low > wide:
            split = key.partition("_")[0]
            lines.append(
                f"- `{key}` is only known to within {low:.3f} to {high:.3f} (95%, on {s.metrics.images.get(split)} "
                f"images): more {split} images would narrow it."
            )
    return lines


def honesty(s: CardSources) -> list[str]:
    """Splits whose figures are not an honest estimate: training chose something on them."""
    if s.metrics is None:
        return []
    lines = [
        f"- The {split} figures are optimistic; training used that split: {used}."
        for split, used in s.metrics.figures.items()
        if used != "untouched"
    ]
    if s.metrics.figures and s.metrics.untouched_split is None:
        lines.append("- No split was left untouched: no figure here is an unbiased estimate (add a test split).")
    return lines


def trust_lines(s: CardSources, listed: int) -> list[str]:
    """Near-duplicates across splits and label suspects (metrics.json `data_trust`, data_trust.json)."""
    record = s.metrics.data_trust if s.metrics is not None else None
    if not isinstance(record, dict):
        return ["- Near-duplicates and label suspects: not searched (a run from before tlcli searched them)."]
    if record.get("skipped"):
        return [f"- Near-duplicates and label suspects: not searched ({record['skipped']}); `tlcli check --deep`."]
    lines = []
    near = s.trust.near_duplicates if s.trust is not None else None
    if record.get("leakage"):
        pairs = [p for p in (near.confirmed if near is not None else ()) if p.cross_split]
        lines.append(
            f"- Leakage: {record['leakage']} near-duplicate pair(s) cross the splits (data_trust.json): the figures "
            "of the split holding the copies are optimistic."
        )
        lines += [f"  - `{p.a}` ({p.split_a}) and `{p.b}` ({p.split_b})" for p in pairs[:listed]]
    elif record.get("leakage") == 0:
        lines.append("- No near-duplicate crosses the splits (data_trust.json).")
    if record.get("label_suspects"):
        found = s.trust.label_suspects if s.trust is not None else None
        lines.append(
            f"- Label suspects: {record['label_suspects']} training or validation image(s) whose label the data doubts:"
        )
        lines += [
            f"  - `{row.path}` ({row.split}): labelled `{row.given}`, looks like `{row.suggested}` "
            f"({row.confidence:.2f})"
            for row in (found.suspects if found is not None else ())[:listed]
        ]
    elif record.get("label_suspects") == 0:
        lines.append("- No label suspect among the training and validation images.")
    for split, (folder, data) in s.evals.items():
        copies = data.get("training_copies") or {}
        if copies.get("known") and copies.get("images"):
            lines.append(
                f"- {copies['images']} of the {split} images are near-copies of training images (`eval/{folder}`): "
                f"accuracy {value_text(copies.get('accuracy'))} with them, "
                f"{value_text(copies.get('accuracy_without'))} without."
            )
    return lines


def calibration_lines(s: CardSources) -> list[str]:
    found = [
        (split, data["calibration"]["ece"], data.get("images"))
        for split, (_, data) in s.evals.items()
        if isinstance(data.get("calibration"), dict) and isinstance(data["calibration"].get("ece"), (int, float))
    ]
    if not found:
        return ["- Calibration not measured (no evaluation of the run's own splits with a calibration figure)."]
    return [
        f"- Calibration: on {split} ({n} images) its confidence is off from its accuracy by {ece:.3f} on average "
        "(expected calibration error, 10 bins): read a confidence as a ranking, not as a probability."
        for split, ece, n in found
    ]


def usage_lines(s: CardSources, in_export: bool) -> list[str]:
    """The input contract, a Keras snippet on model.keras, and the tlcli commands."""
    info = s.info
    if info is None:
        return ["Unknown: model.json is missing, so the model's input is not recorded."]
    height, width = info.image_size
    mode = "RGB" if info.channels == 3 else "L"
    lines = [
        f"Input: {mode} images resized to {width}x{height} (bilinear), as **0-255** float32 pixels, batch first "
        f"`(n, {height}, {width}, {info.channels})`; the base's preprocessing (`{info.preprocess}`) is inside the "
        "model, so do not scale or normalise them.",
        "",
        "```python",
        "import json",
        "",
        "import keras",
        "import numpy as np",
        "from PIL import Image",
        "",
        f'model = keras.models.load_model("{s.run_dir / "model.keras" if in_export else "model.keras"}")',
        f'labels = json.load(open("{s.run_dir / "labels.json" if in_export else "labels.json"}"))',
        f'image = Image.open("photo.jpg").convert("{mode}").resize(({width}, {height}), Image.BILINEAR)',
        'pixels = np.asarray(image, dtype="float32")' + ("[..., None]" if mode == "L" else ""),
        "probabilities = model.predict(pixels[None], verbose=0)[0]",
        *_answer(info),
        "```",
        "",
        f"With tlcli: `tlcli predict photos/ --run {s.run_dir}` (decodes images exactly as training did; "
        f"`--explain DIR` adds Grad-CAM overlays), `tlcli evaluate {s.run_dir}` for the full report.",
    ]
    if in_export:
        lines += [
            "",
            "This folder's artifacts take the same input (tflite-int8: uint8) and give the same output, in "
            "labels.txt order: `tlcli predict --model THIS_FOLDER/<artifact> photos/`; export.json names each "
            "artifact's tensors.",
        ]
    return lines


def _answer(info) -> list[str]:
    if info.multi_label:
        return [
            f"thresholds = {list(info.thresholds or ())}",
            "print([name for name, p, t in zip(labels, probabilities, thresholds) if p >= t])",
        ]
    if info.binary:
        return ["p = float(probabilities[0])  # the probability of labels[1]", "print(labels[int(p >= 0.5)], p)"]
    return ["print(labels[int(probabilities.argmax())], float(probabilities.max()))"]


def export_table(summary: ExportSummary) -> list[str]:
    """Each format's file, size and parity against model.keras (export.json)."""
    images = f" on {summary.parity_images} validation images" if summary.parity_images else ""
    lines = [f"Created {summary.created}; parity against model.keras{images}:", ""]
    lines += [
        "| format | file | size | agreement | max abs. prob. difference | accuracy (Keras) | gate |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for name, entry in summary.formats.items():
        parity = entry.get("parity") if isinstance(entry.get("parity"), dict) else {}
        size = f"{entry['bytes'] / 1e6:.2f} MB" if isinstance(entry.get("bytes"), (int, float)) else "?"
        difference = parity.get("max_difference")
        lines.append(
            f"| `{name}` | `{entry.get('file')}` | {size} | {value_text(parity.get('agreement'))} | "
            f"{f'{difference:.2g}' if isinstance(difference, float) else value_text(difference)} | "
            f"{value_text(parity.get('accuracy'))} ({value_text(parity.get('keras_accuracy'))}) | "
            f"{'pass' if entry.get('passed', True) else '**fail**'} |"
        )
    return lines
