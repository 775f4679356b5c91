"""The export formats: their files, the runtimes they need, and their parity gates.

Each format is one artifact in the export folder. Its gate says how close it
must stay to the run's Keras model on the validation images: the share of
images with the same top-1 class, the largest absolute difference of any class
probability, and how many points of accuracy it may lose.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

from tlcli.errors import UserError, did_you_mean

FORMATS = ("saved_model", "tflite", "tflite-fp16", "tflite-int8", "onnx")
DEFAULT_FORMATS = ("saved_model", "tflite")
TFLITE_FORMATS = ("tflite", "tflite-fp16", "tflite-int8")

# The artifact's name inside the export folder (a folder for saved_model).
FILES = {
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "tflite-fp16": "model-fp16.tflite",
    "tflite-int8": "model-int8.tflite",
    "onnx": "model.onnx",
}

# What each format needs beyond TensorFlow, to write it and to run its parity check.
EXTRAS = {
    "saved_model": (),
    "tflite": ("ai_edge_litert",),
    "tflite-fp16": ("ai_edge_litert",),
    "tflite-int8": ("ai_edge_litert",),
    "onnx": ("tf2onnx", "onnxruntime"),
}
RUNTIMES = {
    "saved_model": "tensorflow",
    "tflite": "ai_edge_litert",
    "tflite-fp16": "ai_edge_litert",
    "tflite-int8": "ai_edge_litert",
    "onnx": "onnxruntime",
}
INSTALL_HINT = 'pip install "tlcli[export]"'


@dataclass(frozen=True)
class Gate:
    """A format's parity gate; None leaves a figure ungated.

    min_agreement: the share (0-1) of images whose top-1 class matches Keras's.
    max_difference: the largest absolute difference of any class probability.
    max_accuracy_drop: accuracy points (0-100) the artifact may lose against Keras.
    """

    min_agreement: float | None = None
    max_difference: float | None = None
    max_accuracy_drop: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Gate:
        data = data if isinstance(data, dict) else {}
        return cls(
            **{
                key: None if data.get(key) is None else float(data[key])
                for key in ("min_agreement", "max_difference", "max_accuracy_drop")
            }
        )


# Set from measurements (docs/guides/export-gates.md; `benchmarks/export_bench.py RUN --broken`): hymenoptera runs
# on MobileNet 0.25 and MobileNetV2 1.0, 153 validation photos, 2026-12-06. Broken artifacts tried on both bases:
# preprocessing dropped, channels swapped (fed BGR), bytes overwritten or cut in half, labels shuffled.
# Float32 formats: healthy agreement 1.0000, max difference <= 4.3e-6 on both bases.
FLOAT_GATE = Gate(min_agreement=0.995, max_difference=1e-3)
DEFAULT_GATES = {
    "saved_model": FLOAT_GATE,
    "tflite": FLOAT_GATE,
    "onnx": FLOAT_GATE,
    # fp16 healthy: agreement >= 0.9935 (one image of 153 flipped on MobileNetV2), max difference <= 0.025
    # (MobileNet 0.25: its frozen float16 depthwise kernels alone move 0.014). Broken: agreement <= 0.9281, max
    # difference >= 0.518 (channels swapped, the mildest), or NaN (bytes overwritten), or no load (cut in half).
    # Margins: agreement +2.35 / -4.2 points, max difference x4 / x5.
    "tflite-fp16": Gate(min_agreement=0.97, max_difference=0.1),
    # int8 (full integer) healthy: agreement >= 0.9281 with 1.96 points lost (MobileNet 0.25; 0.9608 and 2.6 points
    # on an earlier run), 0.9869 and 0 points on MobileNetV2. Broken, the mildest: channels swapped, 0.8497 and 4.6
    # points lost (MobileNet 0.25), 0.9085 and 7.8 points (MobileNetV2); the rest <= 0.7582. Margins: agreement
    # +2.8 points healthy, -5.0 (MobileNet 0.25, swapped); accuracy drop +1.4 healthy (2.6 vs 4), -3.8 (MobileNetV2,
    # swapped, which passes agreement by 0.85 points: caught by accuracy only). Max difference does not separate
    # them (healthy up to 0.381, swapped from 0.562), so it is ungated.
    "tflite-int8": Gate(min_agreement=0.90, max_accuracy_drop=4.0),
}

# The CLI option of each gate figure, for messages that say how to change it.
OPTIONS = {
    "min_agreement": "--min-agreement",
    "max_difference": "--max-difference",
    "max_accuracy_drop": "--max-accuracy-drop",
}


def parse_formats(specs: Sequence[str] | None) -> tuple[str, ...]:
    """`--format` values (repeatable, or comma-separated; `all` = every format) -> formats in FORMATS order.

    Raises:
        UserError: an unknown format, with a did-you-mean.
    """
    if not specs:
        return DEFAULT_FORMATS
    wanted = set()
    for spec in specs:
        for name in (part.strip().lower() for part in str(spec).split(",")):
            if name == "all":
                wanted.update(FORMATS)
            elif name in FORMATS:
                wanted.add(name)
            elif name:
                close = did_you_mean(name, (*FORMATS, "all"))
                raise UserError(f"--format: unknown format {name!r}; {_suggestion(close)}")
    if not wanted:
        raise UserError(f"--format: expected one of {', '.join((*FORMATS, 'all'))}")
    return tuple(name for name in FORMATS if name in wanted)


def _suggestion(close: str | None) -> str:
    """The end of an unknown format's message: the format meant, or every format."""
    return f"did you mean {close}?" if close else "expected one of " + ", ".join((*FORMATS, "all"))


def parse_gate_overrides(
    min_agreement: Sequence[str] = (), max_difference: Sequence[str] = (), max_accuracy_drop: Sequence[str] = ()
) -> dict[str, dict[str, float]]:
    """`FORMAT=NUMBER` strings of the three gate options -> {format: {figure: number}}; FORMAT `all` sets every format.

    Raises:
        UserError: not FORMAT=NUMBER, an unknown format, or a number out of range.
    """
    overrides: dict[str, dict[str, float]] = {}
    for figure, specs in (
        ("min_agreement", min_agreement),
        ("max_difference", max_difference),
        ("max_accuracy_drop", max_accuracy_drop),
    ):
        option = OPTIONS[figure]
        for spec in specs or ():
            name, sep, value = str(spec).partition("=")
            name = name.strip().lower()
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not sep or not math.isfinite(number):
                raise UserError(
                    f"{option}: expected FORMAT=NUMBER such as tflite-int8={DEFAULT_EXAMPLES[figure]}, got {spec!r}"
                )
            if name != "all" and name not in FORMATS:
                close = did_you_mean(name, (*FORMATS, "all"))
                raise UserError(f"{option}: unknown format {name!r}; {_suggestion(close)}")
            if number < 0 or (figure == "min_agreement" and number > 1):
                raise UserError(
                    f"{option}: {spec!r} is out of range "
                    f"({'a share from 0 to 1' if figure == 'min_agreement' else 'must be 0 or more'})"
                )
            for target in FORMATS if name == "all" else (name,):
                overrides.setdefault(target, {})[figure] = number
    return overrides


DEFAULT_EXAMPLES = {"min_agreement": "0.95", "max_difference": "0.05", "max_accuracy_drop": "3"}


def gates_for(
    formats: Sequence[str], overrides: dict[str, dict[str, float]] | None = None, base: dict[str, Gate] | None = None
) -> dict[str, Gate]:
    """Each format's gate: `base` (default: DEFAULT_GATES) with `overrides` applied."""
    base = base or DEFAULT_GATES
    overrides = overrides or {}
    return {name: replace(base.get(name, DEFAULT_GATES[name]), **overrides.get(name, {})) for name in formats}


def require_extras(formats: Sequence[str]) -> None:
    """Import what `formats` need beyond TensorFlow, before any work.

    Raises:
        UserError: a package is missing or fails to import, naming the fix.
    """
    for name in formats:
        for module in EXTRAS[name]:
            try:
                importlib.import_module(module)
            except (
                Exception
            ) as exc:  # a broken install (ABI mismatch, missing dependency) is as unusable as a missing one
                why = "is not installed" if isinstance(exc, ImportError) else f"fails to import ({type(exc).__name__})"
                raise UserError(f"--format {name}: {module} {why}; install the export extra: {INSTALL_HINT}") from None
