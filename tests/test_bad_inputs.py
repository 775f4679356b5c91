"""Malformed configs and command lines: each exits 2 with one line naming the key or path, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_image_folder, tiny_config, write_config


def setting(section: str, key: str, value):
    """A case that sets `section.key: value` in the tiny config."""

    def apply(config: dict, root: Path) -> dict:
        config.setdefault(section, {})[key] = value
        return config

    return apply


def top(key: str, value):
    def apply(config: dict, root: Path) -> dict:
        config[key] = value
        return config

    return apply


def data_dir(make):
    """A case whose data folder is built by `make(root) -> folder`."""

    def apply(config: dict, root: Path) -> dict:
        config["data"]["dir"] = str(make(root))
        return config

    return apply


def one_class(root: Path) -> Path:
    return make_image_folder(root / "one", {"lonely": 5})


def empty_class(root: Path) -> Path:
    folder = make_image_folder(root / "empty", {"a": 5, "b": 5})
    (folder / "c").mkdir()
    return folder


def no_classes(root: Path) -> Path:
    (root / "flat").mkdir()
    make_image_folder(root / "flat_src", {"a": 2})
    for file in (root / "flat_src" / "a").iterdir():
        file.rename(root / "flat" / file.name)
    return root / "flat"


def unknown_val_class(root: Path) -> Path:
    make_image_folder(root / "split" / "train", {"a": 5, "b": 5})
    make_image_folder(root / "split" / "val", {"a": 2, "zebra": 2})
    return root / "split"


def a_file(root: Path) -> Path:
    (root / "file.txt").write_text("x")
    return root / "file.txt"


# (case id, change to the config, extra CLI args, words the one error line must contain)
CASES = [
    ("unknown top-level key", top("trian", {"epochs": 1}), [], "trian: unknown key, did you mean train?"),
    ("unknown section key", setting("train", "epoch", 3), [], "train.epoch: unknown key, did you mean epochs?"),
    (
        "unknown data key",
        setting("data", "image_sise", 32),
        [],
        "data.image_sise: unknown key, did you mean image_size?",
    ),
    ("negative epochs", setting("train", "epochs", -1), [], "train.epochs"),
    ("epochs wrong type", setting("train", "epochs", "ten"), [], "train.epochs"),
    ("val split 1.5", setting("data", "val_split", 1.5), [], "data.val_split"),
    ("image size 0", setting("data", "image_size", 0), [], "data.image_size"),
    ("image size too large", setting("data", "image_size", 100000), [], "data.image_size"),
    ("image size three numbers", setting("data", "image_size", [32, 32, 3]), [], "data.image_size"),
    ("batch size 0", setting("data", "batch_size", 0), [], "data.batch_size"),
    ("negative learning rate", setting("train", "learning_rate", -0.1), [], "train.learning_rate"),
    ("dropout 1", setting("head", "dropout", 1.0), [], "head.dropout"),
    ("unknown pooling", setting("head", "pooling", "mean"), [], "head.pooling"),
    ("unknown colour mode", setting("data", "color_mode", "rgba"), [], "data.color_mode"),
    ("unknown on_bad_file", setting("data", "on_bad_file", "ignore"), [], "data.on_bad_file"),
    ("bad run name", top("name", "my run!"), [], "name"),
    ("negative seed", top("seed", -1), [], "seed"),
    (
        "data section missing",
        lambda c, r: {k: v for k, v in c.items() if k != "data"},
        [],
        "data: required key is missing",
    ),
    ("section is a value", top("train", 5), [], "train"),
    (
        "missing data folder",
        setting("data", "dir", "/no/such/folder"),
        [],
        "data.dir: folder not found: /no/such/folder",
    ),
    ("data dir is a file", data_dir(a_file), [], "data.dir: folder not found"),
    ("class folder with no images", data_dir(empty_class), [], "class folder 'c'"),
    ("data folder with one class", data_dir(one_class), [], "only class 'lonely'"),
    ("data folder with no class folders", data_dir(no_classes), [], "no class folders"),
    ("val class not in train", data_dir(unknown_val_class), [], "'zebra'"),
    ("unknown optimizer", setting("train", "optimizer", "adamm"), [], "train.optimizer"),
    ("unknown schedule", setting("train", "schedule", "linear"), [], "train.schedule"),
    ("bad optimizer argument", setting("train", "optimizer_args", {"nosuch": 1}), [], "train.optimizer_args"),
    (
        "bad schedule argument",
        lambda c, r: setting("train", "schedule_args", {"nosuch": 1})(setting("train", "schedule", "cosine")(c, r), r),
        [],
        "train.schedule_args",
    ),
    (
        "fine-tune unfreezes more layers than exist",
        lambda c, r: {**c, "base": {**c["base"], "trainable": "none"}, "fine_tune": {"epochs": 1, "unfreeze": 10000}},
        [],
        "fine_tune.unfreeze",
    ),
    ("fine-tune on a fully trained base", top("fine_tune", {"epochs": 1}), [], "fine_tune"),
    ("unknown trainable layer", setting("base", "trainable", "no_such_layer"), [], "base.trainable"),
    ("unknown base name", setting("base", "name", "MobileNetV9"), [], "base.name: unknown base 'MobileNetV9'"),
    (
        "unknown base argument",
        setting("base", "args", {"nosuch": 1}),
        [],
        "base.args: nosuch is not an argument of SmallCNN",
    ),
    (
        "unknown keras.applications argument",
        lambda c, r: {
            **c,
            "base": {"name": "MobileNet", "weights": "none", "args": {"nosuch": 1}},
            "data": {**c["data"], "image_size": 32},
        },
        [],
        "base.args.nosuch",
    ),
    (
        "missing weights file",
        lambda c, r: {
            **c,
            "base": {"name": "MobileNet", "weights": "/no/such/weights.h5"},
            "data": {**c["data"], "image_size": 32},
        },
        [],
        "/no/such/weights.h5",
    ),
    (
        "image too small for base",
        lambda c, r: {**c, "base": {"name": "MobileNet", "weights": "none"}},
        [],
        "data.image_size",
    ),
    (
        "unknown metric monitor",
        setting("train", "monitor", "val_acc"),
        [],
        "train.monitor: unknown metric 'val_acc', did you mean val_accuracy?",
    ),
    (
        "unknown early-stopping monitor",
        setting("train", "early_stopping", {"monitor": "f1", "patience": 2}),
        [],
        "train.early_stopping.monitor",
    ),
    (
        "sigmoid with 3 classes",
        lambda c, r: {
            **setting("head", "activation", "sigmoid")(c, r),
            "data": {**c["data"], "dir": str(make_image_folder(r / "three", {"a": 5, "b": 5, "c": 5}))},
        },
        [],
        "head.activation",
    ),
    (
        "class weight for an unknown class",
        setting("train", "class_weight", {"wolves": 2.0}),
        [],
        "train.class_weight.wolves",
    ),
    ("dense layer with 0 units", setting("head", "dense", [{"units": 0}]), [], "head.dense.0.units"),
    (
        "unknown activation",
        setting("head", "dense", [{"units": 4, "activation": "relux"}]),
        [],
        "head.dense.0.activation",
    ),
    ("unknown base run", setting("base", "run", "no-such-run"), [], "no-such-run"),
    ("--set without =", lambda c, r: c, ["--set", "train.epochs"], "--set: expected KEY.PATH=VALUE"),
    ("--set without key", lambda c, r: c, ["--set", "=3"], "--set: expected KEY.PATH=VALUE"),
    ("--set into a value", lambda c, r: c, ["--set", "train.epochs.x=3"], "train.epochs: is a value, not a section"),
    ("--set unknown key", lambda c, r: c, ["--set", "train.epocs=3"], "train.epocs: unknown key, did you mean epochs?"),
    ("--set wrong type", lambda c, r: c, ["--set", "data.batch_size=big"], "data.batch_size"),
]


def _config_file(tmp_path: Path, change) -> Path:
    images = make_image_folder(tmp_path / "images", {"cats": 6, "dogs": 6})
    config = change(tiny_config(images, tmp_path / "runs"), tmp_path)
    return write_config(tmp_path / "config.yaml", config)


def _assert_one_line_error(result, words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", ["validate", "train"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(cli, tmp_path, case, command):
    _, change, args, words = case
    config = _config_file(tmp_path, change)
    # --quiet: without it, train's progress lines ("data: 2 classes, ...") precede the error on stderr.
    quiet = ["--quiet"] if command == "train" else []
    result = cli(command, config, *args, *quiet, "--runs-dir", tmp_path / "runs")
    _assert_one_line_error(result, words)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing was started


FILE_CASES = [
    ("config file missing", lambda p: p / "missing.yaml", "missing.yaml: config file not found"),
    ("config not YAML", lambda p: _write(p / "bad.yaml", "data: [unclosed\n"), "bad.yaml line"),
    ("config is a list", lambda p: _write(p / "list.yaml", "- a\n- b\n"), "list.yaml: the config must be a mapping"),
    ("config is binary", lambda p: _write_bytes(p / "bin.yaml", b"\xff\xfe\x00\x81"), "bin.yaml"),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("command", ["validate", "train"])
@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_config_file_exits_2_with_one_line(cli, tmp_path, case, command):
    _, make, words = case
    _assert_one_line_error(cli(command, make(tmp_path)), words)


def test_bad_device_option(cli, tmp_path):
    config = _config_file(tmp_path, lambda c, r: c)
    _assert_one_line_error(cli("train", config, "--device", "tpu"), "--device")


def test_debug_shows_the_traceback(cli, tmp_path):
    config = _config_file(tmp_path, setting("base", "name", "MobileNetV9"))
    result = cli("validate", config, "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "base.name: unknown base" in result.stderr


def test_yaml_is_loaded_safely(cli, tmp_path):
    """A YAML tag that would run code under yaml.load is only a parse error."""
    path = _write(tmp_path / "evil.yaml", "data: !!python/object/apply:os.system ['touch pwned']\n")
    result = cli("validate", path)
    assert result.exit_code == 2 and "not valid YAML" in result.stderr
    assert not Path("pwned").exists()
