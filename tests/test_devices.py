"""Device choice is pure logic over what TensorFlow reports, so it is tested without a GPU."""

from __future__ import annotations

import pytest

from tlcli.errors import UserError
from tlcli.modeling.devices import GpuInfo, plan_devices

V100 = GpuInfo("Tesla V100", (7, 0))
K80 = GpuInfo("Tesla K80", (3, 7))


def test_no_gpu_means_cpu_without_mixed_precision():
    plan = plan_devices("auto", "auto", [])
    assert plan.device == "cpu" and plan.strategy == "default" and not plan.mixed_precision
    assert plan.describe() == "CPU"


def test_one_modern_gpu_uses_mixed_precision_automatically():
    plan = plan_devices("auto", "auto", [V100])
    assert plan.device == "gpu" and plan.strategy == "default" and plan.mixed_precision


def test_old_gpu_stays_float32_unless_forced():
    assert not plan_devices("auto", "auto", [K80]).mixed_precision
    assert plan_devices("auto", "on", [K80]).mixed_precision


def test_several_gpus_use_mirrored_strategy():
    plan = plan_devices("auto", "off", [V100, V100])
    assert plan.strategy == "mirrored" and not plan.mixed_precision
    assert "2 GPUs" in plan.describe() and "MirroredStrategy" in plan.describe()


def test_cpu_is_forced_even_with_gpus():
    assert plan_devices("cpu", "auto", [V100]).device == "cpu"


def test_gpu_requested_without_gpu_is_a_user_error():
    with pytest.raises(UserError, match="runtime.device: gpu requested"):
        plan_devices("gpu", "auto", [])
