"""Stage 10, tuning (above training, below the CLI): hyperparameter search with Optuna on the config's `tune.space`.

`api` holds `tune` and `resume_tune`; `space` turns the search space into Optuna distributions and each trial's
config; `shared` settles what every trial shares (their kind, the one extraction, trial 0); `objective` trains a
trial (a head on the study's cached features, or a whole run); `study` opens the storage, creates or joins the
study and runs the trials; `record` holds the typed records (`TuneResult`, tune.json's `TuneRecord`, each trial's
`TrialRecord`); `summary` reads the study back (counts, the best trial, best.yaml's config); `folder` writes the
tune folder.
"""

from typing import TYPE_CHECKING

from tlcli.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {"tlcli.tuning.api": ("TuneResult", "resume_tune", "tune")})

if TYPE_CHECKING:
    from tlcli.tuning.api import TuneResult, resume_tune, tune

__all__ = ["TuneResult", "resume_tune", "tune"]
