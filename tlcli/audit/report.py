"""What `check --deep` found (`AuditReport`, its `--json` document) and the check folder it writes.

The check folder: near_duplicates.csv, label_suspects.csv, learning_curve.csv, report.json, and pictures of the
most similar pairs, the top label suspects and the learning curve. It is written beside, then renamed into place
(complete or absent), and an existing folder is never overwritten.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tlcli.audit.curve import LearningCurve, plot_learning_curve
from tlcli.audit.neighbours import NearDuplicates
from tlcli.errors import EXIT_OK, EXIT_PARTIAL, RunError, UserError
from tlcli.runs.atomic import atomic_folder, read_json, write_csv_atomic, write_json_atomic

PICTURED = 12  # pairs and suspects drawn in the pictures
THUMB_PX = 160


@dataclass(frozen=True)
class SuspectRow:
    """One likely label error, as people read it: the image, its split, the label it has and the one the data
    suggests, with the out-of-fold probabilities."""

    path: str
    split: str
    given: str
    suggested: str
    confidence: float  # out-of-fold probability of `suggested`
    given_probability: float  # out-of-fold probability of `given`

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuspectRow:
        return cls(
            str(data["path"]),
            str(data["split"]),
            str(data["given"]),
            str(data["suggested"]),
            float(data["confidence"]),
            float(data["given_probability"]),
        )


@dataclass(frozen=True)
class SuspectFindings:
    """Likely label errors over the training and validation images, most suspect first."""

    suspects: tuple[SuspectRow, ...]
    method: str
    folds: int
    images: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "folds": self.folds,
            "images": self.images,
            "note": self.note,
            "count": len(self.suspects),
            "suspects": [{"rank": rank, **asdict(s)} for rank, s in enumerate(self.suspects, start=1)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuspectFindings:
        """What `to_dict` wrote (`count` and the ranks are derived, not read)."""
        return cls(
            tuple(SuspectRow.from_dict(s) for s in data["suspects"]),
            str(data["method"]),
            int(data["folds"]),
            int(data["images"]),
            str(data.get("note", "")),
        )


@dataclass(frozen=True)
class AuditReport:
    """Everything `check --deep` reports; `to_dict` is the `deep` part of its `--json` document."""

    data_dir: str
    base: str
    image_size: tuple[int, int]
    images: dict[str, int]  # embedded images per split
    from_cache: int  # of them, features read from the cache
    seconds: float  # the whole audit, embedding included
    near_duplicates: NearDuplicates | None  # None: not searched (`tlcli train` with data.leakage: off)
    label_suspects: SuspectFindings | None
    learning_curve: LearningCurve | None
    notes: tuple[str, ...] = ()  # what was not examined, and why
    skipped: tuple[str, ...] = ()  # files that could not be decoded
    cache_key: str | None = None
    folder: str | None = None  # the check folder, once written
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def embedded(self) -> int:
        return sum(self.images.values())

    @property
    def advice(self) -> bool:
        """Something to act on that is not a problem: label suspects, or classes still climbing."""
        suspects = self.label_suspects is not None and bool(self.label_suspects.suspects)
        climbing = self.learning_curve is not None and bool(self.learning_curve.climbing)
        return suspects or climbing

    def exit_code(self, strict: bool = False) -> int:
        """4 on near-duplicate leakage (and with `strict`, on label suspects or classes still climbing), else 0."""
        leakage = self.near_duplicates is not None and self.near_duplicates.leakage
        if leakage or (strict and self.advice):
            return EXIT_PARTIAL
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "base": self.base,
            "image_size": list(self.image_size),
            "images": self.images,
            "embedded": self.embedded,
            "from_cache": self.from_cache,
            "seconds": self.seconds,
            "timings": self.timings,
            "cache_key": self.cache_key,
            "folder": self.folder,
            "notes": list(self.notes),
            "skipped": list(self.skipped),
            "near_duplicates": self.near_duplicates.to_dict() if self.near_duplicates is not None else None,
            "label_suspects": self.label_suspects.to_dict() if self.label_suspects is not None else None,
            "learning_curve": self.learning_curve.to_dict() if self.learning_curve is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Any) -> AuditReport:
        """The report `to_dict` wrote (data_trust.json, a check folder's report.json).

        Raises:
            ValueError: `data` is not such a report (a key missing, or a value of another type).
        """
        try:
            return cls(
                data_dir=str(data["data_dir"]),
                base=str(data["base"]),
                image_size=(int(data["image_size"][0]), int(data["image_size"][1])),
                images={str(k): int(v) for k, v in data["images"].items()},
                from_cache=int(data["from_cache"]),
                seconds=float(data["seconds"]),
                near_duplicates=_part(NearDuplicates, data["near_duplicates"]),
                label_suspects=_part(SuspectFindings, data["label_suspects"]),
                learning_curve=_part(LearningCurve, data["learning_curve"]),
                notes=tuple(str(n) for n in data.get("notes") or ()),
                skipped=tuple(str(p) for p in data.get("skipped") or ()),
                cache_key=data.get("cache_key"),
                folder=data.get("folder"),
                timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
            )
        except KeyError as exc:
            raise ValueError(f"no {exc} key") from None
        except (TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ValueError(str(exc) or type(exc).__name__) from None


def _part(kind, data: Any):
    return None if data is None else kind.from_dict(data)


def read_audit_report(path: str | Path) -> AuditReport:
    """A data_trust.json (or a check folder's report.json) as an `AuditReport`.

    Raises:
        RunError: the file is missing, not JSON, or not a report this tlcli writes (damaged, or of another format).
    """
    path = Path(path)
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: missing or unreadable ({type(exc).__name__})") from None
    try:
        return AuditReport.from_dict(data)
    except ValueError as exc:
        raise RunError(f"{path}: damaged or of another format ({exc})") from None


def write_check_folder(report: AuditReport, folder: str | Path) -> Path:
    """Write the check folder (see the module docstring) at `folder`, which must not exist yet.

    Raises:
        UserError: `folder` exists.
    """
    folder = Path(folder)
    if folder.exists():
        raise UserError(f"folder: {folder} already exists; a check folder is never overwritten, choose another")
    with atomic_folder(folder) as partial:
        _write_tables(report, partial)
        write_json_atomic(partial / "report.json", report.to_dict() | {"folder": str(folder.absolute())})
        _draw_pairs(report.near_duplicates, partial / "near_duplicates.png")
        if report.label_suspects is not None:
            _draw_suspects(report.label_suspects.suspects, partial / "label_suspects.png")
        if report.learning_curve is not None:
            plot_learning_curve(report.learning_curve, partial / "learning_curve.png")
    return folder


def _write_tables(report: AuditReport, folder: Path) -> None:
    write_csv_atomic(
        folder / "near_duplicates.csv",
        ["a", "b", "split_a", "split_b", "similarity", "thumbnail", "confirmed", "cross_split"],
        [
            [p.a, p.b, p.split_a, p.split_b, p.similarity, p.thumbnail, p.confirmed, p.cross_split]
            for p in report.near_duplicates.pairs
        ],
    )
    suspects = report.label_suspects.suspects if report.label_suspects is not None else ()
    write_csv_atomic(
        folder / "label_suspects.csv",
        ["rank", "path", "split", "given", "suggested", "confidence", "given_probability"],
        [
            [rank, s.path, s.split, s.given, s.suggested, s.confidence, s.given_probability]
            for rank, s in enumerate(suspects, start=1)
        ],
    )
    curve = report.learning_curve
    write_csv_atomic(
        folder / "learning_curve.csv",
        ["class", "fraction", "images", "accuracy", "gain", "standard_error", "climbing", "advice"],
        [
            [c.name, fraction, images, accuracy, c.gain, c.standard_error, c.climbing, c.advice]
            for c in (curve.classes if curve is not None else ())
            for fraction, images, accuracy in zip(curve.fractions, c.images, c.accuracy)
        ],
    )


def _thumbnail(path: str):
    """The image as an RGB thumbnail (grey when it cannot be decoded)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))
            picture = ImageOps.exif_transpose(image).convert("RGB")
            picture.thumbnail((THUMB_PX, THUMB_PX))
            return picture
    except Exception:  # noqa: BLE001 - a picture of an unreadable file is a grey square, not a failure
        return Image.new("RGB", (THUMB_PX, THUMB_PX), (128, 128, 128))


def _figure(rows: int, columns: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2.4 * columns, 2.6 * rows), dpi=80)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    return figure, axes


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path)


def _draw_pairs(found: NearDuplicates, path: Path) -> None:
    """The most similar confirmed pairs (across splits first), each pair side by side."""
    pairs = sorted(found.confirmed, key=lambda p: (not p.cross_split, -p.similarity))[:PICTURED]
    if not pairs:
        return
    columns = 2 if len(pairs) == 1 else 4  # two pairs a row
    figure, axes = _figure((len(pairs) + 1) // 2 if columns == 4 else 1, columns)
    for k, pair in enumerate(pairs):
        row, column = divmod(2 * k, columns)
        for offset, (image, split) in enumerate(((pair.a, pair.split_a), (pair.b, pair.split_b))):
            axis = axes[row][column + offset]
            axis.imshow(_thumbnail(image))
            axis.set_title(f"{split}: {_short(image)}", fontsize=7)
        axes[row][column].text(
            0, -0.16, f"cosine {pair.similarity:.3f}, thumbnails {pair.thumbnail:.3f}"
            + (" LEAKAGE" if pair.cross_split else ""),
            transform=axes[row][column].transAxes, fontsize=7, color="red" if pair.cross_split else "black",
        )  # fmt: skip
    _save(figure, path)


def _draw_suspects(suspects: Sequence[SuspectRow], path: Path) -> None:
    """The top suspects: each image with the label it has, the one suggested, and the confidence."""
    shown = list(suspects[:PICTURED])
    if not shown:
        return
    columns = min(4, len(shown))
    figure, axes = _figure((len(shown) + columns - 1) // columns, columns)
    for k, suspect in enumerate(shown):
        axis = axes[k // columns][k % columns]
        axis.imshow(_thumbnail(suspect.path))
        axis.set_title(
            f"#{k + 1} {_short(suspect.path)}\n{suspect.given} -> {suspect.suggested} ({suspect.confidence:.0%})",
            fontsize=7,
        )
    _save(figure, path)


def _short(path: str, width: int = 28) -> str:
    name = Path(path).name
    return name if len(name) <= width else "..." + name[-(width - 3) :]
