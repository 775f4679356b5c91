"""The model: the family's preprocessing built in, freezing, BatchNorm kept frozen."""

from __future__ import annotations

import numpy as np
import pytest

from tlcli.config import load_config
from tlcli.errors import ConfigError
from tlcli.modeling import bases
from tlcli.modeling.build import build_model
from tlcli.modeling.freezing import first_trainable_index, set_base_trainable


def config_for(**base):
    return load_config({"data": {"dir": "x", "image_size": base.pop("size", 32)}, "base": {"weights": "none", **base}})


REQUIRED_BASES = [
    "MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large",
    *[f"EfficientNetB{i}" for i in range(8)],
    "EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3", "EfficientNetV2S",
    "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2",
    "VGG16", "VGG19", "Xception", "InceptionV3",
    "InceptionResNetV2", "DenseNet121", "DenseNet169", "DenseNet201", "ConvNeXtTiny",
]  # fmt: skip


def test_every_required_base_is_known():
    assert set(REQUIRED_BASES) <= set(bases.base_names())


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("MobileNet", "mobilenet"),
        ("ResNet50", "resnet"),
        ("DenseNet121", "densenet"),
        ("VGG16", "vgg16"),
        ("EfficientNetB0", "efficientnet"),
        ("Xception", "xception"),
    ],
)
def test_built_in_preprocessing_equals_the_familys_preprocess_input(name, module):
    import keras

    pixels = np.random.default_rng(0).uniform(0, 255, size=(2, 8, 8, 3)).astype("float32")
    expected = getattr(keras.applications, module).preprocess_input(pixels.copy())
    got = pixels
    for layer in bases.preprocessing_layers(bases.preprocess_mode(name)):
        got = layer(got)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "size"), [("MobileNetV2", 32), ("EfficientNetB0", 32), ("ResNet50", 32), ("VGG16", 32)]
)
def test_models_build_and_take_raw_pixels(name, size):
    model, info = build_model(config_for(name=name, size=size), 3)
    out = model.predict(np.full((1, size, size, 3), 128.0, dtype="float32"), verbose=0)
    assert out.shape == (1, 3) and np.isclose(out.sum(), 1.0, atol=1e-4)
    assert info.base_name == name


def test_too_small_input_is_a_config_error_naming_image_size():
    with pytest.raises(ConfigError, match=r"^data.image_size: InceptionV3 cannot take this input"):
        build_model(config_for(name="InceptionV3", size=32), 2)


def test_unknown_base_suggests_a_name():
    with pytest.raises(ConfigError, match="base.name: unknown base 'MobileNetV9'; did you mean MobileNet"):
        build_model(config_for(name="MobileNetV9"), 2)


def test_base_args_pass_through_and_bad_ones_are_named():
    model, info = build_model(config_for(name="MobileNet", args={"alpha": 0.25}), 2)
    assert model.get_layer("base").get_layer("conv1").filters == 8
    with pytest.raises(ConfigError, match="base.args.alfa"):
        build_model(config_for(name="MobileNet", args={"alfa": 0.25}), 2)


def test_missing_weights_file_is_named():
    with pytest.raises(ConfigError, match="base.weights: weights file not found: /no/such.h5"):
        build_model(config_for(name="MobileNet", weights="/no/such.h5"), 2)


def test_grayscale_is_replicated_for_rgb_bases():
    config = load_config(
        {
            "data": {"dir": "x", "image_size": 32, "color_mode": "grayscale"},
            "base": {"name": "MobileNet", "weights": "none", "args": {"alpha": 0.25}},
        }
    )
    model, info = build_model(config, 2)
    assert model.input_shape == (None, 32, 32, 1) and info.channels == 1
    assert model.get_layer("to_rgb") is not None


def test_sigmoid_head_needs_two_classes():
    config = load_config(
        {
            "data": {"dir": "x", "image_size": 32},
            "base": {"name": "SmallCNN", "weights": "none"},
            "head": {"activation": "sigmoid"},
        }
    )
    model, _ = build_model(config, 2)
    assert model.output_shape == (None, 1)
    with pytest.raises(ConfigError, match="head.activation"):
        build_model(config, 3)


def trainable_names(model):
    return [layer.name for layer in model.get_layer("base").layers if layer.trainable and layer.weights]


def test_freezing_by_count_and_by_name_follows_keras_layer_order():
    model, _ = build_model(config_for(name="MobileNet", args={"alpha": 0.25}), 2)
    layers = model.get_layer("base").layers
    assert set_base_trainable(model, "none", pretrained=True, key="base.trainable") == 0
    set_base_trainable(model, 5, pretrained=False, key="base.trainable")
    assert trainable_names(model) == [layer.name for layer in layers[-5:] if layer.weights]
    set_base_trainable(model, "conv_pw_13", pretrained=False, key="base.trainable")
    assert trainable_names(model)[0] == "conv_pw_13"
    with pytest.raises(ConfigError, match="fine_tune.unfreeze: asks for the last 999 layers, but the base has only"):
        set_base_trainable(model, 999, pretrained=True, key="fine_tune.unfreeze")
    with pytest.raises(ConfigError, match="did you mean conv_pw_13"):
        set_base_trainable(model, "conv_pw13", pretrained=True, key="fine_tune.unfreeze")


def test_a_fraction_unfreezes_that_share_of_the_base_counted_from_the_top():
    """`0.5` is the top half of any base (43 of MobileNet 0.25's 86 layers), where a count means more on a shallow
    base than on a deep one; a fraction is at least one layer, and 0 or 1 are refused with the key named."""
    model, _ = build_model(config_for(name="MobileNet", args={"alpha": 0.25}), 2)
    layers = model.get_layer("base").layers
    set_base_trainable(model, 0.5, pretrained=False, key="fine_tune.unfreeze")
    assert len(layers) == 86 and trainable_names(model) == [layer.name for layer in layers[-43:] if layer.weights]
    set_base_trainable(model, 0.03, pretrained=False, key="fine_tune.unfreeze")  # round(2.58): the last 3
    assert trainable_names(model) == ["conv_pw_13", "conv_pw_13_bn"]
    assert first_trainable_index(layers, 0.001, "fine_tune.unfreeze") == 85  # round(0.086) is 0: still one
    assert load_config({"data": {"dir": "x"}, "fine_tune": {"unfreeze": 0.5}}).fine_tune.unfreeze == 0.5
    for wrong in (1.0, 0.0, 1.5):
        with pytest.raises(ConfigError, match=r"fine_tune.unfreeze.*a fraction of them in \(0, 1\)"):
            load_config({"data": {"dir": "x"}, "fine_tune": {"unfreeze": wrong}})


def _fit_and_read_moving_mean(pretrained: bool):
    import keras

    model, _ = build_model(config_for(name="MobileNet", args={"alpha": 0.25}), 2)
    set_base_trainable(model, "all", pretrained=pretrained, key="base.trainable")
    bn = model.get_layer("base").get_layer("conv_pw_13_bn")
    before = np.array(bn.moving_mean)
    model.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    model.fit(x, np.eye(2)[[0, 1] * 4], epochs=1, verbose=0)
    return before, np.array(bn.moving_mean), bn


def test_pretrained_base_keeps_batchnorm_in_inference_mode_even_when_unfrozen():
    before, after, bn = _fit_and_read_moving_mean(pretrained=True)
    np.testing.assert_array_equal(before, after)
    assert not bn.trainable


def test_base_trained_from_scratch_updates_batchnorm():
    before, after, bn = _fit_and_read_moving_mean(pretrained=False)
    assert not np.allclose(before, after)
    assert bn.trainable
