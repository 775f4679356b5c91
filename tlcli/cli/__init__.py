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
import importlib
import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping, NoReturn, Optional, Sequence

import typer

from tlcli import settings
from tlcli.cli.printing import Output, invocation, output
from tlcli.config.plain import redact_uri
from tlcli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USER_ERROR, ConfigError, TlcliError, UserError
from tlcli.system import native_stderr_silenced
from tlcli.training.options import DEBUG, JSON, QUIET, RUNS_DIR, SET, TrainOption

app = typer.Typer(
    name="tlcli",
    help="Config-driven transfer learning for Keras 3 / TensorFlow.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (docs/getting-started/first-hour.md)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def option_annotation(option: TrainOption) -> Any:
    """A declared option (`tlcli.training.options.TrainOption`) as a Typer parameter annotation."""
    kind = option.value_type
    typed = bool if kind is bool else Optional[list[str]] if kind is list else Optional[kind]
    extra: dict[str, Any] = {"metavar": option.metavar} if option.metavar else {}
    if option.flag_value is not None:
        extra["flag_value"] = option.flag_value
    return Annotated[typed, typer.Option(*option.flags, help=option.help, **extra)]


def with_options(options: Sequence[TrainOption], **leading: Any) -> Callable:
    """Give `function(**values)` its Typer signature: the `leading` parameters (name=annotation, default None), then
    one per declared option, in order."""

    def declare(function: Callable) -> Callable:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        parameters = [inspect.Parameter(name, kind, default=None, annotation=a) for name, a in leading.items()]
        parameters += [
            inspect.Parameter(o.name, kind, default=o.default, annotation=option_annotation(o)) for o in options
        ]
        function.__signature__ = inspect.Signature(parameters)
        function.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return function

    return declare


Debug = option_annotation(DEBUG)
Json = option_annotation(JSON)
Quiet = option_annotation(QUIET)
RunsDir = option_annotation(RUNS_DIR)
Sets = option_annotation(SET)
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
    columns = {}
    for spec in specs or []:
        role, sep, name = spec.partition("=")
        if not sep or role.strip() not in ("path", "label", "split") or not name.strip():
            raise UserError(f"--column: expected path=NAME, label=NAME or split=NAME, got {spec!r}")
        columns[role.strip()] = name.strip()
    return columns


def command(function: Callable | None = None, *, flags: Mapping[str, str] | None = None) -> Callable:
    """Run a command with tlcli's error contract: one line on stderr, the documented exit code, and with
    `--json` (or `--format json|jsonl`) a JSON document on stdout on every exit.

    Each call gets its own `Output` (`output()` inside the command). A library error naming one of the command's
    options by its Python name (`runs_dir: ...`) is printed with the flag (`--runs-dir: ...`); `flags` adds names
    the options do not have (`{"run_dir": "--resume"}`).
    """
    if function is None:
        return functools.partial(command, flags=flags)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = Output(
            json=bool(kwargs.get("json_output")) or kwargs.get("output_format") in ("json", "jsonl"),
            lines=kwargs.get("output_format") == "jsonl",
            quiet=bool(kwargs.get("quiet")),
            debug=bool(kwargs.get("debug")) or settings.debug(),
            flags=_LazyFlags(function, flags or {}),
        )
        _quiet_libraries(out.debug)
        with invocation(out):
            return _run_command(out, function, args, kwargs)

    return wrapper


def _run_command(out: Output, function: Callable, args: tuple, kwargs: dict[str, Any]) -> Any:
    try:
        return function(*args, **kwargs)
    except TlcliError as exc:
        if out.debug:
            out.stderr.print_exception()
        message = str(exc) if isinstance(exc, ConfigError) else out.with_flag(str(exc))  # config keys stay keys
        _fail(out, message, exc.exit_code, extra=_run_dir_of(exc))
    except KeyboardInterrupt as exc:
        _fail(out, "interrupted", EXIT_INTERRUPTED, extra=_run_dir_of(exc))
    except typer.Exit:
        raise
    except OSError as exc:
        if out.debug:
            raise
        _fail(out, describe_os_error(exc), EXIT_USER_ERROR if exc.errno in USER_OS_ERRORS else EXIT_FAILURE)
    except Exception as exc:
        if out.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        _fail(out, f"internal error: {type(exc).__name__}: {first} (run with --debug for the traceback)", EXIT_FAILURE)


def _fail(out: Output, message: str, code: int, extra: dict[str, Any] | None = None) -> NoReturn:
    """The error line, without any password of a URI in it (a library's error text may quote the tracking or
    storage URL)."""
    out.fail(redact_uri(message), code, extra)


def _run_dir_of(exc: BaseException) -> dict[str, Any] | None:
    return {"run_dir": str(exc.run_dir)} if getattr(exc, "run_dir", None) else None


class _LazyFlags(Mapping[str, str]):
    """A command's options by Python name -> long flag, read from its signature only when an error is printed."""

    def __init__(self, function: Callable, extra: Mapping[str, str]):
        self.function, self.extra = function, extra

    @functools.cached_property
    def _flags(self) -> dict[str, str]:
        return {**option_flags(self.function), **self.extra}

    def __getitem__(self, name: str) -> str:
        return self._flags[name]

    def __iter__(self):
        return iter(self._flags)

    def __len__(self) -> int:
        return len(self._flags)


def option_flags(function: Callable) -> dict[str, str]:
    """Each Typer option of `function`, its Python name -> its first long flag (`runs_dir` -> `--runs-dir`; Typer's
    own `--name-like-this` for an option declared without flags)."""
    flags = {}
    for name, parameter in inspect.signature(function, eval_str=True).parameters.items():
        for info in getattr(parameter.annotation, "__metadata__", ()):
            if isinstance(info, typer.models.OptionInfo):
                declared = [d for d in (info.default, *(info.param_decls or ())) if isinstance(d, str)]
                long = [d for d in declared if d.startswith("--")]
                named = any(d.startswith("-") for d in declared)
                flags[name] = long[0] if long else f"--{name.replace('_', '-')}" if not named else name
    return flags


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


def fail(message: str, code: int, extra: dict[str, Any] | None = None) -> NoReturn:
    """The running command's `Output.fail`: the error line (and its JSON document), then exit with `code`."""
    output().fail(message, code, extra)


def _quiet_libraries(debug: bool) -> None:
    if not debug:
        settings.set_process_default(settings.TF_CPP_MIN_LOG_LEVEL, "3")
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


# One module per command group, in the order `tlcli --help` lists them.
COMMAND_MODULES = (
    "init",
    "train",
    "tune",
    "evaluate",
    "compare",
    "report",
    "predict",
    "export",
    "check",
    "runs",
    "cache",
    "weights",
    "datasets",
    "about",
)


def _register_commands() -> None:
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
        Output().error("interrupted")
        return EXIT_INTERRUPTED
    except _usage_errors() as exc:
        context = getattr(exc, "ctx", None)
        message = exc.format_message() + (f" (see `{context.command_path} --help`)" if context is not None else "")
        out = Output(json=_speaks_json(argv), lines=_format_after(argv) == "jsonl" or "--format=jsonl" in argv)
        out.error(message)
        if out.json:
            out.print_json({"error": message, "exit_code": exc.exit_code})
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


def _speaks_json(argv: list[str]) -> bool:
    """Whether the command line asked for JSON (`--json`, `--format json|jsonl`)."""
    return (
        "--json" in argv or _format_after(argv) in ("json", "jsonl") or any(a.startswith("--format=json") for a in argv)
    )


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
