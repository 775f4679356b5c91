"""What one `tlcli` invocation prints and how: an `Output` made by `command` for each call (no module-level state).

Errors are one line on stderr (`error: ...`); with `--json` (or `--format json|jsonl`) the command's stdout holds
one JSON document on every exit: its own, or the error's when it printed none. Library errors name the function's
argument (`runs_dir: ...`); the command says which flag that is (`--runs-dir: ...`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, NoReturn

import typer

from tlcli.progress import Reporter, RichReporter

if TYPE_CHECKING:
    from rich.console import Console


def _console(**options: Any) -> Console:
    """A rich Console, rich imported when a command first prints (`tlcli --help` needs none)."""
    from rich.console import Console

    return Console(soft_wrap=True, **options)


@dataclass
class Output:
    """One invocation's output settings (`--json`, `--quiet`, `--debug`), its consoles, and whether it printed its
    JSON document yet."""

    json: bool = False
    lines: bool = False  # `--format jsonl`: every document (an error's too) is one JSON object on one line
    quiet: bool = False
    debug: bool = False
    flags: Mapping[str, str] = field(default_factory=dict)  # a library argument's name -> this command's flag
    printed: bool = False
    stdout: Console = field(default_factory=_console)
    stderr: Console = field(default_factory=lambda: _console(stderr=True))

    def document(self, text: str) -> None:
        """Write the command's machine-readable output on stdout (an error then adds no second document)."""
        sys.stdout.write(text)
        self.printed = True

    def print_json(self, data: Any) -> None:
        self.document(json.dumps(data, indent=None if self.lines else 2, default=str) + "\n")

    def error(self, message: str) -> None:
        """One `error:` line on stderr."""
        print(f"error: {message}", file=sys.stderr)

    def fail(self, message: str, code: int, extra: dict[str, Any] | None = None) -> NoReturn:
        """The error on stderr (and a JSON document on stdout when the command speaks JSON and printed none), exit."""
        self.error(message)
        if self.json and not self.printed:
            self.print_json({"error": message, "exit_code": code, **(extra or {})})
        raise typer.Exit(code) from None

    def with_flag(self, message: str) -> str:
        """`runs_dir: ...` (a library error naming its argument) as `--runs-dir: ...` (the flag the user typed)."""
        name, sep, rest = message.partition(":")
        flag = self.flags.get(name) if sep else None
        return f"{flag}:{rest}" if flag else message

    def reporter(self, silent: bool = False) -> Reporter:
        """Progress on stderr; none with `--quiet` (or `silent`: a command whose `--json` replaces its progress)."""
        return Reporter() if self.quiet or silent else RichReporter(self.stderr)


def with_interval(value: float, interval: Any = None, digits: int = 4) -> str:
    """`0.9542 (0.912-0.978)`: a figure and its 95% interval (`[low, high]`, or None: the figure alone)."""
    if not interval:
        return f"{value:.{digits}f}"
    low, high = interval
    middle = "-" if low >= 0 else " to "  # a difference's interval may start below 0
    return f"{value:.{digits}f} ({low:.{max(digits - 1, 2)}f}{middle}{high:.{max(digits - 1, 2)}f})"


_CURRENT: contextvars.ContextVar[Output] = contextvars.ContextVar("tlcli_output")


def output() -> Output:
    """The running command's Output (a default one outside a command)."""
    current = _CURRENT.get(None)
    return current if current is not None else Output()


@contextlib.contextmanager
def invocation(out: Output) -> Iterator[Output]:
    """`out` is the Output of the command running inside this block."""
    token = _CURRENT.set(out)
    try:
        yield out
    finally:
        _CURRENT.reset(token)
