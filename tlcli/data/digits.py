"""Real example data that ships with a dependency: scikit-learn's handwritten digits.

`export_digits` writes the 1,797 bundled 8x8 digit images as PNG class folders
for the offline quickstart: a *source* task (digits 0-4) and a *target* task
(digits 5-9) with only a few labelled images per class, the situation
transfer learning is for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlcli.data.splits import split_bucket
from tlcli.errors import UserError


def export_digits(
    out_dir: str | Path, target_train_per_class: int = 10, source_val_fraction: float = 0.2
) -> dict[str, dict[str, int]]:
    """Write `out_dir/source/{train,val}/<digit>/` and `out_dir/target/{train,val}/<digit>/`.

    Source: digits 0-4, split by file-name hash. Target: digits 5-9, the first
    `target_train_per_class` images of each digit for training, the rest for
    validation. Existing files are overwritten with identical content.

    Returns:
        Image counts per task and split.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    if target_train_per_class < 1:
        raise UserError("target_train_per_class: must be at least 1")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; give a folder to write the digits into")
    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0) + 0.5, 0, 255).astype(np.uint8)
    seen = {d: 0 for d in range(10)}
    counts: dict[str, dict[str, int]] = {"source": {"train": 0, "val": 0}, "target": {"train": 0, "val": 0}}
    for index, (pixels, digit) in enumerate(zip(images, digits.target)):
        digit = int(digit)
        name = f"digit{index:04d}.png"
        if digit < 5:
            task = "source"
            split = "val" if split_bucket(f"{digit}/{name}") < source_val_fraction else "train"
        else:
            task = "target"
            split = "train" if seen[digit] < target_train_per_class else "val"
        seen[digit] += 1
        folder = out / task / split / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").save(folder / name)
        counts[task][split] += 1
    return counts
