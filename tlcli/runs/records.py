"""The small JSON records of a run folder, as typed objects: `run.json`, `model.json`, `labels.json`.

Each record is read in one place, which checks its shape: a record that was
edited or damaged is a `RunError` naming the file (exit 2), never a
`KeyError` deep inside a command.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tlcli.config.data_schema import MAX_IMAGE_SIZE
from tlcli.config.loading import load_config
from tlcli.config.schema import ExperimentConfig, redact_uri
from tlcli.errors import RunError, TlcliError
from tlcli.runs.atomic import read_json, write_json_atomic
from tlcli.system import process_alive, process_start_ticks
from tlcli.version import __version__

RUN_FORMAT_VERSION = 1
STATUSES = ("running", "completed", "failed", "interrupted")


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class ResumeEntry:
    """One `tlcli train --resume` of a run: when, by which process, from where, with which `--set`."""

    at: str
    pid: int | None
    tlcli_version: str
    from_epoch: int
    phase: str | None
    overrides: list[str] = field(default_factory=list)
    previous_status: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """`run.json`: what a run is and where it stands."""

    name: str
    status: str
    started: str
    format_version: int = RUN_FORMAT_VERSION
    pid: int | None = None
    pid_started: int | None = None
    finished: str | None = None
    error: str | None = None
    tlcli_version: str = __version__
    resumes: tuple[ResumeEntry, ...] = ()
    tracking: dict[str, Any] | None = None  # {"mlflow": {run_id, experiment_id, tracking_uri (no password), failed}}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["resumes"] = [asdict(r) for r in self.resumes]
        if self.tracking is None:
            del data["tracking"]  # untracked runs read as before
        return data

    @property
    def mlflow_run_id(self) -> str | None:
        mlflow = (self.tracking or {}).get("mlflow") or {}
        return mlflow.get("run_id") if isinstance(mlflow, dict) else None

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> RunRecord:
        """Raises RunError naming `path` when `data` is not a run record of this format."""
        if not isinstance(data, dict):
            raise RunError(
                f"{path}: damaged (a JSON {type(data).__name__}, not a run record); restore it or remove the run folder"
            )
        version = data.get("format_version")
        if version != RUN_FORMAT_VERSION:
            raise RunError(
                f"{path.parent}: run format {version} is not supported by this tlcli (format {RUN_FORMAT_VERSION})"
            )
        try:
            resumes = tuple(ResumeEntry(**entry) for entry in data.get("resumes") or [])
            known = {f.name for f in dataclasses.fields(cls)} - {"resumes"}
            record = cls(**{k: v for k, v in data.items() if k in known}, resumes=resumes)
        except TypeError as exc:
            raise RunError(f"{path}: damaged ({exc}); restore it or remove the run folder") from None
        if record.tracking is not None and not isinstance(record.tracking, dict):
            raise RunError(f"{path}: damaged (tracking is not an object); restore it or remove the run folder")
        if record.status not in STATUSES or not isinstance(record.name, str):
            raise RunError(f"{path}: damaged (status {record.status!r}); restore it or remove the run folder")
        return record

    def write(self, run_dir: Path) -> None:
        write_json_atomic(run_dir / "run.json", self.to_dict())

    def is_live(self) -> bool:
        """A `running` run whose process is still alive (and is the same process, not a reused pid)."""
        if self.status != "running" or not process_alive(self.pid) or self.pid == os.getpid():
            return False
        return self.pid_started is None or process_start_ticks(self.pid) in (None, self.pid_started)

    def shown_status(self) -> str:
        """The status a person should see: a `running` run whose process died was interrupted."""
        if self.status == "running" and not self.is_live() and self.pid != os.getpid():
            return "interrupted"
        return self.status


def read_run_record(run_dir: Path) -> RunRecord:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a tlcli run folder (no run.json)")
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable ({exc})") from None
    return RunRecord.from_dict(data, path)


def start_run(run_dir: Path, name: str) -> RunRecord:
    pid = os.getpid()
    record = RunRecord(name=name, status="running", started=now_iso(), pid=pid, pid_started=process_start_ticks(pid))
    record.write(run_dir)
    return record


def resume_run(run_dir: Path, from_epoch: int, phase: str | None, overrides: list[str]) -> RunRecord:
    """Mark a run running again and append the resume (from which epoch, overrides) to its record."""
    record = read_run_record(run_dir)
    pid = os.getpid()
    entry = ResumeEntry(now_iso(), pid, __version__, from_epoch, phase, list(overrides), record.status)
    record = dataclasses.replace(
        record,
        status="running",
        pid=pid,
        pid_started=process_start_ticks(pid),
        finished=None,
        error=None,
        resumes=(*record.resumes, entry),
    )
    record.write(run_dir)
    return record


def record_tracking(run_dir: Path, tracking: dict[str, Any]) -> RunRecord:
    """Where the run is tracked (and whether tracking failed), merged into run.json's `tracking`."""
    record = read_run_record(run_dir)
    record = dataclasses.replace(record, tracking={**(record.tracking or {}), **tracking})
    record.write(run_dir)
    return record


def finish_run(run_dir: Path, status: str, error: str | None = None) -> RunRecord:
    """Record the final status (and the reason, for a failed run, without any password of a URI in it)."""
    assert status in STATUSES
    reason = None if error is None else redact_uri(error)
    record = dataclasses.replace(
        read_run_record(run_dir), status=status, finished=now_iso(), error=reason, pid=None, pid_started=None
    )
    record.write(run_dir)
    return record


def amend_failure(run_dir: Path, error: str) -> RunRecord:
    """A failed run's reason replaced by a fuller one; when it ended (`finished`) stays as recorded."""
    record = dataclasses.replace(read_run_record(run_dir), error=redact_uri(error))
    record.write(run_dir)
    return record


TASKS = ("single_label", "multi_label")
ACTIVATIONS = ("softmax", "sigmoid")
CHANNELS = (1, 3)


class InvalidField(ValueError):
    """A record's field holds a value tlcli never writes (the file was edited); the message names the field."""


@dataclass(frozen=True)
class ModelInfo:
    """`model.json`: what a run's model takes and how it was built."""

    base_name: str
    preprocess: str
    image_size: tuple[int, int]
    channels: int
    activation: str
    pretrained: bool
    base_layers: int
    task: str = "single_label"  # or "multi_label": one sigmoid per class, any number of labels an image
    thresholds: tuple[float, ...] | None = None  # multi-label: the probability above which each class is predicted

    @property
    def binary(self) -> bool:
        """A single sigmoid unit for two classes (its output is the second class's probability)."""
        return self.activation == "sigmoid" and self.task != "multi_label"

    @property
    def multi_label(self) -> bool:
        return self.task == "multi_label"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        if self.thresholds is None:
            del data["thresholds"]  # single-label runs read as before
        else:
            data["thresholds"] = list(self.thresholds)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["image_size"] = tuple(int(v) for v in fields["image_size"])
        if fields.get("thresholds") is not None:
            fields["thresholds"] = tuple(float(t) for t in fields["thresholds"])
        fields["channels"] = int(fields["channels"])
        fields.setdefault("activation", "softmax")
        fields.setdefault("preprocess", "none")
        fields.setdefault("pretrained", True)
        fields.setdefault("base_layers", 0)
        info = cls(**fields)
        info.check()
        return info

    def check(self) -> None:
        """Every field in the range tlcli writes: an edited size or channel count would otherwise be blamed on every
        image (a division by zero, memory exhausted) or fail deep inside the model.

        Raises:
            InvalidField: naming the field.
        """
        size = list(self.image_size)
        if len(size) != 2 or not all(1 <= side <= MAX_IMAGE_SIZE for side in size):
            raise InvalidField(f"image_size {size}: expected [height, width], each 1 to {MAX_IMAGE_SIZE} pixels")
        if self.channels not in CHANNELS:
            raise InvalidField(f"channels {self.channels}: expected 1 (grayscale) or 3 (RGB)")
        if self.activation not in ACTIVATIONS:
            raise InvalidField(f"activation {self.activation!r}: expected one of {', '.join(ACTIVATIONS)}")
        if self.task not in TASKS or (self.multi_label and self.activation != "sigmoid"):
            raise InvalidField(f"task {self.task!r}: expected single_label, or multi_label with activation sigmoid")
        if self.thresholds is not None and not all(0 <= t <= 1 for t in self.thresholds):
            raise InvalidField(f"thresholds {list(self.thresholds)}: expected probabilities between 0 and 1")

    def write(self, run_dir: Path) -> None:
        write_json_atomic(run_dir / "model.json", self.to_dict())


def read_model_info(run_dir: Path) -> ModelInfo:
    path = Path(run_dir) / "model.json"
    try:
        return ModelInfo.from_dict(read_json(path))
    except InvalidField as exc:
        raise RunError(f"{path}: {exc}; restore it or remove the run folder") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunError(f"{path}: missing or unreadable ({type(exc).__name__}); the run folder is incomplete") from None


def read_run_config(run_dir: Path) -> ExperimentConfig | None:
    """The run's resolved config.yaml, or None when it is missing or no longer validates (a run of an older tlcli)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        return load_config(path)
    except TlcliError:
        return None


def read_labels(run_dir: Path) -> list[str]:
    path = Path(run_dir) / "labels.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: no labels.json; the run folder is incomplete")
    try:
        labels = read_json(path)
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable ({exc})") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise RunError(f"{path}: damaged (expected a list of class names)")
    return list(labels)
