"""The `tune:` section of the schema: the search space of `tlcli tune`, validated like every other key.

`tune.space` maps dotted config keys to Optuna distributions: a numeric range
(`SearchRange`), or choices (`SearchChoice`: scalars, or any values by label,
since Optuna stores only scalars portably). `check_tune` runs inside the
experiment's own validation: every key must exist in the schema (or sit in a
free mapping such as `train.optimizer_args`), a range must be on a number,
and every value a distribution can give (both ends of a range, every choice)
must be a value the key takes, checked by validating the config with that
value in place. So a study never fails on its twentieth trial for a value its
first one would have refused.
"""

from __future__ import annotations

import math
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tlcli.config.fields import section_type
from tlcli.errors import did_you_mean

# Keys a study cannot vary: what names it, the search itself, where runs go, and which dataset it is.
UNSEARCHABLE = (
    "name",
    "tune",
    "output",
    "data.dir",
    "data.train_dir",
    "data.val_dir",
    "data.test_dir",
    "data.manifest",
    "data.group",  # which images go together: another grouping scores trials on other validation images
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchRange(_Strict):
    """A numeric range: floats, or integers where the key takes only integers (inside a free mapping: when both ends are
    integers)."""

    low: Union[int, float]
    high: Union[int, float]
    log: bool = False
    step: Union[int, float, None] = None

    @model_validator(mode="after")
    def _sane(self) -> SearchRange:
        for name in ("low", "high", "step"):  # YAML's .inf and .nan are floats: Optuna cannot draw from them
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log: true needs low > 0 and no step")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0, got {self.step}")
        return self


class SearchChoice(_Strict):
    """Choices: a list of scalars, or `{label: value}` for values of any kind (the study stores the label)."""

    choices: Union[list[Union[bool, int, float, str, None]], dict[str, Any]] = Field(..., min_length=1)

    def values(self) -> list[Any]:
        """The config values the choices stand for."""
        return list(self.choices.values()) if isinstance(self.choices, dict) else list(self.choices)


Distribution = Union[SearchRange, SearchChoice]


def _distribution(key: str, spec: Any) -> Distribution:
    spec = {"choices": spec} if isinstance(spec, list) else spec
    kind = SearchChoice if isinstance(spec, dict) and "choices" in spec else SearchRange
    if not isinstance(spec, dict) or (kind is SearchRange and not {"low", "high"} <= set(spec)):
        raise ValueError(
            f"{key}: give {{low, high}} (log, step optional), a list of values, or {{choices: {{label: "
            f"value}}}}, got {spec!r}"
        )
    try:
        return kind.model_validate(spec)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"] if not str(part).startswith(("list[", "dict[", "union[")))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (a range takes low, high, log, step; choices take choices)"
        raise ValueError(f"{key}: {where + ': ' if where else ''}{message[0].lower() + message[1:]}") from None


def _flatten(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys as dotted ones: `{train: {learning_rate: {low, high}}}` (and `--set
    tune.space.train.learning_rate=...`) is
    `{train.learning_rate: {low, high}}`; a mapping that is not a distribution is a section."""
    flat: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, dict) and spec and "choices" not in spec and not {"low", "high"} & set(spec):
            flat |= _flatten(spec, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = spec
    return flat


class TuneConfig(_Strict):
    """Hyperparameter search: what `tlcli tune` varies, and on which figure (`tlcli train` ignores this section)."""

    space: dict[str, Any] = Field(
        ...,
        description=(
            "Dotted config keys and their distributions: `{low, high}` (`log: true` for a log scale, `step` for "
            "a grid; integers where the key takes integers), a list of values, or `{choices: {label: value}}` "
            "for values that are not scalars (`head.dense: {choices: {none: [], small: [{units: 256}]}}`: the "
            "study stores the label). The config's own value of each key must be in its space: trial 0 is the "
            "config as written."
        ),
    )
    metric: str = Field(
        "auto",
        description=(
            "The per-epoch validation figure the study optimises (`val_loss`, `val_accuracy`, `val_map`, ...): "
            "reported every epoch for pruning; a trial's value is its figure at the epoch training keeps (the "
            "best by `train.monitor`). `auto`: `val_accuracy` (multi-label: `val_map`)."
        ),
    )
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto", description="`auto`: minimize a loss, maximize anything else."
    )
    trials: int = Field(
        50,
        ge=1,
        description=(
            "The study's total: every process stops once the study has this many finished trials, whoever ran "
            "them (`--trials` overrides)."
        ),
    )
    timeout: Union[float, None] = Field(
        None, gt=0, description="Start no trial after this many seconds (`--timeout` overrides)."
    )
    budget: Union[float, None] = Field(
        None,
        gt=0,
        description=(
            "The study's time budget in minutes: once its finished trials (every process's, every `--resume`'s) "
            "have taken this long together, no new trial starts; the one running finishes, and tune.json says "
            "`stopped_by: budget`. `timeout` is one process's limit in seconds, counted from its start."
        ),
    )
    pruner: Literal["median", "hyperband", "successive_halving", "none"] = Field(
        "median",
        description=(
            "Stops trials whose per-epoch figure falls behind the others': Optuna's `MedianPruner`, or the "
            "multi-fidelity `HyperbandPruner` and `SuccessiveHalvingPruner` (an epoch is the resource), or none. "
            "A trial that fine-tunes reports the epochs of its `fine_tune` phase."
        ),
    )
    pruner_args: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Arguments of the pruner, e.g. `{n_startup_trials: 5, n_warmup_steps: 5}` (tlcli's defaults for median), "
            "`{min_resource: 2, reduction_factor: 3}` for hyperband or successive_halving."
        ),
    )
    folds: Union[Literal["auto"], int] = Field(
        "auto",
        description=(
            "How a head trial is scored: `1`, on the validation split; `k` (2 or more), by k-fold "
            "cross-validation over the training and validation images "
            "together (stratified; a fresh head per fold, each stopped by its own fold; the trial's value is "
            "the mean over folds, its epochs the median; the "
            "pruner watches the first fold). `auto`: 5 folds when the two splits hold fewer than 1,000 "
            "images (a validation split of under 200, where one "
            "image moves accuracy by half a point and the best of many trials on it is mostly luck), else 1. "
            "Never more folds than the smallest class has training + validation images (single-label): `auto` "
            "takes fewer, a larger `k` is an error before any trial. Trials that train the full model, and "
            "studies with random flips on cached features, use the validation split."
        ),
    )

    @field_validator("folds")
    @classmethod
    def _folds(cls, value):
        if value != "auto" and value < 1:
            raise ValueError("expected auto or a number of folds >= 1 (1: the validation split)")
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, value: Any) -> Any:
        flat = _flatten(value) if isinstance(value, dict) else value
        if not isinstance(flat, dict) or not flat:
            raise ValueError(
                "empty: name at least one key to search, e.g. {train.learning_rate: {low: 1.0e-4, high: "
                "1.0e-2, log: true}}"
            )
        return {key: _distribution(key, spec) for key, spec in flat.items()}

    def resolved_metric(self, multi_label: bool) -> str:
        return self.metric if self.metric != "auto" else "val_map" if multi_label else "val_accuracy"

    def goal(self, multi_label: bool = False) -> str:
        """`maximize` or `minimize`, with `auto` resolved."""
        return (
            self.direction
            if self.direction != "auto"
            else "minimize"
            if "loss" in self.resolved_metric(multi_label)
            else "maximize"
        )


def _leaves(annotation: Any) -> set:
    """The plain types an annotation allows (`Union[Literal["auto"], int]` -> {Literal, int}; containers as their
    origin)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if not args or origin in (dict, list, tuple, Literal):
        return {origin or annotation}
    return set().union(*map(_leaves, args))


def search_annotation(key: str) -> Any:
    """The annotation of a key `tune.space` may search, or None for a key inside a free mapping
    (`train.optimizer_args.momentum`).

    Raises:
        ValueError: an unknown key path (with a did-you-mean), a path through a value, or a key that cannot be searched.
    """
    from tlcli.config.schema import ExperimentConfig  # the schema validates `tune:` with this module: a cycle

    if key.split(".")[0] in UNSEARCHABLE or key in UNSEARCHABLE:
        raise ValueError(f"{key}: cannot be searched (a study trains one experiment on one dataset)")
    parts = key.split(".")
    model: Any = ExperimentConfig
    annotation: Any = None
    for depth, part in enumerate(parts):
        if depth:
            if dict in _leaves(annotation):
                return None
            model = section_type(annotation) if typing.get_origin(annotation) is not list else None
            if model is None:
                raise ValueError(f"{key}: {'.'.join(parts[:depth])} is a value, not a section")
        if part not in model.model_fields:
            close = did_you_mean(part, list(model.model_fields))
            prefix = ".".join(parts[:depth] + [""])
            raise ValueError(
                f"{key}: unknown key"
                + (
                    f", did you mean {prefix}{close}?"
                    if close
                    else f" (known: {', '.join(prefix + name for name in model.model_fields)})"
                )
            )
        annotation = model.model_fields[part].annotation
    return annotation


def search_integers(key: str, spec: SearchRange) -> bool:
    """Whether a range draws integers: the key takes integers and no floats, or (a free key) both ends are integers."""
    annotation = search_annotation(key)
    leaves = (
        _leaves(annotation)
        if annotation is not None
        else {type(spec.low), type(spec.high)} | ({type(spec.step)} if spec.step is not None else set())
    )
    return int in leaves and float not in leaves


def epoch_figures(config) -> set[str]:
    """The validation figures every epoch logs (what `tune.metric` may name), as far as the config alone tells."""
    if config.multi_label:
        return {"val_loss", "val_binary_accuracy", "val_map"}
    return {"val_loss", "val_accuracy"} | ({f"val_top{config.train.top_k}_accuracy"} if config.train.top_k else set())


def check_tune(config) -> None:
    """Every searched key exists and takes every value its distribution can give; the metric is a per-epoch validation
    figure.

    Raises:
        ValueError: naming the key (`tune.space.<key>: ...`, `tune.metric: ...`), one line.
    """
    from tlcli.config.loading import describe_error, set_dotted  # loading imports the schema, which imports this

    tune = config.tune
    for key, spec in tune.space.items():
        where = f"tune.space.{key}"
        try:
            annotation = search_annotation(key)
        except ValueError as exc:
            raise ValueError(f"tune.space.{exc}") from None
        if isinstance(spec, SearchRange) and annotation is not None and not _leaves(annotation) & {int, float}:
            raise ValueError(f"{where}: takes no range (it is not a number); list its values instead")
        if isinstance(spec, SearchRange) and spec.step is not None and search_integers(key, spec):
            if spec.step != int(spec.step):  # Optuna's integer step would be int(step): 0, or another grid
                raise ValueError(f"{where}: step {spec.step} is not a whole number ({key} takes integers)")
        for value in (spec.low, spec.high) if isinstance(spec, SearchRange) else spec.values():
            raw = config.model_dump(mode="json", exclude={"tune"})
            set_dotted(raw, key, value)
            try:
                type(config).model_validate(raw)
            except ValidationError as exc:
                problem = ": ".join(part for part in describe_error(exc.errors()[0]) if part)
                raise ValueError(f"{where}: cannot take {value!r} ({problem})") from None
    figures = epoch_figures(config)
    if tune.metric != "auto" and tune.metric not in figures:
        close = did_you_mean(tune.metric, sorted(figures))
        raise ValueError(
            f"tune.metric: {tune.metric!r} is not a per-epoch validation figure"
            + (f", did you mean {close}?" if close else f" (one of {', '.join(sorted(figures))})")
        )
