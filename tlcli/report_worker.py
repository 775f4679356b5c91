"""Write a training run's validation report in a second process.

The report needs scikit-learn and matplotlib, which take about 1.1 s to
import on a 2-core machine, and its four figures take most of a second to
draw. `tlcli train` starts this worker before it imports TensorFlow: the
worker imports them on the other core while TensorFlow loads (the main
process then imports Keras without them, see `tlcli.cli.import_keras`),
waits, and draws the report while the main process saves the model.

The worker is only an optimisation: if it cannot start, dies or fails, the
main process writes the report itself. Messages are pickles over the
worker's stdin and stdout (a private pipe between two copies of tlcli).
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from typing import Any

log = logging.getLogger("tlcli")


class ReportWorker:
    """A `python -m tlcli.report_worker` process: `submit` one job, then `result`."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.submitted = False
        self.collected = False

    @classmethod
    def start(cls) -> ReportWorker | None:
        """Start the worker, or None when it cannot be started."""
        try:
            process = subprocess.Popen([sys.executable, "-m", "tlcli.report_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError as exc:
            log.debug("report worker not started (%s)", exc)
            return None
        return cls(process)

    def submit(self, job: dict[str, Any]) -> bool:
        """Send the report's arguments (see `tlcli.evaluate.training_report_job`); False if the worker is gone."""
        try:
            pickle.dump(job, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.close()
        except (OSError, ValueError) as exc:
            log.warning("report worker unavailable (%s); writing the report here", exc)
            self.close()
            return False
        self.submitted = True
        return True

    def result(self):
        """The worker's `Evaluation`, or None (logged) when it failed: the caller then writes the report itself."""
        if not self.submitted:
            return None
        try:
            reply = pickle.load(self.process.stdout)
            self.collected = True
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            log.warning("report worker died (%s); writing the report here", type(exc).__name__)
            reply = None
        finally:
            self.close()
        if isinstance(reply, dict) and "error" in reply:
            log.warning("report worker failed (%s); writing the report here", reply["error"])
            return None
        return reply

    def close(self) -> None:
        """Stop the worker: at once if its report is not wanted (any more), so bad input still fails fast."""
        if not self.collected and self.process.poll() is None:
            self.process.kill()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ReportWorker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def main() -> int:
    """The worker's side: import what the report needs, wait for one job, write the report, reply."""
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")
    import sklearn.metrics  # noqa: F401  (imported now, while the parent loads TensorFlow)

    from tlcli.evaluate import write_training_report_files

    _warm_up()

    try:
        job = pickle.load(sys.stdin.buffer)
    except EOFError:
        return 0  # the run ended without a report to write (failed, interrupted)
    try:
        reply: Any = write_training_report_files(**job)
    except Exception as exc:  # noqa: BLE001  (reported to the parent, which retries in-process)
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    pickle.dump(reply, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()
    os._exit(0)  # nothing left to clean up; skipping the interpreter's teardown lets the parent's wait end at once


def _warm_up() -> None:
    """Draw a throwaway figure: the first one loads the Agg backend and the fonts (measured: 0.4 s)."""
    import io

    from tlcli.report import _figure

    figure = _figure(2, 2)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], "-o", label="warm-up")
    axes.set_title("warm-up")
    axes.legend()
    figure.savefig(io.BytesIO(), format="png")


if __name__ == "__main__":
    sys.exit(main())
