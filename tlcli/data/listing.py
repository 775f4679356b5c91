"""Listing image files: class folders for training and checking, files/folders/globs for predicting.

One walker (`walk_files`) serves both, so every command sees the same files
in the same order.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator, Sequence

from tlcli.data.images import IMAGE_EXTENSIONS, is_image_candidate
from tlcli.errors import DataError, UserError


def walk_files(folder: Path) -> Iterator[Path]:
    """Every file under `folder`, sorted, following symlinks; hidden folders are not entered."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            yield Path(dirpath) / name


def list_class_files(folder: Path, key: str, ignored: list[tuple[str, str]] | None = None) -> dict[str, list[tuple[Path, str]]]:
    """{class name: [(absolute path, path relative to `folder`)]}, sorted.

    Class folders are the non-hidden subfolders; files inside nested folders
    count for their class; symlinks are followed; hidden and non-image files
    are ignored (and listed in `ignored`).
    """
    if not folder.is_dir():
        raise DataError(f"{key}: folder not found: {folder}")
    classes: dict[str, list[tuple[Path, str]]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if ignored is not None:
                ignored.append((str(entry), "file outside any class folder"))
            continue
        files: list[tuple[Path, str]] = []
        for path in walk_files(entry):
            if is_image_candidate(path):
                files.append((path.absolute(), path.relative_to(folder).as_posix()))
            elif ignored is not None:
                ignored.append((str(path), "hidden file" if path.name.startswith(".") else "not an image extension"))
        classes[entry.name] = files
    return classes


def collect_images(specs: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (recursively, image extensions only) and globs, keeping order, without duplicates.

    A file named explicitly (or matched by a glob) is always tried, whatever
    its extension; inside folders only image files count, hidden ones left out.

    Raises:
        UserError: nothing given, or a path or glob that matches no image.
    """
    if not specs:
        raise UserError("no images given; pass image files, folders or globs")
    found: dict[Path, None] = {}
    for spec in specs:
        text = os.path.expanduser(str(spec))
        path = Path(text)
        if path.exists():
            matches = [path]
        elif glob.has_magic(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if not matches:
                raise UserError(f"{spec}: the pattern matches no files")
        else:
            raise UserError(f"{spec}: no such file or folder")
        before = len(found)
        for match in matches:
            if match.is_dir():
                found.update(dict.fromkeys(p for p in walk_files(match) if is_image_candidate(p)))
            else:
                found[match] = None
        if len(found) == before and not any(m.is_file() for m in matches):
            raise UserError(f"{spec}: no image files in it ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return list(found)
