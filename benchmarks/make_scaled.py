"""Build the 4x training set for the scaling benchmark.

    python benchmarks/make_scaled.py SRC DST

SRC holds train/ and validation/ (class folders inside). DST gets:

    train/<class>/<name>.<ext>          the original file, byte for byte
    train/<class>/<name>.flip.jpg       mirrored left-right
    train/<class>/<name>.rot90.jpg      rotated 90 degrees
    train/<class>/<name>.q70.jpg        re-encoded at JPEG quality 70 (another
                                        quality if that reproduces the original)
    validation/...                      the same validation set (copied)

so every training image exists as four distinct files with distinct content
(different bytes and different decoded pixels): no cache keyed on content can
merge them, and the training set is 4x larger. The script checks that no two
training files share their bytes or their decoded pixels, and writes
DST/scaled.json describing what it built. It is idempotent: when
DST/scaled.json already matches SRC, it does nothing; otherwise it rebuilds
into a temporary folder and swaps it in.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

VERSION = 2
QUALITY = 70  # re-encoding quality (the originals are not saved at 70)
VARIANT_QUALITY = 95  # flipped and rotated copies
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}


def source_listing(src: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(src)), p.stat().st_size)
        for p in src.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def listing_digest(listing) -> str:
    digest = hashlib.sha256()
    for rel, size in listing:
        digest.update(f"{rel}\0{size}\n".encode())
    return digest.hexdigest()


def pixel_hash(image) -> str:
    return hashlib.sha256(image.tobytes() + repr((image.mode, image.size)).encode()).hexdigest()


def make_variants(job: tuple[str, str]) -> list[tuple[str, str, str]]:
    """Write the four files for one source image; return (path, byte hash, pixel hash) each.

    A variant whose decoded pixels equal an earlier variant's (say the original
    was itself saved by Pillow at quality 70, so re-encoding it reproduces it
    bit for bit) is written again at the next quality in the list.
    """
    from PIL import Image, ImageOps

    src_file, dst_dir = map(Path, job)
    dst_dir.mkdir(parents=True, exist_ok=True)
    original = dst_dir / src_file.name
    shutil.copyfile(src_file, original)
    with Image.open(src_file) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    with Image.open(original) as opened:
        rows = [(str(original), hashlib.sha256(original.read_bytes()).hexdigest(), pixel_hash(opened.convert("RGB")))]
    for suffix, transformed, qualities in (
        ("flip", image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (VARIANT_QUALITY, 90, 85)),
        ("rot90", image.transpose(Image.Transpose.ROTATE_90), (VARIANT_QUALITY, 90, 85)),
        (f"q{QUALITY}", image, (QUALITY, 68, 72, 60, 80)),
    ):
        path = dst_dir / f"{src_file.stem}.{suffix}.jpg"
        for quality in qualities:
            transformed.save(path, "JPEG", quality=quality)
            with Image.open(path) as opened:
                row = (str(path), hashlib.sha256(path.read_bytes()).hexdigest(), pixel_hash(opened.convert("RGB")))
            if all(row[1] != r[1] and row[2] != r[2] for r in rows):
                break
        rows.append(row)
    return rows


def build(src: Path, dst: Path, workers: int | None = None) -> dict:
    listing = source_listing(src)
    digest = listing_digest(listing)
    marker = dst / "scaled.json"
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
            if info.get("source_digest") == digest and info.get("version") == VERSION:
                return info
        except (OSError, ValueError):
            pass
    train_src = src / "train"
    val_src = next((src / n for n in ("validation", "val") if (src / n).is_dir()), None)
    if not train_src.is_dir() or val_src is None:
        raise SystemExit(f"{src}: expected train/ and validation/ (or val/) folders")
    tmp = dst.with_name(dst.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    jobs = []
    for rel, _ in listing:
        rel_path = Path(rel)
        if rel_path.parts[0] != "train":
            continue
        jobs.append((str(src / rel_path), str(tmp / rel_path.parent)))
    shutil.copytree(val_src, tmp / val_src.name)
    rows = []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for result in pool.map(make_variants, jobs, chunksize=16):
            rows.extend(result)
    byte_dupes = len(rows) - len({r[1] for r in rows})
    pixel_dupes = len(rows) - len({r[2] for r in rows})
    info = {
        "version": VERSION,
        "source": str(src.resolve()),
        "source_digest": digest,
        "train_originals": len(jobs),
        "train_files": len(rows),
        "factor": len(rows) / max(1, len(jobs)),
        "validation_files": sum(1 for p in (tmp / val_src.name).rglob("*") if p.is_file()),
        "variants": ["original", "flip (q95)", "rot90 (q95)", f"re-encoded (q{QUALITY})"],
        "duplicate_bytes": byte_dupes,
        "duplicate_pixels": pixel_dupes,
    }
    (tmp / "scaled.json").write_text(json.dumps(info, indent=2) + "\n")
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="folder with train/ and validation/")
    p.add_argument("dst", type=Path, help="output folder (replaced if it is stale)")
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    info = build(args.src, args.dst, args.workers)
    print(json.dumps(info))
    if info["duplicate_bytes"] or info["duplicate_pixels"]:
        print(
            f"warning: {info['duplicate_bytes']} files share bytes and {info['duplicate_pixels']} share "
            "pixels with another file "
            "(duplicates already present in the source set?)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
