"""The on-disk feature cache: what a frozen part of the model computes per image.

Layout: `$TLCLI_CACHE_DIR/features/<model key>/<hh>/<content sha256>.npy`,
plus a `meta.json` per model key. The model key hashes everything that
changes the features (base name and arguments, a hash of the frozen weights,
image size, channels, preprocessing, where the model is cut, the decoder and
cache versions); the file name is the hash of the image's bytes. So a second
run on the same data and base skips extraction, and changing one image, the
weights or the image size misses. Files are written atomically; when the cache
grows over its cap (`$TLCLI_CACHE_MAX_GB`, default 10), the least recently
used model keys are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE_VERSION = 1
DEFAULT_MAX_GB = 10.0


def cache_root() -> Path:
    """`$TLCLI_CACHE_DIR`, else `~/.cache/tlcli`."""
    configured = os.environ.get("TLCLI_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "tlcli"


def max_bytes() -> int:
    try:
        return int(float(os.environ.get("TLCLI_CACHE_MAX_GB", DEFAULT_MAX_GB)) * 1024**3)
    except ValueError:
        return int(DEFAULT_MAX_GB * 1024**3)


def weights_digest(layers: list) -> str:
    """A hash of the values of every weight of `layers` (what the features depend on)."""
    digest = hashlib.sha256()
    for layer in layers:
        for weight in layer.weights:
            value = np.asarray(weight.numpy())
            digest.update(f"{weight.path}:{value.dtype}:{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def model_key(parts: dict[str, Any]) -> str:
    payload = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class FeatureStore:
    """Per-image features for one model key; `get`/`put` by content hash."""

    def __init__(self, key: str, describe: dict[str, Any], root: Path | None = None):
        self.key = key
        self.folder = (root or cache_root()) / "features" / key
        self.describe = describe
        self.hits = 0
        self.writes = 0

    def _path(self, content_hash: str) -> Path:
        return self.folder / content_hash[:2] / f"{content_hash}.npy"

    def get(self, content_hash: str) -> np.ndarray | None:
        path = self._path(content_hash)
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # absent, or a damaged entry: recompute it
        self.hits += 1
        return value

    def put(self, content_hash: str, value: np.ndarray) -> None:
        path = self._path(content_hash)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as stream:
            np.save(stream, np.ascontiguousarray(value), allow_pickle=False)
        os.replace(temporary, path)
        self.writes += 1

    def seconds_per_image(self) -> float | None:
        meta = _read_meta(self.folder)
        return meta.get("seconds_per_image") if meta else None

    def finish(self, seconds_per_image: float | None) -> None:
        """Record metadata (and the extraction speed, for 'time saved'); enforce the size cap."""
        meta = _read_meta(self.folder) or {"created": time.time(), **self.describe}
        if seconds_per_image is not None and self.writes:
            meta["seconds_per_image"] = seconds_per_image
        meta["last_used"] = time.time()
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / ".meta.json.tmp"
        temporary.write_text(json.dumps(meta, indent=2, default=str))
        os.replace(temporary, self.folder / "meta.json")
        enforce_cap(keep=self.key)


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class CacheEntry:
    key: str
    files: int
    bytes: int
    last_used: float
    describe: dict[str, Any]


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every model key in the cache, least recently used first."""
    features = (root or cache_root()) / "features"
    if not features.is_dir():
        return []
    entries = []
    for folder in features.iterdir():
        if not folder.is_dir():
            continue
        files = [p for p in folder.rglob("*.npy")]
        meta = _read_meta(folder) or {}
        entries.append(CacheEntry(folder.name, len(files), sum(p.stat().st_size for p in files), meta.get("last_used", folder.stat().st_mtime), meta))
    return sorted(entries, key=lambda e: e.last_used)


def enforce_cap(keep: str | None = None, root: Path | None = None) -> list[str]:
    """Remove least recently used model keys until the cache fits its cap."""
    entries = cache_entries(root)
    total = sum(e.bytes for e in entries)
    removed = []
    for entry in entries:
        if total <= max_bytes():
            break
        if entry.key == keep:
            continue
        shutil.rmtree((root or cache_root()) / "features" / entry.key, ignore_errors=True)
        total -= entry.bytes
        removed.append(entry.key)
    return removed


def clear_cache(root: Path | None = None) -> int:
    """Delete every cached feature; returns the bytes freed."""
    freed = sum(e.bytes for e in cache_entries(root))
    shutil.rmtree((root or cache_root()) / "features", ignore_errors=True)
    return freed
