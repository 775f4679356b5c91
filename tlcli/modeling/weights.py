"""Where Keras keeps downloaded weights, and how to put a file there offline.

Keras looks for `keras.applications` weights in `$KERAS_HOME/models/`
(default `~/.keras/models/`) before it downloads them. On a machine without
network, `tlcli weights import FILE` copies a weights file there under its own
name, so `weights: imagenet` works.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

from tlcli.errors import UserError
from tlcli.paths import keras_weights_dir
from tlcli.runs.atomic import atomic_path

WEIGHT_SUFFIXES = (".h5", ".keras", ".weights.h5")


def import_weights(source: str | Path, name: str | None = None) -> Path:
    """Copy a weights file into the Keras cache (atomically); returns where it went.

    Raises:
        UserError: the file is missing or is not an .h5 / .keras file.
    """
    source = Path(source)
    if not source.is_file():
        raise UserError(f"{source}: weights file not found")
    if not source.name.endswith(WEIGHT_SUFFIXES):
        raise UserError(f"{source}: expected a Keras weights file (.h5 or .keras), as keras.io publishes them")
    target = keras_weights_dir() / (name or source.name)
    with atomic_path(target) as partial:
        shutil.copyfile(source, partial)
    return target


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
