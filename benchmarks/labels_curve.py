"""Where transfer pays: the quickstart's digits task at 1, 3, 10 and 30 labels a class, transferred against from
scratch.

    python benchmarks/labels_curve.py                 # 4 label counts x 2 recipes x 3 seeds (a few minutes on 2 cores)
    python benchmarks/labels_curve.py --labels 1,10 --seeds 1

The source task is digits 0-4 (scikit-learn's bundled 8x8 digits, 724 training
images), trained once per seed with `configs/quickstart/source.yaml`. The
target task is digits 5-9 with N labelled images a class; its validation set
is every other image of digits 5-9 (about 850). `transfer` is
`configs/quickstart/target.yaml` (the source's base, head first, then the
whole base fine-tuned), `scratch` is `configs/quickstart/target-scratch.yaml`
(the same SmallCNN from random weights), both as the quickstart runs them, with
`runtime.deterministic` on. Writes `benchmarks/LABELS.md`,
`benchmarks/labels_curve.png` and `benchmarks/labels_curve.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIGS = REPO / "configs" / "quickstart"


def tlcli(args: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-P", "-c", "from tlcli.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=1800,
    )
    if done.returncode != 0:
        raise SystemExit(f"tlcli {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout) if done.stdout.strip().startswith(("{", "[")) else {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="1,3,10,30", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--seeds", default="1,2,3", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="labels-", dir=HERE / "work" if (HERE / "work").is_dir() else None))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TLCLI_CACHE_DIR": str(work / "cache"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "MPLCONFIGDIR": str(work / "mpl"),
    }
    common = ["--json", "--quiet", "--runs-dir", str(work / "runs"), "--set", "runtime.deterministic=true"]
    rows = []
    for labels in args.labels:
        data = work / f"digits-{labels}"
        tlcli(["datasets", "digits", str(data), "--target-train-per-class", str(labels)], env)
        for seed in args.seeds:
            seeded = [*common, "--set", f"seed={seed}"]
            source = tlcli(
                [
                    "train",
                    str(CONFIGS / "source.yaml"),
                    *seeded,
                    "--set",
                    f"data.dir={data / 'source'}",
                    "--set",
                    f"name=source-{labels}-{seed}",
                ],
                env,
            )
            for recipe, config, extra in (
                ("transfer", "target.yaml", ["--set", f"base.run={source['run_dir']}"]),
                ("scratch", "target-scratch.yaml", []),
            ):
                result = tlcli(
                    ["train", str(CONFIGS / config), *seeded, *extra, "--set", f"data.dir={data / 'target'}"], env
                )
                rows.append(
                    {
                        "labels": labels,
                        "seed": seed,
                        "recipe": recipe,
                        "val_accuracy": result["final"]["val_accuracy"],
                        "wall_s": result["wall_time_s"],
                        "train_images": result["images"]["train"],
                    }
                )
                print(
                    (
                        f"{labels:3} labels  seed {seed}  {recipe:8}  val {result['final']['val_accuracy']:.4f}  "
                        f"{result['wall_time_s']:.1f} s"
                    ),
                    flush=True,
                )
    write(rows, args.out_dir)
    return 0


def write(rows: list[dict], out_dir: Path) -> None:
    labels = sorted({r["labels"] for r in rows})
    table = [
        "| labels a class | transfer, median (range) | from scratch, median (range) | transfer - scratch |",
        "| ---: | --- | --- | ---: |",
    ]
    medians = {}
    for n in labels:
        cells = []
        for recipe in ("transfer", "scratch"):
            values = [r["val_accuracy"] for r in rows if r["labels"] == n and r["recipe"] == recipe]
            medians[(n, recipe)] = statistics.median(values)
            cells.append(f"{medians[(n, recipe)]:.3f} ({min(values):.3f}-{max(values):.3f})")
        table.append(
            f"| {n} | {cells[0]} | {cells[1]} | {(medians[(n, 'transfer')] - medians[(n, 'scratch')]) * 100:+.1f} pt |"
        )
    text = [
        "# Where transfer pays: labels a class against accuracy",
        "",
        (
            "Generated by `python benchmarks/labels_curve.py` (see its docstring). The quickstart's task: a "
            "SmallCNN trained on digits 0-4 transferred to digits 5-9 (`transfer`), against the same network "
            "from random weights (`scratch`); validation accuracy on every unlabelled digit 5-9, with "
            "`runtime.deterministic` on."
        ),
        "",
        *table,
        "",
        "![labels curve](labels_curve.png)",
        "",
    ]
    (out_dir / "LABELS.md").write_text("\n".join(text))
    (out_dir / "labels_curve.json").write_text(json.dumps(rows, indent=1) + "\n")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for recipe, style in (("transfer", "-o"), ("scratch", "-s")):
        axes.plot(labels, [medians[(n, recipe)] for n in labels], style, label=recipe)
    axes.set_xscale("log")
    axes.set_xticks(labels, labels=[str(n) for n in labels])
    axes.set_xlabel("labelled images a class (log scale)")
    axes.set_ylabel("validation accuracy (median of seeds)")
    axes.set_title("digits 5-9: transfer from digits 0-4 vs from scratch")
    axes.legend()
    figure.savefig(out_dir / "labels_curve.png", dpi=110)


if __name__ == "__main__":
    sys.exit(main())
