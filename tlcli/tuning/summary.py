"""What a study holds, as tune.json summarizes it: its trials by state, a trial's summary, the best trial's config.

Everything here reads the Optuna study, so it counts every process's trials, not only this one's.
"""

from __future__ import annotations

from typing import Any

from tlcli.config.schema import ExperimentConfig
from tlcli.tuning.record import TrialRecord
from tlcli.tuning.space import SearchSpace

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def trial_counts(trials: list, target: int, ran: int) -> dict[str, int]:
    """tune.json `trials`: the target, the finished ones, each state's count, and how many this process ran."""
    from optuna.trial import TrialState

    states = {name.lower(): sum(t.state == getattr(TrialState, name) for t in trials) for name in STATES}
    return {
        "target": target,
        "finished": states["complete"] + states["pruned"] + states["fail"],
        **states,
        "this_process": ran,
    }


def all_failed(trials: list) -> str | None:
    """Why a study has nothing to show when every trial it finished failed ("all N trials failed; the first, trial
    K: its reason"), else None (a trial completed or was pruned, or none finished)."""
    from optuna.trial import TrialState

    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    failed = sorted((t for t in finished if t.state == TrialState.FAIL), key=lambda t: t.number)
    if not failed or len(failed) < len(finished):
        return None
    reason = TrialRecord.of(failed[0]).error or "no reason recorded (its process may have been killed)"
    reason = (reason.strip().splitlines() or [""])[0]
    return f"all {len(failed)} trials failed; the first, trial {failed[0].number}: {reason}"


def summarize(trial) -> dict[str, Any]:
    """tune.json `best` and `baseline`: a trial's number, state, value, parameters, figures, epochs and time."""
    record = TrialRecord.of(trial)
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value,
        "params": dict(trial.params),
        "figures": record.figures if record.figures is not None else {},
        "epochs": record.epochs,
        "backbone": record.backbone,
        "seconds": round(trial.duration.total_seconds(), 3) if trial.duration is not None else None,
    }


def best_trial(trials: list, direction: str):
    """The complete trial with the best value (the first of equals), or None."""
    from optuna.trial import TrialState

    complete = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value, reverse=direction == "maximize"
    )
    return complete[0] if complete else None


def best_config(space: SearchSpace, config: ExperimentConfig, best, kind: str) -> ExperimentConfig:
    """best.yaml: `best`'s parameters and pins on the study's config, named `<name>-best`.

    The trial's recipe, then (a head on cached features) retrained on train + validation for the epochs it chose:
    a trial is scored on validation so it cannot learn from it, the config it wins does. Cross-validated, the
    trial's epochs are its folds' median: best.yaml trains that many (validation on one split would choose again,
    noisily).
    """
    record = TrialRecord.of(best)
    epochs = (
        {"train.epochs": int(record.epochs), "train.restore_best": False}
        if record.cross_validated and record.epochs
        else {}
    )
    return space.config_for(
        space.from_params(best.params),
        {
            **(record.pins or {}),
            **epochs,
            "train.refit": kind == "head" and config.train.refit is not False,
            "probe": config.probe,
            "name": f"{config.name[:59]}-best",
        },
    )
