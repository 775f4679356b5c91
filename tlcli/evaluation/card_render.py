"""The text of `MODEL_CARD.md` (`tlcli.evaluation.model_card`): one function per section, each a list of lines
from the sources read, each saying so when its file is missing."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tlcli.evaluation.card_parts import (
    calibration_lines,
    evaluation_table,
    export_table,
    few_images,
    honesty,
    interval_text,
    trust_lines,
    uncertainty,
    usage_lines,
    value_text,
)
from tlcli.version import __version__

if TYPE_CHECKING:
    from tlcli.evaluation.model_card import CardSources

FEW_IMAGES = 20  # a class with fewer training images than this is named among the limitations
LISTED = 5  # label suspects and cross-split pairs named on the card (data_trust.json lists them all)
WIDE = 0.10  # an accuracy interval wider than this is named among the limitations


def render_card(s: CardSources, in_export: bool = False) -> str:
    """The whole card: front matter, then the sections in the order a reader asks their questions."""
    name = s.record.name if s.record is not None else s.run_dir.name
    lines = [*front_matter(s), "", f"# Model card: {name}", "", *intro(s, in_export)]
    for title, section in (
        ("What it classifies", classes),
        ("Base model and weights", base),
        ("Training data", training_data),
        ("Figures, with their 95% intervals", figures),
        ("Known limitations", limitations),
        ("How to use it", usage),
        ("Exported formats", exported),
        ("Provenance", provenance),
    ):
        lines += ["", f"## {title}", "", *(section(s, in_export) if section in (usage, exported) else section(s))]
    if s.notes:
        lines += ["", "## Files the card could not read", "", *(f"- {note}" for note in s.notes)]
    return "\n".join(lines) + "\n"


def _yaml(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON is YAML: quoting is always right


def front_matter(s: CardSources) -> list[str]:
    """Hugging Face-style metadata: library, base, task, classes, and each final accuracy with its interval."""
    lines = ["---", "library_name: tlcli", "pipeline_tag: image-classification"]
    lines.append(f"base_model: {_yaml(s.info.base_name if s.info else None)}")
    lines.append(f"base_weights: {_yaml(weights_word(s))}")
    lines.append(f"task: {_yaml(s.info.task if s.info else None)}")
    lines.append(f"classes: {_yaml(s.labels)}")
    metrics = s.metrics
    rows = []
    for key, value in (metrics.final if metrics else {}).items():
        split, _, figure = key.partition("_")
        if figure != "loss":
            rows.append({"split": split, "name": figure, "value": value, "interval_95": metrics.intervals.get(key)})
    lines += ["metrics:", *(f"- {_yaml(row)}" for row in rows)] if rows else ["metrics: []"]
    return [*lines, "---"]


def intro(s: CardSources, in_export: bool) -> list[str]:
    where = f"the copy in an export of the run `{s.run_dir}`" if in_export else f"run folder `{s.run_dir}`"
    return [
        f"An image classifier trained with tlcli ({where}). Written by "
        f"tlcli {__version__} from the run's own files; `tlcli evaluate` and `tlcli export` bring it up to date."
    ]


def classes(s: CardSources) -> list[str]:
    if s.labels is None:
        return ["Unknown: labels.json is missing or damaged."]
    names = ", ".join(f"`{name}`" for name in s.labels)
    info = s.info
    if info is not None and info.multi_label:
        how = "any number of them per image: one sigmoid per class, a label given at or above its class's threshold"
        thresholds = ", ".join(f"`{n}` {t:.3f}" for n, t in zip(s.labels, info.thresholds or ()))
        how += f" ({thresholds})" if thresholds else ""
    elif info is not None and info.binary:
        how = f"one per image: a single sigmoid giving the probability of `{s.labels[-1]}`"
    else:
        how = "one per image: a softmax over the classes"
    return [f"{len(s.labels)} classes, in output order: {names}.", "", f"It answers {how}."]


def weights_word(s: CardSources) -> str | None:
    """The base's weights in one word or path: imagenet, none, run:<name>, or the weights file."""
    if s.config is None:
        return None if s.info is None else ("pretrained" if s.info.pretrained else "none")
    return f"run:{s.config.base.run}" if s.config.base.run else s.config.base.weights


def base(s: CardSources) -> list[str]:
    info, config = s.info, s.config
    name = info.base_name if info else (config.base.name if config else "unknown (model.json is missing)")
    if config is None:
        origin = (
            "unknown: config.yaml is missing"
            if info is None
            else f"{'pretrained' if info.pretrained else 'random initialisation'} (config.yaml is missing: the "
            "source of the weights is not recorded)"
        )
    elif config.base.run:
        origin = f"the model of the earlier tlcli run `{config.base.run}`, its head removed (transfer from that run)"
    elif config.base.weights == "imagenet":
        origin = f"ImageNet, as published with `keras.applications.{name}` (downloaded by Keras)"
    elif config.base.weights == "none":
        origin = "none: random initialisation, everything learned from this run's images"
    else:
        origin = f"the weights file `{config.base.weights}`"
    lines = [
        f"- Base: `{name}`" + (f" with arguments `{_yaml(config.base.args)}`" if config and config.base.args else "")
    ]
    lines.append(f"- Weights: {origin}")
    if info is not None:
        size = "x".join(map(str, info.image_size))
        lines.append(f"- Input: {size} pixels, {info.channels} channel(s); preprocessing `{info.preprocess}`")
    if s.metrics is not None and s.metrics.epochs:
        phases = ", ".join(f"{k} {v}" for k, v in s.metrics.epochs.items() if k != "total")
        lines.append(f"- Trained for {s.metrics.epochs.get('total', 0)} epoch(s) ({phases})")
    return lines


def training_data(s: CardSources) -> list[str]:
    """Images per split and class, and where each split came from (dataset.json)."""
    data = s.dataset if isinstance(s.dataset, dict) else None
    if data is None:
        return ["Unknown: dataset.json is missing (the run stopped before its first pass over the files)."]
    counts, sources = data.get("counts") or {}, data.get("sources") or {}
    names = s.labels or sorted({c for split in counts.values() if isinstance(split, dict) for c in split})
    lines = ["| split | images | " + " | ".join(f"`{n}`" for n in names) + " | from |"]
    lines.append("| --- | ---: | " + " | ".join("---:" for _ in names) + " | --- |")
    for split in ("train", "val", "test"):
        row = counts.get(split)
        if isinstance(row, dict):
            cells = " | ".join(str(row.get(n, 0)) for n in names)
            images = s.metrics.images.get(split) if s.metrics is not None else None  # multi-label: not the sum
            lines.append(f"| {split} | {images or sum(row.values())} | {cells} | {sources.get(split, '')} |")
    skipped = (s.metrics.images.get("skipped") if s.metrics else None) or 0
    if s.info is not None and s.info.multi_label:
        lines += ["", "Per class: the images carrying that label (an image may carry several, or none)."]
    lines += ["", f"{skipped} file(s) skipped as unreadable (skipped_files.json)."]
    if data.get("fingerprint"):
        lines.append(f"Dataset fingerprint `{str(data['fingerprint'])[:16]}` (dataset.json).")
    return lines


def figures(s: CardSources) -> list[str]:
    """Training's final figures (metrics.json), then the newest evaluation of each split's own files."""
    metrics = s.metrics
    if metrics is None:
        lines = ["Training's figures are unknown: metrics.json is missing (the run did not complete)."]
    else:
        lines = ["At the end of training (metrics.json; Wilson intervals):", ""]
        lines += [
            "| split | images | figure | value | 95% interval | the split was |",
            "| --- | ---: | --- | ---: | --- | --- |",
        ]
        for key, value in metrics.final.items():
            split, _, figure = key.partition("_")
            used = metrics.figures.get(split, "")
            images = metrics.images.get(split, "")
            lines.append(
                f"| {split} | {images} | {figure} | {value_text(value)} | "
                f"{interval_text(metrics.intervals.get(key))} | {used} |"
            )
        if metrics.format_version < 2:
            lines += ["", "An older run (metrics.json format 1): these intervals were computed for this card."]
    for split in ("test", "val"):
        if split in s.evals:
            lines += ["", *evaluation_table(split, *s.evals[split])]
    if not s.evals:
        lines += ["", "No evaluation of the run's own splits in eval/: `tlcli evaluate RUN_DIR` writes one."]
    return lines


def limitations(s: CardSources) -> list[str]:
    lines = few_images(s, FEW_IMAGES) + uncertainty(s, WIDE) + honesty(s) + trust_lines(s, LISTED)
    lines += calibration_lines(s)
    if s.info is None or not s.info.multi_label:
        lines.append(
            "- It knows only its classes: every image gets one of them, an image of none of them included "
            "(there is no 'unknown' answer)."
        )
    return lines


def usage(s: CardSources, in_export: bool) -> list[str]:
    return usage_lines(s, in_export)


def exported(s: CardSources, in_export: bool) -> list[str]:
    if not s.exports:
        return ["Not exported yet: `tlcli export RUN_DIR` writes SavedModel, TFLite and ONNX, each checked against it."]
    lines: list[str] = []
    for summary in s.exports:
        lines += [*(["This export:"] if in_export else [f"`{summary.label}`:"]), "", *export_table(summary), ""]
    return lines[:-1]


def provenance(s: CardSources) -> list[str]:
    env = s.env if isinstance(s.env, dict) else {}
    record = s.record
    lines = []
    if record is not None:
        took = f", trained in {s.metrics.wall_time_s:.0f} s" if s.metrics is not None and s.metrics.wall_time_s else ""
        lines.append(f"- Run `{record.name}`: started {record.started}{took}")
    if env:
        versions = ", ".join(f"{k} {env[k]}" for k in ("tlcli", "tensorflow", "keras", "python") if env.get(k))
        lines.append(f"- Trained with {versions}; seed {env.get('seed')}")
        git = env.get("git") or {}
        if isinstance(git, dict) and git.get("commit"):
            lines.append(f"- Code at git commit `{git['commit']}`{' (with local changes)' if git.get('dirty') else ''}")
    else:
        lines.append("- env.json is missing: the versions it was trained with are not recorded")
    return lines
