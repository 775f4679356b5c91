"""Every environment variable tlcli reads or sets, declared once (`VARIABLES`), and the only module that touches them.

Each `Variable` says what it means, what applies when it is unset, and who sets it: the user, the `tlcli` command
(for the whole process, at its entry point, before a library loads), or a launcher for the processes it starts (the
`--workers` launcher, the report worker's parent). Library code reads variables through the accessors below, and
never sets one for the whole process: `scoped` sets defaults around a call and puts the environment back, and
`child_environment` builds the environment of a process tlcli starts. `reference_markdown()` renders the table the
README's reference is generated from; `tests/test_settings.py` checks that no other module reads `os.environ` or
names a `TLCLI_` variable.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Mapping

USER = "user"
CLI = "tlcli CLI"
LAUNCHER = "launcher"


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, what it means, what applies when unset, who sets it."""

    name: str
    meaning: str
    default: str
    set_by: tuple[str, ...] = (USER,)

    def value(self, environ: Mapping[str, str] | None = None) -> str | None:
        """Its value in `environ` (default: this process's environment), or None when unset."""
        return (os.environ if environ is None else environ).get(self.name)


# ----------------------------------------------------------------------------- tlcli's own

CACHE_DIR = Variable(
    "TLCLI_CACHE_DIR",
    "Root of tlcli's cache: frozen features, screening verdicts, spilled decoded images.",
    "`~/.cache/tlcli` (spilled images: the system's temporary folder)",
)
CACHE_MAX_GB = Variable(
    "TLCLI_CACHE_MAX_GB",
    "Size cap of the feature cache in GB; the least recently used model keys are dropped beyond it.",
    "`10`",
)
DEBUG = Variable("TLCLI_DEBUG", "`1`: every command behaves as with `--debug` (tracebacks, TensorFlow's logs).", "off")
LOGICAL_CPUS = Variable(
    "TLCLI_LOGICAL_CPUS",
    "Split the CPU into N logical devices, so MirroredStrategy runs without GPUs (a test switch).",
    "no split",
)
CLUSTER_DIR = Variable(
    "TLCLI_CLUSTER_DIR",
    "Scratch folder of a `--workers` launcher: its chief writes the run folder's name there, the other workers their "
    "scratch runs folders.",
    "unset (no launcher)",
    (LAUNCHER,),
)

# ----------------------------------------------------------------------------- other libraries'

TF_CONFIG = Variable(
    "TF_CONFIG",
    "TensorFlow's multi-worker cluster spec: this process is one worker of a cluster.",
    "unset (one process)",
    (USER, LAUNCHER),
)
TF_ENABLE_ONEDNN_OPTS = Variable(
    "TF_ENABLE_ONEDNN_OPTS",
    "TensorFlow's oneDNN op reordering; `tlcli train` sets `0` with `runtime.deterministic` (before TensorFlow loads).",
    "TensorFlow's (on)",
    (USER, CLI),
)
TF_CPP_MIN_LOG_LEVEL = Variable(
    "TF_CPP_MIN_LOG_LEVEL",
    "TensorFlow's C++ log level; the CLI sets `3` without `--debug`, and then also hides converters' native logs.",
    "TensorFlow's (`0`)",
    (USER, CLI),
)
KERAS_HOME = Variable(
    "KERAS_HOME", "Keras's folder; weights are looked up in its `models/`.", "`~/.keras` (else `/tmp/.keras`)"
)
MPLBACKEND = Variable(
    "MPLBACKEND",
    "matplotlib's backend: `Agg` in the report worker and while `tlcli tune` imports pyplot.",
    "`Agg` where tlcli draws",
    (USER, LAUNCHER),
)
MLFLOW_TRACKING_URI = Variable(
    "MLFLOW_TRACKING_URI",
    "Turns MLflow tracking on and says where (after `--mlflow URI` and the config's `tracking.mlflow`).",
    "unset (tracking off)",
)
MLFLOW_HTTP = tuple(
    Variable(name, f"MLflow's {what}; tlcli's short default applies around its MLflow calls.", f"`{value}`")
    for name, what, value in (
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "retries of an HTTP request", "1"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "backoff factor between retries", "1"),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "backoff jitter", "0"),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "HTTP timeout in seconds", "5"),
    )
)
# MLflow's client retries for minutes by default; a tracking server must never stall training.
MLFLOW_HTTP_DEFAULTS = {variable: variable.default.strip("`") for variable in MLFLOW_HTTP}

VARIABLES: tuple[Variable, ...] = (
    CACHE_DIR,
    CACHE_MAX_GB,
    DEBUG,
    LOGICAL_CPUS,
    CLUSTER_DIR,
    TF_CONFIG,
    TF_ENABLE_ONEDNN_OPTS,
    TF_CPP_MIN_LOG_LEVEL,
    KERAS_HOME,
    MPLBACKEND,
    MLFLOW_TRACKING_URI,
    *MLFLOW_HTTP,
)

# ----------------------------------------------------------------------------- reading


def cache_dir() -> str | None:
    """`$TLCLI_CACHE_DIR`, None when unset or empty."""
    return CACHE_DIR.value() or None


def cache_max_gb(default: float) -> float:
    """`$TLCLI_CACHE_MAX_GB` (`default` when unset).

    Raises:
        ValueError: not a number.
    """
    text = CACHE_MAX_GB.value()
    return float(text) if text is not None else default


def debug() -> bool:
    return DEBUG.value() == "1"


def logical_cpus_text(environ: Mapping[str, str] | None = None) -> str:
    return (LOGICAL_CPUS.value(environ) or "").strip()


def cluster_dir() -> str | None:
    return CLUSTER_DIR.value() or None


def tf_config_text(environ: Mapping[str, str] | None = None) -> str:
    return (TF_CONFIG.value(environ) or "").strip()


def keras_home() -> str | None:
    return KERAS_HOME.value() or None


def tracking_uri() -> str | None:
    return MLFLOW_TRACKING_URI.value() or None


def native_logs_quiet() -> bool:
    """TensorFlow's C++ logs are off (`TF_CPP_MIN_LOG_LEVEL=3`, the CLI's setting without `--debug`)."""
    return TF_CPP_MIN_LOG_LEVEL.value() == "3"


# ----------------------------------------------------------------------------- setting


def set_process_default(variable: Variable, value: str) -> None:
    """Set `variable` for this whole process unless the user did: for the CLI's entry point only (a test checks)."""
    os.environ.setdefault(variable.name, value)


@contextlib.contextmanager
def scoped(defaults: Mapping[Variable, str]) -> Iterator[None]:
    """Each variable the user did not set is set to its default inside the block only (library calls use this)."""
    added = [variable.name for variable in defaults if variable.name not in os.environ]
    for variable, value in defaults.items():
        if variable.name in added:
            os.environ[variable.name] = value
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def child_environment(
    values: Mapping[Variable, str] | None = None, defaults: Mapping[Variable, str] | None = None
) -> dict[str, str]:
    """The environment of a process tlcli starts: this one's, with `values` set and `defaults` unless already set."""
    env = {variable.name: value for variable, value in (defaults or {}).items()}
    env.update(os.environ)
    env.update({variable.name: value for variable, value in (values or {}).items()})
    return env


# ----------------------------------------------------------------------------- reference


def reference_markdown() -> str:
    """A Markdown table of every variable: name, who sets it, what applies when unset, what it means."""
    lines = ["| variable | set by | when unset | meaning |", "|---|---|---|---|"]
    for variable in VARIABLES:
        lines.append(f"| `{variable.name}` | {', '.join(variable.set_by)} | {variable.default} | {variable.meaning} |")
    return "\n".join(lines) + "\n"
