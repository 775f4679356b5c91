"""`tlcli compare` (tlcli.evaluation.compare) and the intervals in what train, evaluate and runs show."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import one_line

from tlcli.evaluation.compare import ComparedRun, Comparison
from tlcli.evaluation.intervals import mcnemar_exact

# Tests on the session's shared runs are `slow`: those train once per session (seconds), each compare loads two models.


def _comparison(a_only: int, b_only: int, both: int = 100, neither: int = 10) -> Comparison:
    n = both + a_only + b_only + neither
    return Comparison(
        "test",
        "splits/test.csv",
        ComparedRun(Path("A"), both + a_only, n),
        ComparedRun(Path("B"), both + b_only, n),
        both_right=both,
        a_only=a_only,
        b_only=b_only,
        both_wrong=neither,
        p_value=mcnemar_exact(a_only, b_only),
    )


def test_the_verdict_says_plainly_whether_b_is_better():
    assert _comparison(1, 12).verdict == "B is better than A (p = 0.0034)"
    assert _comparison(12, 1).verdict == "B is worse than A (p = 0.0034)"
    assert _comparison(4, 6).verdict == "no evidence that B is better than A (p = 0.75)"
    assert _comparison(6, 4).better is None and _comparison(1, 12).better == "B"
    low, high = _comparison(4, 6).difference_interval
    assert low < _comparison(4, 6).difference < high and low < 0 < high


@pytest.mark.slow
def test_compare_refuses_runs_with_different_classes(cli, binary_run, frozen_source):
    result = cli("compare", frozen_source[1], binary_run)
    assert result.exit_code == 2
    line = one_line(result)
    assert "different classes" in line and "only A has a, b, c" in line and "only B has cats, dogs" in line


@pytest.mark.slow
def test_compare_refuses_runs_tested_on_different_files(cli, frozen_source, run_copy):
    run_a = frozen_source[1]
    run_b = run_copy(run_a)
    split = run_b / "splits" / "test.csv"
    rows = list(csv.reader(split.open()))
    dropped = rows.pop(3)
    with split.open("w", newline="") as stream:
        csv.writer(stream).writerows(rows)
    result = cli("compare", run_a, run_b, "--json")
    assert result.exit_code == 2
    line = one_line(result)
    assert "not tested on the same files" in line and f"1 only in A (e.g. {dropped[0]})" in line
    assert json.loads(result.stdout)["exit_code"] == 2


@pytest.mark.slow
def test_compare_prints_the_figures_and_the_verdict_and_json_has_the_fields(cli, frozen_source, run_copy):
    run_a = frozen_source[1]
    run_b = run_copy(run_a)  # the same model: nothing to tell them apart
    before = sorted(p.name for p in run_b.rglob("*"))
    result = cli("compare", run_a, run_b)
    assert result.exit_code == 0, result.stderr
    assert "no evidence that B is better than A (p = 1)" in result.stdout
    assert "A right, B wrong: 0; A wrong, B right: 0" in result.stdout
    assert "B - A" in result.stdout and "+0.0000 (" in result.stdout

    found = json.loads(cli("compare", run_a, run_b, "--json", "--split", "test").stdout)
    assert found["dataset"] == {"name": "test", "source": "splits/test.csv", "images": 18, "skipped": 0}
    assert found["a"]["accuracy"] == found["b"]["accuracy"] and found["difference"] == 0
    assert found["mcnemar"]["a_right_b_wrong"] == found["mcnemar"]["a_wrong_b_right"] == 0
    assert found["mcnemar"]["p_value"] == 1.0 and found["better"] is None
    low, high = found["intervals"]["difference"]
    assert low < 0 < high
    assert set(found["intervals"]) == {"a.accuracy", "b.accuracy", "difference"}
    assert found["caution"] is None  # the test split chose nothing
    on_val = json.loads(cli("compare", run_a, run_b, "--json", "--split", "val").stdout)
    assert on_val["caution"].startswith("val was used to choose things in A (selection) and B (selection)")
    assert sorted(p.name for p in run_b.rglob("*")) == before  # compare writes nothing


def _as_version_1(run_dir: Path) -> None:
    """metrics.json as runs wrote it before intervals: no format_version, no intervals."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["format_version"], metrics["intervals"]
    path.write_text(json.dumps(metrics))


@pytest.mark.slow
def test_runs_and_evaluate_show_intervals_and_still_read_older_runs(cli, frozen_source, run_copy, capsys):
    run_dir = frozen_source[1]
    written = json.loads((run_dir / "metrics.json").read_text())
    assert written["format_version"] == 2 and set(written["intervals"]) == {"val_accuracy", "test_accuracy"}

    old = run_copy(run_dir)
    _as_version_1(old)
    listed = json.loads(cli("runs", "--runs-dir", old.parent, "--json").stdout)
    assert listed[0]["estimate"] == written["final"]["test_accuracy"] and listed[0]["intervals"] == {}
    table = cli("runs", "--runs-dir", old.parent)
    assert table.exit_code == 0 and f"{written['final']['test_accuracy']:.4f} (test)" in table.stdout

    result = cli("evaluate", old, "--json")
    assert result.exit_code == 0, result.stderr
    evaluation = json.loads(result.stdout)
    assert evaluation["format_version"] == 2
    assert {"accuracy", "per_class.a.recall", "per_class.c.recall"} <= set(evaluation["intervals"])
    low, high = evaluation["intervals"]["accuracy"]
    assert low <= evaluation["accuracy"] <= high

    # An evaluation folder written before intervals still prints (figures alone).
    from tlcli.cli.evaluate import print_evaluation
    from tlcli.evaluation.report import Evaluation

    older = {k: v for k, v in evaluation.items() if k not in ("intervals", "format_version", "eval_dir")}
    print_evaluation(Evaluation(Path(evaluation["eval_dir"]), older))
    printed = capsys.readouterr().out
    assert f"{evaluation['accuracy']:.4f}" in printed and "95% interval" not in printed


@pytest.mark.slow
def test_the_train_summary_shows_the_interval(frozen_source, capsys):
    from tlcli.cli.train import _print_train_summary
    from tlcli.runs.metrics import Metrics, TrainResult

    run_dir = frozen_source[1]
    metrics = Metrics.read(run_dir)
    _print_train_summary(TrainResult(run_dir, metrics))
    low, high = metrics.intervals["test_accuracy"]
    assert f"{metrics.final['test_accuracy']:.4f} ({low:.3f}-{high:.3f})" in capsys.readouterr().out
