"""The package's shape: stages import one way, modules and functions stay small, the public API hides no module."""

from __future__ import annotations

import ast
import importlib
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_image_folder, tiny_config

PACKAGE = ROOT / "tlcli"

# Lowest first: a module may import its own stage and any stage ranked below it, never one above.
RANK = {
    "tlcli.errors": 0,
    "tlcli.paths": 0,
    "tlcli.system": 0,
    "tlcli.global_state": 0,
    "tlcli.lazy": 0,
    "tlcli.version": 0,
    "tlcli.progress": 0,
    "tlcli.settings": 0,
    "tlcli.config": 1,
    "tlcli.data": 2,
    "tlcli.runs": 3,
    "tlcli.modeling": 4,
    "tlcli.features": 5,
    "tlcli.inference": 6,
    "tlcli.audit": 6.5,
    "tlcli.evaluation": 7,
    "tlcli.tracking": 7.5,
    "tlcli.training": 8,
    "tlcli.export": 9,
    "tlcli.tuning": 10,
    "tlcli.cli": 20,
    "tlcli.__main__": 20,
    "tlcli": 20,  # the package root re-exports the public API: nothing inside imports it
}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
MAX_TRAINING_FUNCTION_LINES = 40  # the training core reads like its docstring: each step a short function
MAX_LINE_COLUMNS = 120  # so a long line cannot hide a function's length from the caps above


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> str:
    candidates = [name for name in RANK if module == name or module.startswith(name + ".")]
    return max(candidates, key=len)


def imported_modules(tree: ast.AST, module: str) -> set[str]:
    """Every tlcli module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tlcli")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tlcli"):
            found.add(node.module)
            found |= (
                {
                    f"{node.module}.{alias.name}"
                    for alias in node.names
                    if importlib.util.find_spec(f"{node.module}.{alias.name}") is not None
                }
                if node.module == "tlcli"
                else set()
            )
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_stage():
    for path in SOURCES:
        assert stage_of(module_name(path)) in RANK, path


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_climbs_the_rank_table(path):
    module = module_name(path)
    own = RANK[stage_of(module)]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    climbing = sorted(name for name in imported_modules(tree, module) if RANK[stage_of(name)] > own)
    assert not climbing, f"{module} (rank {own}) imports {climbing}, which rank above it"


def function_cap(path: Path) -> int:
    return MAX_TRAINING_FUNCTION_LINES if path.is_relative_to(PACKAGE / "training") else MAX_FUNCTION_LINES


def test_modules_and_functions_stay_within_their_caps():
    """A module at most 450 lines; a function at most 80 lines, and at most 40 under tlcli/training/."""
    too_long = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n") + 1
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            length = (
                node.end_lineno - node.lineno + 1 if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else 0
            )
            if length > function_cap(path):
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def ruff_command() -> list[str]:
    """ruff on PATH, else the one installed beside this Python (the `test` extra installs it)."""
    found = shutil.which("ruff")
    return [found] if found else [sys.executable, "-m", "ruff"]


def test_no_line_over_120_columns():
    """`ruff check` with E501 on, over the package, the tests and the benchmarks: the caps mean what they say."""
    command = [
        *ruff_command(),
        "check",
        "--no-cache",
        f"--line-length={MAX_LINE_COLUMNS}",
        "--select=E501",
        "--output-format=concise",
    ]
    out = subprocess.run(
        [*command, "tlcli", "tests", "benchmarks"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert "No module named ruff" not in out.stderr, "install the test extra: pip install -e '.[test]'"
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_at_least_five_stage_subpackages_besides_the_cli():
    stages = [p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file() and p.name != "cli"]
    assert len(stages) >= 5, stages


def test_public_functions_do_not_hide_their_modules():
    import tlcli

    for stage in ("config", "data", "runs", "modeling", "features", "inference", "evaluation", "training"):
        importlib.import_module(f"tlcli.{stage}")
        assert inspect.ismodule(getattr(tlcli, stage)), stage
    for name in ("train", "resume", "validate", "evaluate", "predict", "check_dataset", "list_runs", "load_config"):
        assert callable(getattr(tlcli, name)) and not inspect.ismodule(getattr(tlcli, name)), name
        assert inspect.getdoc(getattr(tlcli, name)), f"{name} has no docstring"


def test_import_tlcli_loads_no_heavy_library():
    code = (
        "import sys, tlcli; print(sorted(m for m in ('keras', 'tensorflow', 'sklearn', 'matplotlib') if m in "
        "sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


def test_the_cli_and_the_stage_apis_load_no_heavy_library_on_import():
    """The CLI sets TF_ENABLE_ONEDNN_OPTS and starts the report worker before TensorFlow loads: importing every command
    module and every stage's API must load none of them (each stage imports Keras inside the functions that run)."""
    cli_modules = sorted(p.stem for p in (PACKAGE / "cli").glob("*.py") if p.stem != "__init__")
    stages = ["training.api", "tuning.api", "export.api", "evaluation.evaluate", "inference.predict"]
    imports = ", ".join([f"tlcli.cli.{name}" for name in cli_modules] + [f"tlcli.{name}" for name in stages])
    heavy = ("keras", "tensorflow", "sklearn", "matplotlib", "optuna", "mlflow")
    code = f"import sys, {imports}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr[-2000:])


def test_help_loads_nothing_but_typer():
    """`tlcli --help` registers every command without loading what the commands call: no pydantic, YAML, numpy, PIL
    or rich (the command modules import their stage's modules when they run). A command's `--help` loads no more
    than Typer's own pydantic (Typer's parameter types use it)."""
    code = (
        "import contextlib, io, sys\n"
        "from tlcli.cli import run\n"
        "def loaded():\n"
        "    third = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "    return sorted(m for m in ('pydantic', 'yaml', 'numpy', 'PIL', 'rich', 'keras') if m in third)\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [run(['--help'])]\n"
        "    top = loaded()\n"
        "    codes += [run([name, '--help']) for name in ('train', 'check', 'predict', 'tune', 'export', 'evaluate')]\n"
        "print(codes, top, loaded())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[0, 0, 0, 0, 0, 0, 0] [] ['pydantic']", (
        out.stdout,
        out.stderr[-2000:],
    )


def test_paths_may_be_str_or_path(tmp_path):
    from tlcli import list_runs, newest_run
    from tlcli.errors import RunError

    assert list_runs(str(tmp_path / "none")) == [] and list_runs(tmp_path / "none") == []
    with pytest.raises(RunError, match="no completed run"):
        newest_run(str(tmp_path))


def test_validate_changes_no_global_state(tmp_path, monkeypatch):
    """validate builds the model to check it, but sets no seed, precision policy, determinism or device visibility."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # is_op_determinism_enabled has no public alias

    from tlcli import validate

    data = make_image_folder(tmp_path / "images", {"a": 4, "b": 4})
    raw = tiny_config(
        data, tmp_path / "runs", runtime={"mixed_precision": "on", "deterministic": True, "device": "cpu"}
    )
    seeded = []
    monkeypatch.setattr(keras.utils, "set_random_seed", lambda seed: seeded.append(seed))
    policy, determinism, visible = (
        keras.mixed_precision.global_policy().name,
        tf_config.is_op_determinism_enabled(),
        tf.config.get_visible_devices(),
    )
    result = validate(raw)
    assert (
        result.base == "SmallCNN"
        and result.splits.class_names == ["a", "b"]
        and result.devices == "CPU, mixed precision"
    )
    assert keras.mixed_precision.global_policy().name == policy == "float32"
    assert tf_config.is_op_determinism_enabled() == determinism
    assert tf.config.get_visible_devices() == visible
    assert seeded == []


def test_tests_import_neither_benchmarks_nor_the_tests_package():
    """Tests import their helpers from `conftest` (pytest puts tests/ on the path): `tests.` can resolve to another
    distribution's top-level `tests` package in site-packages, and benchmarks are run as scripts, never imported."""
    offending = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offending += [f"{path.name}: {name}" for name in names if name.split(".")[0] in ("tests", "benchmarks")]
    assert not offending, offending
