"""Issue 29's benchmark: does tlcli say "unknown" for images of no class, and what does it cost?

    python benchmarks/unknown.py                      # everything, 3 seeds
    python benchmarks/unknown.py --quick              # smoke: seed 1, eurosat without 2 classes, 1 predict pair
    python benchmarks/unknown.py --loco 0 3 --seeds 1 # eurosat without class 0 and 3 only, one seed
    python benchmarks/unknown.py --parts eurosat --blas-threads 1 --train-set data.label_suspects=false  # busy machine
    python benchmarks/unknown.py --merge A/unknown.json B/unknown.json    # one report from parts run side by side

Running time, measured on 2 shared cores (load 6-17): hymenoptera 3 seeds 25 minutes (train 35-165 s, evaluate
--unknown 113-544 s a seed), eurosat 2.6 minutes of cache warm-up then 30-60 s a leave-one-class-out run (30 runs)
plus 15 s a run of cached scoring, predict's cost 8-23 minutes (6 runs of 50-400 s): about an hour in all on a
quiet machine, more on a busy one. `--quick`: about 10 minutes.

Run from a fresh clone with ../shared beside it. tlcli runs as a child process (`python -m tlcli`, this checkout on
PYTHONPATH) with a temporary KERAS_HOME holding ../shared/weights' MobileNetV2 1.0 file and one feature cache for
the whole benchmark (so every eurosat run after the warm-up reads its features from it). The config is the smallest
one with MobileNetV2 (`base: {name: MobileNetV2}`, `data.dir`, `seed`; 224 px by default) plus
`predict: {unknown: {accept: 0.95}}` (the score: the default, or `--score`).

- hymenoptera: train/ = its train/ (tlcli holds out 20% as validation), test/ = its val/; `tlcli evaluate RUN
  --unknown <cats_and_dogs_filtered/validation> --json`: the AUROC (in-distribution test images vs the 1,000 unknown
  ones), the unknowns accepted at the threshold that accepts 95% of validation images, the AUROC of every score
  (`auroc_by_score`), the coverage and the accuracy on all vs accepted test images. Targets: AUROC >= 0.95, at most
  10% of unknowns accepted.
- eurosat leave-one-class-out: the 9 other classes' train/ and test/, the 10th class's test/ images are unknown;
  every class in turn (or `--loco`): the chosen score's mean AUROC against the maximum-probability baseline (`msp`
  in `auroc_by_score`). Target: 5 points better. The cache is warmed first (timed separately). By default each
  run's figures come from the feature cache (`benchmarks/unknown_cached.py`, checked against `evaluate --unknown` on
  a hymenoptera run, `cached_check`); `--eurosat-evaluate cli` runs `evaluate --unknown` for each instead.
- accuracy on accepted test images >= on all of them (median over seeds, each seed listed).
- predict's cost: `tlcli predict <cats_and_dogs_filtered's 1,000 validation images> --run RUN -f json` with and without
  `--no-unknown`, alternated, `--repeats` of each (median and range). Target: at most +10%.

Writes benchmarks/UNKNOWN.md and benchmarks/unknown.json (`--out` elsewhere). Every timing comes with the load
average before it (the machine is shared).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from run import measure  # noqa: E402  (the speed benchmark's measuring: wall time, peak memory, JSON output)
from unknown_report import markdown  # noqa: E402

SHARED = REPO.parent / "shared"  # a fresh clone with ../shared beside it; --data elsewhere
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
TIMEOUT = 3600
SCORES = ("msp", "energy", "knn", "mahalanobis", "knn_energy")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def link_classes(src: Path, dst: Path, classes: list[str]) -> Path:
    """`dst/<class>` symlinks to `src/<class>` for each class (the shared data is never copied)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in classes:
        if not (dst / name).exists():
            (dst / name).symlink_to(src / name)
    return dst


def class_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        (HERE / "work").mkdir(exist_ok=True)
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="unknown-", dir=HERE / "work"))
        self.work.mkdir(parents=True, exist_ok=True)
        keras_home = self.work / "keras_home" / "models"
        keras_home.mkdir(parents=True, exist_ok=True)
        if not (keras_home / WEIGHTS).exists():
            shutil.copyfile(args.weights, keras_home / WEIGHTS)
        self.env = {
            **os.environ,
            "KERAS_HOME": str(keras_home.parent),
            "TLCLI_CACHE_DIR": str(args.cache or self.work / "cache"),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "MPLCONFIGDIR": str(self.work / "mpl"),
            "PYTHONPATH": str(REPO),
        }
        if args.blas_threads:  # threaded BLAS on an oversubscribed machine: the probe's fits took 7 minutes, not 1
            self.env |= {name: str(args.blas_threads) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
        self.sequence = 0
        self.result: dict = {
            "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": self._commit(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "hymenoptera": [],
            "eurosat": [],
            "predict_cost": [],
        }

    def _commit(self) -> str:
        found = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return found.stdout.strip() or "unknown"

    # -- running tlcli ------------------------------------------------------------------------------------------
    def tlcli(self, label: str, *arguments: str) -> dict:
        """`python -P -m tlcli ARGUMENTS` (-P: PYTHONPATH alone says which tlcli runs); its record from `measure`."""
        self.sequence += 1
        command = [sys.executable, "-P", "-m", "tlcli", *arguments]
        record = measure(command, self.env, self.work / "logs", f"{self.sequence:03d}-{label}", TIMEOUT)
        shown = f"[{dt.datetime.now():%H:%M:%S}] {label:36} exit {record['returncode']} {record['wall_s']:7.1f} s"
        print(
            shown
            + f"  load {record['load_before']}"
            + (f"  ERROR {record['error'][-300:]}" if record.get("error") else ""),
            flush=True,
        )
        return record

    def config(self) -> Path:
        path = self.work / "smallest.yaml"
        unknown = f"{{accept: {self.args.accept}" + (f", score: {self.args.score}" if self.args.score else "") + "}"
        path.write_text(f"base: {{name: MobileNetV2}}\ndata: {{dir: .}}\npredict: {{unknown: {unknown}}}\n")
        return path

    def train(self, label: str, data: Path, seed: int) -> tuple[dict, Path | None]:
        runs = self.work / "runs" / label
        done = sorted(p.parent for p in runs.glob("*/metrics.json") if (p.parent / "unknown.json").is_file())
        if self.args.reuse and done:  # a run this work folder finished before (its wall time is metrics.json's)
            run_dir = done[-1]
            timings = json.loads((run_dir / "metrics.json").read_text()).get("timings_s") or {}
            return {"wall_s": round(sum(timings.values()), 1), "load_before": "reused", "output": {}}, run_dir
        record = self.tlcli(
            f"train-{label}", "train", str(self.config()), "--json", "--quiet", "--runs-dir", str(runs),
            "--set", f"data.dir={data}", "--set", f"seed={seed}",
            *[item for kv in self.args.train_set for item in ("--set", kv)],
        )  # fmt: skip
        out = record.get("output") or {}
        run_dir = out.get("run_dir") or out.get("run")
        return record, Path(run_dir) if run_dir else None

    def evaluate(self, label: str, run_dir: Path, unknown: Path) -> dict:
        return self.tlcli(
            f"evaluate-{label}",
            "evaluate",
            str(run_dir),
            "--unknown",
            str(unknown),
            "--no-explain",
            "--json",
            "--quiet",
        )

    def trial(self, label: str, data: Path, unknown: Path, seed: int) -> dict:
        """Train, then evaluate with unknowns: one row of the report."""
        trained, run_dir = self.train(label, data, seed)
        row = {"label": label, "seed": seed, "train_s": trained["wall_s"], "train_load": trained["load_before"]}
        if run_dir is None:
            return row | {"error": trained.get("error") or "no run folder in train's JSON"}
        evaluated = self.evaluate(label, run_dir, unknown)
        found = (evaluated.get("output") or {}).get("unknown")
        row |= {"run_dir": str(run_dir), "evaluate_s": evaluated["wall_s"], "evaluate_load": evaluated["load_before"]}
        if found is None:
            return row | {"error": evaluated.get("error") or "no `unknown` object in evaluate's JSON"}
        row["accuracy"] = (evaluated.get("output") or {}).get("accuracy")
        return row | {"unknown": found}

    # -- the parts ----------------------------------------------------------------------------------------------
    def hymenoptera(self) -> None:
        data = self.work / "data" / "hymenoptera"
        for link, target in (("train", "train"), ("test", "val")):
            link_classes(self.args.data / "hymenoptera" / target, data / link, ["ants", "bees"])
        unknown = self.args.data / "cats_and_dogs_filtered" / "validation"
        for seed in self.args.seeds:
            self.result["hymenoptera"].append(self.trial(f"hymenoptera-s{seed}", data, unknown, seed))
            self.write()

    def warm_eurosat(self) -> None:
        """Every eurosat image through the base once (the feature cache is keyed by image bytes, so each
        leave-one-class-out folder then reads its features from it)."""
        data = self.work / "data" / "eurosat-all"
        names = class_names(self.args.data / "eurosat" / "train")
        for link in ("train", "test"):
            link_classes(self.args.data / "eurosat" / link, data / link, names)
        if self.args.skip_warm:
            return
        started, load = time.perf_counter(), loadavg()
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; import unknown_scores as u; "
            "print({k: len(s.y) for k, s in u.embed_folder(Path(sys.argv[2])).items()})"
        )
        done = subprocess.run(
            [sys.executable, "-P", "-c", code, str(HERE), str(data)], env=self.env, capture_output=True, text=True
        )
        self.result["eurosat_warm"] = {
            "seconds": round(time.perf_counter() - started, 1),
            "load_before": load,
            "images": done.stdout.strip(),
            "returncode": done.returncode,
        }
        print(f"eurosat cache warm-up: {self.result['eurosat_warm']}", flush=True)

    def eurosat(self) -> None:
        """Train on 9 classes (CLI); the figures from `evaluate --unknown` (`--eurosat-evaluate cli`) or from the
        feature cache (`cached`, the default: the same figures, checked on hymenoptera, minutes faster a run)."""
        names = class_names(self.args.data / "eurosat" / "train")
        held_out = self.args.loco if self.args.loco is not None else list(range(len(names)))
        started = time.perf_counter()
        trained = []
        for k in held_out:
            kept = [n for i, n in enumerate(names) if i != k]
            data = self.work / "data" / f"eurosat-without-{names[k]}"
            for link in ("train", "test"):
                link_classes(self.args.data / "eurosat" / link, data / link, kept)
            unknown = self.args.data / "eurosat" / "test" / names[k]
            for seed in self.args.seeds:
                label = f"eurosat-without-{names[k]}-s{seed}"
                if self.args.eurosat_evaluate == "cli":
                    row = self.trial(label, data, unknown, seed)
                else:
                    record, run_dir = self.train(label, data, seed)
                    row = {
                        "label": label,
                        "seed": seed,
                        "train_s": record["wall_s"],
                        "train_load": record["load_before"],
                    }
                    row |= {"run_dir": str(run_dir)} if run_dir else {"error": record.get("error") or "no run folder"}
                    trained.append((k, row))
                row["held_out"] = names[k]  # the same dict as in `trained`: the cached figures land in it
                self.result["eurosat"].append(row)
                self.write()
        if trained:
            self._cached_figures(trained)
        self.result["eurosat_seconds"] = round(time.perf_counter() - started, 1)

    def _cached_figures(self, trained: list[tuple[int, dict]]) -> None:
        """One process scores every trained run from the feature cache (`benchmarks/unknown_cached.py`)."""
        runs = [f"{row['run_dir']}:{k}" for k, row in trained if "run_dir" in row]
        started, load = time.perf_counter(), loadavg()
        done = self.helper("loco", str(self.work / "data" / "eurosat-all"), *runs)
        found = {}
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                item = json.loads(line)
                found[item["run_dir"]] = item["unknown"]
        seconds = round(time.perf_counter() - started, 1)
        for _, row in trained:
            if row.get("run_dir") in found:
                row |= {"unknown": found[row["run_dir"]], "evaluate_s": None, "evaluate_load": load}
            elif "error" not in row:
                row["error"] = done.stderr[-300:] or "no figures from unknown_cached.py"
        self.result["eurosat_cached_evaluate"] = {"seconds": seconds, "load_before": load, "runs": len(runs)}
        self.write()

    def helper(self, *arguments: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-P", str(HERE / "unknown_cached.py"), *arguments]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=TIMEOUT)

    def cached_check(self) -> None:
        """The cached figures of the first hymenoptera run against its `evaluate --unknown` figures."""
        done = [r for r in self.result["hymenoptera"] if "unknown" in r]
        if not done:
            return
        data = self.work / "data" / "hymenoptera"
        unknown = link_classes(
            self.args.data / "cats_and_dogs_filtered" / "validation",
            self.work / "data" / "cats-val" / "train",
            ["cats", "dogs"],
        ).parent
        found = self.helper("check", done[0]["run_dir"], str(data), str(unknown))
        rows = [json.loads(line) for line in found.stdout.splitlines() if line.startswith("{")]
        if not rows:
            self.result["cached_check"] = {"error": found.stderr[-300:]}
            return
        cached, cli = rows[0]["unknown"], done[0]["unknown"]
        keys = (
            "auroc",
            "false_accept_rate",
            "coverage",
            "accuracy_all",
            "accuracy_accepted",
            "ece_before",
            "ece_after",
        )
        gaps = {key: abs((cached.get(key) or 0) - (cli.get(key) or 0)) for key in keys}
        gaps |= {
            f"auroc_{s}": abs(cached["auroc_by_score"][s] - cli["auroc_by_score"][s])
            for s in SCORES
            if s in cached["auroc_by_score"] and s in cli["auroc_by_score"]
        }
        self.result["cached_check"] = {"run_dir": done[0]["run_dir"], "largest_gap": max(gaps.values()), "gaps": gaps}
        print(f"cached vs evaluate --unknown: largest gap {max(gaps.values()):.2g}", flush=True)

    def predict_cost(self) -> None:
        """predict on the 1,000 cats/dogs validation images, with and without the score, alternated."""
        done = [r["run_dir"] for r in self.result["hymenoptera"] if r.get("run_dir")]
        if self.args.predict_run is None and not done:
            self.result["predict_cost_error"] = (
                "no hymenoptera run to predict with (--parts hymenoptera or --predict-run)"
            )
            return
        run_dir = str(self.args.predict_run or done[0])
        self.result["predict_run"] = run_dir
        images = self.args.data / "cats_and_dogs_filtered" / "validation"
        for repeat in range(self.args.repeats):
            for mode in ("with", "without") if repeat % 2 == 0 else ("without", "with"):
                extra = ["--no-unknown"] if mode == "without" else []
                record = self.tlcli(
                    f"predict-{mode}-{repeat}", "predict", str(images), "--run", run_dir, "-f", "json", *extra
                )
                self.result["predict_cost"].append(
                    {
                        "mode": mode,
                        "repeat": repeat,
                        "wall_s": record["wall_s"],
                        "load_before": record["load_before"],
                        "peak_mb": record["peak_rss_mb"],
                        "unknown_labels": count_unknown(record.get("output")),
                        "error": record.get("error"),
                    }
                )
                self.write()

    # -- writing ------------------------------------------------------------------------------------------------
    def write(self) -> None:
        self.result["load_now"] = loadavg()
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "unknown.json").write_text(json.dumps(self.result, indent=1) + "\n")
        (out / "UNKNOWN.md").write_text(markdown(self.result))


def count_unknown(output) -> dict | None:
    """How many predictions are `unknown` in predict's JSON (a list of rows, or an object with them)."""
    rows = output.get("predictions") if isinstance(output, dict) else output
    if not isinstance(rows, list):
        return None
    labels = [r.get("label") for r in rows if isinstance(r, dict)]
    return {"images": len(labels), "unknown": sum(label == "unknown" for label in labels)}


def merge(paths: list[Path], out: Path, notes: Path | None = None) -> int:
    """One report from several runs of this script (parts run side by side): lists joined, the rest from the
    first file that has it; `sources` names the parts."""
    merged: dict = {"hymenoptera": [], "eurosat": [], "predict_cost": [], "sources": []}
    for path in paths:
        part = json.loads(Path(path).read_text())
        merged["sources"].append(
            {
                "file": str(path),
                "parts": part.get("args", {}).get("parts"),
                "when": part.get("when"),
                "seconds": part.get("seconds"),
                "load_start": part.get("load_start"),
            }
        )
        for key, value in part.items():
            if key == "predict_cost":  # repeats named by their file, so that pairs stay within a series
                merged[key] += [row | {"repeat": f"{len(merged['sources'])}:{row['repeat']}"} for row in value]
            elif key in ("hymenoptera", "eurosat"):
                merged[key] += value
            elif key not in merged or merged[key] in (None, [], {}):
                merged[key] = value
    merged["seconds"] = sum(s["seconds"] or 0 for s in merged["sources"])
    if notes is not None:
        merged["notes"] = notes.read_text().splitlines()
    (out / "unknown.json").write_text(json.dumps(merged, indent=1) + "\n")
    (out / "UNKNOWN.md").write_text(markdown(merged))
    print(f"merged {len(paths)} files into {out / 'UNKNOWN.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "datasets")
    parser.add_argument("--weights", type=Path, default=SHARED / "weights" / WEIGHTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--loco", type=int, nargs="*", default=None, help="eurosat classes to hold out (default all)")
    parser.add_argument("--repeats", type=int, default=3, help="predict runs with and without the score")
    parser.add_argument("--accept", type=float, default=0.95)
    parser.add_argument("--score", default=None, help="predict.unknown.score (default: tlcli's default)")
    parser.add_argument("--parts", nargs="+", default=["hymenoptera", "eurosat", "cost"])
    parser.add_argument("--eurosat-evaluate", choices=["cached", "cli"], default="cached")
    parser.add_argument("--predict-run", type=Path, default=None, help="run for the cost part (default: hymenoptera's)")
    parser.add_argument(
        "--work", type=Path, default=None, help="work folder (default: a new benchmarks/work/unknown-*)"
    )
    parser.add_argument("--cache", type=Path, default=None, help="TLCLI_CACHE_DIR (default: <work>/cache)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument(
        "--train-set",
        nargs="*",
        default=[],
        help="more `--set KEY=VALUE` for train, e.g. data.label_suspects=false (no change to the model: it skips the "
        "label-error ranking, 200 s a eurosat run on a loaded machine)",
    )
    parser.add_argument("--reuse", action="store_true", help="keep the runs <work>/runs/ holds already")
    parser.add_argument(
        "--blas-threads", default=None, help="OPENBLAS/OMP threads of the children (1 on a busy machine)"
    )
    parser.add_argument("--skip-warm", action="store_true", help="the cache is warm already (--cache)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="only merge these unknown.json files")
    parser.add_argument("--notes", type=Path, default=None, help="with --merge: a Markdown file of notes to add")
    parser.add_argument("--quick", action="store_true", help="seed 1, eurosat without classes 0 and 1, 1 predict pair")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out, args.notes)
    if args.quick:
        args.seeds, args.loco, args.repeats = [1], args.loco or [0, 1], 1
    for needed in (
        args.data / "hymenoptera",
        args.data / "cats_and_dogs_filtered",
        args.data / "eurosat",
        args.weights,
    ):
        if not needed.exists():
            print(f"needs {needed} (see ../shared/README.md)", file=sys.stderr)
            return 2
    bench = Bench(args)
    started = time.perf_counter()
    bench.result["load_start"] = loadavg()
    if "hymenoptera" in args.parts:
        bench.hymenoptera()
    if "hymenoptera" in args.parts:
        bench.cached_check()
    if "eurosat" in args.parts:
        bench.warm_eurosat()
        bench.eurosat()
    if "cost" in args.parts:
        bench.predict_cost()
    bench.result["seconds"] = round(time.perf_counter() - started, 1)
    bench.write()
    print(f"wrote {args.out / 'UNKNOWN.md'} in {bench.result['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
