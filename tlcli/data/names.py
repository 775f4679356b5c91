"""What a class name and a file name may be.

A class name becomes a line of `labels.txt`, a key of every report and a cell of every CSV, so it may hold any
printable text but no control character (a tab, a line break, NUL, U+0085) and no Unicode line or paragraph
separator (U+2028, U+2029): any of those would split or corrupt the files written later. It is checked once, where
classes are formed (class folders, manifest labels and label columns). A file name that is not valid UTF-8 cannot be
written into the run's UTF-8 records; such a file is skipped and listed, shown with its bytes escaped.
"""

from __future__ import annotations

import os
import unicodedata

from tlcli.errors import DataError

FORBIDDEN_CATEGORIES = {"Cc": "a control character", "Zl": "a line separator", "Zp": "a paragraph separator"}
FORBIDDEN_CATEGORIES["Cs"] = "bytes that are not valid UTF-8"


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a class name, or None."""
    for char in name:
        what = FORBIDDEN_CATEGORIES.get(unicodedata.category(char))
        if what is not None:
            return f"holds {what} (U+{ord(char):04X})" if unicodedata.category(char) != "Cs" else f"holds {what}"
    return None


def check_class_name(name: str, where: str) -> None:
    """Raise a `DataError` naming `where` (a folder, a manifest row) when `name` cannot be a class name."""
    problem = class_name_problem(name)
    if problem is not None:
        raise DataError(
            f"{where}: class name {shown(name)} {problem}; class names may not contain control characters, line "
            "breaks or line/paragraph separators (rename it)"
        )


def is_valid_utf8(name: str) -> bool:
    """False for a file name decoded by the filesystem encoding with escaped bytes (not valid UTF-8)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str | os.PathLike) -> str:
    """`path` as text that can be written anywhere: bytes that are not valid UTF-8 escaped as \\xNN."""
    text = os.fspath(path)
    return text if is_valid_utf8(text) else os.fsencode(text).decode("utf-8", "backslashreplace")


def shown(text: str | os.PathLike) -> str:
    """A one-line repr of a name or path, whatever it holds (line breaks and undecodable bytes escaped)."""
    return repr(printable(text))
