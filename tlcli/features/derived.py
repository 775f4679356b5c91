"""Results computed from a model key's cached features, kept beside them (training's data-trust report).

Layout: `$TLCLI_CACHE_DIR/features/<model key>/derived/<name>-<digest>.dat`, where `<digest>` hashes everything the
result depends on besides the features (the caller's `parts`). The file is the sha256 of the payload on its first
line, then the payload: bytes the caller encodes and decodes (this stage does not know what they mean). It is written
atomically, so it is complete or absent; one that fails its checksum is deleted and reads as absent, so the caller
computes the result again. It is counted, capped and cleared with its model key's features.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcli.features.store import checksum_line
from tlcli.paths import cache_root
from tlcli.runs.atomic import write_bytes_atomic

DERIVED = "derived"


@dataclass(frozen=True)
class DerivedResult:
    """One cached result: `read` it (None: absent or damaged), or `write` it."""

    path: Path

    @classmethod
    def of(cls, model_key: str, name: str, parts: dict[str, Any], root: Path | None = None) -> DerivedResult:
        """The entry of result `name` derived from the features of `model_key` and `parts` (JSON-serialisable)."""
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
        return cls((root or cache_root()) / "features" / model_key / DERIVED / f"{name}-{digest}.dat")

    def read(self) -> bytes | None:
        """The payload, or None when the entry is absent or fails its checksum (then it is deleted)."""
        try:
            stored = self.path.read_bytes()
        except OSError:
            return None
        head, _, payload = stored.partition(b"\n")
        if head != checksum_line(payload).encode():
            with contextlib.suppress(OSError):
                self.path.unlink()
            return None
        return payload

    def write(self, payload: bytes) -> str | None:
        """Store `payload`; returns the one line saying why it could not be (the run goes on without it), or None."""
        try:
            write_bytes_atomic(self.path, f"{checksum_line(payload)}\n".encode() + payload)
        except OSError as exc:
            return f"the feature cache {self.path.parent} cannot be written ({exc.strerror or exc}); nothing is kept"
        return None
