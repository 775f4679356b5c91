"""Facts about this process and machine that several stages need: one reader of each."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from typing import Any, Iterator


def process_start_ticks(pid: Any) -> int | None:
    """A process's start time in clock ticks since boot (Linux `/proc/<pid>/stat`), or None.

    Tells a reused pid apart from the process that wrote a record, and dates this process's start.
    """
    try:
        with open(f"/proc/{int(pid)}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError, TypeError):
        return None


def process_started() -> float:
    """`time.perf_counter()` at this process's start (Linux), so timings include Python and TensorFlow start-up."""
    ticks = process_start_ticks(os.getpid())
    try:
        with open("/proc/uptime") as uptime:
            alive = float(uptime.read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")  # type: ignore[operator]
        return time.perf_counter() - max(0.0, alive)
    except (OSError, ValueError, IndexError, TypeError):
        return time.perf_counter()


def process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """An ended process its parent has not reaped yet (Linux; a killed launcher's workers are zombies until init
    reaps them, which some containers' init does only every second or so)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def peak_memory_mb() -> float:
    """This process's peak resident memory (ru_maxrss), in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def memory_available_mb() -> float | None:
    """The memory this machine can give new processes without swapping (`MemAvailable` of Linux's `/proc/meminfo`),
    in MB, or None where it cannot be read (macOS)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_workers() -> int:
    """Threads for decoding: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block: TensorFlow, its converters and runtimes print from C++
    straight to it (oneDNN and CUDA probing, XNNPACK, absl), where no Python logging setting reaches."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
