"""The README and the docs site: short, current, and their examples run.

The strict site build itself (every link and anchor) is `.ci/run`'s `mkdocs build --strict`; here: the generated
reference pages match the code, the README stays short and its links resolve, and the docs' examples run on tiny data.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys

import pytest
from conftest import ROOT, make_image_folder, tiny_config, write_config

README = ROOT / "README.md"
DOCS = ROOT / "docs"


def gen_ref():
    spec = importlib.util.spec_from_file_location("gen_ref", DOCS / "gen_ref.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_block(page: str, language: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.search(rf"```{language}\n(.*?)```", text, re.S).group(1)


def test_readme_is_at_most_8_kb():
    assert len(README.read_bytes()) <= 8 * 1024, "README.md is for the first minute: move detail into docs/"


def test_readme_links_point_at_files_that_exist():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    local = [t for t in targets if "://" not in t]
    assert local and all((ROOT / t).exists() for t in local), [t for t in local if not (ROOT / t).exists()]


def test_readme_test_command_is_what_ci_runs():
    readme, ci = README.read_text(encoding="utf-8"), (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert '.venv/bin/pip install -e ".[test]" && .venv/bin/pytest -q' in readme
    assert 'install --quiet -e ".[test]"' in ci and '/bin/pytest" -q' in ci
    assert 'mkdocs" build --strict' in ci and "docs/gen_ref.py --check" in ci


def test_generated_reference_pages_match_the_code():
    """A stale page (a key, variable, command, option, exit code or run file added without regenerating) fails."""
    stale = gen_ref().stale()
    assert not stale, f"stale docs: {[str(p.relative_to(ROOT)) for p in stale]}; run `python docs/gen_ref.py`"


def test_a_changed_block_is_stale(tmp_path, monkeypatch):
    module = gen_ref()
    page = tmp_path / "reference" / "environment.md"
    page.parent.mkdir()
    page.write_text("# x\n\n<!-- generated:environment -->\n| old |\n<!-- /generated:environment -->\n")
    monkeypatch.setattr(module, "DOCS", tmp_path)
    monkeypatch.setattr(module, "BLOCKS", {"reference/environment.md": module.BLOCKS["reference/environment.md"]})
    monkeypatch.setattr(module, "BENCHMARKS", ())
    assert module.stale() == [page] and module.main(["--check"]) == 1
    assert module.main([]) == 0 and module.stale() == [] and "TLCLI_CACHE_DIR" in page.read_text()


def test_every_page_in_docs_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages and all(page in nav for page in pages), sorted(p for p in pages if p not in nav)


def test_the_docs_extra_is_in_the_test_extra():
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["docs"] and set(extras["docs"]) <= set(extras["test"])


def config_blocks() -> list[tuple[str, dict]]:
    """Every ```yaml block of the README and the docs that is a tlcli config (its keys are the schema's)."""
    import yaml

    from tlcli.config.schema import ExperimentConfig

    found = []
    for page in [README, *sorted(DOCS.rglob("*.md"))]:
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            config = yaml.safe_load(block)
            if isinstance(config, dict) and set(config) <= set(ExperimentConfig.model_fields):
                found.append((str(page.relative_to(ROOT)), config))
    return found


def test_every_config_in_the_docs_is_valid():
    """A key renamed in the schema breaks the page that shows it (the data folders need not exist)."""
    from tlcli import TlcliError, load_config

    blocks = config_blocks()
    assert {"README.md", "docs/guides/manifests.md", "docs/guides/multi-label.md", "docs/guides/tune.md"} <= {
        page for page, _ in blocks
    }
    for page, config in blocks:
        try:
            load_config({"base": {"name": "MobileNet"}, "data": {"dir": "photos"}, **config})
        except TlcliError as error:
            pytest.fail(f"{page}: {error}")


def test_the_readme_config_is_the_real_one():
    import yaml

    (readme,) = [config for page, config in config_blocks() if page == "README.md"]
    assert readme == yaml.safe_load((ROOT / "configs" / "hymenoptera-mobilenet.yaml").read_text())


def test_the_check_guides_plain_commands_run(cli, tmp_path, monkeypatch):
    """docs/guides/check.md's first example (`tlcli check photos/`, `--json`) on a tiny clean folder."""
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "photos", {"ants": 6, "bees": 6})
    lines = code_block("guides/check.md", "").strip().splitlines()
    assert [line.split("#")[0].split() for line in lines] == [
        ["tlcli", "check", "photos/"],
        ["tlcli", "check", "photos/", "--json"],
    ]
    assert cli("check", "photos/").exit_code == 0
    assert json.loads(cli("check", "photos/", "--json").stdout)["status"] == "clean"


@pytest.mark.slow
def test_the_python_api_example_runs(tmp_path, monkeypatch):
    """docs/reference/python-api.md's example, on tiny data instead of hymenoptera."""
    data = make_image_folder(tmp_path / "images", {"ants": 12, "bees": 12})
    config = write_config(tmp_path / "tiny.yaml", tiny_config(data, tmp_path / "runs"))
    example = code_block("reference/python-api.md", "python")
    for real, tiny in (
        ('"configs/hymenoptera-mobilenet.yaml"', repr(str(config))),
        ('["train.epochs=5"]', '["train.epochs=1"]'),
        ('"runs/old"', "result.run_dir"),
        ('"photo.jpg"', repr(str(next((data / "ants").iterdir())))),
    ):
        assert real in example, real
        example = example.replace(real, tiny)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "python-api.md", "exec"), namespace)
    assert namespace["page"].name == "report.html" and namespace["card"].name == "MODEL_CARD.md"
    assert "no evidence" in namespace["verdict"] and len(namespace["labels"].predictions) == 1


@pytest.mark.slow
@pytest.mark.subprocess  # `tlcli train` starts its report worker
def test_the_quickstart_commands_run(cli, tmp_path, monkeypatch):
    """configs/quickstart/run.sh's tlcli commands, in order, with one epoch a phase (the docs' quickstart page)."""
    monkeypatch.chdir(tmp_path)
    script = (ROOT / "configs" / "quickstart" / "run.sh").read_text(encoding="utf-8")
    target_run = None
    for line in script.splitlines():
        if line.startswith("target_run="):
            runs = json.loads(cli("runs", "--json").stdout)
            target_run = [r["path"] for r in runs if r["name"] == "digits-target" and r["status"] == "completed"][-1]
        if not line.startswith("tlcli "):
            continue
        args = [target_run if a == "$target_run" else a for a in shlex.split(line.split(" | ")[0])[1:]]
        if args[0] == "train":
            args[1] = str(ROOT / args[1])
            args += ["--set", "train.epochs=1", "--quiet"]
            args += ["--set", "fine_tune.epochs=1"] if "fine_tune" in (ROOT / args[1]).read_text() else []
        result = cli(*args)
        assert result.exit_code == 0, (line, result.stderr[-2000:])
        if args[0] == "datasets":  # tiny data: the quickstart's folders, 6 images a class and split
            for folder in (tmp_path / "data" / "digits").glob("*/*/*"):
                for extra in sorted(folder.iterdir())[6:]:
                    extra.unlink()
    assert target_run and (tmp_path / "data" / "digits" / "target").is_dir()


def console_commands(page: str, *commands: str) -> list[list[str]]:
    """The `$ tlcli COMMAND ...` lines of a page's console blocks, without their comments and pipes."""
    lines = []
    for line in (DOCS / page).read_text(encoding="utf-8").splitlines():
        words = line.split("  #")[0].split(" | ")[0]
        if any(words.startswith(f"$ tlcli {command} ") for command in commands):
            lines.append(shlex.split(words)[2:])
    return lines


@pytest.mark.slow
def test_the_evaluate_and_predict_guides_commands_run(cli, binary_run, run_copy, tmp_path, monkeypatch):
    """The guides' `tlcli evaluate` and `tlcli predict` examples, on the tests' tiny cats-vs-dogs run."""
    run = run_copy(binary_run)
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "photos", {"cats": 2, "dogs": 2}, size=32, seed=8)
    make_image_folder(tmp_path / "holiday", {"beach": 2}, size=32, seed=9, suffix=".jpg")
    make_image_folder(tmp_path / "scans" / "2024", {"box": 2}, size=32, seed=10)
    (tmp_path / "photo.jpg").write_bytes(next((tmp_path / "holiday" / "beach").iterdir()).read_bytes())
    examples = console_commands("guides/evaluate-predict.md", "evaluate", "predict")
    examples += [c for c in console_commands("guides/reports.md", "predict") if "--explain-layer" not in c]
    assert len(examples) >= 9
    for args in examples:
        args = [str(run) if a == "runs/20250301-100000-flowers" else a for a in args]
        result = cli(*args)
        assert result.exit_code in ((0, 3) if "--fail-under" in args else (0,)), (args, result.stderr[-2000:])
    assert (tmp_path / "predictions.csv").read_text().startswith("path,label,confidence")
    assert len(list((tmp_path / "why").iterdir())) == 4
