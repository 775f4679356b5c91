"""`tlcli env`: the versions, the devices TensorFlow sees, and the folders tlcli reads weights and caches from.

The devices need TensorFlow loaded (a few seconds), which is why `tlcli --version` leaves them out.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass

from tlcli.modeling.devices import GpuInfo, cluster_from_env, logical_cpus_from_env, plan_devices, visible_gpus
from tlcli.paths import cache_root, keras_weights_dir
from tlcli.version import Versions, versions


@dataclass(frozen=True)
class Environment:
    """What a bug report needs: versions, platform, devices and where weights and caches live."""

    versions: Versions
    platform: str
    python_executable: str
    cpus: int
    gpus: tuple[GpuInfo, ...]
    devices: str  # what `runtime.device: auto` would use, as training's summary says it
    keras_weights_dir: str
    weights_files: tuple[str, ...]  # the files in keras_weights_dir (offline, only these bases have weights)
    cache_dir: str

    def to_dict(self) -> dict:
        return {
            "versions": self.versions.to_dict(),
            "platform": self.platform,
            "python_executable": self.python_executable,
            "cpus": self.cpus,
            "gpus": [{"name": g.name, "compute_capability": g.compute_capability} for g in self.gpus],
            "devices": self.devices,
            "keras_weights_dir": self.keras_weights_dir,
            "weights_files": list(self.weights_files),
            "cache_dir": self.cache_dir,
        }


def environment_report() -> Environment:
    """The installed versions and the devices TensorFlow sees (loads TensorFlow)."""
    gpus = tuple(visible_gpus())
    plan = plan_devices("auto", "auto", list(gpus), cluster_from_env(), logical_cpus_from_env())
    weights = keras_weights_dir()
    files = tuple(sorted(p.name for p in weights.iterdir() if p.is_file())) if weights.is_dir() else ()
    return Environment(
        versions=versions(),
        platform=platform.platform(),
        python_executable=sys.executable,
        cpus=os.cpu_count() or 1,
        gpus=gpus,
        devices=plan.describe(),
        keras_weights_dir=str(weights),
        weights_files=files,
        cache_dir=str(cache_root()),
    )
