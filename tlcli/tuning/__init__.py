"""Stage 10, tuning (above training, below the CLI): hyperparameter search with Optuna on the config's `tune.space`.

`api` holds `tune` and `resume_tune`; `space` turns the search space into Optuna distributions and each trial's
config; `objective` trains a trial (a head on the study's cached features, or a whole run); `study` opens the
storage, creates or joins the study and runs the trials; `folder` writes the tune folder.
"""

from tlcli.tuning.api import TuneResult, resume_tune, tune

__all__ = ["TuneResult", "resume_tune", "tune"]
