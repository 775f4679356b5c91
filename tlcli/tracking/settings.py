"""Whether and where a command tracks: the config's `tracking.mlflow`, `--mlflow`, `$MLFLOW_TRACKING_URI`.

Pure decisions and the process settings MLflow's client needs; nothing here
imports mlflow at module import time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tlcli.config.plain import redact_uri
from tlcli.errors import UserError
from tlcli.settings import MLFLOW_HTTP_DEFAULTS, scoped, tracking_uri

if TYPE_CHECKING:  # the schema (pydantic) stays unloaded for `TrackingRequest` alone (the CLI's options)
    from tlcli.config.schema import ExperimentConfig

__all__ = ["DEFAULT_URI", "TrackingRequest", "TrackingSettings", "redact_uri", "require_mlflow", "resolve"]

DEFAULT_URI = "sqlite:///mlruns.db"  # embedded: an SQLite file in the working directory, nothing to start


@dataclass(frozen=True)
class TrackingRequest:
    """What the command line asked for: `--mlflow [URI]` (uri "" = the default), `--strict-tracking`."""

    mlflow_uri: str | None = None
    strict: bool = False


@dataclass(frozen=True)
class TrackingSettings:
    """Where this command logs: a resolved MLflow tracking URI (absolute for the embedded store), experiment, tags."""

    uri: str
    experiment: str
    tags: dict[str, str] = field(default_factory=dict)
    strict: bool = False

    @property
    def shown_uri(self) -> str:
        """The URI as it may be printed or written into a run folder (no password)."""
        return redact_uri(self.uri)


def resolve(
    config: ExperimentConfig, request: TrackingRequest | None = None, recorded_uri: str | None = None
) -> TrackingSettings | None:
    """The settings when tracking is on (flag, config, environment, or a URI the run recorded), else None.

    The URI is the first of: `--mlflow URI`, the URI a run recorded (its MLflow run lives there: resume, evaluate),
    `tracking.mlflow.tracking_uri`, `$MLFLOW_TRACKING_URI`, the embedded default.
    """
    request = request or TrackingRequest()
    section = config.tracking.mlflow
    from_env = tracking_uri()
    if request.mlflow_uri is None and section is None and from_env is None and recorded_uri is None:
        return None
    uri = request.mlflow_uri or recorded_uri or (section.tracking_uri if section else None) or from_env or DEFAULT_URI
    experiment = (section.experiment if section else None) or config.name
    return TrackingSettings(absolute_uri(uri), experiment, dict(section.tags) if section else {}, request.strict)


def absolute_uri(uri: str) -> str:
    """`sqlite:///relative.db` and `file:./folder` made absolute, so a resume or an evaluation elsewhere finds the
    same store."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).absolute())
    if uri.startswith("file:") and not uri.startswith("file:///"):
        return Path(uri.removeprefix("file:")).absolute().as_uri()
    if "://" not in uri and not uri.startswith(("databricks", "file:")):  # a plain folder path
        return Path(uri).absolute().as_uri()
    return uri


def short_http():
    """A block in which MLflow's client retries and waits briefly (unless the user set its variables): by default it
    retries for minutes, and a tracking server must never stall training."""
    return scoped(MLFLOW_HTTP_DEFAULTS)


def require_mlflow():
    """The mlflow module (its calls go through `short_http`, `Tracker.call` does).

    Raises:
        UserError: mlflow is not installed.
    """
    try:
        import mlflow
    except ImportError:
        raise UserError('experiment tracking needs MLflow: pip install "tlcli[mlflow]"') from None
    logging.getLogger("mlflow").setLevel(
        logging.ERROR
    )  # its migrations and signature hints are not the user's business
    logging.getLogger("alembic").setLevel(logging.ERROR)
    return mlflow
