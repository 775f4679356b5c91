"""Stage 5, frozen features: where the model is cut (`cut`), extraction (`extract`), the
on-disk store with its cache-key recipe (`store`), results derived from stored features (`derived`) and a split's
features kept on disk when they are large (`rows`)."""

from tlcli.features.cut import (
    Cut,
    bridge,
    cut_bytes,
    extractor_for,
    find_cut,
    flip_pixels,
    run_in_batches,
    trainable_part,
)
from tlcli.features.derived import DerivedResult
from tlcli.features.extract import FeatureSet, FeatureSpec, extract_features
from tlcli.features.rows import RowFile
from tlcli.features.store import FeatureStore, cache_entries, clear_cache, enforce_cap, store_for

__all__ = [
    "Cut",
    "DerivedResult",
    "FeatureSet",
    "FeatureSpec",
    "FeatureStore",
    "RowFile",
    "bridge",
    "cache_entries",
    "clear_cache",
    "cut_bytes",
    "enforce_cap",
    "extract_features",
    "extractor_for",
    "find_cut",
    "flip_pixels",
    "run_in_batches",
    "store_for",
    "trainable_part",
]
