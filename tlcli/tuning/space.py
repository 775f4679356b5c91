"""The search space as Optuna sees it, and each trial's config.

`SearchSpace` turns `tune.space` into Optuna distributions (choices by
label), draws a trial's values define-by-run (a key whose section the trial
leaves out, such as `fine_tune.learning_rate` when `fine_tune` is drawn
absent, is not drawn), and writes them into the config. `pin` makes the
values that training would choose itself concrete, so a trial trains exactly
what its parameters say: `train.l2: auto` becomes the penalty chosen once for
the study (or 0), `head.dropout: auto` its matching rate, and the refit and
probe are off. `best.yaml` carries the same pins, so `tlcli train best.yaml`
trains what the best trial trained.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable

from tlcli.config.loading import set_dotted, validate_config
from tlcli.config.schema import ExperimentConfig
from tlcli.config.search import SearchChoice, SearchRange, search_integers
from tlcli.errors import ConfigError
from tlcli.modeling.build import DEFAULT_DROPOUT

# Keys whose trials still train only the head on the study's one extraction: they change neither the
# frozen features nor the split. Any other key (augmentation, the base, fine-tuning, the pooling, the image
# size, the seed, ...) makes every trial train as a run does.
HEAD_KEYS = (
    "train.learning_rate",
    "train.optimizer",
    "train.optimizer_args",
    "train.schedule",
    "train.schedule_args",
    "train.epochs",
    "train.max_epochs",
    "train.l2",
    "train.label_smoothing",
    "train.class_weight",
    "train.early_stopping",
    "train.monitor",
    "train.restore_best",
    "head.dense",
    "head.dropout",
    "data.batch_size",
    "data.shuffle",
)
MISSING = object()


def is_head_key(key: str) -> bool:
    return any(key == head or key.startswith(head + ".") for head in HEAD_KEYS)


def get_dotted(raw: dict[str, Any], key: str) -> Any:
    """The value at a dotted key, or MISSING (also when a section on the way is absent)."""
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


@dataclass(frozen=True)
class Param:
    """One searched key: its distribution, and whether a range draws integers."""

    key: str
    spec: SearchRange | SearchChoice
    integer: bool = False

    def distribution(self):
        import optuna

        spec = self.spec
        if isinstance(spec, SearchChoice):
            return optuna.distributions.CategoricalDistribution(self.choices())
        if self.integer:
            return optuna.distributions.IntDistribution(
                int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1)
            )
        return optuna.distributions.FloatDistribution(float(spec.low), float(spec.high), log=spec.log, step=spec.step)

    def choices(self) -> list[Any]:
        """What the study stores: the scalars themselves, or the labels of `{label: value}` choices."""
        return list(self.spec.choices)

    def value_of(self, drawn: Any) -> Any:
        """The config value of what the study stores (a label, or a number)."""
        if isinstance(self.spec, SearchChoice) and isinstance(self.spec.choices, dict):
            return copy.deepcopy(self.spec.choices[drawn])
        return drawn

    def stored(self, value: Any, held: Callable[[Any], Any] = lambda choice: choice) -> Any:
        """What the study stores for a config value (its label), or MISSING when the choices do not hold it
        (`held(choice)`: the choice as the config holds it)."""
        if isinstance(self.spec, SearchChoice):
            pairs = (
                self.spec.choices.items()
                if isinstance(self.spec.choices, dict)
                else ((choice, choice) for choice in self.spec.choices)
            )
            return next((stored for stored, choice in pairs if _same(held(choice), value)), MISSING)
        return int(value) if self.integer else float(value)


def _same(a: Any, b: Any) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return (
        a == b if numbers else json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    )


class SearchSpace:
    """`tune.space` of a config: its params in an order where a section comes before the keys inside it."""

    def __init__(self, config: ExperimentConfig):
        if config.tune is None:
            raise ConfigError(
                "tune", "the config has no tune: section; add one with tune.space (see docs/guides/tune.md)"
            )
        self.config = config
        items = sorted(config.tune.space.items(), key=lambda item: item[0].count("."))
        self.params = [
            Param(key, spec, isinstance(spec, SearchRange) and search_integers(key, spec)) for key, spec in items
        ]

    @property
    def keys(self) -> list[str]:
        return [param.key for param in self.params]

    def fingerprint(self) -> str:
        """Identifies the space (keys and distributions) and the metric: processes joining one study must agree on
        them."""
        tune = self.config.tune
        text = json.dumps(
            {"space": {k: v.model_dump() for k, v in tune.space.items()}, "metric": tune.metric},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def head_only(self) -> str | None:
        """None when every searched key leaves the frozen features alone, else the first key that does not."""
        return next((key for key in self.keys if not is_head_key(key)), None)

    def draw(self, trial) -> dict[str, Any]:
        """The trial's config values, drawn define-by-run (keys inside a section the trial leaves absent are not
        drawn)."""
        raw = self.base_raw()
        values: dict[str, Any] = {}
        for param in self.params:
            parent = param.key.rpartition(".")[0]
            if parent and get_dotted(raw, parent) is None:
                continue
            value = param.value_of(
                trial.suggest_categorical(param.key, param.choices())
                if isinstance(param.spec, SearchChoice)
                else _suggest(trial, param)
            )
            set_dotted(raw, param.key, copy.deepcopy(value))
            values[param.key] = value
        return values

    def from_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Config values of a finished trial's stored params."""
        return {param.key: param.value_of(params[param.key]) for param in self.params if param.key in params}

    def base_raw(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json", exclude={"tune"})

    def config_for(self, values: dict[str, Any], pins: dict[str, Any] | None = None) -> ExperimentConfig:
        """The config with `values` (then `pins`) written in, validated, without its tune section."""
        raw = self.base_raw()
        for key, value in {**values, **(pins or {})}.items():
            set_dotted(raw, key, copy.deepcopy(value))
        return validate_config(raw)

    def held(self, key: str, choice: Any) -> Any:
        """A choice as a config holds it once validated: a section's with its defaults filled in (`base: {name:
        MobileNet}`), `image_size: 224` as `[224, 224]`; as given when the config refuses it alone."""
        try:
            raw = self.config_for({key: choice}).model_dump(mode="json", exclude={"tune"})
        except ConfigError:
            return choice
        value = get_dotted(raw, key)
        return choice if value is MISSING else value

    def trial_zero(self, pinned: ExperimentConfig) -> dict[str, Any]:
        """The stored params of the config as written (its `auto` values as `pin` makes them).

        Raises:
            ConfigError: a key's own value is not among its choices (trial 0 could not be the config as written).
        """
        raw = pinned.model_dump(mode="json", exclude={"tune"})
        params = {}
        for param in self.params:
            value = get_dotted(raw, param.key)
            if value is MISSING:
                continue  # inside an absent section, or a free mapping that does not set it: drawn
            stored = param.stored(value, lambda choice, key=param.key: self.held(key, choice))
            if stored is MISSING:
                raise ConfigError(
                    f"tune.space.{param.key}",
                    f"the config's own value {value!r} is not among the choices; "
                    "add it (trial 0 is the config as written)",
                )
            params[param.key] = stored
        return params


def _suggest(trial, param: Param) -> Any:
    spec = param.spec
    if param.integer:
        return trial.suggest_int(param.key, int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1))
    return trial.suggest_float(param.key, float(spec.low), float(spec.high), log=spec.log, step=spec.step)


def pins(config: ExperimentConfig, penalty: float | None) -> dict[str, Any]:
    """What a trial fixes that training would otherwise choose: `train.l2: auto` (the study's `penalty` when the head is
    linear, else 0), `head.dropout: auto` (0 with that penalty, else the usual rate), no refit, no probe."""
    chosen = (
        config.train.l2 == "auto"
        and penalty is not None
        and not config.head.dense
        and config.train.label_smoothing == 0
    )
    fixed: dict[str, Any] = {"train.refit": False, "probe": "off"}
    if config.train.l2 == "auto":
        fixed["train.l2"] = float(penalty) if chosen else 0.0
    if config.head.dropout == "auto":
        fixed["head.dropout"] = 0.0 if chosen else DEFAULT_DROPOUT
    return fixed


def base_label(config: ExperimentConfig) -> str:
    """The base a trial trains on, for its record: `MobileNet {"alpha": 0.25}`, or the run it starts from."""
    base = config.base
    if base.run is not None:
        return f"run {base.run}"
    return base.name + (f" {json.dumps(base.args, sort_keys=True)}" if base.args else "")
