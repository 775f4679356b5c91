"""Stage 6, inference: class probabilities (`probabilities`), `predict` (`predict`), its output formats
(`formats`) and Grad-CAM heatmaps (`explain`)."""

from tlcli.inference.explain import grad_cam, write_overlay
from tlcli.inference.formats import FORMATS, format_predictions
from tlcli.inference.predict import Prediction, PredictResult, predict
from tlcli.inference.probabilities import predict_probabilities, to_class_probabilities

__all__ = [
    "FORMATS",
    "Prediction",
    "PredictResult",
    "format_predictions",
    "grad_cam",
    "predict",
    "predict_probabilities",
    "to_class_probabilities",
    "write_overlay",
]
