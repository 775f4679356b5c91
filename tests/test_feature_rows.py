"""Features kept on disk (`tlcli.features.rows`): a `RowFile` reads and writes as the array it stands in for."""

from __future__ import annotations

import numpy as np
import pytest

from tlcli.features.rows import RowFile, new_rows


@pytest.fixture
def values():
    return np.random.default_rng(0).normal(size=(7, 3, 4)).astype(np.float32)


@pytest.fixture
def rows(values, tmp_path):
    stored = RowFile(len(values), values.shape[1:], folder=tmp_path / "rows")
    for index, value in enumerate(values):
        stored[index] = value
    return stored


def test_a_row_file_reads_back_what_was_written_as_an_array_would(rows, values):
    assert (len(rows), rows.shape, rows.ndim, rows.dtype, rows.nbytes) == (7, (7, 3, 4), 3, np.float32, values.nbytes)
    np.testing.assert_array_equal(rows[2:5], values[2:5])
    np.testing.assert_array_equal(rows[::3], values[::3])
    np.testing.assert_array_equal(rows[-1], values[-1])
    order = np.array([6, 0, 6, 3])  # unsorted, repeated: a shuffled batch
    np.testing.assert_array_equal(rows[order], values[order])
    np.testing.assert_array_equal(rows[values[:, 0, 0] > 0], values[values[:, 0, 0] > 0])
    np.testing.assert_array_equal(np.asarray(rows), values)
    np.testing.assert_array_equal(rows[5:], values[5:])
    assert rows[9:].shape == (0, 3, 4)


def test_a_row_file_keeps_chosen_rows_in_a_new_file_and_refuses_what_an_array_would(rows, values):
    np.testing.assert_array_equal(np.asarray(rows.take([4, 1])), values[[4, 1]])
    with pytest.raises(IndexError):
        rows[np.array([7])]
    with pytest.raises(ValueError):
        rows[0] = np.zeros((4, 3), dtype=np.float32)


def test_the_file_has_no_name_so_nothing_is_left_behind(rows, tmp_path):
    assert list((tmp_path / "rows").iterdir()) == []


def test_new_rows_keeps_what_fits_in_memory_and_the_rest_on_disk(tmp_path):
    assert isinstance(new_rows(10, (4,), tmp_path, max_bytes=160), np.ndarray)  # 10 x 4 float32: 160 bytes
    assert isinstance(new_rows(10, (4,), tmp_path, max_bytes=159), RowFile)
    assert isinstance(new_rows(10, (4,), tmp_path, max_bytes=None), np.ndarray)


def test_batches_streamed_from_a_row_file_are_the_batches_of_the_array_in_the_graph(rows, values, monkeypatch):
    from tlcli.data import batches as batching

    labels = np.arange(7) % 2

    def batches(inputs):
        dataset = batching.array_batches(inputs, labels, batch_size=3, num_classes=2, shuffle=True, seed=5)
        return [x.numpy() for _ in range(2) for x, _ in dataset]  # two epochs, each in its own order

    reference = batches(values)  # small: batched inside the tf.data graph
    monkeypatch.setattr(batching, "IN_GRAPH_MAX_BYTES", 0)  # as a large RowFile is: streamed by a generator
    for ours, theirs in zip(batches(rows), reference, strict=True):
        np.testing.assert_array_equal(ours, theirs)
