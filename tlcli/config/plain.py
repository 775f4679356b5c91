"""What the schema holds that needs no pydantic: the CLI reads these without loading the schema (`tlcli --help`
shows `check --max-file-mb`'s default; every error line is redacted)."""

from __future__ import annotations

import re

DEFAULT_MAX_FILE_MB = 100.0  # generous for photos and scans; far below what would exhaust memory


def redact_uri(uri: str) -> str:
    """A URL without the password of its `user:password@` part (run folders are shared; MLflow also reads
    MLFLOW_TRACKING_PASSWORD)."""
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@", r"\1@", uri)
