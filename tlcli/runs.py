"""The run folder: the contract between training and everything after it.

A run folder is `<runs_dir>/YYYYMMDD-HHMMSS-<name>/`, created exclusively (a
second run in the same second gets a `-2` suffix) and never reused by a new
run. Every file is written atomically (temporary file, then rename), so a
crash leaves the old version or the new one, never half a file. The files are
listed in the README ("The run folder"); `RUN_FILES` names them here.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from tlcli.errors import RunError, UserError

RUN_FORMAT_VERSION = 1

RUN_FILES = {
    "run.json": "format version, name, status (running, completed, failed, interrupted), start and end times, failure reason, the process (pid) while running, and every resume",
    "config.yaml": "the resolved config, every default filled in and paths absolute",
    "model.keras": "the trained model (base + head), taking 0-255 pixels; `keras.models.load_model`",
    "model.json": "base name, preprocessing, image size, channels, head activation",
    "labels.json": "class names, in output order",
    "splits/{train,val,test}.csv": "the exact files of each split (path, relpath, label)",
    "skipped_files.json": "files that could not be decoded, with reasons",
    "data_problems.json": "what `tlcli check` would report from training's own decode pass: unreadable files, duplicates, conflicting labels, train/val leakage",
    "dataset.json": "per-split class counts, where each split came from, and the dataset fingerprint",
    "history.csv": "per-epoch metrics of both phases (phase and epoch columns)",
    "metrics.json": "final and best metrics, epochs, wall time, images per second",
    "env.json": "python, tensorflow, keras and tlcli versions, devices, seed, git commit",
    "train.log": "the training log",
    "curves.png": "loss and accuracy per epoch, the phase boundary marked",
    "eval/<timestamp>-val/": "the final validation report (metrics.json, confusion matrix, predictions.csv, reliability and mistakes plots)",
    "tensorboard/": "TensorBoard logs",
    "checkpoints/": "the last two resumable checkpoints (`epoch-NNNN/`: weights, best-epoch weights, optimizer and seed states, phase, early-stopping and history state), for `tlcli train --resume`",
}

STATUSES = ("running", "completed", "failed", "interrupted")


# ----------------------------------------------------------------------------- atomic files


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with _quiet():
            os.unlink(temporary)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_csv_atomic(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def save_model_atomic(model, path: Path) -> None:
    # Keras picks the format from the suffix, so the temporary file keeps `.keras`.
    temporary = path.with_name(f".{path.stem}.partial.keras")
    model.save(temporary)
    os.replace(temporary, path)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- creating and updating


def create_stamped_dir(parent: Path, name: str, now: datetime | None = None) -> Path:
    """Make `parent/YYYYMMDD-HHMMSS-<name>/` exclusively (`-2`, `-3`... when taken): never one that existed.

    Raises:
        OSError: `parent` cannot be created or written (FileExistsError after 999 taken names).
    """
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        candidate = parent / (f"{stamp}-{name}" if attempt == 1 else f"{stamp}-{name}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"too many folders named {name} in the same second")


def create_run_dir(runs_dir: Path, name: str, now: datetime | None = None) -> Path:
    """Make a new, empty run folder; never returns one that existed.

    Raises:
        UserError: the runs folder cannot be created or written.
    """
    try:
        return create_stamped_dir(runs_dir, name, now)
    except OSError as exc:
        raise UserError(f"--runs-dir: cannot create a run folder in {runs_dir} ({exc.strerror or exc}); choose a writable folder") from None


def start_run(run_dir: Path, name: str) -> dict[str, Any]:
    from tlcli import __version__

    record = {
        "format_version": RUN_FORMAT_VERSION,
        "name": name,
        "status": "running",
        "pid": os.getpid(),
        "pid_started": _process_start(os.getpid()),
        "started": _now(),
        "finished": None,
        "error": None,
        "tlcli_version": __version__,
        "resumes": [],
    }
    write_json_atomic(run_dir / "run.json", record)
    return record


def resume_run(run_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Mark a run running again and append `entry` (from which epoch, overrides) to its resumes."""
    from tlcli import __version__

    record = read_run_record(run_dir)
    resumes = list(record.get("resumes") or [])
    resumes.append({"at": _now(), "pid": os.getpid(), "tlcli_version": __version__, **entry})
    record.update(status="running", pid=os.getpid(), pid_started=_process_start(os.getpid()), finished=None, error=None, resumes=resumes)
    write_json_atomic(run_dir / "run.json", record)
    return record


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
            raise RunError(f"{self.run_dir} is still running (another process is training in it); stop that process first or wait for it") from None
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            os.close(self.handle)  # closing releases the lock
            self.handle = None


def run_is_live(record: dict[str, Any]) -> bool:
    """A `running` run whose process is still alive (and is the same process, not a reused pid)."""
    if record.get("status") != "running" or not _process_alive(record.get("pid")):
        return False
    if record.get("pid") == os.getpid():
        return False
    saved = record.get("pid_started")
    return saved is None or _process_start(record.get("pid")) in (None, saved)


def _process_start(pid: Any) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{int(pid)}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError, TypeError):
        return None


def finish_run(run_dir: Path, status: str, error: str | None = None) -> None:
    """Record the final status (and the reason, for a failed run)."""
    assert status in STATUSES
    record = read_run_record(run_dir)
    record.update(status=status, finished=_now(), error=error, pid=None, pid_started=None)
    write_json_atomic(run_dir / "run.json", record)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- reading


def read_run_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a tlcli run folder (no run.json)")
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable ({exc})") from None
    version = record.get("format_version")
    if version != RUN_FORMAT_VERSION:
        raise RunError(f"{run_dir}: run format {version} is not supported by this tlcli (format {RUN_FORMAT_VERSION})")
    return record


@dataclass(frozen=True)
class RunSummary:
    """One line of `tlcli runs`."""

    path: Path
    name: str
    started: str
    status: str
    base: str
    best_val_accuracy: float | None
    val_accuracy: float | None
    resumes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "started": self.started,
            "status": self.status,
            "base": self.base,
            "best_val_accuracy": self.best_val_accuracy,
            "val_accuracy": self.val_accuracy,
            "resumes": self.resumes,
        }


def list_runs(runs_dir: Path) -> list[RunSummary]:
    """Every run folder under `runs_dir`, oldest first; unreadable folders are left out."""
    if not runs_dir.is_dir():
        return []
    summaries = []
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        try:
            summaries.append(summarize_run(run_dir))
        except RunError:
            continue
    return sorted(summaries, key=lambda s: (s.started, s.path.name))


def summarize_run(run_dir: Path) -> RunSummary:
    record = read_run_record(run_dir)
    metrics = _optional_json(run_dir / "metrics.json") or {}
    model_info = _optional_json(run_dir / "model.json") or {}
    status = record.get("status", "unknown")
    if status == "running" and not run_is_live(record) and record.get("pid") != os.getpid():
        status = "interrupted"  # killed without a chance to say so
    return RunSummary(
        path=run_dir,
        name=record.get("name", run_dir.name),
        started=record.get("started") or "",
        status=status,
        base=model_info.get("base_name", "?"),
        best_val_accuracy=metrics.get("best", {}).get("val_accuracy"),
        val_accuracy=metrics.get("final", {}).get("val_accuracy"),
        resumes=len(record.get("resumes") or []),
    )


def _optional_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_complete(run_dir: Path) -> bool:
    """A completed run has a model and final metrics."""
    return (run_dir / "model.keras").is_file() and (run_dir / "metrics.json").is_file()


def newest_run(runs_dir: Path, name: str | None = None) -> Path:
    """The newest completed run (of `name`, if given).

    Raises:
        RunError: there is none.
    """
    candidates = [s for s in list_runs(runs_dir) if s.status == "completed" and is_complete(s.path) and (name is None or s.name == name)]
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
        raise RunError(f"{run_dir}: no model.keras (run status: {record.get('status')}); pick a completed run (`tlcli runs`)")
    return model_path


def load_run_model(run_dir: Path):
    """Load a run's model with Keras safe mode on."""
    import keras

    import tlcli.model  # noqa: F401  (registers nothing today; keeps `import tlcli` the only requirement)

    model_path = require_model(run_dir)
    try:
        return keras.models.load_model(model_path, safe_mode=True, compile=False)
    except Exception as exc:
        raise RunError(f"{model_path}: cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None


def run_labels(run_dir: Path) -> list[str]:
    path = run_dir / "labels.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: no labels.json; the run folder is incomplete")
    return list(read_json(path))
