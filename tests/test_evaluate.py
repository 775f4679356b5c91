"""`tlcli evaluate` and the report `tlcli train` writes: files, figures, gates, errors."""

from __future__ import annotations

import csv
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder, tiny_config

REPORT_FILES = (
    "metrics.json",
    "predictions.csv",
    "confusion_matrix.csv",
    "confusion_matrix.png",
    "reliability.png",
    "mistakes.png",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One small run for the whole module: 3 classes, a val folder with 2 mislabelled files, and a test folder."""
    from tlcli import train

    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    make_image_folder(data / "train", {"a": 16, "b": 16, "c": 16}, seed=1)
    make_image_folder(data / "val", {"a": 6, "b": 6, "c": 6}, seed=2)
    make_image_folder(data / "test", {"a": 5, "b": 5, "c": 5}, seed=3)
    # Two images of class a filed under b: a model that learned the classes gets them wrong,
    # so accuracy stays below 1 and mistakes.png has something to show.
    for name in ("a_000.png", "a_001.png"):
        shutil.move(data / "val" / "a" / name, data / "val" / "b" / f"moved_{name}")
    result = train(tiny_config(data, root / "runs"))
    return result.run_dir


def eval_dirs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "eval").iterdir()) if (run_dir / "eval").is_dir() else []


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def evaluate_json(cli, *args) -> dict:
    result = cli("evaluate", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# ----------------------------------------------------------------------------- what training writes


def test_training_writes_its_validation_report_and_curves(trained):
    reports = [d for d in eval_dirs(trained) if d.name.endswith("-val")]
    assert reports, "tlcli train wrote no eval/<stamp>-val folder"
    report = reports[0]
    for name in REPORT_FILES:
        assert (report / name).is_file(), name
    assert (trained / "curves.png").read_bytes().startswith(PNG_MAGIC)
    metrics = json.loads((report / "metrics.json").read_text())
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(trained_metrics["final"]["val_accuracy"], abs=0.005)
    assert metrics["dataset"]["images"] == trained_metrics["images"]["val"] == 18


# ----------------------------------------------------------------------------- tlcli evaluate


def test_evaluate_on_val_matches_training_and_writes_every_file(cli, trained):
    metrics = evaluate_json(cli, trained, "--split", "val", "--no-unknown")  # training's figures: uncalibrated
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(trained_metrics["final"]["val_accuracy"], abs=0.005)
    assert metrics["loss"] == pytest.approx(trained_metrics["final"]["val_loss"], abs=0.01)
    assert metrics["accuracy"] < 1.0  # the two mislabelled files

    eval_dir = Path(metrics["eval_dir"])
    # training's own report may have taken `<same second>-val`: then this one is `-val-2`
    assert eval_dir.parent == trained / "eval" and re.fullmatch(r"\d{8}-\d{6}-val(-\d+)?", eval_dir.name)
    for name in REPORT_FILES:
        assert (eval_dir / name).is_file(), name
    for name in ("confusion_matrix.png", "reliability.png", "mistakes.png"):
        assert (eval_dir / name).read_bytes().startswith(PNG_MAGIC), name
    assert json.loads((eval_dir / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]

    rows = read_csv(eval_dir / "predictions.csv")
    assert list(rows[0]) == ["path", "true_label", "predicted_label", "confidence", "correct"]
    assert len(rows) == 18
    assert sum(r["correct"] == "true" for r in rows) / 18 == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert all(r["correct"] == ("true" if r["true_label"] == r["predicted_label"] else "false") for r in rows)
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)

    matrix = read_csv(eval_dir / "confusion_matrix.csv")
    assert [r["true \\ predicted"] for r in matrix] == ["a", "b", "c"]
    assert sum(int(v) for r in matrix for k, v in r.items() if k != "true \\ predicted") == 18
    assert metrics["confusion_matrix"]["labels"] == ["a", "b", "c"]
    assert np.trace(np.array(metrics["confusion_matrix"]["matrix"])) == sum(r["correct"] == "true" for r in rows)


def test_evaluate_defaults_to_the_test_set(cli, trained):
    metrics = evaluate_json(cli, trained)
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["dataset"]["name"] == "test" and metrics["dataset"]["images"] == 15
    assert metrics["accuracy"] == pytest.approx(trained_metrics["final"]["test_accuracy"], abs=0.005)
    assert set(metrics["per_class"]) == {"a", "b", "c"}
    assert sum(c["support"] for c in metrics["per_class"].values()) == 15
    assert {"precision", "recall", "f1", "support"} <= set(metrics["macro_avg"]) and set(
        metrics["weighted_avg"]
    ) == set(metrics["macro_avg"])
    assert metrics["top3_accuracy"] == 1.0  # 3 classes: the true class is always in the top 3
    assert 0.0 <= metrics["calibration"]["ece"] <= 1.0
    assert sum(b["count"] for b in metrics["calibration"]["bins"]) == 15


def test_evaluate_prints_the_per_class_table_and_headline(cli, trained):
    result = cli("evaluate", trained, "--split", "val")
    assert result.exit_code == 0, result.stderr
    for text in ("precision", "recall", "macro avg", "weighted avg", "accuracy", "calibration error", "report:"):
        assert text in result.stdout
    assert all(f"│ {name} " in result.stdout for name in ("a", "b", "c"))


def test_evaluations_never_overwrite_each_other(trained):
    from tlcli.runs.folder import publish_stamped_dir, staged_dir

    now = datetime(2030, 1, 2, 3, 4, 5)
    published = []
    for index in range(3):
        with staged_dir(trained / "eval", "val") as staged:
            (staged / "metrics.json").write_text(str(index))
            published.append(publish_stamped_dir(staged, trained / "eval", "val", now))
    assert [p.name for p in published] == ["20300102-030405-val", "20300102-030405-val-2", "20300102-030405-val-3"]
    assert [(p / "metrics.json").read_text() for p in published] == ["0", "1", "2"]  # none overwrote another
    assert not [p for p in (trained / "eval").iterdir() if p.name.startswith(".")]  # no staging folder left
    for folder in published:
        (folder / "metrics.json").unlink()
        folder.rmdir()


def test_evaluate_on_another_folder(cli, trained, tmp_path):
    folder = make_image_folder(tmp_path / "more", {"a": 3, "c": 4}, seed=9)  # class b absent: support 0
    (folder / "c" / "broken.png").write_text("not an image")
    metrics = evaluate_json(cli, trained, "--data", folder)
    assert metrics["dataset"]["name"] == "more" and metrics["dataset"]["images"] == 7
    assert metrics["dataset"]["skipped"] == 1 and metrics["skipped_files"][0]["path"].endswith("broken.png")
    assert metrics["per_class"]["b"]["support"] == 0
    assert len(read_csv(Path(metrics["eval_dir"]) / "predictions.csv")) == 7


# ----------------------------------------------------------------------------- quality gates


def test_fail_under_exits_3_naming_the_metric_and_0_when_reachable(cli, trained):
    result = cli("evaluate", trained, "--split", "val", "--fail-under", "accuracy=0.99")
    assert result.exit_code == 3
    assert "accuracy" in result.stderr and "0.99" in result.stderr
    assert "precision" in result.stdout  # the report is still printed and written

    accuracy = evaluate_json(cli, trained, "--split", "val")["accuracy"]
    result = cli(
        "evaluate",
        trained,
        "--split",
        "val",
        "--fail-under",
        f"accuracy={accuracy}",
        "--fail-under",
        "per_class.a.support=1",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["accuracy"] == accuracy


def test_fail_under_on_a_nested_metric(cli, trained):
    result = cli("evaluate", trained, "--split", "val", "--fail-under", "macro_avg.f1=1.01", "-q")
    assert result.exit_code == 3
    assert "macro_avg.f1" in result.stderr
    assert result.stdout == ""


def test_fail_over_gates_lower_is_better_figures(cli, trained):
    figures = evaluate_json(cli, trained, "--split", "val")
    result = cli(
        "evaluate", trained, "--split", "val", "--fail-over", "loss=0.0001", "--fail-over", "calibration.ece=100", "-q"
    )
    assert result.exit_code == 3
    assert f"loss {figures['loss']:.4f} > 0.0001" in result.stderr and "calibration.ece" not in result.stderr
    result = cli(
        "evaluate",
        trained,
        "--split",
        "val",
        "--fail-over",
        f"loss={figures['loss'] + 1}",
        "--fail-under",
        "accuracy=0",
        "-q",
    )
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(
    ("option", "spec", "expected"),
    [
        ("--fail-over", "los=0.5", "--fail-over: unknown metric 'los'; did you mean loss?"),
        ("--fail-over", "loss", "--fail-over: expected METRIC=NUMBER such as loss=0.5"),
    ],
)
def test_bad_fail_over_gates_exit_2_naming_the_option(cli, trained, option, spec, expected):
    result = cli("evaluate", trained, option, spec)
    assert result.exit_code == 2
    assert expected in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("acuracy=0.9", "did you mean accuracy?"),
        ("macro_avg.f=0.5", "did you mean macro_avg.f1?"),
        ("accuracy", "expected METRIC=NUMBER"),
        ("accuracy=high", "expected METRIC=NUMBER"),
    ],
)
def test_bad_gates_exit_2_before_any_work(cli, trained, spec, expected):
    before = eval_dirs(trained)
    result = cli("evaluate", trained, "--fail-under", spec)
    assert result.exit_code == 2
    assert expected in result.stderr and result.stderr.count("\n") == 1
    assert eval_dirs(trained) == before


# ----------------------------------------------------------------------------- errors


def test_unknown_class_folder_in_data_exits_2_naming_it(cli, trained, tmp_path):
    folder = make_image_folder(tmp_path / "other", {"a": 2, "zebra": 2})
    result = cli("evaluate", trained, "--data", folder)
    assert result.exit_code == 2
    assert "'zebra'" in result.stderr and "not a class of the run" in result.stderr


def test_missing_data_folder_and_missing_test_split_exit_2(cli, trained, tmp_path):
    result = cli("evaluate", trained, "--data", tmp_path / "nope")
    assert result.exit_code == 2 and "folder not found" in result.stderr
    result = cli("evaluate", trained, "--split", "train")
    assert result.exit_code == 2 and "--split" in result.stderr


def test_not_a_run_or_run_without_model_exits_2(cli, trained, tmp_path):
    result = cli("evaluate", tmp_path)
    assert result.exit_code == 2 and "not a tlcli run folder" in result.stderr
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("model.keras", "eval", "tensorboard"))
    result = cli("evaluate", copy)
    assert result.exit_code == 2 and "no model.keras" in result.stderr


def test_a_run_without_test_split_evaluates_val(cli, trained, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("eval", "tensorboard"))
    (copy / "splits" / "test.csv").unlink()
    metrics = evaluate_json(cli, copy)
    assert metrics["dataset"]["name"] == "val" and metrics["dataset"]["images"] == 18
    result = cli("evaluate", copy, "--split", "test")
    assert result.exit_code == 2 and "no splits/test.csv" in result.stderr


# ----------------------------------------------------------------------------- the pieces


def test_compute_metrics_by_hand():
    from tlcli.evaluation.metrics import compute_metrics

    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.3, 0.6]])
    labels = np.array([0, 1, 1, 2])
    metrics = compute_metrics(probabilities, labels, ["x", "y", "z"], top_k=2)
    assert metrics["accuracy"] == 0.75
    assert metrics["top2_accuracy"] == 1.0
    assert metrics["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.7, 0.3, 0.6])), abs=1e-6)
    assert metrics["per_class"]["y"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3, abs=1e-6),
        "support": 2,
    }
    assert metrics["per_class"]["x"]["precision"] == 0.5
    assert metrics["confusion_matrix"]["matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    # Confidences 0.9, 0.7, 0.6, 0.6: bins (0.8, 0.9] -> 1/1 right, (0.6, 0.7] -> 1/1 right, (0.5, 0.6] -> 1/2 right.
    expected_ece = (1 * 0.1 + 1 * 0.3 + 2 * abs(0.5 - 0.6)) / 4
    assert metrics["calibration"]["ece"] == pytest.approx(expected_ece, abs=1e-6)


def test_sigmoid_outputs_become_two_class_probabilities():
    from tlcli.inference.probabilities import to_class_probabilities

    assert np.allclose(to_class_probabilities(np.array([[0.8], [0.1]]), binary=True), [[0.2, 0.8], [0.9, 0.1]])


def test_plot_curves_marks_the_fine_tune_boundary(tmp_path):
    from tlcli.evaluation.plots import plot_curves

    history = tmp_path / "history.csv"
    rows = ["epoch,phase,phase_epoch,accuracy,loss,val_accuracy,val_loss"]
    rows += [f"{e},train,{e},0.{5 + e},{1 / e:.3f},0.{4 + e},{1.2 / e:.3f}" for e in (1, 2)]
    rows += [f"{e},fine_tune,{e - 2},0.{5 + e},{1 / e:.3f},0.{4 + e},{1.2 / e:.3f}" for e in (3, 4)]
    history.write_text("\n".join(rows) + "\n")
    assert plot_curves(history, tmp_path / "curves.png") is True
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_MAGIC)
    assert plot_curves(tmp_path / "missing.csv", tmp_path / "none.png") is False
    assert not (tmp_path / "none.png").exists()


def test_grayscale_mistakes_grid(tmp_path):
    from tlcli.evaluation.plots import plot_mistakes

    images = np.zeros((3, 8, 8, 1), dtype=np.uint8)
    probabilities = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    plot_mistakes(probabilities, np.array([0, 0, 0]), ["p0", "p1", "p2"], ["x", "y"], images, tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes().startswith(PNG_MAGIC)


def test_training_report_from_probabilities_without_images(tmp_path):
    """When training ran on cached features it has probabilities but no decoded images: the report is still complete."""
    from types import SimpleNamespace

    from tlcli.data import Sample
    from tlcli.evaluation.training_report import ReportJob, write_training_report
    from tlcli.progress import Reporter

    folder = make_image_folder(tmp_path / "imgs", {"x": 2, "y": 2})
    files = sorted(folder.rglob("*.png"))
    val = SimpleNamespace(labels=np.array([0, 0, 1, 1]), samples=[Sample(f, 0, f.name) for f in files], skipped=[])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    evaluation = write_training_report(
        ReportJob.for_split(run_dir, val, ["x", "y"], top_k=0, probabilities=probabilities), reporter=Reporter()
    )
    assert evaluation is not None and evaluation.metrics["accuracy"] == 0.5
    for name in REPORT_FILES:
        assert (evaluation.eval_dir / name).is_file(), name
    assert not (run_dir / "curves.png").exists()  # no history.csv: no curves, and no failure
