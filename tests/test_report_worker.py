"""The report worker writes what the main process would, and its failures cost nothing but time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import make_image_folder

from tlcli.evaluation.training_report import ReportJob, write_report_files, write_training_report
from tlcli.evaluation.worker import ReportWorker
from tlcli.progress import Reporter


def _validation(tmp_path):
    folder = make_image_folder(tmp_path / "data", {"cats": 6, "dogs": 6})
    files = sorted(folder.rglob("*.png"))
    labels = np.array([0 if f.parent.name == "cats" else 1 for f in files])
    probabilities = np.random.default_rng(0).dirichlet([1, 1], len(files))
    val = SimpleNamespace(labels=labels, samples=[SimpleNamespace(path=str(f)) for f in files], skipped=[])
    return val, probabilities


def _run_dir(tmp_path, name):
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "history.csv").write_text(
        "epoch,phase,loss,accuracy,val_loss,val_accuracy\n1,train,0.7,0.5,0.6,0.6\n2,train,0.5,0.7,0.5,0.7\n"
    )
    return run_dir


def _report_files(evaluation):
    metrics = json.loads((evaluation.eval_dir / "metrics.json").read_text())
    metrics.pop("created"), metrics.pop("run_dir")
    return metrics, sorted(p.name for p in evaluation.eval_dir.iterdir())


def test_worker_writes_the_report_the_main_process_would(tmp_path):
    val, probabilities = _validation(tmp_path)
    here = _run_dir(tmp_path, "here")
    there = _run_dir(tmp_path, "there")
    in_process = write_training_report(
        ReportJob.for_split(here, val, ["cats", "dogs"], top_k=1, probabilities=probabilities), reporter=Reporter()
    )

    job = ReportJob.for_split(there, val, ["cats", "dogs"], top_k=1, probabilities=probabilities)
    worker = ReportWorker.start()
    assert worker is not None and worker.submit(job)
    by_worker = write_training_report(job, reporter=Reporter(), worker=worker)
    assert by_worker.eval_dir.parent == there / "eval"
    assert _report_files(by_worker) == _report_files(in_process)
    assert (there / "curves.png").stat().st_size > 0
    assert worker.process.returncode == 0


def test_a_dead_worker_means_the_report_is_written_here(tmp_path):
    val, probabilities = _validation(tmp_path)
    run_dir = _run_dir(tmp_path, "run")
    worker = ReportWorker.start()
    worker.process.kill()
    worker.process.wait()
    job = ReportJob.for_split(run_dir, val, ["cats", "dogs"], top_k=1, probabilities=probabilities)
    worker.submit(job)
    evaluation = write_training_report(job, reporter=Reporter(), worker=worker)
    assert evaluation is not None and (evaluation.eval_dir / "confusion_matrix.png").is_file()


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_a_stuck_worker_is_given_up_and_the_report_written_here(tmp_path, monkeypatch):
    import tlcli.evaluation.worker as report_worker

    monkeypatch.setattr(report_worker, "RESULT_TIMEOUT_S", 0.5)
    val, probabilities = _validation(tmp_path)
    run_dir = _run_dir(tmp_path, "run")
    worker = ReportWorker.start()
    os.kill(worker.process.pid, signal.SIGSTOP)  # alive, silent
    job = ReportJob.for_split(run_dir, val, ["cats", "dogs"], top_k=1, probabilities=probabilities)
    assert worker.submit(job)
    evaluation = write_training_report(job, reporter=Reporter(), worker=worker)
    assert evaluation is not None and (evaluation.eval_dir / "metrics.json").is_file()
    assert worker.process.poll() is not None  # killed, not left behind


def test_a_worker_whose_report_is_not_wanted_is_stopped():
    """A run that fails early (bad input) does not wait for the worker to finish loading its libraries."""
    worker = ReportWorker.start()
    worker.close()
    assert worker.process.poll() is not None
    assert worker.result() is None  # nothing was submitted: the caller writes the report itself


def test_report_files_in_process_without_a_worker(tmp_path):
    val, probabilities = _validation(tmp_path)
    run_dir = _run_dir(tmp_path, "run")
    evaluation = write_report_files(
        ReportJob(run_dir, probabilities, val.labels, [s.path for s in val.samples], ["cats", "dogs"], 1, [])
    )
    assert {"metrics.json", "predictions.csv", "mistakes.png", "reliability.png"} <= set(_report_files(evaluation)[1])


def test_keras_loads_without_its_optional_scikit_learn_and_matplotlib_imports():
    code = (
        "import sys\n"
        "from tlcli.cli import import_keras\n"
        "import_keras()\n"
        "print(sorted(m for m in ('sklearn', 'matplotlib') if m in sys.modules))\n"
        "import sklearn.metrics, matplotlib.figure\n"  # still importable afterwards, for reports
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1]
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["[]", "ok"]
