"""Issue 30's GPU check: is the GPU seen and used, does mixed precision hold accuracy, how fast, how much memory.

    pip install -e ".[gpu]"
    python benchmarks/gpu_check.py                          # on a GPU machine: writes benchmarks/GPU.md + gpu.json
    python benchmarks/gpu_check.py --dry --out /tmp/GPU.md  # the same code on the CPU, tiny generated data

Needs only the repository, the two weights files in ../shared/weights and ../shared/datasets/eurosat (train/ and
test/). Three processes, each importing TensorFlow once:

1. the probe: the GPUs TensorFlow sees (name, compute capability) and the CUDA build it was built with;
2. one GPU (the first visible; `CUDA_VISIBLE_DEVICES` narrows it): four runs of `tlcli.train` in-process on eurosat
   with MobileNetV2 1.0 (ImageNet, 224 px; the CPU-only data-trust step off): the frozen base (`base: {name:
   MobileNetV2}`, features extracted once, the head trained on them) and the fine-tuning phase
   (`fine_tune: {when: always}`: the defaults, run whatever the head), each with
   `runtime.mixed_precision` off and on, each on an empty feature cache. After each, the run's `devices`
   (metrics.json) and the peak GPU memory (`tf.config.experimental.get_memory_info`, reset before every run) say
   where it trained; after them, a matmul's output tensor (`.device`) says where TensorFlow places ops;
3. all GPUs, when there are several: the fine-tuning run under the MirroredStrategy tlcli picks for several GPUs.

Reported: images per second of extraction (`cache.extracted / cache.seconds`) and of fine-tuning (training images x
fine-tuning epochs / the phase's seconds in history.csv, and without its first epoch, which traces the step), test
accuracy against the CPU figures of benchmarks/FINETUNE.md and between precisions, within the 95% band of two
accuracies on the same test images, and the total wall time against the 4-minute budget.

`--dry` runs the same workloads and functions on the CPU with generated images (3 classes; 8 training, 8 validation
and 8 test images at 32 px, one batch each: no shorter last batch to trace again; MobileNet 0.25 with random weights,
frozen, 1 + 2 epochs) in two processes at the same time: the probe with the one-device workloads (with no GPU,
nothing waits on its answer: one TensorFlow start fewer), and the several-device step under `TLCLI_LOGICAL_CPUS=2`
(tlcli's switch that mirrors over two logical CPU devices, the several-GPU code path); accuracies and speeds are not
judged there.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared"
BUDGET_S = 240.0
# Test accuracies on eurosat's 2,000 test images, MobileNetV2 1.0 at 224 px on the CPU (benchmarks/FINETUNE.md,
# seed 1): the `head` row (the frozen base) and `ft_80` (fine_tune's defaults since they were measured).
CPU_REFERENCE = {"frozen": 0.8980, "fine_tune": 0.9325}
WORKLOADS = (("frozen", "off"), ("frozen", "on"), ("fine_tune", "off"), ("fine_tune", "on"))
# The data-trust step (near-duplicates, label suspects) runs on the CPU after extraction, the same on any device:
# off here, so five runs fit the 4-minute budget with the GPU's work.
REAL_CONFIG = {"base": {"name": "MobileNetV2"}, "data": {"leakage": "off", "label_suspects": False}}
DRY_CONFIG = {
    "seed": 1,
    "data": {"image_size": 32, "batch_size": 8, "leakage": "off", "label_suspects": False},
    "base": {"name": "MobileNet", "args": {"alpha": 0.25}, "weights": "none", "trainable": "none"},
    "train": {"epochs": 1, "l2": 0.0},
    "probe": "off",
    "output": {"report": False},
}
DRY_FINE_TUNE = {"epochs": 2, "unfreeze": 6, "when": "always"}  # the phase under check runs, whatever the head
DRY_IMAGES = (3, 3, 2)  # per class, in each of train, validation and test: 8 images a split, one batch


# ----------------------------------------------------------------------------- child processes


def probe() -> dict:
    """The GPUs TensorFlow sees, and what it was built with."""
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device) or {}
        gpus.append({"name": device.name, "device_name": details.get("device_name"), **_capability(details)})
    build = tf.sysconfig.get_build_info()
    return {
        "tensorflow": tf.__version__,
        "built_with_cuda": tf.test.is_built_with_cuda(),
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "gpus": gpus,
    }


def _capability(details: dict) -> dict:
    capability = details.get("compute_capability")
    return {"compute_capability": ".".join(map(str, capability)) if capability else None}


def placement() -> dict:
    """Where TensorFlow puts an op by default (GPU:0 when it sees a GPU), from the output tensor's `.device`."""
    import tensorflow as tf

    x = tf.random.uniform((256, 256))
    return {"matmul_output_device": tf.matmul(x, x).device}


def memory_devices() -> list[str]:
    import tensorflow as tf

    return [f"GPU:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))]


def reset_memory(devices: list[str]) -> None:
    import tensorflow as tf

    for device in devices:
        tf.config.experimental.reset_memory_stats(device)


def peak_memory_mb(devices: list[str]) -> dict[str, float]:
    import tensorflow as tf

    return {d: round(tf.config.experimental.get_memory_info(d)["peak"] / 2**20, 1) for d in devices}


def run_workload(spec: dict, work: Path) -> dict:
    """One `tlcli.train` in this process on an empty feature cache; what the report needs from its run."""
    import yaml

    from tlcli import train

    name = f"{spec['kind']}-mp-{spec['mixed_precision']}" + ("-all" if spec.get("all_devices") else "")
    cache = work / "caches" / name
    cache.mkdir(parents=True)
    os.environ["TLCLI_CACHE_DIR"] = str(cache)  # an empty cache: every run extracts its own features
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"name": f"gpu-check-{name}", **spec["config"]}))
    devices = memory_devices()
    reset_memory(devices)
    began = time.perf_counter()
    result = train(config, runs_dir=work / "runs")
    seconds = time.perf_counter() - began
    metrics = result.metrics.to_dict()
    history = list(csv.DictReader((result.run_dir / "history.csv").read_text().splitlines()))
    return {
        "name": name,
        **{k: spec[k] for k in ("kind", "mixed_precision")},
        "all_devices": bool(spec.get("all_devices")),
        "wall_s": round(seconds, 1),
        "devices": metrics.get("devices"),
        "peak_gpu_memory_mb": peak_memory_mb(devices),
        "images": metrics.get("images"),
        "cache": metrics.get("cache"),
        "extract_images_per_s": _rate((metrics.get("cache") or {}).get("extracted"), (metrics.get("cache") or {})),
        "fine_tune": fine_tune_speed(history, (metrics.get("images") or {}).get("train")),
        "test_accuracy": (metrics.get("final") or {}).get("test_accuracy"),
        "val_accuracy": (metrics.get("final") or {}).get("val_accuracy"),
        "phases_kept": {phase: value.get("kept") for phase, value in (metrics.get("phases") or {}).items()},
        "run_dir": str(result.run_dir),
    }


def _rate(images, cache: dict) -> float | None:
    seconds = cache.get("seconds")
    return round(images / seconds, 1) if images and seconds else None


def fine_tune_speed(history: list[dict], train_images: int | None) -> dict | None:
    """Images per second of the fine-tuning phase: all its epochs, and without the first (which traces the step)."""
    seconds = [float(row["seconds"]) for row in history if row.get("phase") == "fine_tune"]
    if not seconds or not train_images:
        return None
    later = seconds[1:]
    return {
        "epochs": len(seconds),
        "seconds": round(sum(seconds), 2),
        "images_per_s": round(train_images * len(seconds) / sum(seconds), 1),
        "images_per_s_after_first": round(train_images * len(later) / sum(later), 1) if later else None,
    }


def child(args: argparse.Namespace) -> int:
    """A child process: `probe`, or the workloads of `--plan` (a JSON list of specs) in this one process (after the
    probe with `--probe-too`)."""
    if args.child == "probe":
        print(json.dumps(probe()))
        return 0
    specs = json.loads(Path(args.plan).read_text())
    work = Path(args.work)
    report = {"seen": probe()} if args.probe_too else {}  # before tlcli sets the devices up
    report["runs"] = []
    for spec in specs:
        try:
            report["runs"].append(run_workload(spec, work))
        except Exception as exc:  # noqa: BLE001  (a failed workload is a result: the report names it)
            report["runs"].append({"name": spec["kind"], **spec, "error": f"{type(exc).__name__}: {exc}"})
    report["placement"] = placement()  # after the runs: tlcli sets the devices up first (TLCLI_LOGICAL_CPUS)
    print(json.dumps(report, default=str))
    return 0


# ----------------------------------------------------------------------------- the parent


def spawn(
    mode: str, env: dict, work: Path, plan: list[dict] | None, timeout: float, probe_too: bool = False
) -> tuple[dict, float]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--work", str(work)]
    command += ["--probe-too"] if probe_too else []
    if plan is not None:
        plan_file = work / f"plan-{mode}.json"
        plan_file.write_text(json.dumps(plan))
        command += ["--plan", str(plan_file)]
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    seconds = round(time.perf_counter() - began, 1)
    (work / f"{mode}.stderr").write_text(done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-12:])
        raise SystemExit(f"gpu_check: the {mode} process failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1]), seconds


def plans(dry: bool, data: Path) -> tuple[list[dict], list[dict]]:
    """The one-device workloads, and the all-devices one."""
    base = DRY_CONFIG if dry else REAL_CONFIG
    device = "cpu" if dry else "gpu"
    one = []
    for kind, precision in WORKLOADS:
        config = json.loads(json.dumps(base))
        config.setdefault("data", {})["dir"] = str(data)
        config["runtime"] = {"device": device, "mixed_precision": precision}
        if kind == "fine_tune":
            config["fine_tune"] = dict(DRY_FINE_TUNE) if dry else {"when": "always"}  # on eurosat `auto` runs it too
        one.append({"kind": kind, "mixed_precision": precision, "config": config})
    every = json.loads(json.dumps(one[2]))
    every["config"]["runtime"]["mixed_precision"] = "auto"
    every.update(mixed_precision="auto", all_devices=True)
    return one, [every]


def make_dry_data(root: Path) -> Path:
    """3 classes of coloured noise, 40 px PNGs in `train/` and `test/`: 8 training, 8 validation (the hash split of
    `train/`, as for eurosat) and 8 test images in all, one batch of `DRY_CONFIG`'s 8 each, so each compiled function
    (extraction, a training step, a prediction) is traced once per run, never again for a shorter last batch."""
    import numpy as np

    sys.path.insert(0, str(REPO))  # this repository's tlcli, as the child processes get it (PYTHONPATH)
    from tlcli.data.splits import split_bucket

    val_split = 0.2  # data.val_split's default, which the dry runs keep
    rng = np.random.default_rng(0)
    for label, count in enumerate(DRY_IMAGES):
        wanted = {"train": count, "val": count}
        for index in range(1000):
            name = f"{index:03d}.png"
            side = "val" if split_bucket(f"class_{label}/{name}") < val_split else "train"
            if wanted[side]:
                wanted[side] -= 1
                _noise_png(rng, label, root / "train" / f"class_{label}" / name)
            if not any(wanted.values()):
                break
        for index in range(count):
            _noise_png(rng, label, root / "test" / f"class_{label}" / f"{index:03d}.png")
    return root


def _noise_png(rng, label: int, path: Path) -> None:
    import numpy as np
    from PIL import Image

    pixels = rng.integers(0, 90, (40, 40, 3)) + np.array([80 * label, 40, 160 - 80 * label])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(path)


def environment(work: Path, weights: Path | None) -> dict[str, str]:
    keras_home = work / "keras"
    (keras_home / "models").mkdir(parents=True)
    for file in sorted(weights.glob("*.h5")) if weights is not None else ():
        shutil.copy(file, keras_home / "models" / file.name)
    env = {**os.environ, "KERAS_HOME": str(keras_home), "MPLCONFIGDIR": str(work / "mpl"), "MPLBACKEND": "Agg"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    src = str(REPO)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def one_gpu(env: dict, work: Path, plan: list[dict], timeout: float) -> tuple[dict, dict, dict]:
    """The probe (every visible GPU), then the one-device workloads on the first GPU: what TensorFlow sees, the
    workloads' report, and each process's seconds."""
    seen, probe_s = spawn("probe", env, work, None, timeout)
    if not seen["gpus"]:
        raise SystemExit(
            "gpu_check: TensorFlow sees no GPU (built with CUDA: "
            f"{seen['built_with_cuda']}); install the gpu extra (pip install -e '.[gpu]') and check the "
            "driver (nvidia-smi), or run --dry for the CPU code path"
        )
    one, one_s = spawn("one", {**env, "CUDA_VISIBLE_DEVICES": first_gpu(env)}, work, plan, timeout)
    return seen, one, {"probe": probe_s, "one device": one_s}


def dry_processes(
    env: dict, work: Path, one_plan: list[dict], all_plan: list[dict], timeout: float
) -> tuple[dict, dict, dict, dict]:
    """--dry's two processes, side by side: the probe with the one-device workloads (with no GPU nothing waits on the
    probe's answer: one TensorFlow start fewer), and the several-device workload over two logical CPU devices. On the
    CPU they measure nothing, so they may share it (a real run keeps its processes apart: they time the GPU). What
    TensorFlow sees, the two reports, and each process's seconds."""
    every_env = {**env, "TLCLI_LOGICAL_CPUS": "2", "MPLCONFIGDIR": str(work / "mpl-all")}
    with ThreadPoolExecutor(max_workers=1) as pool:
        every_job = pool.submit(spawn, "all", every_env, work, all_plan, timeout)
        one, one_s = spawn("one", env, work, one_plan, timeout, probe_too=True)
        every, every_s = every_job.result()
    return one["seen"], one, every, {"probe and one device": one_s, "all devices (at the same time)": every_s}


def first_gpu(env: dict) -> str:
    visible = env.get("CUDA_VISIBLE_DEVICES")
    return visible.split(",")[0].strip() if visible else "0"


def check(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tlcli-gpu-check-"))
    try:
        data = make_dry_data(work / "data") if args.dry else Path(args.data)
        if not args.dry and not (data / "train").is_dir():
            raise SystemExit(f"gpu_check: {data}: eurosat not found (expected train/ and test/); see --data")
        env = environment(work, None if args.dry else Path(args.weights))  # --dry: random weights, none copied
        one_plan, all_plan = plans(args.dry, data)
        if args.dry:
            seen, one, every, seconds = dry_processes(env, work, one_plan, all_plan, args.timeout)
        else:
            seen, one, seconds = one_gpu(env, work, one_plan, args.timeout)
            every, seconds["all devices"] = None, None
            if len(seen["gpus"]) > 1:
                every, seconds["all devices"] = spawn("all", env, work, all_plan, args.timeout)
        return {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "dry": args.dry,
            "data": str(data) if not args.dry else "generated (3 classes, 8 training, 8 validation, 8 test images)",
            "loadavg": _loadavg(),
            "seen": seen,
            "placement": one["placement"],
            "runs": one["runs"] + (every["runs"] if every else []),
            "process_seconds": seconds,
            "wall_s": round(time.perf_counter() - started, 1),
        }
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _loadavg() -> str | None:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return None


# ----------------------------------------------------------------------------- judging and writing


def noise_band(accuracy: float, n: int) -> float:
    """Half-width of the 95% band of the difference of two accuracies near `accuracy` on `n` test images each."""
    return 1.96 * math.sqrt(2 * accuracy * (1 - accuracy) / n)


def verdicts(report: dict) -> list[tuple[str, str, str]]:
    """(check, result, detail) rows; accuracy and the time budget are judged on a real run only."""
    runs, dry = report["runs"], report["dry"]
    ok = [r for r in runs if "error" not in r]
    rows = [("every workload ran", "PASS" if len(ok) == len(runs) else "FAIL", f"{len(ok)} of {len(runs)}")]
    if dry:
        rows.append(("GPU seen", "n/a (--dry)", f"{len(report['seen']['gpus'])} GPU(s) visible"))
    else:
        gpu_runs = [r for r in ok if (r.get("devices") or {}).get("device") == "gpu"]
        used = [r for r in gpu_runs if any(v > 0 for v in r["peak_gpu_memory_mb"].values())]
        on_gpu = "GPU" in report["placement"]["matmul_output_device"]
        rows.append(("GPU seen", "PASS" if report["seen"]["gpus"] else "FAIL", _gpu_names(report)))
        rows.append(
            ("ops placed on the GPU", "PASS" if on_gpu else "FAIL", report["placement"]["matmul_output_device"])
        )
        rows.append(("every run trained on the GPU", "PASS" if len(used) == len(ok) else "FAIL", f"{len(used)} runs"))
        rows += accuracy_verdicts(ok)
        rows.append(("within 4 minutes", "PASS" if report["wall_s"] <= BUDGET_S else "FAIL", f"{report['wall_s']} s"))
    several = [r for r in ok if r["all_devices"]]
    if several:
        devices = several[0]["devices"] or {}
        mirrored = devices.get("strategy") == "mirrored" and devices.get("replicas", 1) > 1
        detail = f"{devices.get('description')}, {devices.get('replicas')} replicas"
        rows.append(("MirroredStrategy over every device", "PASS" if mirrored else "FAIL", detail))
    return rows


def accuracy_verdicts(runs: list[dict]) -> list[tuple[str, str, str]]:
    rows = []
    by = {(r["kind"], r["mixed_precision"]): r for r in runs if not r["all_devices"]}
    for kind in ("frozen", "fine_tune"):
        off, on = by.get((kind, "off")), by.get((kind, "on"))
        if not off or not on or off["test_accuracy"] is None or on["test_accuracy"] is None:
            continue
        n = off["images"]["test"]
        band = noise_band(CPU_REFERENCE[kind], n)
        gap = abs(on["test_accuracy"] - off["test_accuracy"])
        rows.append(
            (
                f"{kind}: mixed precision on vs off",
                "PASS" if gap <= band else "FAIL",
                f"{on['test_accuracy']:.4f} vs {off['test_accuracy']:.4f} (band +-{band:.4f})",
            )
        )
        for run in (off, on):
            gap = abs(run["test_accuracy"] - CPU_REFERENCE[kind])
            rows.append(
                (
                    f"{kind}, mixed precision {run['mixed_precision']}: vs the CPU",
                    "PASS" if gap <= band else "FAIL",
                    f"{run['test_accuracy']:.4f} vs {CPU_REFERENCE[kind]:.4f} (band +-{band:.4f})",
                )
            )
    return rows


def _gpu_names(report: dict) -> str:
    gpus = report["seen"]["gpus"]
    return ", ".join(f"{g['device_name'] or g['name']} (compute capability {g['compute_capability']})" for g in gpus)


def render(report: dict) -> str:
    seen = report["seen"]
    title = "GPU check (--dry: the CPU code path on generated data)" if report["dry"] else "GPU check"
    out = [f"# {title}", "", f"Generated by `python benchmarks/gpu_check.py{' --dry' if report['dry'] else ''}`.", ""]
    out += [
        f"- Date: {report['date']}; `/proc/loadavg` at the end: `{report['loadavg']}`",
        f"- TensorFlow {seen['tensorflow']} (built with CUDA: {seen['built_with_cuda']}, CUDA {seen['cuda_version']},"
        f" cuDNN {seen['cudnn_version']})",
        f"- GPUs seen: {len(seen['gpus'])}" + (f": {_gpu_names(report)}" if seen["gpus"] else ""),
        f"- Op placement: a matmul's output tensor is on `{report['placement']['matmul_output_device']}`",
        f"- Data: {report['data']}",
        f"- Total wall time {report['wall_s']} s (budget {BUDGET_S:g} s on a GPU); per process: "
        + ", ".join(f"{k} {v} s" for k, v in report["process_seconds"].items() if v is not None),
        "",
        "## Checks",
        "",
        "| check | result | detail |",
        "| --- | --- | --- |",
    ]
    out += [f"| {check} | **{result}** | {detail} |" for check, result, detail in verdicts(report)]
    out += [
        "",
        "## Runs",
        "",
        "| run | devices (metrics.json) | wall (s) | extraction (images/s) | fine-tuning (images/s: all epochs / "
        "after the first) | test accuracy | peak GPU memory (MB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in report["runs"]:
        if "error" in run:
            out.append(f"| {run['name']} | failed: {run['error']} | | | | | |")
            continue
        ft = run["fine_tune"]
        speed = f"{ft['images_per_s']} / {_fmt(ft['images_per_s_after_first'])}" if ft else "–"
        memory = ", ".join(f"{d} {v}" for d, v in run["peak_gpu_memory_mb"].items()) or "– (no GPU)"
        out.append(
            f"| {run['name']} | {(run['devices'] or {}).get('description')} | {run['wall_s']} | "
            f"{_fmt(run['extract_images_per_s'])} | {speed} | {_fmt(run['test_accuracy'], 4)} | {memory} |"
        )
    out += [
        "",
        "Accuracy is judged within the 95% band of two accuracies on the same number of test images, around the CPU "
        "figure of benchmarks/FINETUNE.md (frozen base 0.8980, fine-tuning 0.9325, MobileNetV2 1.0, 224 px).",
        "",
    ]
    return "\n".join(out)


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="the same code on the CPU with tiny generated data")
    p.add_argument("--out", default=None, help="the report's path (default benchmarks/GPU.md; required with --dry)")
    p.add_argument("--data", default=str(SHARED / "datasets" / "eurosat"), help="eurosat (train/ and test/)")
    p.add_argument("--weights", default=str(SHARED / "weights"), help="folder holding the weights files (*.h5)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a child process is stopped")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder (runs, logs)")
    p.add_argument("--child", choices=("probe", "one", "all"), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    p.add_argument("--probe-too", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    if args.dry and not args.out:
        raise SystemExit("gpu_check: --dry needs --out PATH (the committed benchmarks/GPU.md is a real run's)")
    out = Path(args.out) if args.out else HERE / "GPU.md"
    report = check(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report))
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    failed = [row for row in verdicts(report) if row[1] == "FAIL"]
    print(f"wrote {out} ({len(failed)} check(s) failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
