"""`tlcli train`'s data-trust step (tlcli.training.trust) and `tlcli evaluate`'s training copies
(tlcli.evaluation.leakage): a near-copy of a training image in the test folder is found from the features the run
cached, recorded in data_trust.json and metrics.json, warned, refused with `data.leakage: error`, and evaluate
reports the accuracy without it. Real ImageNet weights (MobileNet 0.25 at 64 px); random weights skip the step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import blob_folder, needs_real_weights, one_line, write_config

SPLITS = (("train", 8), ("val", 3), ("test", 3))


def trust_config(path: Path, data: Path, runs: Path, **data_keys) -> Path:
    return write_config(
        path,
        {
            "name": "trust",
            "seed": 1,
            "data": {"dir": str(data), "image_size": 64, "batch_size": 8, **data_keys},
            "base": {"name": "MobileNet", "args": {"alpha": 0.25}, "weights": "imagenet"},
            "train": {"epochs": 1, "l2": 0.0},
            "probe": "off",
            "output": {"runs_dir": str(runs)},
        },
    )


def only_run(runs: Path) -> Path:
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return run_dir


@needs_real_weights
@pytest.mark.slow
def test_a_copy_in_the_test_folder_is_leakage_recorded_warned_and_left_out_by_evaluate(cli, tmp_path, real_weights):
    data = blob_folder(tmp_path / "data", planted=True, copy_to="test", splits=SPLITS)
    config = trust_config(tmp_path / "c.yaml", data, tmp_path / "runs")
    result = cli("train", config)
    assert result.exit_code == 0, result.stderr
    assert "near-duplicate pair(s) cross the splits" in result.stderr + result.stdout
    run_dir = only_run(tmp_path / "runs")
    record = json.loads((run_dir / "metrics.json").read_text())["data_trust"]
    assert record["leakage"] == 1 and record["near_duplicates"] == 1 and record["file"] == "data_trust.json"
    assert record["label_suspects"] is not None
    trust = json.loads((run_dir / "data_trust.json").read_text())
    (pair,) = [p for p in trust["near_duplicates"]["pairs"] if p["confirmed"]]
    assert {Path(pair["a"]).name, Path(pair["b"]).name} == {"red3.png", "copy_of_red3.jpg"}
    assert {pair["split_a"], pair["split_b"]} == {"train", "test"}

    evaluated = cli("evaluate", run_dir, "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    copies = json.loads(evaluated.stdout)["training_copies"]
    assert copies["known"] and copies["images"] == 1
    assert Path(copies["pairs"][0]["image"]).name == "copy_of_red3.jpg"
    assert Path(copies["pairs"][0]["training_image"]).name == "red3.png"
    assert copies["accuracy_without"] is not None  # over the 6 other test images
    shown = cli("evaluate", run_dir)
    assert "1 image(s) are near-copies of training images" in shown.stdout

    elsewhere = blob_folder(tmp_path / "elsewhere", planted=False, splits=(("more", 2),)) / "more"
    other = cli("evaluate", run_dir, "--data", elsewhere, "--json")  # files the run never searched
    assert json.loads(other.stdout)["training_copies"]["known"] is False


@needs_real_weights
@pytest.mark.slow
def test_leakage_error_stops_the_run_before_fitting_and_off_skips_the_search(cli, tmp_path, real_weights):
    data = blob_folder(tmp_path / "data", planted=True, copy_to="val", splits=SPLITS[:2])
    refused = cli("train", trust_config(tmp_path / "c.yaml", data, tmp_path / "runs", leakage="error"))
    assert refused.exit_code == 2
    assert one_line(refused).startswith("error: data.leakage: error: 1 near-duplicate pair(s) cross the splits")
    run_dir = only_run(tmp_path / "runs")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert (run_dir / "data_trust.json").is_file() and not (run_dir / "model.keras").exists()

    off = trust_config(tmp_path / "off.yaml", data, tmp_path / "runs-off", leakage="off", label_suspects=False)
    assert cli("train", off).exit_code == 0
    record = json.loads((only_run(tmp_path / "runs-off") / "metrics.json").read_text())["data_trust"]
    assert record == {"skipped": "data.leakage: off and data.label_suspects: false"}


def test_random_weights_skip_the_step_and_say_why(binary_run):
    record = json.loads((binary_run / "metrics.json").read_text())["data_trust"]
    assert "random weights" in record["skipped"]
    assert not (binary_run / "data_trust.json").exists()


def test_leakage_off_is_read_as_yaml_writes_it(tmp_path):
    from tlcli.config import load_config

    (tmp_path / "c.yaml").write_text(f"data: {{dir: {tmp_path}, leakage: off}}\n")  # YAML 1.1 reads off as false
    assert load_config(tmp_path / "c.yaml").data.leakage == "off"
