"""Issue 25, classes 1 and 2: a secret in a tracking or storage URI never reaches a run folder or the terminal, and
tracking never costs a run (a URI MLflow refuses, a store that hangs, a damaged store)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_image_folder, one_line, tiny_config, write_config

SECRET = "hunter2"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("data") / "images", {"cats": 8, "dogs": 8})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def folder_text(folder: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


def run_log(tmp: Path) -> str:
    return (next((tmp / "runs").iterdir()) / "train.log").read_text()


def train(cli, data: Path, tmp: Path, *args: str):
    config = write_config(tmp / "config.yaml", tiny_config(data, tmp / "runs", train={"epochs": 1}))
    started = time.monotonic()
    result = cli("train", config, "--quiet", *args)
    return result, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_uri_mlflow_refuses_warns_once_and_trains_untracked_without_writing_its_password(cli, data, tmp_path, caplog):
    """MLflow refuses a scheme it does not know, quoting the URI, password included, in its error."""
    result, _ = train(cli, data, tmp_path, "--mlflow", f"bogus://bob:{SECRET}@host/x", "--json")
    assert result.exit_code == 0, result.stderr
    assert run_log(tmp_path).count("MLflow tracking stopped") == 1
    assert (next((tmp_path / "runs").iterdir()) / "metrics.json").is_file()
    assert SECRET not in result.stderr + result.stdout + caplog.text + folder_text(tmp_path / "runs")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "uri",
    [
        f"http://bob:{SECRET}@127.0.0.1:{free_port()}",  # a dead server: MLflow's error text carries the URL
        "file:///tmp/tlcli-mlruns",  # the file store current MLflow refuses to construct
        f"bogus://bob:{SECRET}@host/x",  # a scheme MLflow refuses to construct a client for
    ],
)
def test_strict_tracking_with_a_store_that_cannot_be_used_is_exit_2_before_any_work(cli, data, tmp_path, uri):
    result, _ = train(cli, data, tmp_path, "--mlflow", uri, "--strict-tracking", "--json")
    assert result.exit_code == 2 and "--strict-tracking" in one_line(result)
    assert SECRET not in result.stderr + result.stdout
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_password_in_a_study_storage_url_is_never_printed(cli, data, tmp_path):
    config = write_config(tmp_path / "config.yaml", tiny_config(data, tmp_path / "runs"))
    url = f"postgresql://bob:{SECRET}@127.0.0.1:{free_port()}/db"
    result = cli("tune", config, "--storage", url, "--json", "--quiet")
    assert result.exit_code == 2
    assert SECRET not in result.stderr + result.stdout + folder_text(tmp_path)


def test_redaction_finds_a_password_anywhere_in_a_text():
    from tlcli.config.schema import redact_uri

    text = f"API request to https://bob:{SECRET}@h:5000/api failed; postgresql+psycopg2://a:{SECRET}@db/x"
    assert SECRET not in redact_uri(text) and "https://bob@h:5000/api" in redact_uri(text)


def test_the_config_reference_shows_no_uri_mlflow_refuses():
    from tlcli.config import reference_markdown

    assert "file:" not in reference_markdown()


CHECK = """
import sys, time
import mlflow  # its import is not part of the bound
from tlcli.errors import UserError
from tlcli.tracking.client import check_reachable
from tlcli.tracking.settings import TrackingSettings
started = time.monotonic()
try:
    check_reachable(TrackingSettings(sys.argv[1], "x", strict=True))
except UserError as exc:
    print(f"{time.monotonic() - started:.1f} {exc}")
"""


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.timeout(90)
def test_a_store_that_never_answers_is_given_up_within_10_s(tmp_path):
    """A separate process (the CLI's `--strict-tracking` check, without TensorFlow): the abandoned call holds MLflow's
    store-building lock for the rest of its process."""
    fifo = tmp_path / "store.db"
    os.mkfifo(fifo)  # SQLite opens it, then waits for bytes that never come
    result = subprocess.run(
        [sys.executable, "-c", CHECK, f"sqlite:///{fifo}"], capture_output=True, text=True, timeout=40
    )
    seconds, message = result.stdout.split(" ", 1)
    assert "no answer within 10 s" in message and float(seconds) < 12, result.stdout + result.stderr


@pytest.fixture(scope="module")
def completed(tmp_path_factory, data):
    """A completed tracked run, then its store damaged (its bytes replaced)."""
    from typer.testing import CliRunner

    from tlcli.cli import _register_commands, app

    _register_commands()
    tmp = tmp_path_factory.mktemp("completed")
    store = tmp / "store.db"
    config = write_config(tmp / "config.yaml", tiny_config(data, tmp / "runs", train={"epochs": 1}))
    result = CliRunner().invoke(app, ["train", str(config), "--mlflow", f"sqlite:///{store}", "--json", "--quiet"])
    assert result.exit_code == 0, result.stdout + result.stderr
    store.write_bytes(b"not a database" * 100)
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    _tracking_store_registry._get_store_with_resolved_uri.cache_clear()  # as a new process sees it: not yet opened
    return Path(json.loads(result.stdout)["run_dir"])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_damaged_store_never_rewrites_a_completed_run(cli, completed):
    result = cli("train", "--resume", completed, "--set", "train.epochs=2", "--quiet")  # extended: trains again
    assert result.exit_code == 0, result.stderr
    assert json.loads((completed / "run.json").read_text())["status"] == "completed", result.stderr
    evaluated = cli("evaluate", completed)
    assert evaluated.exit_code == 0, evaluated.stderr
    record = json.loads((completed / "run.json").read_text())
    assert "MLflow tracking stopped" in evaluated.stderr, (result.stderr, record["tracking"], evaluated.stderr)
    assert json.loads((completed / "run.json").read_text())["status"] == "completed"
