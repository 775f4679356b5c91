"""CSV manifests (issue 13): labels, splits and paths from a spreadsheet, everywhere folders work."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import HYMENOPTERA, make_image_folder, needs_shared, tiny_config, write_config

from tlcli import load_config, resume, train
from tlcli.config.schema import DataConfig
from tlcli.data.splits import discover_splits
from tlcli.errors import DataError


def write_manifest(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, columns, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    """Generated images in a flat-ish layout unrelated to their labels, as a labelling tool leaves them."""
    folder = make_image_folder(tmp_path / "pool", {"cats": 14, "dogs": 14})
    return folder


def rows_for(images: Path, base: Path | None = None, **extra) -> list[dict]:
    """One row per image: its path (relative to `base`, else absolute) and its class as the label."""
    rows = []
    for file in sorted(images.rglob("*.png")):
        path = file.relative_to(base).as_posix() if base else str(file)
        rows.append({"path": path, "label": file.parent.name, **extra})
    return rows


def manifest_config(manifest: Path, runs_dir: Path, **data) -> dict:
    raw = tiny_config(manifest.parent, runs_dir, train={"epochs": 1})
    raw["data"] = {"manifest": str(manifest), "image_size": 16, "batch_size": 8, **data}
    return raw


def test_relative_and_absolute_paths_custom_columns_and_a_tsv_list_the_same_files(images, tmp_path):
    relative = write_manifest(tmp_path / "relative.csv", rows_for(images, base=tmp_path))
    absolute = write_manifest(tmp_path / "absolute.csv", rows_for(images))
    renamed = write_manifest(
        tmp_path / "renamed.csv", [{"file": r["path"], "class": r["label"]} for r in rows_for(images, base=tmp_path)]
    )
    tab = write_manifest(tmp_path / "labels.tsv", rows_for(images, base=tmp_path), delimiter="\t")
    semicolon = write_manifest(tmp_path / "semi.csv", rows_for(images, base=tmp_path), delimiter=";")
    listed = [
        discover_splits(DataConfig(manifest=relative)),
        discover_splits(DataConfig(manifest=absolute)),
        discover_splits(DataConfig(manifest=renamed, columns={"path": "file", "label": "class"})),
        discover_splits(DataConfig(manifest=tab)),
        discover_splits(DataConfig(manifest=semicolon)),
    ]
    paths = [sorted(str(s.path) for s in splits.train + splits.val) for splits in listed]
    assert all(p == paths[0] for p in paths) and len(paths[0]) == 28
    assert listed[0].class_names == ["cats", "dogs"] and all(s.class_names == listed[0].class_names for s in listed)
    assert [s.relpath for s in listed[0].train] == [
        s.relpath for s in listed[2].train
    ]  # the hash split is on the path as written
    with pytest.raises(
        DataError,
        match=(
            "data.columns.path: the manifest .* has no column 'path' \(its columns: file, class\); set "
            "data.columns.path"
        ),
    ):
        discover_splits(DataConfig(manifest=renamed))


def test_the_hash_split_keeps_every_row_where_it_was_when_rows_are_added(images, tmp_path):
    rows = rows_for(images, base=tmp_path)
    first = discover_splits(DataConfig(manifest=write_manifest(tmp_path / "a.csv", rows[:20])))
    more = discover_splits(
        DataConfig(manifest=write_manifest(tmp_path / "b.csv", rows[10:] + rows[:10]))
    )  # more rows, another order
    before = {s.relpath: split for split in ("train", "val") for s in getattr(first, split)}
    after = {s.relpath: split for split in ("train", "val") for s in getattr(more, split)}
    assert all(after[path] == split for path, split in before.items()) and len(after) == 28


def test_a_split_column_overrides_the_hash_split_and_unknown_splits_are_refused(images, tmp_path):
    rows = rows_for(images, base=tmp_path)
    for index, row in enumerate(rows):
        row["split"] = ("train", "val", "test", "")[index % 4]
    splits = discover_splits(DataConfig(manifest=write_manifest(tmp_path / "split.csv", rows)))
    assert (
        len(splits.val) == 7 and len(splits.test) == 7 and len(splits.train) == 14
    )  # the empty cells train, as val is given
    rows[5]["split"] = "dev"
    with pytest.raises(DataError, match="row 7 of .* names split 'dev'; use train, val or test"):
        discover_splits(DataConfig(manifest=write_manifest(tmp_path / "bad.csv", rows)))


def bad_rows_manifest(images: Path, tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """Good rows plus one of each bad kind; {row: words of its problem}."""
    rows = rows_for(images, base=tmp_path)
    first = rows[0]["path"]
    (tmp_path / "broken.png").write_text("not an image")
    rows += [
        {"path": "", "label": "cats"},  # row 30
        {"path": rows[1]["path"], "label": ""},  # row 31: no label
        {"path": "missing/nowhere.png", "label": "dogs"},  # row 32
        {"path": first, "label": "dogs"},  # row 33: listed again, another label
        {"path": rows[2]["path"], "label": rows[2]["label"]},  # row 34: listed again, same label
        {"path": "broken.png", "label": "cats"},  # row 35: unreadable
    ]
    expected = {
        30: "no path",
        31: "no label",
        32: "file not found",
        33: "another label",
        34: "listed again (row 4)",
        2: "neither row is used",
    }
    return write_manifest(tmp_path / "bad.csv", rows), expected


def test_every_bad_row_is_listed_with_its_row_and_skipped(cli, images, tmp_path):
    manifest, expected = bad_rows_manifest(images, tmp_path)
    checked = cli("check", manifest, "--json", "--no-cache")
    assert checked.exit_code == 4, checked.stderr
    problems = json.loads(checked.stdout)["problems"]
    found = {b["row"]: b["problem"] for b in problems["bad_rows"]}
    assert set(found) == set(expected) and all(words in found[row] for row, words in expected.items()), found
    assert [(f["row"], f["reason"].split(" (")[0]) for f in problems["unreadable"]] == [(35, "not an image")]
    assert cli("check", "--manifest", manifest, "--json", "--no-cache").stdout == checked.stdout

    trained = cli(
        "train", write_config(tmp_path / "c.yaml", manifest_config(manifest, tmp_path / "runs")), "--json", "--quiet"
    )
    assert trained.exit_code == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert (
        summary["images"]["train"] + summary["images"]["val"] == 28 - 1
    )  # the conflicting path's rows are out, broken.png is skipped
    assert summary["skipped_files"] == 1
    recorded = json.loads((Path(summary["run_dir"]) / "data_problems.json").read_text())
    assert {b["row"] for b in recorded["bad_rows"]} == set(expected)

    strict = cli(
        "train", write_config(tmp_path / "c.yaml", manifest_config(manifest, tmp_path / "runs")), "--strict", "--quiet"
    )
    assert strict.exit_code == 2 and "bad manifest rows" in strict.stderr.strip().splitlines()[-1]


def test_a_relative_manifest_is_saved_absolute_so_the_run_resolves_from_any_folder(images, tmp_path, monkeypatch):
    from tlcli import validate

    write_manifest(tmp_path / "labels.csv", rows_for(images, base=tmp_path))
    monkeypatch.chdir(tmp_path)
    raw = manifest_config(Path("labels.csv"), tmp_path / "runs")
    resolved = validate(raw).config
    assert resolved.data.manifest == tmp_path / "labels.csv" and resolved.data.manifest.is_absolute()


def test_a_relabelled_manifest_is_another_dataset_for_resume(images, tmp_path):
    rows = rows_for(images, base=tmp_path)
    manifest = write_manifest(tmp_path / "labels.csv", rows)
    run = train(load_config(manifest_config(manifest, tmp_path / "runs"))).run_dir
    fingerprint = json.loads((run / "dataset.json").read_text())
    assert fingerprint["fingerprint_version"] == 2
    rows[0]["label"] = "dogs"  # one image relabelled
    write_manifest(manifest, rows)
    from tlcli.errors import RunError

    with pytest.raises(RunError, match="changed since the run started"):
        resume(run, overrides=["train.epochs=2"])
    rows[0]["label"] = "cats"
    write_manifest(manifest, rows)
    assert resume(run, overrides=["train.epochs=2"]).metrics.epochs["total"] == 2


def test_evaluate_and_predict_take_a_manifest(cli, images, tmp_path):
    manifest = write_manifest(tmp_path / "labels.csv", rows_for(images, base=tmp_path))
    run = train(load_config(manifest_config(manifest, tmp_path / "runs"))).run_dir
    extra = make_image_folder(tmp_path / "more", {"cats": 3, "dogs": 3}, seed=7)
    to_score = write_manifest(
        tmp_path / "score.csv", [*rows_for(extra, base=tmp_path), {"path": "more/gone.png", "label": "cats"}]
    )
    evaluated = cli("evaluate", run, "--data", to_score, "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["dataset"]["images"] == 6 and report["dataset"]["name"] == "score"
    assert [s["reason"] for s in report["skipped_files"]] == [
        "row 8: file not found: " + str((tmp_path / "more" / "gone.png").absolute())
    ]
    (tmp_path / "bird.png").write_bytes((extra / "cats" / "cats_000.png").read_bytes())
    with_bird = write_manifest(
        tmp_path / "bird.csv", [*rows_for(extra, base=tmp_path), {"path": "bird.png", "label": "birds"}]
    )
    refused = cli("evaluate", run, "--data", with_bird)
    assert (
        refused.exit_code == 2
        and "row 8 of" in refused.stderr
        and "'birds', not a class of the run (cats, dogs)" in refused.stderr
    )

    predicted = cli("predict", to_score, "--run", run, "-f", "jsonl")
    assert predicted.exit_code == 4  # the missing file is an error entry
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [r["path"] for r in rows] == [r["path"] for r in rows_for(extra, base=tmp_path)] + [
        "more/gone.png"
    ]  # keyed by the manifest's paths
    assert all(r["label"] for r in rows[:6]) and "No such file" in rows[6]["error"]


@needs_shared
def test_a_manifest_of_hymenoptera_trains_as_the_folder_does(tmp_path):
    rows = [
        {"path": str(file), "label": file.parent.name, "split": split}
        for split in ("train", "val")
        for file in sorted((HYMENOPTERA / split).rglob("*"))
        if file.is_file()
    ]
    manifest = write_manifest(tmp_path / "hymenoptera.csv", rows)
    common = {
        "name": "hym",
        "seed": 4,
        "base": {"name": "SmallCNN", "weights": "none", "args": {"filters": 8, "blocks": 2}},
        "train": {"epochs": 2, "learning_rate": 0.01, "l2": 0.0},
    }
    common |= {"runtime": {"deterministic": True}, "probe": "off", "output": {"runs_dir": str(tmp_path / "runs")}}
    folder = train(load_config({**common, "data": {"dir": str(HYMENOPTERA), "image_size": 32}}))
    listed = train(load_config({**common, "data": {"manifest": str(manifest), "image_size": 32}}))
    assert listed.metrics.images == folder.metrics.images and folder.metrics.images["train"] > 200
    assert listed.metrics.final["val_accuracy"] == folder.metrics.final["val_accuracy"]
    assert listed.metrics.final["val_loss"] == pytest.approx(folder.metrics.final["val_loss"], rel=1e-6)
