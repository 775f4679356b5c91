"""benchmarks/UNKNOWN.md from the figures `benchmarks/unknown.py` gathers (unknown.json)."""

from __future__ import annotations

import statistics

SCORES = ("msp", "energy", "knn", "mahalanobis", "knn_energy")


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ok(flag: bool | None) -> str:
    return "n/a" if flag is None else ("met" if flag else "**missed**")


def done(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "unknown" in r]


def hymenoptera_section(rows: list[dict]) -> list[str]:
    lines = [
        "## hymenoptera, cats_and_dogs_filtered's validation images as unknowns",
        "",
        "| seed | score | T | ECE before -> after | AUROC | unknowns accepted | coverage | threshold | acc. all "
        "| acc. accepted | " + " | ".join(f"AUROC {s}" for s in SCORES) + " | train s | evaluate s | load |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | "
        + " | ".join("---:" for _ in SCORES)
        + " | ---: | ---: | --- |",
    ]
    for r in rows:
        if "unknown" not in r:
            lines.append(f"| {r['seed']} | failed: {str(r.get('error'))[-200:]!r} |")
            continue
        u = r["unknown"]
        by = u.get("auroc_by_score") or {}
        lines.append(
            f"| {r['seed']} | {u.get('score')} | {fmt(u.get('temperature'))} | {fmt(u.get('ece_before'))} -> "
            f"{fmt(u.get('ece_after'))} | {fmt(u.get('auroc'), 4)} | {fmt(u.get('false_accept_rate'))} | "
            f"{fmt(u.get('coverage'))} | {fmt(u.get('threshold'), 4)} | {fmt(u.get('accuracy_all'))} | "
            f"{fmt(u.get('accuracy_accepted'))} | "
            + " | ".join(fmt(by.get(s), 4) for s in SCORES)
            + f" | {fmt(r['train_s'], 0)} | {fmt(r.get('evaluate_s'), 0)} | "
            f"{r['train_load']} / {r.get('evaluate_load')} |"
        )
    good = done(rows)
    if good:
        auroc = median([r["unknown"].get("auroc") for r in good])
        far = median([r["unknown"].get("false_accept_rate") for r in good])
        lines += [
            "",
            f"Median over {len(good)} seeds: AUROC {fmt(auroc, 4)} (target >= 0.95: {ok(auroc >= 0.95)}), "
            f"unknowns accepted at the 95%-acceptance threshold {fmt(far)} (target <= 0.10: {ok(far <= 0.10)}).",
        ]
    return lines + [""]


def eurosat_section(result: dict) -> list[str]:
    rows = result.get("eurosat") or []
    if not rows:
        return []
    good = done(rows)
    chosen = good[0]["unknown"].get("score") if good else "?"
    train_median = median([r.get("train_s") for r in rows])
    lines = [
        "## eurosat, leave one class out",
        "",
        f"Each held-out class's test images (200) are the unknowns; in-distribution = the 9 other classes' test "
        f"images (1,800). Warm-up (every eurosat image through the base once): {result.get('eurosat_warm')}. "
        f"On the warm cache a leave-one-class-out `tlcli train` took {fmt(train_median, 0)} s (median of "
        f"{len(rows)} runs; each run's wall time and load are in the table). Figures: {cached_note(result)}",
        "",
        "| held out | seed | AUROC chosen | " + " | ".join(f"AUROC {s}" for s in SCORES) + " | coverage | acc. all "
        "| acc. accepted | train s | evaluate s | load |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in SCORES) + " | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if "unknown" not in r:
            lines.append(f"| {r['held_out']} | {r['seed']} | failed: {str(r.get('error'))[-200:]!r} |")
            continue
        u = r["unknown"]
        by = u.get("auroc_by_score") or {}
        lines.append(
            f"| {r['held_out']} | {r['seed']} | {fmt(u.get('auroc'), 4)} | "
            + " | ".join(fmt(by.get(s), 4) for s in SCORES)
            + f" | {fmt(u.get('coverage'))} | {fmt(u.get('accuracy_all'))} | {fmt(u.get('accuracy_accepted'))} | "
            f"{fmt(r['train_s'], 0)} | {fmt(r.get('evaluate_s'), 0)} | {r['train_load']} / {r.get('evaluate_load')} |"
        )
    if good:
        mean = {  # a score missing from some runs (knn_energy, before it existed) averages over those that have it
            s: statistics.mean(found)
            if (found := [r["unknown"]["auroc_by_score"][s] for r in good if s in r["unknown"]["auroc_by_score"]])
            else None
            for s in SCORES
        }
        chosen_mean = statistics.mean(r["unknown"]["auroc"] for r in good)
        gain = 100 * (chosen_mean - mean["msp"])
        lines += [
            "",
            f"Mean AUROC over {len(good)} runs ({len({r['held_out'] for r in good})} held-out classes): chosen score "
            f"`{chosen}` {chosen_mean:.4f} vs the maximum-probability baseline `msp` {mean['msp']:.4f}: "
            f"{gain:+.1f} points (target >= +5: {ok(gain >= 5)}). By score: "
            + ", ".join(f"{s} {v:.4f}" for s, v in mean.items() if v is not None)
            + ".",
        ]
    return lines + [""]


def cached_note(result: dict) -> str:
    cached = result.get("eurosat_cached_evaluate")
    if not cached:
        return "`tlcli evaluate RUN --unknown DIR --json` for each run."
    check = result.get("cached_check") or {}
    return (
        "each run's `evaluate --unknown` figures computed from the feature cache by `benchmarks/unknown_cached.py` "
        f"(the run's model, unknown.json and training features; {cached['runs']} runs in {cached['seconds']} s, load "
        f"{cached['load_before']}) instead of passing 2,000 images through MobileNetV2 per run; on a hymenoptera run "
        f"it agrees with `evaluate --unknown` to {fmt(check.get('largest_gap'), 6)} (largest gap over AUROCs, "
        "acceptance, accuracy and ECE)."
    )


def accuracy_section(result: dict) -> list[str]:
    lines = ["## Accuracy on accepted vs all in-distribution test images", ""]
    for name in ("hymenoptera", "eurosat"):
        good = done(result.get(name) or [])
        if not good:
            continue
        by_seed: dict[int, list[float]] = {}
        for r in good:
            u = r["unknown"]
            if u.get("accuracy_accepted") is not None and u.get("accuracy_all") is not None:
                by_seed.setdefault(r["seed"], []).append(u["accuracy_accepted"] - u["accuracy_all"])
        per_seed = {seed: statistics.mean(d) for seed, d in sorted(by_seed.items())}
        med = median(list(per_seed.values()))
        lines.append(
            f"- {name}: accepted minus all, per seed (mean over its runs): "
            + ", ".join(f"seed {s} {100 * d:+.2f} pts" for s, d in per_seed.items())
            + f"; median {100 * med:+.2f} pts (target >= 0: {ok(med >= 0)})."
            if med is not None
            else f"- {name}: no accuracy figures"
        )
    return lines + [""]


def cost_section(result: dict) -> list[str]:
    rows = [r for r in result.get("predict_cost") or [] if not r.get("error")]
    if not rows:
        return [f"## predict's cost\n\nnot measured: {result.get('predict_cost_error') or 'no successful run'}\n"]
    lines = [
        "## predict's cost on cats_and_dogs_filtered's 1,000 validation images",
        "",
        "| run | mode | wall s | load before | peak MB | labelled unknown |",
        "| ---: | --- | ---: | --- | ---: | --- |",
    ]
    for r in result["predict_cost"]:
        lines.append(
            f"| {r['repeat']} | {r['mode']} | {r['wall_s']:.1f} | {r['load_before']} | {r['peak_mb']} | "
            f"{r['unknown_labels']} |"
        )
    walls = {m: [r["wall_s"] for r in rows if r["mode"] == m] for m in ("with", "without")}
    if walls["with"] and walls["without"]:
        w, wo = median(walls["with"]), median(walls["without"])
        extra = 100 * (w / wo - 1)
        lines += [
            "",
            f"Median with the score {w:.1f} s (range {min(walls['with']):.1f}-{max(walls['with']):.1f}), with "
            f"`--no-unknown` {wo:.1f} s (range {min(walls['without']):.1f}-{max(walls['without']):.1f}): "
            f"{extra:+.1f}% (target <= +10%: {ok(extra <= 10)}). Whole processes (TensorFlow's import, the model's "
            "load, decoding and the base's forward pass included) on a shared machine: see the load column.",
        ]
        pairs = paired_ratios(rows)
        if pairs:
            med = 100 * (median(pairs) - 1)
            lines += [
                "",
                "Each repeat runs the two back to back (the order alternates), so the ratio within a repeat is less "
                "exposed to the load moving between repeats: with / without = "
                + ", ".join(f"{r:.3f}" for r in pairs)
                + f"; median {med:+.1f}% (target <= +10%: {ok(med <= 10)}).",
            ]
    return lines + [""]


def paired_ratios(rows: list[dict]) -> list[float]:
    """with / without wall time within each repeat that has both."""
    by_repeat: dict[int, dict[str, float]] = {}
    for r in rows:
        by_repeat.setdefault(r["repeat"], {})[r["mode"]] = r["wall_s"]
    return [p["with"] / p["without"] for _, p in sorted(by_repeat.items()) if "with" in p and "without" in p]


def markdown(result: dict) -> str:
    lines = [
        "# Images of no class: tlcli's `unknown` answer measured (issue 29)",
        "",
        f"`python benchmarks/unknown.py` at commit {result.get('commit')}, {result.get('when')}; load at the start "
        f"{result.get('load_start')}, now {result.get('load_now')} (2 cores shared with other jobs); "
        + (
            f"the parts' times add up to {fmt(result.get('seconds'), 0)} s (they ran side by side: `sources`). Config:"
            if result.get("sources")
            else f"total {fmt(result.get('seconds'), 0)} s. Config:"
        )
        + " the smallest one with MobileNetV2 "
        "(`base: {name: MobileNetV2}`, `data.dir`, `seed`; 224 px) plus `predict: {unknown: {accept: 0.95}}`. "
        "Figures are `tlcli evaluate RUN --unknown DIR --json`'s `unknown` object.",
        "",
    ]
    lines += hymenoptera_section(result.get("hymenoptera") or [])
    lines += eurosat_section(result)
    lines += accuracy_section(result)
    lines += cost_section(result)
    if result.get("notes"):
        lines += ["## Notes", "", *result["notes"], ""]
    return "\n".join(lines)
