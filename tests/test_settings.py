"""Environment variables are declared once (`tlcli.settings`) and read or set nowhere else; `tlcli train`'s options
are declared once (`tlcli.training.options`) and reach the CLI, the workers and `RunOptions` from there."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from conftest import ROOT

from tlcli import settings

PACKAGE = ROOT / "tlcli"
SOURCES = sorted(PACKAGE.rglob("*.py"))
SETTINGS = PACKAGE / "settings.py"


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of a module, its classes and functions (prose may name a variable)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def strings(path: Path) -> list[tuple[int, str]]:
    """Every string literal of a module but its docstrings, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]


def environment_access(path: Path) -> list[int]:
    """Lines that touch the process environment directly: `os.environ`, `os.getenv`, `os.putenv`, `from os import
    environ`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv", "unsetenv"):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno for alias in node.names if alias.name in ("environ", "getenv", "putenv")]
    return lines


def test_only_settings_touches_the_environment():
    touching = [
        f"{path.relative_to(ROOT)}:{line}" for path in SOURCES if path != SETTINGS for line in environment_access(path)
    ]
    assert not touching, f"read or set environment variables through tlcli.settings: {touching}"


def test_no_module_but_settings_names_a_variable():
    """`TLCLI_*` (and every other declared variable) is spelled in settings.py only; others use its constants."""
    names = {variable.name for variable in settings.VARIABLES}
    spelled = [
        f"{path.relative_to(ROOT)}:{line}: {text[:60]!r}"
        for path in SOURCES
        if path != SETTINGS
        for line, text in strings(path)
        if "TLCLI_" in text or text in names
    ]
    assert not spelled, spelled


def test_only_the_cli_sets_process_variables():
    """A library call never sets a variable for the whole process: only the CLI's entry points do."""
    setting = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in SOURCES
        if path != SETTINGS and "cli" not in path.relative_to(PACKAGE).parts[:1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr == "set_process_default"
    ]
    assert not setting, setting


def test_every_variable_is_declared_with_its_meaning_default_and_setter():
    names = [variable.name for variable in settings.VARIABLES]
    assert len(names) == len(set(names))
    for variable in settings.VARIABLES:
        assert variable.meaning and variable.default and variable.set_by, variable
        assert set(variable.set_by) <= {settings.USER, settings.CLI, settings.LAUNCHER}, variable
    declared = {name for name in dir(settings) if isinstance(getattr(settings, name), settings.Variable)}
    assert {getattr(settings, name) for name in declared} <= set(settings.VARIABLES)
    assert {"TLCLI_CACHE_DIR", "TLCLI_CACHE_MAX_GB", "TLCLI_DEBUG", "TLCLI_LOGICAL_CPUS", "TLCLI_CLUSTER_DIR"} <= set(
        names
    )
    assert {"TF_CONFIG", "TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "MPLBACKEND", "MLFLOW_TRACKING_URI"} <= set(
        names
    )


def test_the_reference_table_lists_every_variable():
    table = settings.reference_markdown().splitlines()
    assert table[0].startswith("| variable | set by |") and len(table) == 2 + len(settings.VARIABLES)
    for row, variable in zip(table[2:], settings.VARIABLES):
        assert row.startswith(f"| `{variable.name}` |") and variable.meaning in row


def test_the_docs_show_the_generated_table():
    page = (ROOT / "docs" / "reference" / "environment.md").read_text(encoding="utf-8")
    assert settings.reference_markdown() in page, "docs/reference/environment.md is stale: run `python docs/gen_ref.py`"


def test_scoped_sets_only_what_the_user_did_not_and_puts_it_back(monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    with settings.scoped({settings.MPLBACKEND: "Agg", settings.MLFLOW_HTTP[-1]: "5"}):
        assert os.environ["MPLBACKEND"] == "Agg" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    assert "MPLBACKEND" not in os.environ and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"


def test_child_environment_sets_values_and_defaults(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "pdf")
    monkeypatch.delenv("TLCLI_CLUSTER_DIR", raising=False)
    env = settings.child_environment({settings.CLUSTER_DIR: "/x"}, defaults={settings.MPLBACKEND: "Agg"})
    assert env["TLCLI_CLUSTER_DIR"] == "/x" and env["MPLBACKEND"] == "pdf" and "TLCLI_CLUSTER_DIR" not in os.environ


def test_accessors_read_the_environment(monkeypatch, tmp_path):
    from tlcli.features.store import DEFAULT_MAX_GB, max_bytes
    from tlcli.paths import cache_root

    monkeypatch.setenv("TLCLI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TLCLI_CACHE_MAX_GB", "2")
    assert cache_root() == tmp_path and max_bytes() == 2 * 1024**3
    monkeypatch.setenv("TLCLI_CACHE_MAX_GB", "lots")
    assert max_bytes() == int(DEFAULT_MAX_GB * 1024**3)
    monkeypatch.delenv("TLCLI_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "tlcli"
    assert settings.logical_cpus_text({"TLCLI_LOGICAL_CPUS": " 2 "}) == "2"


# ----------------------------------------------------------------------------- tlcli train's options


def test_train_options_reach_the_workers_argv(tmp_path):
    from tlcli.training.options import TRAIN_OPTIONS, worker_argv

    values = {option.name: option.default for option in TRAIN_OPTIONS}
    values.update(set_=["train.epochs=2", "seed=3"], runs_dir=Path("runs"), device="cpu", strict=True, workers=2)
    values.update(mlflow="", strict_tracking=True, json_output=True, quiet=True)
    argv = worker_argv(Path("cfg.yaml"), values)
    assert argv == [
        "train",
        str(Path("cfg.yaml").absolute()),
        *("--set", "train.epochs=2", "--set", "seed=3"),
        *("--runs-dir", str(Path("runs").absolute()), "--device", "cpu", "--strict"),
        *("--mlflow", "--strict-tracking", "--json", "--quiet"),
    ]
    resumed = worker_argv(None, {**values, "resume": tmp_path, "runs_dir": None, "mlflow": "http://h:5000"})
    assert resumed[:3] == ["train", "--resume", str(tmp_path)] and "--workers" not in resumed
    assert resumed[resumed.index("--mlflow") + 1] == "http://h:5000"


def test_run_options_come_from_the_train_options():
    from tlcli.tracking import TrackingRequest
    from tlcli.training.options import RunOptions

    options = RunOptions.from_options(
        {"strict": True, "device": "gpu", "mlflow": "", "strict_tracking": True, "quiet": True}, started=1.0
    )
    assert (options.strict, options.device, options.started) == (True, "gpu", 1.0)
    assert options.tracking == TrackingRequest(mlflow_uri="", strict=True)


def test_train_option_choices_are_checked_with_the_argument_name():
    from tlcli.errors import UserError
    from tlcli.training.options import check_options

    check_options({"device": "cpu"})
    with pytest.raises(UserError, match=r"^device: expected auto, cpu or gpu, got 'tpu'$"):
        check_options({"device": "tpu"})


def test_the_train_command_is_derived_from_the_declared_options():
    import typer.main

    from tlcli.cli import app, option_flags
    from tlcli.cli.train import train
    from tlcli.training.options import TRAIN_OPTIONS

    assert option_flags(train) == {option.name: option.flag for option in TRAIN_OPTIONS}
    command = next(c for c in typer.main.get_command(app).commands.values() if c.name == "train")
    declared = [option.flags for option in TRAIN_OPTIONS]
    assert [tuple(sorted(p.opts, key=len, reverse=True)) for p in command.params[1:]] == [
        tuple(sorted(flags, key=len, reverse=True)) for flags in declared
    ]
