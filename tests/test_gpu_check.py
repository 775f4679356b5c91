"""Issue 30's GPU check (`benchmarks/gpu_check.py`) in its `--dry` mode: the code a GPU machine runs, on the CPU with
generated images, as a subprocess. A user with a GPU runs it without `--dry`; this keeps that script working."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.subprocess, pytest.mark.timeout(900)]


def test_dry_run_names_the_devices_and_runs_every_workload(tmp_path):
    out = tmp_path / "GPU-dry.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=840,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = out.read_text()
    data = json.loads(out.with_suffix(".json").read_text())
    names = [run["name"] for run in data["runs"]]
    assert names == [
        "frozen-mp-off",
        "frozen-mp-on",
        "fine_tune-mp-off",
        "fine_tune-mp-on",
        "fine_tune-mp-auto-all",
    ], names
    assert not [run for run in data["runs"] if "error" in run]
    assert "| every workload ran | **PASS** | 5 of 5 |" in report
    # The devices, as the runs recorded them: the CPU, mixed precision where asked, and the several-device path.
    devices = [run["devices"]["description"] for run in data["runs"]]
    assert devices[:4] == ["CPU", "CPU, mixed precision", "CPU", "CPU, mixed precision"], devices
    assert devices[4].startswith("CPU as 2 logical devices") and "MirroredStrategy" in devices[4], devices
    assert "| MirroredStrategy over every device | **PASS** |" in report
    assert "GPUs seen: 0" in report and "device:CPU:0" in report
    # Every workload extracted features on its own empty cache; the fine-tuning ones report their speed.
    assert all(run["extract_images_per_s"] for run in data["runs"])
    assert all(run["fine_tune"]["epochs"] == 2 for run in data["runs"] if run["kind"] == "fine_tune")
    # The probe ran (TensorFlow's build is named), and the report has its sections and a row for every run.
    assert data["seen"]["tensorflow"] and "- TensorFlow " in report
    assert "## Checks" in report and "## Runs" in report
    assert all(f"| {name} | " in report for name in names)
    # Fine-tuning's images per second, over all epochs and without the first; peak GPU memory: none on the CPU.
    assert all(run["fine_tune"]["images_per_s"] for run in data["runs"] if run["kind"] == "fine_tune")
    assert all(run["fine_tune"]["images_per_s_after_first"] for run in data["runs"] if run["kind"] == "fine_tune")
    assert all(run["peak_gpu_memory_mb"] == {} for run in data["runs"])
    assert report.count("| – (no GPU) |") == len(names)
