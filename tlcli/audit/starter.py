"""`init_config`: a folder of images in, a commented starting config out (`tlcli init`).

The survey (`tlcli.data.survey`) takes seconds; `deep` also embeds the training images with the config's own base
(through the feature cache `tlcli train` of the config then reuses) and writes the per-class learning curve's advice:
whether more images or fine-tuning is the better next step.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlcli.audit.api import audit_embeddings
from tlcli.audit.curve import LearningCurve
from tlcli.audit.embed import DEFAULT_WEIGHTS_FILE, embed_splits, embedding_config
from tlcli.config.json_schema import SCHEMA_FILE, config_json_schema_text
from tlcli.config.loading import validate_config
from tlcli.data.splits import discover_splits
from tlcli.data.starter import StarterChoices, run_name, starter_config
from tlcli.data.survey import FolderSurvey, survey_folder
from tlcli.errors import UserError
from tlcli.paths import keras_weights_dir
from tlcli.progress import Reporter
from tlcli.runs.atomic import write_text_atomic

# Bases whose ImageNet weights people place offline (../shared/weights): the file Keras looks for, and the
# constructor arguments that file is for.
OFFLINE_WEIGHTS: dict[str, tuple[str, dict[str, Any]]] = {
    "MobileNetV2": (DEFAULT_WEIGHTS_FILE, {}),
    "MobileNet": ("mobilenet_2_5_224_tf_no_top.h5", {"alpha": 0.25}),
}
# The repository's copy of the JSON Schema (absent from an installed wheel: then one is written beside the config).
REPOSITORY_SCHEMA = Path(__file__).resolve().parents[2] / SCHEMA_FILE
PROBE_ENOUGH = 0.97  # cross-validated probe accuracy from which the head alone is the advice
PROBE_LOOSE = 0.93  # below it, the ImageNet features fit the images loosely: fine-tuning is the advice


@dataclass(frozen=True)
class InitResult:
    """What `init_config` wrote: the config (and the schema file when it wrote one), from what survey."""

    path: Path
    text: str
    survey: FolderSurvey
    schema_written: Path | None = None
    learning_curve: LearningCurve | None = None
    advice: tuple[str, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = field(default_factory=tuple)  # what to do before training (weights to import)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "schema_written": str(self.schema_written) if self.schema_written else None,
            "survey": self.survey.to_dict(),
            "learning_curve": self.learning_curve.to_dict() if self.learning_curve else None,
            "advice": list(self.advice),
            "notes": list(self.notes),
        }


def init_config(
    data_dir: str | Path,
    output: str | Path = "config.yaml",
    *,
    base: str = "MobileNetV2",
    deep: bool = False,
    force: bool = False,
    reporter: Reporter | None = None,
) -> InitResult:
    """Survey `data_dir` and write a commented starting config to `output` that `tlcli validate` accepts.

    Args:
        base: a keras.applications base name (ImageNet weights).
        deep: also embed the training images and write the learning curve's advice (needs the base's weights).
        force: overwrite an existing `output`.

    Raises:
        UserError: `output` exists and `force` is off.
        DataError: the folder cannot be listed (as training lists it).
        ConfigError: `deep` and the base cannot be built (unknown name, weights missing offline).
    """
    output = Path(output)
    if output.exists() and not force:
        raise UserError(f"output: {output} already exists; pass --force to overwrite it, or choose another file")
    survey = survey_folder(data_dir)
    weights_file, args = OFFLINE_WEIGHTS.get(base, ("", {}))
    schema, schema_written = _schema_reference(output)
    choices = StarterChoices(
        name=run_name(Path(data_dir).resolve().name),
        base=base,
        base_args=args if (keras_weights_dir() / weights_file).is_file() else {},
        weights_note=_weights_note(weights_file),
        schema=schema,
        val_split=0.2,
    )
    curve, advice = _deep_advice(choices, survey, reporter) if deep else (None, ())
    text = starter_config(survey, dataclasses.replace(choices, advice=tuple(advice)))
    _validated(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output, text)
    found = "found in" in choices.weights_note
    notes = () if found else (f"base {base}: {choices.weights_note}",)
    return InitResult(output, text, survey, schema_written, curve, tuple(advice), notes)


def _weights_note(weights_file: str) -> str:
    if weights_file and (keras_weights_dir() / weights_file).is_file():
        return f"ImageNet weights found in {keras_weights_dir()}"
    if weights_file:
        return f"offline: `tlcli weights import path/to/{weights_file}` first (online, Keras downloads it)"
    return "ImageNet weights: Keras downloads them on first use (offline: `tlcli weights import FILE`)"


def _schema_reference(output: Path) -> tuple[str, Path | None]:
    """The `$schema` path relative to the config's folder: the repository's schema, else a copy written beside it."""
    if REPOSITORY_SCHEMA.is_file():
        return Path(os.path.relpath(REPOSITORY_SCHEMA, output.absolute().parent)).as_posix(), None
    beside = output.absolute().parent / SCHEMA_FILE
    if not beside.exists():
        beside.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(beside, config_json_schema_text())
        return SCHEMA_FILE, beside
    return SCHEMA_FILE, None


def _validated(text: str) -> None:
    """The written config passes the schema (a failure here is tlcli's bug, not the user's)."""
    import yaml

    validate_config(yaml.safe_load(text))


def _deep_advice(
    choices: StarterChoices, survey: FolderSurvey, reporter: Reporter | None
) -> tuple[LearningCurve | None, list[str]]:
    """The training images' learning curve with the config's base, and what it advises."""
    import yaml

    config = validate_config(yaml.safe_load(starter_config(survey, choices)))
    splits = dataclasses.replace(discover_splits(config.data, seed=config.seed), test=[])  # test/ stays unseen
    embeddings = embed_splits(splits, embedding_config(config.data, config=config), reporter=reporter)
    report = audit_embeddings(embeddings, near_duplicates=False, label_suspects=False, learning_curve=True)
    curve = report.learning_curve
    if curve is None:
        return None, [note for note in report.notes if note.startswith("learning curve")]
    return curve, advice_from_curve(curve)


def advice_from_curve(curve: LearningCurve) -> list[str]:
    """The next step a learning curve points to, then one line per class."""
    accuracy = curve.accuracy[-1]
    figure = f"probe accuracy {accuracy:.3f} on {curve.folds}-fold cross-validation of the training images"
    if accuracy >= PROBE_ENOUGH:
        step = f"{figure}: the frozen base already separates these classes; the head alone is likely enough."
    elif accuracy < PROBE_LOOSE:
        step = f"{figure}: ImageNet features fit these images loosely; fine-tuning (below) is likely to pay."
    else:
        step = f"{figure}: fine-tuning may add a little; try the head alone first."
    more = f"More images of {', '.join(curve.climbing)} would still help (their accuracy is climbing)."
    return [step, *([more] if curve.climbing else []), *(c.advice for c in curve.classes)]
