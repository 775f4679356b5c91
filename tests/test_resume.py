"""Surviving interruptions (issue 6): checkpoints, resume in either phase, extension, Ctrl-C, refusals."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, make_image_folder, tiny_config, write_config, write_image

from tlcli import TrainResult, load_config, resume, train
from tlcli.errors import Interrupted
from tlcli.runs import RunLock, checkpoints, list_runs, read_run_record
from tlcli.training import callbacks
from tlcli.training.budget import EpochBudget


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """An earlier run whose base makes a two-phase config possible (its SmallCNN trains from scratch: no feature
    cache)."""
    tmp = tmp_path_factory.mktemp("source")
    data = make_image_folder(tmp / "images", {"cats": 16, "dogs": 16})
    return data, train(load_config(tiny_config(data, tmp / "runs", name="source"))).run_dir


def two_phase(data: Path, runs_dir: Path, source: Path, **train_keys) -> dict:
    raw = tiny_config(data, runs_dir, name="target", runtime={"deterministic": True})
    raw["base"] = {"run": str(source), "trainable": "none"}
    raw["train"] = {"epochs": 2, "learning_rate": 0.01, **train_keys}
    raw["fine_tune"] = {"unfreeze": 3, "epochs": 2, "learning_rate": 0.001, "when": "always"}
    return raw


def stop_after(monkeypatch, epochs_done: int) -> None:
    """Ctrl-C right after the checkpoint of epoch `epochs_done` (the next epoch never starts)."""
    original = callbacks.EpochCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch + 1 == epochs_done:
            raise Interrupted("simulated Ctrl-C")

    monkeypatch.setattr(callbacks.EpochCheckpoint, "on_epoch_end", on_epoch_end)


def reference_and_interrupted(raw: dict, epochs_done: int) -> tuple[TrainResult, Path]:
    """Train `raw` to its end (the reference), then train it again with a Ctrl-C right after epoch `epochs_done`: the
    reference's result and the interrupted run's folder, left for the caller to resume."""
    reference = train(load_config(raw))
    with pytest.MonkeyPatch.context() as patch:
        stop_after(patch, epochs_done)
        with pytest.raises(KeyboardInterrupt):
            train(load_config(raw))
    runs = list_runs(Path(raw["output"]["runs_dir"]))
    return reference, next(s.path for s in runs if s.status == "interrupted")


def history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as stream:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(stream)]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("stop_at", [1, 3], ids=["in-train-phase", "in-fine-tune-phase"])
def test_resumed_run_ends_exactly_like_the_uninterrupted_one(tmp_path, source_run, stop_at):
    data, source = source_run
    raw = two_phase(data, tmp_path / "runs", source)
    reference, run_dir = reference_and_interrupted(raw, stop_at)
    assert [int(r["epoch"]) for r in history(run_dir)] == list(range(1, stop_at + 1))
    assert [p.name for p in checkpoints.checkpoint_dirs(run_dir)][0] == f"epoch-{stop_at:04d}"

    result = resume(run_dir)
    assert result.run_dir == run_dir
    assert history(run_dir) == history(reference.run_dir)  # same epochs, phases, losses, learning rates
    assert metrics(run_dir)["final"] == metrics(reference.run_dir)["final"]
    assert metrics(run_dir)["best"] == metrics(reference.run_dir)["best"]
    record = read_run_record(run_dir)
    assert record.status == "completed" and record.resumes[0].from_epoch == stop_at
    assert len(checkpoints.checkpoint_dirs(run_dir)) == 2


def test_resume_with_flips_on_features_continues_the_flip_draws(tmp_path, source_run):
    """The RandomFlip layer's seed state is in the checkpoint: the resumed run flips as the uninterrupted one did."""
    data, source = source_run
    raw = two_phase(data, tmp_path / "runs", source)
    raw["data"]["augment"] = {"flip": "horizontal"}
    raw["head"] = {"dropout": 0.3}
    reference, run_dir = reference_and_interrupted(raw, 3)
    assert reference.metrics.cache.mode == "features"
    resume(run_dir)
    assert history(run_dir) == history(reference.run_dir)
    assert metrics(run_dir)["final"] == metrics(reference.run_dir)["final"]


def test_resume_with_micro_batches_and_a_moving_average_ends_exactly_like_the_uninterrupted_run(
    tmp_path, source_run, monkeypatch
):
    """Gradient accumulation (`data.micro_batch`), the weights' moving average (`ema_epochs`) and discriminative
    rates (`bottom_lr_ratio`) through an interruption in the fine-tuning phase: the accumulators, the average and the
    schedule's position come back with the checkpoint (the average's own validation, `ema_val_*`, is in the compared
    history), and the resumed optimizer scales the same rates."""
    data, source = source_run
    raw = two_phase(data, tmp_path / "runs", source)
    raw["data"]["micro_batch"] = 4  # 2 micro-batches a batch of 8
    raw["fine_tune"].update(ema_epochs=0.5, bottom_lr_ratio=0.1)
    reference, run_dir = reference_and_interrupted(raw, 3)
    assert all(row["ema_val_loss"] for row in history(reference.run_dir) if row["phase"] == "fine_tune")
    from tlcli.training import loop

    accumulated = []
    original = loop.make_optimizer
    monkeypatch.setattr(
        loop, "make_optimizer", lambda *a, **k: accumulated.append(k["accumulate"]) or original(*a, **k)
    )
    resume(run_dir)
    assert accumulated == [2]  # the resumed fine-tuning phase accumulated two micro-batches an update
    assert history(run_dir) == history(reference.run_dir)
    assert metrics(run_dir)["final"] == metrics(reference.run_dir)["final"]


def test_a_phase_sized_to_its_time_budget_runs_that_many_epochs_and_resumes_with_them(tmp_path, source_run):
    """`fine_tune.budget_min`: the epochs that fit (here all of `max_epochs`) are recorded with their timings; a run
    interrupted in the phase resumes with the count it was sized to, not a new timing."""
    data, source = source_run
    raw = two_phase(data, tmp_path / "runs", source)
    raw["fine_tune"] = {
        "unfreeze": 3,
        "epochs": "auto",
        "max_epochs": 3,
        "budget_min": 60,
        "learning_rate": 0.001,
        "when": "always",
    }
    reference, run_dir = reference_and_interrupted(raw, 3)
    budget = metrics(reference.run_dir)["phases"]["fine_tune"]["budget"]
    assert budget["epochs"] == 3 and budget["minutes"] == 60 and budget["epoch_s"] > 0
    assert [row["phase"] for row in history(reference.run_dir)].count("fine_tune") == 3
    sized = json.loads((run_dir / "checkpoints" / "epoch-0003" / "state.json").read_text())["phase_budget"]
    assert sized["epochs"] == 3 and sized["step_s"] > 0
    resume(run_dir)
    assert history(run_dir) == history(reference.run_dir)
    assert metrics(run_dir)["final"] == metrics(reference.run_dir)["final"]
    budget = metrics(run_dir)["phases"]["fine_tune"]["budget"]  # the timings that sized it, not lost
    assert budget == EpochBudget.from_state(sized).to_dict() and budget["epochs"] == 3


def test_resume_on_images_with_dropout_and_a_corrupt_newest_checkpoint(tmp_path):
    """The full model on decoded images (cache off); the newest checkpoint fails to load: the previous one is used."""
    data = make_image_folder(tmp_path / "images", {"cats": 16, "dogs": 16})
    raw = tiny_config(
        data,
        tmp_path / "runs",
        cache="off",
        head={"dropout": 0.3},
        runtime={"deterministic": True},
        train={"epochs": 4, "learning_rate": 0.01, "schedule": "cosine"},
    )
    reference, run_dir = reference_and_interrupted(raw, 3)
    (run_dir / "checkpoints" / "epoch-0003" / "model.weights.npz").write_bytes(b"not hdf5")
    resume(run_dir)
    assert read_run_record(run_dir).resumes[0].from_epoch == 3  # what the newest state said...
    assert "epoch-0003 does not load" in (run_dir / "train.log").read_text()  # ...but it fell back to epoch 2
    assert history(run_dir) == history(reference.run_dir)
    assert metrics(run_dir)["final"] == metrics(reference.run_dir)["final"]


def test_extend_a_finished_run_by_5_epochs_from_the_command_line(cli, tmp_path):
    data = make_image_folder(tmp_path / "images", {"cats": 12, "dogs": 12})
    config = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs"))
    first = cli("train", config, "--json", "--quiet")
    assert first.exit_code == 0, first.stderr
    run_dir = Path(json.loads(first.stdout)["run_dir"])
    before = history(run_dir)

    extended = cli("train", "--resume", run_dir, "--set", "train.epochs=7", "--json", "--quiet")
    assert extended.exit_code == 0, extended.stderr
    assert json.loads(extended.stdout)["run_dir"] == str(run_dir)
    after = history(run_dir)
    assert [int(r["epoch"]) for r in after] == list(range(1, 8)) and after[:2] == before
    assert metrics(run_dir)["epochs"]["total"] == 7 and metrics(run_dir)["resumes"] == 1
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 7
    listed = cli("runs", "--runs-dir", tmp_path / "runs", "--json")
    assert [(r["status"], r["resumes"]) for r in json.loads(listed.stdout)] == [("completed", 1)]
    table = cli("runs", "--runs-dir", tmp_path / "runs")
    assert "resumes" in table.stdout

    # What resume refuses, each in one line with exit 2 and the run left as it was.
    snapshot = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    refusals = [
        (("train", "--resume", run_dir), "already complete"),
        (("train", "--resume", run_dir, "--set", "data.batch_size=4"), "data.batch_size cannot change when resuming"),
        (("train", "--resume", run_dir, "--set", "fine_tune.epochs=3"), "no fine-tuning phase"),
        (("train", "--resume", run_dir, "--set", "train.epochs=3"), "already did 7 epochs"),
        (("train", config, "--resume", run_dir), "not both"),
        (("train", "--resume", tmp_path / "nowhere"), "run folder not found"),
    ]
    for args, message in refusals:
        refused = cli(*args)
        assert refused.exit_code == 2 and message in refused.stderr, (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == snapshot

    record = read_run_record(run_dir).to_dict()
    parent = os.getppid()
    live = {**record, "status": "running", "pid": parent, "pid_started": None}
    (run_dir / "run.json").write_text(json.dumps(live))
    refused = cli("train", "--resume", run_dir)
    assert refused.exit_code == 2 and f"still running (pid {parent})" in refused.stderr
    (run_dir / "run.json").write_text(json.dumps(record))
    with RunLock(run_dir):  # two resumes started at the same moment: the second finds the folder locked
        refused = cli("train", "--resume", run_dir)
    assert refused.exit_code == 2 and "still running (another process" in refused.stderr
    (run_dir / "run.json").write_text(json.dumps({**record, "format_version": 99}))
    refused = cli("train", "--resume", run_dir)
    assert refused.exit_code == 2 and "run format 99 is not supported" in refused.stderr
    (run_dir / "run.json").write_text(json.dumps(record))

    # An image edited in place (same name, other bytes) is other data too.
    edited = sorted((data / "cats").iterdir())[0]
    original = edited.read_bytes()
    write_image(edited, np.full((16, 16, 3), 9, dtype=np.uint8))
    refused = cli("train", "--resume", run_dir, "--set", "train.epochs=8")
    assert refused.exit_code == 2 and "contents of the images changed" in refused.stderr
    assert read_run_record(run_dir).status == "completed"
    edited.write_bytes(original)
    again = cli("train", "--resume", run_dir, "--set", "train.epochs=8", "--quiet")
    assert again.exit_code == 0, again.stderr


def test_extending_an_early_stopped_phase_restarts_its_patience(tmp_path):
    data = make_image_folder(tmp_path / "images", {"cats": 12, "dogs": 12})
    raw = tiny_config(
        data,
        tmp_path / "runs",
        train={"epochs": 30, "learning_rate": 0.3, "early_stopping": {"patience": 1, "monitor": "val_accuracy"}},
    )
    result = train(load_config(raw))
    ran = result.metrics.epochs["total"]
    assert ran < 30
    state = checkpoints.newest_state(result.run_dir)
    assert state.stopped_early and state.early_stopping.wait == 1
    resume(result.run_dir, overrides=["train.epochs=40"])
    total = metrics(result.run_dir)["epochs"]["total"]
    assert total >= ran + 1  # patience restarted: at least one more epoch, and it stops again
    assert [int(r["epoch"]) for r in history(result.run_dir)] == list(range(1, total + 1))


def test_disk_full_is_one_line_exit_2_and_earlier_runs_untouched(cli, tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "images", {"cats": 12, "dogs": 12})
    config = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs", train={"epochs": 1}))
    good = Path(json.loads(cli("train", config, "--json", "--quiet").stdout)["run_dir"])
    before = {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(callbacks, "write_checkpoint", full)
    result = cli("train", config, "--quiet")
    assert result.exit_code == 2 and "disk full" in result.stderr and "tlcli train --resume" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {p.relative_to(good): p.read_bytes() for p in good.rglob("*") if p.is_file()} == before
    unwritable = cli("train", config, "--quiet", "--runs-dir", "/proc/no-such-runs")
    assert unwritable.exit_code == 2 and "--runs-dir" in unwritable.stderr


def test_ctrl_c_during_an_epoch_leaves_a_resumable_run(tmp_path):
    data = make_image_folder(tmp_path / "images", {"cats": 24, "dogs": 24})
    raw = tiny_config(
        data, tmp_path / "runs", cache="off", train={"epochs": 60, "learning_rate": 0.01}, data={"batch_size": 2}
    )
    config = write_config(tmp_path / "c.yaml", raw)
    tlcli = Path(sys.executable).with_name("tlcli")
    command = [str(tlcli)] if tlcli.is_file() else [sys.executable, "-c", "from tlcli.cli import main; main()"]
    process = subprocess.Popen(
        command + ["train", str(config), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    deadline = time.monotonic() + 90
    run_dir = None
    while time.monotonic() < deadline and process.poll() is None:
        found = list((tmp_path / "runs").glob("*/history.csv")) if (tmp_path / "runs").is_dir() else []
        if found and len(history(found[0].parent)) >= 2:
            run_dir = found[0].parent
            break
        time.sleep(0.02)
    assert run_dir is not None, "training did not reach epoch 2"
    time.sleep(0.05)  # somewhere inside the next epoch
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"resume with: tlcli train --resume {run_dir}" in stderr
    record = read_run_record(run_dir)
    assert record.status == "interrupted" and record.pid is None
    done = checkpoints.newest_state(run_dir).epoch
    assert [int(r["epoch"]) for r in history(run_dir)] == list(range(1, done + 1))  # the partial epoch left no row
    assert done < 60
    resume(run_dir, overrides=[f"train.epochs={done + 2}"])
    assert [int(r["epoch"]) for r in history(run_dir)] == list(range(1, done + 3))
    assert read_run_record(run_dir).status == "completed"


def test_fault_injection_two_trials():
    """The CI version of benchmarks/fault_injection.py: SIGKILL at two random moments, resume, compare."""
    script = ROOT / "benchmarks" / "fault_injection.py"
    done = subprocess.run(
        [sys.executable, str(script), "--trials", "2", "--quick"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2/2 trials passed" in done.stdout
