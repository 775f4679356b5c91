"""Prediction output formats: `json`, `jsonl` and `csv` for scripts, rows for the table people read (README "tlcli
predict")."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable

from tlcli.errors import UserError
from tlcli.inference.predict import PredictResult

FORMATS = ("table", "json", "jsonl", "csv")


def format_predictions(result: PredictResult, fmt: str) -> str:
    """The text of `json`, `jsonl` or `csv` output (`table` is drawn by the CLI)."""
    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2) + "\n"
    if fmt == "jsonl":
        judged = result.unknown is not None
        return "".join(json.dumps(p.to_dict(result.explained, judged)) + "\n" for p in result.predictions)
    if fmt == "csv":
        return _csv_text(result)
    raise UserError(f"fmt: expected one of {', '.join(FORMATS)}, got {fmt!r}")


def csv_header(top_k: int, explained: bool = False, judged: bool = False) -> list[str]:
    header = ["path", "label", "confidence"]
    for rank in range(2, top_k + 1):
        header += [f"label_{rank}", f"probability_{rank}"]
    return header + (["explanation"] if explained else []) + (list(JUDGED) if judged else []) + ["error"]


JUDGED = ("unknown_score", "would_be")  # the columns of a run with a rule for unknown images


def _csv_text(result: PredictResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    explained = result.explained  # the overlay's file before the error (the later per-image columns beside it)

    judged = result.unknown is not None

    def extra(p) -> list[str]:
        cells = [p.explanation or ""] if explained else []
        if judged:
            cells += ["" if p.unknown_score is None else f"{p.unknown_score:.6f}", p.would_be or ""]
        return cells

    if result.multi_label:  # the labels, then one probability column per class
        writer.writerow(["path", "labels", *result.class_names, *(["explanation"] if explained else []), "error"])
        for p in result.predictions:
            scores = [f"{value:.6f}" for _, value in p.scores] or [""] * len(result.class_names)
            writer.writerow([p.path, result.separator.join(p.labels or ()), *scores, *extra(p), p.error or ""])
        return buffer.getvalue()
    writer.writerow(csv_header(result.top_k, explained, judged))
    for p in result.predictions:
        cells: list[Any] = [p.path]
        for rank in range(result.top_k):
            cells += [p.top[rank][0], f"{p.top[rank][1]:.6f}"] if rank < len(p.top) else ["", ""]
        if p.rejected:  # the first class is the would-be label: `unknown` and no confidence instead
            cells[1:3] = [p.label, ""]
        writer.writerow(cells + extra(p) + [p.error or ""])
    return buffer.getvalue()


def rows_for_table(result: PredictResult) -> Iterable[tuple[str, str, str, str]]:
    """(path, label or "error", confidence, the other top-k or the error's reason) for a human-readable table
    (multi-label: the labels predicted, the highest probability, the top-k)."""
    for p in result.predictions:
        if p.error is not None:
            yield p.path, "error", "", p.error
        elif p.rejected:  # unknown: why, and what it would have been
            yield p.path, p.label, "", f"would be {p.top[0][0]} {p.top[0][1]:.3f}; score {p.unknown_score:.4g}"
        elif p.multi_label:  # the labels predicted, then the probabilities of the top-k classes
            yield (
                p.path,
                ", ".join(p.labels or ()) or "(none)",
                f"{p.top[0][1]:.3f}",
                ", ".join(f"{label} {prob:.3f}" for label, prob in p.top),
            )
        else:
            yield (
                p.path,
                p.label or "",
                f"{p.confidence:.3f}",
                ", ".join(f"{label} {prob:.3f}" for label, prob in p.top[1:]),
            )
