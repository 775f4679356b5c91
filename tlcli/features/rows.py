"""Rows kept on disk: a split's features when holding them in memory would make the run's peak grow with its images.

A `RowFile` stands in for a NumPy array of rows where training reads features: slices and index arrays read
just those rows (`len`, `shape`, `dtype` and `nbytes` as an array's), so batches, validation and inference go through
it unchanged, and `numpy.asarray` still gives the whole array to code that needs one. Rows are read with plain file
reads, never mapped: a batch costs the batch, and the page cache (which the kernel gives back under pressure) does the
caching. The file has no name (deleted as it is created), so it disappears with the object or the process, even a
killed one.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np

# The features of one split (of one variant: images, or their flipped copies) kept in memory at most; above, on disk.
# 256 MB holds 2,600 images at MobileNetV2's default fine-tuning cut (28x28x32 float32, 100 KB an image), 650 at W2's
# on MobileNet 0.25 (56x56x32, 400 KB), and MobileNetV2's pooled features (5 KB) up to 50,000 images.
IN_MEMORY_MAX_BYTES = 256 * 1024**2
ROWS_FOLDER = "rows"  # under the feature cache's root: where the user gave tlcli room on disk (not a RAM-backed /tmp)


def new_rows(rows: int, shape: tuple[int, ...], folder: Path | None, max_bytes: int | None) -> np.ndarray | RowFile:
    """Float32 storage for `rows` rows of `shape`: an array when it fits in `max_bytes` (None: always), else a
    `RowFile` in `folder` (None: the system's temporary folder)."""
    row_bytes = int(np.prod(shape, dtype=np.int64)) * RowFile.dtype.itemsize
    if max_bytes is None or rows * row_bytes <= max_bytes:
        return np.empty((rows, *shape), dtype=np.float32)
    return RowFile(rows, shape, folder=folder)


class RowFile:
    """Float32 rows of one shape in an unnamed temporary file: `rows[i] = value` writes one, `rows[a:b]` and
    `rows[index_array]` read some (as a new array)."""

    dtype = np.dtype(np.float32)
    ndim: int

    def __init__(self, rows: int, shape: tuple[int, ...], folder: Path | None = None):
        self.shape = (rows, *(int(s) for s in shape))
        self.ndim = len(self.shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self._file = tempfile.TemporaryFile(dir=folder)
        self._file.truncate(rows * self.row_bytes)
        self._lock = threading.Lock()  # one file position, shared by tf.data's generator thread and the caller

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def __setitem__(self, row: int, value) -> None:
        data = np.ascontiguousarray(value, dtype=self.dtype)
        if data.shape != self.shape[1:]:
            raise ValueError(f"a row of shape {self.shape[1:]} expected, got {data.shape}")
        with self._lock:
            self._file.seek(self._offset(row))
            self._file.write(memoryview(data).cast("B"))

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._read_run(start, max(stop - start, 0))
            key = np.arange(start, stop, step)
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        index = np.asarray(key)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = np.where(index < 0, index + len(self), index).astype(np.int64).reshape(-1)
        out = np.empty((len(index), *self.shape[1:]), dtype=self.dtype)
        for position, row in enumerate(index):
            self._read_into(out[position], int(row))
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def take(self, index, folder: Path | None = None) -> RowFile:
        """These rows, in this order, as a new `RowFile` (read and written a row at a time)."""
        chosen = RowFile(len(index), self.shape[1:], folder=folder)
        for position, row in enumerate(np.asarray(index, dtype=np.int64)):
            chosen[position] = self[int(row)]
        return chosen

    def _offset(self, row: int) -> int:
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} out of range for {len(self)} rows")
        return row * self.row_bytes

    def _read_run(self, start: int, count: int) -> np.ndarray:
        out = np.empty((count, *self.shape[1:]), dtype=self.dtype)
        if count:
            with self._lock:
                self._file.seek(self._offset(start))
                self._file.readinto(memoryview(out).cast("B"))
        return out

    def _read_into(self, out: np.ndarray, row: int) -> None:
        with self._lock:
            self._file.seek(self._offset(row))
            self._file.readinto(memoryview(out).cast("B"))
