"""Augmentation on training batches (tlcli.data.augment): presets, every key active in training only, label mixing,
quarter turns, and runs trained with them keep a plain Keras model."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import make_image_folder, tiny_config

from tlcli.config.data_schema import AUGMENT_PRESETS, AugmentConfig
from tlcli.config.loading import load_config
from tlcli.data.augment import batch_augmenter, quarter_turns
from tlcli.data.batches import array_batches
from tlcli.errors import ConfigError
from tlcli.training.phases import phase_augment, phases_of

EVERY_BATCH_KEY = {
    "rot90": True,
    "crop": 0.2,
    "rand_augment": 0.5,
    "color_jitter": 0.3,
    "erasing": 0.5,
    "mixup": 0.4,
    "cutmix": 0.5,
}


def batches(augment=None, n=16, size=16):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % 4
    return list(array_batches(images, labels, batch_size=8, num_classes=4, augment=augment))


def test_a_preset_sets_its_keys_and_a_key_set_beside_it_wins():
    light = AugmentConfig(preset="light")
    assert (light.flip, light.rotation, light.zoom, light.translation) == ("horizontal", 0.05, 0.1, 0.05)
    assert AugmentConfig.model_validate("strong").mixup == AUGMENT_PRESETS["strong"]["mixup"]
    assert AugmentConfig(preset="strong", mixup=0.0).mixup == 0.0 and AugmentConfig(preset="overhead").rot90


def test_every_batch_key_changes_training_batches_and_mixes_labels():
    plain = batches()
    augmenter = batch_augmenter(AugmentConfig(**EVERY_BATCH_KEY), seed=1, in_model=True)
    augmented = batches(augmenter)
    assert not np.allclose(augmented[0][0], plain[0][0])
    targets = np.concatenate([np.asarray(y) for _, y in augmented])
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)  # still a distribution over the classes
    assert ((targets > 0.01) & (targets < 0.99)).any()  # some labels were mixed
    for x, _ in augmented:
        assert np.asarray(x).dtype == np.float32 and np.asarray(x).min() >= -1e-3 and np.asarray(x).max() <= 255.01


def test_nothing_to_do_gives_no_augmenter_and_the_classic_keys_stay_in_the_model():
    assert batch_augmenter(AugmentConfig(), seed=0, in_model=True) is None
    assert batch_augmenter(AugmentConfig(preset="light"), seed=0, in_model=True) is None  # the model carries them
    assert batch_augmenter(AugmentConfig(preset="light"), seed=0, in_model=False) is not None


def test_quarter_turns_turn_each_image_by_a_multiple_of_90_degrees():
    images = np.random.default_rng(0).uniform(0, 255, (32, 8, 8, 3)).astype("float32")
    turned = np.asarray(quarter_turns(images, seed=3))
    turns = []
    for original, out in zip(images, turned):
        matches = [k for k in range(4) if np.array_equal(np.rot90(original, k), out)]
        assert len(matches) == 1
        turns.append(matches[0])
    assert len(set(turns)) == 4  # all four occur in 32 draws


def test_fine_tune_augment_is_the_fine_tuning_phase_s_alone(tmp_path):
    raw = tiny_config(tmp_path / "d", tmp_path / "r", fine_tune={"augment": "overhead", "unfreeze": 2})
    raw["base"] = {"name": "MobileNetV2", "weights": "imagenet"}
    config = load_config(raw)
    train, fine_tune = (phase_augment(config, phase) for phase in phases_of(config))
    assert train is None and fine_tune.key == "fine_tune.augment" and not fine_tune.in_model
    assert fine_tune.config.rot90 and fine_tune.config.flip == "horizontal_and_vertical"


def test_quarter_turns_of_images_that_are_not_square_are_refused_before_work(tmp_path, image_folder, cli):
    from conftest import write_config

    raw = tiny_config(image_folder, tmp_path / "runs", data={"image_size": [16, 24], "augment": {"rot90": True}})
    result = cli("train", str(write_config(tmp_path / "c.yaml", raw)))
    assert result.exit_code == 2 and "data.augment.rot90" in result.stderr and "square" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_run_with_every_key_trains_on_images_and_saves_a_plain_keras_model(tmp_path, image_folder):
    from tlcli import train

    augment = {"flip": "horizontal", **EVERY_BATCH_KEY}
    result = train(load_config(tiny_config(image_folder, tmp_path / "runs", data={"augment": augment})))
    assert result.metrics.cache.mode == "images"
    model = keras.models.load_model(result.run_dir / "model.keras", safe_mode=True)  # nothing custom to register
    kinds = {type(layer).__name__ for layer in model.get_layer("augmentation").layers}
    assert kinds == {"RandomFlip"}  # the batch keys ran in the input pipeline, not in the saved model
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))  # inference: no randomness


@pytest.mark.parametrize("key", ["mixup", "erasing"])
def test_batch_keys_are_validated_by_the_schema(tmp_path, key):
    with pytest.raises(ConfigError, match=f"data.augment.{key}"):
        load_config(tiny_config(tmp_path, tmp_path, data={"augment": {key: -1}}))


def test_test_time_augmentation_only_averages_the_model_over_the_run_s_views(binary_run, tmp_path):
    """TTA's probabilities are exactly the mean of the model's on each view; the views follow the run's training."""
    from tlcli.config.loading import load_config as load
    from tlcli.inference.predict import run_source
    from tlcli.inference.tta import VIEWS, tta_views, with_tta

    source = run_source(binary_run)
    images = np.random.default_rng(0).integers(0, 256, (5, *source.image_size, 3), dtype=np.uint8)
    views = ("identity", "flip_h")
    averaged = with_tta(source.probabilities, views)(images, 4)
    expected = np.mean([source.probabilities(np.ascontiguousarray(VIEWS[v](images)), 4) for v in views], axis=0)
    np.testing.assert_allclose(averaged, expected, rtol=1e-6)
    alone = with_tta(source.probabilities, ("identity",))(images, 4)
    np.testing.assert_allclose(alone, source.probabilities(images, 4))
    overhead = load(tiny_config(tmp_path, tmp_path, data={"augment": "overhead"}))
    assert tta_views(overhead) == ("identity", "flip_h", "flip_v", "rot90", "rot180", "rot270")
    assert tta_views(load(tiny_config(tmp_path, tmp_path))) == ("identity", "flip_h")


def test_evaluate_and_predict_with_tta_say_so(binary_run, run_copy, cli, tmp_path):
    run = run_copy(binary_run)
    result = cli("evaluate", str(run), "--tta", "--json")
    assert result.exit_code == 0, result.stderr
    import json

    record = json.loads(result.stdout)
    metrics = json.loads((Path(record["eval_dir"]) / "metrics.json").read_text())
    assert metrics["tta"] == ["identity", "flip_h"] and Path(record["eval_dir"]).name.endswith("-tta")


@pytest.mark.slow
def test_an_exported_model_averages_over_the_views_its_run_recorded_as_the_run_does(binary_run, run_copy, tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the export extra: pip install 'tlcli[export]'")
    import json

    from tlcli import predict
    from tlcli.export import export_run
    from tlcli.export.artifacts import predict_artifact
    from tlcli.export.formats import FILES

    run = run_copy(binary_run)
    exported = export_run(run, ["onnx"], out=tmp_path / "export")
    assert json.loads((exported.export_dir / "export.json").read_text())["tta_views"] == ["identity", "flip_h"]
    images = make_image_folder(tmp_path / "images", {"x": 6}, seed=3)
    artifact = exported.export_dir / FILES["onnx"]

    def probabilities(result) -> list[dict[str, float]]:
        return [dict(p.top) for p in result.predictions]

    averaged = probabilities(predict_artifact([images], artifact, tta=True, unknown=False))
    by_run = probabilities(predict([images], run=run, tta=True, unknown=False))
    for mine, theirs in zip(averaged, by_run, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-3)  # the float32 parity gate's tolerance
    assert averaged != probabilities(predict_artifact([images], artifact, unknown=False))  # the mirror counted
