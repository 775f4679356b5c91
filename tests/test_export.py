"""`tlcli export`: every format written, reloaded by its own runtime and checked against the run's Keras model."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from conftest import label_squares, make_image_folder, tiny_config

from tlcli.export.formats import FILES, FORMATS, Gate

# Tiny models are not what the int8 (and fp16) defaults are for: here they are loosened, and the figures only checked.
LOOSE = {
    "tflite-int8": Gate(min_agreement=0.0, max_accuracy_drop=100.0),
    "tflite-fp16": Gate(min_agreement=0.9, max_difference=0.05),
}
FLOAT = ("saved_model", "tflite", "onnx")

# Every test here trains a run and exports it (the pure pieces: tests/test_export_units.py).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run3(tmp_path_factory) -> Path:
    """3 separable classes at 32 px with flip and rotation augmentation (which must not reach any artifact)."""
    from tlcli import load_config, train

    root = tmp_path_factory.mktemp("export")
    make_image_folder(root / "data" / "train", {"a": 20, "b": 20, "c": 20}, size=32, seed=1)
    make_image_folder(root / "data" / "val", {"a": 7, "b": 7, "c": 7}, size=32, seed=2)
    config = tiny_config(
        root / "data",
        root / "runs",
        data={"image_size": 32, "augment": {"flip": "horizontal", "rotation": 0.05}},
        train={"epochs": 4},
    )
    return train(load_config(config)).run_dir


@pytest.fixture(scope="module")
def exported(run3):
    """One `--format all` export for the module."""
    from tlcli.export import export_run

    return export_run(run3, ["all"], gates=LOOSE)


def keras_reference(run_dir: Path):
    """The run's validation images, decoded as training did, and the Keras model's probabilities of them."""
    from tlcli.export.images import load_split_images
    from tlcli.inference.probabilities import predict_probabilities
    from tlcli.modeling.build import load_run_model
    from tlcli.runs.records import read_labels, read_model_info

    names, info = read_labels(run_dir), read_model_info(run_dir)
    val = load_split_images(run_dir, "val", names, info, 500)
    return val, predict_probabilities(load_run_model(run_dir, names), val.images, 32, info.binary)


def test_every_format_is_written_recorded_and_reloaded(run3, exported):
    from tlcli.export import ExportedModel

    export_dir = exported.export_dir
    assert export_dir.parent == run3 / "export" and re.fullmatch(r"\d{8}-\d{6}-all", export_dir.name)
    assert not [p for p in export_dir.parent.iterdir() if p.name.startswith(".")], (
        "the staging folder is gone once published"
    )
    assert sorted(p.name for p in export_dir.iterdir()) == sorted(
        [*FILES.values(), "export.json", "labels.txt", "MODEL_CARD.md"]
    )
    assert (export_dir / "labels.txt").read_text() == "a\nb\nc\n"
    record = json.loads((export_dir / "export.json").read_text())
    assert (
        record["task"] == "single_label"
        and record["class_names"] == ["a", "b", "c"]
        and record["run"]["dir"] == str(run3.resolve())
    )
    assert record["model"]["image_size"] == [32, 32] and record["model"]["channels"] == 3
    assert {"tlcli", "tensorflow", "keras", "tf2onnx", "onnxruntime", "ai-edge-litert"} <= set(record["versions"])
    assert list(record["formats"]) == list(FORMATS)
    for name in FORMATS:
        entry = record["formats"][name]
        assert entry["file"] == FILES[name] and entry["bytes"] > 0 and entry["export_seconds"] > 0
        (tensor,) = entry["inputs"]
        assert tensor["shape"] == [None, 32, 32, 3], name  # a dynamic batch everywhere
        assert tensor["dtype"] == ("uint8" if name == "tflite-int8" else "float32")
        assert entry["outputs"][0]["shape"] == [None, 3]
        model = ExportedModel(export_dir / FILES[name])
        assert (model.format, model.class_names, model.image_size, model.channels) == (
            name,
            ["a", "b", "c"],
            (32, 32),
            3,
        )
    assert (
        record["formats"]["saved_model"]["signature"] == record["formats"]["tflite"]["signature"] == "serving_default"
    )
    assert record["formats"]["saved_model"]["inputs"][0]["name"] == "image"
    # The generated images peak at 230: calibration is anchored so raw uint8 pixels go in unchanged.
    assert (
        record["formats"]["tflite-int8"]["inputs"][0]["scale"] == 1.0
        and record["formats"]["tflite-int8"]["inputs"][0]["zero_point"] == 0
    )
    assert record["formats"]["tflite-int8"]["outputs"][0]["dtype"] == "uint8"


def test_the_export_carries_the_model_card_with_its_formats_and_parity(run3, exported):
    """MODEL_CARD.md in the export folder: the run's card, with this export's formats and their parity figures; the
    run's own card lists the export."""
    copy = (exported.export_dir / "MODEL_CARD.md").read_text()
    own = (run3 / "MODEL_CARD.md").read_text()
    assert "3 classes, in output order: `a`, `b`, `c`" in copy and "This export:" in copy
    assert f"`export/{exported.export_dir.name}`:" in own
    for result in exported.formats:
        row = f"| `{result.format}` | `{result.file}` | {result.bytes / 1e6:.2f} MB | {result.parity.agreement:.4f} |"
        assert row in copy and row in own, result.format


def test_parity_is_measured_on_the_runs_validation_files(run3, exported):
    from tlcli.runs.provenance import read_split

    record = json.loads((exported.export_dir / "export.json").read_text())
    val = len(read_split(run3, "val"))
    assert val == 21 and record["parity_images"]["images"] == val and record["parity_images"]["split"] == "val"
    assert record["calibration_images"]["images"] == len(read_split(run3, "train")) == 60  # fewer than 300: all of them
    assert record["calibration_images"]["range_anchored"] and record["calibration_images"]["pixel_range"][1] < 255
    for name in FORMATS:
        parity = record["formats"][name]["parity"]
        assert (
            parity["images"] == val
            and 0 <= parity["agreement"] <= 1
            and 0 <= parity["accuracy"] <= 1
            and parity["max_difference"] >= 0
        )
    for name in FLOAT:  # the default float gates hold: augmentation stayed out, preprocessing stayed in
        assert record["formats"][name]["gate"] == {
            "min_agreement": 0.995,
            "max_difference": 0.001,
            "max_accuracy_drop": None,
        }
        assert record["formats"][name]["passed"] and record["formats"][name]["parity"]["max_difference"] < 1e-4
    assert record["formats"]["saved_model"]["parity"]["keras_accuracy"] > 0.8
    assert record["passed"] and exported.passed


def test_exported_model_predicts_the_keras_models_labels(run3, exported):
    from tlcli.errors import UserError
    from tlcli.export import ExportedModel

    val, reference = keras_reference(run3)
    for name in FORMATS:
        probabilities = ExportedModel(exported.export_dir / FILES[name]).predict_probabilities(val.images)
        assert probabilities.shape == (21, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=0.02), name
        assert (probabilities.argmax(axis=1) == reference.argmax(axis=1)).all(), name
    assert ExportedModel(exported.export_dir, format="onnx").format == "onnx"
    with pytest.raises(UserError, match="several formats"):
        ExportedModel(exported.export_dir)
    with pytest.raises(UserError, match="takes images of shape"):
        ExportedModel(exported.export_dir / "model.tflite").predict_probabilities(np.zeros((1, 16, 16, 3), np.uint8))


def test_sigmoid_head_gives_two_class_probabilities(binary_run, run_copy, tmp_path):
    """binary_run: the session's sigmoid single-unit head (conftest), two classes, output p of class 1."""
    from tlcli.export import ExportedModel, export_run

    binary_run = run_copy(binary_run)  # the export is written into the run: a copy of the shared one
    result = export_run(binary_run, ["tflite", "tflite-int8"], gates=LOOSE)
    alone = export_run(binary_run, ["onnx"], out=tmp_path / "onnx")  # ONNX without a SavedModel traced first
    val, reference = keras_reference(binary_run)
    assert reference.shape == (12, 2) and alone.passed
    for name, folder in (("tflite", result.export_dir), ("tflite-int8", result.export_dir), ("onnx", alone.export_dir)):
        model = ExportedModel(folder / FILES[name])
        assert model.binary and model.outputs[0].shape == [None, 1]
        probabilities = model.predict_probabilities(val.images)
        assert probabilities.shape == (12, 2) and np.allclose(probabilities.sum(axis=1), 1)
        assert (probabilities.argmax(axis=1) == reference.argmax(axis=1)).all(), name
    assert result.formats[0].passed and result.formats[0].parity.images == 12


def test_verify_passes_an_intact_export(cli, exported):
    out = cli("export", "--verify", exported.export_dir, "--json")
    assert out.exit_code == 0, out.stderr
    document = json.loads(out.stdout)
    assert document["verified"] and document["passed"] and document["formats"]["onnx"]["parity"]["images"] == 21


def test_verify_fails_a_savedmodel_without_its_preprocessing(cli, run3, exported, tmp_path):
    """A SavedModel of the same weights whose `preprocess` layer was dropped: loads fine, answers wrong."""
    import keras

    from tlcli.export.convert import write_saved_model
    from tlcli.modeling.build import load_run_model

    copy = shutil.copytree(exported.export_dir, tmp_path / "copied")
    model = load_run_model(run3)
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for layer in model.layers[1:]:
        if layer.name not in ("augmentation", "preprocess"):
            x = layer(x)
    shutil.rmtree(copy / "saved_model")
    write_saved_model(keras.Model(inputs, x), copy / "saved_model")
    out = cli("export", "--verify", copy, "--format", "saved_model", "--quiet")
    assert out.exit_code == 3, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "saved_model: " in out.stderr and "tflite" not in out.stderr


def test_verify_fails_a_tflite_file_of_another_run(cli, binary_run, exported, tmp_path):
    from tlcli.export import export_run

    other = export_run(binary_run, ["tflite"], out=tmp_path / "other")
    copy = shutil.copytree(exported.export_dir, tmp_path / "copied")
    shutil.copy(other.export_dir / "model.tflite", copy / "model.tflite")
    out = cli("export", "--verify", copy, "--json")
    assert out.exit_code == 3
    document = json.loads(out.stdout)
    assert not document["formats"]["tflite"]["passed"] and document["formats"]["onnx"]["passed"]
    assert "tflite: " in out.stderr and "1 outputs but 3 class names" in out.stderr


def test_verify_fails_reordered_labels(cli, exported, tmp_path):
    copy = shutil.copytree(exported.export_dir, tmp_path / "copied")
    (copy / "labels.txt").write_text("b\na\nc\n")
    out = cli("export", "--verify", copy, "--format", "tflite")
    assert out.exit_code == 3 and "labels.txt" in out.stderr


def test_a_failed_gate_exits_3_and_still_publishes(cli, run3, exported, tmp_path):
    difference = exported.record["formats"]["tflite"]["parity"]["max_difference"]
    assert difference > 0  # TFLite's kernels are not TensorFlow's: never bit-identical
    out = cli(
        "export",
        run3,
        "--format",
        "tflite",
        "--out",
        tmp_path / "strict",
        "--max-difference",
        f"tflite={difference / 2}",
        "--json",
    )
    assert (
        out.exit_code == 3
        and "tflite: max probability difference" in out.stderr
        and "--max-difference tflite=X" in out.stderr
    )
    record = json.loads((tmp_path / "strict" / "export.json").read_text())
    assert not record["passed"] and record["failures"] and (tmp_path / "strict" / "model.tflite").is_file()
    assert sorted(p.name for p in (tmp_path / "strict").iterdir()) == [
        "MODEL_CARD.md",
        "export.json",
        "labels.txt",
        "model.tflite",
    ]  # the converter's SavedModel is gone
    assert json.loads(out.stdout)["formats"]["tflite"]["passed"] is False


def test_an_export_never_overwrites_another(cli, run3, monkeypatch, tmp_path):
    import tlcli.runs.folder
    from tlcli.export import export_run

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2030, 1, 2, 3, 4, 5)

    monkeypatch.setattr(tlcli.runs.folder, "datetime", Frozen)
    first = export_run(run3, ["saved_model"], parity_images=5)
    written = (first.export_dir / "export.json").read_text()
    second = export_run(run3, ["saved_model"], parity_images=5)
    assert (first.export_dir.name, second.export_dir.name) == (
        "20300102-030405-saved_model",
        "20300102-030405-saved_model-2",
    )
    assert (first.export_dir / "export.json").read_text() == written and first.formats[0].parity.images == 5
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    out = cli("export", run3, "--out", tmp_path / "taken")
    assert out.exit_code == 2 and "exists and is not empty" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("module", "fmt"), [("onnxruntime", "onnx"), ("tf2onnx", "onnx"), ("ai_edge_litert", "tflite-int8")]
)
def test_a_missing_extra_is_one_line_before_any_work(cli, run3, monkeypatch, module, fmt):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    before = sorted((run3 / "export").iterdir()) if (run3 / "export").exists() else []
    out = cli("export", run3, "--format", fmt)
    assert out.exit_code == 2
    assert (
        out.stderr.strip()
        == f'error: --format {fmt}: {module} is not installed; install the export extra: pip install "tlcli[export]"'
    )
    assert (sorted((run3 / "export").iterdir()) if (run3 / "export").exists() else []) == before


def test_a_run_that_is_not_completed_is_refused(cli, run3, tmp_path):
    from tlcli.runs.records import read_run_record

    copy = shutil.copytree(run3, tmp_path / "run", ignore=shutil.ignore_patterns("export"))
    dataclasses.replace(read_run_record(copy), status="failed", error="boom").write(copy)
    out = cli("export", copy)
    assert (
        out.exit_code == 2
        and "the run is failed, not completed" in out.stderr
        and len(out.stderr.strip().splitlines()) == 1
    )
    assert not (copy / "export").exists()


def test_options_are_checked_before_any_work(cli, run3):
    """The parsers themselves: tests/test_export_units.py."""
    for args, message in (
        (("--format", "tflite8"), "unknown format 'tflite8'; did you mean tflite"),
        (("--min-agreement", "tflite=97"), "out of range"),
        (("--max-difference", "onnx"), "expected FORMAT=NUMBER"),
        (("--calibration-images", "0"), "at least 1"),
    ):
        out = cli("export", run3, *args)
        assert out.exit_code == 2 and message in out.stderr, (args, out.stderr)
    out = cli("export")
    assert out.exit_code == 2 and "--verify EXPORT_DIR" in out.stderr


# ----------------------------------------------------------------------------- predict and evaluate with an artifact


def top1_labels(text: str, fmt: str) -> dict[str, str]:
    """path -> top-1 label, read back from `tlcli predict` output of any format (table: the plain-text table)."""
    import csv
    import io

    if fmt == "jsonl":
        return {row["path"]: row["label"] for row in map(json.loads, text.splitlines())}
    if fmt == "json":
        return {row["path"]: row["label"] for row in json.loads(text)["predictions"]}
    if fmt == "csv":
        return {row["path"]: row["label"] for row in csv.DictReader(io.StringIO(text))}
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    return {row[0]: row[1] for row in rows}


def formatted(result, fmt: str) -> str:
    from tlcli.cli.predict import _table_text
    from tlcli.inference.formats import format_predictions

    return _table_text(result) if fmt == "table" else format_predictions(result, fmt)


def test_predicting_with_each_exported_format_gives_the_runs_labels_in_every_output_format(run3, exported):
    from tlcli import predict
    from tlcli.export import predict_artifact

    val = run3.parent.parent / "data" / "val"
    by_run = predict([val], run=run3, top_k=2, unknown=False)  # the default score is not the artifacts' (msp only)
    assert len(by_run.predictions) == 21 and not by_run.errors
    for name in FORMATS:
        result = predict_artifact([val], exported.export_dir / FILES[name], top_k=2)
        assert result.model["format"] == name and result.model["path"] == str(
            (exported.export_dir / FILES[name]).absolute()
        )
        assert result.run_dir == run3.resolve() and result.class_names == ["a", "b", "c"] and result.top_k == 2
        assert json.loads(formatted(result, "json"))["model"]["runtime"] == {
            "saved_model": "tensorflow",
            "onnx": "onnxruntime",
        }.get(name, "ai_edge_litert")
        for fmt in ("jsonl", "json", "csv", "table"):
            assert top1_labels(formatted(result, fmt), fmt) == top1_labels(formatted(by_run, fmt), fmt), (name, fmt)


def test_predict_model_on_the_command_line(cli, run3, exported):
    val = run3.parent.parent / "data" / "val"
    expected = cli("predict", val, "--run", run3, "-f", "csv", "--quiet", "--no-unknown")  # artifacts: no knn_energy
    out = cli("predict", val, "--model", exported.export_dir / "model-int8.tflite", "-f", "csv")
    assert out.exit_code == 0 and f"using tflite-int8 model {exported.export_dir / 'model-int8.tflite'}" in out.stderr
    assert top1_labels(out.stdout, "csv") == top1_labels(expected.stdout, "csv")
    table = cli("predict", val, "--model", exported.export_dir / "saved_model", "-f", "table", "--quiet")
    assert table.exit_code == 0 and "21 images, saved_model model saved_model" in table.stdout
    several = cli("predict", val, "--model", exported.export_dir)
    assert (
        several.exit_code == 2
        and len(several.stderr.strip().splitlines()) == 1
        and "holds several formats" in several.stderr
    )
    both = cli("predict", val, "--model", exported.export_dir / "model.onnx", "--run", run3)
    assert both.exit_code == 2 and "--model and --run exclude each other" in both.stderr


def test_evaluate_model_writes_the_full_report_and_names_the_artifact(cli, run3, exported):
    trained = json.loads(
        next((run3 / "eval").glob("*-val/metrics.json")).read_text()
    )  # the run's own final validation report
    for name in ("onnx", "tflite-int8"):
        out = cli("evaluate", run3, "--model", exported.export_dir / FILES[name], "--split", "val", "--json")
        assert out.exit_code == 0, out.stderr
        document = json.loads(out.stdout)
        eval_dir = Path(document["eval_dir"])
        assert eval_dir.parent == run3 / "eval" and eval_dir.name.endswith(f"-val-{name}")
        assert {
            "metrics.json",
            "predictions.csv",
            "confusion_matrix.csv",
            "confusion_matrix.png",
            "reliability.png",
            "mistakes.png",
        } <= {p.name for p in eval_dir.iterdir()}
        metrics = json.loads((eval_dir / "metrics.json").read_text())
        assert metrics["model"] == {
            "path": str((exported.export_dir / FILES[name]).absolute()),
            "format": name,
            "runtime": document["model"]["runtime"],
        }
        assert metrics["dataset"]["images"] == trained["dataset"]["images"] == 21 and metrics[
            "accuracy"
        ] == pytest.approx(exported.record["formats"][name]["parity"]["accuracy"], abs=1e-6)
    assert metrics["accuracy"] <= 1 and "model" not in trained
    onnx = json.loads(next((run3 / "eval").glob("*-val-onnx/metrics.json")).read_text())
    assert onnx["accuracy"] == trained["accuracy"] and onnx["confusion_matrix"] == trained["confusion_matrix"]


def test_evaluate_model_refuses_an_artifact_of_other_classes(cli, run3, binary_run, tmp_path):
    from tlcli.export import export_run

    other = export_run(binary_run, ["onnx"], out=tmp_path / "binary")
    before = sorted(p.name for p in (run3 / "eval").iterdir())
    out = cli("evaluate", run3, "--model", other.export_dir / "model.onnx")
    assert (
        out.exit_code == 2
        and len(out.stderr.strip().splitlines()) == 1
        and "takes 32x32x3 images, classes cats, dogs; the run" in out.stderr
    )
    assert sorted(p.name for p in (run3 / "eval").iterdir()) == before  # refused before any report is begun


# ----------------------------------------------------------------------------- multi-label


ML_CLASSES = ("blue", "green", "red")


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory) -> Path:
    """A tiny multi-label run: every subset of three labels (the empty one included), thresholds 0.4 for every class."""
    from conftest import write_image

    from tlcli import load_config, train

    root = tmp_path_factory.mktemp("export-multilabel")
    rng = np.random.default_rng(0)
    subsets = [tuple(name for bit, name in enumerate(ML_CLASSES) if mask >> bit & 1) for mask in range(8)]
    lines = ["path,labels"]
    for i in range(64):
        write_image(root / "img" / f"{i:03d}.png", label_squares(subsets[i % 8], rng))
        lines.append(f"img/{i:03d}.png,{'|'.join(subsets[i % 8])}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    raw = tiny_config(
        root, root / "runs", head={"threshold": 0.4}, train={"epochs": 6, "learning_rate": 0.01, "l2": 0.0}
    )
    raw["data"] = {
        "manifest": str(root / "labels.csv"),
        "multi_label": True,
        "columns": {"label": "labels"},
        "image_size": 16,
        "batch_size": 8,
    }
    return train(load_config(raw)).run_dir


@pytest.fixture(scope="module")
def ml_exported(ml_run):
    from tlcli.export import export_run

    return export_run(ml_run, ["tflite", "tflite-int8", "onnx"], gates=LOOSE)


def test_a_multi_label_run_is_exported_with_per_label_parity(ml_run, ml_exported):
    from tlcli.export.images import load_split_images
    from tlcli.runs.records import read_model_info

    record = json.loads((ml_exported.export_dir / "export.json").read_text())
    assert (
        record["task"] == "multi_label"
        and record["class_names"] == list(ML_CLASSES)
        and record["label_separator"] == "|"
    )
    assert record["thresholds"] == dict.fromkeys(ML_CLASSES, 0.4) and "threshold" in record["model"]["output"]
    assert (ml_exported.export_dir / "labels.txt").read_text() == "blue\ngreen\nred\n"
    val = load_split_images(ml_run, "val", list(ML_CLASSES), read_model_info(ml_run), 500)
    assert val.labels.shape == (len(val), 3) and record["parity_images"]["images"] == len(val) > 5
    for name in ("tflite", "tflite-int8", "onnx"):
        entry = record["formats"][name]
        assert entry["outputs"][0]["shape"] == [None, 3]
        parity = entry["parity"]
        assert 0 <= parity["image_agreement"] <= parity["agreement"] <= 1 and 0 <= parity["accuracy"] <= 1
    for name in ("tflite", "onnx"):  # the default float gates, per label
        assert record["formats"][name]["gate"]["min_agreement"] == 0.995 and record["formats"][name]["passed"]
        assert (
            record["formats"][name]["parity"]["agreement"]
            == record["formats"][name]["parity"]["image_agreement"]
            == 1.0
        )
    assert record["formats"]["onnx"]["parity"]["keras_accuracy"] > 0.8


def test_multi_label_artifacts_predict_and_evaluate_like_the_run(cli, ml_run, ml_exported):
    from tlcli import predict
    from tlcli.export import predict_artifact

    images = ml_run.parent.parent / "img"
    by_run = {p.path: p.labels for p in predict([images], run=ml_run).predictions}
    for name in ("tflite", "onnx"):
        result = predict_artifact([images], ml_exported.export_dir / FILES[name])
        assert (
            result.multi_label
            and result.thresholds == (0.4, 0.4, 0.4)
            and {p.path: p.labels for p in result.predictions} == by_run
        )
    out = cli("predict", images, "--model", ml_exported.export_dir / "model.onnx", "-f", "csv", "--quiet")
    header, *rows = out.stdout.splitlines()
    assert out.exit_code == 0 and header == "path,labels,blue,green,red,error" and len(rows) == 64
    out = cli("evaluate", ml_run, "--model", ml_exported.export_dir / "model.tflite", "--json")
    assert out.exit_code == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert (
        metrics["task"] == "multi_label"
        and metrics["model"]["format"] == "tflite"
        and metrics["per_class"]["red"]["threshold"] == 0.4
    )
    assert {"per_class.csv", "pr_curves.png"} <= {p.name for p in Path(metrics["eval_dir"]).iterdir()}


def test_verify_checks_a_multi_label_exports_thresholds(ml_exported, tmp_path):
    from tlcli.export import verify_export

    assert verify_export(ml_exported.export_dir, formats=["onnx"]).passed
    copy = shutil.copytree(ml_exported.export_dir, tmp_path / "copied")
    record = json.loads((copy / "export.json").read_text())
    record["thresholds"]["red"] = 0.9
    (copy / "export.json").write_text(json.dumps(record))
    result = verify_export(copy, formats=["onnx"])
    assert not result.passed and any("thresholds differ" in line for line in result.failures)
