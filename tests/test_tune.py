"""`tlcli tune` (issue 17): a study on cached features, its tune folder, pruning, one study shared by processes,
Ctrl-C and --resume.

Tiny data throughout: a SmallCNN trained for three epochs is the frozen base (its features separate the classes),
so a trial is a head fitted on 53 cached feature vectors. The shared-study test runs against a real PostgreSQL
server it starts itself (initdb and pg_ctl as the postgres user) and against Optuna's journal file.
"""

from __future__ import annotations

import csv
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_image_folder, tiny_config, write_config

optuna = pytest.importorskip("optuna") if os.environ.get("CI") != "true" else __import__("optuna")

from tlcli import list_runs, load_config  # noqa: E402
from tlcli.errors import ConfigError  # noqa: E402

SUBPROCESS_TIMEOUT = 240  # seconds; a hung study fails its test instead of hanging the suite


@pytest.fixture(scope="module")
def source(frozen_source):
    """A trained SmallCNN (its frozen base) and its data: train/ (hash-split into train and val) and test/; the
    session's, read-only (conftest.frozen_source)."""
    return frozen_source


def study_config(source, runs_dir: Path, **tune) -> dict:
    """The config on the source's frozen base, with a tune section (`tune` overrides its keys)."""
    data, run, _ = source
    raw = tiny_config(data, runs_dir, name="study")
    raw["base"] = {"run": str(run), "trainable": "none"}
    raw["train"] = {"learning_rate": 0.01, "max_epochs": 25}
    raw["tune"] = {
        "trials": 4,
        "space": {
            "train.learning_rate": {"low": 1.0e-3, "high": 0.1, "log": True},
            "head.dropout": {"low": 0.0, "high": 0.5},
            "train.optimizer": ["adam", "sgd"],
            "head.dense": {"choices": {"none": [], "small": [{"units": 8}]}},
        },
        "folds": 1,  # scored on the validation split; the cross-validation test turns folds on
        **tune,
    }
    return raw


def tlcli_command(*args) -> list[str]:
    return [sys.executable, "-c", "from tlcli.cli import main; main()", *map(str, args)]


def environment() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.mark.parametrize("multi_label", [False, True], ids=["single-label", "multi-label"])
def test_a_trials_fast_validation_gives_the_figures_training_validation_gives(multi_label, tmp_path):
    """Trials validate in one compiled call (`fast_validation`); a run validates with `FeatureValidation`: same
    figures, every epoch."""
    import keras
    import numpy as np

    from tlcli.training.callbacks import FeatureValidation
    from tlcli.training.compile import make_loss, make_metrics
    from tlcli.tuning.objective import fast_validation

    data = make_image_folder(tmp_path / "data", {"a": 2, "b": 2, "c": 2}, seed=1)
    raw = tiny_config(data, tmp_path / "runs")
    if multi_label:
        manifest = tmp_path / "data" / "labels.csv"
        manifest.write_text(
            "path,labels\n" + "".join(f"{p.relative_to(data)},{p.parent.name}|c\n" for p in sorted(data.rglob("*.png")))
        )
        raw["data"] = {
            **raw["data"],
            "dir": None,
            "manifest": str(manifest),
            "multi_label": True,
            "columns": {"label": "labels"},
        }
    config = load_config(raw)
    assert config.multi_label is multi_label
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 16)).astype(
        "float32"
    )  # not a multiple of FeatureValidation's batch: its last batch is short
    targets = (
        (rng.random((300, 3)) < 0.4).astype("float32")
        if multi_label
        else np.eye(3, dtype="float32")[rng.integers(0, 3, 300)]
    )
    inputs = keras.Input((16,))
    part = keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid" if multi_label else "softmax")(inputs))
    alpha = [0.3, 0.5, 0.7] if multi_label else None
    reference = FeatureValidation(part, features, targets, make_loss(config, alpha), make_metrics(config, 3))
    fast = fast_validation(part, features, targets, make_loss(config, alpha), make_metrics(config, 3))
    for epoch in range(2):
        if epoch:
            part.set_weights(
                [w + rng.normal(scale=0.5, size=w.shape).astype("float32") for w in part.get_weights()]
            )  # as an epoch of training would
        expected, got = {}, {}
        reference.on_epoch_end(epoch, expected)
        fast.on_epoch_end(epoch, got)
        assert sorted(got) == sorted(expected) and len(expected) >= 2
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


# ----------------------------------------------------------------------------- one study, in this process


@pytest.fixture(scope="module")
def finished(source):
    """A four-trial study with --train-best, run once for the tests that read what it left."""
    from tlcli import tune

    runs_dir = source[2] / "study-runs"
    return tune(load_config(study_config(source, runs_dir)), train_best=True), runs_dir


@pytest.mark.slow
def test_a_small_study_writes_every_file(finished):
    result, runs_dir = finished
    folder = result.tune_dir
    assert folder.parent == runs_dir and folder.name.endswith("-study-tune")
    for name in (
        "study.db",
        "trials.csv",
        "best.yaml",
        "tune.json",
        "config.yaml",
        "optimization_history.png",
        "param_importances.png",
    ):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    assert (folder / "optimization_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.kind == "head" and result.status == "completed"
    assert result.trials["finished"] == result.trials["this_process"] == 4
    with open(folder / "trials.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3]
    assert list(rows[0])[:6] == ["number", "state", "value", "duration_s", "epochs", "kind"] and "head.dense" in rows[0]
    # Trial 0 is the config as written: its own learning rate and optimizer, head.dropout auto pinned to 0 with the
    # chosen penalty.
    assert (
        rows[0]["train.learning_rate"] == "0.01"
        and rows[0]["train.optimizer"] == "adam"
        and rows[0]["head.dense"] == "none"
        and float(rows[0]["head.dropout"]) == 0.0
    )
    assert result.baseline["number"] == 0 and result.baseline["value"] == pytest.approx(float(rows[0]["value"]))
    # No run folder per trial: the runs folder holds the tune folder and the one --train-best run.
    assert sorted(p.name.split("-", 2)[-1] for p in runs_dir.iterdir()) == ["study-best", "study-tune"]
    record = json.loads((folder / "tune.json").read_text())
    assert (
        record["study"] == "study"
        and record["status"] == "completed"
        and record["best"]["number"] == result.best["number"]
    )
    assert record["timings_s"]["extract"] > 0 and record["extraction"]["cut"] == "pool"
    assert record["storage"].startswith("sqlite:///") and record["storage"].endswith("study.db")


@pytest.mark.slow
def test_best_yaml_is_a_complete_config_that_trains(finished):
    result, runs_dir = finished
    best = load_config(result.best_config)  # a complete config: every default written out
    assert best.tune is None and best.name == "study-best"
    params = result.best["params"]
    assert (
        best.train.learning_rate == pytest.approx(params["train.learning_rate"])
        and best.train.optimizer == params["train.optimizer"]
    )
    assert isinstance(best.train.l2, float) and isinstance(best.head.dropout, float)  # the trial's pins
    assert best.train.refit is True  # the winning recipe then learns from the validation images too
    trained = result.train_best
    assert trained is not None and trained.run_dir.parent == runs_dir and (trained.run_dir / "model.keras").is_file()
    assert trained.metrics.refit["how"] == "recipe" and trained.metrics.refit["epochs"] == trained.metrics.best["epoch"]
    assert trained.metrics.figures["val"].startswith("in-sample")
    assert trained.metrics.final["val_accuracy"] == pytest.approx(
        result.best["value"], abs=0.2
    )  # the same recipe, a full run
    assert json.loads((result.tune_dir / "tune.json").read_text())["train_best"]["run_dir"] == str(trained.run_dir)


@pytest.mark.slow
def test_runs_lists_the_tune_folder_as_a_study_never_as_a_damaged_run(finished, cli):
    result, runs_dir = finished
    assert [s.name for s in list_runs(runs_dir)] == ["study-best"]
    shown = cli("runs", "--runs-dir", runs_dir)
    assert shown.exit_code == 0 and "damaged" not in shown.stdout
    assert "studies in" in shown.stdout and result.tune_dir.name in shown.stdout and "4/4" in shown.stdout
    assert [Path(r["path"]).name for r in json.loads(cli("runs", "--runs-dir", runs_dir, "--json").stdout)] == [
        result.train_best.run_dir.name
    ]


@pytest.mark.slow
def test_cross_validated_trials_score_the_mean_over_folds_and_best_yaml_trains_their_epochs(
    source, tmp_path, warm_cache
):
    """`tune.folds: auto` on a small set: each trial is a fresh head per fold of train + validation; the value is the
    folds' mean."""
    from tlcli import tune

    raw = study_config(
        source,
        tmp_path / "runs",
        trials=3,
        folds="auto",
        metric="val_loss",
        space={"train.learning_rate": {"low": 1.0e-3, "high": 0.1, "log": True}},
    )
    result = tune(load_config(raw), train_best=True)
    assert (
        result.folds == 5 and json.loads((result.tune_dir / "tune.json").read_text())["folds"] == 5
    )  # 72 images: under auto's 1,000
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{result.tune_dir / 'study.db'}")
    for trial in study.trials:
        folds = trial.user_attrs["figures"]["folds"]
        assert (
            trial.user_attrs["folds"] == 5 and len(folds) == 5 and len(set(folds)) > 1
        )  # five different held-out folds
        assert trial.value == pytest.approx(sum(folds) / 5, abs=1e-5)
        assert sorted(trial.intermediate_values) == list(
            range(1, len(trial.intermediate_values) + 1)
        )  # the first fold's epochs, for the pruner
    best = load_config(result.best_config)
    assert best.train.epochs == result.best["epochs"] and best.train.restore_best is False and best.train.refit is True
    assert (
        result.train_best.metrics.refit["epochs"] == result.best["epochs"]
    )  # trained, then refitted, for the folds' median


@pytest.mark.slow
def test_pruning_stops_a_trial_that_falls_behind(source, tmp_path, warm_cache):
    """A learning rate that learns nothing falls behind trial 0 at the same epoch: the median pruner stops it early."""
    from tlcli import tune

    space = {"train.learning_rate": [0.01, 1.0e-7]}
    raw = study_config(
        source,
        tmp_path / "runs",
        trials=5,
        space=space,
        pruner="median",
        pruner_args={"n_startup_trials": 1, "n_warmup_steps": 2},
    )
    raw["train"]["early_stopping"] = {"patience": 25}  # no early stop: a trial ends by the epochs or by the pruner
    result = tune(load_config(raw))
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{result.tune_dir / 'study.db'}")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.number, t.params, t.state) for t in study.trials]
    for trial in pruned:
        assert trial.params["train.learning_rate"] == 1.0e-7
        steps = sorted(trial.intermediate_values)
        assert (
            steps == list(range(1, len(steps) + 1)) and len(steps) < 25
        )  # every epoch reported, stopped before the last
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(sorted(t.intermediate_values) == list(range(1, 26)) for t in complete)
    assert result.trials["pruned"] == len(pruned)


@pytest.mark.parametrize(
    "tune_section, expected",
    [
        ({"space": {}}, "tune.space: empty"),
        (
            {"space": {"train.optimzer": ["adam"]}},
            "tune.space.train.optimzer: unknown key, did you mean train.optimizer?",
        ),
        ({"space": {"train.optimizer": {"low": 1, "high": 2}}}, "tune.space.train.optimizer: takes no range"),
        ({"space": {"train.optimizer": ["adam", "nadam"]}}, "tune.space.train.optimizer: cannot take 'nadam'"),
        ({"space": {"data.batch_size": {"low": 8.5, "high": 32}}}, "tune.space.data.batch_size: cannot take 8.5"),
        ({"space": {"train.learning_rate": {"low": 0.1, "high": 0.01}}}, "low (0.1) must be below high (0.01)"),
        (
            {"space": {"train.learning_rate": [0.01]}, "metric": "accuracy"},
            "tune.metric: 'accuracy' is not a per-epoch validation figure, did you mean val_accuracy?",
        ),
        ({"space": {"train.learning_rate": [0.01]}, "folds": 0}, "tune.folds: expected auto or a number of folds >= 1"),
        (
            {"space": {"train.learning_rate": [0.01]}, "metric": "test_accuracy"},
            "tune.metric: 'test_accuracy' is not a per-epoch validation figure",
        ),
    ],
)
def test_a_bad_tune_section_exits_2_with_one_line(cli, tmp_path, tune_section, expected):
    raw = tiny_config(make_image_folder(tmp_path / "images", {"a": 2, "b": 2}), tmp_path / "runs")
    raw["tune"] = tune_section
    result = cli("tune", write_config(tmp_path / "bad.yaml", raw))
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (tmp_path / "runs").exists()  # nothing was started


@pytest.mark.slow
def test_a_config_without_tune_section_and_its_own_value_outside_the_choices_are_refused(cli, source, tmp_path):
    raw = study_config(source, tmp_path / "runs")
    del raw["tune"]
    assert "has no tune: section" in cli("tune", write_config(tmp_path / "none.yaml", raw)).stderr
    with pytest.raises(ConfigError, match="the config's own value 0.01 is not among the choices"):
        from tlcli import tune

        tune(load_config(study_config(source, tmp_path / "runs", space={"train.learning_rate": [0.1, 0.05]})))
    assert not list((tmp_path / "runs").glob("*-tune"))  # refused before a trial: no tune folder is left


# ----------------------------------------------------------------------------- processes


def _postgres_bin() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0
    )
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL cluster on a free local port (initdb + pg_ctl as the postgres user; both refuse root),
    stopped after.

    Under CI=true a missing server fails the test: CI installs Debian's postgresql (.ci/run).
    """
    bindir = _postgres_bin()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    missing = (
        "PostgreSQL is not installed (/usr/lib/postgresql/<version>/bin/pg_ctl; `apt-get install postgresql`)"
        if bindir is None
        else None
    )
    if missing is None and as_postgres and (shutil.which("runuser") is None or not _user_exists("postgres")):
        missing = "running as root needs runuser and the postgres user to start PostgreSQL"
    if missing is None:
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            missing = "psycopg2 is not installed (the test extra has psycopg2-binary)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix="tlcli-pg-"))
    os.chmod(root, 0o755)
    home = root / "pg"
    home.mkdir()
    if as_postgres:
        user = pwd.getpwnam("postgres")
        os.chown(home, user.pw_uid, user.pw_gid)
    port, started = _free_port(), time.perf_counter()
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
    try:
        subprocess.run(
            [
                *as_postgres,
                str(bindir / "initdb"),
                "-D",
                str(home / "data"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                *as_postgres,
                str(bindir / "pg_ctl"),
                "-D",
                str(home / "data"),
                "-l",
                str(home / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        print(
            f"PostgreSQL {bindir.parts[-2]} started in {time.perf_counter() - started:.1f} s on port {port}",
            file=sys.stderr,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_postgres, str(bindir / "pg_ctl"), "-D", str(home / "data"), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(params=["postgresql", "journal"])
def shared_storage(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres")
    return f"journal:{tmp_path / 'shared' / 'study.log'}"


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_processes_at_once_share_one_study(source, tmp_path, shared_storage):
    """Two `tlcli tune` processes started together on one storage and study: the study ends with the sum of their
    trials (at least --trials), no trial number twice, and one trial that is the config as written."""
    if shared_storage.startswith("journal:"):
        Path(shared_storage.removeprefix("journal:")).parent.mkdir(parents=True)
    config = write_config(tmp_path / "study.yaml", study_config(source, tmp_path / "runs"))
    name = f"shared-{tmp_path.name}"[:60]
    command = tlcli_command(
        "tune", config, "--storage", shared_storage, "--study", name, "--trials", 6, "--json", "--quiet"
    )
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
        for _ in range(2)
    ]
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
            assert process.returncode == 0, err[-3000:]
            outputs.append(json.loads(out))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    from tlcli.tuning.study import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(shared_storage))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(numbers)))
    assert all(t.state.is_finished() for t in study.trials)
    assert sum(out["trials"]["this_process"] for out in outputs) == len(numbers) >= 6
    assert sum(t.user_attrs.get("tlcli") == "the config as written" for t in study.trials) == 1
    assert len({out["tune_dir"] for out in outputs}) == 2  # each process its own tune folder


@pytest.mark.slow
@pytest.mark.subprocess
def test_processes_that_open_a_fresh_postgresql_database_together_all_get_the_storage(postgres):
    """Optuna creates its tables on first use; processes racing on a fresh database lost with a unique violation."""
    import psycopg2

    admin = psycopg2.connect(postgres)
    admin.autocommit = True
    code = "import sys; from tlcli.tuning.study import open_storage; open_storage(sys.argv[1])"
    try:
        for round_ in range(3):
            name = f"race{round_}_{os.getpid()}"
            with admin.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
            url = postgres.rsplit("/", 1)[0] + f"/{name}"
            racers = [
                subprocess.Popen(
                    [sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True, env=environment()
                )
                for _ in range(4)
            ]
            errors = [racer.communicate(timeout=SUBPROCESS_TIMEOUT)[1] for racer in racers]
            assert [racer.returncode for racer in racers] == [0, 0, 0, 0], [e[-500:] for e in errors if e]
    finally:
        admin.close()


def _wait_for_a_trial(database: Path, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline and process.poll() is None:
        if database.is_file():
            try:
                study = optuna.load_study(study_name="study", storage=f"sqlite:///{database}")
                if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
                    return
            except Exception:  # noqa: BLE001  (the study is being created)
                pass
        time.sleep(0.5)
    raise AssertionError(f"no trial finished in time (exit {process.poll()})")


@pytest.mark.slow
@pytest.mark.subprocess
def test_ctrl_c_keeps_the_study_and_resume_continues_it(source, tmp_path):
    raw = study_config(source, tmp_path / "runs", trials=40)
    config = write_config(tmp_path / "study.yaml", raw)
    process = subprocess.Popen(
        tlcli_command("tune", config, "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while (
            not list((tmp_path / "runs").glob("*-tune/study.db"))
            and time.monotonic() < deadline
            and process.poll() is None
        ):
            time.sleep(0.2)
        folder = next((tmp_path / "runs").glob("*-tune"))
        _wait_for_a_trial(folder / "study.db", process, deadline)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err[-3000:]
    assert f"continue with: tlcli tune --resume {folder}" in err and "stopping after this trial" in err
    assert json.loads(out)["exit_code"] == 130 and json.loads(out)["tune_dir"] == str(folder)
    record = json.loads((folder / "tune.json").read_text())
    kept = record["trials"]["finished"]
    assert record["status"] == "interrupted" and 1 <= kept < 40 and record["trials"]["running"] == 0
    done = subprocess.run(
        tlcli_command("tune", "--resume", folder, "--trials", kept + 2, "--json", "--quiet"),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=environment(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = json.loads(done.stdout)
    assert resumed["tune_dir"] == str(folder) and resumed["status"] == "completed"
    assert resumed["trials"]["finished"] == kept + 2 and resumed["trials"]["this_process"] == 2
    with open(folder / "trials.csv", newline="") as stream:
        assert [int(r["number"]) for r in csv.DictReader(stream)] == list(range(kept + 2))
    assert yaml.safe_load((folder / "config.yaml").read_text())["tune"]["trials"] == 40


@pytest.mark.slow
def test_a_study_over_two_bases_and_a_fine_tuning_key_gives_each_base_its_own_features(source, tmp_path):
    """`base` as labelled choices (a name with its arguments) and `fine_tune.learning_rate`: every trial trains as a
    run does, on its own base's cached features (the cache keys by base), reports its fine-tuning epochs to the
    successive-halving pruner, and records which base it trained."""
    from tlcli import tune
    from tlcli.settings import cache_dir

    data, _, _ = source
    bases = {
        "cnn": {"name": "SmallCNN", "weights": "none", "args": {"filters": 8, "blocks": 2}, "trainable": "none"},
        "mobilenet": {"name": "MobileNet", "weights": "none", "args": {"alpha": 0.25}, "trainable": "none"},
    }
    raw = tiny_config(data, tmp_path / "runs", name="bases", base=bases["cnn"])
    raw["data"]["image_size"] = 32  # MobileNet's smallest
    raw["output"]["report"] = False
    raw["fine_tune"] = {"unfreeze": 2, "epochs": 2, "when": "always", "learning_rate": 1.0e-3}
    raw["tune"] = {
        "trials": 2,  # trial 0 the config's base; trial 1 draws the other (with the config's seed)
        "space": {"base": {"choices": bases}, "fine_tune.learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True}},
        "pruner": "successive_halving",
    }
    result = tune(load_config(raw))
    assert result.kind == "full" and result.stopped_by == "trials"
    study = optuna.load_study(study_name="bases", storage=f"sqlite:///{result.tune_dir / 'study.db'}")
    trained = {t.params["base"]: t.user_attrs["backbone"] for t in study.trials}
    assert trained == {"cnn": 'SmallCNN {"blocks": 2, "filters": 8}', "mobilenet": 'MobileNet {"alpha": 0.25}'}
    assert all(sorted(t.intermediate_values) == [1, 2] for t in study.trials)  # fine_tune's epochs, not the head's
    with (result.tune_dir / "trials.csv").open() as handle:
        assert {row["backbone"] for row in csv.DictReader(handle)} == set(trained.values())
    keys = [json.loads(meta.read_text())["base"] for meta in Path(cache_dir()).glob("features/*/meta.json")]
    assert sorted(keys) == ["MobileNet", "SmallCNN"]  # one cache entry per base: no trial reads another's features
    assert yaml.safe_load((result.tune_dir / "best.yaml").read_text())["base"]["name"] in ("SmallCNN", "MobileNet")


@pytest.mark.slow
def test_the_budget_stops_the_study_and_tune_json_says_why(source, tmp_path, warm_cache):
    from tlcli import tune

    raw = study_config(source, tmp_path / "runs", trials=20, budget=1.0e-6)  # minutes: spent by the first trial
    result = tune(load_config(raw))
    record = json.loads((result.tune_dir / "tune.json").read_text())
    assert record["stopped_by"] == "budget" and record["status"] == "completed"
    assert record["trials"]["finished"] == 1 and record["budget"]["minutes"] == 1.0e-6
    assert record["budget"]["spent"] >= 0 and record["best_config"]
