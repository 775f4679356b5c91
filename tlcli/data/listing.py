"""Listing image files: class folders for training and checking, files/folders/globs for predicting.

One walker (`walk_files`) serves both, so every command sees the same files
in the same order. It follows symlinks (a dataset assembled from folders one
cannot modify is a folder of links) but enters each real folder once, by
device and inode: a link back up the tree (a loop) or a second link to a
folder already listed is skipped and said, never walked again.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator, Sequence

from tlcli.data.images import IMAGE_EXTENSIONS, is_image_candidate
from tlcli.data.manifest import is_manifest, read_paths
from tlcli.data.names import check_class_name, is_valid_utf8, printable
from tlcli.errors import DataError, UserError


def walk_files(
    folder: Path, seen: set[tuple[int, int]] | None = None, skipped: list[tuple[str, str]] | None = None
) -> Iterator[Path]:
    """Every file under `folder`, sorted, following symlinks, each real folder entered once.

    Args:
        seen: (device, inode) of the folders already walked (shared across calls, so a link from
            one class folder into another is not walked twice); updated.
        skipped: receives (path, why) for every link the walk did not enter.
    """
    seen = set() if seen is None else seen
    skipped = skipped if skipped is not None else []
    try:
        identity = os.stat(folder)
    except OSError as exc:
        skipped.append((printable(folder), f"link not followed ({exc.strerror or exc})"))
        return
    if (identity.st_dev, identity.st_ino) in seen:
        skipped.append(
            (printable(folder), "link to a folder already listed (a loop or a second link), not walked again")
        )
        return
    seen.add((identity.st_dev, identity.st_ino))
    yield from _walk(Path(folder), seen, skipped)


def _walk(folder: Path, seen: set[tuple[int, int]], skipped: list[tuple[str, str]]) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        skipped.append((printable(folder), f"folder not readable ({exc.strerror or exc})"))
        return
    folders = []
    for entry in entries:
        try:
            is_dir = entry.is_dir()  # follows links; a dangling or looping link is not a folder
        except OSError:
            is_dir = False
        if not is_dir:
            yield Path(entry.path)
        elif not entry.name.startswith("."):
            folders.append(entry)
    for entry in folders:
        try:
            identity = entry.stat()
        except OSError as exc:  # ELOOP: a link to itself
            skipped.append((printable(entry.path), f"link not followed ({exc.strerror or exc})"))
            continue
        key = (identity.st_dev, identity.st_ino)
        if key in seen:
            skipped.append(
                (printable(entry.path), "link to a folder already listed (a loop or a second link), not walked again")
            )
            continue
        seen.add(key)
        yield from _walk(Path(entry.path), seen, skipped)


def list_class_files(
    folder: Path, key: str, ignored: list[tuple[str, str]] | None = None
) -> dict[str, list[tuple[Path, str]]]:
    """{class name: [(absolute path, path relative to `folder`)]}, sorted.

    Class folders are the non-hidden subfolders; files inside nested folders
    count for their class; symlinks are followed; hidden and non-image files
    are ignored (and listed in `ignored`).
    """
    if not folder.is_dir():
        raise DataError(f"{key}: folder not found: {folder}")
    ignored = ignored if ignored is not None else []
    root = os.stat(folder)
    seen = {(root.st_dev, root.st_ino)}
    classes: dict[str, list[tuple[Path, str]]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            ignored.append((printable(entry), "file outside any class folder"))
            continue
        check_class_name(entry.name, f"{key}: a class folder in {printable(folder)}")
        files: list[tuple[Path, str]] = []
        for path in walk_files(entry, seen, ignored):
            if not is_valid_utf8(str(path)):  # its relative path is the hash split's key and a record's text: skip it
                ignored.append((printable(path), "file name is not valid UTF-8 (rename it)"))
            elif is_image_candidate(path):
                files.append((path.absolute(), path.relative_to(folder).as_posix()))
            else:
                ignored.append((str(path), "hidden file" if path.name.startswith(".") else "not an image extension"))
        classes[entry.name] = files
    return classes


def collect_images(specs: Sequence[str | Path]) -> dict[Path, str]:
    """Expand files, folders (recursively, image extensions only), globs and CSV manifests, keeping order, without
    duplicates.

    A file named explicitly (or matched by a glob) is always tried, whatever
    its extension; inside folders only image files count, hidden ones left out.
    A manifest (`.csv`, `.tsv`) stands for the files of its `path` column.

    Returns:
        {file to read: how the output names it}: the path as given, or as the manifest writes it.

    Raises:
        UserError: nothing given, or a path or glob that matches no image.
    """
    if not specs:
        raise UserError("no images given; pass image files, folders, globs or a CSV manifest")
    found: dict[Path, str] = {}
    for spec in specs:
        if is_manifest(spec):
            found.update({path: written for written, path in read_paths(Path(spec)) if path not in found})
            continue
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
                found.update({p: printable(p) for p in walk_files(match) if is_image_candidate(p) and p not in found})
            elif match not in found:
                found[match] = printable(match)  # a name that is not UTF-8 is output with its bytes escaped
        if len(found) == before and not any(m.is_file() for m in matches):
            raise UserError(f"{spec}: no image files in it ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return found
