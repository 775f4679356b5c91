"""Errors that reach the user, each carrying the exit code the CLI documents.

Every error tlcli raises on purpose is a `TlcliError`: its message is one line
that names the offending key, file or value and says how to fix it. The CLI
prints that line and exits with `exit_code`; only `--debug` shows a traceback.
Every exit code of the README's table has its error class here.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable

# The exit-code table (README "Exit codes"); every command uses it.
EXIT_OK = 0
EXIT_FAILURE = 1  # failure while working: training error, internal error
EXIT_USER_ERROR = 2  # bad config, arguments or data; nothing was started
EXIT_GATE_FAILED = 3  # a --fail-under or --fail-over quality gate failed
EXIT_PARTIAL = 4  # some inputs unreadable or problems found; the rest done
EXIT_INTERRUPTED = 130  # Ctrl-C


class TlcliError(Exception):
    """Base class: a one-line, user-facing error with an exit code."""

    exit_code = EXIT_FAILURE


class UserError(TlcliError):
    """The user's input is wrong (config, arguments, data); nothing was started."""

    exit_code = EXIT_USER_ERROR


class ConfigError(UserError):
    """The experiment config is invalid: `key` is its dotted path."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class DataError(UserError):
    """The data folder is missing, empty or unusable."""


class UnusableData(DataError):
    """Training's pass over the files left a class without a readable image: exit 2; the new run folder is removed."""


class RunError(UserError):
    """A run folder is missing, incomplete or of an unknown format."""


class TrainingError(TlcliError):
    """Training failed after it started; the run folder is marked failed (a study: every trial failed)."""

    exit_code = EXIT_FAILURE
    run_dir: Path | None = None  # the folder it leaves for people to read, when the error names one (a tune folder)


class GateFailed(TlcliError):
    """A `--fail-under` or `--fail-over` quality gate failed (exit code 3)."""

    exit_code = EXIT_GATE_FAILED


class PartialSuccess(TlcliError):
    """Some inputs could not be used; the rest were done (exit code 4)."""

    exit_code = EXIT_PARTIAL


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a batch; `run_dir` (when set) can be resumed (exit code 130)."""

    exit_code = EXIT_INTERRUPTED
    run_dir: Path | None = None


def did_you_mean(word: str, options: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The closest of `options` to a misspelled `word`, or None: the one did-you-mean of every error message."""
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=cutoff)
    return close[0] if close else None
