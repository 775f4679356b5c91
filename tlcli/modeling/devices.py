"""Choosing where to train: CPU, one GPU, or all GPUs, and mixed precision.

`plan_devices` is pure logic over what TensorFlow reports, so it is tested
without a GPU; `apply_device_plan` does what the TensorFlow guides prescribe
(`set_visible_devices` to force the CPU, `MirroredStrategy` for several GPUs,
the `mixed_float16` Keras policy for GPUs of compute capability 7.0+).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tlcli.errors import UserError

MIXED_PRECISION_MIN_CAPABILITY = (7, 0)  # Volta and newer have float16 tensor cores


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cpu" or "gpu"
    gpus: list[str] = field(default_factory=list)
    strategy: str = "default"  # "default" or "mirrored"
    mixed_precision: bool = False

    def describe(self) -> str:
        where = "CPU" if self.device == "cpu" else f"{len(self.gpus)} GPU{'s' if len(self.gpus) > 1 else ''} ({', '.join(self.gpus)})"
        extras = [s for s in ("MirroredStrategy" if self.strategy == "mirrored" else "", "mixed precision" if self.mixed_precision else "") if s]
        return where + (f", {', '.join(extras)}" if extras else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_devices(device: str, mixed_precision: str, gpus: list[GpuInfo]) -> DevicePlan:
    """Decide devices from the config and the visible GPUs.

    Raises:
        UserError: `device: gpu` was asked for and no GPU is visible.
    """
    if device == "gpu" and not gpus:
        raise UserError("runtime.device: gpu requested but TensorFlow sees no GPU; use --device cpu or check CUDA (`pip install tlcli[gpu]`)")
    use_gpu = device != "cpu" and bool(gpus)
    if not use_gpu:
        return DevicePlan("cpu", mixed_precision=mixed_precision == "on")
    names = [gpu.name for gpu in gpus]
    strategy = "mirrored" if len(gpus) > 1 else "default"
    if mixed_precision == "auto":
        mixed = all(gpu.compute_capability is not None and gpu.compute_capability >= MIXED_PRECISION_MIN_CAPABILITY for gpu in gpus)
    else:
        mixed = mixed_precision == "on"
    return DevicePlan("gpu", names, strategy, mixed)


def visible_gpus() -> list[GpuInfo]:
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device) or {}
        found.append(GpuInfo(details.get("device_name", device.name), details.get("compute_capability")))
    return found


def apply_device_plan(plan: DevicePlan):
    """Make TensorFlow follow `plan`; returns the distribution strategy to build under."""
    import keras
    import tensorflow as tf

    if plan.device == "cpu":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass  # devices already initialised in this process; CPU placement below still applies
    keras.mixed_precision.set_global_policy("mixed_float16" if plan.mixed_precision else "float32")
    if plan.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def enable_determinism(seed: int) -> None:
    """Same config and seed, same metrics on this machine (slower ops)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
