"""The data-trust step's result in the feature cache (tlcli.training.trust, tlcli.features.derived) and the typed
reader of data_trust.json (`AuditReport.from_dict`, `read_audit_report`): a second run on the same data reads the
result instead of searching again and writes the same data_trust.json; another setting, or a damaged entry,
searches again. Real ImageNet weights (MobileNet 0.25 at 64 px), as tests/test_train_trust.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import blob_folder, needs_real_weights
from test_train_trust import trust_config

from tlcli.audit import (
    AuditReport,
    ClassCurve,
    DuplicateCluster,
    LearningCurve,
    NearDuplicatePair,
    NearDuplicates,
    SuspectFindings,
    SuspectRow,
    read_audit_report,
)
from tlcli.errors import RunError
from tlcli.features.derived import DerivedResult

TIMINGS = ("seconds", "timings")  # what may differ between a computed and a cached data_trust.json


def full_report() -> AuditReport:
    pair = NearDuplicatePair("/d/train/a.png", "/d/test/b.jpg", "train", "test", 0.97, 0.95, True)
    near = NearDuplicates((pair,), (DuplicateCluster(("/d/train/a.png", "/d/test/b.jpg"), ("train", "test")),), 3, 1)
    suspects = SuspectFindings((SuspectRow("/d/val/c.png", "val", "red", "green", 0.9, 0.05),), "own", 5, 20, "n")
    curve = LearningCurve(
        (0.5, 1.0), (ClassCurve("red", (0.5, 0.75), (4.0, 8.0), 25.0, 10.0, True, "more", 8),), (0.6, 0.8), 5
    )
    return AuditReport(
        "/d", "MobileNet", (64, 64), {"train": 16, "test": 4}, 2, 1.5, near, suspects, curve,
        notes=("a note",), skipped=("/d/bad.png",), cache_key="k", timings={"labels": 0.5},
    )  # fmt: skip


def test_from_dict_round_trips_to_dict_and_a_damaged_file_is_one_line(tmp_path):
    for report in (full_report(), AuditReport("", "B", (32, 32), {}, 0, 0.0, None, None, None)):
        written = json.loads(json.dumps(report.to_dict()))
        assert AuditReport.from_dict(written) == report
        path = tmp_path / "data_trust.json"
        path.write_text(json.dumps(written))
        assert json.loads(json.dumps(read_audit_report(path).to_dict())) == written
    for damaged, said in (("{not json", "unreadable"), ('{"base": "B"}', "no 'data_dir' key"), ("[1]", "another")):
        path.write_text(damaged)
        with pytest.raises(RunError, match=said) as caught:
            read_audit_report(path)
        assert "\n" not in str(caught.value)


def test_evaluate_and_the_report_say_in_one_line_that_a_data_trust_json_is_damaged(tmp_path):
    from tlcli.evaluation.html_report import trust_part
    from tlcli.evaluation.leakage import training_copies

    (tmp_path / "data_trust.json").write_text('{"base": "B"}')  # edited by hand, or an older shape
    copies = training_copies(tmp_path, ["/d/val/a.png"])
    assert not copies.known and "data_trust.json: damaged or of another format (no 'data_dir' key)" in copies.why
    assert "damaged or of another format" in trust_part(tmp_path, None)
    (tmp_path / "data_trust.json").write_text(json.dumps(full_report().to_dict()))
    assert "/d/val/c.png" in trust_part(tmp_path, None)  # the suspect, listed
    (tmp_path / "data_trust.json").unlink()
    assert "searched no near-duplicates" in training_copies(tmp_path, ["/d/val/a.png"]).why


def test_a_derived_result_reads_back_and_a_damaged_one_reads_as_absent(tmp_path):
    entry = DerivedResult.of("key", "data_trust", {"a": 1}, root=tmp_path)
    assert entry.read() is None and entry.write(b'{"x": 1}') is None
    assert entry.read() == b'{"x": 1}'
    assert DerivedResult.of("key", "data_trust", {"a": 2}, root=tmp_path).read() is None  # other inputs: other entry
    entry.path.write_bytes(entry.path.read_bytes().replace(b"1}", b"2}"))  # other bytes of the same size
    assert entry.read() is None and not entry.path.exists()


@needs_real_weights
@pytest.mark.slow
def test_a_second_run_reads_the_trust_result_from_the_cache_and_settings_or_damage_recompute(
    cli, tmp_path, real_weights, monkeypatch
):
    import tlcli.training.trust as trust

    data = blob_folder(tmp_path / "data", planted=True, copy_to="val", splits=(("train", 6), ("val", 3)))
    audit, calls = trust.audit_embeddings, []
    monkeypatch.setattr(trust, "audit_embeddings", lambda *a, **k: calls.append(k) or audit(*a, **k))

    def run(name: str, **keys) -> tuple[dict, dict]:
        config = trust_config(tmp_path / f"{name}.yaml", data, tmp_path / name, **keys)
        assert cli("train", config, "--set", "output.report=false").exit_code == 0
        (run_dir,) = (tmp_path / name).iterdir()
        return trust_of(run_dir)

    cold, cold_file = run("cold")
    assert cold["cached"] is False and cold["leakage"] == 1 and len(calls) == 1
    warm, warm_file = run("warm")
    assert warm["cached"] is True and len(calls) == 1  # read from the cache: the audit did not run again
    assert warm_file == cold_file and without_seconds(warm) == without_seconds(cold) | {"cached": True}

    other, other_file = run("other", label_suspects=False)  # another setting: searched again
    assert other["cached"] is False and other["label_suspects"] is None and len(calls) == 2
    assert other_file["label_suspects"] is None and other_file["near_duplicates"] == cold_file["near_duplicates"]

    (entry,) = [p for p in cache_entries() if json.loads(p.read_bytes().partition(b"\n")[2])["label_suspects"]]
    stored = entry.read_bytes()
    entry.write_bytes(stored[:-20] + b" " * 20)  # damaged: the same size, other bytes
    again, again_file = run("again")
    assert again["cached"] is False and len(calls) == 3 and again_file == cold_file
    rewritten = json.loads(entry.read_bytes().partition(b"\n")[2])
    assert {k: v for k, v in rewritten.items() if k not in TIMINGS} == json.loads(json.dumps(cold_file))


def trust_of(run_dir: Path) -> tuple[dict, dict]:
    """metrics.json's `data_trust` and data_trust.json without its timings."""
    record = json.loads((run_dir / "metrics.json").read_text())["data_trust"]
    written = json.loads((run_dir / "data_trust.json").read_text())
    return record, {k: v for k, v in written.items() if k not in TIMINGS}


def without_seconds(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "seconds"}


def cache_entries() -> list[Path]:
    from tlcli.paths import cache_root

    return sorted((cache_root() / "features").rglob("data_trust-*.dat"))
