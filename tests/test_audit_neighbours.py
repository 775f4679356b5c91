"""Near-duplicates (tlcli.audit.neighbours, tlcli.audit.pixels): the blockwise search equals the all-pairs reference,
its memory is bounded, and the pixel check tells a resized, recompressed, cropped or mirrored copy from another
image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from tlcli.audit import neighbours, pixels


def planted_vectors(n: int = 700, dim: int = 48, copies: int = 60, seed: int = 0):
    """Random vectors, `copies` of them noisy copies of others, in three groups."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    source = rng.choice(n, copies, replace=False)
    target = rng.choice(np.setdiff1d(np.arange(n), source), copies, replace=False)
    x[target] = x[source] + rng.normal(scale=0.35, size=(copies, dim))
    return x, rng.integers(0, 3, n)


@pytest.mark.parametrize("block", [1, 64, 1024])
def test_the_blockwise_search_equals_the_all_pairs_reference(block):
    x, groups = planted_vectors()
    fast = neighbours.similar_pairs(x, groups, 0.8, block=block)
    slow = neighbours.brute_force_pairs(x, 0.8)
    assert len(slow[0]) >= 50  # the planted copies are found (and nothing else reaches 0.8 in 48 dimensions)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])
    np.testing.assert_allclose(fast[2], slow[2], atol=1e-5)


@pytest.mark.parametrize("block", [1, 1024])
def test_the_across_splits_search_equals_the_reference_pairs_across_groups(block):
    x, groups = planted_vectors()
    fast = neighbours.similar_pairs(x, groups, 0.8, block=block, across_only=True)
    i, j, s = neighbours.brute_force_pairs(x, 0.8)
    across = groups[i] != groups[j]
    assert 0 < across.sum() < len(i)  # some planted copies sit in another group, some in their own
    np.testing.assert_array_equal(fast[0], i[across])
    np.testing.assert_array_equal(fast[1], j[across])
    np.testing.assert_allclose(fast[2], s[across], atol=1e-5)


def test_many_alike_images_keep_a_bounded_number_of_neighbours_each():
    x = np.ones((300, 8), dtype=np.float32)  # 300 identical rows: 44,850 pairs in the all-pairs reference
    groups = np.repeat([0, 1], 150)
    i, j, s = neighbours.similar_pairs(x, groups, 0.9, per_group=4, block=50)
    assert len(i) <= 300 * 2 * 4 and len(i) >= 300 * 4 // 2
    assert np.all(i < j) and np.allclose(s, 1.0)
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i)  # each pair once
    assert neighbours.clusters_of(300, i, j) == [list(range(300))]  # still one cluster: all of them


def test_clusters_join_chains_and_leave_singletons_out():
    i, j = np.array([0, 1, 5]), np.array([1, 2, 6])
    assert neighbours.clusters_of(8, i, j) == [[0, 1, 2], [5, 6]]


def texture(seed: int, size: int = 96) -> Image.Image:
    """A photo-like image: smooth random colour blobs with some detail."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    fine = rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(coarse, dtype=float) + fine, 0, 255).astype(np.uint8))


def crop(image: Image.Image, kept: float, shift: float = 0.0) -> Image.Image:
    w, h = image.size
    x, y = w * (1 - kept) / 2 * (1 + shift), h * (1 - kept) / 2
    return image.crop((round(x), round(y), round(x + w * kept), round(y + h * kept)))


COPIES = {
    "resized": lambda im: im.resize((58, 58), Image.LANCZOS),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.15),
    "centre crop 85%": lambda im: crop(im, 0.85),
    "shifted crop 85%": lambda im: crop(im, 0.85, shift=0.6),
    "mirrored": ImageOps.mirror,
}


@pytest.mark.parametrize("name", COPIES)
def test_the_pixel_check_confirms_a_copy_and_not_another_image(tmp_path, name):
    original = tmp_path / "a.png"
    texture(1).save(original)
    copy = tmp_path / "copy.jpg"
    COPIES[name](texture(1)).save(copy, quality=40)  # recompressed too
    other = tmp_path / "other.png"
    texture(2).save(other)
    a, b, c = (pixels.grey_square(p) for p in (original, copy, other))
    assert neighbours.confirm(0.9, a, b)[1], name
    assert not neighbours.confirm(0.99, a, c)[1]


def test_plain_images_are_not_confirmed_by_their_noise(tmp_path):
    rng = np.random.default_rng(0)
    squares = [np.clip(120 + rng.normal(0, 2, (64, 64)), 0, 255).astype(np.uint8) for _ in range(2)]
    assert not pixels.textured(squares[0])
    assert not neighbours.confirm(0.999, *squares)[1]
    assert neighbours.confirm(0.9, None, squares[0]) == (-1.0, False)  # an unreadable file confirms nothing


def test_near_duplicates_across_splits_are_leakage_and_look_alikes_are_not_counted(tmp_path):
    images = {}
    for name, image in {
        "train/a.png": texture(1),
        "val/a_copy.jpg": texture(1).resize((70, 70)),
        "train/b.png": texture(2),
        "test/c.png": texture(3),
        "train/d.png": texture(4),
    }.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        image.save(path)
        images[name] = str(path)
    paths = list(images.values())
    splits = [name.split("/")[0] for name in images]
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 16)).astype(np.float32)
    features[1] = features[0] + 0.01  # the copy
    features[3] = features[2] + 0.01  # a look-alike: same embedding, other pixels
    found = neighbours.find_near_duplicates(paths, splits, features)
    assert found.leakage == 1 and len(found.confirmed) == 1
    pair = found.confirmed[0]
    assert (pair.a, pair.b, pair.split_a, pair.split_b) == (paths[0], paths[1], "train", "val")
    assert found.lookalikes == 1 and [p.confirmed for p in found.pairs] == [True, False]
    assert [c.paths for c in found.clusters] == [(paths[0], paths[1])] and found.clusters[0].cross_split
    document = found.to_dict()
    assert document["leakage"] == 1 and document["pairs"][0]["confirmed"] is True


def test_the_label_folds_keep_near_duplicates_and_groups_together():
    from tlcli.audit.api import _fold_groups
    from tlcli.audit.embed import SplitEmbeddings

    def part(name, paths, groups=()):
        return SplitEmbeddings(name, tuple(paths), np.zeros(len(paths), int), np.zeros((len(paths), 2)), (), groups)

    copy = neighbours.NearDuplicatePair("t/a", "v/a2", "train", "val", 0.9, 0.99, True)
    lookalike = neighbours.NearDuplicatePair("t/b", "t/c", "train", "train", 0.99, 0.1, False)
    near = neighbours.NearDuplicates((copy, lookalike), (), 2, 1)
    parts = [part("train", ["t/a", "t/b", "t/c", "t/d"], ("x", None, None, "x")), part("val", ["v/a2", "v/e"], ())]
    groups = _fold_groups(parts, near)
    assert groups[0] == groups[3] == groups[4]  # group x, and the copy of its first image
    assert len({groups[0], groups[1], groups[2], groups[5]}) == 4  # a look-alike is not a copy
    assert _fold_groups([part("train", ["t/b", "t/c"])], neighbours.NearDuplicates((lookalike,), (), 1, 1)) is None


def test_a_class_too_small_to_cross_validate_is_a_note_not_a_failure():
    from tlcli.audit import Embeddings, SplitEmbeddings, audit_embeddings

    train = SplitEmbeddings("train", ("a", "b", "c"), np.array([0, 0, 1]), np.eye(3, dtype=np.float32))
    embeddings = Embeddings("MobileNetV2", (224, 224), ("ants", "bees"), (train,), 0, 3, 0.0)
    report = audit_embeddings(embeddings, folds=2)
    suspects, curve, notes = report.label_suspects, report.learning_curve, report.notes
    assert suspects is None and curve is None
    assert any(n.startswith("label suspects: skipped") for n in notes)
    assert any(n.startswith("learning curve: skipped") for n in notes)


def test_each_part_of_an_audit_can_be_turned_off():
    from tlcli.audit import Embeddings, SplitEmbeddings, audit_embeddings

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 10)
    features = (rng.normal(size=(20, 8)) + labels[:, None] * 3).astype(np.float32)
    train = SplitEmbeddings("train", tuple(f"x{k}" for k in range(20)), labels, features)
    embeddings = Embeddings("MobileNetV2", (224, 224), ("ants", "bees"), (train,), 0, 20, 0.0)
    off = audit_embeddings(embeddings, near_duplicates=False, label_suspects=False, learning_curve=False, folds=2)
    assert off.near_duplicates is None and off.label_suspects is None and off.learning_curve is None
    assert off.to_dict()["near_duplicates"] is None and off.exit_code() == 0
    on = audit_embeddings(embeddings, near_duplicates=False, folds=2)
    assert on.label_suspects is not None and on.learning_curve is not None
