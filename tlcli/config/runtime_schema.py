"""The `runtime:`, `tracking:` and `output:` sections of the schema: devices, numerics, trackers, where runs go."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from tlcli.config.fields import ON_OFF_WORDS, PathValue, Section


class RuntimeConfig(Section):
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="`auto` uses every visible GPU (MirroredStrategy when more than one), else the CPU."
    )
    mixed_precision: Annotated[Literal["auto", "on", "off"], ON_OFF_WORDS] = Field(
        "auto", description="`auto` = on for GPUs with compute capability 7.0 or newer."
    )
    deterministic: bool = Field(
        False,
        description=(
            "TensorFlow op determinism: same config and seed give the same metrics on the same machine (slower)."
        ),
    )
    collective_timeout_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Several machines (`TF_CONFIG`): a collective operation (gradients, the feature exchange) that waits "
            "longer than this fails the run, so a dead or stalled worker stops the others within this bound. "
            "Raise it when an epoch's slowest step is longer."
        ),
    )
    worker_start_timeout_s: float = Field(
        300.0,
        gt=0,
        description=(
            "Several machines: how long a worker waits for every worker of the cluster to join before it gives "
            "up (exit 1, one line, nothing written)."
        ),
    )


class MlflowConfig(Section):
    """Experiment tracking in MLflow (README "Experiment tracking: MLflow")."""

    tracking_uri: str | None = Field(
        None,
        description=(
            "The MLflow tracking URI (`http://host:5000`, `sqlite:///mlruns.db`); unset: "
            "`$MLFLOW_TRACKING_URI`, else `sqlite:///mlruns.db` in the working directory. A password in it is "
            "never written into the run folder (use `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD`)."
        ),
    )
    experiment: str | None = Field(
        None, description="The MLflow experiment the runs go to (created when missing); unset: the config's `name`."
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags set on every MLflow run of this config.")


class TrackingConfig(Section):
    """Where runs are tracked besides their run folder (off unless a tracker is configured)."""

    mlflow: MlflowConfig | None = Field(
        None,
        description=(
            "Log every run (params, per-epoch metrics, artifacts, model) to MLflow; `{}` turns it on with the "
            "defaults. Also on with `tlcli train --mlflow [URI]` (and `tlcli tune --mlflow [URI]`) or "
            "`$MLFLOW_TRACKING_URI`."
        ),
    )


class OutputConfig(Section):
    runs_dir: PathValue = Field(
        Path("runs"), description="Folder that receives the run folders (`--runs-dir` overrides)."
    )
    report: bool = Field(
        True,
        description=(
            "Write `report.html` (one self-contained page: config, data, curves, figures with intervals, mistakes, "
            "provenance) and `MODEL_CARD.md` into the run folder at the end of `tlcli train`, and `report.html` "
            "into each `tlcli evaluate` folder (`false`: neither; `tlcli report` and an export still write them)."
        ),
    )
