"""Embeddings of every listed image, through the same feature cache training uses.

An embedding is the head's pooled base output (`Cut("pool")`) of the model a config builds, so the cache key
(`tlcli.features.store.describe_features`) is the one `tlcli train` computes for the same base, weights, image size
and pooling: `check --deep` then `train` (or the reverse) extracts each image once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlcli.config.schema import DataConfig, ExperimentConfig
from tlcli.data.splits import DataSplits
from tlcli.errors import ConfigError, UserError
from tlcli.features.cut import Cut, extractor_for
from tlcli.features.extract import FeatureSpec, extract_features
from tlcli.features.store import probe_cache, store_for
from tlcli.modeling.build import build_model
from tlcli.paths import keras_weights_dir
from tlcli.progress import Reporter

DEFAULT_BASE = "MobileNetV2"  # the base the near-duplicate thresholds are calibrated on (benchmarks/trust_calibrate.py)
DEFAULT_WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
DEFAULT_SIZE = (224, 224)
EMBED_BATCH = 64


@dataclass(frozen=True)
class SplitEmbeddings:
    """One split's decodable images: their paths, labels and float32 embeddings (row i is paths[i])."""

    name: str
    paths: tuple[str, ...]
    labels: np.ndarray  # (n,) class indices (multi-label: (n, classes) 0/1)
    features: np.ndarray  # (n, dim) float32
    skipped: tuple[str, ...] = ()  # files that could not be decoded
    groups: tuple[str | None, ...] = ()  # each row's `data.group` group (None: none); empty without data.group

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class Embeddings:
    """Every split's embeddings, the base that made them, and what the feature cache saved."""

    base: str
    image_size: tuple[int, int]
    class_names: tuple[str, ...]
    splits: tuple[SplitEmbeddings, ...]
    hits: int  # images whose features came from the cache
    extracted: int  # images run through the base
    seconds: float
    cache_key: str | None = None  # None: the disk cache could not be used (features stayed in memory)
    multi_label: bool = False

    @property
    def images(self) -> int:
        return sum(len(s) for s in self.splits)

    def split(self, name: str) -> SplitEmbeddings | None:
        return next((s for s in self.splits if s.name == name), None)


def default_weights_present() -> bool:
    """MobileNetV2's ImageNet weights are in the Keras cache (checked by name: nothing is downloaded)."""
    return (keras_weights_dir() / DEFAULT_WEIGHTS_FILE).is_file()


def embedding_config(data: DataConfig, *, base: str | None = None, config: ExperimentConfig | None = None):
    """The config whose model embeds the images: `base` (ImageNet weights, at the data's image size), else the
    config's base, else MobileNetV2 at 224 px when its weights are in the Keras cache.

    Raises:
        UserError: no base given and MobileNetV2's weights are not in the Keras cache.
        ConfigError: the config's base has random weights (`weights: none`) or is an earlier run's (`base.run`).
    """
    head = {"pooling": "avg"}  # the embedding is the average-pooled base output, whatever the head trains on
    if base is not None:
        return ExperimentConfig(data=data, base={"name": base, "weights": "imagenet"}, head=head)
    if config is not None:
        if config.base.run:
            raise ConfigError("base.run", "check --deep embeds with a keras.applications base; pass --base NAME")
        if config.base.weights == "none":
            raise ConfigError(
                "base.weights",
                "none: random features say nothing about duplicates or labels; use pretrained weights or --base NAME",
            )
        return config.model_copy(update={"data": data, "head": config.head.model_copy(update=head)})
    if not default_weights_present():
        raise UserError(
            f"the default base {DEFAULT_BASE} needs its ImageNet weights ({DEFAULT_WEIGHTS_FILE}) in "
            f"{keras_weights_dir()}; import them with `tlcli weights import FILE`, or pass base (a base whose "
            "weights you have) or a config"
        )
    data = data.model_copy(update={"image_size": DEFAULT_SIZE})
    return ExperimentConfig(data=data, base={"name": DEFAULT_BASE, "weights": "imagenet"}, head=head)


def embed_splits(
    splits: DataSplits,
    config: ExperimentConfig,
    *,
    reporter: Reporter | None = None,
    use_cache: bool = True,
) -> Embeddings:
    """Embed every listed image of `splits` with `config`'s base (from the feature cache where it has them).

    Raises:
        ConfigError: the base cannot be built (unknown name, missing weights, an image size it cannot take).
    """
    reporter = reporter or Reporter()
    model, info = build_model(config, len(splits.class_names))
    cut = Cut("pool")
    extractor = extractor_for(model, cut)
    store = store_for(config, info, model, cut) if use_cache and probe_cache() is None else None
    spec = FeatureSpec(
        config.data.image_size,
        info.channels,
        len(splits.class_names),
        batch_size=EMBED_BATCH,
        max_bytes=config.data.max_bytes,
    )
    embedded = []
    hits = extracted = 0
    seconds = 0.0
    for split, samples in splits.listed():
        with reporter.task(f"embedding {split}", len(samples)) as advance:
            found = extract_features(samples, extractor, store, spec, progress=advance)
        hits, extracted, seconds = hits + found.hits, extracted + found.extracted, seconds + found.seconds
        embedded.append(
            SplitEmbeddings(
                split,
                tuple(str(s.path) for s in found.samples),
                found.labels,
                np.ascontiguousarray(found.features.reshape(len(found.samples), -1), dtype=np.float32),
                tuple(str(s.path) for s in found.skipped),
                tuple(s.group for s in found.samples) if config.data.group is not None else (),
            )
        )
    if store is not None:
        store.finish(seconds / extracted if extracted else None)
        for problem in store.problems:
            reporter.warn(problem)
    return Embeddings(
        info.base_name,
        tuple(config.data.image_size),
        tuple(splits.class_names),
        tuple(embedded),
        hits,
        extracted,
        round(seconds, 3),
        store.key if store is not None else None,
        splits.multi_label,
    )


def relative_to(path: str, root: Path) -> str:
    """`path` relative to `root` when it is under it (what reports show), else as given."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path
