"""`tlcli init`: a commented starting config from a folder's metadata, that the loader and the JSON Schema accept."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import ROOT, blob_folder, make_image_folder, needs_real_weights, one_line

from tlcli.config.json_schema import SCHEMA_FILE, config_json_schema
from tlcli.config.loading import load_config


def values(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_init_writes_a_commented_config_the_loader_and_the_schema_accept(cli, tmp_path):
    data = make_image_folder(tmp_path / "my photos", {"cats": 30, "dogs": 10}, size=20)
    out = tmp_path / "configs" / "mine.yaml"
    result = cli("init", data, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {out}: 2 classes, train " in result.stdout and "median 20x20" in result.stdout
    assert "base MobileNetV2: offline: `tlcli weights import path/to/mobilenet_v2_" in result.stdout  # none cached
    text = out.read_text()
    config = load_config(out)
    assert config.data.dir == data and config.data.image_size == (224, 224) and config.data.val_split == 0.2
    assert config.base.name == "MobileNetV2" and config.base.trainable == "none" and config.train.epochs == "auto"
    assert config.train.class_weight == "auto"  # 30 vs 10 cats and dogs: imbalanced
    assert config.train.refit is False  # no test/ folder: validation stays an honest estimate
    assert config.name == "my-photos" and config.fine_tune is None and "# fine_tune:" in text
    jsonschema.validate(values(out), config_json_schema())
    schema = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", text.splitlines()[0]).group(1)
    assert (out.parent / schema).resolve() == ROOT / SCHEMA_FILE and not schema.startswith("/")


def test_a_folder_with_validation_and_test_folders_gets_no_split_and_keeps_refit(cli, tmp_path):
    data = tmp_path / "data"
    for split, count in (("train", 6), ("val", 3), ("test", 3)):
        make_image_folder(data / split, {"a": count, "b": count}, seed=len(split))
    result = cli("init", data, "-o", tmp_path / "c.yaml", "--json")
    assert result.exit_code == 0, result.stderr
    survey = json.loads(result.stdout)["survey"]
    assert survey["counts"]["test"] == {"a": 3, "b": 3} and survey["val_folder"] and survey["imbalance"] == 1.0
    raw = values(tmp_path / "c.yaml")
    assert "val_split" not in raw["data"] and "refit" not in raw["train"] and "class_weight" not in raw["train"]


def test_an_existing_file_is_kept_without_force(cli, tmp_path):
    data = make_image_folder(tmp_path / "data", {"a": 4, "b": 4})
    out = tmp_path / "c.yaml"
    out.write_text("mine\n")
    result = cli("init", data, "-o", out)
    assert result.exit_code == 2 and out.read_text() == "mine\n"
    assert one_line(result).startswith(f"error: --output: {out} already exists; pass --force")
    assert cli("init", data, "-o", out, "--force").exit_code == 0 and "data:" in out.read_text()


def test_a_folder_training_could_not_use_is_refused_as_training_would(cli, tmp_path):
    data = make_image_folder(tmp_path / "data", {"only": 4})
    result = cli("init", data, "-o", tmp_path / "c.yaml")
    assert result.exit_code == 2 and "at least two class folders" in one_line(result)
    assert not (tmp_path / "c.yaml").exists()


@pytest.mark.slow
@needs_real_weights
def test_deep_writes_the_learning_curve_advice_and_validate_accepts_the_config(cli, tmp_path, real_weights):
    data = blob_folder(tmp_path / "data", planted=False, splits=(("train", 20), ("val", 4)))
    out = tmp_path / "c.yaml"
    result = cli("init", data, "-o", out, "--base", "MobileNet", "--deep")
    assert result.exit_code == 0, result.stderr
    text = out.read_text()
    assert "# What the data says" in text and "probe accuracy" in text and "#   red: " in text
    assert values(out)["base"] == {
        "name": "MobileNet",
        "weights": "imagenet",
        "args": {"alpha": 0.25},
        **{"trainable": "none"},
    }
    validated = cli("validate", out)
    assert validated.exit_code == 0, validated.stderr
    assert "OK. 2 classes" in validated.stdout
