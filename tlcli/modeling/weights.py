"""Where Keras keeps downloaded weights, and how to put a file there offline.

Keras looks for `keras.applications` weights in `$KERAS_HOME/models/`
(default `~/.keras/models/`) before it downloads them. On a machine without
network, `tlcli weights import FILE` copies a weights file there under its own
name, so `weights: imagenet` works. Only a file that is what its name says is
taken (an `.h5` must be HDF5, a `.keras` a zip archive), and a different file
already there under that name is kept unless `force` replaces it.
"""

from __future__ import annotations

import contextlib
import filecmp
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tlcli.errors import UserError
from tlcli.paths import keras_weights_dir
from tlcli.runs.atomic import atomic_path, not_regular

WEIGHT_SUFFIXES = (".h5", ".keras", ".weights.h5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # at offset 0 of every HDF5 file Keras writes


@dataclass(frozen=True)
class Imported:
    """Where `import_weights` put a file; `unchanged`: the same bytes were already there (nothing was written)."""

    path: Path
    unchanged: bool = False


def import_weights(source: str | Path, name: str | None = None, *, force: bool = False) -> Imported:
    """Copy a weights file into the Keras cache (atomically).

    Args:
        force: replace a different file already in the cache under the same name.

    Raises:
        UserError: the file is missing, not a regular file, not an .h5 / .keras file, not what its suffix says
            (HDF5 / zip), or a different file of that name is in the cache and `force` is off.
    """
    source = Path(source)
    _require_weights_file(source)
    target = keras_weights_dir() / (name or source.name)
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return Imported(target, unchanged=True)
    if target.exists() and not force:
        raise UserError(
            f"{target} already exists and differs from {source}; it was kept "
            "(pass --force to replace it, or `tlcli weights list` to see the cache)"
        )
    with atomic_path(target) as partial:
        shutil.copyfile(source, partial)
    return Imported(target)


def _require_weights_file(source: Path) -> None:
    """A regular file whose name and content are a Keras weights file's: HDF5 (.h5), or a zip archive (.keras)."""
    try:
        kind = not_regular(source)
    except OSError:
        raise UserError(f"{source}: weights file not found") from None
    if kind is not None:
        raise UserError(f"{source}: {kind}, not a weights file")
    if not source.name.endswith(WEIGHT_SUFFIXES):
        raise UserError(f"{source}: expected a Keras weights file (.h5 or .keras), as keras.io publishes them")
    with open(source, "rb") as stream:
        head = stream.read(len(HDF5_SIGNATURE))
    if source.name.endswith(".h5") and head != HDF5_SIGNATURE:
        raise UserError(f"{source}: not an HDF5 file (an .h5 weights file starts with the HDF5 signature)")
    if source.name.endswith(".keras") and not zipfile.is_zipfile(source):
        raise UserError(f"{source}: not a .keras archive (a .keras file is a zip archive)")


def cached_weights() -> list[Path]:
    folder = keras_weights_dir()
    return (
        sorted(p for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES) and not p.name.startswith("."))
        if folder.is_dir()
        else []
    )


@contextlib.contextmanager
def recording_downloads() -> Iterator[list[str]]:
    """Record the file names keras.applications asks Keras's `get_file` for.

    Used only to name the missing file in an error; if Keras's internals move,
    nothing is recorded and the error is less specific.
    """
    requested: list[str] = []
    try:
        from keras.src.utils import file_utils
    except ImportError:
        yield requested
        return
    original = file_utils.get_file

    def get_file(fname=None, origin=None, *args, **kwargs):
        requested.append(fname or Path(str(origin)).name)
        return original(fname, origin, *args, **kwargs)

    file_utils.get_file = get_file
    try:
        yield requested
    finally:
        file_utils.get_file = original
