"""A run folder's lifecycle: whatever happens inside it, `run.json` says how it ended.

`recording_outcome` wraps the work done in a run folder: success marks it
`completed`; Ctrl-C marks it `interrupted` (and the `Interrupted` error
carries the folder, for the resume command); a tlcli error or any exception
marks it `failed` with the reason (a full disk becomes a one-line user error
that says how to continue). The log goes to the folder's `train.log`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from pathlib import Path
from typing import Iterator

from tlcli.config.schema import redact_uri
from tlcli.errors import Interrupted, TlcliError, TrainingError, UserError
from tlcli.runs.records import finish_run

log = logging.getLogger("tlcli")


@contextlib.contextmanager
def recording_outcome(run_dir: Path, log_name: str = "train.log") -> Iterator[None]:
    """Record in run.json how the work inside this block ended (see the module docstring)."""
    file_log = attach_log_file(run_dir / log_name)
    try:
        yield
        finish_run(run_dir, "completed")
    except KeyboardInterrupt as exc:
        _finish_quietly(run_dir, "interrupted", "interrupted by Ctrl-C")
        interrupted = exc if isinstance(exc, Interrupted) else Interrupted("interrupted by Ctrl-C")
        interrupted.run_dir = run_dir
        if interrupted is exc:
            raise
        raise interrupted from None
    except TlcliError as exc:
        _finish_quietly(run_dir, "failed", str(exc))
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        full = disk_full(exc)
        if full is not None:
            _finish_quietly(run_dir, "failed", f"disk full ({full})")
            raise UserError(
                f"disk full while writing {run_dir} ({full}); free some space, then continue with: tlcli "
                f"train --resume {run_dir}"
            ) from exc
        log.exception("training failed")
        _finish_quietly(run_dir, "failed", reason)
        raise TrainingError(
            f"training failed ({reason}); the run folder {run_dir} is marked failed, see its {log_name}"
        ) from exc
    finally:
        logging.getLogger("tlcli").removeHandler(file_log)
        file_log.close()


def _finish_quietly(run_dir: Path, status: str, error: str | None) -> None:
    """Record the outcome; a full disk must not hide the original error."""
    try:
        finish_run(run_dir, status, error)
    except OSError as exc:
        log.warning("could not update run.json (%s)", exc)


def disk_full(exc: BaseException | None) -> str | None:
    """The reason when `exc` (or what caused it) is a full disk or quota, else None."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc.strerror or "no space left on device"
        if "No space left on device" in str(exc):
            return "no space left on device"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


class RedactingFormatter(logging.Formatter):
    """Log lines (tracebacks included) without any password of a URI in them."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_uri(super().format(record))


def attach_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("tlcli")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
