"""Issue 14's real multi-label set: 2x1 mosaics of hymenoptera ant and bee photos, labelled by the classes present.

A copy of the builder in benchmarks/mosaics.py (which measures the target on it), so that no test imports from
benchmarks/. Each mosaic puts two photos side by side, each resized to SIDE x SIDE; train mosaics use train photos
only and validation mosaics val photos only (the manifest's `split` column).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SIDE = 112  # each photo's side in the mosaic: the mosaic is 112 x 224, MobileNet's usual width
PAIRS = (("ants", "ants"), ("ants", "bees"), ("bees", "ants"), ("bees", "bees"))


def make_mosaics(source: Path, out: Path, per_pair: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Write mosaics into `out/images/` and their manifest `out/mosaics.csv` (columns path, labels, split).

    `per_pair`: mosaics of each of the four left/right pairs per split (default: as many as the split's photos allow,
    each photo used at most once on each side). Returns the manifest.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    (out / "images").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        photos = {
            name: sorted(p for p in (source / split / name).iterdir() if p.is_file()) for name in ("ants", "bees")
        }
        count = (per_pair or {}).get(split) or min(len(v) for v in photos.values()) // 2
        queues = {
            side: {name: list(rng.permutation(len(files))) for name, files in photos.items()}
            for side in ("left", "right")
        }
        for pair in PAIRS:
            for i in range(count):
                halves = [
                    photos[name][queues[side][name].pop() % len(photos[name])]
                    for side, name in zip(("left", "right"), pair)
                ]
                canvas = Image.new("RGB", (2 * SIDE, SIDE))
                for x, path in zip((0, SIDE), halves):
                    with Image.open(path) as photo:
                        canvas.paste(photo.convert("RGB").resize((SIDE, SIDE), Image.BILINEAR), (x, 0))
                name = f"{split}_{pair[0]}_{pair[1]}_{i:03d}.jpg"
                canvas.save(out / "images" / name, quality=92)
                rows.append({"path": f"images/{name}", "labels": "|".join(sorted(set(pair))), "split": split})
    manifest = out / "mosaics.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, ["path", "labels", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def mosaic_config(manifest: Path, runs_dir: Path, seed: int = 1, **extra) -> dict:
    """The smallest multi-label config: the manifest, the base, per-class thresholds; everything else tlcli's defaults
    but the refit (refitting on train + validation would make the validation figures in-sample)."""
    config = {
        "name": f"mosaics-seed{seed}",
        "seed": seed,
        "data": {
            "manifest": str(manifest),
            "multi_label": True,
            "columns": {"label": "labels"},
            "image_size": [SIDE, 2 * SIDE],
        },
        "base": {"name": "MobileNet", "weights": "imagenet", "args": {"alpha": 0.25}},
        "head": {"threshold": "per_class"},
        "train": {"refit": False},
        "output": {"runs_dir": str(runs_dir)},
    }
    for key, value in extra.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config
