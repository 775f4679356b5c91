"""The one place tracking backends plug in: `trackers()` builds every backend for a command's request.

A second backend implements `tlcli.tracking.seam.Tracker` and joins `BACKENDS`; training, evaluation and tuning
talk only to the `Trackers` this returns.
"""

from __future__ import annotations

from tlcli.tracking.mlflow_tracker import MlflowTracker
from tlcli.tracking.seam import Trackers
from tlcli.tracking.settings import TrackingRequest

BACKENDS = (MlflowTracker,)  # each takes the command's TrackingRequest (None: the command line asked for nothing)


def trackers(request: TrackingRequest | None = None) -> Trackers:
    """Every backend, each on or off by the config, the request, the environment and the run's own record."""
    return Trackers([backend(request) for backend in BACKENDS])
