"""Experiment tracking (stage between evaluation and training): MLflow runs for training runs, evaluations and studies.

`seam` is what callers see: a `Tracker` per backend and a `RunTracker` per run folder, all of a command's backends
as one `Trackers`, built by `trackers()` (`backends`, the one place a backend plugs in). MLflow is the backend
today (`mlflow_tracker`): `settings` decides whether and where (config, `--mlflow`, `$MLFLOW_TRACKING_URI`);
`client` is the fail-safe client (one warning, then silence); `runs` logs a run folder's MLflow run; `studies` a
tuning study's parent and nested runs. Nothing imports mlflow until tracking is on.
"""

from typing import TYPE_CHECKING

from tlcli.lazy import lazy_exports

_PUBLIC = {
    "tlcli.tracking.backends": ("trackers",),
    "tlcli.tracking.seam": ("RunStart", "RunTracker", "StudyEnd", "Tracker", "Trackers", "suspended"),
    "tlcli.tracking.settings": ("DEFAULT_URI", "TrackingRequest", "TrackingSettings", "resolve"),
}
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)  # `TrackingRequest` alone (the CLI's options) stays light

if TYPE_CHECKING:
    from tlcli.tracking.backends import trackers
    from tlcli.tracking.seam import RunStart, RunTracker, StudyEnd, Tracker, Trackers, suspended
    from tlcli.tracking.settings import DEFAULT_URI, TrackingRequest, TrackingSettings, resolve

__all__ = [
    "DEFAULT_URI",
    "RunStart",
    "RunTracker",
    "StudyEnd",
    "Tracker",
    "Trackers",
    "TrackingRequest",
    "TrackingSettings",
    "resolve",
    "suspended",
    "trackers",
]
