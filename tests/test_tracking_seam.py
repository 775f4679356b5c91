"""The tracking seam: a second tracker plugs in at `tlcli.tracking.backends.BACKENDS` and hears what MLflow hears."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import make_image_folder, tiny_config

from tlcli.progress import Reporter
from tlcli.tracking import RunStart, StudyEnd, Trackers, suspended
from tlcli.tracking import backends as tracking_backends

pytestmark = pytest.mark.timeout(300)


@dataclass
class Recorder:
    """A tracker that writes down every call (a second backend beside MLflow)."""

    request: Any = None
    calls: list[tuple] = field(default_factory=list)

    def check(self, config) -> None:
        self.calls.append(("check", config.name))

    def start_run(self, start: RunStart) -> Recorder:
        self.calls.append(("start", start.run_dir.name, start.overrides))
        return self

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.calls.append(("epoch", int(row["epoch"])))

    def log_completed(self, metrics, model=None) -> None:
        self.calls.append(("completed", metrics.epochs["total"], model is not None))

    def end(self, status: str) -> None:
        self.calls.append(("end", status))

    def log_evaluation(self, run_dir: Path, evaluation, reporter) -> None:
        self.calls.append(("evaluation", evaluation))

    def log_study(self, study: StudyEnd) -> None:
        self.calls.append(("study", study.result["status"]))


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    """The one Recorder every `trackers()` of the test returns beside MLflow."""
    one = Recorder()
    monkeypatch.setattr(tracking_backends, "BACKENDS", (*tracking_backends.BACKENDS, lambda request: one))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow off: the recorder alone is on
    return one


def test_a_second_tracker_hears_the_start_each_epoch_the_completed_run_and_its_end(tmp_path, recorder):
    from tlcli import load_config, train

    data = make_image_folder(tmp_path / "images", {"a": 8, "b": 8})
    result = train(load_config(tiny_config(data, tmp_path / "runs")))
    assert recorder.calls == [
        ("check", "tiny"),
        ("start", result.run_dir.name, None),
        ("epoch", 1),
        ("epoch", 2),
        ("completed", 2, True),
        ("end", "completed"),
    ]


def test_a_failed_or_interrupted_block_ends_every_tracker_so(tmp_path):
    first, second = Recorder(), Recorder()
    start = RunStart(tmp_path, config=None, reporter=Reporter())  # type: ignore[arg-type]
    for error, status in ((RuntimeError("boom"), "failed"), (KeyboardInterrupt(), "interrupted")):
        first.calls.clear()
        second.calls.clear()
        with pytest.raises(type(error)), Trackers([first, second]).run(start) as tracker:
            tracker.log_epoch({"epoch": 1})
            raise error
        assert first.calls == second.calls == [("start", tmp_path.name, None), ("epoch", 1), ("end", status)]


def test_nothing_tracks_while_suspended_or_on_a_worker_other_than_the_chief(tmp_path):
    recorder = Recorder()
    start = RunStart(tmp_path, config=None, reporter=Reporter())  # type: ignore[arg-type]
    with suspended(), Trackers([recorder]).run(start) as tracker:
        assert tracker is None
    worker = RunStart(tmp_path, config=None, reporter=Reporter(), chief=False)  # type: ignore[arg-type]
    with Trackers([recorder]).run(worker) as tracker:
        assert tracker is None
    assert recorder.calls == []


def test_evaluations_and_studies_go_to_every_backend(tmp_path):
    first, second = Recorder(), Recorder()
    tracking = Trackers([first, second])
    tracking.log_evaluation(tmp_path, "an evaluation", Reporter())
    tracking.log_study(StudyEnd(None, tmp_path, None, {"status": "completed"}, Reporter()))  # type: ignore[arg-type]
    assert first.calls == second.calls == [("evaluation", "an evaluation"), ("study", "completed")]
