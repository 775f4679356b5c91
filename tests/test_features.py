"""Frozen-feature caching: same results as training the full model, invalidated by any change."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_config, write_image

from tlcli import load_config, train
from tlcli.features.store import cache_entries, clear_cache


def source_run(tmp_path, image_folder):
    """A base with learned weights (an earlier run), so freezing it is meaningful."""
    return train(load_config(tiny_config(image_folder, tmp_path / "runs", name="source", train={"epochs": 1})))


def target_config(image_folder, runs_dir, **sections):
    raw = tiny_config(image_folder, runs_dir, name="target", **sections)
    raw["base"] = {"run": "source", "trainable": "none"}
    raw["head"] = {"dropout": 0.0, **raw.get("head", {})}
    return raw


def predictions(run_dir, x):
    import keras

    return keras.models.load_model(run_dir / "model.keras").predict(x, verbose=0)


@pytest.fixture
def probe():
    return np.random.default_rng(0).uniform(0, 255, (6, 16, 16, 3)).astype("float32")


def test_cached_and_uncached_runs_give_the_same_model(tmp_path, image_folder, probe):
    source_run(tmp_path, image_folder)
    runs_dir = tmp_path / "runs"
    cached = train(load_config(target_config(image_folder, runs_dir, head={"dropout": 0.3})))
    uncached = train(load_config(target_config(image_folder, runs_dir, head={"dropout": 0.3}, cache="off")))
    assert cached.metrics.cache.mode == "features" and cached.metrics.cache.cut == "pool"
    assert uncached.metrics.cache.mode == "images"
    np.testing.assert_allclose(
        predictions(cached.run_dir, probe), predictions(uncached.run_dir, probe), rtol=1e-4, atol=1e-5
    )
    assert cached.metrics.final["val_accuracy"] == pytest.approx(uncached.metrics.final["val_accuracy"])
    assert cached.metrics.final["val_loss"] == pytest.approx(uncached.metrics.final["val_loss"], rel=1e-4)


def test_fine_tuning_the_top_layers_trains_on_features_below_the_cut(tmp_path, image_folder, probe):
    source_run(tmp_path, image_folder)
    runs_dir = tmp_path / "runs"
    # `always`: this head is perfect on validation, and `when: auto` would skip the phase under test.
    fine_tune = {"unfreeze": 4, "epochs": 2, "learning_rate": 0.001, "when": "always"}
    cached = train(load_config(target_config(image_folder, runs_dir, fine_tune=fine_tune)))
    uncached = train(load_config(target_config(image_folder, runs_dir, fine_tune=fine_tune, cache="off")))
    assert cached.metrics.cache.cut.startswith("layer:")
    np.testing.assert_allclose(
        predictions(cached.run_dir, probe), predictions(uncached.run_dir, probe), rtol=1e-3, atol=1e-4
    )
    with open(cached.run_dir / "history.csv") as stream:
        assert sum(1 for line in stream) == 1 + 4


def test_features_kept_on_disk_train_the_model_features_in_memory_train(tmp_path, image_folder, probe, monkeypatch):
    """Above `IN_MEMORY_MAX_BYTES` a split's features live in a `RowFile`, read a call's batches at a time (here one
    batch a call, where the array in memory runs a whole epoch in one call): the same batches, the same model."""
    from tlcli.features.rows import RowFile
    from tlcli.training import fit_in_memory, inputs, passes

    source_run(tmp_path, image_folder)
    runs_dir = tmp_path / "runs"
    fine_tune = {"unfreeze": 4, "epochs": 2, "learning_rate": 0.001, "when": "always"}
    in_memory = train(load_config(target_config(image_folder, runs_dir, fine_tune=fine_tune)))
    held = []
    monkeypatch.setattr(passes, "IN_MEMORY_MAX_BYTES", 0)  # every split's features on disk
    monkeypatch.setattr(fit_in_memory, "CALL_MAX_BYTES", 1)  # one batch read and trained per call
    monkeypatch.setattr(inputs.FeatureInputs, "_compute", _recording(inputs.FeatureInputs._compute, held))
    on_disk = train(load_config(target_config(image_folder, runs_dir, fine_tune=fine_tune)))
    assert on_disk.metrics.cache.cut.startswith("layer:") and on_disk.metrics.cache.hits > 0
    assert any(isinstance(features, RowFile) for features in held)
    assert on_disk.metrics.final == in_memory.metrics.final
    np.testing.assert_array_equal(predictions(on_disk.run_dir, probe), predictions(in_memory.run_dir, probe))


def _recording(compute, held: list):
    def recorded(self, cut, split, flipped):
        source = self._split(split)
        held.append(source.flipped if flipped else source.features)
        return compute(self, cut, split, flipped)

    return recorded


def test_fine_tuning_through_skip_connections_on_cached_features_gives_the_uncached_model(tmp_path, image_folder):
    """MobileNetV2's requested cut (the last 12 layers) falls inside a residual block: the cached phase cuts at the
    block boundary below it and trains the same model as the full model on images."""
    raw = tiny_config(
        image_folder,
        tmp_path / "runs",
        data={"image_size": 32},
        base={"name": "MobileNetV2", "weights": "none", "trainable": "none", "args": {"alpha": 0.35}},
        fine_tune={"unfreeze": 12, "epochs": 2, "learning_rate": 0.01, "when": "always"},
    )
    cached = train(load_config(raw))
    uncached = train(load_config({**raw, "cache": "off"}))
    assert cached.metrics.cache.cut == "layer:block_14_add" and uncached.metrics.cache.mode == "images"
    x = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(predictions(cached.run_dir, x), predictions(uncached.run_dir, x), atol=1e-4)


@pytest.mark.parametrize("mode", ["horizontal", "horizontal_and_vertical"])
def test_flips_on_features_train_the_model_flipped_images_train(tmp_path, image_folder, probe, mode):
    """RandomFlip's own draws pick each image's features or its flipped copy's: the run on images, without the base
    every epoch."""
    source_run(tmp_path, image_folder)
    runs_dir = tmp_path / "runs"
    flip = {"augment": {"flip": mode}}
    cached = train(
        load_config(target_config(image_folder, runs_dir, data=flip, head={"dropout": 0.3}, train={"epochs": 4}))
    )
    on_images = train(
        load_config(
            target_config(
                image_folder,
                runs_dir,
                data={"augment": {"flip": mode, "flip_features": False}},
                head={"dropout": 0.3},
                train={"epochs": 4},
            )
        )
    )
    plain = train(load_config(target_config(image_folder, runs_dir, head={"dropout": 0.3}, train={"epochs": 4})))
    assert cached.metrics.cache.mode == "features" and on_images.metrics.cache.mode == "images"
    np.testing.assert_allclose(
        predictions(cached.run_dir, probe), predictions(on_images.run_dir, probe), rtol=1e-4, atol=1e-5
    )
    assert cached.metrics.final == pytest.approx(on_images.metrics.final, rel=1e-4)
    # The flips did something: without them the same run ends elsewhere.
    assert not np.allclose(predictions(cached.run_dir, probe), predictions(plain.run_dir, probe), rtol=1e-4, atol=1e-5)
    again = train(
        load_config(target_config(image_folder, runs_dir, data=flip, head={"dropout": 0.3}, train={"epochs": 4}))
    )
    assert again.metrics.cache.extracted == 0  # both copies of every image come from the cache
    np.testing.assert_allclose(predictions(again.run_dir, probe), predictions(cached.run_dir, probe), rtol=1e-6)


def test_flips_with_fine_tuning_above_a_layer_cut(tmp_path, image_folder, probe):
    source_run(tmp_path, image_folder)
    runs_dir = tmp_path / "runs"
    fine_tune = {"unfreeze": 4, "epochs": 2, "learning_rate": 0.001, "when": "always"}
    cached = train(
        load_config(target_config(image_folder, runs_dir, data={"augment": {"flip": "vertical"}}, fine_tune=fine_tune))
    )
    on_images = train(
        load_config(
            target_config(
                image_folder,
                runs_dir,
                data={"augment": {"flip": "vertical", "flip_features": False}},
                fine_tune=fine_tune,
            )
        )
    )
    assert cached.metrics.cache.cut.startswith("layer:") and on_images.metrics.cache.mode == "images"
    np.testing.assert_allclose(
        predictions(cached.run_dir, probe), predictions(on_images.run_dir, probe), rtol=1e-3, atol=1e-4
    )


def test_second_run_hits_the_cache_and_changes_invalidate_it(tmp_path, image_folder):
    source_run(tmp_path, image_folder)
    runs_dir = tmp_path / "runs"
    first = train(load_config(target_config(image_folder, runs_dir)))
    total = first.metrics.images["train"] + first.metrics.images["val"]
    assert first.metrics.cache.hits == 0 and first.metrics.cache.extracted == total

    second = train(load_config(target_config(image_folder, runs_dir)))
    assert second.metrics.cache.hits == total and second.metrics.cache.extracted == 0
    assert second.metrics.cache.key == first.metrics.cache.key
    assert second.metrics.final == first.metrics.final

    # Changing one image recomputes just that image.
    changed = sorted((image_folder / "cats").iterdir())[0]
    write_image(changed, np.full((16, 16, 3), 7, dtype=np.uint8))
    third = train(load_config(target_config(image_folder, runs_dir)))
    assert third.metrics.cache.extracted == 1

    # Another image size is another model key: nothing is reused.
    resized = target_config(image_folder, runs_dir)
    resized["data"]["image_size"] = 20
    resized["base"] = {"name": "SmallCNN", "weights": "none", "trainable": "none", "args": {"filters": 8, "blocks": 2}}
    other = train(load_config(resized))
    assert other.metrics.cache.hits == 0


def test_a_damaged_pack_is_recomputed_not_fatal(tmp_path, image_folder):
    source_run(tmp_path, image_folder)
    runs_dir = tmp_path / "runs"
    first = train(load_config(target_config(image_folder, runs_dir)))
    packs = sorted(_packs(first))
    assert packs, "features are stored in packs"
    with open(packs[0], "r+b") as stream:  # a pack cut short, as a crash of the disk might leave it
        stream.truncate(stream.seek(0, 2) // 2)
    lost = len(packs[0].with_suffix(".txt").read_text().split()) - 1  # the listing's first line is the pack's checksum
    second = train(load_config(target_config(image_folder, runs_dir)))
    assert second.metrics.cache.extracted == lost and second.metrics.cache.hits == first.metrics.cache.extracted - lost
    assert second.metrics.final == first.metrics.final
    third = train(load_config(target_config(image_folder, runs_dir)))
    assert third.metrics.cache.extracted == 0


def test_packs_are_bounded_in_bytes_and_a_run_read_from_many_packs_is_the_same_run(tmp_path, image_folder, monkeypatch):
    from tlcli.features import store as feature_store

    source_run(tmp_path, image_folder)
    runs_dir = tmp_path / "runs"
    first = train(load_config(target_config(image_folder, runs_dir)))
    row_bytes = np.load(next(iter(_packs(first))), mmap_mode="r")[0].nbytes
    monkeypatch.setattr(feature_store, "PACK_BYTES", 2 * row_bytes)  # two rows a pack: many packs, one partial
    clear_cache()
    cold = train(load_config(target_config(image_folder, runs_dir)))
    rows = sorted(np.load(pack, mmap_mode="r").shape[0] for pack in _packs(cold))
    assert max(rows) == 2 and sum(rows) == cold.metrics.cache.extracted and len(rows) > 2
    warm = train(load_config(target_config(image_folder, runs_dir)))
    assert warm.metrics.cache.hits == cold.metrics.cache.extracted and warm.metrics.cache.extracted == 0
    assert warm.metrics.final == cold.metrics.final == first.metrics.final


def test_a_store_index_names_rows_on_disk_and_reads_them_back_exactly(tmp_path):
    from tlcli.features.store import FeatureStore, Pack

    values = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
    store = FeatureStore("key", {"key": "key"}, root=tmp_path)
    for row, value in enumerate(values):
        store.add(f"{row:064x}", value)
    store.finish(None)
    index = FeatureStore("key", {"key": "key"}, root=tmp_path).index((3, 4))
    assert all(isinstance(pack, Pack) for pack, _ in index.values())  # no array is held by the index
    pack, _ = index[f"{0:064x}"]
    order = [index[f"{row:064x}"][1] for row in (4, 0, 2)]
    np.testing.assert_array_equal(pack.take(order), values[[4, 0, 2]])


def _packs(result):
    from pathlib import Path

    return Path(result.metrics.cache.folder).glob("packs/*.npy")


def test_other_weights_do_not_reuse_features(tmp_path, image_folder):
    runs_dir = tmp_path / "runs"
    raw = tiny_config(image_folder, runs_dir, name="frozen-random")
    raw["base"] = {"name": "SmallCNN", "weights": "none", "trainable": "none", "args": {"filters": 8, "blocks": 2}}
    first = train(load_config({**raw, "seed": 1}))
    second = train(load_config({**raw, "seed": 2}))  # another random init = other weights
    assert first.metrics.cache.extracted > 0 and second.metrics.cache.hits == 0
    assert first.metrics.cache.key != second.metrics.cache.key
    again = train(load_config({**raw, "seed": 1}))
    assert again.metrics.cache.hits == first.metrics.cache.extracted


def test_augmentation_and_skip_connections_fall_back_to_images(tmp_path, image_folder):
    runs_dir = tmp_path / "runs"
    source_run(tmp_path, image_folder)
    augmented = train(
        load_config(target_config(image_folder, runs_dir, data={"augment": {"flip": "horizontal", "rotation": 0.1}}))
    )
    assert augmented.metrics.cache.mode == "images"  # a rotation has no finite set of outcomes to precompute
    from tlcli.features import find_cut
    from tlcli.modeling.build import build_model

    model, _ = build_model(
        load_config({"data": {"dir": "x", "image_size": 32}, "base": {"name": "ResNet50", "weights": "none"}}), 2
    )
    cut, why = find_cut(model, 5, "fine_tune.unfreeze")  # inside conv5_block3: cut at the block boundary below
    assert cut.name == "conv5_block2_out" and "block boundary" in why and "skip connections" in why
    cut, why = find_cut(model, "all", "fine_tune.unfreeze")
    assert cut is None and why == "the whole base trains"
    cut, _ = find_cut(model, "none", "base.trainable")
    assert cut is not None and cut.kind == "pool"


def test_cache_lives_in_tlcli_cache_dir_and_can_be_cleared(tmp_path, image_folder, monkeypatch):
    cache_dir = tmp_path / "my-cache"
    monkeypatch.setenv("TLCLI_CACHE_DIR", str(cache_dir))
    raw = tiny_config(image_folder, tmp_path / "runs")
    raw["base"] = {"name": "SmallCNN", "weights": "none", "trainable": "none", "args": {"filters": 8, "blocks": 2}}
    result = train(load_config(raw))
    assert result.metrics.cache.folder.startswith(str(cache_dir))
    entries = cache_entries()
    assert len(entries) == 1 and entries[0].files == result.metrics.cache.extracted
    meta = json.loads((cache_dir / "features" / entries[0].key / "meta.json").read_text())
    assert meta["base"] == "SmallCNN" and meta["image_size"] == [16, 16]
    assert clear_cache() > 0 and cache_entries() == []


def test_size_cap_evicts_least_recently_used(tmp_path, image_folder, monkeypatch):
    import time

    from tlcli.features.store import FeatureStore, enforce_cap

    for index in range(3):
        store = FeatureStore(f"key{index}", {"n": index})
        store.add("ab" * 32, np.zeros(50_000, dtype=np.float32))
        store.finish(None)
        time.sleep(0.01)
    monkeypatch.setenv("TLCLI_CACHE_MAX_GB", str(250_000 / 1024**3))  # room for one of the three 200 kB entries
    removed = enforce_cap()
    assert removed == ["key0", "key1"]
    assert [e.key for e in cache_entries()] == ["key2"]


def test_a_store_with_its_own_root_caps_that_root_and_leaves_the_default_cache_alone(tmp_path, monkeypatch):
    from tlcli.features.store import FeatureStore

    def store_one(key: str, root=None) -> None:
        store = FeatureStore(key, {"key": key}, root=root)
        store.add("ab" * 32, np.zeros(50_000, dtype=np.float32))
        store.finish(None)

    for key in ("default0", "default1"):  # in $TLCLI_CACHE_DIR, as every run's store
        store_one(key)
    monkeypatch.setenv("TLCLI_CACHE_MAX_GB", str(250_000 / 1024**3))  # room for one of these 200 kB entries
    own = tmp_path / "own-root"
    for key in ("own0", "own1"):
        store_one(key, root=own)
    assert [e.key for e in cache_entries(own)] == ["own1"]  # its own root is kept under the cap
    assert sorted(e.key for e in cache_entries()) == ["default0", "default1"]  # not its cache: untouched


def test_augmented_phase_validates_on_features_with_the_same_figures(tmp_path, image_folder):
    source_run(tmp_path, image_folder)
    runs_dir = tmp_path / "runs"
    augment = {"augment": {"flip": "horizontal", "contrast": 0.2}}
    on_features = train(load_config(target_config(image_folder, runs_dir, data=augment)))
    on_images = train(load_config(target_config(image_folder, runs_dir, data=augment, cache="off")))
    assert on_features.metrics.cache.mode == "images"  # training itself needs the images
    import csv

    def val_columns(run):
        with open(run.run_dir / "history.csv") as stream:
            return [(float(r["val_loss"]), float(r["val_accuracy"])) for r in csv.DictReader(stream)]

    np.testing.assert_allclose(val_columns(on_features), val_columns(on_images), rtol=1e-4, atol=1e-5)
    assert on_features.metrics.final["val_accuracy"] == pytest.approx(on_images.metrics.final["val_accuracy"])
