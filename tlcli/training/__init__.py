"""Stage 8, training: the public API (`api`: train, resume, validate), what is checked before a run
folder exists (`prepare`), the phase plan (`phases`), the single pass over the files (`passes`),
what each phase fits (`inputs`), the fit loop (`loop`, `fit_in_memory`, `callbacks`), what each
phase compiles (`compile`), resume checks (`resume`) and the steps inside the run folder (`session`)."""

from tlcli.training.api import RunOptions, TrainResult, Validation, resume, train, validate

__all__ = ["RunOptions", "TrainResult", "Validation", "resume", "train", "validate"]
