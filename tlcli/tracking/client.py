"""A fail-safe MLflow client: the first failure warns once, and nothing calls the server after it.

Tracking must never lose or stall the work it records: the client's construction, its first contact and every
later call go through `MlflowRun.call`, which runs them on the run's own `Worker` thread within a time bound and
catches whatever the client raises (a URI it refuses, a dead server, a store that never answers, a damaged or full
store), records the reason (never a password: `redact_uri`), tells `on_failure` once, and turns every later call
into a no-op.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from tlcli.errors import UserError
from tlcli.tracking.settings import TrackingSettings, redact_uri, require_mlflow, short_http

MAX_PARAM_CHARS = 500  # the smallest limit of the MLflow servers still around (2.x before 2.10)
BATCH = 100  # MLflow takes at most 100 params (and 1000 metrics) a request
FIRST_CONTACT_SECONDS = 10.0  # the client's construction and its first call (an SQLite file that never answers)
NEW_STORE_SECONDS = 60.0  # ...when MLflow creates a new SQLite store's tables (3-7 s measured on a busy 2-core machine)
CALL_SECONDS = 300.0  # any later call (a model's artifacts to a slow server; HTTP has its own 5 s timeout)


def first_line(exc: BaseException) -> str:
    """The error's first line, without any password of a URI in it (MLflow's errors quote the tracking URI)."""
    text = str(exc).strip().splitlines()
    return redact_uri(f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__)


class Worker:
    """One daemon thread running a client's calls in order (SQLite connections stay on the thread that made them);
    a call that outlives its bound is abandoned there, and the process still exits."""

    def __init__(self) -> None:
        self.jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._serve, name="tlcli-mlflow", daemon=True).start()

    def run(self, job: Callable[[], Any], seconds: float) -> Any:
        """`job()`'s result (or its exception); TimeoutError after `seconds`."""
        box: list = []
        done = threading.Event()
        self.jobs.put((job, box, done))
        if not done.wait(seconds):
            raise TimeoutError(f"no answer within {seconds:g} s")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        while True:
            job, box, done = self.jobs.get()
            try:
                box.append((True, job()))
            except BaseException as exc:  # noqa: BLE001  (handed back to the caller)
                box.append((False, exc))
            done.set()


@dataclass
class MlflowRun:
    """One MLflow run, logged through a client that gives up after its first failure."""

    settings: TrackingSettings
    client: Any = None
    run_id: str | None = None
    experiment_id: str | None = None
    failed: str | None = None
    on_failure: Callable[[str], None] | None = None
    _warned: bool = field(default=False, repr=False)
    worker: Worker = field(default_factory=Worker, repr=False)

    @property
    def active(self) -> bool:
        return self.failed is None and self.run_id is not None

    def call(self, method: str, *args, seconds: float = CALL_SECONDS, **kwargs) -> Any:
        """`client.<method>(*args)`, or None after (or at) the first failure or `seconds` without an answer."""
        return self.guarded(method, lambda: getattr(self.client, method)(*args, **kwargs), seconds)

    def guarded(self, what: str, job: Callable[[], Any], seconds: float = CALL_SECONDS) -> Any:
        """`job()` on the worker within `seconds`, or None after (or at) the first failure."""
        if self.failed is not None:
            return None
        try:
            with short_http():
                return self.worker.run(job, seconds)
        except Exception as exc:  # noqa: BLE001  (whatever the server or store does, training goes on)
            self.fail(f"{what}: {first_line(exc)}")
            return None

    def fail(self, reason: str) -> None:
        self.failed = redact_uri(reason)
        self.listen(self.on_failure)

    def listen(self, on_failure: Callable[[str], None] | None) -> None:
        """Tell `on_failure` of the first failure, once (now, when the client already failed)."""
        self.on_failure = on_failure
        if self.failed is not None and on_failure is not None and not self._warned:
            self._warned = True
            on_failure(self.failed)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        for chunk in _chunks(metrics, 1000):
            self.call("log_batch", self.run_id, metrics=chunk)

    def log_series(self, key: str, values: dict[int, float]) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        for chunk in _chunks([Metric(key, float(v), now, int(step)) for step, v in sorted(values.items())], 1000):
            self.call("log_batch", self.run_id, metrics=chunk)

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        for chunk in _chunks([Param(k, redact_uri(v)[:MAX_PARAM_CHARS]) for k, v in params.items()], BATCH):
            self.call("log_batch", self.run_id, params=chunk)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        for chunk in _chunks([RunTag(k, redact_uri(str(v))[:5000]) for k, v in tags.items()], BATCH):
            self.call("log_batch", self.run_id, tags=chunk)

    def log_files(self, files: Iterable[Path], artifact_path: str | None = None) -> None:
        for path in files:
            if path.is_file():
                self.call("log_artifact", self.run_id, str(path), artifact_path)

    def log_keras_model(self, model, name: str = "model") -> None:
        """The model as an MLflow Keras-flavour model (`mlflow.keras.load_model("runs:/<id>/model")`)."""
        if not self.active:
            return
        try:
            import mlflow.keras
        except Exception as exc:  # noqa: BLE001
            self.fail(f"mlflow.keras: {first_line(exc)}")
            return
        with tempfile.TemporaryDirectory(prefix="tlcli-mlflow-") as scratch:
            try:
                mlflow.keras.save_model(
                    model, str(Path(scratch) / name), pip_requirements=["tlcli", "keras>=3", "tensorflow"]
                )
            except Exception as exc:  # noqa: BLE001
                self.fail(f"mlflow.keras.save_model: {first_line(exc)}")
                return
            self.call("log_artifacts", self.run_id, str(Path(scratch) / name), name)

    def last_step(self, key: str) -> int:
        """The highest step logged for `key` (0 when none), so a resume never logs a step twice."""
        history = self.call("get_metric_history", self.run_id, key) or []
        return max((int(m.step) for m in history), default=0)

    def terminate(self, status: str) -> None:
        self.call("set_terminated", self.run_id, status)

    def record(self) -> dict[str, Any]:
        """run.json's `tracking.mlflow`: where the run is, and whether tracking failed (never a password)."""
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "tracking_uri": self.settings.shown_uri,
            "failed": self.failed,
        }


def connect(settings: TrackingSettings, on_failure: Callable[[str], None] | None = None) -> MlflowRun:
    """An MlflowRun on `settings.uri` (no run yet), its client built and its store asked once within
    `first_contact_bound`; a client that could not be (a URI MLflow refuses, a store that never answers) is a failed
    MlflowRun. Raises UserError when mlflow is missing."""
    mlflow = require_mlflow()
    tracker = MlflowRun(settings, on_failure=on_failure)
    if settings.uri.startswith("sqlite:"):
        with contextlib.suppress(ImportError):  # imported here: an import is not the store's time
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    def first_contact():
        client = mlflow.MlflowClient(tracking_uri=settings.uri)
        client.search_experiments(max_results=1)
        return client

    tracker.client = tracker.guarded("MlflowClient", first_contact, first_contact_bound(settings.uri))
    return tracker


def first_contact_bound(uri: str) -> float:
    """FIRST_CONTACT_SECONDS, or NEW_STORE_SECONDS for an SQLite file not there yet (MLflow creates its tables)."""
    new = uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()
    return NEW_STORE_SECONDS if new else FIRST_CONTACT_SECONDS


def check_reachable(settings: TrackingSettings) -> None:
    """`--strict-tracking`: the store answers now, else a one-line UserError (exit 2)."""
    tracker = connect(settings)
    if tracker.failed is not None:
        raise UserError(
            f"tracking.strict: the MLflow tracking server {settings.shown_uri} cannot be used ({tracker.failed})"
        )


def start_run(tracker: MlflowRun, name: str, tags: dict[str, str]) -> None:
    """Create the experiment when missing, then a new run in it."""
    wanted = tracker.settings.experiment
    experiment = tracker.call("get_experiment_by_name", wanted)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else tracker.call(
            "create_experiment", wanted, artifact_location=artifact_location(tracker.settings.uri, wanted)
        )
    )
    if tracker.failed is not None:
        return
    run = tracker.call("create_run", experiment_id, run_name=name, tags=tags)
    if run is not None:
        tracker.run_id, tracker.experiment_id = run.info.run_id, experiment_id


def continue_run(tracker: MlflowRun, run_id: str, running: bool = True) -> bool:
    """Log into an existing run again (a resume; an evaluation, `running` False).

    False when the store does not have it."""
    from mlflow.exceptions import MlflowException

    if tracker.failed is not None:
        return False
    try:
        with short_http():
            run = tracker.worker.run(lambda: tracker.client.get_run(run_id), CALL_SECONDS)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
            return False
        tracker.fail(f"get_run: {first_line(exc)}")
        return False
    except Exception as exc:  # noqa: BLE001
        tracker.fail(f"get_run: {first_line(exc)}")
        return False
    tracker.run_id, tracker.experiment_id = run_id, run.info.experiment_id
    if running:
        tracker.call("update_run", run_id, status="RUNNING")
    return True


def artifact_location(uri: str, experiment: str) -> str | None:
    """An SQLite store's artifacts beside its file (`mlruns/<experiment>/`), not in whatever folder the process runs in
    (MLflow's default); None (the server's or store's own default) for every other store."""
    if not uri.startswith("sqlite:///"):
        return None
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlruns" / slug).absolute().as_uri()


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested config values as `a.b.c` -> text (lists and empty mappings as JSON)."""
    if isinstance(data, dict) and data:
        flat: dict[str, str] = {}
        for key, value in data.items():
            flat |= flatten(value, f"{prefix}{key}.")
        return flat
    text = data if isinstance(data, str) else json.dumps(data)
    return {prefix.rstrip("."): text}


def numeric(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
