"""`audit_dataset`: embed a labelled folder once, then ask the embeddings what to trust.

Near-duplicates are searched over every split (a copy in the test folder is the leakage that matters most); label
suspects over the training and validation images (the test folder is excluded: relabelling it from what a probe
predicts would tune the figure it exists to give honestly); the learning curve over the training images. The folds
of both keep near-duplicate clusters, and `data.group`'s groups, whole.
"""

from __future__ import annotations

import dataclasses
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from tlcli.audit import labels as probe
from tlcli.audit import neighbours, pixels
from tlcli.audit.curve import learning_curve
from tlcli.audit.embed import Embeddings, embed_splits, embedding_config
from tlcli.audit.labels import find_label_suspects
from tlcli.audit.neighbours import NearDuplicates, clusters_of, find_near_duplicates
from tlcli.audit.report import AuditReport, SuspectFindings, SuspectRow
from tlcli.config.loading import load_config
from tlcli.config.schema import DataConfig, ExperimentConfig
from tlcli.data.manifest import is_manifest
from tlcli.data.splits import discover_splits
from tlcli.errors import DataError, UserError
from tlcli.progress import Reporter

SUSPECT_SPLITS = ("train", "val")
LEAKAGE_NEIGHBOURS = 2  # with leakage_only: nearest images of each other split examined (a copy's source is first)
# Raise it when the audit finds something else on the same embeddings and arguments: `tlcli train` keys the data-trust
# result it caches by `audit_fingerprint()`, so a raised version computes it again.
AUDIT_VERSION = 1
FITTED_WITH = ("numpy", "scikit-learn", "cleanlab", "pillow")  # libraries whose versions can change what it finds


def audit_dataset(
    data_dir: str | Path | None = None,
    *,
    config: ExperimentConfig | str | Path | dict | None = None,
    base: str | None = None,
    val_split: float = 0.2,
    max_file_mb: float | None = None,
    columns: dict[str, str] | None = None,
    labels: dict | None = None,
    group: str | None = None,
    folds: int = 5,
    seed: int = 0,
    use_cache: bool = True,
    reporter: Reporter | None = None,
) -> AuditReport:
    """Embed every image of a labelled folder (or manifest) with a pretrained base, through the feature cache
    training uses, and report near-duplicates (within and across splits), likely label errors and per-class
    learning curves.

    Args:
        data_dir: a folder of class folders, a parent of train/ and val/ (and test/), or a CSV manifest, as
            `tlcli check` takes (`val_split`, `max_file_mb`, `columns`, `labels` and `group` as `check_dataset`
            takes them); None: the config's data.
        config: a config (or its path) whose base embeds the images (and whose data is listed when `data_dir` is
            None); its features are shared with `tlcli train` of the same config.
        base: a keras.applications base name (ImageNet weights) instead; default MobileNetV2 at 224 px when its
            weights are in the Keras cache.
        folds: cross-validation folds of the label probe and the learning curve (with `data.group`, whole groups
            each); `seed` shuffles them.

    Raises:
        UserError: neither data_dir nor config, or no base whose weights are available.
        ConfigError: the config's base has random weights (`weights: none`), or cannot be built.
        DataError: the folder cannot be listed (as `tlcli check`).
    """
    started = time.perf_counter()
    reporter = reporter or Reporter()
    experiment = load_config(config) if config is not None and not isinstance(config, ExperimentConfig) else config
    data = _data_config(
        data_dir, experiment, val_split=val_split, max_file_mb=max_file_mb, columns=columns, labels=labels, group=group
    )
    splits = discover_splits(data)
    embeddings = embed_splits(
        splits, embedding_config(data, base=base, config=experiment), reporter=reporter, use_cache=use_cache
    )
    embedding = round(time.perf_counter() - started, 3)
    report = audit_embeddings(embeddings, folds=folds, seed=seed)
    return dataclasses.replace(
        report,
        data_dir=str(Path(data.manifest or data.dir).absolute()),
        seconds=round(time.perf_counter() - started, 3),
        timings={"embedding": embedding, **report.timings},
    )


def audit_embeddings(
    embeddings: Embeddings,
    *,
    near_duplicates: bool = True,
    leakage_only: bool = False,
    label_suspects: bool = True,
    learning_curve: bool = True,
    folds: int = 5,
    seed: int = 0,
) -> AuditReport:
    """What embeddings already made tell: near-duplicates over every split, label suspects over train + val, the
    learning curve over train (each part can be turned off: its field is then None). `leakage_only`: near-duplicates
    across splits only, each image's LEAKAGE_NEIGHBOURS nearest of every other split examined (what training asks:
    a fraction of the thumbnails to compare). `tlcli train` calls this on the features it cached; `audit_dataset`
    on the ones it embedded."""
    started = time.perf_counter()
    near = _near_duplicates(embeddings, leakage_only) if near_duplicates else None
    timings = {"near_duplicates": round(time.perf_counter() - started, 3)}
    suspects, curve, notes = _label_findings(
        embeddings, near, folds=folds, seed=seed, suspects=label_suspects, curve=learning_curve
    )
    timings["labels"] = round(time.perf_counter() - started - timings["near_duplicates"], 3)
    return AuditReport(
        data_dir="",
        base=embeddings.base,
        image_size=embeddings.image_size,
        images={s.name: len(s) for s in embeddings.splits},
        from_cache=embeddings.hits,
        seconds=round(time.perf_counter() - started, 3),
        near_duplicates=near,
        label_suspects=suspects,
        learning_curve=curve,
        notes=tuple(notes),
        skipped=tuple(p for s in embeddings.splits for p in s.skipped),
        cache_key=embeddings.cache_key,
        timings=timings,
    )


def audit_fingerprint() -> dict[str, Any]:
    """What `audit_embeddings` finds depends on besides its embeddings and arguments: `AUDIT_VERSION`, its thresholds
    and the installed versions of the libraries it decodes and fits with (read from package metadata, not imported)."""
    thresholds = {
        name: getattr(module, name)
        for module, names in (
            (neighbours, ("GREY", "PIXEL", "SHIFTED_COSINE", "SHIFTED_PIXEL", "LOOKALIKE", "PER_SPLIT")),
            (pixels, ("GRID", "THUMB", "CROPS", "CORNER_CROP", "MIN_TEXTURE")),
            (probe, ("PROBE_C", "PROBE_MAX_ITER")),
        )
        for name in names
    }
    return {
        "version": AUDIT_VERSION,
        "leakage_neighbours": LEAKAGE_NEIGHBOURS,
        "thresholds": thresholds,
        "libraries": {name: _installed(name) for name in FITTED_WITH},
    }


def _installed(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _near_duplicates(embeddings: Embeddings, leakage_only: bool) -> NearDuplicates:
    """Near-duplicates among every split's images (`leakage_only`: across splits only)."""
    paths = [p for s in embeddings.splits for p in s.paths]
    names = [s.name for s in embeddings.splits for _ in range(len(s))]
    features = np.concatenate([s.features for s in embeddings.splits])
    if leakage_only:
        return find_near_duplicates(paths, names, features, across_only=True, per_split=LEAKAGE_NEIGHBOURS)
    return find_near_duplicates(paths, names, features)


def _data_config(data_dir, experiment: ExperimentConfig | None, **options) -> DataConfig:
    """What to list: `data_dir` as `tlcli check` reads it (with the config's image settings), else the config's data.

    Raises:
        UserError: neither is given, or the options contradict each other.
    """
    if data_dir is None:
        if experiment is None:
            raise UserError("data_dir: give a data folder (or manifest), or a config whose data to audit")
        return experiment.data
    where = (
        {"manifest": Path(data_dir), "columns": options["columns"] or {}}
        if is_manifest(data_dir)
        else {"dir": Path(data_dir)}
    )
    where |= options["labels"] or {}
    for key in ("max_file_mb", "group"):
        if options[key] is not None:
            where[key] = options[key]
    if experiment is not None:
        where |= {"image_size": experiment.data.image_size, "color_mode": experiment.data.color_mode}
    try:
        return DataConfig(**where, val_split=options["val_split"])
    except ValidationError as exc:
        raise UserError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


def _label_findings(
    embeddings: Embeddings, near: NearDuplicates | None, *, folds: int, seed: int, suspects: bool, curve: bool
):
    """Label suspects over train + val and the learning curve over train, or None each with the reason in notes."""
    notes = ["label suspects: training and validation images; the test folder is not examined"] if suspects else []
    if embeddings.multi_label and (suspects or curve):
        notes.append("label suspects and learning curve: not for multi-label data (one label per image only)")
        return None, None, notes
    found = None
    try:
        found = _suspects(embeddings, near, folds=folds, seed=seed) if suspects else None
    except DataError as exc:  # too few images (or groups) of a class for cross-validation
        notes.append(f"label suspects: skipped ({exc})")
    return found, (_curve(embeddings, near, folds, seed, notes) if curve else None), notes


def _curve(embeddings: Embeddings, near: NearDuplicates | None, folds: int, seed: int, notes: list[str]):
    """The training images' learning curve, or None with the reason added to `notes`."""
    train = embeddings.split("train")
    try:
        return learning_curve(
            train.features,
            train.labels.astype(np.int64),
            list(embeddings.class_names),
            folds=folds,
            seed=seed,
            groups=_fold_groups([train], near),
        )
    except DataError as exc:
        notes.append(f"learning curve: skipped ({exc})")
        return None


def _suspects(embeddings: Embeddings, near: NearDuplicates | None, *, folds: int, seed: int) -> SuspectFindings:
    """Likely label errors among the training and validation images, with their paths, splits and class names.

    Raises:
        DataError: a class has too few images (or groups) for cross-validation.
    """
    classes = list(embeddings.class_names)
    parts = [embeddings.split(name) for name in SUSPECT_SPLITS if embeddings.split(name) is not None]
    labels = np.concatenate([p.labels for p in parts]).astype(np.int64)
    features = np.concatenate([p.features for p in parts])
    paths = [path for p in parts for path in p.paths]
    split_of = [p.name for p in parts for _ in range(len(p))]
    found = find_label_suspects(features, labels, folds=folds, seed=seed, groups=_fold_groups(parts, near))
    rows = tuple(
        SuspectRow(
            paths[s.index],
            split_of[s.index],
            classes[s.given],
            classes[s.suggested],
            round(float(s.confidence), 4),
            round(float(s.given_probability), 4),
        )
        for s in found.suspects
    )
    return SuspectFindings(rows, found.method, found.folds, len(labels), found.note)


def _fold_groups(parts, near: NearDuplicates | None) -> np.ndarray | None:
    """Each row's group for the folds: confirmed near-duplicates together (so a copy never vouches for its source's
    label from another fold), and `data.group`'s groups whole; None when neither joins any two rows."""
    paths = [path for part in parts for path in part.paths]
    row = {path: k for k, path in enumerate(paths)}
    confirmed = near.confirmed if near is not None else ()
    edges = [(row[p.a], row[p.b]) for p in confirmed if p.a in row and p.b in row]
    first: dict[str, int] = {}
    named = [group for part in parts for group in (part.groups or (None,) * len(part))]
    edges += [(first.setdefault(group, k), k) for k, group in enumerate(named) if group is not None]
    edges = [(a, b) for a, b in edges if a != b]
    if not edges:
        return None
    component = np.arange(len(paths))
    for number, members in enumerate(clusters_of(len(paths), *(np.array(side) for side in zip(*edges)))):
        component[members] = len(paths) + number
    return component
