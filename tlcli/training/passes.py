"""Training's single pass over the files, and what it records in the run folder.

When every phase can train on frozen features, the pass extracts them (from
the feature cache where it has them); else it decodes the images once and
keeps them. Either way it is also the screening pass: the files it skips and
the problems `tlcli check` would report come from it, without a second pass.
"""

from __future__ import annotations

from pathlib import Path

from tlcli.data.decoded import DecodedImages, ScreenedSplit, decode_samples
from tlcli.data.problems import find_problems, unusable_reason
from tlcli.errors import DataError, UnusableData
from tlcli.features.cut import Cut, extractor_for
from tlcli.features.extract import FeatureSet, FeatureSpec, extract_features
from tlcli.features.rows import IN_MEMORY_MAX_BYTES, ROWS_FOLDER
from tlcli.features.store import store_for
from tlcli.progress import Reporter
from tlcli.runs.atomic import write_json_atomic
from tlcli.runs.metrics import CacheUse
from tlcli.runs.provenance import class_counts, write_dataset_record
from tlcli.training.distributed import gather_feature_sets, worker_share
from tlcli.training.phases import flip_mode
from tlcli.training.prepare import Prepared
from tlcli.training.records import Splits

EXTRACTION_BATCH = 64


def extract_splits(prepared: Prepared, cut: Cut, reporter: Reporter) -> tuple[dict[str, FeatureSet], CacheUse]:
    """Frozen features of every split at `cut`, from the feature cache where it has them."""
    config = prepared.config
    extractor = extractor_for(prepared.model, cut)
    store = store_for(config, prepared.info, prepared.model, cut) if prepared.disk_cache else None
    sets = {}
    worker, workers = worker_share(prepared.strategy)
    for split, listed in prepared.splits.listed():
        samples = listed[worker::workers]  # several workers: each extracts its share, then they exchange them
        with reporter.task(f"features {split}", len(samples)) as advance:
            flip = flip_mode(config) if split == "train" else None
            spec = FeatureSpec.of(
                config.data,
                prepared.info.channels,
                prepared.num_classes,
                batch_size=EXTRACTION_BATCH,
                flip=flip,
                # Without a disk cache (`cache: memory`, or a folder that cannot be used) features stay in memory.
                in_memory_max_bytes=None if store is None else IN_MEMORY_MAX_BYTES,
                rows_folder=None if store is None else store.root / ROWS_FOLDER,
            )
            sets[split] = extract_features(samples, extractor, store, spec, progress=advance)
        if workers > 1:
            sets[split] = gather_feature_sets(prepared.strategy, sets[split], listed, prepared.num_classes)
    return sets, _cache_use(sets, cut, store, reporter)


def _cache_use(sets: dict[str, FeatureSet], cut: Cut, store, reporter: Reporter) -> CacheUse:
    """What the extraction took from the cache and computed (the store, if any, finished and its problems told)."""
    hits = sum(s.hits for s in sets.values())
    extracted = sum(s.extracted for s in sets.values())
    seconds = sum(s.seconds for s in sets.values())
    use = CacheUse("features", cut=cut.label, hits=hits, extracted=extracted, seconds=round(seconds, 3))
    if store is not None:
        per_image = store.seconds_per_image()
        use.key, use.folder = store.key, str(store.folder)
        use.saved_s = round(hits * per_image, 1) if per_image and hits else 0.0
        store.finish(seconds / extracted if extracted else None)
        use.damaged_packs = store.damaged
        if store.damaged:
            reporter.warn(
                f"the feature cache had {store.damaged} damaged pack{'s' if store.damaged > 1 else ''} "
                "(failed the checksum); dropped, and their images recomputed"
            )
        for problem in store.problems:
            reporter.warn(problem)
    reporter.info(
        f"features ({cut.label}): {hits} from cache, {extracted} computed in {seconds:.1f} s"
        + (f", about {use.saved_s:.0f} s saved" if use.saved_s else "")
    )
    return use


def decode_splits(prepared: Prepared, reporter: Reporter) -> dict[str, DecodedImages]:
    config = prepared.config
    decoded = {}
    for split, samples in prepared.splits.listed():
        with reporter.task(f"decoding {split}", len(samples)) as advance:
            decoded[split] = decode_samples(
                samples,
                config.data.image_size,
                prepared.info.channels,
                on_bad_file=config.data.on_bad_file,
                progress=advance,
                max_bytes=config.data.max_bytes,
                num_classes=prepared.num_classes,
            )
    return decoded


def record_pass(
    run_dir: Path, prepared: Prepared, splits: Splits[ScreenedSplit], reporter: Reporter, *, strict: bool
) -> list[dict[str, str]]:
    """Write what the pass found (skipped_files.json, data_problems.json, dataset.json); returns the skipped files.

    Raises:
        DataError: `strict` is on and the data has problems.
        UnusableData: a class has no readable training image, or validation none at all.
    """
    sets = splits.as_dict()
    skipped = [
        {"path": s.path, "reason": s.reason, "split": split} for split, kept in sets.items() for s in kept.skipped
    ]
    write_json_atomic(run_dir / "skipped_files.json", skipped)
    if skipped:
        reporter.warn(
            f"skipped {len(skipped)} unreadable file{'s' if len(skipped) > 1 else ''} (listed in skipped_files.json), "
            f"e.g. {skipped[0]['path']}: {skipped[0]['reason']}"
        )
    problems = find_problems(prepared.splits, sets)  # duplicates and leakage, from this same pass
    write_json_atomic(run_dir / "data_problems.json", problems.to_dict())
    for line in problems.warnings():
        reporter.warn(line)
    if strict and problems.count:
        raise DataError(
            f"--strict: the data has problems ({problems.summary()}); they are listed in "
            f"{run_dir / 'data_problems.json'}; fix them (see `tlcli check`) or train without --strict"
        )
    write_dataset_record(run_dir, prepared.splits, sets)
    names = prepared.splits.class_names
    reason = unusable_reason(class_counts(splits.train.labels, names), len(splits.val))
    if reason is not None:
        raise UnusableData(
            f"{reason} (the unreadable files are listed by `tlcli check {prepared.splits.sources['train']}`)"
        )
    return skipped
