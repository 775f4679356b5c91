"""The config's JSON Schema: generated from the pydantic schema, committed, and accepting what the loader accepts."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import ROOT

from tlcli.config.json_schema import SCHEMA_FILE, config_json_schema, config_json_schema_text
from tlcli.config.loading import config_problems, read_yaml

CONFIGS = sorted([*ROOT.glob("configs/**/*.yaml"), *ROOT.glob("benchmarks/configs/*.yaml")])
SCHEMA_LINE = re.compile(r"# yaml-language-server: \$schema=(\S+)")
MINIMAL = {"data": {"dir": "images"}}


@pytest.fixture(scope="module")
def validator():
    schema = config_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def with_key(dotted: str, value) -> dict:
    raw = copy.deepcopy(MINIMAL)
    *sections, key = dotted.split(".")
    node = raw
    for section in sections:
        node = node.setdefault(section, {})
    node[key] = value
    return raw


def test_the_committed_schema_is_the_generated_one():
    committed = (ROOT / SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == config_json_schema_text(), f"regenerate it: tlcli config-schema -o {SCHEMA_FILE}"


def test_the_cli_prints_the_schema(cli, tmp_path):
    assert json.loads(cli("config-schema").stdout) == config_json_schema()
    assert cli("config-schema", "-o", tmp_path / "s.json").exit_code == 0
    assert (tmp_path / "s.json").read_text() == config_json_schema_text()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates_and_points_editors_at_the_schema(path: Path, validator):
    raw = read_yaml(path)
    raw["data"].setdefault("dir", "images")  # the benchmarks' configs take it from --set data.dir=...
    assert config_problems(raw) == []
    assert list(validator.iter_errors(raw)) == []
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = SCHEMA_LINE.fullmatch(first)
    assert match, f"{path}: the first line should be `# yaml-language-server: $schema=RELATIVE/{SCHEMA_FILE}`"
    assert (path.parent / match.group(1)).resolve() == ROOT / SCHEMA_FILE


@pytest.mark.parametrize(
    "dotted, value",
    [
        ("cache", False),  # `cache: off`, read by YAML 1.1 as false
        ("probe", False),
        ("data.leakage", False),
        ("runtime.mixed_precision", True),  # `on`
        ("runtime.mixed_precision", "off"),
        ("data.image_size", 224),
        ("data.image_size", [160, 224]),
        ("data.augment", "light"),
        ("data.augment", {"preset": "overhead", "zoom": 0.2}),
        ("train.epochs", "auto"),
        ("train.epochs", 3),
        ("train.refit", True),
        ("train.class_weight", {"cats": 2.0}),
        ("base.trainable", "block_16_expand"),
        ("fine_tune", {"unfreeze": "all", "epochs": "auto"}),
    ],
)
def test_what_the_loader_accepts_the_schema_accepts(dotted, value, validator):
    raw = with_key(dotted, value)
    assert config_problems(raw) == []
    assert list(validator.iter_errors(raw)) == []


@pytest.mark.parametrize(
    "dotted, value",
    [
        ("data.dirr", "images"),  # a misspelt key
        ("train.epoch", 3),
        ("fine_tune", {"unfreze": 80}),
        ("cache", "sometimes"),
        ("cache", True),  # `cache: on` is no value of cache
        ("data.image_size", [1, 2, 3]),
        ("train.epochs", "soon"),
        ("data.augment", "heavy"),
    ],
)
def test_what_the_loader_rejects_the_schema_rejects(dotted, value, validator):
    raw = with_key(dotted, value)
    assert config_problems(raw) != []
    assert list(validator.iter_errors(raw)) != []


def test_a_misspelt_key_in_a_yaml_file_is_flagged(validator):
    text = "data:\n  dir: images\ntrain:\n  epohcs: 5\n"
    errors = list(validator.iter_errors(yaml.safe_load(text)))
    assert len(errors) == 1 and "epohcs" in errors[0].message and list(errors[0].absolute_path) == ["train"]
