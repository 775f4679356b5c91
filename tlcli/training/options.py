"""How a run is carried out, as opposed to what it trains (the config)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunOptions:
    """Options of `train` and `resume` that are not part of the experiment.

    Args:
        strict: stop (DataError, exit 2) on any data problem `tlcli check`
            reports: unreadable files, duplicates, leakage (else they are warned).
        device: `cpu`, `gpu` or `auto`, overriding `runtime.device`.
        started: the `time.perf_counter()` value the wall time counts from
            (the CLI passes its process start, `tlcli.system.process_started`); default: when the run starts.
        report_worker: a started `tlcli.evaluation.ReportWorker` that draws
            the final validation report in another process (default: drawn
            in this one); training closes it, whatever happens.
        tracking: a `tlcli.tracking.TrackingRequest` (`--mlflow [URI]`, `--strict-tracking`); the config's
            `tracking:` section and `$MLFLOW_TRACKING_URI` turn tracking on without it.
    """

    strict: bool = False
    device: str | None = None
    started: float | None = None
    report_worker: Any = None
    tracking: Any = None
    _now: float = field(default_factory=time.perf_counter, repr=False)

    def start_time(self) -> float:
        return self.started if self.started is not None else self._now
