"""Issue 15's benchmark: one process against `tlcli train --workers 2` on this machine.

    python benchmarks/distributed.py [--out benchmarks/DISTRIBUTED.md]

On cats_and_dogs_filtered (../shared: 2,000 training and 1,000 validation
photos) at 224 px with the real MobileNet alpha 0.25 weights, two configs,
each run by one process and by a two-worker cluster of local processes
(MultiWorkerMirroredStrategy, `--workers 2`), from an empty feature cache:

- `cached`: the head on frozen features (extraction split between the workers and exchanged, then 10 epochs);
- `fine-tune`: the full model on decoded images (`cache: off`): 1 head epoch, then 1 epoch with the top 20 base layers
unfrozen.

It records whole-process wall time (launch to exit) and the final validation
accuracy. Two workers on two cores share the same two cores: they cannot be
faster than one process; what the figures show is the overhead of the
cluster (process start, collectives, the feature exchange) and that the
result agrees, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared"
DATA = SHARED / "datasets" / "cats_and_dogs_filtered"
WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"

BASE = {"name": "MobileNet", "weights": "imagenet", "args": {"alpha": 0.25}, "trainable": "none"}
# No dropout: each replica draws its own dropout masks, so with it two workers follow another random path than one
# process and the figures agree only within noise. Without it (and with determinism) they can agree figure for figure.
HEAD = {"dropout": 0.0}
CONFIGS = {
    "cached": {
        "train": {"epochs": 10, "learning_rate": 0.001, "l2": 0.0001, "early_stopping": {"patience": 100}},
        "cache": "memory",
    },
    "fine-tune": {
        "train": {"epochs": 1, "learning_rate": 0.001, "l2": 0.0001},
        "fine_tune": {"unfreeze": 20, "epochs": 1, "learning_rate": 0.0001},
        "cache": "off",
    },
}


def config_for(name: str, runs: Path) -> dict:
    return {
        "name": name,
        "seed": 1,
        "data": {
            "train_dir": str(DATA / "train"),
            "val_dir": str(DATA / "validation"),
            "image_size": 224,
            "batch_size": 32,
        },
        "base": BASE,
        "head": HEAD,
        "probe": "off",
        "runtime": {"deterministic": True},  # so one process and two workers can be compared figure for figure
        "output": {"runs_dir": str(runs)},
        **CONFIGS[name],
    }


def run(config: Path, env: dict, workers: int) -> dict:
    command = [sys.executable, "-m", "tlcli", "train", str(config), "--json", "--quiet"] + (
        ["--workers", str(workers)] if workers > 1 else []
    )
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    return {
        "workers": workers,
        "wall_s": round(seconds, 1),
        "val_accuracy": result["final"]["val_accuracy"],
        "val_loss": result["final"]["val_loss"],
        "timings_s": result["timings_s"],
        "devices": result["devices"]["description"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "DISTRIBUTED.md")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    args = parser.parse_args()
    if not WEIGHTS.is_file() or not DATA.is_dir():
        print(f"needs {WEIGHTS} and {DATA}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="tlcli-distributed-"))
    env = {
        **os.environ,
        "KERAS_HOME": str(work / "keras"),
        "TLCLI_CACHE_DIR": str(work / "cache"),
        "PYTHONPATH": str(REPO),
    }
    (work / "keras" / "models").mkdir(parents=True)
    shutil.copy(WEIGHTS, work / "keras" / "models" / WEIGHTS.name)
    results = {}
    for name in args.configs:
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config_for(name, work / "runs" / name)))
        results[name] = [run(path, env, workers) for workers in (1, 2)]
        print(json.dumps({name: results[name]}), flush=True)
    lines = [
        "# One process against two workers (`--workers 2`)",
        "",
        (
            f"Made by `python benchmarks/distributed.py` on {time.strftime('%Y-%m-%d')}: cats_and_dogs_filtered "
            "(2,000 train, 1,000 validation) at 224 px,"
        ),
        (
            "MobileNet alpha 0.25 with real ImageNet weights, batch 32 (the global batch), seed 1, "
            f"`runtime.deterministic: true`, no dropout in the head; {os.cpu_count()} CPU cores, no GPU."
        ),
        (
            "Two workers on two cores share those cores: they cannot be faster than one process. The figures "
            "show the cluster's overhead and that the result agrees."
        ),
        "",
        "| config | workers | wall time (s) | extract/decode (s) | train (s) | val accuracy | val loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for r in rows:
            passed = r["timings_s"].get("extract", r["timings_s"].get("decode", 0.0))
            lines.append(
                f"| {name} | {r['workers']} | {r['wall_s']} | {passed} | {r['timings_s'].get('train')} | "
                f"{r['val_accuracy']:.4f} | {r['val_loss']:.4f} |"
            )
    lines += ["", "Configs: " + "; ".join(f"`{name}`: {json.dumps(CONFIGS[name])}" for name in args.configs), ""]
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
