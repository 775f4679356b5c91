"""Training end to end on tiny images: the run folder contract and its failure modes."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
import yaml
from conftest import make_image_folder, tiny_config

from tlcli import load_config, train
from tlcli.errors import ConfigError, DataError, TrainingError
from tlcli.runs import RUN_FILES, list_runs, read_run_record


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One two-phase run shared by the tests that only read its folder: the top of a random base, then all of it."""
    tmp = tmp_path_factory.mktemp("run")
    data = make_image_folder(tmp / "images", {"cats": 20, "dogs": 20})
    raw = tiny_config(data, tmp / "runs")
    raw["base"] = {"name": "SmallCNN", "weights": "none", "args": {"filters": 8, "blocks": 2}, "trainable": 4}
    raw["fine_tune"] = {"unfreeze": "all", "epochs": 2, "learning_rate": 0.001, "when": "always"}
    result = train(load_config(raw))
    return result


def test_run_folder_holds_every_documented_file(finished_run):
    run_dir = finished_run.run_dir
    for name in RUN_FILES:
        if "{" in name:
            assert (run_dir / "splits" / "train.csv").is_file() and (run_dir / "splits" / "val.csv").is_file()
        elif "<" in name:
            assert [p.name for p in (run_dir / "eval").iterdir() if p.name.endswith("-val")]
        else:
            assert (run_dir / name.rstrip("/")).exists(), name
    assert read_run_record(run_dir).status == "completed"
    assert json.loads((run_dir / "labels.json").read_text()) == ["cats", "dogs"]


def test_saved_model_loads_in_safe_mode_and_takes_raw_pixels(finished_run):
    model = keras.models.load_model(finished_run.run_dir / "model.keras", safe_mode=True)
    probabilities = model.predict(np.full((2, 16, 16, 3), 200.0, dtype="float32"), verbose=0)
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_resolved_config_reproduces_the_run_without_the_original_file(finished_run):
    saved = yaml.safe_load((finished_run.run_dir / "config.yaml").read_text())
    assert saved["data"]["dir"].startswith("/")
    assert saved["train"]["optimizer"] == "adam"  # defaults are filled in
    assert load_config(saved).name == "tiny"


def test_metrics_history_and_splits_agree(finished_run):
    run_dir = finished_run.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["final"]["val_accuracy"] <= 1.0
    assert metrics["epochs"] == {"total": 4, "train": 2, "fine_tune": 2}
    assert metrics["images"]["train"] + metrics["images"]["val"] == 40
    assert metrics["images_per_second"] > 0 and metrics["peak_memory_mb"] > 0
    with open(run_dir / "history.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [(int(r["epoch"]), r["phase"]) for r in rows] == [
        (1, "train"),
        (2, "train"),
        (3, "fine_tune"),
        (4, "fine_tune"),
    ]
    assert float(rows[2]["learning_rate"]) == pytest.approx(0.001)  # the fine-tuning phase's own rate
    with open(run_dir / "splits" / "val.csv") as stream:
        assert len(list(csv.DictReader(stream))) == metrics["images"]["val"]
    env = json.loads((run_dir / "env.json").read_text())
    assert env["seed"] == 3 and env["devices"]["device"] == "cpu" and env["keras"].startswith("3.")
    dataset = json.loads((run_dir / "dataset.json").read_text())
    assert len(dataset["fingerprint"]) == 64


def test_two_phases_are_recorded_with_contiguous_epochs(tmp_path, image_folder):
    # A "pretrained" base here is an earlier run's base: phase 2 unfreezes its top.
    first = train(load_config(tiny_config(image_folder, tmp_path / "runs", name="source")))
    raw = tiny_config(image_folder, tmp_path / "runs", name="target")
    raw["base"] = {"run": "source", "trainable": "none"}
    raw["fine_tune"] = {"unfreeze": 3, "epochs": 2, "learning_rate": 0.001, "when": "always"}
    second = train(load_config(raw))
    with open(second.run_dir / "history.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [(int(r["epoch"]), r["phase"]) for r in rows] == [
        (1, "train"),
        (2, "train"),
        (3, "fine_tune"),
        (4, "fine_tune"),
    ]
    assert float(rows[2]["learning_rate"]) == pytest.approx(0.001)
    saved = yaml.safe_load((second.run_dir / "config.yaml").read_text())
    assert saved["base"]["run"] == str(first.run_dir.absolute())
    # The transferred base carries the source's weights into the new model.
    source_kernel = keras.models.load_model(first.run_dir / "model.keras").get_layer("base").layers[1].get_weights()[0]
    target_base = keras.models.load_model(second.run_dir / "model.keras").get_layer("base")
    np.testing.assert_array_equal(target_base.layers[1].get_weights()[0], source_kernel)  # frozen in both phases


def test_runs_started_in_the_same_second_get_distinct_folders(tmp_path):
    from datetime import datetime

    from tlcli.runs import create_run_dir

    now = datetime(2026, 1, 2, 3, 4, 5)
    first, second = create_run_dir(tmp_path, "x", now), create_run_dir(tmp_path, "x", now)
    assert first.name == "20260102-030405-x" and second.name == "20260102-030405-x-2"


def test_user_errors_leave_no_run_folder(tmp_path, image_folder):
    runs_dir = tmp_path / "runs"
    with pytest.raises(ConfigError, match="fine_tune.unfreeze"):
        raw = tiny_config(image_folder, runs_dir, fine_tune={"unfreeze": 500})
        raw["base"]["run"] = None
        raw["base"]["weights"] = "none"
        raw["base"]["trainable"] = "none"
        train(load_config(raw))
    with pytest.raises(DataError, match="data.dir: folder not found"):
        train(load_config(tiny_config(tmp_path / "missing", runs_dir)))
    with pytest.raises(ConfigError, match="train.monitor: unknown metric 'val_acc', did you mean val_accuracy"):
        train(load_config(tiny_config(image_folder, runs_dir, train={"monitor": "val_acc"})))
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_failure_during_training_marks_the_run_failed_and_keeps_earlier_runs(tmp_path, image_folder, monkeypatch):
    runs_dir = tmp_path / "runs"
    good = train(load_config(tiny_config(image_folder, runs_dir)))
    before = {p.name: p.read_bytes() for p in good.run_dir.iterdir() if p.is_file()}

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(keras.Model, "fit", explode)
    with pytest.raises(TrainingError, match="disk on fire"):
        train(load_config(tiny_config(image_folder, runs_dir)))
    statuses = {s.path.name: s.status for s in list_runs(runs_dir)}
    assert sorted(statuses.values()) == ["completed", "failed"]
    failed = next(s.path for s in list_runs(runs_dir) if s.status == "failed")
    assert "disk on fire" in read_run_record(failed).error
    assert {p.name: p.read_bytes() for p in good.run_dir.iterdir() if p.is_file()} == before


def test_class_weight_auto_and_map(tmp_path):
    data = make_image_folder(tmp_path / "imbalanced", {"few": 6, "many": 30})
    from tlcli.data import class_weights

    weights = class_weights(np.array([0] * 6 + [1] * 30), 2, "auto", ["few", "many"])
    assert weights[0] == pytest.approx(3.0) and weights[1] == pytest.approx(0.6)
    with pytest.raises(ConfigError, match="train.class_weight.fwe"):
        train(load_config(tiny_config(data, tmp_path / "runs", train={"class_weight": {"fwe": 2.0}})))

    def first_loss(class_weight) -> float:
        raw = tiny_config(
            data,
            tmp_path / "runs",
            train={"class_weight": class_weight, "epochs": 1},
            runtime={"deterministic": True},
            cache="off",
        )
        result = train(load_config(raw))
        assert result.metrics.epochs["total"] == 1
        with open(result.run_dir / "history.csv") as stream:
            return float(next(csv.DictReader(stream))["loss"])

    # The weights reach the fit: "auto" (3.0 for the 6 "few", 0.6 for the 30 "many") trains otherwise than
    # no weights, and a map of ones is exactly no weights.
    unweighted = first_loss("none")
    assert first_loss("auto") != pytest.approx(unweighted, rel=1e-4)
    assert first_loss({"few": 1.0, "many": 1.0}) == pytest.approx(unweighted, rel=1e-6)


def test_sigmoid_head_top_k_schedule_and_early_stopping(tmp_path, image_folder):
    raw = tiny_config(
        image_folder,
        tmp_path / "runs",
        head={"activation": "sigmoid"},
        train={"epochs": 6, "schedule": "cosine", "early_stopping": {"patience": 1, "monitor": "val_loss"}},
    )
    result = train(load_config(raw))
    with open(result.run_dir / "history.csv") as stream:
        losses = [float(r["val_loss"]) for r in csv.DictReader(stream)]
    # Patience 1: the run stops after the first epoch whose val_loss is no better than the best before it.
    expected = next((e + 1 for e in range(1, 6) if losses[e] >= min(losses[:e])), 6)
    assert result.metrics.epochs["total"] == len(losses) == expected
    # A min_delta no epoch can beat: the second epoch is never an improvement, so the run stops there.
    raw["train"]["early_stopping"]["min_delta"] = 10.0
    assert train(load_config(raw)).metrics.epochs["total"] == 2
    raw = tiny_config(
        make_image_folder(tmp_path / "three", {"a": 10, "b": 10, "c": 10}),
        tmp_path / "runs",
        train={"top_k": 5, "optimizer": "sgd", "optimizer_args": {"momentum": 0.9}, "schedule": "exponential"},
    )
    result = train(load_config(raw))
    assert "val_top3_accuracy" in result.metrics.final  # k capped at the number of classes


def test_grayscale_training_and_augmentation(tmp_path, image_folder):
    raw = tiny_config(
        image_folder,
        tmp_path / "runs",
        data={
            "color_mode": "grayscale",
            "augment": {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "translation": 0.1, "contrast": 0.1},
        },
    )
    result = train(load_config(raw))
    model = keras.models.load_model(result.run_dir / "model.keras")
    assert model.input_shape == (None, 16, 16, 1)
    kinds = [type(layer).__name__ for layer in model.get_layer("augmentation").layers]
    assert kinds == ["RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast"]
    assert [layer.name for layer in model.layers][:4] == [
        "image",
        "augmentation",
        "preprocess",
        "base",
    ]  # SmallCNN takes the one channel as it is
    # Augmentation is active only in training: inference is deterministic.
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_bad_optimizer_args_are_named(tmp_path, image_folder):
    with pytest.raises(ConfigError, match="train.optimizer_args: not accepted by adam"):
        train(load_config(tiny_config(image_folder, tmp_path / "runs", train={"optimizer_args": {"momentum": 0.9}})))
