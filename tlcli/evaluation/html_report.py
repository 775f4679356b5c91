"""`report.html`: one self-contained page bringing a run's files together, for a person to look at.

`tlcli train` writes it into the run folder at the end of a completed run, `tlcli evaluate` into its evaluation
folder, `tlcli report RUN_DIR` (re)builds it; `output.report: false` turns it off. It reads only what the run
folder holds: the config as run (`config.yaml`), the data (`dataset.json`, `data_problems.json`, `data_trust.json`),
training (`metrics.json`, `curves.png`), one evaluation (its `metrics.json`, confusion matrix, reliability diagram,
mistakes and their Grad-CAM heatmaps) and the provenance (`env.json`, `run.json`). A section whose file is absent
(an older run, a skipped step) says so in one line; the page is always written. Nothing is computed again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tlcli.audit.report import SuspectFindings, read_audit_report
from tlcli.errors import RunError
from tlcli.evaluation.html_parts import (
    definitions,
    esc,
    figure,
    missing,
    number,
    page,
    read_json,
    read_text,
    status,
    table,
    with_interval,
)
from tlcli.runs.atomic import write_text_atomic
from tlcli.runs.folder import TRUST_FILE

REPORT = "report.html"
SUSPECTS_SHOWN = 20  # label suspects listed (all are in data_trust.json)
PAIRS_SHOWN = 20  # near-duplicate pairs listed


def write_report(folder: str | Path) -> Path:
    """Write `report.html` into a run folder (with its latest evaluation) or into one evaluation folder of a run.

    Returns:
        The path of the report written (atomically).

    Raises:
        RunError: `folder` is neither a run folder nor an evaluation folder (`RUN_DIR/eval/<stamp>-<dataset>/`).
    """
    folder = Path(folder)
    if (folder / "run.json").is_file():
        run_dir, evaluation = folder, latest_evaluation(folder)
    elif folder.parent.name == "eval" and (folder.parent.parent / "run.json").is_file():
        run_dir, evaluation = folder.parent.parent, folder
    else:
        raise RunError(f"folder: {folder}: not a run folder (no run.json) nor an evaluation folder of one")
    return write_report_file(run_dir, evaluation, folder / REPORT, evaluation=folder is not run_dir)


def write_report_file(run_dir: Path, eval_dir: Path | None, path: Path, *, evaluation: bool = False) -> Path:
    """Render the report of `run_dir` with `eval_dir` (an eval folder, possibly still staged) into `path`;
    `evaluation`: the page is that evaluation's (else the run's)."""
    write_text_atomic(path, render_report(run_dir, eval_dir, evaluation=evaluation))
    return path


def latest_evaluation(run_dir: Path) -> Path | None:
    """The newest complete evaluation folder of a run (names start with their stamp), or None."""
    folders = [p for p in (Path(run_dir) / "eval").glob("[!.]*") if (p / "metrics.json").is_file()]
    return max(folders, key=lambda p: p.name) if folders else None


def render_report(run_dir: Path, eval_dir: Path | None, *, evaluation: bool = False) -> str:
    """The whole page, as text: a run's (with `eval_dir`, its latest evaluation) or, `evaluation`, one evaluation's."""
    run_dir = Path(run_dir)
    run, _ = read_json(run_dir / "run.json")
    metrics, metrics_missing = read_json(run_dir / "metrics.json")
    run = run if isinstance(run, dict) else None  # another shape: read as absent (edited by hand)
    if metrics is not None and not isinstance(metrics, dict):
        metrics, metrics_missing = None, "metrics.json is not of the expected shape (an object)."
    name = (run or {}).get("name") or run_dir.name
    kind = "the report of one evaluation of the run" if evaluation else "the run's report"
    subtitle = f"{run_dir} · status: {(run or {}).get('status', 'unknown')} · {kind}"
    sections = [
        ("summary", "Summary", drawn(summary_section, metrics, metrics_missing, eval_dir)),
        ("config", "Config as run", drawn(config_section, run_dir)),
        ("data", "Data", drawn(data_section, run_dir, metrics)),
        ("training", "Training", drawn(training_section, run_dir, metrics, metrics_missing)),
        ("evaluation", "Evaluation", drawn(evaluation_section, eval_dir)),
        ("provenance", "Provenance", drawn(provenance_section, run_dir, run, metrics)),
    ]
    return page(f"tlcli report: {name}", subtitle, sections)


def drawn(section: Callable[..., str], *args: Any) -> str:
    """A section's HTML; a file of an unexpected shape (edited, damaged) costs that section one line, not the page."""
    try:
        return section(*args)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        return missing(f"This section could not be drawn: a file is not of the expected shape ({exc!r}).")


def summary_section(metrics: dict | None, why: str | None, evaluation: Path | None) -> str:
    """The run's final figures with their 95% intervals, and the evaluation's headline."""
    parts = []
    if metrics is None:
        parts.append(missing(why or "No metrics.json: the run did not complete."))
    else:
        intervals = metrics.get("intervals") or {}
        final = metrics.get("final") or {}
        rows = [(key, with_interval(value, intervals.get(key))) for key, value in final.items()]
        parts.append("<h3>Final figures of the run (95% interval)</h3>" + table(["figure", "value"], rows, (1,)))
        for split, verdict in (metrics.get("figures") or {}).items():
            parts.append(f"<p>How far to trust the {esc(split)} figures: {esc(verdict)}</p>")
    scored, _ = read_json(evaluation / "metrics.json") if evaluation is not None else (None, None)
    headline = next((key for key in ("accuracy", "map", "subset_accuracy") if key in (scored or {})), None)
    if headline is not None:  # multi-label evaluations have no accuracy: their mAP
        value = with_interval(scored[headline], (scored.get("intervals") or {}).get(headline))
        dataset = (scored.get("dataset") or {}).get("name", "?")
        parts.append(f"<p>Evaluation on <b>{esc(dataset)}</b>: {esc(headline)} {esc(value)}</p>")
    return "\n".join(parts)


def config_section(run_dir: Path) -> str:
    text, why = read_text(run_dir / "config.yaml")
    if text is None:
        return missing(why or "")
    return '<p class="muted">config.yaml: every default filled in, paths absolute.</p>' + f"<pre>{esc(text)}</pre>"


def data_section(run_dir: Path, metrics: dict | None) -> str:
    """Class counts per split, the decode pass's problems, and the data-trust findings."""
    dataset, why = read_json(run_dir / "dataset.json")
    parts = ["<h3>Images per class and split</h3>"]
    if dataset is None:
        parts.append(missing(why or ""))
    else:
        counts = dataset.get("counts") or {}
        splits = list(counts)
        classes = dataset.get("class_names") or sorted({c for split in counts.values() for c in split})
        rows = [(c, *(counts[s].get(c, 0) for s in splits)) for c in classes]
        rows.append(("total", *(sum(counts[s].values()) for s in splits)))
        parts.append(table(["class", *splits], rows, tuple(range(1, len(splits) + 1))))
        sources = dataset.get("sources") or {}
        parts.append(definitions((f"{split} from", source) for split, source in sources.items()))
    parts.append("<h3>Problems found while decoding</h3>" + problems_part(run_dir))
    parts.append("<h3>Near-duplicates and label suspects</h3>" + trust_part(run_dir, metrics))
    return "\n".join(parts)


def problems_part(run_dir: Path) -> str:
    problems, why = read_json(run_dir / "data_problems.json")
    if problems is None:
        return missing(why or "")
    counts = problems.get("counts") or {}
    rows = "".join(
        f"<tr><th scope='row'>{esc(k.replace('_', ' '))}</th><td>{status(v)}</td></tr>" for k, v in counts.items()
    )
    return f"<table><tbody>{rows}</tbody></table>"


def trust_part(run_dir: Path, metrics: dict | None) -> str:
    """Leakage (near-duplicates across splits), other confirmed pairs, and the ranked label suspects."""
    path = run_dir / TRUST_FILE
    if not path.is_file():
        skipped = ((metrics or {}).get("data_trust") or {}).get("skipped")
        return missing(
            f"The data-trust step was skipped: {skipped}"
            if skipped
            else f"No {TRUST_FILE} in this run (an older run, or the step did not run)."
        )
    try:
        trust = read_audit_report(path)
    except RunError as exc:
        return missing(str(exc))
    near = trust.near_duplicates
    parts = [definitions([("base", trust.base), ("images examined", trust.embedded)])]
    if near is None:
        parts.append("<p>Near-duplicates: not searched (data.leakage: off).</p>")
    else:
        parts.append(
            f"<p>Leakage (the same image in two splits): {status(near.leakage)}; "
            f"near-duplicate pairs: {status(len(near.confirmed))}.</p>"
        )
    if near is not None and near.pairs:
        rows = [
            ("yes" if p.cross_split else "no", p.split_a, p.a, p.split_b, p.b, number(p.similarity, 3))
            for p in sorted(near.pairs, key=lambda p: not p.cross_split)[:PAIRS_SHOWN]
        ]
        parts.append(table(["across splits", "split", "image", "split", "image", "cosine"], rows, (5,)))
    parts.append(suspects_part(trust.label_suspects))
    parts += [f'<p class="muted">{esc(note)}</p>' for note in trust.notes]
    return "\n".join(parts)


def suspects_part(found: SuspectFindings | None) -> str:
    """The ranked label suspects (the first SUSPECTS_SHOWN)."""
    if found is None:
        return "<p>Label suspects: not searched.</p>"
    parts = [
        f"<p>Label suspects: {status(len(found.suspects))}{' (' + esc(found.method) + ')' if found.method else ''}.</p>"
    ]
    rows = [
        (rank, s.split, s.path, s.given, s.suggested, number(s.confidence, 3))
        for rank, s in enumerate(found.suspects[:SUSPECTS_SHOWN], start=1)
    ]
    if rows:
        parts.append(table(["rank", "split", "image", "given", "suggested", "confidence"], rows, (0, 5)))
    return "\n".join(parts)


def training_section(run_dir: Path, metrics: dict | None, why: str | None) -> str:
    """Curves, epochs, the best epoch, each phase's verdict and the linear-probe reference."""
    parts = [figure(run_dir / "curves.png", "Loss and accuracy per epoch, training and validation", "curves.png")]
    if metrics is None:
        parts.append(missing(why or ""))
        return "\n".join(parts)
    epochs = metrics.get("epochs") or {}
    best = metrics.get("best") or {}
    parts.append(
        definitions(
            [
                ("epochs", ", ".join(f"{k}: {v}" for k, v in epochs.items())),
                ("best epoch", f"{best.get('epoch', '-')} ({best.get('phase', '-')})"),
                ("images", ", ".join(f"{k}: {v}" for k, v in (metrics.get("images") or {}).items())),
            ]
        )
    )
    for phase, record in (metrics.get("phases") or {}).items():
        if record.get("verdict"):
            parts.append(f"<p>Phase <b>{esc(phase)}</b>: {esc(record['verdict'])}</p>")
    parts.append("<h3>Reference: a linear probe on the frozen features</h3>" + probe_part(metrics.get("linear_probe")))
    return "\n".join(parts)


def probe_part(probe: Any) -> str:
    if not isinstance(probe, dict):
        return missing("No linear-probe record in metrics.json.")
    if probe.get("skipped"):
        return missing(f"Skipped: {probe['skipped']}")
    return definitions((k.replace("_", " "), number(v)) for k, v in probe.items())


def evaluation_section(evaluation: Path | None) -> str:
    """One evaluation: its figures, per-class table with intervals, and its pictures."""
    if evaluation is None:
        return missing("No evaluation folder under eval/ (run `tlcli evaluate RUN_DIR`).")
    scored, why = read_json(evaluation / "metrics.json")
    if scored is None:
        return missing(why or "")
    intervals = scored.get("intervals") or {}
    dataset = scored.get("dataset") or {}
    label = f"eval/{evaluation.name}" if not evaluation.name.startswith(".") else "this evaluation folder"
    headline = [(k, with_interval(v, intervals.get(k))) for k, v in scored.items() if _headline(k, v)]
    parts = [
        f"<p>{esc(label)}: {esc(dataset.get('images', '?'))} images of <b>{esc(dataset.get('name', '?'))}</b> "
        f"({esc(dataset.get('source', ''))}), {esc(dataset.get('skipped', 0))} skipped.</p>",
        table(["figure", "value (95% interval)"], headline, (1,)),
        copies_part(scored.get("training_copies")),
        "<h3>Per class</h3>" + per_class_part(scored),
        pictures_part(evaluation, scored),
    ]
    return "\n".join(parts)


def copies_part(copies: Any) -> str:
    """How many evaluated images are near-duplicates of training images (data_trust.json), and the accuracy
    without them."""
    if not isinstance(copies, dict):
        return ""
    if not copies.get("known", True):
        return f'<p class="muted">Copies of training images: not known ({esc(copies.get("why", ""))}).</p>'
    without = copies.get("accuracy_without")
    tail = f"; accuracy without them {number(without)}" if copies.get("images") and without is not None else ""
    return f"<p>Near-duplicates of training images among these: {status(copies.get('images', 0))}{esc(tail)}.</p>"


def _headline(key: str, value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("format_version", "images")


def per_class_part(scored: dict) -> str:
    per_class = scored.get("per_class") or {}
    if not per_class:
        return missing("No per-class figures in this evaluation.")
    intervals = scored.get("intervals") or {}
    columns = [k for k in next(iter(per_class.values())) if k != "support"] + ["support"]
    rows = [
        (name, *(with_interval(fig.get(c), intervals.get(f"per_class.{name}.{c}")) for c in columns))
        for name, fig in per_class.items()
    ]
    return table(["class", *columns], rows, tuple(range(1, len(columns) + 1)))


def pictures_part(evaluation: Path, scored: dict) -> str:
    """The confusion matrix and calibration (multi-label: precision-recall curves) side by side, then the mistakes,
    with their heatmaps."""
    if (evaluation / "pr_curves.png").is_file():  # multi-label: no single confusion matrix
        parts = ["<h3>Precision-recall curves</h3>"]
        parts.append(figure(evaluation / "pr_curves.png", "Precision-recall curve of each class", "pr_curves.png"))
    else:
        ece = number((scored.get("calibration") or {}).get("ece"))
        matrix = figure(
            evaluation / "confusion_matrix.png", "Confusion matrix: true classes in rows", "confusion_matrix.png"
        )
        diagram = "Reliability diagram: accuracy per confidence bin against the diagonal"
        reliability = figure(evaluation / "reliability.png", diagram, f"reliability.png: calibration error {ece}")
        parts = ["<h3>Confusion matrix and calibration</h3>", f'<div class="row">{matrix}{reliability}</div>']
    parts.append("<h3>Most confident mistakes</h3>")
    parts.append(
        figure(evaluation / "mistakes.png", "The most confident mistakes, true and predicted class", "mistakes.png")
    )
    gradcam = evaluation / "mistakes_gradcam.png"
    if gradcam.is_file():
        caption = "mistakes_gradcam.png: each mistake, the Grad-CAM heatmap of the class it chose, both overlaid"
        parts.append(figure(gradcam, "Mistakes with their Grad-CAM heatmaps", caption))
    else:
        parts.append(
            missing("No mistakes_gradcam.png (no mistakes, --no-explain, an artifact, or the training report).")
        )
    return "\n".join(parts)


def provenance_section(run_dir: Path, run: dict | None, metrics: dict | None) -> str:
    """Versions, devices, git, the command, the run's life and where its time went."""
    env, why = read_json(run_dir / "env.json")
    parts = []
    if env is None:
        parts.append(missing(why or ""))
    else:
        git = env.get("git") or {}
        devices = env.get("devices") or {}
        versions = [(k, env[k]) for k in ("tlcli", "python", "tensorflow", "keras", "numpy", "platform") if k in env]
        git_text = f"{git.get('commit', '?')}{' (uncommitted changes)' if git.get('dirty') else ''}" if git else "-"
        parts.append(
            definitions(
                versions
                + [
                    ("devices", devices.get("description") or devices.get("device", "-")),
                    ("seed", env.get("seed", "-")),
                    ("git", git_text),
                    ("command", " ".join(map(str, env.get("command") or []))),
                ]
            )
        )
    if run is not None:
        life = [(k, run.get(k)) for k in ("status", "started", "finished", "error") if run.get(k) is not None]
        life.append(("resumes", len(run.get("resumes") or [])))
        parts.append("<h3>Run</h3>" + definitions(life))
    timings = (metrics or {}).get("timings_s") or {}
    if timings:
        rows = [(k, number(v, 2)) for k, v in timings.items()]
        rows.append(("wall time", number((metrics or {}).get("wall_time_s"), 2)))
        parts.append("<h3>Where the time went (seconds)</h3>" + table(["step", "seconds"], rows, (1,)))
    return "\n".join(parts) or missing("No provenance files.")
