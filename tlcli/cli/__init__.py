"""The `tlcli` command: parse arguments, call the library, print.

One module per command group (`train`, `runs`, `weights`, ...) registers its
commands on `app`; this module holds what they share.

Every command is a few lines over a function in the package. Errors are one
line on stderr with the exit code of the README's table; `--debug` shows the
traceback. Tables go to stdout, progress to stderr, and `--json` puts one
JSON document on stdout for scripts.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from tlcli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, TlcliError

app = typer.Typer(
    name="tlcli",
    help="Config-driven transfer learning for Keras 3 / TensorFlow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks and TensorFlow's logs.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
RunsDir = Annotated[Optional[Path], typer.Option("--runs-dir", help="Folder holding run folders (default: the config's output.runs_dir, else ./runs).")]
ConfigFile = Annotated[Path, typer.Argument(help="Experiment YAML file.")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config key: --set train.epochs=3 (repeatable).")]


def command(function: Callable) -> Callable:
    """Run a command with tlcli's error contract: one line, documented exit code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug")) or os.environ.get("TLCLI_DEBUG") == "1"
        _quiet_libraries(debug)
        try:
            return function(*args, **kwargs)
        except TlcliError as exc:
            if debug:
                stderr.print_exception()
            _error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as exc:
            if debug:
                raise
            _error(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (run with --debug for the traceback)")
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _quiet_libraries(debug: bool) -> None:
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        logging.captureWarnings(True)
        logging.getLogger("py.warnings").propagate = False
    # The CLI shows progress itself (RichReporter) and training logs to the run's
    # train.log; absl installs a root handler once TensorFlow loads, which would
    # echo every log line to the terminal even with --quiet.
    logging.getLogger("tlcli").setLevel(logging.INFO)
    logging.getLogger("tlcli").propagate = debug


def _import_tensorflow(debug: bool) -> None:
    """Import TensorFlow with its start-up chatter (oneDNN, CUDA probing) hidden.

    TensorFlow writes those lines from C++ straight to file descriptor 2,
    before TF_CPP_MIN_LOG_LEVEL is read, so only a redirect silences them.
    """
    if "tensorflow" in sys.modules:
        return
    if debug:
        import_keras()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import_keras()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# Keras imports these at start-up only to offer its scikit-learn wrappers and
# plotting helpers, which tlcli does not use: 1.1 s of every command on a
# 2-core machine (measured: `import keras` 3.1 s, 2.0 s without them). tlcli
# imports them itself where it needs them (reports), or not at all (predict).
KERAS_OPTIONAL_IMPORTS = ("sklearn", "matplotlib")


def import_keras() -> None:
    """Import Keras and TensorFlow without Keras's optional scikit-learn and matplotlib imports."""
    hidden = [name for name in KERAS_OPTIONAL_IMPORTS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def _reporter(quiet: bool, json_output: bool):
    from tlcli.progress import Reporter, RichReporter

    return Reporter() if quiet else RichReporter(stderr)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# One module per command group, in the order `tlcli --help` lists them.
COMMAND_MODULES = ("train", "evaluate", "predict", "check", "runs", "cache", "weights", "datasets")


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"tlcli.cli.{name}")  # each registers its commands on `app`


def main() -> None:
    _register_commands()
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    # Every file tlcli writes is complete and renamed by now; skipping the
    # interpreter's teardown saves TensorFlow's ~1.5 s of destructors.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
