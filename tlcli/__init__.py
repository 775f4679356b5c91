"""tlcli: config-driven transfer learning for Keras 3 / TensorFlow.

The command line is a thin layer over these functions:

    from tlcli import load_config, train, evaluate, predict, check_dataset
    result = train(load_config("configs/quickstart/source.yaml"))
    print(result.run_dir, result.metrics.final["val_accuracy"])

The package is the pipeline, one subpackage per stage, imports pointing one
way: config -> data -> runs -> modeling -> features -> inference -> audit ->
evaluation -> training -> cli (README "Architecture"). Keras, TensorFlow,
scikit-learn and matplotlib load on first use, so `import tlcli` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tlcli.lazy import lazy_exports
from tlcli.version import __version__

# Each public name and the module it lives in: loaded on first access (PEP 562), so that `import tlcli` (and the
# CLI, which must set TensorFlow's variables and start its report worker first) loads no stage it does not use.
_PUBLIC = {
    "tlcli.audit.api": ("audit_dataset",),
    "tlcli.audit.neighbours": ("NearDuplicates",),
    "tlcli.audit.report": ("AuditReport", "write_check_folder"),
    "tlcli.config": ("ExperimentConfig", "load_config"),
    "tlcli.data.problems": ("CheckReport", "check_dataset"),
    "tlcli.errors": (
        "ConfigError",
        "DataError",
        "GateFailed",
        "Interrupted",
        "PartialSuccess",
        "RunError",
        "TlcliError",
        "TrainingError",
        "UserError",
    ),
    "tlcli.evaluation.calibration": ("expected_calibration_error", "fit_temperature"),
    "tlcli.evaluation.compare": ("Comparison", "compare_runs"),
    "tlcli.evaluation.evaluate": ("evaluate",),
    "tlcli.evaluation.html_report": ("write_report",),
    "tlcli.evaluation.model_card": ("write_model_card",),
    "tlcli.evaluation.report": ("Evaluation",),
    "tlcli.evaluation.worker": ("ReportWorker",),
    "tlcli.inference.explain": ("grad_cam", "write_overlay"),
    "tlcli.inference.predict": ("PredictResult", "predict"),
    "tlcli.inference.unknown": ("UnknownRule", "read_unknown_rule", "score_images"),
    "tlcli.runs.folder": ("newest_run",),
    "tlcli.runs.listing": ("RunSummary", "list_runs"),
    "tlcli.runs.metrics": ("Metrics", "TrainResult"),
    "tlcli.training.api": ("RunOptions", "Validation", "resume", "train", "validate"),
    "tlcli.tuning.api": ("TuneResult", "resume_tune", "tune"),
}
if TYPE_CHECKING:  # what type checkers and IDEs see
    from tlcli.audit.api import audit_dataset
    from tlcli.audit.neighbours import NearDuplicates
    from tlcli.audit.report import AuditReport, write_check_folder
    from tlcli.config import ExperimentConfig, load_config
    from tlcli.data.problems import CheckReport, check_dataset
    from tlcli.errors import (
        ConfigError,
        DataError,
        GateFailed,
        Interrupted,
        PartialSuccess,
        RunError,
        TlcliError,
        TrainingError,
        UserError,
    )
    from tlcli.evaluation.calibration import expected_calibration_error, fit_temperature
    from tlcli.evaluation.compare import Comparison, compare_runs
    from tlcli.evaluation.evaluate import evaluate
    from tlcli.evaluation.html_report import write_report
    from tlcli.evaluation.model_card import write_model_card
    from tlcli.evaluation.report import Evaluation
    from tlcli.evaluation.worker import ReportWorker
    from tlcli.inference.explain import grad_cam, write_overlay
    from tlcli.inference.predict import PredictResult, predict
    from tlcli.inference.unknown import UnknownRule, read_unknown_rule, score_images
    from tlcli.runs.folder import newest_run
    from tlcli.runs.listing import RunSummary, list_runs
    from tlcli.runs.metrics import Metrics, TrainResult
    from tlcli.training.api import RunOptions, Validation, resume, train, validate
    from tlcli.tuning.api import TuneResult, resume_tune, tune


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)

__all__ = [
    "AuditReport",
    "CheckReport",
    "Comparison",
    "ConfigError",
    "DataError",
    "Evaluation",
    "ExperimentConfig",
    "GateFailed",
    "Interrupted",
    "Metrics",
    "NearDuplicates",
    "PartialSuccess",
    "PredictResult",
    "ReportWorker",
    "RunError",
    "RunOptions",
    "RunSummary",
    "TlcliError",
    "TrainResult",
    "TrainingError",
    "TuneResult",
    "UnknownRule",
    "UserError",
    "Validation",
    "__version__",
    "audit_dataset",
    "check_dataset",
    "compare_runs",
    "evaluate",
    "expected_calibration_error",
    "fit_temperature",
    "grad_cam",
    "list_runs",
    "load_config",
    "newest_run",
    "predict",
    "read_unknown_rule",
    "resume",
    "resume_tune",
    "score_images",
    "train",
    "tune",
    "validate",
    "write_check_folder",
    "write_model_card",
    "write_overlay",
    "write_report",
]
