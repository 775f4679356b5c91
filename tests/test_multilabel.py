"""Multi-label classification (issue 14): both label forms, the sigmoid head and its loss, thresholds, metrics,
evaluate, predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import label_squares, tiny_config, write_image
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_score,
    recall_score,
)

from tlcli import evaluate, load_config, predict, resume, train
from tlcli.config.schema import DataConfig
from tlcli.data.manifest import read_manifest
from tlcli.data.splits import discover_splits
from tlcli.errors import ConfigError, RunError, UserError
from tlcli.evaluation.multilabel import choose_thresholds, compute_multilabel_metrics
from tlcli.training.selection import ProbeFit, fit_probe, head_penalty, warm_start

CLASSES = ("blue", "green", "red")


def write_rows(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """64 images, every subset of the three labels eight times (the empty set included), and two manifests of them:
    labels joined in one cell, and one 0/1 column per class."""
    root = tmp_path_factory.mktemp("multilabel")
    rng = np.random.default_rng(0)
    subsets = [tuple(name for bit, name in enumerate(CLASSES) if mask >> bit & 1) for mask in range(8)]
    joined, columns = [], []
    for i in range(64):
        labels = subsets[i % 8]
        write_image(root / "img" / f"{i:03d}.png", label_squares(labels, rng))
        joined.append({"path": f"img/{i:03d}.png", "labels": "|".join(labels)})
        columns.append({"path": f"img/{i:03d}.png", **{name: int(name in labels) for name in CLASSES}})
    return root, write_rows(root / "joined.csv", joined), write_rows(root / "columns.csv", columns)


def multi_config(manifest: Path, runs_dir: Path, **sections) -> dict:
    raw = tiny_config(manifest.parent, runs_dir, **sections)
    raw["data"] = {
        "manifest": str(manifest),
        "multi_label": True,
        "columns": {"label": "labels"},
        "image_size": 16,
        "batch_size": 8,
        **sections.get("data", {}),
    }
    return raw


@pytest.fixture(scope="module")
def scratch(pool):
    """A SmallCNN trained from scratch on the joined-labels manifest (0.5 thresholds, each class's positives weighted by
    its rarity)."""
    root, joined, _ = pool
    return train(
        load_config(
            multi_config(
                joined,
                root / "runs",
                name="scratch",
                train={"epochs": 4, "learning_rate": 0.01, "l2": 0.0, "class_weight": "auto"},
            )
        )
    )


@pytest.fixture(scope="module")
def frozen(pool, scratch):
    """The defaults on the scratch run's frozen base: the probe's penalty, exact start, refit, thresholds chosen per
    class."""
    root, joined, _ = pool
    raw = multi_config(joined, root / "runs", name="frozen", head={"threshold": "per_class"})
    raw["base"] = {"run": str(scratch.run_dir), "trainable": "none"}
    raw["train"] = {"learning_rate": 0.01}
    raw["probe"] = "auto"
    return train(load_config(raw))


def report_of(run_dir: Path) -> tuple[Path, dict]:
    folder = sorted((run_dir / "eval").glob("*-val"))[-1]
    return folder, json.loads((folder / "metrics.json").read_text())


# ----------------------------------------------------------------------------- the labels


def test_both_label_forms_list_the_same_images_with_the_same_label_sets(pool):
    root, joined, columns = pool
    a = discover_splits(DataConfig(manifest=joined, multi_label=True, columns={"label": "labels"}))
    b = discover_splits(DataConfig(manifest=columns, multi_label=True, label_columns=list(CLASSES)))
    assert a.class_names == b.class_names == list(CLASSES)
    for split in ("train", "val"):
        assert [(s.relpath, s.label) for s in getattr(a, split)] == [(s.relpath, s.label) for s in getattr(b, split)]
    everything = a.train + a.val
    assert sum(1 for s in everything if s.label == ()) == 8  # an empty cell is an image with no label, not a bad row
    assert a.counts("train")["red"] == sum(1 for s in a.train if 2 in s.label)


def test_an_empty_cell_is_valid_a_missing_cell_or_a_bad_flag_is_a_bad_row(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(6):
        write_image(tmp_path / f"{i}.png", label_squares(("red",), rng))
    cells = tmp_path / "cells.csv"
    cells.write_text("path,labels\n0.png,red|green\n1.png,\n2.png\n3.png,green\n4.png, red | green \n5.png,red\n")
    read = read_manifest(DataConfig(manifest=cells, multi_label=True, columns={"label": "labels"}))
    rows = {row.written: row.labels for row in read.rows}
    assert rows["1.png"] == () and rows["4.png"] == rows["0.png"] == (
        "green",
        "red",
    )  # spaces around labels are not part of them
    assert [(b.row, b.problem.split(" (")[0]) for b in read.bad] == [(4, "no label cell")]
    flags = tmp_path / "flags.csv"
    flags.write_text("path,red,green\n0.png,1,0\n1.png,yes,no\n2.png,2,0\n3.png,0,1\n")
    read = read_manifest(DataConfig(manifest=flags, multi_label=True, label_columns=["red", "green"]))
    assert [row.labels for row in read.rows] == [("red",), ("red",), ("green",)]
    assert [b.row for b in read.bad] == [4] and "'red' is '2', not 0 or 1" in read.bad[0].problem


def test_multi_label_needs_a_manifest_and_label_columns_need_multi_label(tmp_path):
    with pytest.raises(ConfigError, match="class folders give each image one label"):
        load_config({"data": {"dir": str(tmp_path), "multi_label": True}})
    with pytest.raises(ConfigError, match="set data.multi_label: true"):
        load_config({"data": {"manifest": str(tmp_path / "m.csv"), "label_columns": ["a", "b"]}})
    with pytest.raises(ConfigError, match="head.threshold"):
        load_config({"data": {"manifest": str(tmp_path / "m.csv"), "multi_label": True}, "head": {"threshold": 1.5}})


# ----------------------------------------------------------------------------- figures and thresholds


def test_every_metric_equals_scikit_learns():
    rng = np.random.default_rng(3)
    labels = (rng.random((40, 4)) < [0.5, 0.3, 0.1, 0.7]).astype(int)
    labels[:, 3] = 0  # a class with no positives: no AP, excluded from mAP
    probabilities = np.clip(labels * 0.6 + rng.random((40, 4)) * 0.5, 0, 1)
    thresholds = [0.5, 0.4, 0.6, 0.5]
    m = compute_multilabel_metrics(probabilities, labels, ["a", "b", "c", "d"], thresholds)
    predicted = (probabilities >= thresholds).astype(int)
    for average in ("micro", "macro", "weighted", "samples"):
        assert m[f"{average}_avg"]["f1"] == pytest.approx(
            f1_score(labels, predicted, average=average, zero_division=0), abs=1e-6
        )
        assert m[f"{average}_avg"]["precision"] == pytest.approx(
            precision_score(labels, predicted, average=average, zero_division=0), abs=1e-6
        )
        assert m[f"{average}_avg"]["recall"] == pytest.approx(
            recall_score(labels, predicted, average=average, zero_division=0), abs=1e-6
        )
    ap = [average_precision_score(labels[:, c], probabilities[:, c]) for c in range(3)]
    assert [m["per_class"][n]["average_precision"] for n in "abc"] == pytest.approx(ap, abs=1e-6) and m["per_class"][
        "d"
    ]["average_precision"] is None
    assert m["map"] == pytest.approx(np.mean(ap), abs=1e-6)
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-6)
    assert m["hamming_loss"] == pytest.approx(hamming_loss(labels, predicted), abs=1e-6)
    assert m["loss"] == pytest.approx(
        float(
            keras.losses.binary_crossentropy(labels.astype("float32"), probabilities.astype("float32")).numpy().mean()
        ),
        abs=1e-5,
    )
    assert [m["per_class"][n]["f1"] for n in "abcd"] == pytest.approx(
        f1_score(labels, predicted, average=None, zero_division=0), abs=1e-6
    )


def test_chosen_thresholds_reach_each_classes_best_f1():
    rng = np.random.default_rng(4)
    labels = (rng.random((60, 3)) < [0.5, 0.2, 0.0]).astype(int)
    probabilities = np.clip(labels * 0.3 + rng.random((60, 3)) * 0.7, 0, 1)
    chosen = choose_thresholds(probabilities, labels)
    for c in range(2):
        best = max(
            f1_score(labels[:, c], probabilities[:, c] >= t, zero_division=0) for t in np.unique(probabilities[:, c])
        )
        assert f1_score(labels[:, c], probabilities[:, c] >= chosen[c]) == pytest.approx(best)
    assert chosen[2] == 0.5  # no positives to choose on


def test_the_probe_and_the_head_optimise_the_same_objective():
    """Warm-started from the per-class exact fits, the Keras head predicts the same and its penalised loss has no
    gradient: the penalty conversion is right."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 6)).astype("float32")
    y = (x[:, :3] + rng.normal(scale=0.8, size=(80, 3)) > 0).astype("float32")
    alpha = [0.3, 0.5, 0.7]
    probe = fit_probe(x, y, C=0.3, num_classes=3, alpha=alpha)
    layer = keras.layers.Dense(3, activation="sigmoid")
    layer.build((None, 6))
    warm_start(layer, probe, binary=False)
    assert np.asarray(layer(x)) == pytest.approx(probe.probabilities(x), abs=1e-5)
    penalty = head_penalty(ProbeFit(0.3, 1 / (2 * 0.3 * len(x)), 0.0, 0.0), 3, False, multi_label=True)
    loss = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=np.array(alpha, dtype="float32"), gamma=0.0
    )
    import tensorflow as tf

    with tf.GradientTape() as tape:
        objective = loss(y, layer(x)) + penalty * tf.reduce_sum(layer.kernel**2)
    gradient = tape.gradient(objective, layer.kernel)
    assert float(tf.reduce_max(tf.abs(gradient))) < 1e-4


# ----------------------------------------------------------------------------- training, evaluate, predict


def test_a_multi_label_run_records_its_task_thresholds_and_report(scratch):
    run = scratch.run_dir
    info = json.loads((run / "model.json").read_text())
    assert info["task"] == "multi_label" and info["activation"] == "sigmoid" and info["thresholds"] == [0.5, 0.5, 0.5]
    model = keras.models.load_model(run / "model.keras", safe_mode=True)  # nothing custom to register
    assert model.output_shape == (None, 3) and model.get_layer("predictions").activation.__name__ == "sigmoid"
    truth, guess = np.array([[1.0, 0.0, 1.0]]), np.array([[0.8, 0.1, 0.6]])
    assert float(model.loss(truth, guess)) == pytest.approx(
        float(keras.losses.binary_crossentropy(truth, guess)[0]), rel=1e-5
    )  # its compiled loss loads back and works
    assert {"val_map", "val_loss", "val_binary_accuracy"} <= set(scratch.metrics.final)
    assert "val_accuracy" not in scratch.metrics.final
    folder, m = report_of(run)
    assert {p.name for p in folder.iterdir()} == {
        "metrics.json",
        "predictions.csv",
        "per_class.csv",
        "pr_curves.png",
        "mistakes.png",
    }
    with open(folder / "predictions.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    truth = np.array([[int(n in r["true_labels"].split("|")) for n in CLASSES] for r in rows])
    probabilities = np.array([[float(r[n]) for n in CLASSES] for r in rows])
    assert m["map"] == pytest.approx(
        np.mean([average_precision_score(truth[:, c], probabilities[:, c]) for c in range(3)]), abs=1e-5
    )
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    assert m["loss"] == pytest.approx(
        -(truth * np.log(clipped) + (1 - truth) * np.log(1 - clipped)).mean(), abs=1e-5
    )  # unweighted, unlike training's val_loss
    assert m["loss"] != pytest.approx(
        scratch.metrics.final["val_loss"], abs=1e-3
    )  # class_weight: auto weighs training's loss
    assert all(r["predicted_labels"] == "|".join(n for n in CLASSES if float(r[n]) >= 0.5) for r in rows)
    assert "map" in (run / "history.csv").read_text().splitlines()[0]


def test_evaluate_gates_on_multi_label_figures_and_reads_the_runs_labels(scratch, pool, cli):
    run = scratch.run_dir
    again = evaluate(run)
    assert again.metrics["map"] == pytest.approx(report_of(run)[1]["map"], abs=1e-6)
    assert again.metrics["images"] == scratch.metrics.images["val"]
    on_manifest = evaluate(run, data=pool[1])  # the run's column names and separator
    assert on_manifest.metrics["images"] == 64 and on_manifest.metrics["images_without_labels"]["true"] == 8
    failed = cli("evaluate", run, "--fail-under", "map=1.01", "--fail-under", "per_class.red.f1=0", "--json")
    assert failed.exit_code == 3 and "map" in failed.stderr and "per_class.red.f1" not in failed.stderr
    assert json.loads(failed.stdout)["map"] == again.metrics["map"]  # the report is still given
    unknown = cli("evaluate", run, "--fail-under", "accuracy=0.5")
    assert unknown.exit_code == 2 and "accuracy" in unknown.stderr
    with pytest.raises(UserError, match="a multi-label run evaluates on a manifest"):
        evaluate(run, data=pool[0] / "img")


def test_predict_gives_every_label_above_its_threshold_in_every_format(scratch, pool, cli, tmp_path):
    run = scratch.run_dir
    images = sorted((pool[0] / "img").glob("*.png"))[:5]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    result = predict([*images, tmp_path / "broken.png"], run=run)
    assert result.multi_label and result.thresholds == (0.5, 0.5, 0.5)
    for p in result.predictions[:5]:
        assert p.labels == tuple(name for name, prob in p.scores if prob >= 0.5)
        assert [name for name, _ in p.scores] == list(CLASSES)
    paths = [str(p) for p in images]
    jsonl = cli("predict", *paths, "--run", run, "-f", "jsonl")
    objects = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [o["labels"] for o in objects] == [list(p.labels) for p in result.predictions[:5]]
    assert objects[0]["probabilities"] == dict(result.predictions[0].scores)
    document = json.loads(cli("predict", *paths, "--run", run, "-f", "json").stdout)
    assert document["task"] == "multi_label" and document["thresholds"] == dict(zip(CLASSES, [0.5] * 3))
    table = cli("predict", *paths, "--run", run, "-f", "csv")
    rows = list(csv.DictReader(table.stdout.splitlines()))
    assert list(rows[0]) == ["path", "labels", *CLASSES, "error"]
    assert [r["labels"] for r in rows] == ["|".join(p.labels) for p in result.predictions[:5]]
    broken = cli("predict", str(tmp_path / "broken.png"), "--run", run, "-f", "jsonl")
    assert broken.exit_code == 4 and json.loads(broken.stdout.splitlines()[0])["labels"] is None
    shown = cli("predict", *paths, "--run", run, "-f", "table")
    assert "labels" in shown.stdout and ("(none)" in shown.stdout or all(p.labels for p in result.predictions[:5]))


def test_defaults_on_a_frozen_base_choose_the_penalty_and_each_threshold(frozen):
    metrics = frozen.metrics
    assert metrics.selection["selected"] and metrics.linear_probe["val_map"] is not None
    thresholds = json.loads((frozen.run_dir / "model.json").read_text())["thresholds"]
    assert (
        len(thresholds) == 3 and all(0 < t < 1 for t in thresholds) and thresholds != [0.5] * 3
    )  # chosen, not the default
    _, m = report_of(frozen.run_dir)
    assert [m["per_class"][n]["threshold"] for n in CLASSES] == thresholds
    assert "the thresholds" in metrics.figures["val"]


def test_class_weight_auto_weighs_each_classes_positives_by_its_rarity(pool, tmp_path):
    from tlcli.data.batches import positive_weights

    labels = np.array([[1, 0], [1, 0], [1, 1], [1, 0]])
    assert positive_weights(labels, "auto", ["common", "rare"]) == pytest.approx(
        [0.05, 0.75]
    )  # clipped to [0.05, 0.95]
    assert positive_weights(labels, {"rare": 3.0}, ["common", "rare"]) == pytest.approx([0.5, 0.75])
    assert positive_weights(labels, "none", ["common", "rare"]) is None


def test_resume_extends_a_multi_label_run_and_refuses_relabelled_images(pool, tmp_path):
    root, joined, _ = pool
    manifest = tmp_path / "copy.csv"
    text = joined.read_text().replace("img/", str(root / "img") + "/")
    manifest.write_text(text)
    run = train(load_config(multi_config(manifest, tmp_path / "runs", train={"epochs": 1}))).run_dir
    extended = resume(run, overrides=["train.epochs=2"])
    assert (
        extended.metrics.epochs["total"] == 2 and json.loads((run / "model.json").read_text())["task"] == "multi_label"
    )
    manifest.write_text(text.replace(",red\n", ",green\n", 1))  # one image's label set changed
    with pytest.raises(RunError, match="changed since the run started"):
        resume(run, overrides=["train.epochs=3"])


def test_a_label_joined_by_the_separator_hints_at_multi_label(pool):
    rows = [
        {"path": f"img/{i:03d}.png", "labels": labels, "split": split}
        for i, (labels, split) in enumerate(
            [("red", "train"), ("green", "train"), ("green|red", "train"), ("red", "val")]
        )
    ]
    manifest = write_rows(pool[0] / "joined-single.csv", rows)
    splits = discover_splits(DataConfig(manifest=manifest, columns={"label": "labels"}))
    assert "green|red" in splits.class_names  # single-label: one class of its own, as written
    assert any(
        "'green|red' looks like several labels" in w and "set data.multi_label: true" in w for w in splits.warnings
    )
