"""`tlcli check --deep`: a planted near-duplicate across splits is leakage (exit 4), a clean folder exits 0, the
embeddings come from the feature cache training uses (a second run is all cache hits, under training's key), the
check folder holds its files, and --json has everything under "deep".

Real ImageNet weights (MobileNet 0.25 from ../shared, at 64 px) embed the images: `weights: none` is refused, since
random features say nothing about duplicates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import blob_folder, needs_real_weights, one_line, write_config

pytestmark = needs_real_weights


def make_folder(root: Path, planted: bool) -> Path:
    return blob_folder(root, planted)


def deep_config(path: Path, data: Path, **base) -> Path:
    return write_config(
        path,
        {
            "data": {"dir": str(data), "image_size": 64},
            "base": {"name": "MobileNet", "args": {"alpha": 0.25}, "weights": "imagenet", **base},
        },
    )


@pytest.mark.slow
def test_a_planted_copy_is_leakage_and_a_second_run_takes_every_embedding_from_trainings_cache(
    cli, tmp_path, real_weights, monkeypatch
):
    data = make_folder(tmp_path / "data", planted=True)
    config = deep_config(tmp_path / "c.yaml", data)
    result = cli("check", data, "--deep", "--config", config, "--out", tmp_path / "check", "--json")
    assert result.exit_code == 4, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "clean"  # the plain check sees no exact duplicate: only --deep finds this one
    deep = document["deep"]
    near = deep["near_duplicates"]
    assert near["leakage"] == 1
    (pair,) = [p for p in near["pairs"] if p["confirmed"]]
    assert (Path(pair["a"]).name, Path(pair["b"]).name) == ("red3.png", "copy_of_red3.jpg")
    assert (pair["split_a"], pair["split_b"]) == ("train", "val") and pair["similarity"] >= 0.75
    assert deep["base"] == "MobileNet" and deep["embedded"] == 25 and deep["from_cache"] == 0
    assert {"label_suspects", "learning_curve", "folder", "seconds"} <= set(deep)
    for suspect in deep["label_suspects"]["suspects"]:
        assert {"rank", "path", "split", "given", "suggested", "confidence"} <= set(suspect)
    assert [c["name"] for c in deep["learning_curve"]["classes"]] == ["green", "red"]
    folder = Path(deep["folder"])
    assert folder == (tmp_path / "check").absolute()
    expected = {"near_duplicates.csv", "label_suspects.csv", "learning_curve.csv", "report.json"}
    assert expected | {"near_duplicates.png", "learning_curve.png"} <= {p.name for p in folder.iterdir()}
    assert "copy_of_red3.jpg" in (folder / "near_duplicates.csv").read_text()

    # Without the copy: clean, exit 0, every embedding from the cache, the tables, a new folder under ./checks/.
    (data / "val" / "red" / "copy_of_red3.jpg").unlink()
    monkeypatch.chdir(tmp_path)
    clean = cli("check", data, "--deep", "--config", config)
    assert clean.exit_code == 0, clean.stderr
    assert "near-duplicates: none" in clean.stdout and "per-class learning curve" in clean.stdout
    assert "no near-duplicate leakage" in clean.stdout
    (again,) = (tmp_path / "checks").iterdir()
    report = json.loads((again / "report.json").read_text())
    assert report["from_cache"] == report["embedded"] == 24  # nothing extracted again

    from tlcli.features.cut import Cut
    from tlcli.features.store import store_for
    from tlcli.progress import Reporter
    from tlcli.training.prepare import prepare

    prepared = prepare(config, runs_dir=tmp_path / "runs", reporter=Reporter(), apply_runtime=False)
    assert report["cache_key"] == store_for(prepared.config, prepared.info, prepared.model, Cut("pool")).key


def test_refusals_name_the_flag_and_the_fix(cli, tmp_path, real_weights):
    import tlcli

    assert tlcli.audit_dataset.__doc__ and tlcli.write_check_folder.__doc__ and tlcli.AuditReport  # the public API
    data = make_folder(tmp_path / "data", planted=False)
    random = deep_config(tmp_path / "random.yaml", data, weights="none")
    result = cli("check", data, "--deep", "--config", random, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "random features say nothing" in one_line(result)
    assert not (tmp_path / "out").exists()
    inside = cli("check", data, "--deep", "--out", data / "checks")
    assert inside.exit_code == 2 and "inside" in one_line(inside) and not (data / "checks").exists()
    (tmp_path / "taken").mkdir()
    taken = cli("check", data, "--deep", "--out", tmp_path / "taken")
    assert taken.exit_code == 2 and "already exists" in one_line(taken)
    assert cli("check", data, "--strict").exit_code == 2  # --strict belongs to --deep
    default = cli("check", data, "--deep", "--out", tmp_path / "default")  # MobileNetV2's weights are not there
    assert default.exit_code == 2 and "tlcli weights import" in one_line(default) and "--base" in one_line(default)
