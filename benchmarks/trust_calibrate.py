"""Calibrate the near-duplicate thresholds of `tlcli check --deep` (tlcli/audit/neighbours.py) on real photos.

    KERAS_HOME=/work/bench/kh TLCLI_CACHE_DIR=/tmp/cache python benchmarks/trust_calibrate.py
    python benchmarks/trust_calibrate.py --grey 0.7 --pixel 0.95     # evaluate other thresholds
    python benchmarks/trust_calibrate.py --base '{"name": "MobileNet", "args": {"alpha": 0.25}}' --out /tmp/m.json

A temporary copy of hymenoptera (symlinks to ../shared, which is never written) gets 50 of its training images
copied into its validation folder under each transformation of TRANSFORMS (the issue's four, then others: 550
copies). Everything is embedded with the default base (MobileNetV2, 224 px, ImageNet weights: the Keras cache must
hold them), and every pair of images whose cosine reaches FLOOR is scored by the pixel check
(tlcli/audit/pixels.py). Measured:

- per transformation, the cosine and thumbnail score of each copy against its source, and the share of copies
  reported (a cross-split pair with its own source) at the thresholds;
- on the untouched hymenoptera, cats_and_dogs_filtered and eurosat folders, the pairs reported at the thresholds
  (to inspect by eye) and the closest non-reported ones (the margin);
- the false share of the planted set's reported cross-split pairs: those that are not a copy and its source and
  not a pair the untouched folder already had.

Prints a report and writes benchmarks/trust_calibration.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
from tlcli.audit import neighbours, pixels  # noqa: E402
from tlcli.audit.embed import embed_splits, embedding_config  # noqa: E402
from tlcli.config.schema import DataConfig, ExperimentConfig  # noqa: E402
from tlcli.data.splits import discover_splits  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets"  # --shared: elsewhere (a worktree)
FLOOR = 0.7  # candidate pairs are searched from this cosine up (the thresholds are evaluated above it)
SHIFT_FLOOR = 0.8  # and searched for shifted crops from this cosine up
COPIES = 50
ISSUE = ("resize60", "jpeg40", "crop85", "bright115")  # the issue's four transformations


def _crop(image: Image.Image, kept: float) -> Image.Image:
    w, h = image.size
    dx, dy = w * (1 - kept) / 2, h * (1 - kept) / 2
    return image.crop((round(dx), round(dy), round(w - dx), round(h - dy)))


def _shifted_crop(image: Image.Image, kept: float) -> Image.Image:
    """A crop keeping `kept` of each side, shifted halfway from the centre towards the top right."""
    w, h = image.size
    x, y = w * (1 - kept) * 0.75, h * (1 - kept) * 0.25
    return image.crop((round(x), round(y), round(x + w * kept), round(y + h * kept)))


def _rotate(image: Image.Image, degrees: float) -> Image.Image:
    return _crop(image.rotate(degrees, resample=Image.BILINEAR), 0.9)


TRANSFORMS = {
    "resize60": lambda im: im.resize((round(im.width * 0.6), round(im.height * 0.6)), Image.LANCZOS),
    "jpeg40": lambda im: im,  # saved at quality 40 (below)
    "crop85": lambda im: _crop(im, 0.85),
    "bright115": lambda im: ImageEnhance.Brightness(im).enhance(1.15),
    "mirror": ImageOps.mirror,
    "crop80": lambda im: _crop(im, 0.80),
    "saturation130": lambda im: ImageEnhance.Color(im).enhance(1.3),
    "contrast80": lambda im: ImageEnhance.Contrast(im).enhance(0.8),
    "crop88_shifted": lambda im: _shifted_crop(im, 0.88),
    "rotate5": lambda im: _rotate(im, 5),
    "combo": lambda im: ImageEnhance.Brightness(_crop(im, 0.9).resize((im.width // 2, im.height // 2))).enhance(0.9),
}
QUALITY = {"jpeg40": 40, "combo": 60}


def planted_copy(source: Path, root: Path, transforms: list[str], seed: int = 0) -> dict[str, tuple[str, str]]:
    """A copy of `source` (symlinks) whose validation folder also holds COPIES training images under each
    transformation; returns copy path -> (source path, transformation)."""
    for path in sorted(source.rglob("*")):
        target = root / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.symlink_to(path)
    training = sorted(p for p in (root / "train").rglob("*.jpg"))
    chosen = random.Random(seed).sample(training, COPIES)
    planted = {}
    for path in chosen:
        label = path.parent.name
        with Image.open(path) as image:
            image = image.convert("RGB")
            for name in transforms:
                target = root / "val" / label / f"copy_{name}_{path.stem}.jpg"
                TRANSFORMS[name](image).save(target, quality=QUALITY.get(name, 95))
                planted[str(target)] = (str(path), name)
    return planted


def embedded(folder: Path, base: dict | None = None):
    """Stacked embeddings of every split (by the default base, or `base`: a config's base section at 224 px):
    features, paths, split index per row, split names, seconds."""
    data = DataConfig(dir=folder)
    started = time.perf_counter()
    config = ExperimentConfig(data=data, base=base) if base else None
    emb = embed_splits(discover_splits(data), embedding_config(data, config=config))
    features = np.concatenate([s.features for s in emb.splits])
    paths = [p for s in emb.splits for p in s.paths]
    split_of = np.concatenate([np.full(len(s), k) for k, s in enumerate(emb.splits)])
    return features, paths, split_of, [s.name for s in emb.splits], time.perf_counter() - started


def pixel_scores(paths, a: int, b: int, similarity: float, squares: dict) -> tuple[float, float]:
    """The view score and (textured images at a cosine of SHIFT_FLOOR or more, else -1) the shifted-crop score."""
    for row in (a, b):
        if row not in squares:
            squares[row] = pixels.grey_square(paths[row])
    sa, sb = squares[a], squares[b]
    if sa is None or sb is None:
        return -1.0, -1.0
    shifted = -1.0
    if similarity >= SHIFT_FLOOR and pixels.textured(sa) and pixels.textured(sb):
        shifted = pixels.shifted_crop_score(sa, sb)
    return pixels.view_score(sa, sb), shifted


def candidates(features, paths, split_of):
    """Every pair at cosine >= FLOOR (the blockwise search), each with its pixel scores."""
    i, j, s = neighbours.similar_pairs(features, split_of, FLOOR)
    squares: dict[int, object] = {}
    scores = np.array([pixel_scores(paths, a, b, c, squares) for a, b, c in zip(i.tolist(), j.tolist(), s.tolist())])
    return i, j, s, scores.reshape(-1, 2)


def reported(s, scores, args) -> np.ndarray:
    """Which candidate pairs the thresholds report (the rule of `tlcli.audit.neighbours.confirm`)."""
    views, shifted = scores[:, 0], scores[:, 1]
    confirmed = (views >= args.pixel) | ((s >= args.shifted_cosine) & (shifted >= args.shifted_pixel))
    return (s >= args.grey) & confirmed


def planted_results(args, root: Path, transforms: list[str]) -> dict:
    planted = planted_copy(args.shared / "hymenoptera", root, transforms)
    features, paths, split_of, names, seconds = embedded(root, args.base)
    row = {p: k for k, p in enumerate(paths)}
    x = neighbours.normalise(features)
    i, j, s, thumbs = candidates(features, paths, split_of)
    hit = reported(s, thumbs, args) & (split_of[i] != split_of[j])
    pairs = {(int(a), int(b)) for a, b in zip(i[hit], j[hit])}
    per = {}
    for name in transforms:
        copies = [(row[c], row[src]) for c, (src, t) in planted.items() if t == name]
        cos = np.array([float(x[c] @ x[src]) for c, src in copies])
        squares: dict[int, object] = {}
        pix = np.array([max(pixel_scores(paths, c, src, 1.0, squares)) for c, src in copies])
        found = [(min(c, src), max(c, src)) in pairs for c, src in copies]
        per[name] = {
            "found": f"{sum(found)}/{len(found)}",
            "recall": round(float(np.mean(found)), 3),
            "cosine_min": round(float(cos.min()), 3),
            "cosine_p5": round(float(np.percentile(cos, 5)), 3),
            "cosine_median": round(float(np.median(cos)), 3),
            "pixel_min": round(float(pix.min()), 3),
            "pixel_median": round(float(np.median(pix)), 3),
            "missed": [Path(paths[c]).name for (c, _), f in zip(copies, found) if not f],
        }
    true = {(min(row[c], row[src]), max(row[c], row[src])) for c, (src, _) in planted.items()}
    other = sorted(pairs - true)
    issue = [(min(row[c], row[s_]), max(row[c], row[s_])) for c, (s_, t) in planted.items() if t in ISSUE]
    return {
        "images": len(paths),
        "seconds": round(seconds, 1),
        "transforms": per,
        "issue_recall": round(float(np.mean([p in pairs for p in issue])), 3),
        "reported_cross_split": len(pairs),
        "other_cross_split": [_named(paths, a, b, x) for a, b in other],
    }


def _named(paths, a, b, x) -> dict:
    return {"a": _short(paths[a]), "b": _short(paths[b]), "cosine": round(float(x[a] @ x[b]), 3)}


def _short(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-3:])


def untouched_results(args, folder: Path) -> dict:
    """The cross-split pairs reported on an untouched folder, and the closest ones that are not."""
    features, paths, split_of, names, seconds = embedded(folder, args.base)
    i, j, s, thumbs = candidates(features, paths, split_of)
    cross = split_of[i] != split_of[j]
    hit = reported(s, thumbs, args)

    def rows(mask, limit):
        picked = np.flatnonzero(mask)[:limit]
        return [
            {"a": _short(paths[i[k]]), "b": _short(paths[j[k]]), "cosine": round(float(s[k]), 3),
             "pixels": [round(float(v), 3) for v in thumbs[k]]}
            for k in picked
        ]  # fmt: skip

    near = np.sort(thumbs[cross & ~hit].max(axis=1))[::-1]
    return {
        "images": len(paths),
        "seconds": round(seconds, 1),
        "reported_cross_split": rows(cross & hit, 100),
        "reported_within_split": rows(~cross & hit, 100),
        "closest_not_reported_by_cosine": rows(cross & ~hit, 10),
        "highest_thumbnail_not_reported": [round(float(t), 3) for t in near[:10]],
        "candidate_pairs": int((s >= args.grey).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grey", type=float, default=neighbours.GREY)
    parser.add_argument("--pixel", type=float, default=neighbours.PIXEL)
    parser.add_argument("--shifted-cosine", type=float, default=neighbours.SHIFTED_COSINE)
    parser.add_argument("--shifted-pixel", type=float, default=neighbours.SHIFTED_PIXEL)
    parser.add_argument("--transforms", default=",".join(TRANSFORMS))
    parser.add_argument("--untouched", default="hymenoptera,cats_and_dogs_filtered,eurosat")
    parser.add_argument(
        "--base", type=json.loads, default=None, help="another base, as a config's base section: '{\"name\": ...}'"
    )
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared datasets folder")
    parser.add_argument("--out", type=Path, default=HERE / "trust_calibration.json")
    args = parser.parse_args()
    results = {
        "base": args.base or "MobileNetV2 (default)",
        "thresholds": {k: getattr(args, k) for k in ("grey", "pixel", "shifted_cosine", "shifted_pixel")},
    }
    with tempfile.TemporaryDirectory(prefix="trust-calibrate-") as tmp:
        results["planted"] = planted_results(args, Path(tmp) / "hymenoptera", args.transforms.split(","))
    names = [name for name in args.untouched.split(",") if name]
    results["untouched"] = {name: untouched_results(args, args.shared / name) for name in names}
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
