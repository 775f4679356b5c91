"""Export: a completed run's model as SavedModel, TFLite (float32, fp16, int8) and ONNX artifacts, each gated on parity.

`export_run` writes the artifacts into a new export folder and runs each with
its own runtime on the run's validation images against the Keras model
(`api`); `verify_export` re-runs those checks on an existing folder;
`predict_artifact` and `evaluate_artifact` predict and evaluate with an
artifact as `tlcli.predict` and `tlcli.evaluate` do with the run
(`artifacts`). The formats, their files and default gates (`formats`), the
writers (`convert`), the run's images (`images`), the figures (`parity`),
export.json (`record`) and `ExportedModel`, which runs any artifact
(`runtime`), are its modules. Nothing here imports TensorFlow until it is used.
"""

from typing import TYPE_CHECKING

from tlcli.lazy import lazy_exports

_PUBLIC = {
    "tlcli.export.api": ("export_run", "verify_export"),
    "tlcli.export.artifacts": ("artifact_source", "evaluate_artifact", "predict_artifact"),
    "tlcli.export.formats": ("DEFAULT_FORMATS", "DEFAULT_GATES", "FORMATS", "Gate"),
    "tlcli.export.parity": ("Parity",),
    "tlcli.export.record": ("ExportResult", "FormatResult"),
    "tlcli.export.runtime": ("ExportedModel",),
}
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)

if TYPE_CHECKING:
    from tlcli.export.api import export_run, verify_export
    from tlcli.export.artifacts import artifact_source, evaluate_artifact, predict_artifact
    from tlcli.export.formats import DEFAULT_FORMATS, DEFAULT_GATES, FORMATS, Gate
    from tlcli.export.parity import Parity
    from tlcli.export.record import ExportResult, FormatResult
    from tlcli.export.runtime import ExportedModel

__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_GATES",
    "FORMATS",
    "ExportResult",
    "ExportedModel",
    "FormatResult",
    "Gate",
    "Parity",
    "artifact_source",
    "evaluate_artifact",
    "export_run",
    "predict_artifact",
    "verify_export",
]
