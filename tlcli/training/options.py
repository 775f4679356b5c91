"""How a run is carried out, as opposed to what it trains (the config): `RunOptions`, and `tlcli train`'s options.

`TRAIN_OPTIONS` declares each option of `tlcli train` once (flag, help, type, default, where its value goes); the
CLI derives its Typer options from it, `worker_argv` the command line of each `--workers` process, and
`RunOptions.from_options` the library's options.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tlcli.errors import UserError
from tlcli.tracking.settings import TrackingRequest


@dataclass(frozen=True)
class TrainOption:
    """One option of `tlcli train`.

    Args:
        name: the Python name of its value (the command's parameter).
        flags: the long flag first, then any short one.
        help: the `--help` text.
        value_type: its value's type: `bool` (a switch), `str`, `int`, `Path` (made absolute for workers), `list`
            (repeatable, of strings).
        default: its value when not given (switches: False).
        metavar, flag_value: given alone, the option takes `flag_value` (`--mlflow` alone is "").
        choices: the values it accepts (checked by `check_options`).
        run_option: the `RunOptions` field it fills (`tracking.strict`: a field of its `TrackingRequest`), if any.
        forwarded: passed on to each worker process of `--workers`.
    """

    name: str
    flags: tuple[str, ...]
    help: str
    value_type: type = str
    default: Any = None
    metavar: str | None = None
    flag_value: str | None = None
    choices: tuple[str, ...] = ()
    run_option: str | None = None
    forwarded: bool = True

    @property
    def flag(self) -> str:
        return self.flags[0]

    def argv(self, value: Any) -> list[str]:
        """The option as a worker's command line carries it ([] when not given)."""
        if value is None or value is False:
            return []
        if value is True:
            return [self.flag]
        if isinstance(value, (list, tuple)):
            return [part for item in value for part in (self.flag, str(item))]
        if self.flag_value is not None and value == self.flag_value:
            return [self.flag]
        return [self.flag, str(Path(value).absolute() if self.value_type is Path else value)]


RESUME = TrainOption(
    "resume",
    ("--resume",),
    "Continue RUN_DIR from its last completed epoch with its own config.yaml; with --set train.epochs=N "
    "(or fine_tune.epochs=N), extend a finished run.",
    value_type=Path,
)
SET = TrainOption("set_", ("--set", "-s"), "Override a config key: --set train.epochs=3 (repeatable).", value_type=list)
RUNS_DIR = TrainOption(
    "runs_dir",
    ("--runs-dir",),
    "Folder holding run folders (default: the config's output.runs_dir, else ./runs).",
    value_type=Path,
)
DEVICE = TrainOption(
    "device",
    ("--device",),
    "auto, cpu or gpu (overrides runtime.device).",
    choices=("auto", "cpu", "gpu"),
    run_option="device",
)
STRICT = TrainOption(
    "strict",
    ("--strict",),
    "Stop (exit 2) on any data problem `tlcli check` reports: unreadable files, duplicates, leakage.",
    value_type=bool,
    default=False,
    run_option="strict",
)
WORKERS = TrainOption(
    "workers",
    ("--workers",),
    "Train as a cluster of N local worker processes (MultiWorkerMirroredStrategy, one TF_CONFIG each); "
    "data.batch_size stays the global batch.",
    value_type=int,
    forwarded=False,
)
MLFLOW = TrainOption(
    "mlflow",
    ("--mlflow",),
    "Log the run to MLflow at URI (alone: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db here); also on with the "
    "config's tracking.mlflow or $MLFLOW_TRACKING_URI.",
    metavar="[URI]",
    flag_value="",
    run_option="tracking.mlflow_uri",
)
STRICT_TRACKING = TrainOption(
    "strict_tracking",
    ("--strict-tracking",),
    "An MLflow store that cannot be reached is an error (exit 2) at start-up, instead of one warning and "
    "training untracked.",
    value_type=bool,
    default=False,
    run_option="tracking.strict",
)
JSON = TrainOption(
    "json_output", ("--json",), "Print one JSON document on stdout instead of tables.", value_type=bool, default=False
)
QUIET = TrainOption("quiet", ("--quiet", "-q"), "Print nothing but errors.", value_type=bool, default=False)
DEBUG = TrainOption("debug", ("--debug",), "Show tracebacks and TensorFlow's logs.", value_type=bool, default=False)

# In `tlcli train --help`'s order.
TRAIN_OPTIONS = (RESUME, SET, RUNS_DIR, DEVICE, STRICT, WORKERS, MLFLOW, STRICT_TRACKING, JSON, QUIET, DEBUG)


def check_options(values: Mapping[str, Any]) -> None:
    """Each option's value is one of its choices.

    Raises:
        UserError: naming the option (`device: expected auto, cpu or gpu, got 'tpu'`).
    """
    for option in TRAIN_OPTIONS:
        value = values.get(option.name)
        if option.choices and value is not None and value not in option.choices:
            expected = ", ".join(option.choices[:-1]) + f" or {option.choices[-1]}"
            raise UserError(f"{option.name}: expected {expected}, got {value!r}")


def worker_argv(config: Path | None, values: Mapping[str, Any]) -> list[str]:
    """The `tlcli train` arguments of every worker: this command's, without --workers (paths absolute: workers may
    start elsewhere)."""
    args = ["train", *([str(Path(config).absolute())] if config is not None else [])]
    for option in TRAIN_OPTIONS:
        if option.forwarded:
            args += option.argv(values.get(option.name))
    return args


@dataclass
class RunOptions:
    """Options of `train` and `resume` that are not part of the experiment.

    Args:
        strict: stop (DataError, exit 2) on any data problem `tlcli check`
            reports: unreadable files, duplicates, leakage (else they are warned).
        device: `cpu`, `gpu` or `auto`, overriding `runtime.device`.
        started: the `time.perf_counter()` value the wall time counts from
            (the CLI passes its process start, `tlcli.system.process_started`); default: when the run starts.
        report_worker: a started `tlcli.evaluation.ReportWorker` that draws
            the final validation report in another process (default: drawn
            in this one); training closes it, whatever happens.
        tracking: a `tlcli.tracking.TrackingRequest` (`--mlflow [URI]`, `--strict-tracking`); the config's
            `tracking:` section and `$MLFLOW_TRACKING_URI` turn tracking on without it.
    """

    strict: bool = False
    device: str | None = None
    started: float | None = None
    report_worker: Any = None
    tracking: Any = None
    _now: float = field(default_factory=time.perf_counter, repr=False)

    @classmethod
    def from_options(cls, values: Mapping[str, Any], **process: Any) -> RunOptions:
        """The options `tlcli train`'s values fill (`TrainOption.run_option`), with `process`'s (started, report
        worker)."""
        direct: dict[str, Any] = {}
        tracking: dict[str, Any] = {}
        for option in TRAIN_OPTIONS:
            if option.run_option is not None and option.name in values:
                owner, _, name = option.run_option.rpartition(".")
                (tracking if owner == "tracking" else direct)[name] = values[option.name]
        return cls(**direct, tracking=TrackingRequest(**tracking), **process)

    def start_time(self) -> float:
        return self.started if self.started is not None else self._now
