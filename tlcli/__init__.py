"""tlcli: config-driven transfer learning for Keras 3 / TensorFlow.

The command line is a thin layer over these functions:

    from tlcli import load_config, train, evaluate, predict, check_dataset
    result = train(load_config("configs/quickstart/source.yaml"))
    print(result.run_dir, result.metrics.final["val_accuracy"])

The package is the pipeline, one subpackage per stage, imports pointing one
way: config -> data -> runs -> modeling -> features -> inference ->
evaluation -> training -> cli (README "Architecture"). Keras, TensorFlow,
scikit-learn and matplotlib load on first use, so `import tlcli` stays light.
"""

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
from tlcli.evaluation.evaluate import evaluate
from tlcli.evaluation.report import Evaluation
from tlcli.evaluation.worker import ReportWorker
from tlcli.inference.predict import PredictResult, predict
from tlcli.runs.folder import newest_run
from tlcli.runs.listing import RunSummary, list_runs
from tlcli.runs.metrics import Metrics, TrainResult
from tlcli.training.api import RunOptions, Validation, resume, train, validate
from tlcli.tuning.api import TuneResult, resume_tune, tune
from tlcli.version import __version__

__all__ = [
    "CheckReport",
    "ConfigError",
    "DataError",
    "Evaluation",
    "ExperimentConfig",
    "GateFailed",
    "Interrupted",
    "Metrics",
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
    "UserError",
    "Validation",
    "__version__",
    "check_dataset",
    "evaluate",
    "list_runs",
    "load_config",
    "newest_run",
    "predict",
    "resume",
    "resume_tune",
    "train",
    "tune",
    "validate",
]
