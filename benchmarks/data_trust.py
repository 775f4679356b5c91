"""Issue 27's benchmark: does `tlcli check --deep` find what it says, at what cost?

    python benchmarks/data_trust.py                                # every section, about 30 min on 2 idle cores
    python benchmarks/data_trust.py --sections labels,duplicates --seeds 1,2,3

Each section runs the real command, `tlcli check --deep DIR --json`, on MobileNetV2 1.0 (ImageNet, 224 px), in
its own process, on folders built in a temporary directory (files linked or written there; ../shared is never
written):

- `labels`: eurosat's 1,000 training images with 5% of their labels flipped (50, each to another class chosen
  uniformly at random; a seed each): precision among the 50 top-ranked suspects, recall of the flips in the top 100.
- `duplicates`: hymenoptera untouched first (every pair it reports is listed for inspection, with VERDICTS), then 50
  training images copied into its validation folder under each of four transformations (200 copies), and under the
  extra ones in EXTRA (reported, not targeted): the share of copies reported as leakage, and of false cross-split
  pairs among all reported.
- `cost`: cats_and_dogs_filtered (3,000 images), cold (empty feature cache) and warm: wall time and peak memory.
- `scaling`: 5,000, 10,000 and 20,000 images made from the shared sets, each with a distinct random crop and colour
  shift: peak memory and wall time, warm (the 20,000 set is extracted once, cold, first).

Writes benchmarks/DATA_TRUST.md and benchmarks/data_trust.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from run import describe_machine, measure  # noqa: E402

SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"
TIMEOUT = 2 * 3600
FLIP_SHARE = 0.05
TARGETED = ("resize60", "jpeg40", "crop85", "bright15")
EXTRA = ("mirror", "crop70", "combo")  # combo: resize to 60%, brightness +15% and JPEG quality 40 at once
COPIES = 50
SCALES = (5000, 10000, 20000)
# Pairs the untouched hymenoptera folder reports, after looking at both images: (path a, path b) -> verdict.
# A pair reported and missing here counts as false (so an uninspected pair can only lower the figure).
VERDICTS: dict[tuple[str, str], str] = {}
SAME = "same photo"  # verdicts starting with this are true near-duplicates


def transform(image, name: str):
    """`image` (a PIL RGB image) under one named transformation; returns (image, JPEG quality)."""
    from PIL import ImageEnhance, ImageOps

    w, h = image.size

    def crop(keep: float):
        dw, dh = round(w * (1 - keep) / 2), round(h * (1 - keep) / 2)
        return image.crop((dw, dh, w - dw, h - dh))

    if name == "resize60":
        return image.resize((round(w * 0.6), round(h * 0.6))), 95
    if name == "jpeg40":
        return image, 40
    if name == "crop85":
        return crop(0.85), 95
    if name == "crop70":
        return crop(0.70), 95
    if name == "bright15":
        return ImageEnhance.Brightness(image).enhance(1.15), 95
    if name == "mirror":
        return ImageOps.mirror(image), 95
    if name == "combo":
        smaller = image.resize((round(w * 0.6), round(h * 0.6)))
        return ImageEnhance.Brightness(smaller).enhance(1.15), 40
    raise ValueError(name)


def link_tree(src: Path, dst: Path) -> list[Path]:
    """`dst/<class>/<file>` symlinks to every file of `src/<class>/`; returns the links."""
    links = []
    for class_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / class_dir.name).mkdir(parents=True, exist_ok=True)
        for file in sorted(p for p in class_dir.iterdir() if p.is_file()):
            link = dst / class_dir.name / file.name
            link.symlink_to(file)
            links.append(link)
    return links


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="tlcli-trust-"))
        keras_home = self.work / "keras" / "models"
        keras_home.mkdir(parents=True)
        for weights in (SHARED / "weights").glob("*.h5"):
            shutil.copy(weights, keras_home / weights.name)
        self.env = {**os.environ, "KERAS_HOME": str(keras_home.parent), "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.cache = self.work / "cache"
        self.results: dict = {}

    def check(self, folder: Path, label: str, *, cache: Path | None = None, more: tuple[str, ...] = ()) -> dict:
        """`tlcli check --deep folder --json` in its own process: its wall time, peak memory and report."""
        env = {**self.env, "TLCLI_CACHE_DIR": str(cache or self.cache)}
        cmd = [sys.executable, "-m", "tlcli", "check", "--deep", str(folder), "--json"]
        cmd += ["--out", str(self.work / "checks" / label), *more]
        result = measure(cmd, env, self.work / "logs", label, TIMEOUT)
        deep = (result.get("output") or {}).get("deep")
        if deep is None:
            raise SystemExit(f"{label}: no deep report (exit {result['returncode']}): {result.get('error')}")
        print(f"{label}: exit {result['returncode']}, {result['wall_s']:.0f} s, {result['peak_rss_mb']} MB", flush=True)
        return {**result, "deep": deep}

    # -- labels ---------------------------------------------------------------------------------------------
    def labels(self) -> dict:
        rows = []
        for seed in self.args.seeds:
            folder = self.work / f"labels_s{seed}"
            flipped = self._flip(folder / "train", seed)
            run = self.check(folder, f"labels_s{seed}")
            ranked = [canon(s["path"]) for s in run["deep"]["label_suspects"]["suspects"]]
            k = len(flipped)
            rows.append(
                {
                    "seed": seed,
                    "flipped": k,
                    "precision_at_k": len(set(ranked[:k]) & flipped) / k,
                    "recall_at_2k": len(set(ranked[: 2 * k]) & flipped) / k,
                    "suspects": len(ranked),
                    "method": run["deep"]["label_suspects"].get("method"),
                    "wall_s": run["wall_s"],
                    "peak_rss_mb": run["peak_rss_mb"],
                    "curve": run["deep"].get("learning_curve"),
                }
            )
        return {"rows": rows}

    @staticmethod
    def _flip(train: Path, seed: int) -> set[str]:
        """Link eurosat's training images under `train`, 5% of them in another class's folder; returns those."""
        source = DATASETS / "eurosat" / "train"
        classes = sorted(p.name for p in source.iterdir() if p.is_dir())
        files = sorted(f for c in classes for f in (source / c).iterdir() if f.is_file())
        rng = random.Random(seed)
        chosen = set(rng.sample(range(len(files)), round(FLIP_SHARE * len(files))))
        flipped = set()
        for index, file in enumerate(files):
            label = file.parent.name
            if index in chosen:
                label = rng.choice([c for c in classes if c != file.parent.name])
            link = train / label / file.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(file)
            if index in chosen:
                flipped.add(canon(link))
        return flipped

    # -- duplicates -----------------------------------------------------------------------------------------
    def duplicates(self) -> dict:
        clean = self.work / "hymenoptera"
        link_tree(DATASETS / "hymenoptera" / "train", clean / "train")
        link_tree(DATASETS / "hymenoptera" / "val", clean / "val")
        untouched = self.check(clean, "duplicates_untouched")
        planted = self.work / "hymenoptera_planted"
        shutil.copytree(clean, planted, symlinks=True)
        copies = self._plant(planted, seed=self.args.seeds[0])
        run = self.check(planted, "duplicates_planted")
        return self._score_duplicates(untouched, run, copies)

    @staticmethod
    def _plant(folder: Path, seed: int) -> dict[str, tuple[str, str]]:
        """Copy COPIES training images into val/ under each transformation; returns copy -> (source, transform)."""
        from PIL import Image

        train = sorted(p for p in (folder / "train").rglob("*") if p.is_file() or p.is_symlink())
        chosen = random.Random(seed).sample(train, COPIES)
        copies = {}
        for source in chosen:
            image = Image.open(source.resolve()).convert("RGB")
            for name in TARGETED + EXTRA:
                changed, quality = transform(image, name)
                copy = folder / "val" / source.parent.name / f"copy_{name}_{source.stem}.jpg"
                changed.save(copy, quality=quality)
                copies[canon(copy)] = (canon(source), name)
        return copies

    @staticmethod
    def _score_duplicates(untouched: dict, run: dict, copies: dict) -> dict:
        before = untouched["deep"]["near_duplicates"]["pairs"]
        found_before = [{**p, "a": shown(p["a"]), "b": shown(p["b"])} for p in before if p["confirmed"]]
        genuine = {frozenset((p["a"], p["b"])) for p in found_before if _verdict(p).startswith(SAME)}
        pairs = run["deep"]["near_duplicates"]["pairs"]
        cross = [p for p in pairs if p["confirmed"] and p["split_a"] != p["split_b"]]  # look-alikes are not reported
        hit, false = set(), []
        for pair in cross:
            a, b = canon(pair["a"]), canon(pair["b"])
            planted_pair = next((copies[x] for x in (a, b) if x in copies), None)
            other = b if a in copies else a
            if planted_pair is not None and other == planted_pair[0]:
                hit.add(a if a in copies else b)
            elif frozenset((shown(a), shown(b))) not in genuine:
                false.append({"a": shown(a), "b": shown(b), "similarity": pair.get("similarity")})
        per_transform = {}
        for name in TARGETED + EXTRA:
            made = [c for c, (_, t) in copies.items() if t == name]
            per_transform[name] = {"copies": len(made), "reported": sum(c in hit for c in made)}
        targeted = [c for c, (_, t) in copies.items() if t in TARGETED]
        return {
            "untouched_pairs": [{**p, "verdict": _verdict(p)} for p in found_before],
            "untouched_wall_s": untouched["wall_s"],
            "planted_wall_s": run["wall_s"],
            "per_transform": per_transform,
            "targeted_recall": sum(c in hit for c in targeted) / len(targeted),
            "cross_split_pairs": len(cross),
            "false_pairs": false,
            "false_share": len(false) / len(cross) if cross else 0.0,
            "thresholds": run["deep"]["near_duplicates"].get("thresholds"),
            "lookalikes_untouched": untouched["deep"]["near_duplicates"].get("lookalikes"),
        }

    # -- cost and scaling -----------------------------------------------------------------------------------
    def cost(self) -> dict:
        folder = self.work / "cats"
        link_tree(DATASETS / "cats_and_dogs_filtered" / "train", folder / "train")
        link_tree(DATASETS / "cats_and_dogs_filtered" / "validation", folder / "val")
        cache = self.work / "cache_cats"
        cold = self.check(folder, "cost_cold", cache=cache)
        warm = self.check(folder, "cost_warm", cache=cache)
        return {name: _cost_row(run) for name, run in (("cold", cold), ("warm", warm))}

    def scaling(self) -> dict:
        largest = self.work / f"scaled_{max(SCALES)}"
        made = make_scaled(largest / "train", max(SCALES), seed=self.args.seeds[0])
        cache = self.work / "cache_scaled"
        rows = {"cold": _cost_row(self.check(largest, f"scaled_{max(SCALES)}_cold", cache=cache))}
        for n in SCALES:
            folder = largest if n == max(SCALES) else self.work / f"scaled_{n}"
            if folder != largest:
                for file in made[:n]:
                    link = folder / "train" / file.parent.name / file.name
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(file)
            rows[str(n)] = _cost_row(self.check(folder, f"scaled_{n}_warm", cache=cache))
        return rows


def canon(path) -> str:
    """One name per file: links resolved (to ../shared for the untouched images)."""
    return Path(path).resolve().as_posix()


def shown(path) -> str:
    """A file's name in the report: relative to the shared datasets, or `<copy>/name` for a planted copy."""
    path = Path(canon(path))
    return path.relative_to(DATASETS).as_posix() if path.is_relative_to(DATASETS) else f"<copy>/{path.name}"


def _verdict(pair: dict) -> str:
    return VERDICTS.get((pair["a"], pair["b"])) or VERDICTS.get((pair["b"], pair["a"])) or "not inspected"


def _cost_row(run: dict) -> dict:
    deep = run["deep"]
    return {
        "wall_s": run["wall_s"],
        "peak_rss_mb": run["peak_rss_mb"],
        "embedded": deep.get("embedded"),
        "from_cache": deep.get("from_cache"),
        "pairs": sum(p["confirmed"] for p in deep["near_duplicates"]["pairs"]),
        "candidates": deep["near_duplicates"].get("candidates"),
        "timings": deep.get("timings"),
        "exit": run["returncode"],
    }


def _scaled_one(job: tuple[str, str, int]) -> None:
    """One scaled image: a random crop keeping 70-95% of each side and a colour shift of up to 15% a channel."""
    from PIL import Image

    source, target, seed = job
    rng = random.Random(seed)
    image = Image.open(source).convert("RGB")
    w, h = image.size
    keep_w, keep_h = rng.uniform(0.7, 0.95), rng.uniform(0.7, 0.95)
    left, top = rng.uniform(0, 1 - keep_w) * w, rng.uniform(0, 1 - keep_h) * h
    image = image.crop((round(left), round(top), round(left + keep_w * w), round(top + keep_h * h)))
    gains = [rng.uniform(0.85, 1.15) for _ in range(3)]
    bands = [band.point(lambda v, g=g: min(255, round(v * g))) for band, g in zip(image.split(), gains)]
    Image.merge("RGB", bands).resize((224, 224)).save(target, quality=90)


def make_scaled(train: Path, n: int, seed: int) -> list[Path]:
    """`n` images under `train/<dataset>_<class>/`, made from every shared set's training images in turn."""
    sources = sorted(
        (f"{d.name}_{c.name}", f)
        for d in DATASETS.iterdir()
        if (d / "train").is_dir()
        for c in (d / "train").iterdir()
        if c.is_dir()
        for f in c.iterdir()
        if f.is_file()
    )
    jobs, made = [], []
    for index in range(n):
        label, source = sources[index % len(sources)]
        target = train / label / f"{index:05d}_{source.stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((str(source), str(target), seed * 1_000_003 + index))
        made.append(target)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_scaled_one, jobs, chunksize=64))
    return made


def _median_range(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.{digits}f}" + (f" ({min(values):.{digits}f}-{max(values):.{digits}f})" if len(values) > 1 else "")


def render(report: dict) -> str:
    lines = [
        "# Data you can trust: `tlcli check --deep`, measured",
        "",
        f"Generated by `python benchmarks/data_trust.py {' '.join(report['argv'])}` on {report['date']} "
        f"({report['machine'].get('cpu')}, {report['machine'].get('cores')} cores). MobileNetV2 1.0, ImageNet "
        "weights, 224 px; every figure is one `tlcli check --deep --json` process. Medians with ranges over seeds.",
        "",
    ]
    sections = report["sections"]
    if "labels" in sections:
        lines += _render_labels(sections["labels"])
    if "duplicates" in sections:
        lines += _render_duplicates(sections["duplicates"])
    for name in ("cost", "scaling"):
        if name in sections:
            lines += _render_cost(name, sections[name])
    return "\n".join(lines) + "\n"


def _render_labels(labels: dict) -> list[str]:
    rows = labels["rows"]
    p = [r["precision_at_k"] for r in rows]
    r = [r["recall_at_2k"] for r in rows]
    lines = [
        "## Label errors: eurosat, 5% of the training labels flipped",
        "",
        f"{rows[0]['flipped']} of 1,000 labels flipped uniformly to another class, seeds "
        f"{', '.join(str(x['seed']) for x in rows)}; method: {rows[0]['method']}.",
        "",
        "| seed | precision at k = 50 | recall in the top 100 | wall (s) | peak (MB) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['seed']} | {x['precision_at_k']:.2f} | {x['recall_at_2k']:.2f} | {x['wall_s']:.0f} "
        f"| {x['peak_rss_mb']} |"
        for x in rows
    ]
    lines += [
        f"| median (range) | {_median_range(p)} | {_median_range(r)} | | |",
        "",
        "Each seed flips a different 50 images (seeds 1 and 2 share one, 1 and 3 three); each row is counted from "
        "its own run. Suspects are ranked over the training and validation images (all 1,000 here: the folder has "
        "no test split); the first run of a seed extracts, the others read the cache.",
        "",
        f"Targets: precision >= 0.80: **{'met' if statistics.median(p) >= 0.8 else 'missed'}**; "
        f"recall >= 0.80: **{'met' if statistics.median(r) >= 0.8 else 'missed'}**.",
        "",
    ]
    curve = rows[0].get("curve") or {}
    if curve.get("classes"):
        lines += ["Per-class learning curve on the same (flipped) folder, seed " + str(rows[0]["seed"]) + ":", ""]
        lines += [f"- {c.get('advice')}" for c in curve["classes"]] + [""]
    return lines


def _render_duplicates(d: dict) -> list[str]:
    lines = [
        "## Near-duplicates: hymenoptera",
        "",
        f"Untouched folder: {len(d['untouched_pairs'])} pair(s) reported ({d['untouched_wall_s']:.0f} s), each "
        "inspected:",
        "",
    ]
    lines += [
        f"- `{p['a']}` ~ `{p['b']}` ({p['split_a']}/{p['split_b']}, similarity {p.get('similarity', 0):.3f}): "
        f"{p['verdict']}"
        for p in d["untouched_pairs"]
    ] or ["- none"]
    lines += [
        "",
        f"Then {COPIES} training images copied into val/ under each transformation (thresholds {d['thresholds']}):",
        "",
        "| transformation | copies | reported as leakage | share | targeted |",
        "|---|---|---|---|---|",
    ]
    for name, row in d["per_transform"].items():
        share = row["reported"] / row["copies"] if row["copies"] else 0
        lines.append(
            f"| {name} | {row['copies']} | {row['reported']} | {share:.2f} | {'yes' if name in TARGETED else 'no'} |"
        )
    lines += [
        "",
        f"Targeted copies reported: **{d['targeted_recall']:.3f}** (target >= 0.95: "
        f"**{'met' if d['targeted_recall'] >= 0.95 else 'missed'}**). Cross-split pairs reported: "
        f"{d['cross_split_pairs']}, false: {len(d['false_pairs'])} = **{d['false_share']:.3f}** (target <= 0.01: "
        f"**{'met' if d['false_share'] <= 0.01 else 'missed'}**).",
        "",
    ]
    lines += [f"- false: `{p['a']}` ~ `{p['b']}` ({p['similarity']})" for p in d["false_pairs"][:20]]
    return lines + [
        "",
        "`crop70` keeps 70% of each side, outside the tolerance `check --deep` states (crops keeping 75-100%); "
        "`combo` is a 60% resize, brightness +15% and JPEG quality 40 at once. A copy counts as reported when its "
        "pair with its own source is confirmed across the splits; any other confirmed cross-split pair not judged a "
        "real duplicate above counts as false.",
        "",
        "## Groups",
        "",
        "Not a benchmark figure: `tests/test_groups.py` proves that, on a manifest with a group column, no group is "
        "split across train and validation, that adding groups (and images to old groups) moves no image, and that "
        "the folds of `tune` and `check --deep` keep groups whole.",
        "",
    ]


def _render_cost(name: str, rows: dict) -> list[str]:
    title = {"cost": "Cost: cats_and_dogs_filtered (3,000 images)", "scaling": "Memory as the folder grows"}[name]
    lines = [
        f"## {title}",
        "",
        "| run | images | from cache | wall (s) | embedding / near-duplicates / labels (s) | candidates | pairs "
        "| peak (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        t = r.get("timings") or {}
        split = " / ".join(f"{t[k]:.0f}" if k in t else "-" for k in ("embedding", "near_duplicates", "labels"))
        lines.append(
            f"| {label} | {r['embedded']} | {r['from_cache']} | {r['wall_s']:.0f} | {split} "
            f"| {r.get('candidates', '-')} | {r['pairs']} | {r['peak_rss_mb']} |"
        )
    return lines + ["", NOTES[name], ""]


NOTES = {
    "cost": (
        "Cold: one extraction pass (the one `tlcli train` of the same base and image size would make, and then "
        "skips). Warm: the embeddings from the feature cache; labels = the out-of-fold label probe (5 fits) and the "
        "learning curve (20 fits)."
    ),
    "scaling": (
        "Images made by `make_scaled` from every shared set's training images in turn (about three per source "
        "photo), each with its own random crop (70-95% of each side) and colour shift, so most have near-duplicates "
        "in the folder: a hard case for the pixel check, whose candidates grow with them. Peak memory grows less "
        "than linearly (the embeddings, 5 KB an image, and bounded blocks; never an n x n matrix); time is spent in "
        "the probe fits (14 classes, 1,280 features) and the thumbnails of the candidate pairs. The machine was "
        "loaded by other work during these runs (load average 3-4 on 2 cores), so the wall times are upper bounds."
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="labels,duplicates,cost,scaling")
    parser.add_argument("--seeds", default="1,2,3", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--render", action="store_true", help="only write DATA_TRUST.md again from data_trust.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not DATASETS.is_dir():
        print(f"needs {DATASETS} (see ../shared/README.md)", file=sys.stderr)
        return 2
    if args.render:
        (HERE / "DATA_TRUST.md").write_text(render(json.loads((HERE / "data_trust.json").read_text())))
        return 0
    bench = Bench(args)
    print(f"working in {bench.work}", flush=True)
    sections = {}
    try:
        for name in args.sections.split(","):
            sections[name] = getattr(bench, name)()
    finally:
        if not args.keep:
            shutil.rmtree(bench.work, ignore_errors=True)
    report = {
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "machine": describe_machine(sys.executable),
        "sections": sections,
    }
    (HERE / "data_trust.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (HERE / "DATA_TRUST.md").write_text(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
