"""What an export produced, as typed results and as `export.json`.

`export.json` is the export folder's record: the run it came from, the task,
class names, every format's file, size, runtime tensors (names, dtypes,
shapes, quantization), gate and parity figures, and the versions that wrote
it. `--verify` reads it back to find the run, the formats and their gates.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tlcli.errors import GateFailed, UserError
from tlcli.export.formats import FILES, RUNTIMES, Gate
from tlcli.export.parity import Parity
from tlcli.export.runtime import EXPORT_RECORD
from tlcli.runs.atomic import read_json
from tlcli.version import __version__

EXPORT_FORMAT_VERSION = 1


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
    record: dict[str, Any]  # export.json as written (export) or as read, with this check's figures (verify)
    verified: bool = False
    problems: list[str] = field(default_factory=list)  # failures of the folder rather than of one format (labels.txt)
    warnings: list[str] = field(default_factory=list)

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


def build_record(
    head: dict[str, Any], results: list[FormatResult], parity_images: dict[str, Any], calibration: dict[str, Any] | None
) -> dict[str, Any]:
    """export.json: `head` (run, task, classes, model, versions, created) plus the images used and every format's result."""
    failures = [line for r in results for line in r.failures]
    return {
        **head,
        "formats": {r.format: r.to_dict() for r in results},
        "parity_images": parity_images,
        "calibration_images": calibration,
        "passed": not failures,
        "failures": failures,
    }


def read_export_record(export_dir: Path) -> dict[str, Any]:
    """export.json of an export folder, checked for the fields `--verify` needs.

    Raises:
        UserError: no export.json, or one that is damaged.
    """
    path = Path(export_dir) / EXPORT_RECORD
    if not path.is_file():
        raise UserError(
            f"{export_dir}: not a tlcli export folder (no {EXPORT_RECORD}); export one with `tlcli export RUN_DIR`"
        )
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None
    formats = record.get("formats") if isinstance(record, dict) else None
    run = record.get("run") if isinstance(record, dict) else None
    if not isinstance(formats, dict) or not isinstance(run, dict) or not isinstance(run.get("dir"), str):
        raise UserError(f"{path}: damaged (expected run.dir and formats); export the run again")
    unknown = [name for name in formats if name not in FILES]
    if unknown or record.get("format_version") != EXPORT_FORMAT_VERSION:
        raise UserError(
            f"{path}: written by another tlcli (export format {record.get('format_version')}, formats {', '.join(formats)}); export the run again"
        )
    return record
