"""`ExportedModel`: any exported artifact, run by its own runtime, as class probabilities.

A SavedModel folder runs through TensorFlow's loader and its `serving_default`
signature, a `.tflite` file through LiteRT's `Interpreter` (ai_edge_litert),
an `.onnx` file through onnxruntime. Every artifact takes what `model.keras`
takes, raw 0-255 pixels at the run's size and channels; the int8 TFLite model
takes them as uint8 (quantized with its input's scale and zero point, which
are 1 and 0 when calibration saw the full pixel range) and gives uint8
probabilities, dequantized here. The class names come from `labels.txt` (else
`export.json`) beside the artifact, or in the SavedModel folder or its parent.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tlcli.errors import UserError
from tlcli.export.formats import FILES
from tlcli.export.record import EXPORT_RECORD, LABELS_FILE, ExportRecord
from tlcli.inference.probabilities import to_class_probabilities
from tlcli.runs.atomic import not_regular
from tlcli.settings import native_logs_quiet
from tlcli.system import native_stderr_silenced

__all__ = ["EXPORT_RECORD", "LABELS_FILE", "ExportedModel", "TensorInfo"]


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Hide what the converters and runtimes print from C++ straight to file descriptor 2 (XNNPACK, absl, quantizer
    chatter), when TensorFlow's own C++ logs are off (TF_CPP_MIN_LOG_LEVEL=3, the CLI's setting without --debug)."""
    if not native_logs_quiet():
        yield
        return
    with native_stderr_silenced():
        yield


@dataclass(frozen=True)
class TensorInfo:
    """An artifact's input or output: its name in the runtime, dtype, shape (None = any size) and uint8 quantization."""

    name: str
    dtype: str
    shape: list[int | None]
    scale: float | None = None
    zero_point: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("name", "dtype", "shape")}


class _SavedModelRunner:
    def __init__(self, path: Path, threads: int | None):
        import tensorflow as tf

        self.tf = tf
        loaded = tf.saved_model.load(str(path))
        self.signature = (
            "serving_default" if "serving_default" in loaded.signatures else next(iter(loaded.signatures), None)
        )
        if self.signature is None:
            raise ValueError("no serving signature")
        self._loaded = loaded  # the signature's variables live as long as the loaded object
        self._function = loaded.signatures[self.signature]
        inputs, outputs = self._function.structured_input_signature[1], self._function.structured_outputs
        self.inputs = [TensorInfo(name, spec.dtype.name, spec.shape.as_list()) for name, spec in inputs.items()]
        self.outputs = [TensorInfo(name, out.dtype.name, out.shape.as_list()) for name, out in outputs.items()]
        self._input, self._output = self.inputs[0].name, self.outputs[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._function(**{self._input: self.tf.constant(batch.astype(np.float32))})[self._output].numpy()


class _TFLiteRunner:
    def __init__(self, path: Path, threads: int | None):
        from ai_edge_litert.interpreter import Interpreter

        with quiet_native_logs():
            self._interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1)
        signatures = self._interpreter.get_signature_list()
        self.signature = next(iter(signatures), None)
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        self._in, self._out = inputs[0], outputs[0]
        self.inputs, self.outputs = [self._describe(d) for d in inputs], [self._describe(d) for d in outputs]
        self._shape: tuple[int, ...] | None = None

    @staticmethod
    def _describe(detail: dict[str, Any]) -> TensorInfo:
        shape = [None if int(d) < 0 else int(d) for d in detail.get("shape_signature", detail["shape"])]
        scale, zero = detail["quantization"]
        quantized = np.dtype(detail["dtype"]).kind in "iu"
        return TensorInfo(
            detail["name"],
            np.dtype(detail["dtype"]).name,
            shape,
            float(scale) if quantized else None,
            int(zero) if quantized else None,
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter
        if self._shape != batch.shape:
            with quiet_native_logs():
                interpreter.resize_tensor_input(self._in["index"], list(batch.shape), strict=True)
                interpreter.allocate_tensors()
            self._shape = batch.shape
        interpreter.set_tensor(self._in["index"], _quantize(batch, self.inputs[0]))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(self._out["index"]), self.outputs[0])


def _quantize(batch: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """Pixels as the input tensor takes them: float32, or uint8/int8 through its scale and zero point (raw when 1
    and 0)."""
    if tensor.scale is None:
        return batch.astype(np.float32)
    info = np.iinfo(np.dtype(tensor.dtype))
    if tensor.scale == 1.0 and tensor.zero_point == 0 and info.min <= 0 and info.max >= 255:
        return batch.astype(tensor.dtype)
    return np.clip(np.round(batch.astype(np.float64) / tensor.scale) + tensor.zero_point, info.min, info.max).astype(
        tensor.dtype
    )


def _dequantize(values: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    if tensor.scale is None:
        return values
    return (values.astype(np.float64) - tensor.zero_point) * tensor.scale


class _OnnxRunner:
    def __init__(self, path: Path, threads: int | None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its graph-optimizer warnings are not the user's business
        if threads:
            options.intra_op_num_threads = threads
        self._session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.signature = None
        self.inputs = [self._describe(t) for t in self._session.get_inputs()]
        self.outputs = [self._describe(t) for t in self._session.get_outputs()]

    @staticmethod
    def _describe(tensor) -> TensorInfo:
        dtype = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16"}.get(
            tensor.type, tensor.type
        )
        return TensorInfo(tensor.name, dtype, [d if isinstance(d, int) else None for d in tensor.shape])

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self.outputs[0].name], {self.inputs[0].name: batch.astype(np.float32)})[0]


RUNNERS = {"saved_model": _SavedModelRunner, "tflite": _TFLiteRunner, "onnx": _OnnxRunner}


class ExportedModel:
    """An exported artifact with its class names: `predict_probabilities(uint8 images) -> (n, classes)`.

    `task` is export.json's (single_label when there is none beside the artifact); a multi-label artifact's
    `thresholds` and `separator` come from it too.

    Args:
        path: a SavedModel folder, a `.tflite` or `.onnx` file, or an export folder holding one artifact
            (with several, `format` picks one: saved_model, tflite, tflite-fp16, tflite-int8, onnx).
        threads: CPU threads for the runtime (default: TensorFlow's and onnxruntime's own, every core for LiteRT).

    Raises:
        UserError: no such artifact, no labels.txt or export.json beside it, an artifact that does not load,
            or outputs that do not match the class names.
    """

    def __init__(self, path: str | Path, format: str | None = None, threads: int | None = None):
        self.path, folders = _resolve_artifact(Path(path), format)
        require_regular_files(self.path)  # before anything opens it: a FIFO would block the runtime forever
        self.record: ExportRecord | None = ExportRecord.beside(folders)  # None: no export.json beside the artifact
        named = format or (self.record.format_of_file(self.path.name) if self.record is not None else None)
        self.class_names = _class_names(folders, self.record, self.path)
        family = "saved_model" if self.path.is_dir() else "onnx" if self.path.suffix.lower() == ".onnx" else "tflite"
        self.format = named or family
        try:
            self._runner = RUNNERS[family](self.path, threads)
        except ImportError as exc:
            raise UserError(
                f"{self.path}: {exc.name or 'a runtime'} is not installed; "
                'install the export extra: pip install "tlcli[export]"'
            ) from None
        except Exception as exc:
            raise UserError(
                f"{self.path}: cannot be loaded as {self.format} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
            ) from None
        self.inputs, self.outputs, self.signature = self._runner.inputs, self._runner.outputs, self._runner.signature
        _require_one_image_in_one_row_out(self.path, self.inputs, self.outputs)
        if named is None and family == "tflite" and self.inputs[0].scale is not None:
            self.format = "tflite-int8"
        shape = self.inputs[0].shape
        self.image_size: tuple[int, int] = (int(shape[1]), int(shape[2]))
        self.channels = int(shape[3])
        self.task = self.record.task if self.record is not None else "single_label"
        units = self.outputs[0].shape[-1]
        self.binary = units == 1 and len(self.class_names) == 2 and self.task != "multi_label"
        if units is not None and units != len(self.class_names) and not self.binary:
            raise UserError(
                f"{self.path}: {units} outputs but {len(self.class_names)} class names; the export folder is damaged"
            )
        self.thresholds = _thresholds(self.record, self.class_names, self.path) if self.task == "multi_label" else None
        self.separator = (self.record.label_separator if self.record is not None else None) or "|"

    def predict_probabilities(self, images_uint8: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(n, classes) class probabilities of (n, height, width, channels) 0-255 pixels at the artifact's size.

        Raises:
            UserError: images of another size or channel count.
        """
        images = np.asarray(images_uint8)
        if images.ndim != 4 or tuple(images.shape[1:]) != (*self.image_size, self.channels):
            raise UserError(
                f"{self.path}: takes images of shape "
                f"(n, {self.image_size[0]}, {self.image_size[1]}, {self.channels}), got {images.shape}"
            )
        outputs = [
            self._runner.run(np.asarray(images[start : start + batch_size]))
            for start in range(0, len(images), batch_size)
        ]
        if not outputs:
            return np.zeros((0, len(self.class_names)))
        return to_class_probabilities(np.concatenate(outputs), self.binary)

    def describe(self) -> dict[str, Any]:
        """The artifact's runtime-facing description: signature, inputs and outputs (names, dtypes, shapes,
        quantization)."""
        return {
            "signature": self.signature,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


def require_regular_files(path: Path) -> None:
    """An artifact file, or every file in an artifact folder (a SavedModel), is a regular file (checked by `stat`).

    Raises:
        UserError: a FIFO, a device or a socket where an artifact's file should be (one line naming it).
    """
    paths = [path] if not path.is_dir() else [Path(top) / name for top, _, names in os.walk(path) for name in names]
    for entry in paths:
        try:
            kind = not_regular(entry)
        except OSError as exc:
            raise UserError(f"{entry}: cannot be read ({exc.strerror or exc})") from None
        if kind is not None:
            raise UserError(f"{entry}: {kind}, not a regular file; an exported model is read from regular files only")


def _require_one_image_in_one_row_out(path: Path, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> None:
    """One (batch, height, width, channels) input and one (batch, units) output, as every tlcli export has.

    Raises:
        UserError: several inputs or outputs, or tensors of another rank (not an image classifier tlcli exported).
    """
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(
            f"{path}: {len(inputs)} inputs ({', '.join(sorted(t.name for t in inputs))}) and {len(outputs)} outputs "
            f"({', '.join(sorted(t.name for t in outputs))}); an exported image model takes one image batch and "
            "gives one row of probabilities per image"
        )
    shape, out = inputs[0].shape, outputs[0].shape
    if len(shape) != 4 or None in shape[1:]:
        raise UserError(f"{path}: input of shape {shape}, expected (batch, height, width, channels)")
    if len(out) != 2:
        raise UserError(f"{path}: output of shape {out}, expected (batch, classes)")


def own_artifact(export_dir: Path, record: ExportRecord, name: str) -> Path:
    """The export folder's own artifact of format `name`: the file tlcli writes there, never a path export.json
    points elsewhere, and a regular file (or a folder of them) that resolves inside the folder.

    Raises:
        UserError: export.json names another file, or the artifact leads outside the folder or is a FIFO, a device...
    """
    expected = FILES[name]
    if record.file(name) != expected:
        raise UserError(
            f"{export_dir / EXPORT_RECORD}: formats.{name}.file is {record.file(name)!r}, but an export's {name} "
            f"artifact is {expected!r} in the export folder; export the run again"
        )
    path = export_dir / expected
    if not path.exists():
        return path  # check_format reports it missing, with the other formats' verdicts
    inside = _real(export_dir)
    leads = [path, *path.rglob("*")] if path.is_dir() else [path]
    outside = next((entry for entry in leads if not _real(entry).is_relative_to(inside)), None)
    if outside is not None:
        raise UserError(
            f"{outside}: leads outside the export folder (to {_real(outside)}); --verify checks the folder's "
            "own files only: copy the artifact in"
        )
    require_regular_files(path)
    return path


def _real(path: Path) -> Path:
    """Where `path` leads, symlinks followed (a symlink loop gives a path, not an error)."""
    return Path(os.path.realpath(path))


def _resolve_artifact(path: Path, format: str | None) -> tuple[Path, list[Path]]:
    """(the artifact, the folders to look for export.json and labels.txt in)."""
    if not path.exists():
        raise UserError(
            f"{path}: not found (expected a SavedModel folder, a .tflite or an .onnx file, or an export folder)"
        )
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        return _artifact_in_export_folder(path, format), [path]
    if path.is_dir():
        return path, [path, path.parent]
    if path.suffix.lower() not in (".tflite", ".onnx"):
        raise UserError(f"{path}: not an exported model (expected a SavedModel folder, a .tflite or an .onnx file)")
    return path, [path.parent]


def _artifact_in_export_folder(folder: Path, format: str | None) -> Path:
    present = {name: folder / file for name, file in FILES.items() if (folder / file).exists()}
    if format is not None:
        if format not in present:
            raise UserError(
                f"{folder}: holds no {format} artifact ({FILES.get(format, format)}); "
                f"it holds: {', '.join(present) or 'none'}"
            )
        return present[format]
    if len(present) == 1:
        return next(iter(present.values()))
    if not present:
        raise UserError(f"{folder}: no exported model in it (no saved_model/, *.tflite or *.onnx; see `tlcli export`)")
    raise UserError(
        f"{folder}: holds several formats ({', '.join(present)}); pass one file, e.g. {next(iter(present.values()))}"
    )


def _thresholds(record: ExportRecord | None, class_names: list[str], path: Path) -> tuple[float, ...]:
    """A multi-label export's per-class thresholds, from export.json, in class order.

    Raises:
        UserError: export.json lacks a class's threshold (written by hand, or damaged).
    """
    thresholds = record.thresholds if record is not None else None
    missing = [
        name
        for name in class_names
        if not isinstance(thresholds, dict) or not isinstance(thresholds.get(name), (int, float))
    ]
    if missing:
        raise UserError(
            f"{path}: a multi-label model, but {EXPORT_RECORD} gives no threshold for {missing[0]!r}; "
            "export the run again"
        )
    return tuple(float(thresholds[name]) for name in class_names)


def _class_names(folders: list[Path], record: ExportRecord | None, path: Path) -> list[str]:
    """labels.txt's classes (else export.json's); when both are beside the artifact they must agree.

    Raises:
        UserError: neither is there, or labels.txt contradicts export.json (which one is right is unknown).
    """
    recorded = list(record.class_names) if record is not None else []
    for folder in folders:
        labels = folder / LABELS_FILE
        if labels.is_file():
            names = [line for line in labels.read_text(encoding="utf-8").splitlines() if line]
            if names and recorded and names != recorded:
                raise UserError(
                    f"{labels}: lists {', '.join(names)}, but the {EXPORT_RECORD} beside it says "
                    f"{', '.join(recorded)}; the export folder is damaged: copy both from the export again"
                )
            if names:
                return names
    if recorded:
        return recorded
    raise UserError(
        f"{path}: no {LABELS_FILE} or {EXPORT_RECORD} beside it, so its class names are unknown; "
        "copy them from the export folder"
    )
