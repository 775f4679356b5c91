"""One process of a cluster of workers (`TF_CONFIG`): where a worker other than the chief writes, and what a lost
peer means.

Only the chief (worker 0) writes the run folder. Every other worker runs the
same steps in a scratch folder of its own (removed when it ends; under a
`--workers` launcher, inside the launcher's scratch folder, so a killed
cluster leaves one folder, which the next launch removes), so the code
path is the chief's; it saves no model and draws no report. To resume, such
a worker copies the run folder into its scratch before the cluster forms (the
chief cannot write before every worker has joined), so all start from the
same checkpoint; the copy needs the run folder readable at the same path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from tlcli.errors import TrainingError
from tlcli.modeling.devices import cluster_from_env
from tlcli.runs.records import read_run_record
from tlcli.settings import cluster_dir

# What the run folder holds that a worker's copy does not need (reports, exports, logs of other sessions).
NOT_COPIED = ("eval", "export", "tensorboard", "workers", "model.keras", "curves.png", "train.log")


@contextlib.contextmanager
def worker_scratch() -> Iterator[Path | None]:
    """A scratch runs folder for a worker other than the chief (None for the chief and for a process without a
    cluster)."""
    cluster = cluster_from_env()
    if cluster is None or cluster.chief:
        yield None
        return
    launcher = cluster_dir()  # a `--workers` launcher's scratch folder, if one started this worker
    inside = launcher if launcher and Path(launcher).is_dir() else None
    folder = Path(tempfile.mkdtemp(prefix=f"tlcli-worker{cluster.index}-", dir=inside))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def worker_copy(run_dir: Path, scratch: Path) -> Path:
    """A copy of `run_dir` in `scratch` that this worker resumes (its run.json no longer names the chief's process)."""
    copy = scratch / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(*NOT_COPIED, "*.lock", ".*"))
    dataclasses.replace(read_run_record(copy), pid=None, pid_started=None).write(copy)
    return copy


# TensorFlow's errors for a collective that another worker left (died, stalled or stopped).
COLLECTIVE_FAILURES = ("DeadlineExceededError", "UnavailableError", "CancelledError", "AbortedError")


def is_collective_failure(exc: BaseException) -> bool:
    return type(exc).__name__ in COLLECTIVE_FAILURES


@contextlib.contextmanager
def peers_lost(timeout_s: float, run_dir: Path) -> Iterator[None]:
    """A collective that failed because another worker died or stalled is one line naming the bound and the run to
    resume, not a TensorFlow trace."""
    try:
        yield
    except Exception as exc:
        kind = type(exc).__name__
        if not is_collective_failure(exc):
            raise
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else kind
        raise TrainingError(
            "another worker of the cluster stopped answering (a collective failed after at most "
            f"runtime.collective_timeout_s = {timeout_s:g} s: {kind}: {first}); "
            f"resume with tlcli train --resume {run_dir} once every worker runs"
        ) from exc
