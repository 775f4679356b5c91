"""MLflow tracking against real backends: an SQLite store, and a real `mlflow server` stopped mid-run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import make_image_folder, tiny_config, write_config

mlflow = pytest.importorskip("mlflow")

from tlcli.progress import Reporter  # noqa: E402
from tlcli.runs.records import read_run_record  # noqa: E402


def two_phase(data: Path, runs_dir: Path, **sections) -> dict:
    raw = tiny_config(data, runs_dir, name="tracked", **sections)
    raw["base"] = {"name": "SmallCNN", "weights": "none", "args": {"filters": 8, "blocks": 2}, "trainable": 4}
    raw["fine_tune"] = {"unfreeze": "all", "epochs": 2, "learning_rate": 0.001, "when": "always"}
    return raw


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One migrated SQLite store for the module (a fresh store's migrations take seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'store.db'}"
    mlflow.MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", {"cats": 16, "dogs": 16})


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, store, data):
    """A two-phase run (2 + 2 epochs) trained with `tlcli train --mlflow URI`."""
    from typer.testing import CliRunner

    from tlcli.cli import _register_commands, app

    _register_commands()
    tmp = tmp_path_factory.mktemp("tracked")
    raw = two_phase(data, tmp / "runs", tracking={"mlflow": {"experiment": "tests", "tags": {"team": "vision"}}})
    config = write_config(tmp / "config.yaml", raw)
    result = CliRunner().invoke(app, ["train", str(config), "--mlflow", store, "--json", "--quiet"])
    assert result.exit_code == 0, result.stdout + result.stderr
    return Path(json.loads(result.stdout)["run_dir"])


def mlflow_run_id(run_dir: Path) -> str:
    return read_run_record(run_dir).tracking["mlflow"]["run_id"]


def steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_a_run_logs_params_epochs_of_both_phases_tags_artifacts_and_the_model(tracked_run, store, tmp_path):
    client = mlflow.MlflowClient(store)
    record = read_run_record(tracked_run).tracking["mlflow"]
    assert record["failed"] is None and record["tracking_uri"] == store
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == tracked_run.name
    assert client.get_experiment(run.info.experiment_id).name == "tests"
    params = run.data.params
    assert params["train.epochs"] == "2" and params["fine_tune.unfreeze"] == "all" and params["base.name"] == "SmallCNN"
    assert not any(key.startswith("tracking") for key in params)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "phase"):
        assert steps(client, run.info.run_id, key) == [1, 2, 3, 4], key
    assert [m.value for m in sorted(client.get_metric_history(run.info.run_id, "phase"), key=lambda m: m.step)] == [
        0,
        0,
        1,
        1,
    ]
    metrics = json.loads((tracked_run / "metrics.json").read_text())
    assert run.data.metrics["final_val_accuracy"] == pytest.approx(metrics["final"]["val_accuracy"])
    assert run.data.metrics["best_epoch"] == metrics["best"]["epoch"]
    tags = run.data.tags
    assert tags["team"] == "vision" and tags["tlcli.base"] == "SmallCNN" and tags["tlcli.status"] == "completed"
    assert tags["tlcli.dataset_fingerprint"] == json.loads((tracked_run / "dataset.json").read_text())["fingerprint"]
    assert "tlcli.version" in tags and "tlcli.device" in tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "config.yaml",
        "metrics.json",
        "history.csv",
        "curves.png",
        "data_problems.json",
        "eval",
        "model",
    } <= artifacts
    report = client.list_artifacts(run.info.run_id, "eval")[0].path
    assert any(a.path.endswith(".png") for a in client.list_artifacts(run.info.run_id, report))
    model = mlflow.keras.load_model(
        client.download_artifacts(run.info.run_id, "model", str(tmp_path))
    )  # an MLflow Keras-flavour model
    assert model.output_shape[-1] == 2


def test_tlcli_runs_shows_the_mlflow_run_id(tracked_run, cli):
    listed = json.loads(cli("runs", "--runs-dir", tracked_run.parent, "--json").stdout)
    assert listed[0]["mlflow_run_id"] == mlflow_run_id(tracked_run)
    assert (
        mlflow_run_id(tracked_run)[:8] in cli("runs", "--runs-dir", tracked_run.parent).stdout
    )  # the table has a column for it


def test_resume_continues_the_same_mlflow_run_with_contiguous_steps(tracked_run, store, cli):
    run_id = mlflow_run_id(tracked_run)
    result = cli(
        "train", "--resume", tracked_run, "--set", "fine_tune.epochs=3", "--quiet"
    )  # no --mlflow: run.json says where
    assert result.exit_code == 0, result.stderr
    assert mlflow_run_id(tracked_run) == run_id
    client = mlflow.MlflowClient(store)
    for key in ("loss", "val_loss", "phase"):
        assert steps(client, run_id, key) == [1, 2, 3, 4, 5], key
    run = client.get_run(run_id)
    assert run.data.tags["tlcli.resume.1"] == "fine_tune.epochs=3" and run.info.status == "FINISHED"
    assert run.data.params["fine_tune.epochs"] == "2"  # parameters never change: the resume's --set is the tag


def test_evaluate_logs_its_figures_to_the_runs_mlflow_run(tracked_run, store, cli):
    result = cli("evaluate", tracked_run, "--json")
    assert result.exit_code == 0, result.stderr
    accuracy = json.loads(result.stdout)["accuracy"]
    run = mlflow.MlflowClient(store).get_run(mlflow_run_id(tracked_run))
    assert run.data.metrics["eval_val_accuracy"] == pytest.approx(accuracy)
    assert "eval_val_macro_avg.f1" in run.data.metrics


def test_credentials_never_reach_the_run_folder(tmp_path, data, monkeypatch):
    from tlcli.config.loading import dump_config, load_config
    from tlcli.tracking import TrackingRequest, resolve

    raw = tiny_config(
        data, tmp_path / "runs", tracking={"mlflow": {"tracking_uri": "https://bob:hunter2@mlflow.example:5000"}}
    )
    config = load_config(raw)
    assert "hunter2" not in dump_config(config) and "bob@mlflow.example" in dump_config(config)
    settings = resolve(config, TrackingRequest())
    assert settings.uri.endswith("bob:hunter2@mlflow.example:5000") and "hunter2" not in settings.shown_uri
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve(load_config(tiny_config(data, tmp_path / "runs"))) is None  # off by default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve(load_config(tiny_config(data, tmp_path / "runs"))).uri == "http://127.0.0.1:1"


def test_missing_mlflow_is_one_line(monkeypatch):
    from tlcli.errors import UserError
    from tlcli.tracking.settings import require_mlflow

    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without the package looks like to import
    with pytest.raises(UserError, match=r'pip install "tlcli\[mlflow\]"') as caught:
        require_mlflow()
    assert caught.value.exit_code == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
def test_strict_tracking_refuses_an_unreachable_server_at_start_up(tmp_path, data, cli):
    config = write_config(tmp_path / "config.yaml", tiny_config(data, tmp_path / "runs"))
    result = cli("train", config, "--mlflow", f"http://127.0.0.1:{free_port()}", "--strict-tracking", "--quiet")
    assert result.exit_code == 2 and "--strict-tracking" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `mlflow server` on a free localhost port (its own SQLite store and artifact folder)."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    backend = f"sqlite:///{folder / 'server.db'}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            assert process.poll() is None, (folder / "server.log").read_text()[-2000:]
            time.sleep(0.5)
    else:
        os.killpg(process.pid, 9)
        pytest.fail("mlflow server did not start in 90 s")
    yield process, url, backend
    if process.poll() is None:
        os.killpg(process.pid, 9)
        process.wait(10)
    log.close()


class KillsTheServer(Reporter):
    """Stops the server at the end of epoch `at` (before that epoch is logged: every earlier one is); counts
    warnings."""

    def __init__(self, process, at: int = 2):
        self.process, self.at, self.warnings, self.epochs = process, at, [], 0

    def warn(self, message: str) -> None:
        super().warn(message)
        self.warnings.append(message)

    def epoch_end(self, phase, epoch, epochs, logs):
        self.epochs += 1
        if self.epochs == self.at:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)


@pytest.mark.timeout(240)
def test_a_server_stopped_mid_run_never_stops_training(server, data, tmp_path, monkeypatch):
    from tlcli import load_config, train
    from tlcli.runs.folder import is_complete
    from tlcli.tracking import TrackingRequest
    from tlcli.training.options import RunOptions

    process, url, backend = server
    raw = two_phase(data, tmp_path / "runs")
    clock = time.perf_counter()
    baseline = train(
        load_config(raw), options=RunOptions(tracking=TrackingRequest(mlflow_uri=url))
    )  # the server up all through
    up = time.perf_counter() - clock
    run_id = mlflow_run_id(baseline.run_dir)
    assert mlflow.MlflowClient(url).get_run(run_id).info.status == "FINISHED"
    assert steps(mlflow.MlflowClient(url), run_id, "val_loss") == [1, 2, 3, 4]

    reporter = KillsTheServer(process)
    clock = time.perf_counter()
    result = train(load_config(raw), reporter=reporter, options=RunOptions(tracking=TrackingRequest(mlflow_uri=url)))
    down = time.perf_counter() - clock
    assert is_complete(result.run_dir) and read_run_record(result.run_dir).status == "completed"
    assert result.metrics.epochs["total"] == 4 and len((result.run_dir / "history.csv").read_text().splitlines()) == 5
    tracked = [w for w in reporter.warnings if "MLflow" in w]
    assert len(tracked) == 1, reporter.warnings
    record = read_run_record(result.run_dir).tracking["mlflow"]
    assert record["failed"] and record["run_id"]
    assert steps(mlflow.MlflowClient(backend), record["run_id"], "loss") == [1]  # read from the dead server's own store
    assert down < up + 10, (down, up)


@pytest.mark.timeout(180)
def test_a_study_is_one_parent_run_with_a_nested_run_per_trial(tracked_run, store, data, tmp_path):
    pytest.importorskip("optuna")
    from tlcli import load_config, tune

    raw = tiny_config(
        data, tmp_path / "runs", name="study", tracking={"mlflow": {"tracking_uri": store, "experiment": "studies"}}
    )
    raw["base"] = {"run": str(tracked_run), "trainable": "none"}
    raw["train"] = {"learning_rate": 0.01, "epochs": 3}
    raw["tune"] = {"trials": 3, "space": {"train.learning_rate": {"low": 1.0e-3, "high": 0.1, "log": True}}}
    result = tune(load_config(raw))
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("studies")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == result.tune_dir.name
    assert len(children) == 3 and {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all("train.learning_rate" in r.data.params for r in children)
    assert {r.data.tags["tlcli.trial"] for r in children} == {"0", "1", "2"}
    assert any(a.path == "trials.csv" for a in client.list_artifacts(parents[0].info.run_id))


@pytest.mark.timeout(180)
def test_tune_mlflow_logs_the_study_and_the_train_best_run_without_a_tracking_section(
    tracked_run, store, data, tmp_path
):
    """`tlcli tune --mlflow URI` is `tlcli train --mlflow URI` for a study: the flag alone turns tracking on, for
    --train-best's run too."""
    pytest.importorskip("optuna")
    from typer.testing import CliRunner

    from tlcli.cli import app

    raw = tiny_config(data, tmp_path / "runs", name="flagged")
    raw["base"] = {"run": str(tracked_run), "trainable": "none"}
    raw["train"] = {"learning_rate": 0.01, "epochs": 2}
    raw["tune"] = {"trials": 2, "space": {"train.learning_rate": {"low": 1.0e-3, "high": 0.1, "log": True}}}
    result = CliRunner().invoke(
        app,
        [
            "tune",
            str(write_config(tmp_path / "study.yaml", raw)),
            "--mlflow",
            store,
            "--train-best",
            "--json",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    client = mlflow.MlflowClient(store)
    study_runs = client.search_runs([client.get_experiment_by_name("flagged").experiment_id])
    parents = [r for r in study_runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_name for r in parents] == [Path(out["tune_dir"]).name]
    assert sum("mlflow.parentRunId" in r.data.tags for r in study_runs) == 2
    best_run = Path(out["train_best"]["run_dir"])
    logged = client.search_runs([client.get_experiment_by_name("flagged-best").experiment_id])
    assert [r.info.run_id for r in logged] == [mlflow_run_id(best_run)] and logged[0].info.status == "FINISHED"


def test_nothing_imports_mlflow_until_tracking_is_on():
    code = (
        "import sys, tlcli, tlcli.cli, tlcli.tracking.runs, tlcli.tracking.studies, tlcli.training.api; "
        "assert 'mlflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
