"""What is in a data folder, and what is wrong with it: `tlcli check` and training's data screening.

`check_dataset` lists a folder exactly as training does (`discover_splits`),
decodes every file with training's decoder (through the screening cache, so
files seen before are not decoded again) and reports counts, unreadable files,
duplicates and leakage, and the conversions training will apply.

`find_problems` is the same analysis on what training's own pass over the
files returned (`ScreenedSplit`s), so `tlcli train` reports the same problems
without a second pass.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from pydantic import ValidationError

from tlcli.config.schema import DataConfig
from tlcli.data.decoded import ScreenedSplit
from tlcli.data.groups import CrossingGroup, crossing_groups
from tlcli.data.images import ImageInfo, extension_matches
from tlcli.data.manifest import is_manifest
from tlcli.data.screening import screen_files
from tlcli.data.splits import SPLITS, DataSplits, Sample, discover_splits
from tlcli.errors import EXIT_OK, EXIT_PARTIAL, EXIT_USER_ERROR, UserError
from tlcli.progress import Reporter

SMALL_IMAGE_PX = 32  # keras.applications bases need at least this; smaller images are upscaled a lot
FEW_IMAGES = 10  # a class with fewer images (all splits) is near-empty

# Kinds of duplicate group; a group can be several at once (a leaked image with another label).
WITHIN_CLASS = "within_class"
CONFLICTING_LABELS = "conflicting_labels"
LEAKAGE = "leakage"
CROSSING_GROUPS = "crossing_groups"  # `data.group`'s groups with images in more than one split


@dataclass(frozen=True)
class FileRef:
    """One listed file: its path, split and class folder."""

    path: str
    split: str
    label: str


@dataclass(frozen=True)
class FileVerdict:
    """What one pass found for one listed file: its content hash, or why it is unreadable."""

    split: str
    sample: Sample
    content_hash: str = ""
    unreadable: str | None = None

    @classmethod
    def of(cls, split: str, sample: Sample, verdict: ImageInfo | str) -> FileVerdict:
        return (
            cls(split, sample, unreadable=verdict)
            if isinstance(verdict, str)
            else cls(split, sample, content_hash=verdict.content_hash)
        )


@dataclass(frozen=True)
class UnreadableFile:
    path: str
    split: str
    label: str
    reason: str
    row: int | None = None  # its manifest row, when the data is a manifest


@dataclass
class DuplicateGroup:
    """Files with identical content (sha256); `kinds` says why that matters."""

    content_hash: str
    files: list[FileRef]
    kinds: list[str]


MAX_LISTED = 1000  # entries of each kind written out: a count says the rest (a list of millions helps nobody)


@dataclass
class DataProblems:
    """What `tlcli check` exits 4 for, and `tlcli train --strict` refuses to train on."""

    unreadable: list[UnreadableFile] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    bad_rows: list = field(default_factory=list)  # a manifest's skipped rows (`tlcli.data.manifest.BadRow`)
    crossing_groups: list[CrossingGroup] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[DuplicateGroup]:
        return [group for group in self.duplicates if kind in group.kinds]

    @property
    def count(self) -> int:
        return len(self.unreadable) + len(self.duplicates) + len(self.bad_rows) + len(self.crossing_groups)

    def counts(self) -> dict[str, int]:
        return {
            "bad_rows": len(self.bad_rows),
            "unreadable": len(self.unreadable),
            WITHIN_CLASS: len(self.of_kind(WITHIN_CLASS)),
            CONFLICTING_LABELS: len(self.of_kind(CONFLICTING_LABELS)),
            LEAKAGE: len(self.of_kind(LEAKAGE)),
            CROSSING_GROUPS: len(self.crossing_groups),
        }

    def summary(self) -> str:
        """`3 unreadable files, 1 leaked duplicate` (empty when there is nothing)."""
        counts = self.counts()
        names = {
            "bad_rows": ("bad manifest row", "bad manifest rows"),
            "unreadable": ("unreadable file", "unreadable files"),
            WITHIN_CLASS: ("set of duplicates within a class", "sets of duplicates within a class"),
            CONFLICTING_LABELS: ("duplicate with conflicting labels", "duplicates with conflicting labels"),
            LEAKAGE: ("image shared between splits (leakage)", "images shared between splits (leakage)"),
            CROSSING_GROUPS: ("group in more than one split", "groups in more than one split"),
        }
        return ", ".join(f"{n} {names[k][n != 1]}" for k, n in counts.items() if n)

    def warnings(self) -> list[str]:
        """One line per kind of duplicate, with an example (training warns them at its start)."""
        headlines = {
            LEAKAGE: "leakage: {n} in more than one split, so validation metrics are optimistic",
            CONFLICTING_LABELS: "conflicting labels: {n} under more than one class",
            WITHIN_CLASS: "duplicates: {n} more than once in the same class",
        }
        lines = []
        for kind, headline in headlines.items():
            groups = self.of_kind(kind)
            if groups:
                n = f"{len(groups)} image{' is' if len(groups) == 1 else 's are'}"
                example = " = ".join(f"{f.split}/{f.label}/{Path(f.path).name}" for f in groups[0].files[:2])
                lines.append(f"{headline.format(n=n)}, e.g. {example} (listed in data_problems.json)")
        if self.crossing_groups:
            n = len(self.crossing_groups)
            lines.append(
                f"groups: {n} group{' has' if n == 1 else 's have'} images in more than one split, so validation "
                f"metrics are optimistic, e.g. {self.crossing_groups[0].describe()} (listed in data_problems.json)"
            )
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Every count, and the first `MAX_LISTED` entries of each list (`not_listed` says how many more there are)."""
        cut = {
            name: len(entries) - MAX_LISTED
            for name, entries in (
                ("bad_rows", self.bad_rows),
                ("unreadable", self.unreadable),
                ("duplicates", self.duplicates),
                (CROSSING_GROUPS, self.crossing_groups),
            )
            if len(entries) > MAX_LISTED
        }
        return {
            "counts": self.counts(),
            **({"not_listed": cut} if cut else {}),
            "bad_rows": [asdict(b) for b in self.bad_rows[:MAX_LISTED]],
            "unreadable": [asdict(f) for f in self.unreadable[:MAX_LISTED]],
            "duplicates": [
                {"content_hash": g.content_hash, "kinds": g.kinds, "files": [asdict(f) for f in g.files]}
                for g in self.duplicates[:MAX_LISTED]
            ],
            CROSSING_GROUPS: [g.to_dict() for g in self.crossing_groups[:MAX_LISTED]],
        }


@dataclass
class CheckReport:
    """Everything `tlcli check` reports; `to_dict` is its `--json` document."""

    data_dir: str
    classes: list[str]
    sources: dict[str, str]
    counts: dict[str, dict[str, int]]  # readable images per split and class
    listed: dict[str, int]  # image files listed per split (readable or not)
    problems: DataProblems
    imbalance_ratio: float | None = None
    small_classes: list[dict[str, Any]] = field(default_factory=list)
    extension_mismatches: list[dict[str, str]] = field(default_factory=list)
    conversions: list[dict[str, str]] = field(default_factory=list)
    exif_rotated: list[str] = field(default_factory=list)
    animated: list[dict[str, Any]] = field(default_factory=list)
    small_images: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unusable: str | None = None
    cache: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """2 when training cannot use the folder, 4 when there are problems, else 0."""
        if self.unusable:
            return EXIT_USER_ERROR
        return EXIT_PARTIAL if self.problems.count else EXIT_OK

    @property
    def status(self) -> str:
        return {EXIT_OK: "clean", EXIT_PARTIAL: "problems", EXIT_USER_ERROR: "unusable"}[self.exit_code]

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "status": self.status,
            "exit_code": self.exit_code,
            "unusable": self.unusable,
            "classes": self.classes,
            "sources": self.sources,
            "counts": self.counts,
            "listed": self.listed,
            "imbalance_ratio": self.imbalance_ratio,
            "small_classes": self.small_classes,
            "problems": self.problems.to_dict(),
            "extension_mismatches": self.extension_mismatches,
            "conversions": self.conversions,
            "exif_rotated": self.exif_rotated,
            "animated": self.animated,
            "small_images": self.small_images,
            "ignored": self.ignored,
            "warnings": self.warnings,
            "cache": self.cache,
        }


# ----------------------------------------------------------------------------- the analysis


def check_dataset(
    data_dir: str | Path,
    *,
    val_split: float = 0.2,
    use_cache: bool = True,
    workers: int | None = None,
    reporter=None,
    max_file_mb: float | None = None,
    columns: dict[str, str] | None = None,
    labels: dict | None = None,
    group: str | None = None,
) -> CheckReport:
    """Screen every file of a data folder (or manifest) and report what training would find.

    Args:
        data_dir: a folder of class folders, or a parent of `train/`, `val/`
            (and `test/`), detected as `data.dir` is in a config; or a CSV/TSV
            manifest of paths and labels (as `data.manifest`).
        val_split: the hold-out fraction when there is no validation folder.
        columns: a manifest's column names (`{"path": ..., "label": ..., "split": ...}`), as `data.columns`.
        use_cache: use the screening cache (files seen before, unchanged,
            are not decoded again).
        reporter: a `tlcli.progress.Reporter` for the decoding progress.
        max_file_mb: larger files are unreadable (as `data.max_file_mb`; default its default).
        labels: a multi-label manifest's `data` keys: `{"multi_label": True, "label_separator": ..., "label_columns":
        [...]}`.
        group: as `data.group`, a manifest column or a regular expression over the relative paths: groups with images
            in more than one split are problems (`DataProblems.crossing_groups`), and the hash split keeps them whole.

    Returns:
        A `CheckReport`; its `exit_code` is 0 (clean), 4 (problems) or 2
        (unusable: a class has no readable image).

    Raises:
        DataError: the folder is missing, has fewer than two classes, or a
            class folder has no image files at all.
    """
    reporter = reporter or Reporter()

    where = (
        {"manifest": Path(data_dir), "columns": columns or {}, **(labels or {})}
        if is_manifest(data_dir)
        else {"dir": Path(data_dir), **(labels or {})}
    )
    optional = {"max_file_mb": max_file_mb, "group": group}
    try:
        config = DataConfig(**where, val_split=val_split, **{k: v for k, v in optional.items() if v is not None})
    except ValidationError as exc:  # options that contradict each other (--multi-label on class folders)
        first = exc.errors()[0]
        named = "group: " if first["loc"] == ("group",) else ""  # the CLI prints it as its flag
        raise UserError(named + first["msg"].removeprefix("Value error, ")) from None
    splits = discover_splits(config)
    samples = [(split, sample) for split in SPLITS for sample in getattr(splits, split)]
    with reporter.task("checking images", len(samples)) as advance:
        screening = screen_files(
            [s.path for _, s in samples],
            use_cache=use_cache,
            workers=workers,
            progress=advance,
            max_bytes=config.max_bytes,
        )
    verdicts = [(split, sample, screening.verdicts[str(sample.path)]) for split, sample in samples]
    report = _report(splits, verdicts, str(Path(data_dir).absolute()))
    report.cache = {"cached": screening.cached, "decoded": screening.decoded}
    return report


def find_problems(splits: DataSplits, screened: dict[str, ScreenedSplit]) -> DataProblems:
    """The problems `tlcli check` would report, from training's pass over the files (no decoding).

    Args:
        splits: the listed files (for the class of each skipped file).
        screened: `{split: ScreenedSplit}` as training's pass left them.
    """
    return _problems(splits, _entries_from_pass(splits, screened))


def _entries_from_pass(splits: DataSplits, screened: dict[str, ScreenedSplit]) -> list[FileVerdict]:
    entries: list[FileVerdict] = []
    for split, kept in screened.items():
        by_path = {str(sample.path): sample for sample in getattr(splits, split)}
        entries.extend(
            FileVerdict(split, sample, content_hash=h) for sample, h in zip(kept.samples, kept.content_hashes)
        )
        entries.extend(
            FileVerdict(split, by_path[s.path], unreadable=s.reason) for s in kept.skipped if s.path in by_path
        )
    return entries


def _problems(splits: DataSplits, entries: Iterable[FileVerdict]) -> DataProblems:
    problems = DataProblems(bad_rows=list(splits.bad_rows), crossing_groups=crossing_groups(dict(splits.listed())))
    by_hash: dict[str, list[FileRef]] = defaultdict(list)
    for entry in entries:
        label = splits.label_name(entry.sample.label)
        if entry.unreadable is not None:
            problems.unreadable.append(
                UnreadableFile(str(entry.sample.path), entry.split, label, entry.unreadable, entry.sample.row)
            )
        else:
            by_hash[entry.content_hash].append(FileRef(str(entry.sample.path), entry.split, label))
    for content_hash, files in by_hash.items():
        if len(files) < 2:
            continue
        kinds = []
        if len({f.split for f in files}) > 1:
            kinds.append(LEAKAGE)
        if len({f.label for f in files}) > 1:
            kinds.append(CONFLICTING_LABELS)
        if not kinds or any(
            a.split == b.split and a.label == b.label for i, a in enumerate(files) for b in files[i + 1 :]
        ):
            kinds.append(WITHIN_CLASS)
        problems.duplicates.append(
            DuplicateGroup(content_hash, sorted(files, key=lambda f: (SPLITS.index(f.split), f.path)), kinds)
        )
    problems.unreadable.sort(key=lambda f: (SPLITS.index(f.split), f.path))
    problems.duplicates.sort(key=lambda g: g.files[0].path)
    return problems


def _report(splits: DataSplits, entries: Sequence[tuple[str, Sample, ImageInfo | str]], data_dir: str) -> CheckReport:
    present = [split for split in SPLITS if getattr(splits, split) or split != "test"]
    counts = {split: {name: 0 for name in splits.class_names} for split in present}
    report = CheckReport(
        data_dir=data_dir,
        classes=list(splits.class_names),
        sources=dict(splits.sources),
        counts=counts,
        listed={split: len(getattr(splits, split)) for split in present},
        problems=_problems(splits, [FileVerdict.of(split, sample, verdict) for split, sample, verdict in entries]),
        ignored=[{"path": path, "reason": reason} for path, reason in splits.ignored],
        warnings=list(splits.warnings),
    )
    for split, sample, info in entries:
        if isinstance(info, str):
            continue
        for index in sample.label if isinstance(sample.label, tuple) else (sample.label,):
            counts[split][splits.class_names[index]] += 1
        path = str(sample.path)
        if not extension_matches(path, info.format):
            report.extension_mismatches.append({"path": path, "format": info.format, "extension": Path(path).suffix})
        if info.conversion:
            report.conversions.append({"path": path, "mode": info.mode, "conversion": info.conversion})
        if info.exif_rotated:
            report.exif_rotated.append(path)
        if info.frames > 1:
            report.animated.append({"path": path, "frames": info.frames, "conversion": "first frame used"})
        if min(info.width, info.height) < SMALL_IMAGE_PX:
            report.small_images.append({"path": path, "width": info.width, "height": info.height})

    train = counts["train"]
    if min(train.values()) > 0:
        report.imbalance_ratio = round(max(train.values()) / min(train.values()), 2)
    for name in splits.class_names:
        total = sum(counts[split][name] for split in present)
        if total < FEW_IMAGES:
            report.small_classes.append(
                {"class": name, "images": total, "by_split": {split: counts[split][name] for split in present}}
            )
    report.unusable = unusable_reason(train, sum(counts["val"].values()))
    return report


def unusable_reason(train_counts: dict[str, int], val_images: int) -> str | None:
    """Why training cannot use the readable images (a class without one, or no validation image), else None.

    `tlcli check` (exit 2) and training's own pass (exit 2, no run folder left) give the same verdict.
    """
    no_train = [name for name, n in train_counts.items() if n == 0]
    if no_train:
        return f"class '{no_train[0]}' has no readable training image; training needs at least one per class"
    if val_images == 0:
        return "no readable validation image; training needs at least one"
    return None
