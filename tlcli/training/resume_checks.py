"""What resuming checks before it writes anything: the overrides, that there is something left to do, the same data.

Only epoch counts and early-stopping patience may change on resume
(`RESUMABLE_KEYS`); the images must be the same files with the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlcli.config.schema import ExperimentConfig
from tlcli.data.images import ImageDecodeError, read_image_file
from tlcli.data.prefetch import bounded_map
from tlcli.data.splits import SPLITS, DataSplits
from tlcli.errors import ConfigError, RunError
from tlcli.runs.checkpoints import CheckpointState
from tlcli.runs.provenance import dataset_fingerprint, read_split, recorded_fingerprint
from tlcli.system import cpu_workers
from tlcli.training.phases import phase_section, phases_of

RESUMABLE_KEYS = (
    "train.epochs",
    "fine_tune.epochs",
    "train.max_epochs",
    "fine_tune.max_epochs",
    "train.early_stopping.patience",
    "fine_tune.early_stopping.patience",
    "train.early_stopping.min_delta",
    "fine_tune.early_stopping.min_delta",
)


def check_overrides(parsed: list[tuple[str, Any]], raw: dict, state: CheckpointState | None, run_dir: Path) -> None:
    """Refuse a `--set` that cannot change on resume (with the command that would do it instead)."""
    for key, value in parsed:
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                "--set",
                f"{key} cannot change when resuming (only {', '.join(RESUMABLE_KEYS)}); to change it, "
                f"start a new run: tlcli train {run_dir / 'config.yaml'} --set {key}=...",
            )
        phase = key.split(".")[0]
        if phase == "fine_tune" and not raw.get("fine_tune"):
            raise ConfigError(key, "this run has no fine-tuning phase, and a phase cannot be added on resume")
        if state is None or not key.endswith(("epochs", "max_epochs")):
            continue
        if phase == "train" and state.phase != "train":
            raise ConfigError(
                key, f"phase train is over (the run went on to {state.phase}); extend {state.phase}.epochs instead"
            )
        if (
            phase == state.phase
            and isinstance(value, int)
            and not isinstance(value, bool)
            and value < state.phase_epoch
        ):
            raise ConfigError(
                key, f"the run already did {state.phase_epoch} epochs of {phase}; give at least that many"
            )


def nothing_left(config: ExperimentConfig, state: CheckpointState) -> bool:
    """True when the checkpoint is at the end of the last phase under `config`."""
    names = [phase.name for phase in phases_of(config)]
    if state.phase != names[-1]:
        return False
    epochs = planned_epochs(config, state)
    extended = epochs > state.phase_epochs
    return state.phase_epoch >= epochs or (state.stopped_early and not extended)


def planned_epochs(config: ExperimentConfig, state: CheckpointState) -> int:
    """The most epochs the checkpoint's phase may now run: its `epochs`, or for `auto` what the run planned, unless
    `max_epochs` was raised."""
    section = phase_section(config, state.phase)
    if section.epochs != "auto":
        return section.epochs
    return max(state.phase_epochs, section.max_epochs)


def check_same_splits(splits: DataSplits, run_dir: Path) -> None:
    """Resuming on other images would silently train a different run."""
    for split in SPLITS:
        rows = read_split(run_dir, split)
        if rows is None:
            continue
        saved = sorted((row.relpath, row.label) for row in rows)
        now = sorted((s.relpath, splits.label_name(s.label)) for s in getattr(splits, split))
        if saved != now:
            raise RunError(
                f"{run_dir}: the {split} images changed since the run started ({len(saved)} then, {len(now)} now, "
                "or other files or labels); resuming would train on other data, start a new run"
            )


def check_same_contents(splits: DataSplits, run_dir: Path, max_bytes: int) -> None:
    """Same file names are not enough: an image edited in place would change the run too.

    Hashes the files (a fraction of a second for thousands of photos) and
    compares with the fingerprint in dataset.json, before anything is written.
    """
    import hashlib
    import json

    recorded = recorded_fingerprint(run_dir)
    if recorded is None:
        return  # stopped before its first pass over the files: nothing to compare with
    try:
        unreadable = {
            entry["path"] for entry in json.loads((run_dir / "skipped_files.json").read_text(encoding="utf-8"))
        }
    except (OSError, ValueError, KeyError, TypeError):
        unreadable = set()

    def content_hash(path) -> str:
        try:
            return hashlib.sha256(read_image_file(path, max_bytes)).hexdigest()
        except ImageDecodeError:
            return ""

    rows = []
    for split, samples in splits.listed():
        kept = sorted((s for s in samples if str(s.path) not in unreadable), key=lambda s: s.relpath)
        hashes = bounded_map(content_hash, [s.path for s in kept], window=4 * cpu_workers())
        rows += [(split, s.relpath, splits.label_name(s.label), h) for s, (_, h) in zip(kept, hashes)]
    fingerprint, version = recorded
    if dataset_fingerprint(rows, version) != fingerprint:
        raise RunError(
            f"{run_dir}: the contents of the images changed since the run started (same file names, other bytes or "
            "other labels); resuming would train on other data, start a new run"
        )
