"""`tlcli predict`: every output format, partial success, run selection, input errors."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import HYMENOPTERA, make_image_folder, needs_shared

CONFIDENCE = re.compile(r"│\s+[01]\.\d{3} │")  # the table's confidence cell


@pytest.fixture(scope="module")
def run(binary_run) -> Path:
    """One small sigmoid-head run (cats vs dogs) for the whole module: the session's, read-only (conftest)."""
    return binary_run


def photo_folder(tmp_path: Path, good: int = 4) -> Path:
    """`good` real images plus a zero-byte .jpg and a text file named .png (and a README that is ignored)."""
    folder = make_image_folder(tmp_path / "photos", {"cats": good}, seed=5) / "cats"
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("this is text, not a PNG\n")
    (folder / "README.txt").write_text("not an image extension: never tried inside a folder\n")
    return folder


def parse(fmt: str, text: str) -> tuple[list[dict], list[dict]]:
    """(predictions, errors) from any machine-readable format."""
    if fmt == "jsonl":
        entries = [json.loads(line) for line in text.splitlines()]
    elif fmt == "json":
        entries = json.loads(text)["predictions"]
    else:
        entries = [{**row, "error": row["error"] or None} for row in csv.DictReader(io.StringIO(text))]
    return [e for e in entries if e["error"] is None], [e for e in entries if e["error"] is not None]


# ----------------------------------------------------------------------------- formats and partial success


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_each_format_has_predictions_and_error_entries_and_exits_4(cli, run, tmp_path, fmt):
    folder = photo_folder(tmp_path)
    result = cli("predict", folder, "--run", run, "--format", fmt, "--no-unknown")
    assert result.exit_code == 4
    predictions, errors = parse(fmt, result.stdout)
    assert len(predictions) == 4 and len(errors) == 2
    assert {Path(e["path"]).name: e["error"] for e in errors} == {
        "empty.jpg": "empty file (0 bytes)",
        "notes.png": "not an image (unrecognised content)",
    }
    assert all(p["label"] in ("cats", "dogs") for p in predictions)
    assert "2 of 6 files could not be read" in result.stderr


def test_jsonl_is_the_default_when_stdout_is_not_a_terminal(cli, run, tmp_path):
    result = cli("predict", photo_folder(tmp_path), "--run", run, "--no-unknown")
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(entries) == 6 and result.exit_code == 4
    ok = next(e for e in entries if e["error"] is None)
    assert set(ok) == {"path", "label", "confidence", "top_k", "error"}
    # A sigmoid head gives [1 - p, p]: two labels whose probabilities sum to 1; --top-k 3 is capped at 2.
    assert [t["label"] for t in ok["top_k"]] in (["cats", "dogs"], ["dogs", "cats"])
    assert sum(t["probability"] for t in ok["top_k"]) == pytest.approx(1.0, abs=1e-5)
    assert ok["label"] == ok["top_k"][0]["label"] and ok["confidence"] == ok["top_k"][0]["probability"] >= 0.5
    bad = next(e for e in entries if e["error"] is not None)
    assert bad["label"] is None and bad["confidence"] is None and bad["top_k"] == []


def test_json_document_and_csv_header(cli, run, tmp_path):
    folder = photo_folder(tmp_path)
    document = json.loads(cli("predict", folder, "--run", run, "--format", "json", "--no-unknown").stdout)
    assert document["labels"] == ["cats", "dogs"] and document["top_k"] == 2
    assert document["count"] == 6 and document["errors"] == 2 and Path(document["run_dir"]) == run
    header = cli("predict", folder, "--run", run, "-f", "csv", "--top-k", "1", "--no-unknown").stdout.splitlines()[0]
    assert header == "path,label,confidence,error"
    header = cli("predict", folder, "--run", run, "--format", "csv", "--no-unknown").stdout.splitlines()[0]
    assert header == "path,label,confidence,label_2,probability_2,error"


def test_table_format(cli, run, tmp_path, monkeypatch):
    photo_folder(tmp_path)
    monkeypatch.chdir(tmp_path)  # short relative paths: one table row per file
    result = cli("predict", "photos", "--run", run, "--format", "table", "--no-unknown")
    assert result.exit_code == 4
    lines = result.stdout.splitlines()
    assert any("empty.jpg" in line and "error" in line and "empty file" in line for line in lines)
    assert any("notes.png" in line and "error" in line and "not an image" in line for line in lines)
    assert (
        sum("cats_00" in line and bool(CONFIDENCE.search(line)) for line in lines) == 4
    )  # a label and a confidence each


def test_all_readable_exits_0(cli, run, tmp_path):
    folder = make_image_folder(tmp_path / "ok", {"dogs": 3})
    result = cli("predict", folder, "--run", run, "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3


@pytest.mark.parametrize(
    ("suffix", "check"),
    [
        (".json", lambda t: json.loads(t)["count"] == 6),
        (".csv", lambda t: t.startswith("path,label,")),
        (".jsonl", lambda t: len(t.splitlines()) == 6),
    ],
)
def test_output_file_format_follows_its_suffix(cli, run, tmp_path, suffix, check):
    out = tmp_path / f"predictions{suffix}"
    result = cli("predict", photo_folder(tmp_path), "--run", run, "-o", out)
    assert result.exit_code == 4
    assert result.stdout == ""
    assert check(out.read_text())
    assert "wrote 6 predictions (2 errors)" in result.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_output_order_and_batching_do_not_change_results(run, tmp_path):
    from tlcli.inference.predict import predict

    folder = photo_folder(tmp_path, good=5)
    files = sorted(folder.iterdir())
    one = predict(files, run=run, batch_size=1)
    many = predict(files, run=run, batch_size=32)
    assert [p.path for p in one.predictions] == [str(f) for f in files]  # input order, errors in place
    assert len(one.errors) == 3  # named explicitly, README.txt is tried too
    assert [(p.path, p.label, p.error) for p in one.predictions] == [
        (p.path, p.label, p.error) for p in many.predictions
    ]
    for a, b in zip(one.predictions, many.predictions):
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4) if a.error is None else a.confidence is None


# ----------------------------------------------------------------------------- inputs


def test_globs_files_and_folders_together_without_duplicates(cli, run, tmp_path):
    folder = make_image_folder(tmp_path / "mix", {"x": 3, "y": 2})
    result = cli(
        "predict", folder / "x" / "x_000.png", str(folder / "x" / "*.png"), folder, "--run", run, "--format", "jsonl"
    )
    assert result.exit_code == 0, result.stderr
    paths = [json.loads(line)["path"] for line in result.stdout.splitlines()]
    assert len(paths) == len(set(paths)) == 5


def test_a_path_or_glob_matching_nothing_exits_2_naming_it(cli, run, tmp_path):
    for spec, message in (
        (tmp_path / "missing.jpg", "no such file or folder"),
        (str(tmp_path / "*.webp"), "matches no files"),
    ):
        result = cli("predict", spec, "--run", run)
        assert result.exit_code == 2
        assert str(spec) in result.stderr and message in result.stderr
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    result = cli("predict", tmp_path / "docs", "--run", run)
    assert result.exit_code == 2 and "no image files" in result.stderr


def test_bad_options_exit_2(cli, run, tmp_path):
    folder = photo_folder(tmp_path)
    assert cli("predict", folder, "--run", run, "--format", "xml").exit_code == 2
    assert cli("predict", folder, "--run", run, "--top-k", "0").exit_code == 2


# ----------------------------------------------------------------------------- which run


def test_uses_the_newest_completed_run_and_says_so_on_stderr(cli, run, run_copy, tmp_path):
    from tlcli import runs

    run = run_copy(run)  # a runs folder of its own: this test adds a run beside it
    # A newer run that failed before saving a model must not be picked.
    failed = runs.create_run_dir(run.parent, "later")
    runs.start_run(failed, "later")
    runs.finish_run(failed, "failed", "boom")
    try:
        result = cli("predict", photo_folder(tmp_path), "--runs-dir", run.parent, "--format", "jsonl")
    finally:
        shutil.rmtree(failed)
    assert result.exit_code == 4
    assert f"using run {run}" in result.stderr
    assert len(result.stdout.splitlines()) == 6  # stdout holds only the predictions


def test_no_run_found_exits_2_with_one_line(cli, tmp_path):
    result = cli("predict", photo_folder(tmp_path), "--runs-dir", tmp_path / "no-runs")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no completed run" in result.stderr
    assert result.stdout == ""


def test_run_folder_without_model_exits_2(cli, run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("model.keras", "eval", "tensorboard"))
    result = cli("predict", photo_folder(tmp_path), "--run", copy)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no model.keras" in result.stderr
    result = cli("predict", photo_folder(tmp_path), "--run", tmp_path / "nowhere" / "run")
    assert result.exit_code == 2 and "run folder not found" in result.stderr


# ----------------------------------------------------------------------------- real photos


@pytest.mark.integration
@needs_shared
@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "table"])
def test_twenty_real_photos_and_two_broken_files(cli, run, tmp_path, monkeypatch, fmt):
    folder = tmp_path / "real"
    folder.mkdir()
    photos = sorted((HYMENOPTERA / "val").rglob("*.jpg"))[:10] + sorted((HYMENOPTERA / "val").rglob("*.jpg"))[-10:]
    assert len(set(photos)) == 20
    for photo in photos:
        shutil.copy(photo, folder / f"{photo.parent.name}_{photo.name}")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not a picture")
    monkeypatch.chdir(tmp_path)  # short relative paths: one table row per file
    # --no-unknown: this tiny run's rule for unknown images rejects real photos (tests/test_unknown.py covers it)
    result = cli("predict", "real", "--run", run, "--format", fmt, "--no-unknown")
    assert result.exit_code == 4
    if fmt == "table":
        lines = result.stdout.splitlines()
        assert sum(".jpg" in line and "error" not in line and bool(CONFIDENCE.search(line)) for line in lines) == 20
        assert sum(("zero.jpg" in line or "text.png" in line) and "error" in line for line in lines) == 2
    else:
        predictions, errors = parse(fmt, result.stdout)
        assert len(predictions) == 20 and len(errors) == 2
        assert {Path(e["path"]).name for e in errors} == {"zero.jpg", "text.png"}
