"""Offline ImageNet weights: a clear error naming the file, and `tlcli weights import`."""

from __future__ import annotations

import pytest
from conftest import MOBILENET_WEIGHTS, needs_shared

from tlcli.config import load_config
from tlcli.errors import ConfigError, UserError
from tlcli.modeling.build import build_model
from tlcli.modeling.weights import import_weights
from tlcli.paths import keras_weights_dir


def mobilenet_config():
    return load_config(
        {
            "data": {"dir": "x", "image_size": 64},
            "base": {"name": "MobileNet", "args": {"alpha": 0.25}, "weights": "imagenet"},
        }
    )


def test_cache_folder_follows_keras_home(isolated_caches):
    assert keras_weights_dir() == isolated_caches / "models"


def test_missing_imagenet_weights_fail_naming_file_and_folder(isolated_caches):
    with pytest.raises(ConfigError) as info:
        build_model(mobilenet_config(), 2)
    message = str(info.value)
    assert message.startswith(
        "base.weights: ImageNet weights for MobileNet (mobilenet_2_5_224_tf_no_top.h5) are not in "
    )
    assert str(isolated_caches / "models") in message and "tlcli weights import" in message
    assert "\n" not in message


def test_import_rejects_what_is_not_a_weights_file(tmp_path):
    with pytest.raises(UserError, match="weights file not found"):
        import_weights(tmp_path / "nope.h5")
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(UserError, match="expected a Keras weights file"):
        import_weights(text)


@needs_shared
def test_imported_real_weights_are_used_offline(cli, isolated_caches):
    result = cli("weights", "import", MOBILENET_WEIGHTS)
    assert result.exit_code == 0, result.stderr
    assert (isolated_caches / "models" / MOBILENET_WEIGHTS.name).is_file()
    model, info = build_model(mobilenet_config(), 2)
    import h5py  # noqa: F401  (ships with keras)

    assert info.pretrained and model.get_layer("base").count_params() == 218544
