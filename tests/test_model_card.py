"""MODEL_CARD.md: written by training, brought up to date by evaluate and export, readable for an older run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import yaml
from conftest import write_image

from tlcli.evaluation.model_card import CARD, write_model_card


def card_of(path: Path) -> tuple[dict, str]:
    """(front matter, body) of a card."""
    text = path.read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def interval(pair) -> str:
    return f"{pair[0]:.3f} to {pair[1]:.3f}"


def test_training_writes_a_card_naming_classes_base_figures_and_how_to_load(frozen_source, run_copy, tmp_path):
    _, run_dir, _ = frozen_source
    front, body = card_of(run_dir / CARD)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert front["library_name"] == "tlcli" and front["base_model"] == "SmallCNN" and front["base_weights"] == "none"
    assert front["classes"] == ["a", "b", "c"] and front["task"] == "single_label"
    shown = {f"{m['split']}_{m['name']}": m["interval_95"] for m in front["metrics"]}
    assert shown == metrics["intervals"]  # every final accuracy, with its interval
    assert "3 classes, in output order: `a`, `b`, `c`" in body
    assert "Weights: none: random initialisation" in body
    for key, pair in metrics["intervals"].items():
        assert f"| {key.partition('_')[2]} | {metrics['final'][key]:.4f} | {interval(pair)} |" in body
    assert "| test | 18 | 6 | 6 | 6 |" in body  # images per split and class
    assert "(n, 16, 16, 3)" in body and "0-255" in body and f"tlcli predict photos/ --run {run_dir}" in body
    # The loading snippet works as printed, beside the model.
    copy = run_copy(run_dir)
    write_image(copy / "photo.jpg", np.full((20, 30, 3), 120, np.uint8))
    snippet = re.search(r"```python\n(.*?)```", body, re.S).group(1)
    printed = []
    exec(snippet.replace('"model.keras"', f'"{copy}/model.keras"').replace('"labels.json"', f'"{copy}/labels.json"')
         .replace('"photo.jpg"', f'"{copy}/photo.jpg"'), {"print": lambda *a: printed.append(a)})  # fmt: skip
    assert printed[0][0] in ("a", "b", "c") and 0 < printed[0][1] <= 1


def plant_trust(run_dir: Path) -> None:
    """What the data-trust step writes when it finds one pair across the splits and one label suspect."""
    from tlcli.audit import AuditReport, NearDuplicatePair, NearDuplicates, SuspectFindings, SuspectRow

    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["data_trust"] = {"leakage": 1, "near_duplicates": 2, "label_suspects": 1, "notes": [], "file": "x"}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    pairs = (
        NearDuplicatePair("/d/train/a/1.png", "/d/test/a/9.png", "train", "test", 0.97, 0.98, True),
        NearDuplicatePair("/d/train/b/2.png", "/d/train/b/3.png", "train", "train", 0.96, 0.95, True),
    )
    suspect = SuspectRow("/d/train/c/7.png", "train", "c", "a", 0.93, 0.02)
    trust = AuditReport(
        "", "MobileNet", (64, 64), {"train": 30, "val": 9, "test": 9}, 0, 0.5,
        NearDuplicates(pairs, (), 2, 0), SuspectFindings((suspect,), "own", 5, 39), None,
    )  # fmt: skip
    (run_dir / "data_trust.json").write_text(json.dumps(trust.to_dict()))


def test_limitations_name_leakage_suspects_few_images_and_the_calibration_error(frozen_source, run_copy):
    run_dir = run_copy(frozen_source[1])
    plant_trust(run_dir)
    _, body = card_of(write_model_card(run_dir))
    limits = body.split("## Known limitations")[1].split("\n## ")[0]
    assert "Leakage: 1 near-duplicate pair(s) cross the splits" in limits
    assert "`/d/train/a/1.png` (train) and `/d/test/a/9.png` (test)" in limits and "/d/train/b/2.png" not in limits
    assert "`/d/train/c/7.png` (train): labelled `c`, looks like `a` (0.93)" in limits
    train = json.loads((run_dir / "dataset.json").read_text())["counts"]["train"]
    few = [name for name, n in train.items() if n < 20]
    assert few and all(f"`{name}` {train[name]}" in limits for name in few)
    (report,) = (run_dir / "eval").glob("*-val")
    ece = json.loads((report / "metrics.json").read_text())["calibration"]["ece"]
    assert f"off from its accuracy by {ece:.3f}" in limits
    assert "The val figures are optimistic; training used that split: selection" in limits  # validation chose the epoch


def test_evaluate_adds_its_figures_with_intervals_to_the_card(frozen_source, run_copy):
    from tlcli import evaluate

    run_dir = run_copy(frozen_source[1])
    evaluation = evaluate(run_dir, explain=False)
    _, body = card_of(run_dir / CARD)
    assert f"`eval/{evaluation.eval_dir.name}` (18 test images" in body
    for key, pair in evaluation.metrics["intervals"].items():
        assert f"| {key} | " in body and interval(pair) in body
    (run_dir / CARD).unlink()  # a run without a card (trained with it off) is left without one
    evaluate(run_dir, explain=False, split="val")
    assert not (run_dir / CARD).exists()


def plant_export(run_dir: Path, label: str = "20260101-000000-tflite") -> Path:
    folder = run_dir / "export" / label
    folder.mkdir(parents=True)
    parity = {"images": 19, "agreement": 0.9474, "max_difference": 0.0123, "accuracy": 0.8947, "keras_accuracy": 0.9}
    formats = {"tflite": {"file": "model.tflite", "bytes": 871234, "parity": parity, "passed": True}}
    record = {"created": "2026-01-01T00:00:00+00:00", "formats": formats, "parity_images": {"images": 19}}
    (folder / "export.json").write_text(json.dumps(record))
    return folder


def test_the_card_lists_exports_and_an_export_folder_gets_its_own_copy(binary_run, run_copy):
    run_dir = run_copy(binary_run)
    _, before = card_of(run_dir / CARD)
    assert "Not exported yet" in before
    folder = plant_export(run_dir)
    _, body = card_of(write_model_card(run_dir))
    row = "| `tflite` | `model.tflite` | 0.87 MB | 0.9474 | 0.012 | 0.8947 (0.9000) | pass |"
    assert "`export/20260101-000000-tflite`:" in body and row in body
    copy = write_model_card(run_dir, export_dir=folder)
    assert copy == folder / CARD
    _, copied = card_of(copy)
    assert "This export:" in copied and row in copied and "tlcli predict --model" in copied
    assert f'keras.models.load_model("{run_dir}/model.keras")' in copied  # the export folder has no model.keras
    assert "p = float(probabilities[0])  # the probability of labels[1]" in copied  # a sigmoid head


def test_an_older_run_without_the_newer_files_still_gets_a_card(binary_run, run_copy):
    run_dir = run_copy(binary_run)
    for name in ("dataset.json", "env.json", "config.yaml", "data_trust.json"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "eval")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("format_version", "intervals", "data_trust"):
        metrics.pop(key)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))  # as tlcli wrote it before intervals
    front, body = card_of(write_model_card(run_dir))
    assert front["classes"] == ["cats", "dogs"] and front["base_weights"] == "none"
    assert "dataset.json is missing" in body and "env.json is missing" in body and "config.yaml: missing" in body
    assert "these intervals were computed for this card" in body
    assert all(m["interval_95"] for m in front["metrics"])  # Wilson, from the final accuracies and image counts
    assert "not searched (a run from before tlcli searched them)" in body
    (run_dir / "labels.json").write_text("{}")  # damaged: said, not raised
    _, body = card_of(write_model_card(run_dir))
    assert "## Files the card could not read" in body and "labels.json" in body.split("could not read")[1]
