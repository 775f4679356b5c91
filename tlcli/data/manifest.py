"""CSV manifests: labels, splits and paths from a spreadsheet instead of class folders.

A manifest has a path column (relative to the manifest's folder, or
absolute) and a label column; an optional split column (`train`, `val`,
`test`) overrides the hash split, which otherwise applies to the path as
written (so adding rows never moves existing ones). Column names are
configurable (`data.columns`); the delimiter (comma, tab, semicolon, pipe)
and quoting are the `csv` module's.

Bad rows (no path, no label, a file that is not there, a path listed again,
with another label or the same) are skipped and listed by row number, as
unreadable images are: row 1 is the header, as a spreadsheet numbers them.
A header without the path or label column, or a split the schema does not
know, is a `DataError` naming the column or the value.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tlcli.config.data_schema import is_column_name
from tlcli.config.schema import DataConfig
from tlcli.data.groups import match_group, ungrouped_warning
from tlcli.data.names import check_class_name
from tlcli.errors import DataError

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
MANIFEST_SUFFIXES = (".csv", ".tsv")
MAX_MANIFEST_BYTES = 512 * 1024**2  # a manifest of millions of rows is a few hundred MB at most
SNIFF_CHARS = 64 * 1024  # the delimiter is told from the header line, cut here


@dataclass(frozen=True)
class ManifestRow:
    """One usable row: where the file is, its path as written (the hash split's key), its labels and split ("" = hash
    split).

    A single-label manifest gives each row one label; a multi-label one any number, none included.
    """

    row: int
    path: Path
    written: str
    labels: tuple[str, ...]
    split: str
    group: str | None = None  # what `data.group` names for the row (None: unset, or none)

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def split_key(self) -> str:
        """What the hash split hashes: the group's name, else the path as written."""
        return self.written if self.group is None else self.group


@dataclass(frozen=True)
class BadRow:
    """A row that was skipped, and why."""

    row: int
    path: str
    problem: str


@dataclass
class Manifest:
    source: Path
    rows: list[ManifestRow]
    bad: list[BadRow]
    ungrouped: str | None = None  # the warning for rows `data.group` names no group for


def is_manifest(path: str | Path) -> bool:
    """Something named like a manifest that exists and is not a folder (a FIFO or a device is then refused as not a
    regular file, not mistaken for a folder)."""
    path = Path(path)
    return path.suffix.lower() in MANIFEST_SUFFIXES and path.exists() and not path.is_dir()


def check_regular(source: Path, key: str) -> None:
    """Raise a `DataError` unless `source` is a regular file (a FIFO would block the read; /dev/zero never ends)."""
    try:
        mode = source.stat().st_mode
    except OSError:
        raise DataError(f"{key}: manifest not found: {source}") from None
    if not stat.S_ISREG(mode):
        what = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise DataError(f"{key}: {source} is {what}, not a regular file; a manifest is a CSV or TSV file")


def read_manifest(config: DataConfig, key: str = "data.manifest") -> Manifest:
    """The usable rows and the bad ones of `config.manifest`.

    Raises:
        DataError: the manifest is missing, unreadable, too large, or its header lacks a
            configured column; a row names a split other than train, val or test.
    """
    source = Path(config.manifest)  # type: ignore[arg-type]
    reader, columns, text = _open(source, config, key)
    rows: list[ManifestRow] = []
    bad: list[BadRow] = []
    seen: dict[str, ManifestRow] = {}
    group_of = _grouping(config)
    for number, record in list(_records(reader, text)):  # all read first: an open quote is named first
        written = (record.get(columns["path"]) or "").strip()
        split = _split_of(record.get(columns["split"]) if columns["split"] else "", number, source, columns["split"])
        if not written:
            bad.append(BadRow(number, "", "no path"))
            continue
        labels = _labels_of(record, columns["label"], config)
        if isinstance(labels, str):
            bad.append(BadRow(number, written, labels))
            continue
        for label in labels:  # a class name with a line break would break every file written later
            check_class_name(label, f"data.manifest: row {number} of {source}")
        path = Path(written) if Path(written).is_absolute() else source.parent / written
        as_written = Path(written).as_posix()
        row = ManifestRow(number, path.absolute(), as_written, labels, split, group_of(record, as_written))
        if (earlier := seen.get(row.written)) is not None:
            bad.append(_listed_again(row, earlier))
            continue
        seen[row.written] = row
        rows.append(row)
    conflicts = {b.path for b in bad if "another label" in b.problem}
    kept = []
    for row in rows:
        if row.written in conflicts:  # which label is right cannot be told: neither row is used
            bad.append(BadRow(row.row, row.written, "listed again with another label; neither row is used"))
        elif not row.path.exists():
            bad.append(BadRow(row.row, row.written, f"file not found: {row.path}"))
        else:
            kept.append(row)
    what = f"column '{config.group}'" if config.group and is_column_name(config.group) else f"pattern '{config.group}'"
    ungrouped = [row.written for row in kept if row.group is None] if config.group is not None else []
    return Manifest(source, kept, sorted(bad, key=lambda b: b.row), ungrouped_warning(ungrouped, len(kept), what))


def _grouping(config: DataConfig) -> Callable[[dict, str], str | None]:
    """How a row's group is read: `data.group`'s column (an empty cell: none), or its pattern over the path."""
    column = config.group
    if column is None:
        return lambda record, written: None
    if is_column_name(column):
        return lambda record, written: (record.get(column) or "").strip() or None
    pattern = re.compile(column)
    return lambda record, written: match_group(pattern, written)


def _open(source: Path, config: DataConfig, key: str) -> tuple[csv.DictReader, dict[str, str], str]:
    """The reader (past the header), the configured columns that are present, and the text."""
    check_regular(source, key)
    if source.stat().st_size > MAX_MANIFEST_BYTES:
        raise DataError(f"{key}: {source} is larger than {MAX_MANIFEST_BYTES // 1024**2} MB; split it")
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{key}: {source} is not a readable UTF-8 text file ({type(exc).__name__})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=_dialect(text, source, config.delimiter))
    header = [name.strip() for name in (reader.fieldnames or [])]
    reader.fieldnames = header
    columns = {"path": config.columns.path, "label": config.columns.label, "split": config.columns.split}
    for role in ("path",) if config.label_columns else ("path", "label"):
        if columns[role] not in header:
            raise DataError(
                f"data.columns.{role}: the manifest {source} has no column {columns[role]!r} (its columns: "
                f"{_shown_columns(header)}); set data.columns.{role}"
            )
    for name in config.label_columns or []:
        check_class_name(name, "data.label_columns")
    missing = [name for name in config.label_columns or [] if name not in header]
    if missing:
        raise DataError(
            f"data.label_columns: the manifest {source} has no column {missing[0]!r} (its columns: "
            f"{_shown_columns(header)})"
        )
    if config.group is not None and is_column_name(config.group) and config.group not in header:
        raise DataError(
            f"data.group: the manifest {source} has no column {config.group!r} (its columns: "
            f"{_shown_columns(header)}); name one, or give a regular expression over the paths"
        )
    if columns["split"] not in header:
        columns["split"] = ""  # optional: the hash split applies
    return reader, columns, text


def _shown_columns(header: list[str]) -> str:
    """The header for an error line: at most 20 names of at most 40 characters (a header may be megabytes long)."""
    names = [name[:40] + ("..." if len(name) > 40 else "") for name in header[:20]]
    names = [name if name.isprintable() else repr(name) for name in names]
    more = f", ... ({len(header)} columns)" if len(header) > 20 else ""
    return ", ".join(names) + more if names else "none"


def _dialect(text: str, source: Path, delimiter: str):
    if delimiter != "auto":
        return type("Given", (csv.excel,), {"delimiter": delimiter})
    if source.suffix.lower() == ".tsv":
        return csv.excel_tab
    try:
        # the header line, within a bounded prefix: the sniffer's time grows with its input (minutes for 500 MB)
        return csv.Sniffer().sniff(text[:SNIFF_CHARS].split("\n", 1)[0], delimiters=",\t;|")
    except csv.Error:
        return csv.excel


def _records(reader: csv.DictReader, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(spreadsheet row number, record): the header is row 1.

    Raises:
        DataError: a csv error; a quote opened in a row and never closed (it swallows every later row into one cell).
    """
    number, start, end = 1, reader.line_num, reader.line_num  # the last record: physical lines start+1 to end
    try:
        for number, record in enumerate(reader, start=2):
            start, end = end, reader.line_num
            if any((value or "").strip() for value in record.values() if isinstance(value, str)):
                yield number, record
    except csv.Error as exc:
        raise DataError(f"data.manifest: {exc} (row {reader.line_num})") from None
    if end - start > 1 and _open_quote(text, start, reader.dialect):
        raise DataError(
            f"data.manifest: the quote opened in row {number} is never closed, so every later line was read into "
            'one cell; close it (a quote inside a quoted cell is written "")'
        )


def _open_quote(text: str, skip: int, dialect) -> bool:
    """Whether the text after its first `skip` physical lines ends inside a quoted cell (the one case the csv module
    does not report unless strict)."""
    try:
        for _ in csv.reader(itertools.islice(io.StringIO(text, newline=""), skip, None), dialect, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _split_of(value: str | None, number: int, source: Path, column: str) -> str:
    value = (value or "").strip()
    if not value:
        return ""
    split = SPLIT_NAMES.get(value.lower())
    if split is None:
        raise DataError(
            f"data.columns.split: row {number} of {source} names split {value!r}; use train, val or test (or "
            "leave it empty for the hash split)"
        )
    return split


def read_paths(source: Path, column: str = "path", delimiter: str = "auto") -> list[tuple[str, Path]]:
    """(path as written, where the file is) of every row of a manifest that names a path: what `tlcli predict
    labels.csv` predicts.

    Labels and splits, when present, are not needed; a file that is not there becomes the prediction's error entry.
    """
    config = DataConfig(manifest=source, columns={"path": column, "label": column}, delimiter=delimiter)
    reader, columns, text = _open(source, config, "IMAGES")
    found = []
    for _, record in _records(reader, text):
        written = (record.get(columns["path"]) or "").strip()
        if written:
            found.append(
                (Path(written).as_posix(), Path(written) if Path(written).is_absolute() else source.parent / written)
            )
    return found


TRUE, FALSE = ("1", "true", "yes", "y"), ("0", "false", "no", "n")


def _labels_of(record: dict, column: str, config: DataConfig) -> tuple[str, ...] | str:
    """The row's labels, or the problem that makes it a bad row.

    A multi-label cell is split by `label_separator`; an empty cell is an image
    with no label (valid), a missing one (the row shorter than the header) is not.
    """
    if config.label_columns:
        values = {name: (record.get(name) or "").strip().lower() for name in config.label_columns}
        wrong = next((name for name, value in values.items() if value not in TRUE + FALSE), None)
        if wrong is not None:
            return f"column {wrong!r} is {record.get(wrong)!r}, not 0 or 1"
        return tuple(name for name, value in values.items() if value in TRUE)
    cell = record.get(column)
    if not config.multi_label:
        return (cell.strip(),) if cell and cell.strip() else "no label"
    if cell is None:
        return "no label cell (the row is shorter than the header; an empty cell means no label)"
    return tuple(sorted({label.strip() for label in cell.split(config.label_separator) if label.strip()}))


def _listed_again(row: ManifestRow, earlier: ManifestRow) -> BadRow:
    if row.labels != earlier.labels:
        shown = "|".join(row.labels) if len(row.labels) != 1 else row.label
        before = "|".join(earlier.labels) if len(earlier.labels) != 1 else earlier.label
        return BadRow(
            row.row, row.written, f"listed again with another label ({shown!r}; row {earlier.row} says {before!r})"
        )
    return BadRow(row.row, row.written, f"listed again (row {earlier.row}); the first row is used")
