"""`tlcli check`, the screening cache, and training on messy folders."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import HYMENOPTERA, make_image_folder, needs_shared, tiny_config, write_config, write_image
from messy import make_messy_folder

from tlcli import runs
from tlcli.data.problems import CONFLICTING_LABELS, LEAKAGE, WITHIN_CLASS, check_dataset, find_problems
from tlcli.errors import DataError


@pytest.fixture
def messy(tmp_path):
    return make_messy_folder(tmp_path / "messy", per_class=12, val_per_class=5, size=24)


def paths(rels, root: Path) -> set[str]:
    return {str(root / rel) for rel in rels}


# ----------------------------------------------------------------------------- check_dataset


def test_check_reports_every_kind_of_messy_file(messy):
    report = check_dataset(messy.root)
    root = messy.root
    unreadable = {f.path: f.reason for f in report.problems.unreadable}
    assert set(unreadable) == messy.unreadable_paths
    for rel, words in messy.unreadable.items():
        assert words in unreadable[str(root / rel)]
    assert [m["path"] for m in report.extension_mismatches] == [str(root / messy.readable["png_named_jpg"])]
    assert report.extension_mismatches[0]["format"] == "PNG"
    modes = {c["path"]: c["mode"] for c in report.conversions}
    assert modes[str(root / messy.readable["cmyk"])] == "CMYK"
    assert modes[str(root / messy.readable["rgba"])] == "RGBA"
    assert modes[str(root / messy.readable["png16"])] == "I;16"
    assert modes[str(root / messy.readable["grayscale"])] == "L"
    assert modes[str(root / messy.readable["animated_gif"])] == "P"
    assert report.exif_rotated == [str(root / messy.readable["exif_rotated"])]
    assert [a["path"] for a in report.animated] == [str(root / messy.readable["animated_gif"])]
    # The ordinary images are 24 px here, so only count the one made small on purpose among val files.
    assert str(root / messy.readable["small"]) in {s["path"] for s in report.small_images}
    [group] = report.problems.duplicates
    assert group.kinds == [LEAKAGE] and {f.path for f in group.files} == paths(messy.leak, root)
    assert {i["path"]: i["reason"] for i in report.ignored} == {
        str(root / rel): why for rel, why in messy.ignored.items()
    }
    # Readable counts: 12 ordinary + specials per class; the nested, non-ASCII file counts for bees.
    assert report.counts["train"] == {"ants": 12 + 4, "bees": 12 + 4}
    assert report.counts["val"] == {"ants": 5 + 1, "bees": 5 + 1}
    assert report.listed == {"train": 12 * 2 + 8 + 2, "val": 5 * 2 + 3}
    assert report.imbalance_ratio == 1.0
    assert report.exit_code == 4 and report.status == "problems"
    assert report.problems.summary() == "3 unreadable files, 1 image shared between splits (leakage)"


def test_cli_check_json_and_exit_codes(cli, messy, image_folder):
    result = cli("check", messy.root, "--json")
    assert result.exit_code == 4, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "problems" and document["exit_code"] == 4
    assert document["problems"]["counts"] == {
        "bad_rows": 0,
        "unreadable": 3,
        WITHIN_CLASS: 0,
        CONFLICTING_LABELS: 0,
        LEAKAGE: 1,
        "crossing_groups": 0,  # no --group: none can cross
    }
    assert {u["path"] for u in document["problems"]["unreadable"]} == messy.unreadable_paths
    assert set(document) >= {
        "classes",
        "counts",
        "listed",
        "imbalance_ratio",
        "small_classes",
        "extension_mismatches",
        "conversions",
        "exif_rotated",
        "animated",
        "small_images",
        "ignored",
        "warnings",
        "cache",
    }

    table = cli("check", messy.root)
    assert table.exit_code == 4
    for rel in messy.unreadable:
        assert rel in table.stdout
    assert "problems: 3 unreadable files" in table.stdout

    clean = cli("check", image_folder)
    assert clean.exit_code == 0, clean.stdout
    assert "clean" in clean.stdout


def test_cli_check_unusable_folders_exit_2_with_one_line(cli, tmp_path):
    missing = cli("check", tmp_path / "nope")
    assert missing.exit_code == 2 and missing.stderr.strip().count("\n") == 0 and "nope" in missing.stderr
    make_image_folder(tmp_path / "one", {"only": 3})
    one = cli("check", tmp_path / "one")
    assert one.exit_code == 2 and "only class 'only'" in one.stderr
    folder = make_image_folder(tmp_path / "dead", {"good": 12, "bad": 0})
    (folder / "bad").mkdir(exist_ok=True)
    for i in range(3):
        (folder / "bad" / f"{i}.jpg").write_text("not an image")
    dead = cli("check", folder)
    assert dead.exit_code == 2
    assert dead.stderr.strip().splitlines() == [
        f"error: {folder}: class 'bad' has no readable training image; training needs at least one per class"
    ]
    assert "Traceback" not in dead.stderr + dead.stdout


def test_duplicates_within_a_class_and_conflicting_labels(tmp_path):
    folder = make_image_folder(tmp_path / "dups", {"cats": 12, "dogs": 12}, suffix=".png")
    shutil.copyfile(folder / "cats" / "cats_000.png", folder / "cats" / "again.png")
    shutil.copyfile(folder / "cats" / "cats_001.png", folder / "dogs" / "mislabelled.png")
    report = check_dataset(folder)
    kinds = sorted(tuple(g.kinds) for g in report.problems.duplicates)
    # With no val/ folder the 20% hold-out is by path hash, so a copy may land in the other split: leakage too.
    assert any(WITHIN_CLASS in k or LEAKAGE in k for k in kinds) and any(CONFLICTING_LABELS in k for k in kinds)
    assert len(report.problems.duplicates) == 2 and report.exit_code == 4


def test_small_classes_and_imbalance(tmp_path):
    folder = make_image_folder(tmp_path / "few", {"many": 30, "few": 6}, size=40)
    report = check_dataset(folder)
    assert [c["class"] for c in report.small_classes] == ["few"]
    assert report.imbalance_ratio > 3
    assert report.exit_code == 0  # imbalance is information, not a problem


def test_unicode_spaces_symlinks_and_nested_folders_are_listed(tmp_path):
    root = tmp_path / "données avec espaces"
    make_image_folder(root / "train", {"chat é": 4, "狗": 4}, size=20)
    make_image_folder(root / "val", {"chat é": 2, "狗": 2}, size=20, seed=5)
    nested = root / "train" / "狗" / "deep" / "deeper"
    write_image(nested / "nested 1.png", np.full((20, 20, 3), 7, np.uint8))
    elsewhere = make_image_folder(tmp_path / "elsewhere", {"x": 3}, size=20, seed=9)
    os.symlink(elsewhere / "x", root / "train" / "狗" / "linked folder")
    os.symlink(elsewhere / "x" / "x_000.png", root / "train" / "chat é" / "linked.png")
    report = check_dataset(root)
    assert report.classes == ["chat é", "狗"]
    assert report.counts["train"] == {"chat é": 5, "狗": 4 + 1 + 3}
    assert report.problems.unreadable == []
    # the symlinked file is the same bytes as one inside the linked folder
    assert [g.kinds for g in report.problems.duplicates] == [[CONFLICTING_LABELS]]


# ----------------------------------------------------------------------------- the screening cache


def test_second_check_decodes_nothing_and_changed_files_are_redecoded(messy, monkeypatch):
    first = check_dataset(messy.root)
    assert first.cache == {"cached": 0, "decoded": sum(first.listed.values())}
    second = check_dataset(messy.root)
    assert second.cache == {"cached": sum(first.listed.values()), "decoded": 0}
    assert second.to_dict() | {"cache": None} == first.to_dict() | {"cache": None}
    # Repair the empty file: a new size and mtime, so it is decoded again, and is now fine.
    empty = messy.root / next(rel for rel in messy.unreadable if "empty" in rel)
    shutil.copyfile(messy.root / messy.leak[0], empty)
    os.utime(empty, ns=(1, 10**18))
    third = check_dataset(messy.root)
    assert third.cache["decoded"] == 1
    assert str(empty) not in {f.path for f in third.problems.unreadable}
    assert check_dataset(messy.root, use_cache=False).cache["decoded"] == sum(first.listed.values())


def test_training_decode_pass_fills_the_cache_and_skips_known_bad_files(messy, monkeypatch):
    from tlcli import data
    from tlcli.config import DataConfig

    splits = data.discover_splits(DataConfig(dir=messy.root))
    decoded = {
        "train": data.decode_samples(splits.train, (16, 16), 3),
        "val": data.decode_samples(splits.val, (16, 16), 3),
    }
    # check after a training pass: nothing to decode, and the same problems as training found
    report = check_dataset(messy.root)
    assert report.cache["decoded"] == 0
    assert find_problems(splits, decoded).to_dict() == report.problems.to_dict()

    from tlcli.data import decoded as decode_pass

    opened = []
    real = decode_pass.decode_image
    monkeypatch.setattr(
        decode_pass, "decode_image", lambda path, *a, **k: opened.append(str(path)) or real(path, *a, **k)
    )
    again = data.decode_samples(splits.train, (16, 16), 3)
    assert {s.path for s in again.skipped} == {p for p in messy.unreadable_paths if "/train/" in p}
    assert not set(opened) & messy.unreadable_paths  # known-bad files are not even opened
    assert len(opened) == len(again)
    with pytest.raises(DataError, match="empty file"):
        data.decode_samples(splits.train, (16, 16), 3, on_bad_file="fail")


def test_a_broken_cache_file_is_rebuilt(messy, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "screening.sqlite").write_bytes(b"this is not sqlite" * 100)
    monkeypatch.setenv("TLCLI_CACHE_DIR", str(cache_dir))
    assert check_dataset(messy.root).cache["decoded"] > 0
    assert check_dataset(messy.root).cache["decoded"] == 0
    monkeypatch.setenv("TLCLI_CACHE_DIR", "/proc/no/such/place")  # unwritable: screening still works
    assert check_dataset(messy.root).exit_code == 4


# ----------------------------------------------------------------------------- training on messy folders


def messy_config(messy, runs_dir: Path, **sections) -> dict:
    return tiny_config(messy.root, runs_dir, data={"image_size": 24}, train={"epochs": 1}, **sections)


def test_train_on_a_messy_folder_skips_exactly_the_unreadable_files(cli, messy, tmp_path):
    config = write_config(tmp_path / "messy.yaml", messy_config(messy, tmp_path / "runs"))
    result = cli("train", config, "--json")
    assert result.exit_code == 0, result.stderr
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    skipped = runs.read_json(run_dir / "skipped_files.json")
    assert {s["path"] for s in skipped} == messy.unreadable_paths
    assert all(s["reason"] for s in skipped)
    assert "skipped 3 unreadable files" in result.stderr
    assert "leakage: 1 image is in more than one split" in result.stderr
    problems = runs.read_json(run_dir / "data_problems.json")
    assert problems["counts"][LEAKAGE] == 1 and len(problems["unreadable"]) == 3
    metrics = runs.read_json(run_dir / "metrics.json")
    assert metrics["images"] == {"train": 32, "val": 12, "skipped": 3}


def test_train_strict_stops_on_problems_and_marks_the_run_failed(cli, messy, tmp_path):
    config = write_config(tmp_path / "messy.yaml", messy_config(messy, tmp_path / "runs"))
    result = cli("train", config, "--strict", "--quiet")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(
        "error: --strict: the data has problems (3 unreadable files, 1 image shared between splits (leakage))"
    )
    [run_dir] = (tmp_path / "runs").iterdir()
    record = runs.read_json(run_dir / "run.json")
    assert record["status"] == "failed" and "--strict" in record["error"]
    assert (run_dir / "data_problems.json").is_file() and not (run_dir / "model.keras").exists()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_failure_marks_only_the_new_run_failed(image_folder, tmp_path, monkeypatch):
    from tlcli import train
    from tlcli.errors import TrainingError
    from tlcli.training import loop

    config = tiny_config(image_folder, tmp_path / "runs", train={"epochs": 1})
    good = train(config).run_dir
    before = _snapshot(good)

    def explode(*args, **kwargs):
        raise RuntimeError("simulated crash in fit")

    monkeypatch.setattr(loop, "_fit_phase", explode)
    with pytest.raises(TrainingError, match="RuntimeError: simulated crash in fit"):
        train(config)
    monkeypatch.undo()

    # Bad data found late: every validation file is unreadable, which only decoding can tell.
    # The verdict is check's (exit 2), and the run folder the pass ran in is removed: nothing was trained.
    late = make_image_folder(tmp_path / "late" / "train", {"a": 8, "b": 8}).parent
    for name in ("a", "b"):
        (late / "val" / name).mkdir(parents=True)
        (late / "val" / name / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no readable validation image; training needs at least one"):
        train(tiny_config(late, tmp_path / "runs", train={"epochs": 1}))
    assert check_dataset(late).unusable == "no readable validation image; training needs at least one"

    records = {p.name: runs.read_json(p / "run.json") for p in (tmp_path / "runs").iterdir()}
    assert sorted(r["status"] for r in records.values()) == ["completed", "failed"]
    errors = [r["error"] for r in records.values() if r["status"] == "failed"]
    assert "RuntimeError: simulated crash in fit" in errors[0]
    assert _snapshot(good) == before  # the earlier run is untouched


# ----------------------------------------------------------------------------- done when: the real folder


@needs_shared
def test_messy_hymenoptera_check_train_and_predict(cli, tmp_path):
    """A new user's folder: real photos plus every awkward file, end to end."""
    messy = make_messy_folder(tmp_path / "hymenoptera", source=HYMENOPTERA, per_class=20, val_per_class=8)
    root = messy.root

    result = cli("check", root, "--json")
    assert result.exit_code == 4, result.stderr
    report = json.loads(result.stdout)
    reasons = {u["path"]: u["reason"] for u in report["problems"]["unreadable"]}
    assert set(reasons) == messy.unreadable_paths
    for rel, words in messy.unreadable.items():
        assert words in reasons[str(root / rel)]
    assert [m["path"] for m in report["extension_mismatches"]] == [str(root / messy.readable["png_named_jpg"])]
    modes = {c["path"]: c["mode"] for c in report["conversions"]}
    for role, mode in (
        ("cmyk", "CMYK"),
        ("rgba", "RGBA"),
        ("png16", "I;16"),
        ("grayscale", "L"),
        ("animated_gif", "P"),
    ):
        assert modes[str(root / messy.readable[role])] == mode
    assert report["exif_rotated"] == [str(root / messy.readable["exif_rotated"])]
    assert [a["path"] for a in report["animated"]] == [str(root / messy.readable["animated_gif"])]
    [leak] = report["problems"]["duplicates"]
    assert leak["kinds"] == [LEAKAGE] and {f["path"] for f in leak["files"]} == paths(messy.leak, root)
    assert report["counts"]["train"]["bees"] == 20 + 4  # incl. the non-ASCII file in a nested folder
    assert report["problems"]["counts"]["unreadable"] == 3

    config = tiny_config(
        root, tmp_path / "runs", name="messy", data={"image_size": 48, "batch_size": 16}, train={"epochs": 1}
    )
    trained = cli("train", write_config(tmp_path / "messy.yaml", config), "--json")
    assert trained.exit_code == 0, trained.stderr
    run_dir = Path(json.loads(trained.stdout)["run_dir"])
    skipped = {s["path"]: s["reason"] for s in runs.read_json(run_dir / "skipped_files.json")}
    assert skipped == reasons
    assert runs.read_json(run_dir / "run.json")["status"] == "completed"

    files = sorted(str(root / rel) for rel in [*messy.unreadable, *messy.readable.values()])
    predicted = cli("predict", *files, "--run", run_dir, "--format", "json")
    assert predicted.exit_code == 4, predicted.stderr
    by_path = {p["path"]: p for p in json.loads(predicted.stdout)["predictions"]}
    assert set(by_path) == set(files)
    for path, entry in by_path.items():
        if path in messy.unreadable_paths:
            assert entry["label"] is None and entry["error"]
        else:
            assert entry["label"] in ("ants", "bees") and entry["error"] is None
