"""What an export produced, as typed results and as `export.json` (`ExportRecord`).

`export.json` is the export folder's record: the run it came from, the task,
class names, every format's file, size, runtime tensors (names, dtypes,
shapes, quantization), gate and parity figures, and the versions that wrote
it. `--verify` reads it back to find the run, the formats and their gates
(`ExportRecord.read`, strict); an artifact's runtime reads the class names,
task and thresholds of the one beside it (`ExportRecord.beside`, lenient: a
hand-written one is taken).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tlcli.errors import GateFailed, UserError
from tlcli.export.formats import FILES, RUNTIMES, Gate
from tlcli.export.parity import Parity
from tlcli.inference.tta import VIEWS
from tlcli.runs.atomic import read_json, write_json_atomic
from tlcli.version import __version__

EXPORT_FORMAT_VERSION = 1
EXPORT_RECORD = "export.json"
LABELS_FILE = "labels.txt"


@dataclass
class FormatResult:
    """One format of an export: its artifact, how it was checked and what the check found."""

    format: str
    file: str  # relative to the export folder
    bytes: int
    gate: Gate
    export_seconds: float | None = None
    tensors: dict[str, Any] = field(default_factory=dict)  # ExportedModel.describe(): signature, inputs, outputs
    parity: Parity | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "bytes": self.bytes,
            "runtime": RUNTIMES[self.format],
            "export_seconds": self.export_seconds,
            **self.tensors,
            "gate": self.gate.to_dict(),
            "parity": self.parity.to_dict() if self.parity else None,
            "passed": self.passed,
            "failures": list(self.failures),
        }


@dataclass
class ExportResult:
    """An export folder and the parity of each of its formats (`verified`: a `--verify` re-check, nothing written)."""

    export_dir: Path
    run_dir: Path
    formats: list[FormatResult]
    export: ExportRecord  # export.json as written (export) or as read, with this check's figures (verify)
    verified: bool = False
    problems: list[str] = field(default_factory=list)  # failures of the folder rather than of one format (labels.txt)
    warnings: list[str] = field(default_factory=list)

    @property
    def record(self) -> dict[str, Any]:
        """export.json's content (verify: with this check's figures and `verified`)."""
        return self.export.to_dict()

    @property
    def failures(self) -> list[str]:
        return list(self.problems) + [line for result in self.formats for line in result.failures]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "export_dir": str(self.export_dir),
            "verified": self.verified,
            **self.record,
            "passed": self.passed,
            "failures": self.failures,
            "warnings": list(self.warnings),
        }

    def raise_for_gates(self) -> None:
        """Raises GateFailed (exit 3), naming every failed format and figure, when a gate failed."""
        if self.failures:
            what = "verification" if self.verified else "export"
            raise GateFailed(
                f"{what} parity gate failed: {'; '.join(self.failures)} (artifacts kept in {self.export_dir})"
            )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_bytes(path: Path) -> int:
    """A file's size, or a folder's (a SavedModel) summed over its files."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def versions(formats: list[str]) -> dict[str, str | None]:
    """tlcli, Python, TensorFlow and Keras, and the packages of the formats exported."""
    import keras
    import tensorflow as tf

    found: dict[str, str | None] = {
        "tlcli": __version__,
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    packages = {"ai-edge-litert"} if any(f.startswith("tflite") for f in formats) else set()
    packages |= {"tf2onnx", "onnx", "onnxruntime"} if "onnx" in formats else set()
    for package in sorted(packages):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


@dataclass
class RunOrigin:
    """export.json `run`: the run exported, and its model.keras's digest then (`--verify` warns when it changed)."""

    dir: str | None
    name: str | None = None
    started: str | None = None
    model_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOrigin:
        return cls(*(_text(data.get(f.name)) for f in dataclasses.fields(cls)))


@dataclass
class ExportRecord:
    """export.json, field by field, in the order it is written; None: an entry the file does not have."""

    run: RunOrigin | None
    formats: dict[str, dict[str, Any]]  # each format's `FormatResult.to_dict()`, in the order they were written
    task: str = "single_label"
    class_names: list[str] = field(default_factory=list)
    thresholds: dict[str, Any] | None = None  # multi-label: each class's threshold
    label_separator: str | None = None  # multi-label: the run's data.label_separator
    format_version: int | None = EXPORT_FORMAT_VERSION
    created: str = ""
    labels_file: str = LABELS_FILE
    model: dict[str, Any] = field(default_factory=dict)  # the model's input and output, described for people
    versions: dict[str, str | None] = field(default_factory=dict)
    parity_images: dict[str, Any] | None = None  # `SplitImages.to_dict()` of the parity images
    calibration_images: dict[str, Any] | None = None  # the same for int8's calibration images, with their range
    passed: bool = True
    failures: list[str] = field(default_factory=list)
    verified: dict[str, str] | None = None  # `--verify`: when and against which run (never written)
    unknown: dict[str, Any] | None = None  # the run's rule for unknown images (`tlcli.export.unknown.export_record`)
    tta_views: list[str] | None = None  # the views `predict --model --tta` averages over: the run's (`tta_views`)

    def with_results(self, results: list[FormatResult], parity_images: dict[str, Any]) -> ExportRecord:
        """This record with `results` (replacing the formats they checked), their images and verdict."""
        failures = [line for r in results for line in r.failures]
        return dataclasses.replace(
            self,
            formats={**self.formats, **{r.format: r.to_dict() for r in results}},
            parity_images=parity_images,
            passed=not failures,
            failures=failures,
        )

    def file(self, name: str) -> str:
        """The file (relative to the export folder) of format `name`."""
        return str(self.formats[name].get("file") or FILES[name])

    def gate(self, name: str) -> Gate:
        return Gate.from_dict(self.formats[name].get("gate"))

    def export_seconds(self, name: str) -> float | None:
        return self.formats[name].get("export_seconds")

    def format_of_file(self, file: str) -> str | None:
        """The format whose artifact is `file` (None: not listed)."""
        return next((name for name, entry in self.formats.items() if entry.get("file") == file and name in FILES), None)

    def parity_requested(self) -> int | None:
        """How many parity images the export asked for (None: not recorded)."""
        requested = (self.parity_images or {}).get("requested")
        return int(requested) if requested else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format_version": self.format_version,
            "created": self.created,
            "task": self.task,
            "class_names": list(self.class_names),
        }
        data |= {"thresholds": self.thresholds} if self.thresholds is not None else {}
        data |= {"label_separator": self.label_separator} if self.label_separator is not None else {}
        data |= {"unknown": self.unknown} if self.unknown is not None else {}
        data |= {"tta_views": list(self.tta_views)} if self.tta_views is not None else {}
        data |= {
            "labels_file": self.labels_file,
            "run": self.run.to_dict() if self.run is not None else None,
            "model": self.model,
            "versions": self.versions,
            "formats": self.formats,
            "parity_images": self.parity_images,
            "calibration_images": self.calibration_images,
            "passed": self.passed,
            "failures": list(self.failures),
        }
        return data | ({"verified": self.verified} if self.verified is not None else {})

    def write(self, folder: Path) -> None:
        write_json_atomic(folder / EXPORT_RECORD, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportRecord:
        """Whatever of export.json `data` holds, typed (entries of the wrong type are taken as absent)."""
        formats = data.get("formats") if isinstance(data.get("formats"), dict) else {}
        names = data.get("class_names")
        return cls(
            run=RunOrigin.from_dict(data["run"]) if isinstance(data.get("run"), dict) else None,
            formats={name: entry for name, entry in formats.items() if isinstance(entry, dict)},
            task=str(data.get("task", "single_label")),
            class_names=list(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else [],
            thresholds=_mapping(data.get("thresholds")),
            label_separator=_text(data.get("label_separator")),
            format_version=data.get("format_version"),
            created=str(data.get("created") or ""),
            labels_file=str(data.get("labels_file") or LABELS_FILE),
            model=_mapping(data.get("model")) or {},
            versions=_mapping(data.get("versions")) or {},
            parity_images=_mapping(data.get("parity_images")),
            calibration_images=_mapping(data.get("calibration_images")),
            passed=bool(data.get("passed", True)),
            unknown=_mapping(data.get("unknown")),
            tta_views=_views(data.get("tta_views")),
            failures=[str(line) for line in failures] if isinstance(failures := data.get("failures"), list) else [],
        )

    @classmethod
    def read(cls, path: Path) -> ExportRecord:
        """An export folder's export.json, checked for what `--verify` needs (the run, known formats, this version).

        Raises:
            UserError: unreadable, damaged, or written by another tlcli (one line naming the file).
        """
        data = _read(path)
        formats, run = (data.get("formats"), data.get("run")) if isinstance(data, dict) else (None, None)
        if (
            not isinstance(formats, dict)
            or not all(isinstance(entry, dict) for entry in formats.values())
            or not isinstance(run, dict)
            or not isinstance(run.get("dir"), str)
        ):
            raise UserError(f"{path}: damaged (expected run.dir and formats); export the run again")
        unknown = [name for name in formats if name not in FILES]
        if unknown or data.get("format_version") != EXPORT_FORMAT_VERSION:
            raise UserError(
                f"{path}: written by another tlcli (export format {data.get('format_version')}, "
                f"formats {', '.join(formats)}); export the run again"
            )
        _check_fields(path, data)
        return cls.from_dict(data)

    @classmethod
    def beside(cls, folders: list[Path]) -> ExportRecord | None:
        """The export.json in the first of `folders` that has one, taken as it is; None: none has.

        Raises:
            UserError: an export.json that is not JSON.
        """
        for folder in folders:
            if (folder / EXPORT_RECORD).is_file():
                data = _read(folder / EXPORT_RECORD)
                return cls.from_dict(data) if isinstance(data, dict) and data else None
        return None


# What `--verify` takes from a format's entry besides its file: each gate figure (a share, or a limit) and the time.
_GATE_RANGES = {"min_agreement": (0.0, 1.0), "max_difference": (0.0, math.inf), "max_accuracy_drop": (0.0, math.inf)}


def _views(value: Any) -> list[str] | None:
    """export.json's `tta_views` when it names known views only (else absent: the mirror is assumed)."""
    if isinstance(value, list) and value and all(isinstance(view, str) and view in VIEWS for view in value):
        return list(value)
    return None


def _check_fields(path: Path, data: dict[str, Any]) -> None:
    """The entries `--verify` computes with are of their type and range (a NaN gate would pass anything).

    Raises:
        UserError: one line naming the file and the key.
    """

    def refuse(key: str, value: Any, expected: str) -> None:
        raise UserError(f"{path}: {key} is {value!r}, expected {expected}; the file is damaged: export the run again")

    for name, entry in data["formats"].items():
        if entry.get("file") is not None and not isinstance(entry["file"], str):
            refuse(f"formats.{name}.file", entry["file"], "a file name")
        gate = entry.get("gate")
        if gate is not None and not isinstance(gate, dict):
            refuse(f"formats.{name}.gate", gate, "a mapping of gate figures")
        for figure, (low, high) in _GATE_RANGES.items():
            value = (gate or {}).get(figure)
            if value is not None and not (_number(value) and low <= value <= high):
                refuse(f"formats.{name}.gate.{figure}", value, f"a number from {low:g} to {high:g}, or null")
        seconds = entry.get("export_seconds")
        if seconds is not None and not (_number(seconds) and seconds >= 0):
            refuse(f"formats.{name}.export_seconds", seconds, "a number of seconds, or null")
    images = data.get("parity_images")
    requested = images.get("requested") if isinstance(images, dict) else None
    if requested is not None and not (isinstance(requested, int) and not isinstance(requested, bool) and requested > 0):
        refuse("parity_images.requested", requested, "a positive whole number, or null")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _mapping(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def read_export_record(export_dir: Path) -> ExportRecord:
    """export.json of an export folder, checked for the fields `--verify` needs.

    Raises:
        UserError: no export.json, or one that is damaged.
    """
    path = Path(export_dir) / EXPORT_RECORD
    if not path.is_file():
        raise UserError(
            f"{export_dir}: not a tlcli export folder (no {EXPORT_RECORD}); export one with `tlcli export RUN_DIR`"
        )
    return ExportRecord.read(path)
