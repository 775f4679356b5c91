"""Atomic files and folders: a crash leaves the old version or the new one, never half of either.

Every file tlcli writes into a run folder, an evaluation, the feature cache or
the Keras cache goes through `atomic_path` (a temporary name in the same
folder, fsynced, then renamed over the target); a folder that must appear
complete (a checkpoint) is built under a temporary name by `atomic_folder`
and renamed into place.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import stat
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, for writers that pick a format by it); rename it over `path`
    on success.

    The temporary file is fsynced before the rename and removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield temporary
        fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_csv_atomic(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def save_model_atomic(model, path: Path) -> None:
    with atomic_path(path) as temporary:  # keeps `.keras`: Keras picks the format from the suffix
        model.save(temporary)


def not_regular(path: Path) -> str | None:
    """What `path` is when it is not a regular file (after symlinks): "a FIFO", "a character device", ...; None for a
    regular file. Checked with `stat`, never `open`: opening a FIFO blocks until a writer comes, and a device such as
    /dev/zero never ends (the data side's `read_image_file` refuses them the same way).

    Raises:
        OSError: `path` cannot be stat'ed (missing, a dangling symlink, no permission).
    """
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@contextlib.contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success fsync its files and rename it to `final` (replacing one that
    exists)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        yield temporary
        for path in temporary.iterdir():
            if path.is_file():
                fsync_file(path)
        fsync_dir(temporary)
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def fsync_file(path: Path) -> None:
    with open(path, "rb") as stream:
        os.fsync(stream.fileno())


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
