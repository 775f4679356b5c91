"""Several replicas (issue 15): MirroredStrategy over two logical CPUs, `--workers 2` (MultiWorkerMirroredStrategy over
local processes), a killed worker, a killed chief, a killed launcher, a worker that never starts, resume, and a cluster
larger than the machine's memory.

Every run is a `python -m tlcli` process (TensorFlow's devices and its cluster are per process). The model has
neither BatchNorm nor dropout and determinism is on, so replicas must agree with one device: the stated tolerance
is 1e-4 relative on every loss and the same accuracies.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_image_folder, one_line, tiny_config, write_config

from tlcli.errors import ConfigError, UserError
from tlcli.modeling.devices import cluster_from_env, plan_devices
from tlcli.training.launcher import Cluster, _watch

TOLERANCE = 1e-4
pytestmark = pytest.mark.timeout(600)


def tlcli(*args, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tlcli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def train_json(config: Path, runs: Path, *extra, env: dict | None = None) -> dict:
    done = tlcli("train", config, "--runs-dir", runs, "--json", "--quiet", *extra, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def history(run_dir: str | Path) -> list[dict]:
    with open(Path(run_dir) / "history.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def assert_same_training(a: dict, b: dict) -> None:
    """Same figures within the tolerance, epoch by epoch and at the end."""
    rows_a, rows_b = history(a["run_dir"]), history(b["run_dir"])
    assert [(r["phase"], r["epoch"]) for r in rows_a] == [(r["phase"], r["epoch"]) for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        for key in ("loss", "val_loss"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=TOLERANCE), (key, ra, rb)
        assert float(ra["val_accuracy"]) == float(rb["val_accuracy"])
    assert a["final"]["val_loss"] == pytest.approx(b["final"]["val_loss"], rel=TOLERANCE)
    assert a["final"]["val_accuracy"] == b["final"]["val_accuracy"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Data, a source run whose frozen base the two-phase config fine-tunes, and the configs."""
    root = tmp_path_factory.mktemp("distributed")
    data = root / "data"
    make_image_folder(data / "train", {"a": 20, "b": 20, "c": 20}, seed=1)
    make_image_folder(data / "val", {"a": 6, "b": 6, "c": 6}, seed=2)
    common = {
        "seed": 3,
        "data": {"dir": str(data), "image_size": 16, "batch_size": 10},
        "head": {"dropout": 0.0},
        "probe": "off",
        "runtime": {"deterministic": True, "collective_timeout_s": 20},
    }
    scratch_base = {"name": "SmallCNN", "weights": "none", "args": {"filters": 4, "blocks": 2, "batch_norm": False}}
    source = write_config(
        root / "source.yaml",
        {**common, "name": "source", "base": scratch_base, "train": {"epochs": 2, "learning_rate": 0.01, "l2": 0.0}},
    )
    source_run = train_json(source, root / "source-runs")["run_dir"]
    phases = {
        **common,
        "name": "phases",
        "base": {"run": source_run, "trainable": "none"},
        "train": {"epochs": 2, "learning_rate": 0.01, "l2": 0.0},
        # the moving average too (swapped in and out across replicas, resumed with the optimizer), epochs sized
        # to a time budget (every replica times its share; every worker runs the chief's count: here max_epochs),
        # and discriminative rates (each replica's update step scales its variables' rates)
        "fine_tune": {
            "unfreeze": 3,
            "epochs": "auto",
            "max_epochs": 2,
            "budget_min": 60,
            "learning_rate": 0.001,
            "ema_epochs": 1.0,
            "bottom_lr_ratio": 0.1,
            "when": "always",
        },
    }
    long = {
        **common,
        "name": "long",
        "base": scratch_base,
        "train": {"epochs": 10, "learning_rate": 0.01, "l2": 0.0, "early_stopping": {"patience": 100}},
    }
    return {
        "root": root,
        "features": write_config(root / "features.yaml", phases),
        "images": write_config(root / "images.yaml", {**phases, "cache": "off"}),
        "long": write_config(root / "long.yaml", long),
    }


@pytest.fixture(scope="module")
def one_device(setup):
    root = setup["root"]
    return {kind: train_json(setup[kind], root / f"one-{kind}") for kind in ("features", "images")}


# ----------------------------------------------------------------------------- the plan


def test_tf_config_names_the_cluster_and_this_worker():
    spec = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 1}}
    cluster = cluster_from_env({"TF_CONFIG": json.dumps(spec)})
    assert cluster.workers == ("a:1", "b:2", "c:3") and cluster.index == 2 and not cluster.chief
    assert (
        cluster_from_env(
            {"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}})}
        )
        is None
    )  # one worker: no cluster
    assert cluster_from_env({}) is None
    for bad, expected in (
        ("{", "not a cluster spec"),
        (
            json.dumps({"cluster": {"worker": ["a:1", "b:2"], "ps": ["p:1"]}, "task": {"type": "worker", "index": 0}}),
            "chief and worker tasks only",
        ),
        (
            json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 5}}),
            "not in the cluster",
        ),
    ):
        with pytest.raises(UserError, match=expected):
            cluster_from_env({"TF_CONFIG": bad})
    plan = plan_devices("auto", "auto", [], cluster)
    assert plan.strategy == "multi_worker" and plan.replicas == 3 and plan.worker_index == 2
    assert (
        plan.to_dict()["hosts"] == ["a", "b", "c"] and "MultiWorkerMirroredStrategy over 3 workers" in plan.describe()
    )
    logical = plan_devices("auto", "auto", [], logical_cpus=2)
    assert logical.strategy == "mirrored" and logical.replicas == 2 and logical.chief


def test_what_micro_batches_on_several_replicas_cannot_run_is_refused_before_any_work(tmp_path):
    from tlcli.config.loading import load_config
    from tlcli.training.distributed import check_accumulation

    def config(**fine_tune):
        raw = tiny_config(tmp_path / "data", tmp_path / "runs", data={"batch_size": 8, "micro_batch": 4})
        raw["base"] = {"name": "MobileNetV2", "weights": "imagenet", "trainable": "none"}  # never built here
        return load_config(raw | {"fine_tune": {"unfreeze": 2, **fine_tune}})

    two = plan_devices("auto", "auto", [], logical_cpus=2)
    check_accumulation(config(ema_epochs=1), plan_devices("auto", "auto", []))  # one device: Keras's own path
    check_accumulation(config(), two)
    with pytest.raises(ConfigError, match="micro_batch") as caught:
        check_accumulation(config(), dataclasses.replace(two, mixed_precision=True))
    assert caught.value.key == "data.micro_batch" and "runtime.mixed_precision: off" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        check_accumulation(config(ema_epochs=1), two)
    assert caught.value.key == "fine_tune.ema_epochs" and "remove one" in str(caught.value)


# ----------------------------------------------------------------------------- several devices of one machine


@pytest.mark.parametrize("kind", ["features", "images"])
def test_two_logical_cpus_train_both_phases_as_one_device(setup, one_device, kind):
    mirrored = train_json(setup[kind], setup["root"] / f"mirrored-{kind}", env={"TLCLI_LOGICAL_CPUS": "2"})
    assert mirrored["devices"]["strategy"] == "mirrored" and mirrored["devices"]["replicas"] == 2
    assert mirrored["cache"]["mode"] == ("features" if kind == "features" else "images")
    assert {row["phase"] for row in history(mirrored["run_dir"])} == {"train", "fine_tune"}
    assert_same_training(mirrored, one_device[kind])
    env = json.loads((Path(mirrored["run_dir"]) / "env.json").read_text())
    assert env["devices"]["logical_cpus"] == 2


def test_micro_batches_on_two_replicas_train_as_on_one_device(setup):
    """Gradient accumulation (`data.micro_batch`) under MirroredStrategy: the same updates as one device."""
    root = setup["root"]
    raw = yaml.safe_load(setup["features"].read_text())
    raw["data"]["micro_batch"] = 5  # two micro-batches an update of 10
    del raw["fine_tune"]["ema_epochs"]  # refused with micro-batches on several replicas
    config = write_config(root / "micro.yaml", raw)
    mirrored = train_json(config, root / "micro-mirrored", env={"TLCLI_LOGICAL_CPUS": "2"})
    assert mirrored["devices"]["replicas"] == 2
    assert_same_training(mirrored, train_json(config, root / "micro-one"))


@pytest.mark.parametrize("resume_on", ["2", ""], ids=["two-replicas", "one-device"])
def test_a_two_replica_run_resumes_from_its_checkpoints(setup, one_device, resume_on):
    """The checkpoints of a two-replica run resume on two replicas, and on one device (the replica count may change)."""
    root = setup["root"]
    first = train_json(
        setup["images"],
        root / f"mirrored-resume-{resume_on or 1}",
        "--set",
        "fine_tune.budget_min=null",  # a phase sized to a budget resumes with its count: here it is extended
        "--set",
        "fine_tune.epochs=1",
        env={"TLCLI_LOGICAL_CPUS": "2"},
    )
    resumed = tlcli(
        "train",
        "--resume",
        first["run_dir"],
        "--set",
        "fine_tune.epochs=2",
        "--json",
        "--quiet",
        env={"TLCLI_LOGICAL_CPUS": resume_on},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_training(json.loads(resumed.stdout), one_device["images"])


# ----------------------------------------------------------------------------- several workers


@pytest.mark.parametrize("kind", ["features", "images"])
def test_two_workers_train_both_phases_as_one_process_and_only_the_chief_writes(setup, one_device, kind):
    runs = setup["root"] / f"workers-{kind}"
    store = f"sqlite:///{setup['root'] / 'mlflow.db'}"
    tracked = kind == "features" and importlib.util.find_spec("mlflow") is not None  # and only the chief logs to MLflow
    cluster = train_json(setup[kind], runs, "--workers", "2", *(["--mlflow", store] if tracked else []))
    assert (
        cluster["devices"]["strategy"] == "multi_worker"
        and cluster["devices"]["replicas"] == 2
        and cluster["devices"]["worker_index"] == 0
    )
    assert_same_training(cluster, one_device[kind])
    assert [p.name for p in runs.iterdir()] == [Path(cluster["run_dir"]).name]  # one run folder: the chief's
    run = Path(cluster["run_dir"])
    assert (run / "model.keras").is_file() and (run / "workers" / "1.log").is_file()
    env = json.loads((run / "env.json").read_text())
    assert len(env["devices"]["workers"]) == 2 and env["devices"]["hosts"] == ["localhost"]
    if kind == "features":
        assert (
            cluster["cache"]["hits"] + cluster["cache"]["extracted"] == 78
        )  # every file's features, exchanged between the workers
    if tracked:
        import mlflow

        client = mlflow.MlflowClient(store)
        logged = client.search_runs([e.experiment_id for e in client.search_experiments()])
        record = json.loads((run / "run.json").read_text())
        assert [r.info.run_id for r in logged] == [record["tracking"]["mlflow"]["run_id"]] and logged[
            0
        ].info.status == "FINISHED"
        assert sorted(m.step for m in client.get_metric_history(logged[0].info.run_id, "val_loss")) == [
            int(row["epoch"]) for row in history(run)
        ]  # each epoch once


def _worker_pid(launcher: subprocess.Popen, index: int) -> int | None:
    """The launcher's child whose TF_CONFIG names task `index`."""
    children = subprocess.run(
        ["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True, timeout=10
    ).stdout.split()
    for child in children:
        if f'"index": {index}}}'.encode() in Path(f"/proc/{child}/environ").read_bytes():
            return int(child)
    return None


def _alive(pids: list[int]) -> list[int]:
    """The processes of `pids` still running (a zombie has ended)."""
    running = []
    for pid in pids:
        with contextlib.suppress(OSError):
            if "zombie" not in Path(f"/proc/{pid}/status").read_text():
                running.append(pid)
    return running


def _launch_and_wait_for_two_epochs(setup, runs: Path, env: dict | None = None) -> subprocess.Popen:
    launcher = subprocess.Popen(
        [sys.executable, "-m", "tlcli", "train", setup["long"], "--runs-dir", runs, "--workers", "2", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 180
    while (
        time.monotonic() < deadline
        and launcher.poll() is None
        and not any(len(history(run)) >= 2 for run in runs.glob("*") if (run / "history.csv").is_file())
    ):
        time.sleep(0.2)
    return launcher


def test_a_killed_worker_fails_the_run_within_the_bound_and_resume_completes_it(setup):
    runs = setup["root"] / "killed"
    launcher = _launch_and_wait_for_two_epochs(setup, runs)
    try:
        worker = _worker_pid(launcher, 1)
        assert worker is not None, "the second worker is not running"
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = launcher.communicate(timeout=60)
        ended = time.monotonic() - killed
    finally:
        launcher.kill()
    assert launcher.returncode == 1 and ended < 10, (ended, stderr[-2000:])  # docs: within 10 s under --workers
    assert "worker 1 of 2 was killed by signal 9" in stderr.strip().splitlines()[-1]
    (run,) = runs.iterdir()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "worker 1" in record["error"]
    resumed = tlcli("train", "--resume", run, "--workers", "2", "--json", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        json.loads(resumed.stdout)["epochs"]["total"] == 10
        and json.loads((run / "run.json").read_text())["status"] == "completed"
    )
    assert [int(r["epoch"]) for r in history(run)] == list(range(1, 11))  # contiguous: the partial epoch was dropped


def _ended(*argv: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", *argv])
    process.wait(30)
    return process


@pytest.mark.parametrize(
    "chief, worker, expected",
    [
        ("raise SystemExit(1)", "import os; os.kill(os.getpid(), 9)", (1, "worker 1 of 2 was killed by signal 9")),
        ("raise SystemExit(2)", "raise SystemExit(2)", (2, None)),  # a bad config fails all: the chief says why
    ],
)
def test_a_failed_chief_names_the_worker_killed_within_the_same_poll(tmp_path, chief, worker, expected):
    """A SIGKILLed worker fails the chief's next collective at once, so the launcher can find both ended at its
    next look: the killed worker, which the chief cannot name, is the cause it reports."""
    cluster = Cluster(tmp_path, [_ended(chief), _ended(worker)], [tmp_path / "0.log", tmp_path / "1.log"])
    code, why = _watch(cluster)
    assert code == expected[0] and (why is None if expected[1] is None else expected[1] in why), why


def test_a_killed_chief_fails_the_run_with_one_line_naming_it_and_the_run_resumes(setup):
    """SIGKILL leaves the chief no moment to say why or to record the run's end: the launcher does both, stops the
    other worker, and the checkpoints written before the kill resume the run."""
    runs = setup["root"] / "chief-killed"
    launcher = _launch_and_wait_for_two_epochs(setup, runs)
    try:
        chief, other = _worker_pid(launcher, 0), _worker_pid(launcher, 1)
        assert None not in (chief, other), "the workers are not running"
        os.kill(chief, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = launcher.communicate(timeout=60)
        ended = time.monotonic() - killed
    finally:
        launcher.kill()
    (run,) = runs.iterdir()
    assert launcher.returncode == 1 and ended < 10, (launcher.returncode, ended, stderr[-2000:])  # not 247 (-9)
    assert one_line(subprocess.CompletedProcess([], 1, "", stderr)) == (
        "error: worker 0 of 2 (the chief) was killed by signal 9 (SIGKILL); the other workers were stopped; "
        f"the run folder {run} is marked failed, continue it with: tlcli train --resume {run} --workers 2"
    )
    assert not _alive([other])
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("worker 0 of 2 (the chief) was killed by")
    assert list((run / "checkpoints").glob("epoch-*")), "the checkpoints written before the kill are gone"
    resumed = tlcli("train", "--resume", run, "--json", "--quiet")  # one process: the chief's checkpoints hold it all
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["epochs"]["total"] == 10
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert [int(r["epoch"]) for r in history(run)] == list(range(1, 11))


def test_a_killed_launcher_takes_its_workers_with_it_and_leaves_one_folder_the_next_launch_removes(setup, tmp_path):
    """A SIGKILLed launcher can stop nothing itself: the kernel ends its workers (TensorFlow would catch a SIGTERM
    and train on to the last epoch), and its scratch folder, left behind, goes with the next launch."""
    runs, scratch = setup["root"] / "launcher-killed", tmp_path / "tmp"
    scratch.mkdir()
    launcher = _launch_and_wait_for_two_epochs(setup, runs, env={"TMPDIR": str(scratch)})
    workers = [_worker_pid(launcher, index) for index in (0, 1)]
    try:
        assert None not in workers, "the workers are not running"
        launcher.kill()
        launcher.wait(timeout=30)
        deadline = time.monotonic() + 5
        while _alive(workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(workers), "the workers outlived their launcher by 5 s"
    finally:
        for pid in _alive([pid for pid in workers if pid]):
            os.kill(pid, signal.SIGKILL)
        launcher.stdout.close()
        launcher.stderr.close()
    (run,) = runs.iterdir()
    left = [p for p in scratch.iterdir() if p.name.startswith("tlcli-")]
    assert [p.name.split("-")[2].split(".")[0] for p in left] == [str(launcher.pid)]  # one folder: the launcher's
    assert list(left[0].glob("tlcli-worker1-*")), "the other worker's scratch is not inside the launcher's"
    from tlcli.training.launcher import sweep_orphans

    assert sweep_orphans(scratch) == left and not left[0].exists()  # what the next --workers launch does first
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted" and f"launcher (pid {launcher.pid}) was killed" in record["error"]
    assert f"tlcli train --resume {run} --workers 2" in record["error"] and (run / "workers" / "1.log").is_file()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_launcher_stops_every_worker_and_marks_the_run_interrupted(setup, signum):
    runs = setup["root"] / f"stopped-{signum.name}"
    launcher = _launch_and_wait_for_two_epochs(setup, runs)
    try:
        workers = [_worker_pid(launcher, index) for index in (0, 1)]
        assert None not in workers, "the workers are not running"
        launcher.send_signal(signum)  # to the launcher alone: it must pass the stop on
        _, stderr = launcher.communicate(timeout=60)
    finally:
        launcher.kill()
    assert launcher.returncode == 130, stderr[-2000:]
    assert not _alive(workers)
    (run,) = runs.iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


def test_a_worker_that_never_starts_does_not_hang_the_chief(setup):
    from tlcli.training.launcher import free_ports

    spec = {
        "cluster": {"worker": [f"localhost:{port}" for port in free_ports(2)]},
        "task": {"type": "worker", "index": 0},
    }
    started = time.monotonic()
    done = tlcli(
        "train",
        setup["long"],
        "--runs-dir",
        setup["root"] / "alone",
        "--set",
        "runtime.worker_start_timeout_s=3",
        env={"TF_CONFIG": json.dumps(spec)},
        timeout=120,
    )
    assert done.returncode == 1 and time.monotonic() - started < 60
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: TF_CONFIG: not every worker of the cluster joined within 3 s")
    )
    assert not (setup["root"] / "alone").exists()  # nothing written


# ----------------------------------------------------------------------------- what a launcher leaves, and its bounds


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _orphan(tmp: Path, pid: int, ticks, run_dir: Path | None = None) -> Path:
    """A launcher's scratch folder as a launcher of `pid` (started at `ticks`) would leave it."""
    folder = Path(tempfile.mkdtemp(prefix=f"tlcli-cluster-{pid}.{ticks}-", dir=tmp))
    (folder / "worker-1.log").write_text("worker 1's output\n")
    if run_dir is not None:
        (folder / "run_dir").write_text(str(run_dir))
    return folder


def test_scratch_folders_of_killed_launchers_are_removed_by_the_next_launch(tmp_path, monkeypatch):
    """Only a dead launcher's folder goes (a pid now another process's counts as dead); its run, left `running`, is
    marked interrupted with the command that resumes it; live launchers' folders and other folders stay."""
    from tlcli.runs.records import read_run_record, start_run
    from tlcli.system import process_start_ticks
    from tlcli.training import launcher

    run = tmp_path / "runs" / "20260101-000000-x"
    run.mkdir(parents=True)
    dataclasses.replace(start_run(run, "x"), pid=_dead_pid()).write(run)
    me, started = os.getpid(), process_start_ticks(os.getpid())
    dead = _orphan(tmp_path, _dead_pid(), 12345, run)
    reused = _orphan(tmp_path, me, started + 1)
    live = _orphan(tmp_path, me, started)
    other = tmp_path / "tlcli-cluster-abc"
    other.mkdir()
    assert sorted(launcher.sweep_orphans(tmp_path)) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists() and live.exists() and other.exists()
    record = read_run_record(run)
    assert record.status == "interrupted" and "was killed" in record.error
    assert record.error.endswith(f"continue it with: tlcli train --resume {run} --workers 2")
    assert (run / "workers" / "1.log").read_text() == "worker 1's output\n"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a launch sweeps first, and leaves nothing if it fails
    monkeypatch.setattr(launcher, "free_ports", lambda count: (_ for _ in ()).throw(OSError("no port")))
    orphan = _orphan(tmp_path, _dead_pid(), 1)
    with pytest.raises(OSError, match="no port"):
        launcher.launch(["train", "c.yaml"], 2)
    assert sorted(p.name for p in tmp_path.glob("tlcli-cluster-*")) == sorted([live.name, other.name])
    assert not orphan.exists()


def test_zombie_processes_are_not_alive():
    """A process that ended but is not reaped yet (a killed launcher's worker until init reaps it) is dead: its run may
    be marked and resumed."""
    from tlcli.system import process_alive

    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while "Z" not in Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert not process_alive(child.pid)
    finally:
        child.wait()
    assert process_alive(os.getpid())


def test_workers_exit_when_their_launcher_is_gone_where_the_kernel_does_not_end_them():
    """The watch thread of a worker (PR_SET_PDEATHSIG is Linux's): it exits once its parent is no longer the
    launcher, and not before."""
    from tlcli.training.launcher import _exit_when_orphaned, watch_launcher

    exits = []
    _exit_when_orphaned(_dead_pid(), poll_s=0.01, end=exits.append)  # the launcher is not this process's parent
    assert exits == [1]
    import threading

    waiting = threading.Thread(target=_exit_when_orphaned, args=(os.getppid(), 0.01, exits.append), daemon=True)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive() and exits == [1]
    assert watch_launcher() is None  # a process no launcher started watches nothing


def test_more_workers_than_the_memory_holds_are_refused_before_anything_starts(cli, tmp_path, monkeypatch):
    from tlcli.training import launcher

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "images", tmp_path / "runs"))
    result = cli("train", config, "--workers", "100000")
    assert result.exit_code == 2
    assert re.fullmatch(
        rf"error: --workers: 100000 workers need at least [\d,.]+ GB of memory \({launcher.WORKER_MEMORY_MB} MB "
        r"each\), but this machine has [\d,.]+ GB available; (use --workers \d+ or fewer|train in one process .*)",
        one_line(result),
    )
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("tlcli-*"))  # nothing started
    monkeypatch.setattr(launcher, "memory_available_mb", lambda: 3.5 * launcher.WORKER_MEMORY_MB)
    launcher.check_memory(3)
    with pytest.raises(UserError, match=r"; use --workers 3 or fewer$"):
        launcher.check_memory(4)
    monkeypatch.setattr(launcher, "memory_available_mb", lambda: 1.5 * launcher.WORKER_MEMORY_MB)
    with pytest.raises(UserError, match=r"; train in one process \(without --workers\)$"):
        launcher.check_memory(2)
    monkeypatch.setattr(launcher, "memory_available_mb", lambda: None)  # not Linux: nothing to check against
    launcher.check_memory(100000)
