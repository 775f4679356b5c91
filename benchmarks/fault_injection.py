"""Fault injection for issue 6: SIGKILL `tlcli train` at random moments, resume, check.

    python benchmarks/fault_injection.py --trials 10            # the report's table
    python benchmarks/fault_injection.py --trials 2 --quick     # the CI version (tests/test_resume.py)

1. Data: a 40-image, two-class subset of ../shared/datasets/hymenoptera (20
   per class), or generated images when ../shared is absent.
2. A two-phase config (head, then fine-tuning the top of the base) with
   `runtime.deterministic: true`. The base is MobileNet (alpha 0.25) with the
   real ImageNet weights from ../shared/weights, put in a temporary
   KERAS_HOME; without ../shared, a SmallCNN trained by an earlier run
   (`base: {run: ...}`); with --quick, a frozen, randomly initialised SmallCNN
   whose top is then fine-tuned (no extra process), on generated images.
3. One uninterrupted run: its final metrics, its history, and when (after
   run.json appears) each epoch ended.
4. Each trial starts the same training, SIGKILLs it at a moment spread over
   the whole run (start-up, both phases, saving: stratified over the stretch
   before epoch 1 and after each epoch, anchored on history.csv so a slower
   machine still hits every part), resumes it with
   `tlcli train --resume RUN_DIR`, and checks: the resume exits 0 and the run
   is completed; model.keras and metrics.json load; history.csv's epochs are
   1..N, contiguous, without duplicates, with the uninterrupted run's phases;
   the final validation accuracy (and loss) equal the uninterrupted run's.

Prints a Markdown table and writes `results.json` in the work folder. Exit
code 0 when every trial passes, else 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HYMENOPTERA = SHARED / "datasets" / "hymenoptera"
MOBILENET = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


def tlcli_command() -> list[str]:
    exe = Path(sys.executable).with_name("tlcli")
    return [str(exe)] if exe.is_file() else [sys.executable, "-c", "from tlcli.cli import main; main()"]


# ----------------------------------------------------------------------------- set-up


def make_data(folder: Path, per_class: int, size: int, quick: bool) -> str:
    if folder.is_dir():
        shutil.rmtree(folder)
    if HYMENOPTERA.is_dir() and not quick:
        for name in ("ants", "bees"):
            files = sorted((HYMENOPTERA / "train" / name).iterdir())[:per_class]
            (folder / name).mkdir(parents=True)
            for path in files:
                shutil.copy(path, folder / name / path.name)
        return f"hymenoptera subset ({per_class} per class)"
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(("ants", "bees")):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            band = slice(size // 3, 2 * size // 3)
            if label == 0:
                image[band, :, 0] = 230
            else:
                image[:, band, 1] = 230
            Image.fromarray(image).save(folder / name / f"{name}_{i:03d}.png")
    return f"generated ({per_class} per class)"


def run_cli(args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        tlcli_command() + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout
    )


def make_config(work: Path, data: Path, env: dict, args) -> tuple[Path, str]:
    import yaml

    config = {
        "name": "fi",
        "seed": 7,
        "data": {"dir": str(data), "image_size": args.size, "batch_size": 8, "val_split": 0.3},
        "head": {"dropout": 0.2},
        "train": {"epochs": args.epochs, "learning_rate": 0.001},
        "fine_tune": {"epochs": args.epochs, "unfreeze": 6, "learning_rate": 0.0001},
        "runtime": {"deterministic": not args.no_determinism, "device": "cpu"},
        "cache": args.cache,
        "output": {"runs_dir": str(work / "runs")},
    }
    if args.quick:
        # No pretrained base to download or train: a frozen, randomly initialised SmallCNN, then its top layers
        # fine-tuned.
        config["base"] = {
            "name": "SmallCNN",
            "weights": "none",
            "args": {"filters": 8, "blocks": 2},
            "trainable": "none",
        }
        config["fine_tune"]["unfreeze"] = 3
        base = "SmallCNN (random, frozen, then its top fine-tuned)"
    elif MOBILENET.is_file():
        models = Path(env["KERAS_HOME"]) / "models"
        models.mkdir(parents=True, exist_ok=True)
        shutil.copy(MOBILENET, models / MOBILENET.name)
        config["base"] = {"name": "MobileNet", "weights": "imagenet", "args": {"alpha": 0.25}, "trainable": "none"}
        base = "MobileNet alpha 0.25, ImageNet weights"
    else:
        source = {
            "name": "fi-source",
            "seed": 1,
            "data": config["data"],
            "base": {"name": "SmallCNN", "weights": "none", "args": {"filters": 8, "blocks": 2}},
            "train": {"epochs": 3, "learning_rate": 0.01},
            "output": {"runs_dir": str(work / "source-runs")},
        }
        source_path = work / "source.yaml"
        source_path.write_text(yaml.safe_dump(source))
        done = run_cli(["train", source_path, "--json", "--quiet"], env)
        if done.returncode != 0:
            raise SystemExit(f"source run failed: {done.stderr.strip()}")
        config["base"] = {"run": json.loads(done.stdout)["run_dir"], "trainable": "none"}
        config["fine_tune"]["unfreeze"] = 3
        base = "SmallCNN from an earlier run"
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, base


# ----------------------------------------------------------------------------- one run


def start(config: Path, env: dict, runs_dir: Path) -> tuple[subprocess.Popen, Path, float]:
    """Start training; return the process, its run folder and when run.json appeared."""
    before = set(runs_dir.iterdir()) if runs_dir.is_dir() else set()
    process = subprocess.Popen(
        tlcli_command() + ["train", str(config), "--runs-dir", str(runs_dir), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if runs_dir.is_dir():
            new = [p for p in runs_dir.iterdir() if p not in before and (p / "run.json").is_file()]
            if new:
                return process, new[0], time.monotonic()
        if process.poll() is not None:
            raise SystemExit(
                f"training exited with {process.returncode} before creating a run folder: "
                f"{process.stderr.read().strip()}"
            )
        time.sleep(0.005)
    process.kill()
    raise SystemExit("no run folder after 300 s")


def history_rows(run_dir: Path) -> list[dict]:
    try:
        with open(run_dir / "history.csv", newline="") as stream:
            return list(csv.DictReader(stream))
    except OSError:
        return []


def baseline(config: Path, env: dict, runs_dir: Path) -> dict:
    """An uninterrupted run, with the time (after run.json) at which each epoch ended."""
    process, run_dir, t0 = start(config, env, runs_dir)
    ends: list[float] = []
    while process.poll() is None:
        rows = len(history_rows(run_dir))
        while len(ends) < rows:
            ends.append(time.monotonic() - t0)
        time.sleep(0.005)
    total = time.monotonic() - t0
    if process.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed ({process.returncode}): {process.stderr.read().strip()}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = history_rows(run_dir)
    return {
        "run_dir": str(run_dir),
        "seconds_after_run_json": round(total, 2),
        "epoch_ends": [round(t, 2) for t in ends],
        "metrics": metrics,
        "history": [(int(r["epoch"]), r["phase"]) for r in rows],
    }


def where(run_dir: Path) -> str:
    """What the kill interrupted, from what the run folder holds."""
    from tlcli.runs.checkpoints import newest_state

    state = newest_state(run_dir)
    if (run_dir / "metrics.json").is_file():
        return "after metrics.json"
    if state is None:
        return "before epoch 1 (start-up, decode or features)"
    if state.phase == "fine_tune" and state.phase_epoch >= state.phase_epochs:
        return f"after the last epoch (saving), {state.epoch} done"
    if state.phase == "train" and state.phase_epoch >= state.phase_epochs:
        return f"between phases / fine_tune epoch 1, {state.epoch} done"
    return f"{state.phase} epoch {state.phase_epoch + 1}, {state.epoch} done"


def check_run(run_dir: Path, reference: dict) -> dict:
    import keras

    out: dict = {}
    try:
        keras.models.load_model(run_dir / "model.keras", compile=False, safe_mode=True)
        out["model_loads"] = True
    except Exception as exc:  # noqa: BLE001
        out["model_loads"] = f"{type(exc).__name__}: {exc}"
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        out["metrics_loads"] = True
    except Exception as exc:  # noqa: BLE001
        metrics = {}
        out["metrics_loads"] = f"{type(exc).__name__}: {exc}"
    rows = history_rows(run_dir)
    epochs = [int(r["epoch"]) for r in rows]
    out["history_contiguous"] = epochs == list(range(1, len(epochs) + 1))
    out["history_like_reference"] = [(int(r["epoch"]), r["phase"]) for r in rows] == [
        tuple(x) for x in reference["history"]
    ]
    final = metrics.get("final", {})
    out["val_accuracy"] = final.get("val_accuracy")
    out["val_loss"] = final.get("val_loss")
    out["same_val_accuracy"] = final.get("val_accuracy") == reference["metrics"]["final"]["val_accuracy"]
    out["same_val_loss"] = final.get("val_loss") == reference["metrics"]["final"]["val_loss"]
    record = json.loads((run_dir / "run.json").read_text())
    out["status"] = record["status"]
    out["resumes"] = len(record.get("resumes") or [])
    return out


def trial(
    index: int, moment: tuple[int, float], config: Path, env: dict, runs_dir: Path, reference: dict, deterministic: bool
) -> dict:
    """Kill `moment[1]` seconds after the run's `moment[0]`-th epoch ended (0: after run.json appeared)."""
    after_epochs, delay = moment
    process, run_dir, t0 = start(config, env, runs_dir)
    anchor = t0
    while after_epochs and process.poll() is None and len(history_rows(run_dir)) < after_epochs:
        time.sleep(0.002)
    if after_epochs:
        anchor = time.monotonic()
    wait = anchor + delay - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    finished_first = process.poll() is not None
    if not finished_first:
        os.kill(process.pid, signal.SIGKILL)
    killed_at = time.monotonic() - t0
    process.wait()
    result = {
        "trial": index,
        "after_epoch": after_epochs,
        "delay_s": round(delay, 2),
        "kill_s": round(killed_at, 2),
        "killed": not finished_first,
        "killed_in": where(run_dir) if not finished_first else "finished before the kill",
    }
    result["history_rows_at_kill"] = len(history_rows(run_dir))
    if finished_first:
        result |= check_run(run_dir, reference)
        result["resume_exit"] = None
    else:
        clock = time.monotonic()
        resumed = run_cli(["train", "--resume", run_dir, "--quiet"], env)
        result["resume_exit"] = resumed.returncode
        result["resume_s"] = round(time.monotonic() - clock, 2)
        if resumed.returncode != 0:
            result["resume_error"] = resumed.stderr.strip().splitlines()[-1:] if resumed.stderr.strip() else ""
        record = json.loads((run_dir / "run.json").read_text())
        result["resumed_from_epoch"] = (record.get("resumes") or [{}])[-1].get("from_epoch")
        result |= check_run(run_dir, reference)
    checks = [
        result.get("resume_exit") in (0, None),
        result["status"] == "completed",
        result["model_loads"] is True,
        result["metrics_loads"] is True,
        result["history_contiguous"],
        result["history_like_reference"],
    ]
    if deterministic:
        checks += [result["same_val_accuracy"]]
    result["ok"] = all(checks)
    result["run_dir"] = str(run_dir)
    return result


def moments(count: int, reference: dict, rng: random.Random) -> list[tuple[int, float]]:
    """Kill moments spread over the run, anchored on its progress (so a slower machine still hits every part).

    Stratified over the N+1 stretches of the run: before epoch 1 (start-up,
    decoding, features: a random time after run.json appears), and after each
    of the N epochs (a random time into the next epoch or, after the last, into
    saving), so the trials cover both phases whatever the machine's speed.
    """
    ends = reference["epoch_ends"]
    steps = sorted(b - a for a, b in zip(ends, ends[1:])) or [0.5]
    epoch = steps[len(steps) // 2]
    slots = len(ends) + 1
    out = []
    for i in range(count):
        slot = min(slots - 1, int((i + rng.random()) * slots / count))
        out.append((0, rng.random() * ends[0]) if slot == 0 else (slot, rng.random() * 1.5 * epoch))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary folder)")
    parser.add_argument(
        "--quick", action="store_true", help="generated 32 px images and a SmallCNN base (the CI version)"
    )
    parser.add_argument(
        "--cache",
        default=None,
        choices=["auto", "memory", "off"],
        help="train on cached features (auto; memory with --quick) or on images (off)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs per phase (default 6, 3 with --quick)")
    parser.add_argument("--size", type=int, default=None, help="image size (default 64, 32 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument(
        "--no-determinism", action="store_true", help="runtime.deterministic off (then final metrics are not compared)"
    )
    parser.add_argument(
        "--cost", action="store_true", help="also time an uninterrupted run with determinism off (its cost)"
    )
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (3 if args.quick else 6)
    args.size = args.size or (32 if args.quick else 64)
    args.cache = args.cache or ("memory" if args.quick else "auto")
    work = args.work or Path(tempfile.mkdtemp(prefix="tlcli-fault-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["KERAS_HOME"] = str(work / "keras_home")
    env.setdefault("TLCLI_CACHE_DIR", str(work / "cache"))
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    Path(env["KERAS_HOME"]).mkdir(parents=True, exist_ok=True)
    data_note = make_data(work / "data", 20, args.size, args.quick)
    config, base = make_config(work, work / "data", env, args)
    print(
        (
            f"work folder: {work}\ndata: {data_note}; base: {base}; cache: {args.cache}; "
            f"{args.epochs}+{args.epochs} epochs at {args.size} px; deterministic: {not args.no_determinism}"
        ),
        flush=True,
    )

    reference = baseline(config, env, work / "reference-runs")
    final = reference["metrics"]["final"]
    print(
        (
            f"uninterrupted: {len(reference['history'])} epochs, val_accuracy {final['val_accuracy']}, val_loss "
            f"{final['val_loss']}, {reference['seconds_after_run_json']} s after run.json; epoch ends at "
            f"{reference['epoch_ends']}"
        ),
        flush=True,
    )
    if args.quick:  # no second run: every run computes its features afresh (cache: memory), so timelines match
        again, repeat_equal = reference, None
    else:
        again = baseline(config, env, work / "reference-runs")
        repeat_equal = again["metrics"]["final"] == reference["metrics"]["final"]
        print(f"a second uninterrupted run gives the same final metrics: {repeat_equal}", flush=True)
    results = {
        "config": str(config),
        "base": base,
        "data": data_note,
        "cache": args.cache,
        "deterministic": not args.no_determinism,
        "reference": reference,
        "repeat_equal": repeat_equal,
        "trials": [],
    }
    if args.cost:
        import yaml

        raw = yaml.safe_load(config.read_text())
        raw["runtime"]["deterministic"] = not raw["runtime"]["deterministic"]
        other = work / "config-other-determinism.yaml"
        other.write_text(yaml.safe_dump(raw))
        timings = {}
        for label, path in (
            ("on" if not args.no_determinism else "off", config),
            ("off" if not args.no_determinism else "on", other),
        ):
            walls = []
            for _ in range(2):
                done = run_cli(["train", path, "--json", "--quiet", "--runs-dir", work / "cost-runs"], env)
                walls.append(json.loads(done.stdout)["timings_s"]["train"])
            timings[label] = walls
        results["determinism_train_seconds"] = timings
        print(f"phase time (train, s) with determinism on: {timings['on']}, off: {timings['off']}", flush=True)

    rng = random.Random(args.seed)
    # The second run's timeline: like every trial's, its features come from the cache.
    for index, moment in enumerate(moments(args.trials, again, rng), 1):
        outcome = trial(index, moment, config, env, work / "runs", reference, not args.no_determinism)
        results["trials"].append(outcome)
        print(
            json.dumps({k: outcome[k] for k in ("trial", "kill_s", "killed_in", "resume_exit", "val_accuracy", "ok")}),
            flush=True,
        )

    print()
    print(
        "| trial | kill (s after run.json) | killed during | resumed from epoch | resume exit | history ok | "
        "model.keras loads | metrics.json loads | val_accuracy | = uninterrupted | ok |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results["trials"]:
        print(
            f"| {r['trial']} | {r['kill_s']} | {r['killed_in']} | {r.get('resumed_from_epoch', '-')} | "
            f"{r.get('resume_exit')} | {r['history_contiguous'] and r['history_like_reference']} | "
            f"{r['model_loads'] is True} | {r['metrics_loads'] is True} | {r['val_accuracy']} | "
            f"{r['same_val_accuracy']} | {'yes' if r['ok'] else 'NO'} |"
        )
    passed = sum(r["ok"] for r in results["trials"])
    print(f"\n{passed}/{len(results['trials'])} trials passed; uninterrupted val_accuracy {final['val_accuracy']}")
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return 0 if passed == len(results["trials"]) else 1


if __name__ == "__main__":
    sys.exit(main())
