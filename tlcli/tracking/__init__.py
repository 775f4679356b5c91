"""Experiment tracking (stage between evaluation and training): MLflow runs for training runs, evaluations and studies.

`settings` decides whether and where (config, `--mlflow`, `$MLFLOW_TRACKING_URI`); `client` is the fail-safe
client (one warning, then silence); `runs` logs a run folder's MLflow run; `studies` a tuning study's parent
and nested runs. Nothing imports mlflow until tracking is on.
"""

from tlcli.tracking.settings import DEFAULT_URI, TrackingRequest, TrackingSettings, resolve, suspended

__all__ = ["DEFAULT_URI", "TrackingRequest", "TrackingSettings", "resolve", "suspended"]
