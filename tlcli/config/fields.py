"""What the schema's sections share: the strict base class, value kinds validated in one place, and the path marker.

A key annotated with `PathKey` (`PathValue` for plain paths) holds a file or
folder path: `tlcli.config.resolve` finds those keys in the schema and makes
them absolute, so no list of path keys is kept by hand.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict
from pydantic.fields import FieldInfo

# Which base layers train: a keyword, the last N layers, the top share of them (a fraction), or a layer name and after.
Trainable = Union[Literal["auto", "none", "all"], int, float, str]
Unfreeze = Union[Literal["all"], int, float, str]
OptimizerName = Literal["adam", "adamw", "sgd", "rmsprop"]
ScheduleName = Literal["constant", "cosine", "exponential"]


def _switch_words(on: bool) -> BeforeValidator:
    """YAML 1.1 reads an unquoted `off` (and `on`) as a boolean: read `false` back as "off", `true` as "on" when `on`
    is a value of the key; any other value is left to the key's own validation."""

    def read(value: Any) -> Any:
        if value is False:
            return "off"
        return "on" if value is True and on else value

    return BeforeValidator(read)


OFF_WORD = _switch_words(on=False)  # keys with an `off` value but no `on` (`cache`, `probe`)
ON_OFF_WORDS = _switch_words(on=True)  # keys with both (`runtime.mixed_precision`)


class Section(BaseModel):
    # Unknown keys are errors, so a typo never silently falls back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class PathKey:
    """Marks a key that holds a file or folder path (a relative one is relative to the working directory).

    Attributes:
        words: values that are keywords, not paths (`base.weights: imagenet`).
        named: the key may hold a name only the caller can resolve (`base.run`: a run name is looked up
            in the runs folder), so the caller supplies its path.
    """

    words: tuple[str, ...] = ()
    named: bool = False


PathValue = Annotated[Path, PathKey()]


def path_key(field: FieldInfo) -> PathKey | None:
    """The `PathKey` marker of a schema field (also inside `Optional[...]`), or None for a key that holds no path."""
    found = [m for m in field.metadata if isinstance(m, PathKey)]
    pending = list(typing.get_args(field.annotation))
    while pending and not found:
        arg = pending.pop()
        found = [m for m in getattr(arg, "__metadata__", ()) if isinstance(m, PathKey)]
        pending.extend(typing.get_args(arg))
    return found[0] if found else None


def section_type(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] or list[...] annotations, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = section_type(arg)
        if found is not None:
            return found
    return None


def layer_count(value: Any, minimum: int, words: str) -> Any:
    """A number of layers must be at least `minimum` and a share of them a fraction strictly between 0 and 1; names
    and keywords pass (checked against the built base)."""
    shown = f"must be {words}, a number of layers >= {minimum}, a fraction of them in (0, 1), or a layer name"
    if isinstance(value, int) and value < minimum:
        raise ValueError(shown)
    if isinstance(value, float) and not 0 < value < 1:
        raise ValueError(f"{shown}, got {value!r}")
    return value


def auto_or(value: Any, kinds: tuple[type, ...], what: str) -> Any:
    """One clear error for a key that is `auto` or a value of `kinds` (pydantic would report each alternative)."""
    if value == "auto" or (isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)):
        return value
    raise ValueError(f"must be auto or {what}, got {value!r}")


def _epochs_kind(value: Any) -> Any:
    return auto_or(value, (int,), "a number of epochs")


def _epoch_count(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise ValueError(f"must be auto or a number of epochs >= 1, got {value}")
    return value


# A phase's `epochs` (train and fine_tune): `auto` or a count >= 1, validated here once for both.
Epochs = Annotated[Union[Literal["auto"], int], BeforeValidator(_epochs_kind), AfterValidator(_epoch_count)]
