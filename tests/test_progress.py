"""What people see while tlcli works: the logging reporter and the rich one (progress on stderr)."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from tlcli.progress import Reporter, RichReporter, format_metrics


def test_metrics_are_formatted_for_a_line():
    assert format_metrics({"loss": 0.123456, "accuracy": 1, "note": "x"}) == "loss 0.1235  accuracy 1"
    assert format_metrics({"loss": 0.5, "val_loss": 0.6}, ("loss",)) == "loss 0.5000"


def test_the_plain_reporter_only_logs(caplog):
    reporter = Reporter()
    with caplog.at_level(logging.INFO, logger="tlcli"):
        reporter.info("hello")
        reporter.warn("careful")
        with reporter.task("decoding train", 3) as advance:
            advance(2)
        reporter.epoch_end("train", 1, 2, {"loss": 0.5})
    assert [r.getMessage() for r in caplog.records] == [
        "hello",
        "careful",
        "decoding train: 3 items",
        "train epoch 1/2  loss 0.5000",
    ]


def test_the_rich_reporter_draws_bars_and_prints_each_epoch():
    stream = io.StringIO()
    reporter = RichReporter(Console(file=stream, force_terminal=True, width=100, color_system=None))
    reporter.info("run folder: runs/x")
    reporter.warn("skipped 1 unreadable file")
    with reporter.task("decoding train", 4) as advance:
        for done in range(1, 5):
            advance(done)
    reporter.phase_start("train", 2, 3)
    for epoch in (1, 2):
        reporter.epoch_begin(epoch, 2)
        for step in (1, 2, 3):
            reporter.batch_end(step, {"loss": 0.9 / step, "accuracy": 0.5})
        reporter.epoch_end("train", epoch, 2, {"loss": 0.3, "val_accuracy": 0.75})
    reporter.phase_end("train")
    text = stream.getvalue()
    assert "run folder: runs/x" in text and "warning: skipped 1 unreadable file" in text
    assert "decoding train" in text and "4/4" in text  # the bar reached its total
    assert "train 1/2" in text and "3/3" in text and "loss 0.3000" in text  # the epoch bar with live metrics
    assert "train 2/2  loss 0.3000  val_accuracy 0.7500" in text  # each finished epoch stays on screen
    assert reporter._progress is None  # stopped at the phase's end
