"""Stage 6, inference: class probabilities (`probabilities`), `predict` (`predict`) and its output formats
(`formats`)."""

from tlcli.inference.formats import FORMATS, format_predictions
from tlcli.inference.predict import Prediction, PredictResult, predict
from tlcli.inference.probabilities import predict_probabilities, to_class_probabilities

__all__ = [
    "FORMATS",
    "Prediction",
    "PredictResult",
    "format_predictions",
    "predict",
    "predict_probabilities",
    "to_class_probabilities",
]
