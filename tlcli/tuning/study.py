"""The Optuna study: its storage, creating or joining it, and the loop of trials with its stop rules.

Storage is where processes meet. The default is an SQLite file in the tune
folder (embedded, nothing to start). An RDB URL (`postgresql://`,
`mysql://`, `sqlite:///`) or `journal:PATH` (Optuna's journal file, for a
shared filesystem) lets any number of `tlcli tune` processes, on any
machines, add trials to one study: the storage numbers the trials, so no
number is given twice. With an RDB every running trial sends a heartbeat;
a trial whose process was killed stops beating and the next process to
start a trial marks it failed (Optuna's `fail_stale_trials`), instead of
leaving it running forever.

The study's total (`--trials N`) is counted over everyone: Optuna's
`MaxTrialsCallback` stops each process once the study has N finished trials
(complete, pruned or failed). Ctrl-C asks the study to stop after the
trial in progress (`Study.stop`); a second Ctrl-C stops at once (that trial
is recorded as failed). Either way the study keeps every finished trial.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from tlcli.config.plain import redact_uri
from tlcli.errors import ConfigError, RunError, TlcliError, UserError

log = logging.getLogger("tlcli")

HEARTBEAT_SECONDS = 10  # how often a running trial tells an RDB storage it is alive...
GRACE_SECONDS = 40  # ...and how long after its last beat another process fails it
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
MEDIAN_DEFAULTS = {"n_startup_trials": 5, "n_warmup_steps": 5}
# PostgreSQL waits are bounded: a server that accepts the connection and never answers fails the connect after
# CONNECT_SECONDS (libpq's connect_timeout, per address tried), a statement that hangs after STATEMENT_SECONDS.
CONNECT_SECONDS = 10
STATEMENT_SECONDS = 30


def finished_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def redact(url: str) -> str:
    """A storage URL without its password (tune.json is readable by the team; libpq also reads PGPASSWORD and
    ~/.pgpass)."""
    return redact_uri(url)


def open_storage(url: str):
    """The Optuna storage of `url`: an RDB URL, or `journal:PATH`.

    Raises:
        UserError: an unknown kind of URL, a missing database driver, or a server that cannot be reached.
    """

    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal:")
        if not path:
            raise UserError("storage: journal: needs a file path (journal:/shared/studies/flowers.log)")
        try:
            return JournalStorage(JournalFileBackend(path))
        except OSError as exc:
            raise UserError(f"--storage {url}: cannot open the journal file ({exc.strerror or exc})") from None
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in RDB_SCHEMES:
        raise UserError(
            "--storage: expected an RDB URL (postgresql://USER@HOST/DB, mysql://..., sqlite:///FILE) or journal:PATH, "
            f"got {redact(url)!r}"
        )
    try:
        return _rdb_storage(url, scheme)
    except ImportError:
        raise UserError(
            f"--storage {redact(url)}: no database driver for it is installed (PostgreSQL: pip install "
            "psycopg2-binary; MySQL: pip install pymysql and write mysql+pymysql://)"
        ) from None
    except Exception as exc:  # SQLAlchemy's OperationalError and the like: the server, not tlcli
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--storage {redact(url)}: cannot open the study storage ({redact(first)[:200]})") from None


def storage_file(url: str) -> Path | None:
    """The file a file-backed storage keeps the study in (SQLite, Optuna's journal), or None (a server)."""
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:")) if url != "journal:" else None
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///").split("?", 1)[0]
        return Path(path) if path and path != ":memory:" else None
    return None


def require_study(url: str, name: str, start_again: str) -> None:
    """Resuming continues a study, never starts one: opening a missing SQLite or journal file would create an empty
    one, and an empty storage a new study over the old tune folder's records.

    Raises:
        RunError: the storage's file is gone, or the storage holds no study `name` (`start_again`: what to do).
    """
    path = storage_file(url)
    if path is not None and not path.is_file():
        raise RunError(f"{path}: the study's database is missing, so study {name} cannot be resumed; {start_again}")
    try:
        open_storage(url).get_study_id_from_name(name)
    except KeyError:
        where = path if path is not None else redact(url)
        raise RunError(f"{where}: holds no study {name}, so it cannot be resumed; {start_again}") from None


def _rdb_storage(url: str, scheme: str, attempts: int = 6):
    """Optuna's RDBStorage, which creates its tables on first use. Processes that start together on a fresh
    database race to create them (PostgreSQL: a unique violation on pg_type; elsewhere "already exists"): the
    loser retries once the winner's tables are there."""
    import random
    import time

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat_interval is marked experimental
                return optuna.storages.RDBStorage(
                    _with_driver(url),
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                    engine_kwargs=_engine_kwargs(url, scheme),
                )
        except (IntegrityError, ProgrammingError, OperationalError) as exc:
            racing = isinstance(exc, IntegrityError) or "already exists" in str(exc) or "duplicate" in str(exc).lower()
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * (attempt + 1))  # noqa: S311  (spreading retries, not security)
    raise AssertionError("unreachable")


def _engine_kwargs(url: str, scheme: str) -> dict[str, Any] | None:
    """SQLAlchemy's engine options: a server's connections checked before use; PostgreSQL's waits bounded (unless
    the URL's own `?connect_timeout=` or `?options=` says otherwise)."""
    if scheme == "sqlite":
        return None
    if scheme not in ("postgresql", "postgres"):
        return {"pool_pre_ping": True}
    from urllib.parse import parse_qs, urlsplit

    given = parse_qs(urlsplit(url).query)
    timeouts = {"connect_timeout": CONNECT_SECONDS, "options": f"-c statement_timeout={STATEMENT_SECONDS * 1000}"}
    return {"pool_pre_ping": True, "connect_args": {k: v for k, v in timeouts.items() if k not in given}}


def _with_driver(url: str) -> str:
    """`postgresql://` with the driver that is installed: SQLAlchemy 2.1 means psycopg (3) by it, the tune extra
    brings psycopg2."""
    import importlib.util

    scheme, _, rest = url.partition("://")
    if (
        scheme in ("postgresql", "postgres")
        and importlib.util.find_spec("psycopg") is None
        and importlib.util.find_spec("psycopg2") is not None
    ):
        return f"postgresql+psycopg2://{rest}"
    return url


def make_pruner(name: str, args: dict[str, Any]):
    """Raises: ConfigError: `tune.pruner_args` the pruner does not take."""
    import optuna

    try:
        if name == "median":
            return optuna.pruners.MedianPruner(**{**MEDIAN_DEFAULTS, **args})
        if name == "hyperband":
            return optuna.pruners.HyperbandPruner(**args)
        if name == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**args)
        return optuna.pruners.NopPruner()
    except (TypeError, ValueError) as exc:
        raise ConfigError("tune.pruner_args", f"not accepted by the {name} pruner ({exc})") from None


@dataclass
class Joined:
    """The study this process works on, and whether this process created it (and so queued trial 0)."""

    study: Any
    created: bool


def create_or_join(
    storage, name: str, direction: str, fingerprint: str, pruner, seed: int, trial_zero: dict[str, Any]
) -> Joined:
    """Create the study (and queue trial 0, the config as written) or join it.

    Creating is atomic in the storage, so of several processes started at once exactly one creates the study and
    queues trial 0; the others join. A joining process draws with another seed than the creator's.

    Raises:
        UserError: the study exists with another direction, search space or metric.
    """
    import optuna

    sampler = optuna.samplers.TPESampler(seed=seed)
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner
        )
    except optuna.exceptions.DuplicatedStudyError:
        import os

        study = optuna.load_study(
            study_name=name,
            storage=storage,
            sampler=optuna.samplers.TPESampler(seed=(seed * 1_000_003 + os.getpid()) % 2**32),
            pruner=pruner,
        )
        if study.direction.name.lower() != direction:
            raise UserError(
                f"--study {name}: the study exists and {study.direction.name.lower()}s; "
                f"this config would {direction} (use another --study)"
            ) from None
        theirs = study.user_attrs.get("tlcli_space")
        if theirs is not None and theirs != fingerprint:
            raise UserError(
                f"--study {name}: the study exists with another search space or metric "
                "(use the same tune: section, or another --study)"
            ) from None
        return Joined(study, created=False)
    study.set_user_attr("tlcli_space", fingerprint)
    study.enqueue_trial(trial_zero, user_attrs={"tlcli": "the config as written"})
    return Joined(study, created=True)


def count(study, states=None) -> int:
    return len(study.get_trials(deepcopy=False, states=states if states is not None else finished_states()))


def spent_minutes(study) -> float:
    """What `tune.budget` counts: the minutes the study's finished trials took, every process's and every run's."""
    trials = study.get_trials(deepcopy=False, states=finished_states())
    return sum(trial.duration.total_seconds() for trial in trials if trial.duration is not None) / 60


class StudyProgress:
    """What a study tells people; this base class only logs. The CLI draws a bar with the best value so far."""

    def start(self, total: int, done: int, kind: str) -> None:
        log.info("study: %d of %d trials finished; trials %s", done, total, kind)

    def trial_end(self, trial, best, done: int, total: int) -> None:
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        log.info(
            "trial %d %s: %s (best %s)",
            trial.number,
            trial.state.name.lower(),
            value,
            f"{best.value:.4f}" if best else "-",
        )

    def stop(self) -> None:
        pass


@contextlib.contextmanager
def stop_on_sigint(study, warn: Callable[[str], None]) -> Iterator[dict[str, bool]]:
    """Ctrl-C: the study stops after the trial in progress; again: at once (KeyboardInterrupt)."""
    state = {"requested": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if state["requested"]:
            raise KeyboardInterrupt
        state["requested"] = True
        with contextlib.suppress(Exception):
            study.stop()
        with contextlib.suppress(Exception):
            warn("Ctrl-C: stopping after this trial (again to stop at once); the study is kept")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class LoopResult:
    ran: int  # trials this process finished
    interrupted: bool
    stopped_by: str  # "trials", "budget", "timeout", "ctrl-c" or "" (nothing to do)


def run_trials(
    study,
    objective,
    *,
    total: int,
    timeout: float | None,
    progress: StudyProgress,
    warn: Callable[[str], None],
    on_trial: Callable[[int], None] = lambda ran: None,
    budget: float | None = None,
) -> LoopResult:
    """Run trials until the study has `total` finished ones, its trials have taken `budget` minutes together
    (`spent_minutes`), `timeout` seconds pass, or Ctrl-C.

    `on_trial(ran)` follows every trial this process finishes (`ran` so far), before the next one starts.
    """
    from optuna.study import MaxTrialsCallback

    done = count(study)
    if done >= total:
        return LoopResult(0, False, "")
    if budget is not None and spent_minutes(study) >= budget:
        return LoopResult(0, False, "budget")
    ran = {"n": 0, "spent": False}

    def after_trial(study, trial) -> None:
        ran["n"] += 1
        best = None
        with contextlib.suppress(ValueError):
            best = study.best_trial
        progress.trial_end(trial, best, count(study), total)
        on_trial(ran["n"])
        if budget is not None and spent_minutes(study) >= budget:
            ran["spent"] = True
            study.stop()  # after this trial: Optuna starts no other

    interrupted = False
    with stop_on_sigint(study, warn) as sigint:
        try:
            study.optimize(
                objective,
                n_trials=total - done,
                timeout=timeout,
                callbacks=[MaxTrialsCallback(total, states=finished_states()), after_trial],
                catch=(TlcliError,),
            )
        except KeyboardInterrupt:
            interrupted = True
        interrupted = interrupted or sigint["requested"]
    progress.stop()
    stopped_by = (
        "ctrl-c"
        if interrupted
        else "trials"
        if count(study) >= total
        else "budget"
        if ran["spent"]
        else "timeout"
        if timeout
        else "trials"
    )
    return LoopResult(ran["n"], interrupted, stopped_by)
