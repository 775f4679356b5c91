"""Stage 8, training: the public API (`api`: train, resume, validate), what is checked before a run
folder exists (`prepare`), the phase plan and its head policy (`phases`), the single pass over the
files (`passes`), what each phase fits (`inputs`), the run's objective and what each phase compiles
(`compile`), the fit loop (`loop`, `fit_in_memory`, `distributed`, `callbacks`), the head policy
carried out (`head_policy`, `selection`), the records the steps hand each other (`records`), resume
checks (`resume_checks`) and the steps inside the run folder (`session`)."""

from typing import TYPE_CHECKING

from tlcli.lazy import lazy_exports

_PUBLIC = {"tlcli.training.api": ("RunOptions", "TrainResult", "Validation", "resume", "train", "validate")}
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)  # `tlcli.training.options` alone must not load the session

if TYPE_CHECKING:
    from tlcli.training.api import RunOptions, TrainResult, Validation, resume, train, validate

__all__ = ["RunOptions", "TrainResult", "Validation", "resume", "train", "validate"]
