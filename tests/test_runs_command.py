"""`tlcli runs`: name, date, base, best validation accuracy and status of every run."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path

import pytest

from tlcli import runs


def fake_run(
    runs_dir: Path, name: str, when: datetime, status: str, base: str = "SmallCNN", best: float | None = None
) -> Path:
    """A run folder as training leaves it, without training (these tests read folders only)."""
    run_dir = runs.create_run_dir(runs_dir, name, when)
    record = dataclasses.replace(runs.start_run(run_dir, name), started=when.astimezone().isoformat(timespec="seconds"))
    record.write(run_dir)
    runs.write_json_atomic(
        run_dir / "model.json", {"base_name": base, "image_size": [16, 16], "channels": 3, "activation": "softmax"}
    )
    if best is not None:
        runs.write_json_atomic(
            run_dir / "metrics.json",
            {"best": {"val_accuracy": best, "epoch": 2}, "final": {"val_accuracy": best - 0.01}},
        )
    if status == "running":
        dataclasses.replace(record, pid=2**22 + 12345).write(run_dir)  # no such process: the run was killed
    else:
        runs.finish_run(run_dir, status, "boom" if status == "failed" else None)
    return run_dir


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    folder = tmp_path / "runs"
    fake_run(folder, "flowers", datetime(2025, 3, 1, 10, 0, 0), "completed", base="MobileNet", best=0.8125)
    fake_run(folder, "flowers", datetime(2025, 3, 2, 11, 30, 0), "failed")
    fake_run(folder, "birds", datetime(2025, 3, 3, 12, 45, 0), "running", best=0.5)
    (folder / "not-a-run").mkdir()
    return folder


def test_json_lists_every_run_oldest_first(cli, runs_dir):
    result = cli("runs", "--runs-dir", runs_dir, "--json")
    assert result.exit_code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [r["name"] for r in listed] == ["flowers", "flowers", "birds"]
    assert [r["status"] for r in listed] == [
        "completed",
        "failed",
        "interrupted",
    ]  # a dead "running" run was interrupted
    assert [r["base"] for r in listed] == ["MobileNet", "SmallCNN", "SmallCNN"]
    assert [r["best_val_accuracy"] for r in listed] == [0.8125, None, 0.5]
    assert listed[0]["started"].startswith("2025-03-01T10:00:00")
    assert Path(listed[0]["path"]).name == "20250301-100000-flowers"


def test_table_shows_name_date_base_best_accuracy_status(cli, runs_dir):
    result = cli("runs", "--runs-dir", runs_dir)
    assert result.exit_code == 0, result.stderr
    for header in ("run", "name", "date", "base", "best val acc", "status"):
        assert header in " ".join(result.stdout.split())  # headers may wrap on a narrow console
    row = next(line for line in result.stdout.splitlines() if "20250301-100000-flowers" in line)
    assert "2025-03-01 10:00" in row and "0.8125" in row and "completed" in row and "MobileNet" in row
    failed = next(line for line in result.stdout.splitlines() if "20250302-113000-flowers" in line)
    assert "failed" in failed and " - " in failed
    assert "not-a-run" not in result.stdout


def test_no_runs_says_so(cli, tmp_path):
    result = cli("runs", "--runs-dir", tmp_path / "empty")
    assert result.exit_code == 0
    assert result.stdout == "" and "no runs in" in result.stderr
    result = cli("runs", "--runs-dir", tmp_path / "empty", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
