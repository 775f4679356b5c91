"""Group-aware splits (issue 27): `data.group` keeps a patient's (a product's, a video's) images on one side of the
hash split and of tune's folds, and `tlcli check --group` reports groups that cross given splits."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import class_pattern, write_image

from tlcli import load_config
from tlcli.config.schema import DataConfig
from tlcli.data.groups import groups_of
from tlcli.data.splits import discover_splits, split_bucket
from tlcli.errors import ConfigError, DataError


def patient_manifest(folder: Path, patients: range, per_patient: int = 3, **extra_columns) -> Path:
    """A manifest of `per_patient` (empty) files for each patient, under both labels: the split needs no decoding."""
    rows = []
    for patient in patients:
        for i in range(per_patient):
            path = folder / "scans" / f"scan_{patient:03d}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            rows.append({"path": path.relative_to(folder).as_posix(), "label": "ab"[(patient + i) % 2]})
            rows[-1] |= {"patient": f"p{patient:03d}", **extra_columns}
    manifest = folder / "labels.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def sides(splits) -> dict[str, set[str]]:
    """{group or path: the splits its images are in}."""
    found = defaultdict(set)
    for split, samples in splits.listed():
        for sample in samples:
            found[sample.group or sample.relpath].add(split)
    return found


def test_a_manifest_group_column_never_splits_a_group_across_train_and_validation(tmp_path):
    manifest = patient_manifest(tmp_path, range(40))
    grouped = discover_splits(DataConfig(manifest=manifest, group="patient"))
    assert {s.group for s in grouped.train + grouped.val} == {f"p{p:03d}" for p in range(40)}
    assert grouped.train and grouped.val and all(len(where) == 1 for where in sides(grouped).values())
    assert "by group hash" in grouped.sources["val"]
    # per file (data.group unset, as before) the same manifest scatters patients over both sides
    per_file = discover_splits(DataConfig(manifest=manifest))
    scattered = defaultdict(set)
    for split, samples in per_file.listed():
        for sample in samples:
            assert sample.group is None and sample.split_key == sample.relpath
            scattered[sample.relpath.split("_")[1]].add(split)
    assert any(len(where) > 1 for where in scattered.values())


def test_the_group_split_is_stable_when_groups_and_images_are_added(tmp_path):
    before = discover_splits(DataConfig(manifest=patient_manifest(tmp_path / "v1", range(40)), group="patient"))
    # 30 new patients, and a fourth scan for every old one
    after = discover_splits(
        DataConfig(manifest=patient_manifest(tmp_path / "v2", range(70), per_patient=4), group="patient")
    )
    side_before = {s.relpath: split for split, samples in before.listed() for s in samples}
    side_after = {s.relpath: split for split, samples in after.listed() for s in samples}
    assert all(side_after[path] == split for path, split in side_before.items())  # nothing moved
    # a group's side depends only on its name
    held = {s.group for s in after.val}
    assert held == {f"p{p:03d}" for p in range(70) if split_bucket(f"p{p:03d}") < 0.2}
    assert all(len(where) == 1 for where in sides(after).values())


def test_a_pattern_groups_a_class_folder_tree_and_a_file_it_misses_is_its_own_group(tmp_path):
    root = tmp_path / "photos"
    for patient in range(30):
        for name in ("benign", "malignant"):  # each patient has images of both classes
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / f"patient_{patient:02d}_{name}.png").touch()
    (root / "benign" / "stray.png").touch()
    splits = discover_splits(DataConfig(dir=root, group=r"patient_(\d+)_"))  # the first capture group names it
    groups = sides(splits)
    assert {s.group for s in splits.train + splits.val if s.group} == {f"{p:02d}" for p in range(30)}
    assert all(len(where) == 1 for where in groups.values()) and splits.val
    stray = next(s for s in splits.train + splits.val if s.relpath == "benign/stray.png")
    assert stray.group is None and stray.split_key == "benign/stray.png"  # split on its own, as without data.group
    assert any("1 of 61 files have no group" in w and "benign/stray.png" in w for w in splits.warnings)
    # every train + validation image's group for grouped cross-validation; the stray file is a group of one
    samples = splits.train + splits.val
    assert len(set(groups_of(samples))) == 31 and groups_of(discover_splits(DataConfig(dir=root)).train) is None


def test_a_bad_pattern_a_missing_column_and_a_pattern_that_matches_nothing_are_named(tmp_path):
    with pytest.raises(ConfigError) as bad:
        load_config({"data": {"dir": str(tmp_path), "group": "patient_(\\d+"}, "base": {"name": "SmallCNN"}})
    assert bad.value.key == "data.group" and "not a valid regular expression" in str(bad.value)
    with pytest.raises(ConfigError, match="data.group: 'patient' names a manifest column, but there is no data"):
        load_config({"data": {"dir": str(tmp_path), "group": "patient"}, "base": {"name": "SmallCNN"}})
    manifest = patient_manifest(tmp_path, range(5))
    with pytest.raises(
        DataError, match=r"data.group: .* has no column 'subject' \(its columns: path, label, patient\)"
    ):
        discover_splits(DataConfig(manifest=manifest, group="subject"))
    with pytest.raises(DataError, match=r"data.group: pattern 'case_\\d\+' names no group for any of the 15 files"):
        discover_splits(DataConfig(manifest=manifest, group=r"case_\d+"))


def test_tune_folds_keep_groups_whole(tmp_path):
    from tlcli.tuning.objective import fold_splits, resolve_folds

    splits = discover_splits(DataConfig(manifest=patient_manifest(tmp_path, range(20)), group="patient"))
    samples = splits.train + splits.val
    labels = np.array([s.label for s in samples], dtype=np.int32)
    groups = groups_of(samples)
    folds = fold_splits(labels, 5, seed=0, groups=groups)
    held = np.concatenate([out for _, out in folds])
    assert sorted(held.tolist()) == list(range(len(samples)))  # every image held out exactly once
    for fit, out in folds:
        assert not {groups[i] for i in fit} & {groups[i] for i in out}  # no group on both sides of a fold
    hot = np.eye(2, dtype=np.uint8)[labels]  # multi-label labels: GroupKFold, still whole
    assert all(not {groups[i] for i in fit} & {groups[i] for i in out} for fit, out in fold_splits(hot, 4, 0, groups))
    # the number of folds is bounded by the number of groups; the output says groups are kept whole
    assert resolve_folds("auto", 60, False, ("a", 30), groups=3)[0] == 3
    assert "keeping each of the 20 groups of data.group in one fold" in resolve_folds(5, 60, False, groups=20)[1]
    with pytest.raises(ConfigError, match="tune.folds: 5 folds, but data.group names 3 groups"):
        resolve_folds(5, 60, False, groups=3)


def test_fold_method_names_the_splitter_tune_records():
    from tlcli.data.groups import fold_method

    assert fold_method(stratified=True, grouped=True) == "StratifiedGroupKFold"
    assert fold_method(stratified=False, grouped=True) == "GroupKFold"
    assert fold_method(stratified=True, grouped=False) == "StratifiedKFold"


def given_splits(root: Path) -> Path:
    """train/ and val/ folders of tiny images in which patient 05 has images on both sides."""
    rng = np.random.default_rng(0)
    for split, patients in (("train", range(0, 6)), ("val", range(5, 8))):
        for label, name in enumerate(("a", "b")):
            for patient in patients:
                write_image(root / split / name / f"patient_{patient:02d}_{name}.png", class_pattern(label, 8, rng))
    return root


def test_check_reports_a_group_that_crosses_given_splits_and_exits_4(cli, tmp_path):
    root = given_splits(tmp_path / "data")
    assert cli("check", root, "--json").exit_code == 0  # no groups given: nothing to report
    result = cli("check", root, "--group", r"patient_\d+", "--json")
    assert result.exit_code == 4, result.stderr
    problems = json.loads(result.stdout)["problems"]
    assert problems["counts"]["crossing_groups"] == 1
    assert problems["crossing_groups"][0]["group"] == "patient_05"
    assert problems["crossing_groups"][0]["splits"] == {"train": 2, "val": 2}
    table = cli("check", root, "--group", r"patient_\d+")
    assert table.exit_code == 4 and "groups in more than one split (1)" in table.stdout
    assert "patient_05: train 2, val 2" in table.stdout and "1 group in more than one split" in table.stdout
    # training's own pass reports the same (warned at its start, in data_problems.json, refused by --strict)
    from tlcli.data.problems import find_problems

    trained = find_problems(discover_splits(DataConfig(dir=root, group=r"patient_\d+")), {})
    assert trained.count == 1 and trained.warnings()[0].startswith("groups: 1 group has images in more than one split")
    bad = cli("check", root, "--group", "patient_(")
    assert bad.exit_code == 2 and bad.stderr.strip().startswith("error: --group: 'patient_(' is not a valid regular")


def test_check_reads_a_manifest_group_column_across_its_split_column(cli, tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for patient, split in ((1, "train"), (2, "train"), (3, "val"), (1, "val")):
        for label in (0, 1):
            path = write_image(tmp_path / f"img_{patient}_{split}_{label}.png", class_pattern(label, 8, rng))
            rows.append({"path": path.name, "label": "ab"[label], "split": split, "subject": f"s{patient}"})
    with open(tmp_path / "labels.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = cli("check", "--manifest", tmp_path / "labels.csv", "--group", "subject", "--json")
    assert result.exit_code == 4, result.stderr
    crossing = json.loads(result.stdout)["problems"]["crossing_groups"]
    assert [g["group"] for g in crossing] == ["s1"] and crossing[0]["splits"] == {"train": 2, "val": 2}
