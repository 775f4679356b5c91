"""Finding splits, stable hash splits, decoding once, and batches."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_image_folder, write_image

from tlcli.config import DataConfig
from tlcli.data import decode_samples, discover_splits, hash_split, make_dataset
from tlcli.errors import DataError


def test_flat_folder_is_split_by_fraction(image_folder):
    splits = discover_splits(DataConfig(dir=image_folder, val_split=0.25))
    assert splits.class_names == ["cats", "dogs"]
    assert len(splits.train) + len(splits.val) == 48
    assert 4 <= len(splits.val) <= 20
    assert "of train by file hash" in splits.sources["val"]


def test_train_val_test_folders_are_detected(tmp_path):
    root = tmp_path / "d"
    make_image_folder(root / "train", {"a": 3, "b": 3})
    make_image_folder(root / "validation", {"a": 2, "b": 2})
    make_image_folder(root / "test", {"a": 1, "b": 1})
    splits = discover_splits(DataConfig(dir=root))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 4, 2)
    assert splits.sources["val"].endswith("validation")


def test_explicit_folders_override_detection(split_folder, tmp_path):
    other = make_image_folder(tmp_path / "other", {"a": 2, "b": 2, "c": 2})
    splits = discover_splits(DataConfig(dir=split_folder, val_dir=other))
    assert len(splits.val) == 6 and splits.sources["val"] == str(other)


def test_hash_split_is_stable_when_images_are_added(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 30, "b": 30})
    before = discover_splits(DataConfig(dir=root))
    make_image_folder(tmp_path / "d", {"a": 60, "b": 60}, seed=5)  # overwrites 30, adds 30 per class
    after = discover_splits(DataConfig(dir=root))
    old_val = {s.relpath for s in before.val}
    new_val = {s.relpath for s in after.val}
    assert old_val <= new_val
    assert {s.relpath for s in before.train} <= {s.relpath for s in after.train}


def test_hash_split_fraction_is_roughly_respected():
    from pathlib import Path

    from tlcli.data import Sample

    samples = [Sample(Path(f"/x/{i}.jpg"), 0, f"c/{i}.jpg") for i in range(2000)]
    train, val = hash_split(samples, 0.2)
    assert 0.17 < len(val) / 2000 < 0.23


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"only": 3}, "only class 'only'"),
        ({}, "no class folders"),
    ],
)
def test_unusable_folders_fail_with_the_path(tmp_path, layout, message):
    root = make_image_folder(tmp_path / "d", layout)
    root.mkdir(exist_ok=True)
    with pytest.raises(DataError, match=message):
        discover_splits(DataConfig(dir=root))


def test_missing_folder_and_empty_class(tmp_path):
    with pytest.raises(DataError, match="data.dir: folder not found"):
        discover_splits(DataConfig(dir=tmp_path / "nope"))
    root = make_image_folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="class folder 'empty'"):
        discover_splits(DataConfig(dir=root))


def test_validation_class_unknown_to_training_is_an_error(split_folder):
    make_image_folder(split_folder / "val", {"zebra": 1})
    with pytest.raises(DataError, match="'zebra'"):
        discover_splits(DataConfig(dir=split_folder))


def test_nested_hidden_unicode_and_stray_files(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 2, "b b": 2})
    rng = np.random.default_rng(0)
    write_image(root / "a" / "nested" / "deeper" / "ünï cödé.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    write_image(root / "a" / ".hidden.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    (root / "a" / "notes.txt").write_text("hi")
    splits = discover_splits(DataConfig(dir=root, val_split=0.5))
    relpaths = {s.relpath for s in splits.train + splits.val}
    assert "a/nested/deeper/ünï cödé.png" in relpaths
    assert not any(".hidden" in r for r in relpaths)
    assert {reason for _, reason in splits.ignored} == {"hidden file", "not an image extension"}


def test_decode_skips_bad_files_and_keeps_order(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / "a" / "zero.jpg").write_bytes(b"")
    (root / "b" / "text.png").write_text("not an image")
    splits = discover_splits(DataConfig(dir=root, val_split=0.5))
    samples = splits.train + splits.val
    decoded = decode_samples(samples, (8, 8), 3)
    assert len(decoded) == 6
    assert decoded.images.shape == (6, 8, 8, 3) and decoded.images.dtype == np.uint8
    assert sorted(s.reason for s in decoded.skipped) == ["empty file (0 bytes)", "not an image (unrecognised content)"]
    with pytest.raises(DataError, match="zero.jpg: empty file"):
        decode_samples(samples, (8, 8), 3, on_bad_file="fail")


def test_decoded_images_spill_to_disk_above_the_memory_budget(image_folder):
    splits = discover_splits(DataConfig(dir=image_folder))
    in_memory = decode_samples(splits.train, (16, 16), 3)
    on_disk = decode_samples(splits.train, (16, 16), 3, memory_budget=1000)
    assert on_disk.on_disk and not in_memory.on_disk
    np.testing.assert_array_equal(np.asarray(on_disk.images), in_memory.images)


def test_dataset_batches_float_pixels_and_one_hot_targets(image_folder):
    splits = discover_splits(DataConfig(dir=image_folder))
    decoded = decode_samples(splits.train, (16, 16), 3)
    batches = list(make_dataset(decoded, batch_size=8, num_classes=2, shuffle=True, seed=1))
    assert sum(len(x) for x, _ in batches) == len(decoded)
    x, y = batches[0]
    assert x.dtype.name == "float32" and float(np.max(x)) > 1.0
    assert y.shape[1] == 2 and np.allclose(np.sum(y, axis=1), 1)
    binary = next(iter(make_dataset(decoded, batch_size=8, num_classes=2, binary=True)))[1]
    assert binary.shape[1] == 1


def test_shuffle_changes_per_epoch_but_is_seeded(image_folder):
    splits = discover_splits(DataConfig(dir=image_folder))
    decoded = decode_samples(splits.train, (16, 16), 3)

    def epoch_orders(seed):
        ds = make_dataset(decoded, batch_size=64, num_classes=2, shuffle=True, seed=seed)
        return [np.argmax(y, axis=1).tolist() + [float(np.sum(x))] for x, y in [next(iter(ds)), next(iter(ds))]]

    first, second = epoch_orders(7), epoch_orders(7)
    assert first == second
