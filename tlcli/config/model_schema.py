"""The `base:` and `head:` sections of the schema: the pretrained base and the new head put on it."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, field_validator

from tlcli.config.fields import PathKey, Section, Trainable, auto_or, layer_count


class BaseModelConfig(Section):
    """The pretrained base: a keras.applications model, the built-in SmallCNN, or an earlier run's model."""

    name: str = Field(
        "MobileNetV2",
        description=(
            "A `keras.applications` model name (e.g. `MobileNet`, `EfficientNetB0`, `ResNet50`) or `SmallCNN` "
            "(built in, for images under 32 px). Ignored when `run` is set."
        ),
    )
    weights: Annotated[str, PathKey(words=("imagenet", "none"))] = Field(
        "imagenet", description="`imagenet`, `none` (random init), or a path to a weights file for this base."
    )
    run: Annotated[Optional[str], PathKey(named=True)] = Field(
        None,
        description=(
            "Use an earlier run's model (without its head) as the base: a run folder, or a run name (the newest "
            "completed run of that name in the runs folder)."
        ),
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra constructor arguments for the base, e.g. `{alpha: 0.25}` for MobileNet.",
    )
    trainable: Trainable = Field(
        "auto",
        description=(
            "Which base layers train in the first phase: `none` (frozen), `all`, an integer N (the last N "
            "layers, in Keras layer order), a fraction in (0, 1) (that share of the layers, from the top), or a "
            "layer name (that layer and all after it). `auto` = `none` for "
            "pretrained weights, `all` for `weights: none`."
        ),
    )

    @field_validator("trainable")
    @classmethod
    def _non_negative(cls, value: Trainable) -> Trainable:
        return layer_count(value, minimum=0, words="none, all")

    @property
    def pretrained(self) -> bool:
        """True when the base starts from learned weights (BatchNorm then stays in inference mode)."""
        return self.run is not None or self.weights != "none"


class DenseLayerConfig(Section):
    units: int = Field(..., ge=1, description="Units of this dense layer.")
    activation: str = Field("relu", description="Keras activation name.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after this layer.")


class HeadConfig(Section):
    """The new classification head put on top of the base."""

    pooling: Literal["avg", "max", "flatten"] = Field("avg", description="How the base's feature map becomes a vector.")
    dense: list[DenseLayerConfig] = Field(
        default_factory=list, description="Optional hidden layers, each `{units, activation, dropout}`."
    )
    dropout: Union[Literal["auto"], float] = Field(
        "auto",
        description=(
            "Dropout before the output layer. `auto`: 0 when the head's L2 penalty is chosen on the validation "
            "split (`train.l2: auto`: the penalty regularises), else 0.2."
        ),
    )
    threshold: Union[Literal["per_class"], float] = Field(
        0.5,
        description=(
            "With `data.multi_label`, the probability above which a label is predicted; `per_class` chooses each "
            "class's threshold on the validation split (the best F1; recorded in model.json, and the validation "
            "figures marked as selection figures)."
        ),
    )

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_kind(cls, value):
        if value == "per_class" or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1):
            return value
        raise ValueError(f"must be per_class or a probability between 0 and 1, got {value!r}")

    @field_validator("dropout", mode="before")
    @classmethod
    def _dropout_kind(cls, value):
        return auto_or(value, (int, float), "a rate in [0, 1)")

    @field_validator("dropout")
    @classmethod
    def _rate(cls, value):
        if not isinstance(value, str) and not 0 <= value < 1:
            raise ValueError(f"must be auto or a rate in [0, 1), got {value}")
        return value

    activation: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="`softmax` over all classes, or `sigmoid` (a single unit; two classes only)."
    )
