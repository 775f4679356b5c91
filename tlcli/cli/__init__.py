"""The `tlcli` command: parse arguments, call the library, print.

One module per command group (`train`, `runs`, `weights`, ...) registers its
commands on `app`; this module holds what they share.

Every command is a few lines over a function in the package. Errors are one
line on stderr with the exit code of the README's table; `--debug` shows the
traceback. Tables go to stdout, progress to stderr, and `--json` puts one
JSON document on stdout for scripts.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from tlcli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USER_ERROR, TlcliError

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
RunsDir = Annotated[
    Optional[Path],
    typer.Option("--runs-dir", help="Folder holding run folders (default: the config's output.runs_dir, else ./runs)."),
]
ConfigFile = Annotated[Path, typer.Argument(help="Experiment YAML file.")]
Columns = Annotated[
    Optional[list[str]],
    typer.Option(
        "--column", help="A manifest's column names, as data.columns: path=file, label=class, split=fold (repeatable)."
    ),
]


def parse_columns(specs: list[str] | None) -> dict[str, str]:
    """`--column path=file` -> {"path": "file"}.

    Raises:
        UserError: not ROLE=NAME, or a role other than path, label, split.
    """
    from tlcli.errors import UserError

    columns = {}
    for spec in specs or []:
        role, sep, name = spec.partition("=")
        if not sep or role.strip() not in ("path", "label", "split") or not name.strip():
            raise UserError(f"--column: expected path=NAME, label=NAME or split=NAME, got {spec!r}")
        columns[role.strip()] = name.strip()
    return columns


Sets = Annotated[
    Optional[list[str]], typer.Option("--set", "-s", help="Override a config key: --set train.epochs=3 (repeatable).")
]


def command(function: Callable) -> Callable:
    """Run a command with tlcli's error contract: one line on stderr, the documented exit code, and with
    `--json` (or `--format json|jsonl`) a JSON document on stdout on every exit."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug")) or os.environ.get("TLCLI_DEBUG") == "1"
        as_json = bool(kwargs.get("json_output")) or kwargs.get("output_format") in ("json", "jsonl")
        _quiet_libraries(debug)
        _printed.clear()
        try:
            return function(*args, **kwargs)
        except TlcliError as exc:
            if debug:
                stderr.print_exception()
            fail(
                str(exc),
                exc.exit_code,
                as_json,
                extra={"run_dir": str(exc.run_dir)} if getattr(exc, "run_dir", None) else None,
            )
        except KeyboardInterrupt as exc:
            fail(
                "interrupted",
                EXIT_INTERRUPTED,
                as_json,
                extra={"run_dir": str(exc.run_dir)} if getattr(exc, "run_dir", None) else None,
            )
        except typer.Exit:
            raise
        except OSError as exc:
            if debug:
                raise
            fail(describe_os_error(exc), EXIT_USER_ERROR if exc.errno in USER_OS_ERRORS else EXIT_FAILURE, as_json)
        except Exception as exc:
            if debug:
                raise
            fail(
                f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (run with --debug for the traceback)",
                EXIT_FAILURE,
                as_json,
            )

    return wrapper


# Errors of the machine or the user's paths, not of tlcli: one line naming the path, exit 2.
USER_OS_ERRORS = {
    errno.ENAMETOOLONG,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ELOOP,
}


def describe_os_error(exc: OSError) -> str:
    where = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while writing {where} ({exc.strerror}); free some space and run the command again"
    if exc.errno == errno.ENAMETOOLONG:
        return f"path too long for the filesystem: {str(where)[:120]}...; use a shorter name or folder"
    return f"{where}: {exc.strerror or exc}"


def fail(message: str, code: int, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """Print the error (stderr; and a JSON document on stdout when the command speaks JSON and printed none) and exit."""
    _error(message)
    if as_json and not _printed:
        _print_json({"error": message, "exit_code": code, **(extra or {})})
    raise typer.Exit(code) from None


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
    if not debug:
        logging.getLogger("tensorflow").setLevel(
            logging.ERROR
        )  # retracing notes and the like: not for people running tlcli


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
    from tlcli.system import native_stderr_silenced

    with native_stderr_silenced():
        import_keras()


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


_printed: list[bool] = []  # set once the command has printed its own JSON document


def _print_json(data: Any) -> None:
    print_document(json.dumps(data, indent=2, default=str) + "\n")


def print_document(text: str) -> None:
    """Write the command's machine-readable output on stdout (an error then adds no second document)."""
    sys.stdout.write(text)
    _printed.append(True)


# One module per command group, in the order `tlcli --help` lists them.
COMMAND_MODULES = ("train", "tune", "evaluate", "predict", "export", "check", "runs", "cache", "weights", "datasets")


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"tlcli.cli.{name}")  # each registers its commands on `app`


def run(argv: list[str]) -> int:
    """Run `tlcli ARGV...` and return its exit code (usage errors included: one line, exit 2, JSON with `--json`)."""
    _register_commands()
    try:
        result = app(args=argv, prog_name="tlcli", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except _usage_errors() as exc:
        context = getattr(exc, "ctx", None)
        message = exc.format_message() + (f" (see `{context.command_path} --help`)" if context is not None else "")
        _error(message)
        if (
            "--json" in argv
            or _format_after(argv) in ("json", "jsonl")
            or any(a.startswith("--format=json") for a in argv)
        ):
            _print_json({"error": message, "exit_code": exc.exit_code})
        return exc.exit_code


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's usage errors: Typer vendors its own click (0.17+), older Typer uses click itself."""
    found: list[type[Exception]] = [typer.TyperException] if hasattr(typer, "TyperException") else []
    try:
        import click

        found.append(click.ClickException)
    except ImportError:
        pass
    return tuple(found)


def _format_after(argv: list[str]) -> str | None:
    for flag in ("--format", "-f"):
        if flag in argv[:-1]:
            return argv[argv.index(flag) + 1]
    return None


def main() -> None:
    code = run(sys.argv[1:])
    # Every file tlcli writes is complete and renamed by now; skipping the
    # interpreter's teardown saves TensorFlow's ~1.5 s of destructors.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
