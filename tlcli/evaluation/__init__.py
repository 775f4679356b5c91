"""Stage 7, evaluation: figures (`metrics`) and their 95% intervals (`intervals`), quality gates (`gates`), pictures
(`plots`), the eval folder (`report`), the HTML page (`html_report`), `evaluate` (`evaluate`), run B against run A
(`compare`), the end-of-training report (`training_report`) and the process that draws it (`worker`), and the model
card (`model_card`)."""

from typing import TYPE_CHECKING

from tlcli.lazy import lazy_exports

_PUBLIC = {
    "tlcli.evaluation.calibration": ("expected_calibration_error", "fit_temperature"),
    "tlcli.evaluation.compare": ("Comparison", "compare_runs"),
    "tlcli.evaluation.evaluate": ("describe", "describe_intervals", "evaluate", "folder_samples", "split_samples"),
    "tlcli.evaluation.gates": ("Gate", "parse_gates"),
    "tlcli.evaluation.html_report": ("render_report", "write_report"),
    "tlcli.evaluation.metrics": ("compute_metrics",),
    "tlcli.evaluation.model_card": ("refresh_model_card", "write_model_card"),
    "tlcli.evaluation.report": ("EvalSpec", "Evaluation", "Scored", "write_evaluation"),
    "tlcli.evaluation.training_report": ("ReportJob", "write_report_files", "write_training_report"),
    "tlcli.evaluation.worker": ("ReportWorker",),
}
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)

if TYPE_CHECKING:
    from tlcli.evaluation.calibration import expected_calibration_error, fit_temperature
    from tlcli.evaluation.compare import Comparison, compare_runs
    from tlcli.evaluation.evaluate import describe, describe_intervals, evaluate, folder_samples, split_samples
    from tlcli.evaluation.gates import Gate, parse_gates
    from tlcli.evaluation.html_report import render_report, write_report
    from tlcli.evaluation.metrics import compute_metrics
    from tlcli.evaluation.model_card import refresh_model_card, write_model_card
    from tlcli.evaluation.report import EvalSpec, Evaluation, Scored, write_evaluation
    from tlcli.evaluation.training_report import ReportJob, write_report_files, write_training_report
    from tlcli.evaluation.worker import ReportWorker

__all__ = [
    "Comparison",
    "EvalSpec",
    "Evaluation",
    "Gate",
    "ReportJob",
    "ReportWorker",
    "Scored",
    "compare_runs",
    "compute_metrics",
    "describe",
    "describe_intervals",
    "evaluate",
    "expected_calibration_error",
    "fit_temperature",
    "folder_samples",
    "parse_gates",
    "refresh_model_card",
    "render_report",
    "split_samples",
    "write_evaluation",
    "write_model_card",
    "write_report",
    "write_report_files",
    "write_training_report",
]
