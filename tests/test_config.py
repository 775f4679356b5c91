"""The config schema: defaults, overrides, and one-line errors naming the key."""

from __future__ import annotations

import pytest

from tlcli.config import ExperimentConfig, load_config, parse_override, reference_markdown, reference_rows
from tlcli.errors import ConfigError

BASE = {"data": {"dir": "images"}}


def error_of(raw, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(raw, overrides)
    return str(info.value)


def test_defaults_are_filled_in():
    config = load_config(BASE)
    assert config.data.image_size == (224, 224)
    assert config.base.name == "MobileNetV2" and config.base.trainable == "auto"
    assert config.fine_tune is None
    assert (
        config.train.epochs == "auto"
        and config.train.max_epochs == 200
        and config.train.l2 == "auto"
        and config.head.dropout == "auto"
    )
    assert (
        config.train.best_monitor == "val_loss"
        and load_config({**BASE, "train": {"epochs": 10}}).train.best_monitor == "val_accuracy"
    )
    fine_tune = load_config({**BASE, "fine_tune": {}}).fine_tune
    assert (fine_tune.unfreeze, fine_tune.learning_rate, fine_tune.epochs, fine_tune.max_epochs) == (
        0.75,
        3e-4,
        "auto",
        30,
    )


def test_misspelled_key_names_path_and_suggests():
    message = error_of({**BASE, "train": {"optimzer": "adam"}})
    assert message == "train.optimzer: unknown key, did you mean optimizer?"


def test_unknown_top_level_key_lists_known_keys_when_nothing_is_close():
    message = error_of({**BASE, "zzz": 1})
    assert message.startswith("zzz: unknown key (known keys: name, seed, data")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"data": {"dir": "x", "batch_size": "abc"}}, "data.batch_size"),
        ({"data": {"dir": "x", "val_split": 1.5}}, "data.val_split"),
        ({"data": {"dir": "x", "image_size": 0}}, "data.image_size"),
        ({**BASE, "train": {"epochs": -1}}, "train.epochs"),
        ({**BASE, "train": {"optimizer": "adamm"}}, "train.optimizer"),
        ({**BASE, "base": {"trainable": -3}}, "base.trainable"),
        ({**BASE, "fine_tune": {"unfreeze": 0}}, "fine_tune.unfreeze"),
        ({**BASE, "head": {"dense": [{"units": 0}]}}, "head.dense.0.units"),
        ({**BASE, "name": "has space"}, "name"),
        ({}, "data"),
    ],
)
def test_invalid_values_name_their_key(raw, key):
    message = error_of(raw)
    assert message.startswith(f"{key}: ")
    assert "\n" not in message


def test_fine_tune_on_a_base_trained_from_scratch_is_refused():
    message = error_of({**BASE, "base": {"weights": "none"}, "fine_tune": {}})
    assert "fine_tune" in message


def test_set_overrides_by_dotted_path_with_yaml_values():
    config = load_config(
        BASE, ["train.epochs=3", "data.batch_size=16", "data.image_size=[64, 48]", "base.args.alpha=0.25"]
    )
    assert config.train.epochs == 3
    assert config.data.batch_size == 16
    assert config.data.image_size == (64, 48)
    assert config.base.args == {"alpha": 0.25}


def test_load_config_does_not_mutate_the_callers_mapping():
    raw = {"data": {"dir": "x"}}
    load_config(raw, ["data.batch_size=4"])
    assert raw == {"data": {"dir": "x"}}


def test_set_with_unknown_key_fails_like_the_file_would():
    assert error_of(BASE, ["train.epoch=3"]).startswith("train.epoch: unknown key, did you mean epochs?")


@pytest.mark.parametrize("text", ["train.epochs", "=3", "train..epochs=3", "1abc=2"])
def test_malformed_set_is_rejected(text):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(text)


def test_set_into_a_value_is_rejected():
    assert error_of({**BASE, "seed": 5}, ["seed.x=1"]).startswith("seed: is a value, not a section")


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    assert "bad.yaml line" in error_of(bad)
    assert "config file not found" in error_of(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    assert "must be a mapping" in error_of(listy)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("data: !!python/object/apply:os.system ['echo hacked']\n")
    assert "not valid YAML" in error_of(evil)


def test_reference_documents_every_key_with_a_description():
    rows = reference_rows()
    keys = {key for key, _, _ in rows}
    assert {"data.augment.flip", "fine_tune.unfreeze", "head.dense[].units", "runtime.mixed_precision"} <= keys
    assert all(description for _, _, description in rows)


def test_docs_config_reference_is_current():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "config.md").read_text()
    assert reference_markdown() in page, "docs/reference/config.md is stale: run `python docs/gen_ref.py`"


def test_resolved_config_round_trips():
    config = load_config({**BASE, "fine_tune": {"epochs": 2}})
    assert ExperimentConfig.model_validate(config.to_dict()) == config


def test_the_path_keys_come_from_the_schema():
    from tlcli.config import path_keys

    keys = path_keys()
    assert set(keys) == {
        "data.dir",
        "data.train_dir",
        "data.val_dir",
        "data.test_dir",
        "data.manifest",
        "base.weights",
        "base.run",
        "output.runs_dir",
    }
    assert keys["base.weights"].words == ("imagenet", "none") and keys["base.run"].named


def test_resolve_paths_makes_every_path_key_absolute_and_leaves_keywords(tmp_path, monkeypatch):
    from pathlib import Path

    from tlcli.config import resolve_paths

    monkeypatch.chdir(tmp_path)
    manifest = load_config({"data": {"manifest": "labels.csv"}, "base": {"weights": "w.weights.h5", "run": "old"}})
    resolved = resolve_paths(manifest, Path("runs"), Path("runs/old-1"))
    assert resolved.data.manifest == tmp_path / "labels.csv"
    assert resolved.base.weights == str(tmp_path / "w.weights.h5") and resolved.base.run == str(tmp_path / "runs/old-1")
    assert resolved.output.runs_dir == tmp_path / "runs"
    folders = resolve_paths(load_config({**BASE, "data": {"train_dir": "t", "val_dir": "v"}}), Path("r"), None)
    assert (folders.data.train_dir, folders.data.val_dir, folders.data.test_dir) == (
        tmp_path / "t",
        tmp_path / "v",
        None,
    )
    assert folders.base.weights == "imagenet" and folders.base.run is None
    named = resolve_paths(load_config({**BASE, "base": {"run": "old"}}), Path("r"), None)
    assert named.base.run == "old"  # a run name only the runs folder resolves: the caller passes its folder
