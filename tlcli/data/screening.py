"""Screening: the one pass that decodes files, and what it remembers, so nothing is decoded twice.

Whether a file decodes, and what it is (format, mode, size, content hash),
depends only on its bytes. `tlcli check` and training both decode every file;
the verdict, an `ImageInfo` or the reason the file is unusable, is stored by
absolute path, size and modification time (and `images.DECODER_VERSION`) in a
small SQLite file under `$TLCLI_CACHE_DIR` (default `~/.cache/tlcli`). A
second `tlcli check` then decodes only new or changed files, and training
skips known-bad files without opening them.

The cache is an optimisation, never a reason to fail: if it cannot be opened
or written, screening simply decodes everything.

`ScreenedFiles` is the one decode loop of tlcli: `tlcli check` (verdicts
only), training's decode pass (`tlcli.data.decoded`) and its feature pass
(`tlcli.features.extract`) all read files through it, so each of them skips
known-bad files unopened and teaches the cache what it finds.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

from tlcli.data.images import DECODER_VERSION, DEFAULT_MAX_BYTES, ImageDecodeError, ImageInfo, decode_image
from tlcli.data.prefetch import bounded_map
from tlcli.paths import cache_root

log = logging.getLogger("tlcli")

CACHE_FILE = "screening.sqlite"
# Screening only needs the verdict, not pixels: decode small (JPEG's DCT scaling makes this fast).
SCREEN_SIZE = (32, 32)

Verdict = Union[ImageInfo, str]  # what a file is, or why it cannot be used
StatKey = tuple  # (size in bytes, modification time in ns)


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
        self.path = path or cache_root() / CACHE_FILE
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
            "CREATE TABLE IF NOT EXISTS verdicts (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
            "decoder INTEGER, info TEXT, reason TEXT)"
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
                    (
                        "SELECT path, size, mtime_ns, decoder, info, reason FROM verdicts WHERE path IN "
                        f"({','.join('?' * len(chunk))})"
                    ),
                    chunk,
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
            (
                path,
                key[0],
                key[1],
                DECODER_VERSION,
                json.dumps(asdict(v)) if isinstance(v, ImageInfo) else None,
                v if isinstance(v, str) else None,
            )
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
class Loaded:
    """What a loader made of one file: its verdict, and its pixels when it decoded them.

    `info` is None when the loader did not need to decode the file (its
    features were all cached): nothing is learned about it then.
    """

    info: ImageInfo | None
    pixels: Any = None
    content_hash: str = ""


class ScreenedFiles:
    """Load `paths` in a bounded thread pool, in order, through the screening cache.

    Use as a context manager and iterate once: `(path, Loaded or
    ImageDecodeError)` per path. A file the cache knows to be unusable is an
    `ImageDecodeError` without being opened; with `known_good`, a file it
    knows to be a good image is its cached `ImageInfo`, not loaded either.
    Every new verdict is stored when the block ends, even when it ends early
    (a bad file with `on_bad_file: fail`).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        load: Callable[[Path], Loaded],
        *,
        use_cache: bool = True,
        known_good: bool = False,
        workers: int | None = None,
        window: int = 64,
        progress: Callable[[int], None] | None = None,
    ):
        self.paths, self.load, self.known_good = list(paths), load, known_good
        self.workers, self.window, self.progress = workers, window, progress
        self._cache = ScreeningCache() if use_cache else None
        self.known, self._stats = self._cache.lookup(self.paths) if self._cache is not None else ({}, {})
        self._fresh: list[tuple[str, StatKey, Verdict]] = []

    @property
    def cached(self) -> int:
        """How many verdicts came from the cache without opening the file."""
        return sum(1 for v in self.known.values() if self._from_cache(v) is not None)

    def _from_cache(self, verdict: Verdict | None) -> Loaded | ImageDecodeError | None:
        """What the cache alone says of a file (None: the file must be opened)."""
        if isinstance(verdict, str):
            return ImageDecodeError(verdict)
        if self.known_good and verdict is not None:
            return Loaded(verdict, content_hash=verdict.content_hash)
        return None

    def _one(self, path: str | Path) -> Loaded | ImageDecodeError:
        cached = self._from_cache(self.known.get(str(path)))
        if cached is not None:
            return cached
        try:
            return self.load(Path(path))
        except ImageDecodeError as exc:
            return exc

    def __iter__(self) -> Iterator[tuple[Path, Loaded | ImageDecodeError]]:
        answers = [self._from_cache(self.known.get(str(path))) for path in self.paths]
        # A warm cache answers every path: a thread pool would only add its hand-off (about 0.2 ms a file).
        if all(answer is not None for answer in answers):
            outcomes: Iterable = zip(self.paths, answers)
        else:
            outcomes = bounded_map(self._one, self.paths, window=self.window, workers=self.workers)
        for done, (path, outcome) in enumerate(outcomes, start=1):
            self._learn(str(path), outcome)
            yield Path(path), outcome
            if self.progress is not None:
                self.progress(done)

    def _learn(self, path: str, outcome: Loaded | ImageDecodeError) -> None:
        key = self._stats.get(path)
        if key is None or path in self.known:
            return
        if isinstance(outcome, ImageDecodeError):
            if outcome.cacheable:
                self._fresh.append((path, key, outcome.reason))
        elif outcome.info is not None:
            self._fresh.append((path, key, outcome.info))

    def __enter__(self) -> ScreenedFiles:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._cache is not None:
            self._cache.store(self._fresh)
            self._cache.close()


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
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Screening:
    """Decode every file not already screened (in parallel) and return all verdicts (`tlcli check`).

    Args:
        paths: the files, as absolute paths.
        use_cache: read and update the screening cache.
        progress: called with the number of files done.
    """

    def verdict_only(path: Path) -> Loaded:
        return Loaded(decode_image(path, SCREEN_SIZE, 3, max_bytes)[1])

    with ScreenedFiles(
        paths, verdict_only, use_cache=use_cache, known_good=True, workers=workers, progress=progress
    ) as files:
        result = Screening(cached=files.cached, decoded=len(files.paths) - files.cached)
        for path, outcome in files:
            result.verdicts[str(path)] = outcome.reason if isinstance(outcome, ImageDecodeError) else outcome.info
    return result
