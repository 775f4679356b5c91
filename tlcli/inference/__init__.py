"""Stage 6, inference: class probabilities (`probabilities`), `predict` (`predict`), its output formats
(`formats`), Grad-CAM heatmaps (`explain`) and the rule for images of no class (`unknown`)."""

from tlcli.inference.explain import grad_cam, write_overlay
from tlcli.inference.formats import FORMATS, format_predictions
from tlcli.inference.predict import Prediction, PredictResult, predict
from tlcli.inference.probabilities import predict_probabilities, to_class_probabilities
from tlcli.inference.unknown import UnknownRule, read_unknown_rule, score_images

__all__ = [
    "FORMATS",
    "Prediction",
    "PredictResult",
    "UnknownRule",
    "format_predictions",
    "grad_cam",
    "predict",
    "predict_probabilities",
    "read_unknown_rule",
    "score_images",
    "to_class_probabilities",
    "write_overlay",
]
