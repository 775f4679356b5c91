"""tlcli: config-driven transfer learning for Keras 3 / TensorFlow.

The command line is a thin layer over these functions:

    from tlcli import load_config, train, evaluate, predict, check_dataset
    result = train(load_config("configs/quickstart/source.yaml"))
    print(result.run_dir, result.metrics["final"]["val_accuracy"])

Keras, TensorFlow, scikit-learn and matplotlib load on first use, so
`import tlcli` stays light.
"""

__version__ = "0.1.0"

from tlcli.check import check_dataset  # noqa: E402
from tlcli.config import ExperimentConfig, load_config  # noqa: E402
from tlcli.errors import ConfigError, DataError, RunError, TlcliError, UserError  # noqa: E402
from tlcli.evaluate import evaluate  # noqa: E402  (Keras, scikit-learn and matplotlib load on first call)
from tlcli.predict import predict  # noqa: E402
from tlcli.report_worker import ReportWorker  # noqa: E402
from tlcli.runs import list_runs, newest_run  # noqa: E402
from tlcli.train import TrainResult, resume, train, validate  # noqa: E402

__all__ = [
    "ConfigError",
    "DataError",
    "ExperimentConfig",
    "ReportWorker",
    "RunError",
    "TlcliError",
    "TrainResult",
    "UserError",
    "__version__",
    "check_dataset",
    "evaluate",
    "list_runs",
    "load_config",
    "newest_run",
    "predict",
    "resume",
    "train",
    "validate",
]
