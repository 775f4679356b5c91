"""The on-disk feature cache: what a frozen part of the model computes per image.

Layout: `$TLCLI_CACHE_DIR/features/<model key>/packs/<id>.npy` + `<id>.txt`
(`<id>` is a digest of the pack's hashes and its number of rows),
plus a `meta.json` per model key. The model key hashes everything that
changes the features (`describe_features`: base name and arguments, a hash of
the frozen weights, image size, channels, preprocessing, where the model is
cut, the decoder and cache versions). Features are stored per image but written in packs: one
`.npy` array of up to `PACK_ROWS` images (and `PACK_BYTES`) and a `.txt` listing each row's
image by the hash of its bytes. So a second run on the same data and base
reads a few files instead of one per image and skips extraction, and changing
one image, the weights or the image size misses. A pack's `.txt` is written
last and atomically (fsynced, then renamed), so a pack is complete or
invisible; it starts with the sha256 of the pack's array file, checked on
every read, so a damaged pack (truncated, emptied, or other bytes of the same
size) is dropped and its images recomputed, and never changes a figure. When the cache grows over its cap
(`$TLCLI_CACHE_MAX_GB`, default 10), the least recently used model keys are
removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlcli.config.schema import ExperimentConfig
from tlcli.data.images import DECODER_VERSION
from tlcli.features.cut import Cut
from tlcli.modeling import layers as names
from tlcli.paths import cache_root
from tlcli.runs.atomic import write_bytes_atomic, write_text_atomic
from tlcli.runs.records import ModelInfo
from tlcli.settings import cache_max_gb

CACHE_VERSION = 3  # 2: packs of rows instead of one .npy per image; 3: packs carry a checksum
CHECKSUM_PREFIX = "sha256:"
DEFAULT_MAX_GB = 10.0
# Rows per pack: large enough that reading a dataset's features is a few file
# reads (3,000 per-image files took 0.9 s to look up, 3 packs a few ms), small
# enough that an interrupted extraction loses little.
PACK_ROWS = 1024
# ... and small enough in bytes that writing one (its rows, their stack and the file's bytes) and reading one cost a
# bounded amount of memory: features of a low cut (56x56x32 floats, 400 KB an image) made 1024-row packs of 411 MB,
# held three times over while written.
PACK_BYTES = 64 * 1024**2


def checksum_line(data: bytes) -> str:
    """The header that vouches for `data` (a pack's array file, a derived result's payload), without its newline."""
    return f"{CHECKSUM_PREFIX}{hashlib.sha256(data).hexdigest()}"


def max_bytes() -> int:
    try:
        return int(cache_max_gb(DEFAULT_MAX_GB) * 1024**3)
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


def describe_features(config: ExperimentConfig, info: ModelInfo, model, cut: Cut) -> dict[str, Any]:
    """Everything the features at `cut` depend on: the cache key's recipe (also kept in the key's meta.json)."""
    base = model.get_layer(names.BASE)
    frozen = base.layers if cut.kind == "pool" else base.layers[: cut.index + 1]
    return {
        "base": info.base_name,
        "args": config.base.args,
        "source_run": config.base.run,
        "weights": weights_digest(frozen),
        "image_size": list(config.data.image_size),
        "channels": info.channels,
        "color_mode": config.data.color_mode,
        "preprocess": info.preprocess,
        "cut": cut.label,
        "pooling": config.head.pooling,
        "decoder": DECODER_VERSION,
    }


def store_for(config: ExperimentConfig, info: ModelInfo, model, cut: Cut) -> FeatureStore:
    """The disk store of the features at `cut` of this config's model."""
    describe = describe_features(config, info, model, cut)
    return FeatureStore(model_key(describe), describe)


class FeatureStore:
    """Per-image features for one model key, by content hash: `index` what is stored, `add` what was computed.

    Every pack is verified when read (its listing holds the sha256 of its
    array file): a pack that fails, for any reason, is dropped and its images
    recomputed, and `damaged` counts it. A cache that cannot be written is
    given up for the rest of the run with one `problems` line; training goes on.
    """

    def __init__(self, key: str, describe: dict[str, Any], root: Path | None = None):
        self.key = key
        self.root = root or cache_root()
        self.folder = self.root / "features" / key
        self.describe = describe
        self.writes = 0
        self.damaged = 0
        self.problems: list[str] = []
        self._index: dict[str, tuple[Pack, int]] | None = None
        self._pending: list[tuple[str, np.ndarray]] = []
        self._pending_bytes = 0

    @property
    def packs(self) -> Path:
        return self.folder / "packs"

    @property
    def writable(self) -> bool:
        return not self.problems

    def index(self, shape: tuple[int, ...] | None = None) -> dict[str, tuple[Pack, int]]:
        """Content hash -> (pack, row), over every pack that verifies (of row shape `shape`); the rows stay on disk
        until `Pack.take` reads them, so the index of a large cache costs names, not arrays."""
        if self._index is None:
            self._index = {}
            for listing in (
                sorted(self.packs.glob("[!.]*.txt")) if self.packs.is_dir() else []
            ):  # not a pack being written
                rows, hashes = _verified_pack(listing, shape)
                if rows is None:  # damaged: drop it; its images are recomputed and stored again
                    self.damaged += 1
                    for path in (listing, listing.with_suffix(".npy")):
                        with contextlib.suppress(OSError):
                            path.unlink()
                    continue
                for row, content_hash in enumerate(hashes):
                    self._index[content_hash] = (rows, row)
        return self._index

    def add(self, content_hash: str, value: np.ndarray) -> None:
        """Queue one image's features; a pack is written every `PACK_ROWS` images and by `flush`."""
        if not self.writable:
            return
        self._pending.append((content_hash, np.array(value, copy=True)))
        self._pending_bytes += self._pending[-1][1].nbytes
        if len(self._pending) >= PACK_ROWS or self._pending_bytes >= PACK_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._pending or not self.writable:
            return
        hashes = [h for h, _ in self._pending]
        buffer = io.BytesIO()
        np.save(buffer, np.stack([v for _, v in self._pending]), allow_pickle=False)
        self._pending, self._pending_bytes = [], 0
        digest = hashlib.sha256("\n".join(hashes).encode()).hexdigest()[:32]
        name = f"{digest}-{len(hashes)}"  # `cache_entries` counts images from the names alone
        data = buffer.getbuffer()  # the file's bytes without a copy of them
        try:
            write_bytes_atomic(self.packs / f"{name}.npy", data)
            write_text_atomic(
                self.packs / f"{name}.txt",
                f"{checksum_line(data)}\n" + "\n".join(hashes) + "\n",
            )  # last: the pack now exists
        except OSError as exc:
            self.problems.append(
                f"the feature cache {self.folder} cannot be written ({exc.strerror or exc}); training goes on "
                "without it"
            )
            return
        self.writes += len(hashes)

    def seconds_per_image(self) -> float | None:
        meta = _read_meta(self.folder)
        return meta.get("seconds_per_image") if meta else None

    def finish(self, seconds_per_image: float | None) -> None:
        """Write what is queued, record metadata (and the extraction speed, for 'time saved'); enforce the size cap."""
        self.flush()
        if not self.writable:
            return
        meta = _read_meta(self.folder) or {"created": time.time(), **self.describe}
        if seconds_per_image is not None and self.writes:
            meta["seconds_per_image"] = seconds_per_image
        meta["last_used"] = time.time()
        try:
            write_text_atomic(self.folder / "meta.json", json.dumps(meta, indent=2, default=str))
            enforce_cap(keep=self.key, root=self.root)
        except OSError as exc:
            self.problems.append(f"the feature cache {self.folder} cannot be written ({exc.strerror or exc})")


@dataclass(frozen=True)
class Pack:
    """A pack's array file, verified when indexed; `take` reads rows of it."""

    path: Path

    def take(self, rows: Sequence[int]) -> np.ndarray:
        """These rows, copied out of the memory-mapped file (unmapped on return: the pages leave the process)."""
        array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        try:
            return np.asarray(array[np.asarray(rows, dtype=np.int64)])
        finally:
            del array


def _verified_pack(listing: Path, shape: tuple[int, ...] | None) -> tuple[Pack | None, list[str]]:
    """The pack whose array file matches the checksum in its listing (and holds one row of `shape` per listed
    hash), and its hashes; else (None, [])."""
    try:
        lines = listing.read_text(encoding="ascii").split()
        if not lines or not lines[0].startswith(CHECKSUM_PREFIX):
            return None, []
        array_file = listing.with_suffix(".npy")
        if lines[0] != checksum_line(array_file.read_bytes()):
            return None, []
        rows = np.load(array_file, mmap_mode="r", allow_pickle=False)  # the header only
        found = (rows.ndim, rows.shape)
        del rows
    except Exception:  # noqa: BLE001 - any damage (truncation, zero bytes, bad header, other bytes) means: recompute
        return None, []
    hashes = lines[1:]
    ndim, found_shape = found
    if ndim < 1 or found_shape[0] != len(hashes) or (shape is not None and tuple(found_shape[1:]) != tuple(shape)):
        return None, []
    return Pack(array_file), hashes


def probe_cache(root: Path | None = None) -> str | None:
    """Why the disk cache under `root` cannot be used (not creatable, not a folder, not writable), or None when it
    can."""
    folder = (root or cache_root()) / "features"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(folder / ".probe", b"")
        (folder / ".probe").unlink()
    except OSError as exc:
        return f"{exc.strerror or exc}: {exc.filename or folder}"
    return None


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class CacheEntry:
    key: str
    files: int  # images with stored features
    bytes: int
    last_used: float
    describe: dict[str, Any]


def _pack_rows(listing: Path) -> int:
    """Images in a pack, from its name (`<digest>-<rows>.txt`)."""
    try:
        return int(listing.stem.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0  # not a pack tlcli wrote


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every model key in the cache, least recently used first."""
    features = (root or cache_root()) / "features"
    if not features.is_dir():
        return []
    entries = []
    for folder in features.iterdir():
        if not folder.is_dir():
            continue
        files = [p for p in folder.rglob("*") if p.is_file()]
        images = sum(_pack_rows(p) for p in files if p.suffix == ".txt" and not p.name.startswith("."))
        meta = _read_meta(folder) or {}
        entries.append(
            CacheEntry(
                folder.name,
                images,
                sum(p.stat().st_size for p in files),
                meta.get("last_used", folder.stat().st_mtime),
                meta,
            )
        )
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
