"""Stage 4, the model: layer names (`layers`), the catalogue of bases (`bases`), weights in the
Keras cache (`weights`), building (`build`), freezing (`freezing`), devices (`devices`) and what `tlcli env`
reports (`environment`)."""

from tlcli.modeling.build import SourceBase, build_model, load_run_model, source_base
from tlcli.modeling.devices import DevicePlan, GpuInfo, apply_device_plan, plan_devices
from tlcli.modeling.environment import Environment, environment_report
from tlcli.modeling.freezing import first_trainable_index, set_base_trainable, trainable_spec

__all__ = [
    "DevicePlan",
    "Environment",
    "GpuInfo",
    "SourceBase",
    "apply_device_plan",
    "build_model",
    "environment_report",
    "first_trainable_index",
    "load_run_model",
    "plan_devices",
    "set_base_trainable",
    "source_base",
    "trainable_spec",
]
