"""The typed records training's steps hand each other: the splits, a phase's outcome, the run's timings."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from tlcli.training.budget import EpochBudget

S = TypeVar("S")


@dataclass(frozen=True)
class Splits(Generic[S]):
    """One value per split of a run: train, val, and test when the run has a test split (else None)."""

    train: S
    val: S
    test: S | None = None

    @classmethod
    def of(cls, sets: Mapping[str, S]) -> Splits[S]:
        """From a mapping keyed by split name (as the single pass builds it)."""
        return sets if isinstance(sets, Splits) else cls(**sets)

    def get(self, split: str) -> S | None:
        """The value of the split named `split` (None: a test split the run does not have)."""
        return getattr(self, split)

    def items(self) -> list[tuple[str, S]]:
        """(name, value) of the splits the run has, in the order train, val, test."""
        present = [("train", self.train), ("val", self.val)]
        return present + ([("test", self.test)] if self.test is not None else [])

    def as_dict(self) -> dict[str, S]:
        return dict(self.items())

    @property
    def has_test(self) -> bool:
        """A test split with at least one kept image."""
        return self.test is not None and len(self.test) > 0  # type: ignore[arg-type]


@dataclass(frozen=True)
class PhaseOutcome:
    """How a phase ended: the figures of the weights it started from (empty when it does not roll back), its best
    epoch, its last one (`train.restore_best: false`: the weights it ends with), and which it kept ("start", "best"
    or "last"); recorded per phase in metrics.json."""

    start: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    kept: str = "best"
    monitor: str = ""  # what decided (the phase's monitor, ties broken by the lower val_loss for an accuracy)
    skipped: str = ""  # why the phase did not run (`fine_tune.when: auto`), else ""
    needed: float = 0.0  # the gain on `monitor` the phase had to exceed to be kept (more than one validation image)
    budget: EpochBudget | None = None  # the timings its epochs were sized to, with `budget_min`
    last: dict[str, Any] = field(default_factory=dict)  # set when the phase ends with its last epoch, not its best

    @property
    def ends_with(self) -> str:
        """Which epoch's weights the phase ends with unless it rolls back: "best", or "last" (no restore_best)."""
        return "last" if self.last else "best"

    @property
    def ended(self) -> dict[str, Any]:
        """The figures of the epoch the phase ends with unless it rolls back: what was compared with its start."""
        return self.last or self.best

    @property
    def verdict(self) -> str:
        """One line: which weights the phase kept and by how much they differ on validation from the other."""
        if self.skipped:
            return f"skipped: {self.skipped}"
        if not self.start or not self.monitor:
            return ""
        shown, which = self.monitor, self.ends_with
        ended, start = self.ended.get(shown, float("nan")), self.start.get(shown, float("nan"))
        change = f"{shown} {start:.4f} at its start, {ended:.4f} at its {which} epoch ({ended - start:+.4f})"
        if self.kept == "start" and self.needed and ended > start:
            return (
                f"gained no more than one validation image ({change}; needed more than {self.needed:+.4f}): "
                "kept the weights it started from"
            )
        if self.kept == "start":
            return f"no better on validation than it started ({change}): kept the weights it started from"
        averaged = ", the moving average of its weights" if self.ended.get("averaged") else ""
        why = " (train.restore_best: false)" if which == "last" else ""
        return f"kept its {which} epoch, {int(self.ended.get('epoch', 0))}{averaged}{why} ({change})"

    @property
    def best_epoch(self) -> int:
        return int(self.best.get("epoch", 0))

    @property
    def added_epochs(self) -> int:
        """Epochs the kept weights added to the phase's start (0 when it kept its start or had none)."""
        if self.kept == "start" or not self.start:
            return 0
        return int(self.ended.get("epoch", 0)) - int(self.start.get("epoch", 0))

    def to_dict(self) -> dict[str, Any]:
        record = {"start": self.start, "best": self.best, "kept": self.kept}
        record |= {"last": self.last} if self.last else {}
        record |= {"skipped": self.skipped} if self.skipped else {}
        record |= {"needed_gain": round(self.needed, 6)} if self.needed else {}
        record |= {"decided_by": self.monitor, "verdict": self.verdict} if self.start else {}
        return record | ({"budget": self.budget.to_dict()} if self.budget is not None else {})


class Timings:
    """The seconds each step of a run took, in the order the steps ran (metrics.json's `timings_s`)."""

    def __init__(self, **seconds: float):
        self._seconds: dict[str, float] = {name: round(value, 3) for name, value in seconds.items()}

    def record(self, name: str, started: float) -> None:
        """`name` took the time since `started` (a `time.perf_counter()` reading)."""
        self._seconds[name] = round(time.perf_counter() - started, 3)

    @contextlib.contextmanager
    def measure(self, name: str) -> Iterator[None]:
        """Time the block as `name` (recorded when the block ends normally)."""
        started = time.perf_counter()
        yield
        self.record(name, started)

    def get(self, name: str) -> float | None:
        return self._seconds.get(name)

    def as_dict(self) -> dict[str, float]:
        return dict(self._seconds)
