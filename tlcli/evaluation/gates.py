"""Quality gates: `--fail-under METRIC=NUMBER` and `--fail-over METRIC=NUMBER` (exit 3 when one fails)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from tlcli.errors import UserError, did_you_mean
from tlcli.evaluation.metrics import flatten_numbers


@dataclass(frozen=True)
class Gate:
    """`--fail-under KEY=VALUE` (fail when metrics[KEY] < VALUE) or `--fail-over KEY=VALUE` (fail when it is >
    VALUE)."""

    key: str
    threshold: float
    over: bool = False  # for figures where lower is better: loss, calibration.ece

    @property
    def option(self) -> str:
        return "--fail-over" if self.over else "--fail-under"

    def fails(self, value: float) -> bool:
        return value > self.threshold if self.over else value < self.threshold

    def describe(self, value: float) -> str:
        return f"{self.key} {value:.4f} {'>' if self.over else '<'} {self.threshold:g}"


def parse_gates(specs: Sequence[str], over: bool = False) -> list[Gate]:
    """Parse `KEY=NUMBER` strings (of `--fail-over` when `over`, else `--fail-under`).

    Raises:
        UserError: a spec is not `KEY=NUMBER`.
    """
    gates = []
    for spec in specs:
        key, sep, value = spec.partition("=")
        try:
            threshold = float(value)
        except ValueError:
            threshold = math.nan
        if not sep or not key.strip() or not math.isfinite(threshold):
            example = "loss=0.5" if over else "accuracy=0.9"
            raise UserError(
                f"{'--fail-over' if over else '--fail-under'}: expected METRIC=NUMBER such as {example}, got {spec!r}"
            )
        gates.append(Gate(key.strip(), threshold, over))
    return gates


def check_gate_keys(gates: Sequence[Gate], keys: Sequence[str]) -> None:
    """Every gate must name a numeric metric.

    Raises:
        UserError: an unknown metric, with a did-you-mean.
    """
    for gate in gates:
        if gate.key not in keys:
            close = did_you_mean(gate.key, keys, cutoff=0.5)
            hint = (
                f"did you mean {close}?"
                if close
                else "known: "
                + ", ".join(k for k in keys if "." not in k or k.startswith(("macro_avg", "calibration.ece")))
            )
            raise UserError(f"{gate.option}: unknown metric {gate.key!r}; {hint}")


def gate_failures(metrics: dict[str, Any], gates: Sequence[Gate]) -> list[str]:
    """One line per gate whose metric is on the wrong side of its threshold."""
    flat = flatten_numbers(metrics)
    check_gate_keys(gates, sorted(flat))
    return [g.describe(flat[g.key]) for g in gates if g.fails(flat[g.key])]
