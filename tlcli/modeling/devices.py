"""Choosing where to train: CPU, one GPU, all GPUs, or a cluster of machines; and mixed precision.

`plan_devices` is pure logic over what TensorFlow reports, so it is tested
without a GPU; `apply_device_plan` does what the TensorFlow guides prescribe
(`set_visible_devices` to force the CPU, `MirroredStrategy` for several GPUs,
`MultiWorkerMirroredStrategy` when `TF_CONFIG` names a cluster of several
workers, the `mixed_float16` Keras policy for GPUs of compute capability 7.0+).

`TLCLI_LOGICAL_CPUS=N` (a test switch) splits the CPU into N logical devices
and mirrors over them, the pattern of Keras's own distribution tests: the
several-device code path then runs on a machine without GPUs.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from tlcli.errors import UserError
from tlcli.settings import LOGICAL_CPUS, logical_cpus_text, tf_config_text

LOGICAL_CPUS_ENV = LOGICAL_CPUS.name

MIXED_PRECISION_MIN_CAPABILITY = (7, 0)  # Volta and newer have float16 tensor cores


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class Cluster:
    """The workers `TF_CONFIG` names (host:port, the chief first) and which one this process is."""

    workers: tuple[str, ...]
    index: int

    @property
    def chief(self) -> bool:
        return self.index == 0


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cpu" or "gpu"
    gpus: list[str] = field(default_factory=list)
    strategy: str = "default"  # "default", "mirrored" (several devices of this machine) or "multi_worker"
    mixed_precision: bool = False
    logical_cpus: int = 0  # TLCLI_LOGICAL_CPUS: mirror over this many logical CPU devices
    workers: tuple[str, ...] = ()  # multi_worker: every worker's host:port, the chief first
    worker_index: int = 0
    replicas: int = 1  # in sync: every device of every worker

    @property
    def chief(self) -> bool:
        """This process writes the run folder (worker 0; the only process without a cluster)."""
        return self.worker_index == 0

    def describe(self) -> str:
        where = (
            "CPU"
            if self.device == "cpu"
            else f"{len(self.gpus)} GPU{'s' if len(self.gpus) > 1 else ''} ({', '.join(self.gpus)})"
        )
        if self.logical_cpus > 1:
            where = f"CPU as {self.logical_cpus} logical devices ({LOGICAL_CPUS_ENV})"
        strategy = {
            "mirrored": "MirroredStrategy",
            "multi_worker": (
                f"MultiWorkerMirroredStrategy over {len(self.workers)} workers (this is worker {self.worker_index})"
            ),
        }.get(self.strategy, "")
        extras = [
            s
            for s in (
                strategy,
                f"{self.replicas} replicas" if self.replicas > 1 else "",
                "mixed precision" if self.mixed_precision else "",
            )
            if s
        ]
        return where + (f", {', '.join(extras)}" if extras else "")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["workers"] = list(self.workers)
        data["hosts"] = sorted({worker.rsplit(":", 1)[0] for worker in self.workers})
        return data


def cluster_from_env(environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The cluster `TF_CONFIG` names, or None (unset, or a single worker: no cluster).

    `TF_CONFIG` is `{"cluster": {"worker": [host:port, ...], "chief": [host:port]?}, "task": {"type": ..., "index":
    i}}`,
    as TensorFlow's multi-worker guide and Kubernetes training operators write it; a `chief` task is worker 0.

    Raises:
        UserError: TF_CONFIG is not of that shape.
    """
    text = tf_config_text(environ)
    if not text:
        return None
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec.get("task", {})
        chief, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(
            f'TF_CONFIG: not a cluster spec ({exc}); expected {{"cluster": {{"worker": ["host:port", ...]}}, '
            f'"task": {{"type": "worker", "index": 0}}}}'
        ) from None
    others = sorted(set(cluster) - {"chief", "worker"})
    if others or kind not in ("chief", "worker"):
        raise UserError(
            "TF_CONFIG: tlcli trains with MultiWorkerMirroredStrategy, whose cluster has chief and worker "
            f"tasks only (found {', '.join(others) or kind})"
        )
    everyone = tuple(chief + workers)
    position = index if kind == "chief" else len(chief) + index
    if not 0 <= position < len(everyone) or (kind == "chief" and index != 0):
        raise UserError(f"TF_CONFIG: task {kind} {index} is not in the cluster ({len(everyone)} workers)")
    return Cluster(everyone, position) if len(everyone) > 1 else None


def logical_cpus_from_env(environ: Mapping[str, str] | None = None) -> int:
    text = logical_cpus_text(environ)
    if not text:
        return 0
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{LOGICAL_CPUS_ENV}: expected a number of logical CPU devices (2 or more), got {text!r}")
    return int(text)


def plan_devices(
    device: str, mixed_precision: str, gpus: list[GpuInfo], cluster: Cluster | None = None, logical_cpus: int = 0
) -> DevicePlan:
    """Decide devices from the config, the visible GPUs, the cluster (`TF_CONFIG`) and `TLCLI_LOGICAL_CPUS`.

    Raises:
        UserError: `device: gpu` was asked for and no GPU is visible.
    """
    if device == "gpu" and not gpus:
        raise UserError(
            "runtime.device: gpu requested but TensorFlow sees no GPU; use --device cpu or check CUDA (`pip "
            "install tlcli[gpu]`)"
        )
    use_gpu = device != "cpu" and bool(gpus)
    local = len(gpus) if use_gpu else 1
    where = (
        {"workers": cluster.workers, "worker_index": cluster.index, "replicas": len(cluster.workers) * local}
        if cluster is not None
        else {}
    )
    if not use_gpu:
        if cluster is not None:
            return DevicePlan("cpu", strategy="multi_worker", mixed_precision=mixed_precision == "on", **where)
        if logical_cpus > 1:
            return DevicePlan(
                "cpu",
                strategy="mirrored",
                mixed_precision=mixed_precision == "on",
                logical_cpus=logical_cpus,
                replicas=logical_cpus,
            )
        return DevicePlan("cpu", mixed_precision=mixed_precision == "on")
    names = [gpu.name for gpu in gpus]
    strategy = "multi_worker" if cluster is not None else "mirrored" if len(gpus) > 1 else "default"
    if mixed_precision == "auto":
        mixed = all(
            gpu.compute_capability is not None and gpu.compute_capability >= MIXED_PRECISION_MIN_CAPABILITY
            for gpu in gpus
        )
    else:
        mixed = mixed_precision == "on"
    return DevicePlan("gpu", names, strategy, mixed, **(where or {"replicas": len(gpus)}))


def visible_gpus() -> list[GpuInfo]:
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device) or {}
        found.append(GpuInfo(details.get("device_name", device.name), details.get("compute_capability")))
    return found


def apply_device_plan(plan: DevicePlan, collective_timeout_s: float = 60.0, start_timeout_s: float = 300.0):
    """Make TensorFlow follow `plan`; returns the distribution strategy to build under.

    Multi-worker: every collective (gradients, the feature exchange, stopping) fails after `collective_timeout_s`
    (so a dead worker ends the others' run within that bound), and a cluster not complete within
    `start_timeout_s` ends this process (TensorFlow waits for every worker without a limit).
    """
    import keras
    import tensorflow as tf

    if plan.device == "cpu":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass  # devices already initialised in this process; CPU placement below still applies
    keras.mixed_precision.set_global_policy("mixed_float16" if plan.mixed_precision else "float32")
    if plan.strategy == "mirrored" and plan.logical_cpus > 1:
        _split_cpu(plan.logical_cpus)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(plan.logical_cpus)])
    if plan.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if plan.strategy == "multi_worker":
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout_s)
        return _within(
            start_timeout_s, plan, lambda: tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        )
    return tf.distribute.get_strategy()


def _split_cpu(count: int) -> None:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise UserError(
                f"{LOGICAL_CPUS_ENV}: TensorFlow's devices were initialised before tlcli could split the CPU; "
                "set it in the environment of a new process"
            ) from None


# The watchdog: a process of its own, since TensorFlow holds the GIL while it waits for the cluster.
_WATCHDOG = (
    "import select, sys\n"
    "ready = select.select([sys.stdin], [], [], float(sys.argv[1]))[0]\n"
    "if not ready:\n"
    "    sys.stderr.write(sys.argv[2] + '\\n')\n"
)


def _within(seconds: float, plan: DevicePlan, join):
    """`join()` (which blocks until every worker is up, holding the GIL), or end this process after `seconds`.

    A small watchdog process prints the error line at `seconds`; faulthandler's own thread (which needs no GIL)
    then exits this process with code 1. Nothing has been written yet.
    """
    import faulthandler
    import subprocess

    message = (
        f"error: TF_CONFIG: not every worker of the cluster joined within {seconds:g} s "
        f"({', '.join(plan.workers)}); start every worker, or raise runtime.worker_start_timeout_s"
    )
    watchdog = subprocess.Popen([sys.executable, "-S", "-c", _WATCHDOG, str(seconds), message], stdin=subprocess.PIPE)
    sink = open(os.devnull, "w")  # noqa: SIM115  (open until the timer is cancelled)
    faulthandler.dump_traceback_later(seconds + 1, exit=True, file=sink)
    try:
        return join()
    finally:
        faulthandler.cancel_dump_traceback_later()
        sink.close()
        watchdog.stdin.close()  # end of input: the watchdog leaves quietly
        watchdog.wait()


def enable_determinism(seed: int) -> None:
    """Same config and seed, same metrics on this machine (slower ops)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
