"""Images of no class: the rule training writes (unknown.json), `predict`'s `unknown` label in every format,
`--accept` and `--no-unknown`, runs from before the rule, `evaluate --unknown`, and the decision surviving export."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder, tiny_config, train_shared

from tlcli.inference.unknown import UNKNOWN_FEATURES_FILE, UNKNOWN_FILE


def val_folder(run_dir: Path) -> Path:
    return run_dir.parent.parent / "data" / "val"


def no_class_folder(tmp_path: Path) -> Path:
    """Images unlike any class: another pattern generator's seed and size."""
    return make_image_folder(tmp_path / "no-class", {"other": 8}, size=48, seed=11, suffix=".jpg") / "other"


@pytest.fixture(scope="module")
def msp_run(tmp_path_factory, shared_cache):
    """A run whose score is the calibrated maximum probability: one the exported artifacts can apply."""
    root = tmp_path_factory.mktemp("msp")
    make_image_folder(root / "data" / "train", {"a": 12, "b": 12, "c": 12}, seed=6)
    make_image_folder(root / "data" / "val", {"a": 6, "b": 6, "c": 6}, seed=7)
    config = tiny_config(root / "data", root / "runs", predict={"unknown": {"score": "msp", "accept": 0.8}})
    return train_shared(config, shared_cache)


def test_training_writes_the_rule_and_its_threshold_accepts_the_accept_fraction(binary_run, msp_run):
    from tlcli import predict, read_unknown_rule

    record = json.loads((binary_run / UNKNOWN_FILE).read_text())  # the default score
    assert record["score"] == "knn_energy" and record["accept"] == 0.95 and record["temperature"] > 0
    assert {"ece_before", "ece_after", "threshold", "formula", "params"} <= set(record)
    assert len(record["validation_scores"]) == 12 and (binary_run / UNKNOWN_FEATURES_FILE).is_file()
    standardise = record["params"]["standardise"]  # the components' validation statistics: the sum is centred
    assert set(standardise) == {"knn", "energy"} and all(s["std"] >= 0 for s in standardise.values())
    assert abs(np.mean(record["validation_scores"])) < 1e-6
    rule = read_unknown_rule(msp_run)
    assert rule.score == "msp" and rule.accept == 0.8 and len(rule.validation_scores) == 18
    for run, accept, count in ((msp_run, 0.8, 18), (msp_run, 0.5, 18), (binary_run, 0.5, 12)):
        # predicting the validation images again: the accept fraction of them, within one
        result = predict([val_folder(run)], run=run, accept=accept)
        accepted = sum(p.label != "unknown" for p in result.predictions)
        assert abs(accepted - math.ceil(accept * count)) <= 1, (run, accept, accepted)
        assert result.unknown.threshold == read_unknown_rule(run).with_accept(accept).threshold


def test_knn_energy_is_the_sum_of_knn_and_energy_standardised_on_validation():
    from tlcli.errors import RunError
    from tlcli.inference.unknown import FeatureBank, score_images, standardisation

    rng = np.random.default_rng(0)
    bank = FeatureBank.of(rng.normal(size=(20, 8)), rng.integers(0, 3, 20))
    val_logits, val_features = rng.normal(size=(10, 3)), rng.normal(size=(10, 8))
    stats = standardisation(val_logits, val_features, bank)
    logits, features = rng.normal(size=(6, 3)) * 3, rng.normal(size=(6, 8))
    knn, energy = bank.knn(features), np.log(np.exp(logits).sum(axis=1))  # the two scores as they are
    val_knn, val_energy = bank.knn(val_features), np.log(np.exp(val_logits).sum(axis=1))
    assert stats["knn"] == pytest.approx({"mean": val_knn.mean(), "std": val_knn.std()})
    assert stats["energy"] == pytest.approx({"mean": val_energy.mean(), "std": val_energy.std()})
    by_hand = (knn - val_knn.mean()) / val_knn.std() + (energy - val_energy.mean()) / val_energy.std()
    combined = score_images("knn_energy", logits, features, bank, temperature=2.0, standardise=stats)
    assert combined == pytest.approx(by_hand, abs=1e-5)  # knn is float32
    with pytest.raises(RunError, match="standard deviation of knn and energy"):
        score_images("knn_energy", logits, features, bank)


def test_judging_a_batch_on_one_blas_thread_scores_as_the_reference_and_restores_the_thread_count():
    from threadpoolctl import threadpool_info

    from tlcli.inference.unknown import FeatureBank, UnknownRule, judge, one_blas_thread, score_images, standardisation

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    rng = np.random.default_rng(1)
    bank = FeatureBank.of(rng.normal(size=(300, 64)), rng.integers(0, 3, 300))
    logits, features = rng.normal(size=(32, 3)), rng.normal(size=(32, 64))
    stats = standardisation(rng.normal(size=(40, 3)), rng.normal(size=(40, 64)), bank)
    rule = UnknownRule("knn_energy", 1.3, 0.95, 0.0, (0.0, 1.0), params={"k": 5, "standardise": stats})
    before = blas_threads()
    with one_blas_thread():
        assert set(blas_threads()) == {1}
    judged = judge(rule, logits, features, bank)
    assert blas_threads() == before  # the limit is undone: training's larger products keep every thread
    reference = score_images("knn_energy", logits, features, bank, 1.3, stats)
    np.testing.assert_array_equal(judged.scores, reference)
    np.testing.assert_array_equal(judged.accepted, reference >= 0.0)


def test_an_old_knn_record_still_loads_and_predicts(msp_run, run_copy):
    from tlcli import predict, read_unknown_rule
    from tlcli.inference.unknown import threshold_at

    old = run_copy(msp_run)
    record = json.loads((old / UNKNOWN_FILE).read_text())
    record["score"], record["params"] = "knn", {"features": "pooled, L2-normalised", "k": 5}  # before knn_energy
    record["threshold"] = -1e9
    (old / UNKNOWN_FILE).write_text(json.dumps(record))
    first = predict([val_folder(msp_run)], run=old)
    scores = [p.unknown_score for p in first.predictions]
    assert first.unknown.score == "knn" and all(s <= 0 for s in scores)  # minus a distance
    record["validation_scores"], record["threshold"] = scores, threshold_at(np.array(scores), 0.95)
    (old / UNKNOWN_FILE).write_text(json.dumps(record))  # as training with score knn recorded it
    assert read_unknown_rule(old).standardise is None
    again = predict([val_folder(msp_run)], run=old, accept=0.5)
    assert abs(sum(p.label != "unknown" for p in again.predictions) - 9) <= 1


def test_evaluate_leaves_out_knn_energy_for_an_old_record_and_says_why(cli, msp_run, run_copy, tmp_path):
    old = run_copy(msp_run)
    record = json.loads((old / UNKNOWN_FILE).read_text())
    del record["params"]["standardise"]  # a record written before knn_energy: no validation statistics
    (old / UNKNOWN_FILE).write_text(json.dumps(record))
    result = cli("evaluate", old, "--unknown", no_class_folder(tmp_path), "--json", "--no-explain")
    assert result.exit_code == 0, result.stderr
    unknown = json.loads(result.stdout)["unknown"]
    assert set(unknown["auroc_by_score"]) == {"msp", "energy", "knn", "mahalanobis"}
    assert "train the run again" in unknown["auroc_omitted"]["knn_energy"]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "table"])
def test_a_rejected_image_is_unknown_with_its_score_and_would_be_label_in_every_format(cli, msp_run, fmt):
    result = cli("predict", val_folder(msp_run), "--run", msp_run, "-f", fmt, "--accept", "0.5", "-q")
    assert result.exit_code == 0, result.stderr
    if fmt == "table":
        assert "unknown" in result.stdout and "would be" in result.stdout
        return
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
    else:
        text = result.stdout
        rows = json.loads(text)["predictions"] if fmt == "json" else [json.loads(line) for line in text.splitlines()]
    rejected = [row for row in rows if row["label"] == "unknown"]
    assert 8 <= len(rejected) <= 10 and all(row["would_be"] in ("a", "b", "c") for row in rejected)
    assert all(row["unknown_score"] not in (None, "") for row in rows)
    assert all(row["would_be"] in (None, "") for row in rows if row["label"] != "unknown")


def test_no_unknown_predicts_as_a_run_from_before_the_rule(cli, msp_run, run_copy):
    old = run_copy(msp_run)
    (old / UNKNOWN_FILE).unlink()
    (old / UNKNOWN_FEATURES_FILE).unlink()
    images = val_folder(msp_run)
    before = cli("predict", images, "--run", old, "-f", "csv", "-q")
    switched_off = cli("predict", images, "--run", msp_run, "-f", "csv", "-q", "--no-unknown")
    assert before.exit_code == switched_off.exit_code == 0
    assert before.stdout == switched_off.stdout and before.stdout.startswith("path,label,confidence,label_2,")
    assert "unknown" not in before.stdout
    refused = cli("predict", images, "--run", old, "--accept", "0.9")
    assert refused.exit_code == 2 and "--accept: this model has no rule for unknown images" in refused.stderr
    judged = cli("predict", images, "--run", msp_run, "-f", "csv", "-q")
    assert "unknown_score,would_be" in judged.stdout.splitlines()[0]


@pytest.mark.slow
def test_evaluate_reports_coverage_and_with_unknown_images_the_auroc(cli, binary_run, run_copy, tmp_path):
    run = run_copy(binary_run)
    result = cli("evaluate", run, "--unknown", no_class_folder(tmp_path), "--json", "--no-explain")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    unknown = metrics["unknown"]
    assert unknown["score"] == "knn_energy" and unknown["n_unknown"] == 8 and 0 <= unknown["auroc"] <= 1
    assert set(unknown["auroc_by_score"]) == {"msp", "energy", "knn", "mahalanobis", "knn_energy"}
    assert unknown["auroc_omitted"] == {}
    assert 0 <= unknown["false_accept_rate"] <= 1 and 0 < unknown["coverage"] <= 1
    assert unknown["accuracy_all"] == pytest.approx(metrics["accuracy"])
    for key in ("temperature", "ece_before", "ece_after", "accept", "threshold", "accuracy_accepted"):
        assert unknown[key] is not None, key
    moved = json.loads(cli("evaluate", run, "--accept", "0.5", "--json", "--no-explain").stdout)["unknown"]
    assert moved["accept"] == 0.5 and moved["threshold"] > unknown["threshold"]
    assert "unknown" not in json.loads(cli("evaluate", run, "--no-unknown", "--json", "--no-explain").stdout)


@pytest.mark.slow
def test_the_decision_survives_export(cli, msp_run, run_copy, tmp_path):
    from tlcli.export import export_run

    run = run_copy(msp_run)
    exported = export_run(run, ["onnx"], out=tmp_path / "export")
    record = json.loads((exported.export_dir / "export.json").read_text())
    unknown = record["unknown"]
    assert unknown["score"] == "msp" and unknown["rejects"] is True and unknown["formula"].startswith("p = softmax")
    assert unknown["temperature"] == json.loads((run / UNKNOWN_FILE).read_text())["temperature"]
    assert record["formats"]["onnx"]["parity"]["unknown_agreement"] == 1.0 and record["passed"]
    images = val_folder(msp_run)
    for accept in ("0.8", "0.5"):
        by_run = json.loads(cli("predict", images, "--run", run, "-f", "json", "--accept", accept, "-q").stdout)
        model = exported.export_dir / "model.onnx"
        by_model = cli("predict", images, "--model", model, "-f", "json", "--accept", accept, "-q")
        by_model = json.loads(by_model.stdout)
        assert [p["label"] for p in by_model["predictions"]] == [p["label"] for p in by_run["predictions"]]
        assert sum(p["label"] == "unknown" for p in by_run["predictions"]) >= 2
        for ours, theirs in zip(by_model["predictions"], by_run["predictions"]):
            assert ours["confidence"] == pytest.approx(theirs["confidence"], abs=1e-4)  # both calibrated
    raw = json.loads(
        cli("predict", images, "--model", exported.export_dir / "model.onnx", "-f", "json", "--no-unknown", "-q").stdout
    )
    assert all("unknown_score" not in p for p in raw["predictions"])


def test_a_feature_space_run_exports_its_msp_rule_and_the_artifacts_apply_it(cli, binary_run, run_copy, tmp_path):
    """The default score needs pooled features the artifacts do not output: its export rejects by the msp rule the
    run recorded from the same validation outputs, export.json says so, and the gate checks the decisions."""
    from tlcli.export import export_run
    from tlcli.inference.unknown import read_unknown_rule

    run = run_copy(binary_run)
    own = read_unknown_rule(run)
    assert own.score == "knn_energy" and own.portable is not None
    exported = export_run(run, ["onnx"], out=tmp_path / "export")
    record = json.loads((exported.export_dir / "export.json").read_text())
    unknown = record["unknown"]
    assert (
        unknown["score"] == "msp" and unknown["rejects"] is True and unknown["params"] == {"in_place_of": "knn_energy"}
    )
    assert "rejects by knn_energy" in unknown["why"] and unknown["threshold"] == own.portable.threshold
    assert record["formats"]["onnx"]["parity"]["unknown_agreement"] == 1.0 and record["passed"]
    carried = read_unknown_rule(exported.export_dir)
    assert carried.score == "msp" and carried.validation_scores == own.portable.validation_scores
    model = exported.export_dir / "model.onnx"
    result = cli("predict", val_folder(binary_run), "--model", model, "-f", "json", "--accept", "0.5", "-q")
    assert result.exit_code == 0 and "no rejection" not in result.stderr
    labels = [p["label"] for p in json.loads(result.stdout)["predictions"]]
    assert labels.count("unknown") >= 2  # the artifact rejects, by the carried msp rule moved to accept half


def test_a_feature_space_score_is_not_applied_by_the_artifacts_and_export_json_says_why():
    from tlcli.export.unknown import exported_rule, unknown_record
    from tlcli.inference.unknown import UnknownRule

    rule = UnknownRule("knn", 1.2, 0.95, -0.4, (-0.3, -0.5), params={"k": 5})
    record = unknown_record(rule, exported_rule(rule))
    assert record["rejects"] is False and "pooled features" in record["why"] and record["params"] == {"k": 5}
    assert "validation_scores" not in record and shutil.which  # the record stays small
