"""`tlcli train --workers N`: a cluster of N local worker processes, as several machines would run it.

Each process is `python -m tlcli train ...` with its own `TF_CONFIG` (workers
on free localhost ports), so it takes the same multi-worker path as a machine
of a real cluster. The chief's (worker 0's) output is this command's output;
the other workers write to log files, copied into `RUN_DIR/workers/<i>.log`
when the cluster ends. When any worker exits before the chief, the others are
ended within `GRACE_S` seconds (TensorFlow would wait for the dead peer until
a collective times out, and cannot be interrupted while it waits); the run is
marked failed (or interrupted, after Ctrl-C) and this command exits with the
chief's code, 1 after a lost worker (the chief included: a worker killed by a
signal is named, with the signal), 130 after Ctrl-C.

Nothing outlives the launcher. Every worker is SIGKILLed by the kernel when the
launcher dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG; SIGTERM would not do:
TensorFlow's multi-worker runtime catches it), and where that is unavailable
(macOS) a thread of the worker exits it once the launcher is gone. The
launcher's scratch folder, `<tmp>/tlcli-cluster-<pid>.<start>-*`, holds
everything the cluster writes outside the run folder (worker logs, the other
workers' scratch runs folders); a launcher that was killed cannot remove it, so
every `--workers` launch first removes the folders of launchers no longer alive
(and marks their runs, left `running`, interrupted). `N` workers must fit in the
memory the machine has available (`WORKER_MEMORY_MB` each), or nothing starts.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tlcli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, UserError
from tlcli.runs.records import amend_failure, finish_run, read_run_record
from tlcli.settings import CLUSTER_DIR, TF_CONFIG, child_environment, cluster_dir
from tlcli.system import memory_available_mb, process_alive, process_start_ticks

GRACE_S = 5.0  # how long workers get to end on their own once one has gone, before they are killed
POLL_S = 0.2
# The least memory one worker takes, measured (2026-12-06, this 2-core Linux machine, `--workers 2`): the smallest
# run there is (SmallCNN from scratch, 16 px images, batch 10) peaked at 516-536 MB of proportional set size (PSS:
# shared libraries split between the processes that map them) a worker, its report-worker process included; its
# resident size, which counts the shared libraries in every process, was 836-972 MB. MobileNet alpha 0.25 on 224 px
# images, fine-tuned (cache off, batch 16), took 1,285 MB PSS a worker. A floor: a larger model takes more.
WORKER_MEMORY_MB = 520
SCRATCH_PREFIX = "tlcli-cluster-"


@dataclass
class Cluster:
    """The worker processes of one `--workers` run."""

    folder: Path  # the launcher's scratch: worker logs, the chief's run folder name
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def chief(self) -> subprocess.Popen:
        return self.processes[0]

    def run_dir(self) -> Path | None:
        marker = self.folder / "run_dir"
        return Path(marker.read_text().strip()) if marker.is_file() else None


def launch(args: list[str], workers: int, resume: Path | None = None) -> int:
    """Run `tlcli <args>` as a cluster of `workers` local processes; returns the exit code (see the module
    docstring)."""
    if workers < 2:
        raise UserError(
            f"workers: a cluster needs at least 2 workers, got {workers} (without --workers, one process trains)"
        )
    check_memory(workers)
    sweep_orphans()
    pid = os.getpid()
    cluster = Cluster(Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{pid}.{process_start_ticks(pid)}-")))
    try:
        ports = free_ports(workers)
        for index in range(workers):
            _start(cluster, args, ports, index)
        code, why = _watch(cluster)
        run_dir = resume if resume is not None else cluster.run_dir()
        if why is not None:
            _end_all(cluster)
            _report(run_dir, code, why, workers)
        _keep_logs(cluster, run_dir)
        return code
    finally:
        _end_all(cluster)
        shutil.rmtree(cluster.folder, ignore_errors=True)


def _report(run_dir: Path | None, code: int, why: str, workers: int) -> None:
    """Record how the launcher ended the run and say so in one line: where the run is and how to continue it."""
    status = "interrupted" if code == EXIT_INTERRUPTED else "failed"
    _mark(run_dir, status, why)
    hint = (
        f"; the run folder {run_dir} is marked {status}, continue it with: tlcli train --resume {run_dir} "
        f"--workers {workers}"
        if run_dir
        else "; no run folder was made yet: start the run again"
    )
    print(f"error: {why}{hint}", file=sys.stderr, flush=True)


def check_memory(workers: int) -> None:
    """Refuse a cluster whose workers cannot all fit in the memory available (`WORKER_MEMORY_MB` each, a floor); no
    check where the available memory is unknown."""
    available = memory_available_mb()
    if available is None or workers * WORKER_MEMORY_MB <= available:
        return
    fits = int(available // WORKER_MEMORY_MB)
    advice = f"use --workers {fits} or fewer" if fits >= 2 else "train in one process (without --workers)"
    raise UserError(
        f"workers: {workers} workers need at least {workers * WORKER_MEMORY_MB / 1024:,.1f} GB of memory "
        f"({WORKER_MEMORY_MB} MB each), but this machine has {available / 1024:,.1f} GB available; {advice}"
    )


def sweep_orphans(folder: Path | None = None) -> list[Path]:
    """Remove the scratch folders of `--workers` launchers that were killed (their pid is gone, or is another
    process now), marking each one's run `interrupted` if it was left `running`; returns what was removed."""
    removed = []
    for scratch in Path(folder or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        owner = re.match(rf"{SCRATCH_PREFIX}(\d+)\.(\d+|None)-", scratch.name)
        with contextlib.suppress(OSError):
            if owner is None or scratch.stat().st_uid != os.getuid() or _launcher_alive(*owner.groups()):
                continue
            _close_orphan(scratch, owner.group(1))
            shutil.rmtree(scratch, ignore_errors=True)
            removed.append(scratch)
    return removed


def _close_orphan(scratch: Path, launcher: str) -> None:
    """The run a killed launcher left `running` is marked interrupted (unless its chief still runs), with its
    workers' logs."""
    others = len(list(scratch.glob("worker-*.log")))  # worker-1.log ... worker-<N-1>.log: the chief's is not kept
    cluster = Cluster(scratch, logs=[Path(), *(scratch / f"worker-{index}.log" for index in range(1, 1 + others))])
    with contextlib.suppress(Exception):
        run_dir = cluster.run_dir()
        if run_dir is not None and not read_run_record(run_dir).is_live():
            why = f"its --workers launcher (pid {launcher}) was killed, and its workers with it"
            resume = f"tlcli train --resume {run_dir} --workers {len(cluster.logs)}"
            _mark(run_dir, "interrupted", f"{why}; continue it with: {resume}")
            _keep_logs(cluster, run_dir)


def _launcher_alive(pid: str, started: str) -> bool:
    return process_alive(int(pid)) and (started == "None" or str(process_start_ticks(int(pid))) in (started, "None"))


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out (free a moment ago; TensorFlow binds them right after)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start(cluster: Cluster, args: list[str], ports: list[int], index: int) -> None:
    spec = {"cluster": {"worker": [f"localhost:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
    env = child_environment({TF_CONFIG: json.dumps(spec), CLUSTER_DIR: str(cluster.folder)})
    command = [sys.executable, "-m", "tlcli", *args]
    end_with_launcher = functools.partial(_end_with_parent, os.getpid())
    if index == 0:  # the chief speaks for the cluster: its progress and summary are this command's
        cluster.processes.append(subprocess.Popen(command, env=env, preexec_fn=end_with_launcher))
        cluster.logs.append(Path())
        return
    log = cluster.folder / f"worker-{index}.log"
    with open(log, "wb") as stream:
        cluster.processes.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=stream,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=end_with_launcher,
            )
        )
    cluster.logs.append(log)


def _end_with_parent(launcher: int) -> None:
    """In the worker, before exec: on Linux, the kernel SIGKILLs it when the launcher dies, even by SIGKILL, so no
    worker outlives it. SIGKILL, not SIGTERM: TensorFlow's multi-worker runtime catches SIGTERM (its preemption
    notice) and trains on."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, from the C library
    if os.getppid() != launcher:  # the launcher died before the request was made: the kernel will not send it
        os._exit(EXIT_FAILURE)


def watch_launcher() -> threading.Thread | None:
    """In a worker a `--workers` launcher started: a thread that exits this process at once when the launcher is gone
    (where the kernel does not kill it first: PR_SET_PDEATHSIG is Linux's); None in any other process."""
    owner = re.match(rf"{SCRATCH_PREFIX}(\d+)\.", Path(cluster_dir() or "").name)
    if owner is None:
        return None
    thread = threading.Thread(target=_exit_when_orphaned, args=(int(owner.group(1)),), daemon=True)
    thread.start()
    return thread


def _exit_when_orphaned(launcher: int, poll_s: float = 0.5, end=os._exit) -> None:
    """Wait while the launcher is this process's parent, then end the process at once (`os._exit`: a worker blocked
    in a collective, or whose SIGTERM TensorFlow caught, would not stop otherwise)."""
    while os.getppid() == launcher:
        time.sleep(poll_s)
    end(EXIT_FAILURE)


def _watch(cluster: Cluster) -> tuple[int, str | None]:
    """Wait for the chief; returns its exit code and, when the launcher had to end the cluster, why."""
    interrupted = {"now": False}

    def forward(signum, frame):  # Ctrl-C: every worker stops after its current batch, as one process would
        interrupted["now"] = True
        for process in cluster.processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)

    # SIGTERM (a scheduler, a CI timeout, `kill`) ends the cluster as Ctrl-C does, rather than orphaning the workers.
    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            if cluster.chief.poll() is not None:
                return _after_chief(cluster)
            lost = next(
                ((i, p.returncode) for i, p in enumerate(cluster.processes[1:], 1) if p.poll() is not None), None
            )
            if interrupted["now"]:
                return _after_ctrl_c(cluster)
            if lost is not None:
                return _after_loss(cluster, *lost)
            time.sleep(POLL_S)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _after_chief(cluster: Cluster) -> tuple[int, str | None]:
    """The chief ended first, or seemed to: its collective fails at once when a worker is SIGKILLed, so both can end
    within one poll. A failed chief's cause is then the killed worker, which the chief could not name."""
    code = cluster.chief.returncode
    if code < 0:  # killed by a signal: it could say nothing, nor record the run's end
        return EXIT_FAILURE, _lost(cluster, 0, code)
    killed = next(((i, p.returncode) for i, p in enumerate(cluster.processes[1:], 1) if (p.poll() or 0) < 0), None)
    if code > 0 and killed is not None:
        return EXIT_FAILURE, _lost(cluster, *killed)
    return code, None


def _after_ctrl_c(cluster: Cluster) -> tuple[int, str | None]:
    if _wait(cluster.chief, GRACE_S * 2) is not None:
        return cluster.chief.returncode, None
    return EXIT_INTERRUPTED, "interrupted by Ctrl-C (the chief did not stop in time and was ended)"


def _after_loss(cluster: Cluster, index: int, code: int) -> tuple[int, str | None]:
    """A worker other than the chief exited first: a finished cluster's workers end together, so this one failed
    (unless it exited by itself and the chief ends on its own right after: a bad config fails every worker at once,
    and the chief says why). A worker killed by a signal is the cause even when the chief's next collective fails
    at once."""
    chief_ended = _wait(cluster.chief, GRACE_S if code == 0 else 1.0) is not None
    if chief_ended and code >= 0:
        chief = cluster.chief.returncode
        return (chief, None) if chief >= 0 else (EXIT_FAILURE, _lost(cluster, 0, chief))
    return EXIT_FAILURE, _lost(cluster, index, code)


def _lost(cluster: Cluster, index: int, code: int) -> str:
    """Which worker ended the cluster and how (the signal named, or its exit code and last error line)."""
    how = f"was killed by signal {-code} ({_signal_name(-code)})" if code < 0 else f"exited with code {code}"
    tail = _tail(cluster.logs[index]) if index else ""
    chief = " (the chief)" if index == 0 else ""
    return (
        f"worker {index} of {len(cluster.processes)}{chief} {how}{': ' + tail if tail else ''}; "
        "the other workers were stopped"
    )


def _signal_name(number: int) -> str:
    with contextlib.suppress(ValueError):
        return signal.Signals(number).name
    return "unknown signal"


def _wait(process: subprocess.Popen, seconds: float) -> int | None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        return process.wait(seconds)
    return None


def _end_all(cluster: Cluster) -> None:
    """Terminate what still runs; kill what has not ended after `GRACE_S` (a worker blocked in a collective
    ignores SIGTERM)."""
    running = [p for p in cluster.processes if p.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    deadline = time.monotonic() + GRACE_S
    for process in running:
        if _wait(process, max(0.0, deadline - time.monotonic())) is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


def _mark(run_dir: Path | None, status: str, why: str) -> None:
    """Record how the run ended when the chief could not (it was ended while blocked). When the chief already
    recorded the failure as its next collective's (another worker stopped answering, which one unknown to it), the
    launcher knows which worker ended and how: its reason comes first, the chief's after it."""
    if run_dir is None or not (run_dir / "run.json").is_file():
        return
    with contextlib.suppress(Exception):
        record = read_run_record(run_dir)
        if record.status == "running":
            finish_run(run_dir, status, why)
        elif record.status == status == "failed" and record.error and why not in record.error:
            amend_failure(run_dir, f"{why} (the chief: {record.error})")  # it ended when the chief said


def _keep_logs(cluster: Cluster, run_dir: Path | None) -> None:
    if run_dir is None or not run_dir.is_dir():
        return
    folder = run_dir / "workers"
    folder.mkdir(exist_ok=True)
    for index, log in enumerate(cluster.logs[1:], 1):
        if log.is_file():
            shutil.copyfile(log, folder / f"{index}.log")


def _tail(log: Path) -> str:
    """The last `error:` line of a worker's log, if it wrote one."""
    with contextlib.suppress(OSError):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("error:")]
        return lines[-1].removeprefix("error:").strip()[:200] if lines else ""
    return ""


def tell_launcher(run_dir: Path) -> None:
    """The chief names its run folder to the launcher that started it (if one did)."""
    folder = cluster_dir()  # where the chief tells the launcher its run folder
    if folder and Path(folder).is_dir():
        with contextlib.suppress(OSError):
            (Path(folder) / "run_dir").write_text(str(Path(run_dir).absolute()))
