"""The run's data-trust step: near-duplicate leakage and label suspects, from the features the pass cached.

It asks the base's pooled features (pretrained weights, before any fitting: the features the probe and the head
use anyway) what `tlcli check --deep` asks them (`tlcli.audit`), so it costs a blockwise similarity search,
thumbnails of the candidate pairs and five probe fits, never a pass over the images. `data.leakage` and
`data.label_suspects` turn its parts off; `data.leakage: error` stops the run before fitting. data_trust.json
holds what it found; metrics.json and the summary its counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlcli.audit import AuditReport, Embeddings, SplitEmbeddings, audit_embeddings
from tlcli.errors import DataError
from tlcli.features.cut import Cut
from tlcli.progress import Reporter
from tlcli.runs.atomic import write_json_atomic
from tlcli.runs.folder import TRUST_FILE
from tlcli.training.inputs import FeatureInputs, PhaseInputs
from tlcli.training.prepare import Prepared

POOL_CUT = Cut("pool")  # after the head's pooling: the base's pooled features


@dataclass(frozen=True)
class DataTrust:
    """What the step found (`report`), or why it did not run (`skipped`): metrics.json's `data_trust` record."""

    report: AuditReport | None = None
    skipped: str | None = None
    seconds: float = 0.0

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


def check_trust(prepared: Prepared, inputs: PhaseInputs, run_dir: Path, reporter: Reporter) -> DataTrust:
    """Search the run's features, write data_trust.json, warn about leakage and count the suspects.

    Raises:
        DataError: near-duplicates cross the splits and `data.leakage` is `error`.
    """
    why = why_not(prepared, inputs)
    if why is not None:
        reporter.info(f"data trust: skipped ({why})")
        return DataTrust(skipped=why)
    started = time.perf_counter()
    data = prepared.config.data
    report = audit_embeddings(
        _embeddings(prepared, inputs),
        near_duplicates=data.leakage != "off",
        leakage_only=True,  # pairs inside a split leave the figures honest: `tlcli check --deep` lists them
        label_suspects=data.label_suspects,
        learning_curve=False,
        seed=prepared.config.seed,
    )
    trust = DataTrust(report, seconds=time.perf_counter() - started)
    if prepared.plan.chief:
        write_json_atomic(run_dir / TRUST_FILE, report.to_dict())
    _tell(trust, run_dir, reporter)
    near = report.near_duplicates
    if data.leakage == "error" and near is not None and near.leakage:
        raise DataError(
            f"data.leakage: error: {near.leakage} near-duplicate pair(s) cross the splits (listed in "
            f"{run_dir / TRUST_FILE}); move or remove one image of each pair, or set data.leakage: warn"
        )
    return trust


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
        reporter.info(f"data trust: {shown} ({TRUST_FILE}; `tlcli check --deep` draws them), {trust.seconds:.1f} s")
