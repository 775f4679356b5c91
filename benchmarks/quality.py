"""Issue 12's benchmark: does the smallest config beat a linear probe on its own features?

    python benchmarks/quality.py                          # both datasets, 3 seeds (about 40 minutes on 2 cores)
    python benchmarks/quality.py --sweep                  # also the fine-tuning sweep (more than an hour a dataset on 2
    cores)
    python benchmarks/quality.py --sweep-only --sweep-datasets cats_and_dogs_filtered   # only the sweep, beside
    quality.json's other runs
    python benchmarks/quality.py --datasets hymenoptera --seeds 1
    python benchmarks/quality.py --real-base              # issue 26 on MobileNetV2 1.0 (below): 84 min on 2 cores
    python benchmarks/quality.py --real-base --quick      # its smoke run: 1 seed, 1 fine-tuning epoch (about 15 min)

For hymenoptera and cats_and_dogs_filtered (../shared) in a train/test layout
(the dataset's validation folder is `test/`, never seen in training; tlcli holds
out 20% of `train/` itself), with 3 seeds, each a separate process:

- `smallest`: `base: {name: MobileNet, args: {alpha: 0.25}}` and `data.dir`, nothing else;
- `smallest@before`: the same config at the commit before issue 12 (`--before`, a git
  worktree the harness makes), cats only unless `--before-all`: the wall-time target;
- `fine_tune`: the smallest config plus `fine_tune: {}` (its defaults);
- `probe`: the logistic-regression ceiling (`benchmarks/probe_ceiling.py`, the recipe of the issue);
- `keras`: the plain Keras recipe of `benchmarks/baseline_keras.py` (10 frozen epochs, on all of train/).

Every tlcli run starts on an empty feature cache (its wall time includes the
extraction). Writes `benchmarks/QUALITY.md` and `benchmarks/quality.json`.

`--real-base` runs issue 26's protocol on the base a user would pick, MobileNetV2 1.0 (ImageNet, 224 px), through
`benchmarks/finetune.py` (each row is described there): eurosat with 3 seeds (the smallest config and its probe,
`fine_tune: {}`, the ablation's rows, the plain Keras baseline), hymenoptera and cats with 1 seed (the smallest
config, `fine_tune: {}`, the baseline). It writes `finetune.json` and `FINETUNE.md`; QUALITY.md's last section,
its targets, is computed from `finetune.json` whenever it is present.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import finetune  # noqa: E402  (issue 26's rows on MobileNetV2 1.0)
from run import TRAIN_TEST, describe_machine, measure, train_test_layout, write_keeping_notes  # noqa: E402  (the speed benchmark's measuring, unchanged)

SHARED = REPO.parent / "shared"
DATASETS = TRAIN_TEST
WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
BEFORE = "5d4d794"  # the last commit before issue 12's defaults
# The fine-tuning sweep: the grid (unfreeze 10, 20, 40, all; learning rates 1e-5, 1e-4; without and with
# augmentation: random horizontal flips, which keep the frozen head's phase on cached features, as precomputed flipped
# features), each with every seed; then the exploratory settings tried beside it (higher rates, a longer phase), seed 1
# only.
# The default `fine_tune: {}` (40, 1e-4, no flips) is the `fine_tune` row of the main runs.
SWEEP_GRID = tuple(
    (unfreeze, rate, flip, "")
    for flip in (False, True)
    for unfreeze in ("10", "20", "40", "all")
    for rate in ("1.0e-5", "1.0e-4")
    if (unfreeze, rate, flip) != ("40", "1.0e-4", False)
)
SWEEP_EXTRA = (
    ("40", "3.0e-4", False, ""),
    ("40", "3.0e-4", True, ""),
    ("40", "1.0e-4", False, "max_epochs: 60"),
    ("60", "1.0e-4", False, ""),
    ("20", "3.0e-4", True, ""),
    ("20", "1.0e-3", True, ""),
    ("10", "1.0e-3", True, ""),
)
TIMEOUT = 3600


class Quality:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        (HERE / "work").mkdir(exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="quality-", dir=HERE / "work"))
        self.env = self._environment()
        self.python = sys.executable
        self.results: list[dict] = []
        self.sequence = 0
        self.before_tree = self._before_tree() if args.before and not args.sweep_only else None

    def _environment(self) -> dict[str, str]:
        keras_home = self.work / "keras_home" / "models"
        keras_home.mkdir(parents=True)
        shutil.copyfile(self.args.weights, keras_home / self.args.weights.name)
        env = {
            **os.environ,
            "KERAS_HOME": str(keras_home.parent),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "MPLCONFIGDIR": str(self.work / "mpl"),
        }
        env.pop("PYTHONPATH", None)
        return env

    def _before_tree(self) -> Path:
        tree = self.work / "before"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), self.args.before],
            check=True,
            capture_output=True,
            text=True,
        )
        return tree

    def layout(self, name: str) -> Path:
        return train_test_layout(self.work, self.args.data, name)

    def tlcli(self, dataset: str, seed: int, label: str, sets: list[str], tree: Path | None = None) -> dict:
        data = self.layout(dataset)
        config = self.work / "smallest.yaml"
        config.write_text("base: {name: MobileNet, args: {alpha: 0.25}}\ndata: {dir: .}\n")
        # -P: no current folder on sys.path, so PYTHONPATH alone says which tlcli runs (this checkout, or the one
        # before).
        env = {
            **self.env,
            "TLCLI_CACHE_DIR": str(self.work / "cache" / f"{self.sequence}"),
            "PYTHONPATH": str(tree or REPO),
        }
        command = [
            self.python,
            "-P",
            "-c",
            "from tlcli.cli import main; main()",
            "train",
            str(config),
            "--json",
            "--quiet",
            "--runs-dir",
            str(self.work / "runs"),
            "--set",
            f"data.dir={data}",
            "--set",
            f"seed={seed}",
        ]
        for override in sets:
            command += ["--set", override]
        return self._record(
            dataset, seed, label, command, env, lambda out: (out or {}).get("final", {}).get("test_accuracy")
        )

    def probe(self, dataset: str, seed: int) -> dict:
        command = [self.python, str(HERE / "probe_ceiling.py"), str(self.layout(dataset)), "--seed", str(seed)]
        return self._record(
            dataset,
            seed,
            "probe",
            command,
            {**self.env, "TLCLI_CACHE_DIR": str(self.work / "cache" / "probe")},
            lambda out: (out or {}).get("test_accuracy"),
        )

    def keras(self, dataset: str, seed: int) -> dict:
        data = self.layout(dataset)
        command = [
            self.python,
            str(HERE / "baseline_keras.py"),
            str(data),
            "--train-dir",
            str(data / "train"),
            "--val-dir",
            str(data / "test"),
            "--seed",
            str(seed),
        ]
        return self._record(dataset, seed, "keras", command, self.env, lambda out: (out or {}).get("val_accuracy"))

    def _record(self, dataset: str, seed: int, label: str, command: list[str], env: dict, accuracy) -> dict:
        self.sequence += 1
        run = measure(
            command, env, self.work / "logs", f"{self.sequence:03d}-{dataset}-{label.replace('/', '-')}-{seed}", TIMEOUT
        )
        row = {
            "dataset": dataset,
            "seed": seed,
            "config": label,
            "wall_s": run["wall_s"],
            "peak_mb": run["peak_rss_mb"],
            "test_accuracy": accuracy(run["output"]),
            "returncode": run["returncode"],
            "error": run.get("error"),
        }
        if label.startswith(("smallest", "fine_tune", "sweep")) and run["output"]:
            out = run["output"]
            row |= {
                "epochs": out.get("epochs"),
                "probe": out.get("linear_probe"),
                "timings_s": out.get("timings_s"),
                "val_accuracy": out.get("final", {}).get("val_accuracy"),
            }
        self.results.append(row)
        print(
            (
                f"[{dt.datetime.now():%H:%M:%S}] {dataset:24} {label:18} seed {seed}  test {row['test_accuracy']} "
                f" {row['wall_s']:.1f} s  {row['peak_mb']} MB"
            )
            + (f"  ERROR {row['error'][-200:]}" if row["error"] else ""),
            flush=True,
        )
        self.write()
        return row

    def plan(self) -> None:
        if self.args.sweep_only:
            self.sweep()
            return
        for dataset in self.args.datasets:
            for seed in self.args.seeds:
                self.tlcli(dataset, seed, "smallest", [])
                if self.before_tree is not None and (self.args.before_all or dataset == "cats_and_dogs_filtered"):
                    self.tlcli(dataset, seed, "smallest@before", [], tree=self.before_tree)
                self.tlcli(dataset, seed, "fine_tune", ["fine_tune={}"])
                self.probe(dataset, seed)
                if not self.args.no_keras:
                    self.keras(dataset, seed)
        if self.args.sweep:
            self.sweep()

    def sweep(self) -> None:
        settings = [(setting, self.args.seeds) for setting in SWEEP_GRID] + [
            (setting, self.args.seeds[:1]) for setting in SWEEP_EXTRA
        ]
        settings.sort(
            key=lambda item: item[0][0] == "all" and item[0][2]
        )  # the slowest (every layer, flipped images each epoch) last
        for dataset in self.args.sweep_datasets or self.args.datasets:
            for (unfreeze, rate, flip, extra), seeds in settings:
                for seed in seeds:
                    keys = f"unfreeze: {unfreeze}, learning_rate: {rate}" + (f", {extra}" if extra else "")
                    sets = [f"fine_tune={{{keys}}}", f"data.augment.flip={'horizontal' if flip else 'none'}"]
                    label = f"sweep {unfreeze} / {rate} / {'flips' if flip else 'none'}" + (
                        f" / {extra}" if extra else ""
                    )
                    self.tlcli(dataset, seed, label, sets)

    def write(self) -> None:
        report = {
            "machine": self.machine,
            "args": {k: str(v) for k, v in vars(self.args).items()},
            "started": self.started,
            "runs": self.results,
        }
        if self.args.sweep_only:  # the other runs as they were measured, this sweep in place of any earlier one
            kept = json.loads((self.args.out_dir / "quality.json").read_text())
            kept["sweep"] = {"machine": self.machine, "started": self.started, "args": report["args"]}
            kept["runs"] = [r for r in kept["runs"] if not r["config"].startswith("sweep")] + self.results
            report = kept
        (self.args.out_dir / "quality.json").write_text(json.dumps(report, indent=1) + "\n")
        write_markdown(report, self.args.out_dir)


def write_markdown(report: dict, out_dir: Path) -> None:
    """QUALITY.md: `report`'s runs, then the real base's targets from finetune.json beside it (when present)."""
    real = out_dir / "finetune.json"
    real_rows = json.loads(real.read_text())["rows"] if real.is_file() else []
    write_keeping_notes(out_dir / "QUALITY.md", render(report) + render_real_base(real_rows))


# Issue 26's protocol, as `benchmarks/finetune.py` arguments: (datasets, seeds, rows).
ABLATION = tuple(finetune.ABLATION)
REAL_BASE = (
    ("eurosat", "1,2,3", ("head", "fine_tune", *ABLATION, "baseline")),
    ("hymenoptera,cats_and_dogs_filtered", "1", ("head", "fine_tune", "baseline")),
)


def run_real_base(args: argparse.Namespace) -> None:
    """Issue 26's rows on MobileNetV2 1.0, appended to one finetune.json in `--out-dir`."""
    for datasets, seeds, rows in REAL_BASE:
        seeds = seeds.split(",")[0] if args.quick else seeds
        argv = ["--datasets", datasets, "--seeds", seeds, "--rows", ",".join(rows), "--out-dir", str(args.out_dir)]
        finetune.main(argv + ["--append"] + (["--quick"] if args.quick else []))


def render_real_base(rows: list[dict]) -> str:
    """QUALITY.md's section on the real base: issue 26's targets from finetune.json's rows."""
    if not rows:
        return ""
    lines = [
        "",
        "## On a real base: MobileNetV2 1.0 (issue 26)",
        "",
        "From `benchmarks/finetune.json` (`python benchmarks/quality.py --real-base`, or `benchmarks/finetune.py` "
        "row by row; every run, the ablation and the sweep are in `benchmarks/FINETUNE.md`). Each target from the "
        "newest generation of rows (one version of the defaults) of its dataset and row, medians over seeds.",
        "",
        *finetune.render_targets(rows),
        "### Side by side",
        "",
        "The newest generation of each row; medians with [min, max] over seeds.",
        "",
        *finetune.render_side_by_side(rows),
        "### The ablation: each piece of the recipe off in turn",
        "",
        *finetune.render_ablation(rows),
    ]
    return "\n".join(lines)


def summarize(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["test_accuracy"] is not None]
    accuracies = [r["test_accuracy"] for r in ok]
    walls = [r["wall_s"] for r in ok]
    peaks = [r["peak_mb"] for r in ok if r["peak_mb"]]
    return {
        "n": len(ok),
        "median": statistics.median(accuracies) if accuracies else None,
        "low": min(accuracies) if accuracies else None,
        "high": max(accuracies) if accuracies else None,
        "wall": statistics.median(walls) if walls else None,
        "peak": statistics.median(peaks) if peaks else None,
    }


def render(report: dict) -> str:
    runs = report["runs"]
    lines = [
        "# Quality benchmark: tlcli's defaults against a linear probe",
        "",
        (
            "Issue 12. Generated by `python benchmarks/quality.py` (see its docstring for each configuration). "
            "Test accuracy is on the dataset's own validation folder, never seen in training; tlcli holds out "
            "20% of `train/` for its validation split."
        ),
        "",
        (
            f"- Started {report['started']}; machine: {report['machine'].get('cpu')}, "
            f"{report['machine'].get('cores')} cores; TensorFlow {report['machine'].get('tensorflow')}, Keras "
            f"{report['machine'].get('keras')}; tlcli git {report['machine'].get('git', {}).get('commit')}"
        ),
        (
            "- Wall time: the whole process (start-up, a cold feature cache, training, the report). Peak memory: "
            "the process's peak RSS."
        ),
        "",
    ]
    targets = []
    for dataset in DATASETS:
        rows = [r for r in runs if r["dataset"] == dataset and not r["config"].startswith("sweep")]
        if not rows:
            continue
        lines += [
            f"## {dataset}",
            "",
            "| config | runs | test accuracy, median (range) | wall time, median | peak memory, median |",
            "| --- | ---: | --- | ---: | ---: |",
        ]
        summaries = {}
        for config in ("smallest", "smallest@before", "fine_tune", "probe", "keras"):
            chosen = [r for r in rows if r["config"] == config]
            if not chosen:
                continue
            s = summaries[config] = summarize(chosen)
            accuracy = f"{s['median']:.4f} ({s['low']:.4f}-{s['high']:.4f})" if s["median"] is not None else "failed"
            lines.append(
                f"| {config} | {s['n']} | {accuracy} | {_fmt(s['wall'], ' s')} | {_fmt(s['peak'], ' MB', 0)} |"
            )
        lines.append("")
        targets += _targets(dataset, summaries) + _sweep_target(
            dataset, summaries, [r for r in runs if r["dataset"] == dataset and r["config"].startswith("sweep")]
        )
        probes = [r["probe"] for r in rows if r["config"] == "smallest" and r.get("probe")]
        if probes:
            lines += [
                (
                    "The run's own linear-probe reference (on its 80% training split, scored on its validation "
                    f"split): validation accuracy {probes[0].get('val_accuracy')}, test "
                    f"{probes[0].get('test_accuracy')}, {probes[0].get('seconds')} s."
                ),
                "",
            ]
    if targets:
        lines[7:7] = [
            "## Targets",
            "",
            "| dataset | check | measured | target | result |",
            "| --- | --- | ---: | ---: | --- |",
            *targets,
            "",
        ]
    sweep = [r for r in runs if r["config"].startswith("sweep")]
    if sweep:
        lines += _sweep_table(sweep, report.get("sweep") or report, runs)
    lines += [
        "## Every run",
        "",
        "| dataset | config | seed | test accuracy | wall (s) | peak (MB) | status |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['dataset']} | {r['config']} | {r['seed']} | "
            f"{r['test_accuracy'] if r['test_accuracy'] is not None else '-'} | {r['wall_s']} | "
            f"{r['peak_mb']} | {'ok' if not r['error'] else 'failed'} |"
        )
    return "\n".join(lines) + "\n"


def _targets(dataset: str, s: dict) -> list[str]:
    rows = []
    if "smallest" in s and "probe" in s and s["smallest"]["median"] is not None and s["probe"]["median"] is not None:
        gap = s["smallest"]["median"] - s["probe"]["median"]
        rows.append(
            f"| {dataset} | smallest config >= the probe ceiling (medians) | {gap * 100:+.2f} pt | >= 0 pt | "
            f"{'**PASS**' if gap >= 0 else '**FAIL**'} |"
        )
    if "fine_tune" in s and "probe" in s and s["fine_tune"]["median"] is not None and s["probe"]["median"] is not None:
        gap = s["fine_tune"]["median"] - s["probe"]["median"]
        rows.append(
            f"| {dataset} | with the default fine_tune, >= 1 point above the ceiling | {gap * 100:+.2f} pt | "
            f">= +1 pt | {'**PASS**' if gap >= 0.01 else '**FAIL**'} |"
        )
    if "smallest" in s and "smallest@before" in s and s["smallest"]["wall"] and s["smallest@before"]["wall"]:
        ratio = s["smallest"]["wall"] / s["smallest@before"]["wall"]
        rows.append(
            f"| {dataset} | smallest config wall time / the same config before issue 12 | {ratio:.2f}x | <= "
            f"1.3x | {'**PASS**' if ratio <= 1.3 else '**FAIL**'} |"
        )
    return rows


def _sweep_target(dataset: str, s: dict, sweep: list[dict]) -> list[str]:
    """The issue's alternative to +1 point with the default fine_tune: a sweep showing that no setting gets there."""
    if not sweep or "probe" not in s or s["probe"]["median"] is None:
        return []
    medians = {
        label: summarize([r for r in sweep if r["config"] == label])
        for label in dict.fromkeys(r["config"] for r in sweep)
    }
    label, best = max(
        ((label, m) for label, m in medians.items() if m["median"] is not None), key=lambda item: item[1]["median"]
    )
    gap = best["median"] - s["probe"]["median"]
    verdict = "**a setting gets there**" if gap >= 0.01 else "**shown: none gets there**"
    return [
        (
            f"| {dataset} | any of {len(medians)} swept fine_tune settings >= 1 point above the ceiling (best "
            f"median: {label.removeprefix('sweep ')}, {best['n']} run{'s' if best['n'] != 1 else ''}) | "
            f"{gap * 100:+.2f} pt | >= +1 pt | {verdict} |"
        )
    ]


def _sweep_table(sweep: list[dict], when: dict, runs: list[dict]) -> list[str]:
    seeds = sorted({r["seed"] for r in sweep})
    lines = [
        "## Fine-tuning sweep",
        "",
        "`fine_tune` settings on top of the smallest config (unfreeze / learning rate / random horizontal "
        f"flips via `data.augment.flip`), seeds {', '.join(map(str, seeds))}; "
        f"started {when.get('started')}, tlcli git {when.get('machine', {}).get('git', {}).get('commit')}. "
        f"The first row of each table is the default `fine_tune: {{}}` from above; "
        "the gain is against the probe ceiling's median.",
        "",
    ]
    for dataset in DATASETS:
        rows = [r for r in sweep if r["dataset"] == dataset]
        if not rows:
            continue
        ceiling = summarize([r for r in runs if r["dataset"] == dataset and r["config"] == "probe"])["median"]
        default = summarize([r for r in runs if r["dataset"] == dataset and r["config"] == "fine_tune"])
        lines += [
            f"### {dataset}",
            "",
            (
                "| unfreeze / learning rate / flips | runs | test accuracy, median (range) | vs the ceiling | "
                "wall, median |"
            ),
            "| --- | ---: | --- | ---: | ---: |",
        ]
        groups = [("40 / 1.0e-4 / none (the default)", default)] + [
            (label.removeprefix("sweep "), summarize([r for r in rows if r["config"] == label]))
            for label in dict.fromkeys(r["config"] for r in rows)
        ]
        for label, s in groups:
            if s["median"] is None:
                lines.append(f"| {label} | 0 | failed | | |")
                continue
            gain = f"{(s['median'] - ceiling) * 100:+.1f} pt" if ceiling is not None else "-"
            lines.append(
                f"| {label} | {s['n']} | {s['median']:.4f} ({s['low']:.4f}-{s['high']:.4f}) | {gain} | "
                f"{_fmt(s['wall'], ' s')} |"
            )
        lines.append("")
    return lines


def _fmt(value, suffix="", digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--datasets", default="hymenoptera,cats_and_dogs_filtered", type=lambda s: [d for d in s.split(",") if d]
    )
    p.add_argument("--seeds", default="1,2,3", type=lambda s: [int(x) for x in s.split(",") if x])
    p.add_argument("--data", type=Path, default=SHARED / "datasets")
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--before", default=BEFORE, help="commit of the `smallest@before` runs ('' to skip)")
    p.add_argument(
        "--before-all", action="store_true", help="time `smallest@before` on every dataset (default: cats only)"
    )
    p.add_argument("--no-keras", action="store_true", help="skip the plain Keras recipe")
    p.add_argument("--sweep", action="store_true", help="also the fine-tuning sweep")
    p.add_argument(
        "--sweep-only",
        action="store_true",
        help="only the fine-tuning sweep; the other runs stay as quality.json has them",
    )
    p.add_argument(
        "--sweep-datasets",
        type=lambda s: [d for d in s.split(",") if d],
        default=None,
        help="the sweep's datasets (default: --datasets)",
    )
    p.add_argument("--real-base", action="store_true", help="issue 26's protocol on MobileNetV2 1.0 (finetune.py)")
    p.add_argument("--quick", action="store_true", help="with --real-base: 1 seed, 1 fine-tuning epoch")
    p.add_argument("--out-dir", type=Path, default=HERE)
    args = p.parse_args(argv)
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        p.error(f"unknown datasets {unknown}; choose from {', '.join(DATASETS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.real_base:
        run_real_base(args)
        quality = args.out_dir / "quality.json"
        if quality.is_file():  # the MobileNet 0.25 sections as measured, the real base's targets from the new rows
            write_markdown(json.loads(quality.read_text()), args.out_dir)
        return 0
    bench = Quality(args)
    bench.started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    bench.machine = describe_machine(sys.executable)
    try:
        bench.plan()
    finally:
        bench.write()
        if bench.before_tree is not None:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(bench.before_tree)], capture_output=True
            )
    print(f"wrote {args.out_dir / 'QUALITY.md'}")
    return 1 if any(r["error"] for r in bench.results) else 0


if __name__ == "__main__":
    sys.exit(main())
