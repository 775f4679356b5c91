"""The run folder: the contract between training and everything after it.

A run folder is `<runs_dir>/YYYYMMDD-HHMMSS-<name>/`, created exclusively (a
second run in the same second gets a `-2` suffix) and never reused by a new
run. Every file is written atomically (`tlcli.runs.atomic`), so a crash leaves
the old version or the new one, never half a file. The files are listed in
the README ("The run folder"); `RUN_FILES` names them here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Iterator

from tlcli.errors import RunError, UserError
from tlcli.runs.atomic import fsync_dir, fsync_file
from tlcli.runs.listing import list_runs
from tlcli.runs.records import read_run_record

TRUST_FILE = "data_trust.json"  # the data-trust step's findings: written only when the step ran, so not in RUN_FILES
# The rule for images of no class (`tlcli.inference.unknown`) and the training features its scores compare with:
# written by single-label runs only, so not in RUN_FILES either.
UNKNOWN_FILE = "unknown.json"
UNKNOWN_FEATURES_FILE = "unknown_features.npz"

RUN_FILES = {
    "run.json": (
        "format version, name, status (running, completed, failed, interrupted), start and end times, failure "
        "reason, the process (pid) while running, and every resume"
    ),
    "config.yaml": "the resolved config, every default filled in and paths absolute",
    "model.keras": "the trained model (base + head), taking 0-255 pixels; `keras.models.load_model`",
    "model.json": "base name, preprocessing, image size, channels, head activation",
    "labels.json": "class names, in output order",
    "splits/{train,val,test}.csv": "the exact files of each split (path, relpath, label)",
    "skipped_files.json": "files that could not be decoded, with reasons",
    "data_problems.json": (
        "what `tlcli check` would report from training's own decode pass: unreadable files, duplicates, "
        "conflicting labels, train/val leakage"
    ),
    "dataset.json": "per-split class counts, where each split came from, and the dataset fingerprint",
    "history.csv": "per-epoch metrics of both phases (phase and epoch columns)",
    "metrics.json": "final and best metrics, epochs, wall time, images per second",
    "env.json": "python, tensorflow, keras and tlcli versions, devices, seed, git commit",
    "train.log": "the training log",
    "curves.png": "loss and accuracy per epoch, the phase boundary marked",
    "eval/<timestamp>-val/": (
        "the final validation report (metrics.json, confusion matrix, predictions.csv, reliability and mistakes plots)"
    ),
    "MODEL_CARD.md": (
        "the model card: classes, base and weights, data, figures with their 95% intervals, limitations, how to load "
        "it, its exports"
    ),
    "tensorboard/": "TensorBoard logs",
    "checkpoints/": (
        "the last two resumable checkpoints (`epoch-NNNN/`: weights, best-epoch weights, optimizer and seed "
        "states, phase, early-stopping and history state), for `tlcli train --resume`"
    ),
}


def _stamped_names(parent: Path, name: str, now: datetime | None) -> Iterator[Path]:
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        yield parent / (f"{stamp}-{name}" if attempt == 1 else f"{stamp}-{name}-{attempt}")
    raise FileExistsError(errno.EEXIST, f"too many folders named {name} in the same second", str(parent))


def create_stamped_dir(parent: Path, name: str, now: datetime | None = None) -> Path:
    """Make `parent/YYYYMMDD-HHMMSS-<name>/` exclusively (`-2`, `-3`... when taken): never one that existed.

    Raises:
        OSError: `parent` cannot be created or written (FileExistsError after 999 taken names).
    """
    parent.mkdir(parents=True, exist_ok=True)
    for candidate in _stamped_names(parent, name, now):
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


@contextlib.contextmanager
def staged_dir(parent: Path, name: str) -> Iterator[Path]:
    """A hidden folder in `parent` to build a folder's files in; removed if the block fails. Publish it with
    `publish_stamped_dir`."""
    parent.mkdir(parents=True, exist_ok=True)
    staged = parent / f".{name}.{uuid.uuid4().hex[:8]}.partial"
    staged.mkdir()
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone already once published


def publish_stamped_dir(staged: Path, parent: Path, name: str, now: datetime | None = None) -> Path:
    """Rename a complete staged folder to the first free `parent/YYYYMMDD-HHMMSS-<name>[-N]/`: it appears whole or not
    at all, never over another."""
    for path in staged.iterdir():
        if path.is_file():
            fsync_file(path)
    for candidate in _stamped_names(parent, name, now):
        if candidate.exists():
            continue
        try:
            os.rename(
                staged, candidate
            )  # onto a folder another process published meanwhile: ENOTEMPTY, try the next name
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise
        fsync_dir(parent)
        return candidate
    raise AssertionError("unreachable")


def create_run_dir(runs_dir: Path, name: str, now: datetime | None = None) -> Path:
    """Make a new, empty run folder; never returns one that existed.

    Raises:
        UserError: the runs folder cannot be created or written.
    """
    try:
        return create_stamped_dir(runs_dir, name, now)
    except OSError as exc:
        raise UserError(
            f"runs_dir: cannot create a run folder in {runs_dir} ({exc.strerror or exc}); choose a writable folder"
        ) from None


class RunLock:
    """An exclusive lock on a run folder (flock on the folder itself) held while a process trains in it.

    run.json's pid says a run is live; the lock also stops two resumes of the
    same run started at the same moment.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.handle: int | None = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not on POSIX: rely on run.json's pid
            return self
        handle = os.open(self.run_dir, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(handle)
            raise RunError(
                f"{self.run_dir} is still running (another process is training in it); stop that process "
                "first or wait for it"
            ) from None
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            os.close(self.handle)  # closing releases the lock
            self.handle = None


def is_complete(run_dir: Path) -> bool:
    """A completed run has a model and final metrics."""
    return (run_dir / "model.keras").is_file() and (run_dir / "metrics.json").is_file()


def newest_run(runs_dir: Path, name: str | None = None) -> Path:
    """The newest completed run (of `name`, if given).

    Raises:
        RunError: there is none.
    """
    candidates = [
        s
        for s in list_runs(runs_dir)
        if s.status == "completed" and s.problem is None and is_complete(s.path) and (name is None or s.name == name)
    ]
    if not candidates:
        what = f"no completed run named {name!r}" if name else "no completed run"
        raise RunError(f"{what} in {runs_dir}; train one with `tlcli train CONFIG`, or pass --run RUN_DIR")
    return candidates[-1].path


def resolve_run(spec: str | Path, runs_dir: Path) -> Path:
    """A run folder path, or a run name meaning the newest completed run of that name."""
    path = Path(spec)
    if path.is_dir():
        read_run_record(path)
        return path
    if "/" in str(spec) or os.sep in str(spec):
        raise RunError(f"{spec}: run folder not found")
    return newest_run(runs_dir, str(spec))


def require_model(run_dir: Path) -> Path:
    record = read_run_record(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.is_file():
        raise RunError(f"{run_dir}: no model.keras (run status: {record.status}); pick a completed run (`tlcli runs`)")
    return model_path
