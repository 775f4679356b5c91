"""Remember what decoding found out about each file, so nothing is decoded twice for it.

Whether a file decodes, and what it is (format, mode, size, content hash),
depends only on its bytes. `tlcli check` and training both decode every file;
the verdict, an `ImageInfo` or the reason the file is unusable, is stored by
absolute path, size and modification time (and `images.DECODER_VERSION`) in a
small SQLite file under `$TLCLI_CACHE_DIR` (default `~/.cache/tlcli`). A
second `tlcli check` then decodes only new or changed files, and training
skips known-bad files without opening them.

The cache is an optimisation, never a reason to fail: if it cannot be opened
or written, screening simply decodes everything.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

from tlcli.images import DECODER_VERSION, ImageDecodeError, ImageInfo, cpu_workers, decode_image

log = logging.getLogger("tlcli")

CACHE_FILE = "screening.sqlite"
# Screening only needs the verdict, not pixels: decode small (JPEG's DCT scaling makes this fast).
SCREEN_SIZE = (32, 32)

Verdict = Union[ImageInfo, str]  # what a file is, or why it cannot be used
StatKey = tuple  # (size in bytes, modification time in ns)


def cache_dir() -> Path:
    """`$TLCLI_CACHE_DIR`, else `~/.cache/tlcli`."""
    configured = os.environ.get("TLCLI_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "tlcli"


def stat_key(path: str | Path) -> StatKey | None:
    """(size, mtime_ns) of the file symlinks point to, or None when it cannot be stat'ed."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


class ScreeningCache:
    """Verdicts by (absolute path, size, mtime): a thin wrapper over one SQLite table.

    Use from one thread; `lookup` before decoding, `store` after.
    """

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / CACHE_FILE
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError:
            # A corrupt cache file (e.g. a crash of an old SQLite) is rebuilt, not fatal.
            try:
                self.path.unlink()
                self._db = self._connect()
            except (OSError, sqlite3.Error) as exc:
                self._disable(exc)
        except (OSError, sqlite3.Error) as exc:
            self._disable(exc)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10)
        db.execute(
            "CREATE TABLE IF NOT EXISTS verdicts (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, decoder INTEGER, info TEXT, reason TEXT)"
        )
        return db

    def _disable(self, exc: Exception) -> None:
        log.debug("screening cache %s unavailable (%s); decoding everything", self.path, exc)
        self._db = None

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def lookup(self, paths: Sequence[str | Path]) -> tuple[dict[str, Verdict], dict[str, StatKey]]:
        """Cached verdicts still valid for `paths`, and the current stat key of each path.

        Stat keys are taken now, before any decoding, so a file that changes
        while it is decoded is stored with its old key and re-decoded next time.
        """
        stats = {}
        for path in paths:
            key = stat_key(path)
            if key is not None:
                stats[str(path)] = key
        hits: dict[str, Verdict] = {}
        if self._db is None or not stats:
            return hits, stats
        names = list(stats)
        try:
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                rows = self._db.execute(
                    f"SELECT path, size, mtime_ns, decoder, info, reason FROM verdicts WHERE path IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                for path, size, mtime_ns, decoder, info, reason in rows:
                    if (size, mtime_ns) == stats.get(path) and decoder == DECODER_VERSION:
                        hits[path] = ImageInfo(**json.loads(info)) if info else reason
        except (sqlite3.Error, TypeError, ValueError) as exc:
            self._disable(exc)
            return {}, stats
        return hits, stats

    def store(self, verdicts: Iterable[tuple[str, StatKey, Verdict]]) -> None:
        """Remember (path, stat key, verdict) triples; errors are logged and ignored."""
        if self._db is None:
            return
        rows = [
            (path, key[0], key[1], DECODER_VERSION, json.dumps(asdict(v)) if isinstance(v, ImageInfo) else None, v if isinstance(v, str) else None)
            for path, key, v in verdicts
        ]
        if not rows:
            return
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            self._disable(exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@dataclass
class Screening:
    """The verdict for every screened path (by `str(path)`), and how much came from the cache."""

    verdicts: dict[str, Verdict] = field(default_factory=dict)
    cached: int = 0
    decoded: int = 0


def screen_files(
    paths: Sequence[str | Path],
    *,
    use_cache: bool = True,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Screening:
    """Decode every file not already screened (in parallel) and return all verdicts.

    Args:
        paths: the files, as absolute paths.
        use_cache: read and update the screening cache.
        progress: called with the number of files done.
    """
    cache = ScreeningCache() if use_cache else None
    try:
        hits, stats = cache.lookup(paths) if cache is not None else ({}, {})
        result = Screening(dict(hits), cached=len(hits))
        todo = [str(p) for p in paths if str(p) not in hits]
        done = len(hits)
        if progress is not None and done:
            progress(done)

        def one(path: str) -> Verdict:
            try:
                return decode_image(path, SCREEN_SIZE, 3)[1]
            except ImageDecodeError as exc:
                return exc  # type: ignore[return-value]

        fresh = []
        with ThreadPoolExecutor(max_workers=workers or cpu_workers()) as pool:
            for path, outcome in zip(todo, pool.map(one, todo)):
                if isinstance(outcome, ImageDecodeError):
                    result.verdicts[path] = outcome.reason
                    if outcome.cacheable and path in stats:
                        fresh.append((path, stats[path], outcome.reason))
                else:
                    result.verdicts[path] = outcome
                    if path in stats:
                        fresh.append((path, stats[path], outcome))
                done += 1
                if progress is not None:
                    progress(done)
        result.decoded = len(todo)
        if cache is not None:
            cache.store(fresh)
        return result
    finally:
        if cache is not None:
            cache.close()
