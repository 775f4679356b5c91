"""Defaults that converge (issue 12): the head's penalty chosen on validation, the refit, the probe, epochs: auto,
the rollback."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import make_image_folder, tiny_config

from tlcli import load_config, resume, train
from tlcli.training.selection import PENALTY_GRID, ProbeFit, head_penalty


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A trained SmallCNN whose frozen base gives separable features, and its data (with a test split)."""
    root = tmp_path_factory.mktemp("selection")
    data = root / "data"
    make_image_folder(data / "train", {"a": 24, "b": 24, "c": 24}, seed=1)
    make_image_folder(data / "test", {"a": 6, "b": 6, "c": 6}, seed=5)
    run = train(load_config(tiny_config(data, root / "runs", name="source", train={"epochs": 3}))).run_dir
    return data, run, root


def defaults(source, name: str, **sections) -> dict:
    """The smallest config on top of the source's frozen base: nothing pinned but what `sections` pin."""
    data, run, root = source
    raw = tiny_config(data, root / "runs", name=name, **sections)
    raw["base"] = {"run": str(run), "trainable": "none"}
    raw["train"] = {"learning_rate": 0.01, **sections.get("train", {})}
    raw["probe"] = sections.get("probe", "auto")
    raw["runtime"] = {"deterministic": True}
    return raw


def history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def pooled(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(
        keras.Model(model.input, model.get_layer("head_pool").output).predict(images, verbose=0), dtype="float64"
    )


def split_images(run_dir: Path, split: str):
    """The decoded images of the run's recorded split, and their labels."""
    from tlcli.data.decoded import decode_samples
    from tlcli.data.splits import Sample
    from tlcli.runs.provenance import read_split

    names = json.loads((run_dir / "labels.json").read_text())
    samples = [Sample(Path(row.path), names.index(row.label), row.relpath) for row in read_split(run_dir, split)]
    decoded = decode_samples(samples, (16, 16), 3, use_cache=False)
    return decoded.images.astype("float32"), decoded.labels


@pytest.fixture(scope="module")
def selected(source):
    return train(load_config(defaults(source, "selected")))


def test_the_penalty_is_chosen_on_validation_and_recorded(selected):
    metrics = selected.metrics
    grid = metrics.selection["grid"]
    assert [fit["C"] for fit in grid] == list(PENALTY_GRID)
    chosen = min(grid, key=lambda fit: (fit["val_loss"], -fit["C"]))
    assert metrics.selection["chosen"] == chosen and metrics.selection["selected"]
    assert json.loads((selected.run_dir / "selection.json").read_text()) == metrics.selection
    model = keras.models.load_model(selected.run_dir / "model.keras", safe_mode=True)
    output = model.get_layer("predictions")
    assert output.kernel_regularizer.get_config()["l2"] == pytest.approx(
        head_penalty(ProbeFit(**chosen), 3, False), rel=1e-6
    )  # saved with the model
    assert model.get_layer("head_dropout").rate == 0.0  # `head.dropout: auto` with a chosen penalty
    rows = history(selected.run_dir)
    assert (
        len(rows) == 1 and rows[0]["fit"] == "exact" and metrics.epochs == {"total": 1, "train": 1}
    )  # epochs: auto on an exact fit
    assert metrics.linear_probe["C"] == chosen["C"] and metrics.linear_probe["val_accuracy"] == chosen["val_accuracy"]


def test_refit_uses_the_validation_images_only_when_it_says_so(source, selected):
    from sklearn.linear_model import LogisticRegression

    not_refitted = train(load_config(defaults(source, "no-refit", train={"refit": False})))
    C = selected.metrics.selection["chosen"]["C"]
    assert selected.metrics.selection["refit"] and selected.metrics.figures["val"].startswith("in-sample")
    assert not not_refitted.metrics.selection["refit"] and not_refitted.metrics.figures["val"].startswith("selection")
    assert selected.metrics.figures["test"] == not_refitted.metrics.figures["test"] == "untouched"

    for result, splits in ((selected, ("train", "val")), (not_refitted, ("train",))):
        model = keras.models.load_model(result.run_dir / "model.keras", safe_mode=True)
        fitted = [split_images(result.run_dir, split) for split in splits]
        x = pooled(model, np.concatenate([images for images, _ in fitted]))
        probe = LogisticRegression(C=C, max_iter=5000).fit(x, np.concatenate([labels for _, labels in fitted]))
        test_images, _ = split_images(result.run_dir, "test")
        np.testing.assert_allclose(
            model.predict(test_images, verbose=0), probe.predict_proba(pooled(model, test_images)), atol=2e-5
        )


def test_a_pinned_penalty_trains_as_written_with_auto_epochs_until_the_loss_stops(source):
    result = train(
        load_config(
            defaults(source, "pinned", train={"l2": 0.001, "max_epochs": 200, "early_stopping": {"patience": 3}})
        )
    )
    assert (
        result.metrics.selection is None and "val_accuracy" in result.metrics.linear_probe
    )  # the reference is still there
    model = keras.models.load_model(result.run_dir / "model.keras", safe_mode=True)
    assert model.get_layer("predictions").kernel_regularizer.get_config()["l2"] == pytest.approx(0.001)
    assert model.get_layer("head_dropout").rate == pytest.approx(0.2)  # `head.dropout: auto` without a chosen penalty
    losses = [float(row["val_loss"]) for row in history(result.run_dir)]
    best = int(np.argmin(losses))
    assert len(losses) < 200 and len(losses) == best + 1 + 3  # stopped 3 epochs after the best validation loss
    assert result.metrics.best["epoch"] == best + 1 and result.metrics.best["val_loss"] == pytest.approx(
        losses[best], abs=1e-6
    )

    capped = train(
        load_config(
            defaults(source, "capped", train={"l2": 0.001, "max_epochs": 4, "early_stopping": {"patience": 50}})
        )
    )
    assert capped.metrics.epochs["total"] == 4  # the maximum, before patience ran out
    extended = resume(capped.run_dir, overrides=["train.max_epochs=7"])
    assert extended.metrics.epochs["total"] == 7 and [int(r["epoch"]) for r in history(capped.run_dir)] == list(
        range(1, 8)
    )


def test_a_fine_tuning_phase_worse_than_its_start_is_rolled_back(source):
    head_only = train(load_config(defaults(source, "head-only", train={"refit": False})))
    ruined = defaults(
        source,
        "ruined",
        train={"refit": False},
        fine_tune={"unfreeze": 4, "epochs": 2, "optimizer": "sgd", "learning_rate": 50.0, "when": "always"},
    )
    result = train(load_config(ruined))
    outcome = result.metrics.phases["fine_tune"]
    assert outcome["kept"] == "start" and outcome["start"]["val_loss"] <= outcome["best"]["val_loss"]
    probe = np.random.default_rng(0).uniform(0, 255, (5, 16, 16, 3)).astype("float32")
    predictions = [
        keras.models.load_model(r.run_dir / "model.keras").predict(probe, verbose=0) for r in (head_only, result)
    ]
    np.testing.assert_allclose(predictions[1], predictions[0], atol=1e-6)  # the head it started from, exactly


def test_the_probe_is_skipped_with_the_reason(source):
    off = train(load_config(defaults(source, "probe-off", train={"l2": 0.0, "epochs": 1}, probe="off")))
    assert off.metrics.linear_probe == {"skipped": "probe: off"}
    images = train(load_config(defaults(source, "on-images", train={"epochs": 1}, cache="off")))
    assert images.metrics.linear_probe["skipped"].startswith("no cached features (cache: off")
    assert images.metrics.selection is None


def interrupted_after_epoch_2(source, monkeypatch, raw: dict) -> Path:
    """`raw` trained until a simulated Ctrl-C right after epoch 2's checkpoint; the interrupted run folder."""
    from tlcli.errors import Interrupted
    from tlcli.runs.listing import list_runs
    from tlcli.training import callbacks

    original = callbacks.EpochCheckpoint.on_epoch_end

    def stop(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch + 1 == 2:
            raise Interrupted("simulated Ctrl-C")

    monkeypatch.setattr(callbacks.EpochCheckpoint, "on_epoch_end", stop)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(raw))
    monkeypatch.undo()
    return next(
        s.path for s in list_runs(source[2] / "runs") if s.status == "interrupted" and s.path.name.endswith(raw["name"])
    )


def test_a_run_with_the_defaults_resumes_after_the_exact_fit(source, monkeypatch):
    raw = defaults(
        source, "resumable", fine_tune={"unfreeze": 4, "epochs": 3, "learning_rate": 0.001, "when": "always"}
    )
    reference = train(load_config(raw))
    run_dir = interrupted_after_epoch_2(source, monkeypatch, raw)
    resumed = resume(run_dir)
    without_time = [
        {k: v for k, v in m.selection.items() if k != "seconds"} for m in (resumed.metrics, reference.metrics)
    ]
    assert resumed.metrics.final == reference.metrics.final and without_time[0] == without_time[1]
    assert [(r["epoch"], r["phase"]) for r in history(run_dir)] == [
        (r["epoch"], r["phase"]) for r in history(reference.run_dir)
    ]


def test_a_pinned_recipe_refits_on_train_and_validation_for_the_epochs_validation_chose(source, monkeypatch):
    from tlcli.runs.metrics import Metrics

    pinned = {"l2": 0.001, "early_stopping": {"patience": 3}}
    held = train(
        load_config(defaults(source, "recipe-held-out", train=pinned))
    )  # refit: auto, nothing chosen: no refit
    raw = defaults(source, "recipe-refit", train={**pinned, "refit": True})
    refitted = train(load_config(raw))
    assert held.metrics.refit is None and held.metrics.figures["val"].startswith("selection")
    record = Metrics.read(refitted.run_dir).refit
    assert (
        record["how"] == "recipe" and record["epochs"] == held.metrics.best["epoch"] == refitted.metrics.best["epoch"]
    )
    assert record["images"] == refitted.metrics.images["train"] + refitted.metrics.images["val"]
    assert refitted.metrics.figures["val"].startswith("in-sample") and refitted.metrics.figures["test"] == "untouched"
    untimed = [
        [{k: v for k, v in row.items() if k != "seconds"} for row in history(r.run_dir)] for r in (refitted, held)
    ]
    assert untimed[0] == untimed[1]  # the same epochs chose the count; the refit is not an epoch of the run
    assert refitted.metrics.final["val_loss"] < held.metrics.final["val_loss"]  # it has learned the validation images

    # Killed before the refit: the resumed run refits from the head as built, to the same model.
    run_dir = interrupted_after_epoch_2(source, monkeypatch, {**raw, "name": "recipe-killed"})
    resumed = resume(run_dir)
    assert resumed.metrics.refit["epochs"] == record["epochs"]
    assert resumed.metrics.final == pytest.approx(refitted.metrics.final, abs=1e-6)

    # A recipe the refit cannot replay (fine-tuning) says so and keeps validation held out.
    tuned = train(
        load_config(
            defaults(
                source,
                "recipe-fine-tuned",
                train={"l2": 0.001, "epochs": 2, "refit": True},
                fine_tune={"unfreeze": 4, "epochs": 1, "when": "always"},
            )
        )
    )
    assert tuned.metrics.refit is None and tuned.metrics.figures["val"].startswith("selection")
