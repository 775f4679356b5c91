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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tlcli.config.schema import DataConfig
from tlcli.data.names import check_class_name
from tlcli.errors import DataError

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
MANIFEST_SUFFIXES = (".csv", ".tsv")
MAX_MANIFEST_BYTES = 512 * 1024**2  # a manifest of millions of rows is a few hundred MB at most


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

    @property
    def label(self) -> str:
        return self.labels[0]


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


def is_manifest(path: str | Path) -> bool:
    """A file named like a manifest (a folder never is)."""
    path = Path(path)
    return path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file()


def read_manifest(config: DataConfig, key: str = "data.manifest") -> Manifest:
    """The usable rows and the bad ones of `config.manifest`.

    Raises:
        DataError: the manifest is missing, unreadable, too large, or its header lacks a
            configured column; a row names a split other than train, val or test.
    """
    source = Path(config.manifest)  # type: ignore[arg-type]
    reader, columns = _open(source, config, key)
    rows: list[ManifestRow] = []
    bad: list[BadRow] = []
    seen: dict[str, ManifestRow] = {}
    for number, record in _records(reader):
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
        row = ManifestRow(number, path.absolute(), Path(written).as_posix(), labels, split)
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
    return Manifest(source, kept, sorted(bad, key=lambda b: b.row))


def _open(source: Path, config: DataConfig, key: str) -> tuple[csv.DictReader, dict[str, str]]:
    if not source.is_file():
        raise DataError(f"{key}: manifest not found: {source}")
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
                f"{', '.join(header) or 'none'}); set data.columns.{role}"
            )
    for name in config.label_columns or []:
        check_class_name(name, "data.label_columns")
    missing = [name for name in config.label_columns or [] if name not in header]
    if missing:
        raise DataError(
            f"data.label_columns: the manifest {source} has no column {missing[0]!r} (its columns: {', '.join(header)})"
        )
    if columns["split"] not in header:
        columns["split"] = ""  # optional: the hash split applies
    return reader, columns


def _dialect(text: str, source: Path, delimiter: str):
    if delimiter != "auto":
        return type("Given", (csv.excel,), {"delimiter": delimiter})
    if source.suffix.lower() == ".tsv":
        return csv.excel_tab
    try:
        return csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",\t;|")
    except csv.Error:
        return csv.excel


def _records(reader: csv.DictReader) -> Iterator[tuple[int, dict[str, str]]]:
    """(spreadsheet row number, record): the header is row 1."""
    try:
        for number, record in enumerate(reader, start=2):
            if any((value or "").strip() for value in record.values() if isinstance(value, str)):
                yield number, record
    except csv.Error as exc:
        raise DataError(f"data.manifest: {exc} (row {reader.line_num})") from None


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
    reader, columns = _open(source, config, "IMAGES")
    found = []
    for _, record in _records(reader):
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
