"""How long work talks to people: a silent/logging reporter and a rich one.

Library functions take a `Reporter`; the default only logs (to the `tlcli`
logger, which training also writes to the run's `train.log`). The CLI passes a
`RichReporter`, which draws progress bars with live metrics on stderr so
stdout stays free for tables and JSON.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

log = logging.getLogger("tlcli")


def format_metrics(logs: dict[str, Any], keys: tuple[str, ...] | None = None) -> str:
    shown = [(k, v) for k, v in logs.items() if isinstance(v, (int, float)) and (keys is None or k in keys)]
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown)


class Reporter:
    """Receives progress events; this base class logs them and draws nothing."""

    def info(self, message: str) -> None:
        log.info(message)

    def warn(self, message: str) -> None:
        log.warning(message)

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Any]:
        """A counted task (e.g. decoding); yields `advance(done)`."""
        log.info("%s: %d items", description, total)
        yield lambda done: None

    def phase_start(self, phase: str, epochs: int, steps: int) -> None:
        log.info("phase %s: %d epochs of %d steps", phase, epochs, steps)

    def epoch_begin(self, epoch: int, epochs: int) -> None:
        pass

    def batch_end(self, step: int, logs: dict[str, Any]) -> None:
        pass

    def epoch_end(self, phase: str, epoch: int, epochs: int, logs: dict[str, Any]) -> None:
        log.info("%s epoch %d/%d  %s", phase, epoch, epochs, format_metrics(logs))

    def phase_end(self, phase: str) -> None:
        pass


class RichReporter(Reporter):
    """Progress bars and messages on stderr via rich."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._progress = None
        self._epoch_task = None
        self._phase = ""

    def info(self, message: str) -> None:
        super().info(message)
        self.console.print(message, highlight=False)

    def warn(self, message: str) -> None:
        if log.hasHandlers():  # train.log's (or the root's, with --debug); else Python's last resort would print it
            super().warn(message)  # a second time on stderr
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)

    @contextlib.contextmanager
    def task(self, description: str, total: int):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            task_id = progress.add_task(description, total=total)
            yield lambda done: progress.update(task_id, completed=done)
        log.info("%s: %d done", description, total)

    def phase_start(self, phase: str, epochs: int, steps: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        super().phase_start(phase, epochs, steps)
        self._phase = phase
        self._steps = steps
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._epoch_task = None

    def _ensure_epoch_task(self, epoch: int, epochs: int) -> None:
        if self._epoch_task is None and self._progress is not None:
            self._epoch_task = self._progress.add_task(f"{self._phase} {epoch}/{epochs}", total=self._steps, metrics="")

    def epoch_begin(self, epoch: int, epochs: int) -> None:
        if self._progress is not None:
            if self._epoch_task is not None:
                self._progress.remove_task(self._epoch_task)
            self._epoch_task = None
            self._ensure_epoch_task(epoch, epochs)

    def batch_end(self, step: int, logs: dict[str, Any]) -> None:
        if self._progress is not None and self._epoch_task is not None:
            self._progress.update(self._epoch_task, completed=step, metrics=format_metrics(logs, ("loss", "accuracy")))

    def epoch_end(self, phase: str, epoch: int, epochs: int, logs: dict[str, Any]) -> None:
        log.info("%s epoch %d/%d  %s", phase, epoch, epochs, format_metrics(logs))
        self.console.print(f"{phase} {epoch}/{epochs}  {format_metrics(logs)}", highlight=False)

    def phase_end(self, phase: str) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = None
