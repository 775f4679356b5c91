"""Writing each format: Keras 3's own exporters, then TensorFlow's TFLite converter from the SavedModel.

`model.export(format="tf_saved_model")` traces the model's inference call
(augmentation off, preprocessing in) with a dynamic batch; the TFLite variants
are converted from that SavedModel, and `model.export(format="onnx")` goes
through tf2onnx. The model holds its own preprocessing, so every artifact
takes raw 0-255 pixels, as `model.keras` does.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from tlcli.errors import TlcliError
from tlcli.export.runtime import quiet_native_logs
from tlcli.modeling import layers as names


class ExportError(TlcliError):
    """A converter failed on the run's model (exit 1); the staged export folder is removed."""


@contextlib.contextmanager
def converting(format_name: str) -> Iterator[None]:
    """Turn a converter's exception (often pages of MLIR) into one line naming the format and the first error."""
    try:
        yield
    except TlcliError:
        raise
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = next((line for line in lines if "error:" in line), lines[0] if lines else "")
        raise ExportError(
            f"{format_name}: conversion failed ({type(exc).__name__}: {first[-300:]}); "
            "run with --debug for the converter's log"
        ) from exc


def inference_model(model):
    """The run's model called with training=False, as a new functional model over the same layers and weights.

    Keras's exporters trace `model.__call__` without a training argument, and
    Keras 3's random image layers default to training=True: the run's
    augmentation would then run inside every artifact (measured: probabilities
    0.59 away from Keras's on hymenoptera), and its random ops would stop the
    TFLite converter. An explicit training=False reaches every nested layer.
    """
    import keras

    inputs = keras.Input(model.input_shape[1:], name=names.INPUT)  # the serving input's name in every artifact
    return keras.Model(inputs, model(inputs, training=False), name="tlcli_inference")


def write_saved_model(model, path: Path) -> None:
    with quiet_native_logs():
        model.export(str(path), format="tf_saved_model", verbose=False)


def write_onnx(model, path: Path) -> None:
    import tensorflow as tf

    # An explicit signature: without one Keras refuses a model that was never called (ours, unless a SavedModel came
    # first).
    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=names.INPUT)]
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # its per-step INFO lines go to the root logger otherwise
    with warnings.catch_warnings(), quiet_native_logs():
        warnings.simplefilter("ignore")  # tf2onnx's numpy and TensorFlow deprecation notes
        model.export(str(path), format="onnx", verbose=False, input_signature=signature)


def anchored_range(images: np.ndarray) -> np.ndarray:
    """The calibration images with their first image's top-left pixel set to 0 and the next to 255, when the set lacks
    them: the int8 model's uint8 input then has scale 1 and zero point 0, so raw pixels go in unchanged. (The
    quantizer takes the input's range from what calibration saw: images peaking at 230 would give a scale of
    230/255, and raw pixels fed to the model would be 10% too bright.) Two pixels of one image barely move any
    other layer's range."""
    if not len(images) or (images.min() == 0 and images.max() == 255):
        return images
    images = np.array(images, copy=True)
    flat = images[0].reshape(-1, images.shape[-1])
    flat[0], flat[1] = 0, 255
    return images


def write_tflite(saved_model: Path, path: Path, variant: str, calibration: np.ndarray | None = None) -> None:
    """Convert `saved_model` to `variant`: tflite (float32), tflite-fp16 (float16 weights) or tflite-int8
    (full integer, uint8 input and output, calibrated on `calibration`: uint8 images of the run's own training set)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if variant == "tflite-fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "tflite-int8":
        if calibration is None or not len(calibration):
            raise ValueError("int8 conversion needs calibration images")
        images = anchored_range(calibration)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    elif variant != "tflite":
        raise ValueError(f"not a TFLite variant: {variant}")
    with quiet_native_logs():
        data = converter.convert()
    path.write_bytes(data)
