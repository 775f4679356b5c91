"""Build a realistically messy image folder, for tests and for trying tlcli by hand.

    from messy import make_messy_folder          # in tests (tests/ is on sys.path)
    messy = make_messy_folder(tmp_path / "data", source=HYMENOPTERA)

    python tests/messy.py OUT_DIR [--source /work/shared/datasets/hymenoptera]

The folder has `train/` and `val/`, two classes, ordinary JPEGs (copied from
`source`, or generated when it is None) plus one of each awkward file a real
folder holds. `MessyFolder` says which file is which and what `tlcli check`
and training must conclude about it.
"""

from __future__ import annotations

import argparse
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("ants", "bees")


@dataclass
class MessyFolder:
    """What `make_messy_folder` built; paths are relative to `root`, with `/`."""

    root: Path
    classes: tuple[str, ...]
    readable: dict[str, str] = field(default_factory=dict)  # role -> relpath of a readable special file
    unreadable: dict[str, str] = field(default_factory=dict)  # relpath -> expected words in the reason
    leak: tuple[str, str] = ("", "")  # (train original, its byte-identical copy in val)
    ignored: dict[str, str] = field(default_factory=dict)  # relpath -> expected reason

    def path(self, relpath: str) -> Path:
        return self.root / relpath

    @property
    def unreadable_paths(self) -> set[str]:
        return {str(self.path(rel)) for rel in self.unreadable}


def _pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    image = rng.integers(0, 70, size=(size, size, 3), dtype=np.uint8)
    band = slice(size // 3, 2 * size // 3)
    if label == 0:
        image[band, :, 0] = 220
    else:
        image[:, band, 2] = 220
    return image


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def _save(path: Path, image: Image.Image, fmt: str, **options) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **options)
    return path.as_posix()


def make_messy_folder(
    root: str | Path,
    source: str | Path | None = None,
    *,
    per_class: int = 20,
    val_per_class: int = 8,
    size: int = 64,
    seed: int = 0,
) -> MessyFolder:
    """Write the messy folder under `root` (created) and describe it.

    Args:
        source: a dataset with `train/` and `val/` class folders `ants` and
            `bees` (hymenoptera) whose first files are copied as the ordinary
            images; None generates `size`-pixel JPEGs instead.
        per_class, val_per_class: ordinary images per class in train / val.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    messy = MessyFolder(root, CLASSES)
    for split, count in (("train", per_class), ("val", val_per_class)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            if source is not None:
                files = sorted(
                    p for p in (Path(source) / split / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg")
                )[:count]
                for file in files:
                    shutil.copyfile(file, folder / file.name)
            else:
                for i in range(count):
                    (folder / f"{name}_{i:03d}.jpg").write_bytes(_jpeg(_pattern(label, size, rng)))

    def base(label: int) -> np.ndarray:
        return _pattern(label, size, rng)

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    train_ants, train_bees, val_ants, val_bees = (
        root / "train" / "ants",
        root / "train" / "bees",
        root / "val" / "ants",
        root / "val" / "bees",
    )

    # Unreadable: training skips them, check lists them with a reason.
    (train_ants / "empty.jpg").write_bytes(b"")
    messy.unreadable[rel(train_ants / "empty.jpg")] = "empty file"
    whole = _jpeg(base(1))
    (train_bees / "truncated.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    messy.unreadable[rel(train_bees / "truncated.jpg")] = "truncated"
    (val_ants / "readme.jpg").write_text("This is not a photo, just text saved as .jpg\n")
    messy.unreadable[rel(val_ants / "readme.jpg")] = "not an image"

    # Readable but unusual: each is converted the documented way.
    _save(train_ants / "really_a_png.jpg", Image.fromarray(base(0)), "PNG")
    messy.readable["png_named_jpg"] = rel(train_ants / "really_a_png.jpg")
    _save(train_bees / "cmyk.jpg", Image.fromarray(base(1)).convert("CMYK"), "JPEG", quality=90)
    messy.readable["cmyk"] = rel(train_bees / "cmyk.jpg")
    rgba = np.dstack([base(0), np.full((size, size), 255, np.uint8)])
    rgba[: size // 4, :, 3] = 0  # a transparent top strip, composited on white
    _save(train_ants / "transparent.png", Image.fromarray(rgba, "RGBA"), "PNG")
    messy.readable["rgba"] = rel(train_ants / "transparent.png")
    deep = (np.asarray(Image.fromarray(base(1)).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    _save(train_bees / "sixteen_bit.png", Image.fromarray(deep), "PNG")  # mode I;16
    messy.readable["png16"] = rel(train_bees / "sixteen_bit.png")
    _save(train_ants / "gray.jpg", Image.fromarray(base(0)).convert("L"), "JPEG", quality=90)
    messy.readable["grayscale"] = rel(train_ants / "gray.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    _save(
        train_bees / "rotated.jpg",
        Image.fromarray(base(1)[:, : size * 3 // 4]),
        "JPEG",
        quality=90,
        exif=exif.tobytes(),
    )
    messy.readable["exif_rotated"] = rel(train_bees / "rotated.jpg")
    frames = [Image.fromarray(base(0)) for _ in range(3)]
    _save(train_ants / "animated.gif", frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    messy.readable["animated_gif"] = rel(train_ants / "animated.gif")
    unicode_dir = train_bees / "sous dossier é"  # a nested folder with a space and an accent
    _save(unicode_dir / "abeille été 蜂.jpg", Image.fromarray(base(1)), "JPEG", quality=90)
    messy.readable["unicode_nested"] = rel(unicode_dir / "abeille été 蜂.jpg")
    _save(val_bees / "tiny.png", Image.fromarray(base(1)[:16, :16]), "PNG")
    messy.readable["small"] = rel(val_bees / "tiny.png")

    # Leakage: a training image copied byte for byte into val.
    original = sorted(
        p
        for p in train_ants.iterdir()
        if p.name.endswith(".jpg") and p.stat().st_size > 0 and p.name[0].isalnum() and "png" not in p.name
    )[0]
    copy = val_ants / f"copy_of_{original.name}"
    shutil.copyfile(original, copy)
    messy.leak = (rel(original), rel(copy))

    # Ignored: hidden files and non-images.
    (train_ants / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    messy.ignored[rel(train_ants / ".DS_Store")] = "hidden file"
    (train_bees / "notes.txt").write_text("collected in June\n")
    messy.ignored[rel(train_bees / "notes.txt")] = "not an image extension"
    return messy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", type=Path, default=None, help="hymenoptera folder to copy ordinary images from")
    parser.add_argument("--per-class", type=int, default=20)
    args = parser.parse_args()
    messy = make_messy_folder(args.out, args.source, per_class=args.per_class)
    print(f"wrote {messy.root}: unreadable {sorted(messy.unreadable)}, leak {messy.leak}")


if __name__ == "__main__":
    main()
