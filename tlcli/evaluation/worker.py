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
import threading
from typing import Any

from tlcli.evaluation.plots import new_figure
from tlcli.evaluation.training_report import ReportJob, write_report_files
from tlcli.settings import MPLBACKEND, child_environment

log = logging.getLogger("tlcli")

# A report of 100,000 images takes well under a minute; a worker silent this long is stuck.
RESULT_TIMEOUT_S = 600.0


class ReportWorker:
    """A `python -m tlcli.evaluation.worker` process: `submit` one job, then `result`."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.submitted = False
        self.collected = False

    @classmethod
    def start(cls) -> ReportWorker | None:
        """Start the worker, or None when it cannot be started."""
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "tlcli.evaluation.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=child_environment(defaults={MPLBACKEND: "Agg"}),
            )
        except OSError as exc:
            log.debug("report worker not started (%s)", exc)
            return None
        return cls(process)

    def submit(self, job: ReportJob) -> bool:
        """Send the report's job (`tlcli.evaluation.training_report.ReportJob`); False if the worker is gone.

        Sent from a thread: a worker that stopped reading can never block the run.
        """
        if self.process.poll() is not None:
            log.warning("report worker exited early (code %s); writing the report here", self.process.returncode)
            return False

        def send() -> None:
            try:
                pickle.dump(job, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self.process.stdin.close()
            except (OSError, ValueError):
                pass  # the reply will be missing: result() says so and the caller writes the report

        threading.Thread(target=send, daemon=True).start()
        self.submitted = True
        return True

    def result(self):
        """The worker's `Evaluation`, or None (logged) when it failed: the caller then writes the report itself."""
        if not self.submitted:
            return None
        box: dict[str, Any] = {}

        def read() -> None:
            try:
                box["reply"] = pickle.load(self.process.stdout)
            except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
                box["error"] = exc

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(RESULT_TIMEOUT_S)
        reply = box.get("reply")
        self.collected = "reply" in box
        if reader.is_alive():
            log.warning("report worker gave no answer in %s s; writing the report here", RESULT_TIMEOUT_S)
        elif "error" in box:
            log.warning("report worker died (%s); writing the report here", type(box["error"]).__name__)
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

    import sklearn.metrics  # noqa: F401  (imported now, while the parent loads TensorFlow)

    _warm_up()

    try:
        job = pickle.load(sys.stdin.buffer)
    except EOFError:
        return 0  # the run ended without a report to write (failed, interrupted)
    try:
        reply: Any = write_report_files(job)
    except Exception as exc:  # noqa: BLE001  (reported to the parent, which retries in-process)
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    pickle.dump(reply, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.flush()
    os._exit(0)  # nothing left to clean up; skipping the interpreter's teardown lets the parent's wait end at once


def _warm_up() -> None:
    """Draw a throwaway figure: the first one loads the Agg backend and the fonts (measured: 0.4 s)."""
    import io

    figure = new_figure(2, 2)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], "-o", label="warm-up")
    axes.set_title("warm-up")
    axes.legend()
    figure.savefig(io.BytesIO(), format="png")


if __name__ == "__main__":
    sys.exit(main())
