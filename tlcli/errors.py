"""Errors that reach the user, each carrying the exit code the CLI documents.

Every error tlcli raises on purpose is a `TlcliError`: its message is one line
that names the offending key, file or value and says how to fix it. The CLI
prints that line and exits with `exit_code`; only `--debug` shows a traceback.
"""

from __future__ import annotations

# The exit-code table (README "Exit codes"); later commands reuse it.
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


class RunError(UserError):
    """A run folder is missing, incomplete or of an unknown format."""


class TrainingError(TlcliError):
    """Training failed after it started; the run folder is marked failed."""

    exit_code = EXIT_FAILURE
