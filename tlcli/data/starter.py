"""A commented starting config for a surveyed folder (`tlcli init`): the smallest recipe that trains well.

The recipe is the reference run's (configs/hymenoptera-mobilenetv2.yaml): a head on a frozen ImageNet base at 224 px,
trained on cached features until the validation loss stops improving (`epochs: auto`), with class weights when the
classes are imbalanced and a held-out split when there is no validation folder. Fine-tuning is written commented out,
with when it pays. Every key left out takes its default (`tlcli validate FILE --print-config` shows them all).
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tlcli.data.survey import FolderSurvey

IMAGE_SIZE = 224  # the size the ImageNet weights were trained at (other sizes need other weight files offline)
IMBALANCE_FOR_WEIGHTS = 1.5  # largest over smallest training class from which `class_weight: auto` is written
_PLAIN = re.compile(r"[A-Za-z0-9_./~+-][A-Za-z0-9_./~+ -]*")


@dataclass(frozen=True)
class StarterChoices:
    """What `tlcli init` decided beyond the survey: the run's name, the base, and notes to write as comments."""

    name: str
    base: str = "MobileNetV2"
    base_args: dict[str, Any] = field(default_factory=dict)
    weights_note: str = ""  # where the base's ImageNet weights come from
    schema: str = ""  # the `$schema` path or URL for editors ("" = no line)
    val_split: float = 0.2
    advice: Sequence[str] = ()  # `--deep`: the learning curve's advice, one comment line each


def run_name(text: str) -> str:
    """A run name (`name:` allows letters, digits, `.`, `_`, `-`) from a folder name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:64]
    return slug or "experiment"


def yaml_scalar(text: str) -> str:
    """A string as YAML writes it: plain when safe, else double-quoted (JSON's quoting is YAML's)."""
    words = {"yes", "no", "on", "off", "true", "false", "null", "y", "n", "~"}
    plain = _PLAIN.fullmatch(text) and text.lower() not in words and not re.fullmatch(r"[-+.\d]+", text)
    return text if plain else json.dumps(text)


def starter_config(survey: FolderSurvey, choices: StarterChoices) -> str:
    """The commented YAML text of a starting config for `survey`'s folder."""
    lines = _header(survey, choices)
    lines += [f"name: {choices.name}", "data:", *_data_lines(survey, choices), *_model_lines(choices)]
    lines += ["train:", *_train_lines(survey)]
    lines += _fine_tune_lines(choices)
    return "\n".join(lines) + "\n"


def _header(survey: FolderSurvey, choices: StarterChoices) -> list[str]:
    today = datetime.date.today().isoformat()
    lines = [f"# yaml-language-server: $schema={choices.schema}"] if choices.schema else []
    names = ", ".join(survey.class_names[:8]) + (", ..." if len(survey.class_names) > 8 else "")
    splits = ", ".join(f"{split} {survey.images(split)}" for split in survey.counts)
    lines += [
        f"# Written by `tlcli init` on {today}: a starting point to edit. `tlcli validate FILE` checks it, `tlcli",
        "# train FILE` trains it; `tlcli validate FILE --print-config` lists every key with its default.",
        f"# {survey.data_dir}: {len(survey.class_names)} classes ({names}); images: {splits}.",
        f"# Image sizes: {survey.sizes.describe()}.",
    ]
    if survey.sizes.unreadable or survey.ignored:
        lines.append(
            f"# {survey.sizes.unreadable} sampled headers unreadable, {survey.ignored} files ignored: "
            "`tlcli check DATA_DIR` lists them (training skips what it cannot decode)."
        )
    return lines + [""]


def _data_lines(survey: FolderSurvey, choices: StarterChoices) -> list[str]:
    root = Path(survey.data_dir)
    where = ", ".join(f"{split}: {_below(root, source)}" for split, source in survey.sources.items())
    relative = "relative to where you run tlcli; " if not root.is_absolute() else ""
    lines = [f"  dir: {yaml_scalar(survey.data_dir)}    # {relative}{where}"]
    if not survey.val_folder:
        lines.append(
            f"  val_split: {choices.val_split}    # no validation folder: this fraction of train is held out, "
            "by a hash of each path (stable as the folder grows)"
        )
    if survey.test_folder:
        lines.append("  # test/ found: scored once after training, never used for training or selection")
    median = f"{survey.sizes.median_width}x{survey.sizes.median_height}"
    resize = "upscaled" if max(survey.sizes.median_width, survey.sizes.median_height) < IMAGE_SIZE else "resized"
    lines.append(
        f"  image_size: {IMAGE_SIZE}    # the ImageNet weights' size; your images (median {median}) are {resize}"
    )
    lines.append("  batch_size: 32")
    return lines


def _below(root: Path, source: str) -> str:
    """A split's source as the config's reader sees it: `train/` rather than the full path."""
    path = Path(source)
    return f"{path.relative_to(root).as_posix()}/" if path.is_relative_to(root) and path != root else source


def _model_lines(choices: StarterChoices) -> list[str]:
    note = f"    # {choices.weights_note}" if choices.weights_note else ""
    lines = ["base:", f"  name: {choices.base}{note}", "  weights: imagenet"]
    if choices.base_args:
        args = ", ".join(f"{key}: {value}" for key, value in choices.base_args.items())
        lines.append(f"  args: {{{args}}}")
    lines.append("  trainable: none    # frozen: the head trains on features computed once and cached")
    return lines + ["head:", "  pooling: avg"]


def _train_lines(survey: FolderSurvey) -> list[str]:
    lines = ["  epochs: auto    # until the validation loss stops improving; seconds an epoch on cached features"]
    if not survey.test_folder:
        lines.append(
            "  refit: false    # no test/ folder: validation stays untouched, so its figures are honest estimates "
            "(true: the head also learns from it)"
        )
    if survey.imbalance >= IMBALANCE_FOR_WEIGHTS:
        train = survey.counts["train"]
        few, many = min(train, key=train.get), max(train, key=train.get)
        lines.append(
            f"  class_weight: auto    # imbalanced: {many} {train[many]} vs {few} {train[few]} training images "
            f"({survey.imbalance:.1f}x); each class weighted inversely to its count"
        )
    return lines


def _fine_tune_lines(choices: StarterChoices) -> list[str]:
    lines = [""]
    if choices.advice:
        lines += ["# What the data says (`tlcli init --deep`: a probe on the base's features, cross-validated):"]
        lines += [*(f"#   {line}" for line in choices.advice), ""]
    return lines + [
        "# Fine-tuning the top of the base after the head: slower (the base runs every epoch), worth most on images",
        "# unlike ImageNet's photos (satellite, microscope: benchmarks/FINETUNE.md). Uncomment to try it:",
        "# fine_tune:",
        "#   epochs: auto",
        "#   unfreeze: 0.75    # the top three quarters of the base's layers",
        "#   when: auto        # skipped when the head misses fewer than 5 validation images (always: run it)",
    ]
