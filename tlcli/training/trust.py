"""The run's data-trust step: near-duplicate leakage and label suspects, from the features the pass cached.

It asks the base's pooled features (pretrained weights, before any fitting: the features the probe and the head
use anyway) what `tlcli check --deep` asks them (`tlcli.audit`), so it costs a blockwise similarity search,
thumbnails of the candidate pairs and five probe fits, never a pass over the images. `data.leakage` and
`data.label_suspects` turn its parts off; `data.leakage: error` stops the run before fitting. data_trust.json
holds what it found; metrics.json and the summary its counts.

Its result depends only on the features and what `_depends_on` lists (the files, labels and splits, the settings and
`tlcli.audit.audit_fingerprint()`), so it is kept in the feature cache beside the features (`DerivedResult`): a run on
the same data, base and settings reads it (metrics.json `data_trust.cached`) and writes the same data_trust.json; a
change to any of them, or a damaged entry, computes it again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlcli.audit import AuditReport, Embeddings, SplitEmbeddings, audit_embeddings, audit_fingerprint
from tlcli.data.decoded import ScreenedSplit
from tlcli.errors import DataError
from tlcli.features.cut import Cut
from tlcli.features.derived import DerivedResult
from tlcli.features.store import store_for
from tlcli.progress import Reporter
from tlcli.runs.atomic import write_json_atomic
from tlcli.runs.folder import TRUST_FILE
from tlcli.runs.metrics import CacheUse
from tlcli.training.inputs import FeatureInputs, PhaseInputs
from tlcli.training.prepare import Prepared

POOL_CUT = Cut("pool")  # after the head's pooling: the base's pooled features
TRUST_RESULT = "data_trust"  # its name in the feature cache
FOLDS = 5  # cross-validation folds of the label probe


@dataclass(frozen=True)
class DataTrust:
    """What the step found (`report`), or why it did not run (`skipped`): metrics.json's `data_trust` record."""

    report: AuditReport | None = None
    skipped: str | None = None
    seconds: float = 0.0
    cached: bool = False  # read from the feature cache, not computed

    def record(self) -> dict[str, Any]:
        if self.report is None:
            return {"skipped": self.skipped}
        near, suspects = self.report.near_duplicates, self.report.label_suspects
        return {
            "leakage": near.leakage if near is not None else None,
            "near_duplicates": len(near.confirmed) if near is not None else None,
            "label_suspects": len(suspects.suspects) if suspects is not None else None,
            "notes": list(self.report.notes),
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
            "file": TRUST_FILE,
        }


def why_not(prepared: Prepared, inputs: PhaseInputs) -> str | None:
    """Why the step cannot (or need not) run for this run, or None."""
    data, base = prepared.config.data, prepared.config.base
    if data.leakage == "off" and not data.label_suspects:
        return "data.leakage: off and data.label_suspects: false"
    if not base.pretrained:
        return "the base has random weights (weights: none): its features say nothing about duplicates or labels"
    if not isinstance(inputs, FeatureInputs):
        return "no cached features (a phase trains the whole base on images); `tlcli check --deep` searches them"
    return None


def check_trust(
    prepared: Prepared, inputs: PhaseInputs, run_dir: Path, reporter: Reporter, cache_use: CacheUse | None = None
) -> DataTrust:
    """Search the run's features (or read what a run on the same features and settings found, from the feature cache
    `cache_use` names), write data_trust.json, warn about leakage and count the suspects.

    Raises:
        DataError: near-duplicates cross the splits and `data.leakage` is `error`.
    """
    why = why_not(prepared, inputs)
    if why is not None:
        reporter.info(f"data trust: skipped ({why})")
        return DataTrust(skipped=why)
    started = time.perf_counter()
    entry = _cache_entry(prepared, inputs, cache_use) if cache_use is not None else None
    report = _read(entry) if entry is not None else None
    cached = report is not None
    if report is None:
        report = audit_embeddings(_embeddings(prepared, inputs), **_arguments(prepared))
        if entry is not None and prepared.plan.chief:
            problem = entry.write(json.dumps(report.to_dict(), default=str).encode())
            if problem is not None:
                reporter.warn(problem)
    trust = DataTrust(report, seconds=time.perf_counter() - started, cached=cached)
    if prepared.plan.chief:
        write_json_atomic(run_dir / TRUST_FILE, report.to_dict())
    _tell(trust, run_dir, reporter)
    near = report.near_duplicates
    if prepared.config.data.leakage == "error" and near is not None and near.leakage:
        raise DataError(
            f"data.leakage: error: {near.leakage} near-duplicate pair(s) cross the splits (listed in "
            f"{run_dir / TRUST_FILE}); move or remove one image of each pair, or set data.leakage: warn"
        )
    return trust


def _arguments(prepared: Prepared) -> dict[str, Any]:
    """How the step calls `audit_embeddings` (part of its cache key)."""
    data = prepared.config.data
    return {
        "near_duplicates": data.leakage != "off",
        "leakage_only": True,  # pairs inside a split leave the figures honest: `tlcli check --deep` lists them
        "label_suspects": data.label_suspects,
        "learning_curve": False,
        "folds": FOLDS,
        "seed": prepared.config.seed,
    }


def _cache_entry(prepared: Prepared, inputs: PhaseInputs, cache_use: CacheUse) -> DerivedResult | None:
    """The step's entry beside the extracted features (None: the run uses no disk cache), keyed by the pooled
    features' model key and by `_depends_on`."""
    if cache_use.key is None:
        return None
    pooled = cache_use.key
    if cache_use.cut != POOL_CUT.label:  # features of a lower cut: the pooled ones also depend on the layers above it
        pooled = store_for(prepared.config, prepared.info, prepared.model, POOL_CUT).key
    return DerivedResult.of(cache_use.key, TRUST_RESULT, _depends_on(prepared, inputs, pooled))


def _depends_on(prepared: Prepared, inputs: PhaseInputs, pooled: str) -> dict[str, Any]:
    """Everything the step's result depends on besides the pooled features (`pooled`: their model key)."""
    config = prepared.config
    return {
        "features": pooled,
        "audit": audit_fingerprint(),
        "arguments": _arguments(prepared),
        "base": prepared.info.base_name,
        "image_size": list(config.data.image_size),
        "classes": list(prepared.splits.class_names),
        "multi_label": config.multi_label,
        "splits": {name: _split_digest(kept, bool(config.data.group)) for name, kept in inputs.splits.items()},
    }


def _split_digest(kept: ScreenedSplit, grouped: bool) -> str:
    """A hash of a split's files (path and content), labels and groups, in order."""
    digest = hashlib.sha256()
    for sample, content in zip(kept.samples, kept.content_hashes, strict=True):
        digest.update(f"{sample.path}\t{content}\t{sample.group if grouped else ''}\n".encode())
    labels = np.ascontiguousarray(kept.labels)
    digest.update(f"{labels.dtype}{labels.shape}".encode() + labels.tobytes())
    return digest.hexdigest()


def _read(entry: DerivedResult) -> AuditReport | None:
    """The cached report, or None (absent, damaged, or of another format: computed again)."""
    payload = entry.read()
    if payload is None:
        return None
    try:
        return AuditReport.from_dict(json.loads(payload))
    except ValueError:  # json's errors are ValueErrors too
        return None


def _embeddings(prepared: Prepared, inputs: PhaseInputs) -> Embeddings:
    """The pooled features of every split as `tlcli.audit` takes them."""
    config = prepared.config
    parts = tuple(
        SplitEmbeddings(
            name,
            tuple(s.path for s in kept.samples),
            kept.labels,
            inputs.features(POOL_CUT, name),
            groups=tuple(s.group for s in kept.samples) if config.data.group else (),
        )
        for name, kept in inputs.splits.items()
    )
    return Embeddings(
        prepared.info.base_name,
        tuple(config.data.image_size),
        tuple(prepared.splits.class_names),
        parts,
        hits=0,
        extracted=0,
        seconds=0.0,
        multi_label=config.multi_label,
    )


def _tell(trust: DataTrust, run_dir: Path, reporter: Reporter) -> None:
    record = trust.record()
    if record["leakage"]:
        reporter.warn(
            f"{record['leakage']} near-duplicate pair(s) cross the splits (the same photo resized, recompressed, "
            f"cropped or re-exposed; listed in {TRUST_FILE}): figures on the split holding the copies are optimistic"
        )
    parts = [f"{record['near_duplicates']} near-duplicate pair(s)"] if record["near_duplicates"] is not None else []
    if record["label_suspects"] is not None:
        parts.append(f"{record['label_suspects']} label suspect(s) among train + val")
    if parts:
        shown = ", ".join(parts)
        took = "read from the feature cache" if trust.cached else f"{trust.seconds:.1f} s"
        reporter.info(f"data trust: {shown} ({TRUST_FILE}; `tlcli check --deep` draws them), {took}")
