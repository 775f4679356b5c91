"""Hostile and careless inputs: no hang, no unbounded memory, no silent wrong result, the documented exit code.

Every case runs under a timeout (a hang fails the test instead of hanging CI),
ends with its documented exit code and one line on stderr, and leaves the
module's reference run byte for byte as it was.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from conftest import make_image_folder, one_line, tiny_config, write_config

pytestmark = pytest.mark.timeout(120)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small dataset, one completed reference run (checked byte for byte at the end), and a config to train more."""
    from tlcli import load_config, train

    root = tmp_path_factory.mktemp("hostile")
    data = make_image_folder(root / "data", {"cats": 8, "dogs": 8})
    raw = tiny_config(data, root / "runs", train={"epochs": 1})
    reference = train(load_config(raw)).run_dir
    state = {"root": root, "data": data, "raw": raw, "reference": reference, "before": snapshot(reference)}
    yield state
    assert snapshot(reference) == state["before"], "a hostile case changed an earlier run"


def copy_data(world, name: str) -> Path:
    target = world["root"] / name
    shutil.copytree(world["data"], target)
    return target


def config_for(world, folder: Path, name: str, **sections) -> Path:
    sections = {"train": {"epochs": 1}, **sections}
    raw = tiny_config(folder, world["root"] / "runs", **sections)
    return write_config(world["root"] / f"{name}.yaml", raw)


def runs_now(world) -> set[str]:
    return {p.name for p in (world["root"] / "runs").iterdir()}


# ----------------------------------------------------------------------------- files that never end or never answer


def add_endless_files(folder: Path) -> dict[str, str]:
    """A FIFO, a link to /dev/zero and a sparse 150 MB file, all named like images, in class `cats`; expected
    reasons."""
    fifo = folder / "cats" / "pipe.jpg"
    os.mkfifo(fifo)
    (folder / "cats" / "zero.jpg").symlink_to("/dev/zero")
    with open(folder / "cats" / "huge.png", "wb") as stream:
        stream.truncate(150_000_000)  # sparse: no disk used, 150 MB to a reader
    return {
        str(fifo): "not a regular file (a FIFO)",
        str(folder / "cats" / "zero.jpg"): "not a regular file (a character device)",
        str(folder / "cats" / "huge.png"): "file too large (150.0 MB",
    }


@pytest.mark.slow
def test_fifos_devices_and_huge_files_are_unreadable_not_hangs(cli, world):
    data = copy_data(world, "endless")
    expected = add_endless_files(data)
    checked = cli("check", data, "--json", "--no-cache")
    assert checked.exit_code == 4, checked.stderr
    reasons = {f["path"]: f["reason"] for f in json.loads(checked.stdout)["problems"]["unreadable"]}
    assert set(reasons) == set(expected) and all(reasons[p].startswith(expected[p]) for p in expected), reasons

    trained = cli("train", config_for(world, data, "endless"), "--json", "--quiet")
    assert trained.exit_code == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["skipped_files"] == 3 and summary["images"]["train"] + summary["images"]["val"] == 16

    predicted = cli("predict", *expected, data / "dogs", "--run", summary["run_dir"], "-f", "jsonl")
    assert predicted.exit_code == 4
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [r["error"].split(" (")[0] for r in rows[:3]] == [
        "not a regular file",
        "not a regular file",
        "file too large",
    ]
    assert all(r["label"] for r in rows[3:]) and len(rows) == 3 + 8


@pytest.mark.slow
def test_the_read_cap_is_a_config_key(cli, world):
    data = copy_data(world, "capped")
    big = data / "dogs" / "big.png"
    big.write_bytes(
        (data / "dogs" / "dogs_000.png").read_bytes() + b"\0" * 3_000_000
    )  # a valid PNG with trailing bytes
    assert cli("check", data, "--json", "--no-cache").exit_code == 0  # under the default cap
    capped = cli("check", data, "--json", "--no-cache", "--max-file-mb", "1")
    assert (
        capped.exit_code == 4
        and "data.max_file_mb = 1" in json.loads(capped.stdout)["problems"]["unreadable"][0]["reason"]
    )
    trained = cli("train", config_for(world, data, "capped", data={"max_file_mb": 1}), "--json", "--quiet")
    assert trained.exit_code == 0 and json.loads(trained.stdout)["skipped_files"] == 1


def add_loops(folder: Path) -> None:
    """Two symlink loops and a link up the tree in class `cats` (each alone used to list every file 41 times)."""
    (folder / "cats" / "again").symlink_to(".")
    (folder / "cats" / "up").symlink_to("..")
    (folder / "cats" / "self").symlink_to("self")  # a link to itself (ELOOP)


@pytest.mark.slow
def test_symlink_loops_list_each_file_once_in_check_train_and_predict(cli, world):
    data = copy_data(world, "loops")
    add_loops(data)
    started = time.monotonic()
    checked = json.loads(cli("check", data, "--json", "--no-cache").stdout)
    assert time.monotonic() - started < 60
    assert sum(checked["listed"].values()) == 16 and checked["problems"]["counts"]["within_class"] == 0
    skipped = {Path(i["path"]).name: i["reason"] for i in checked["ignored"]}
    assert "again" in skipped and "up" in skipped and "already listed" in skipped["again"]

    trained = cli("train", config_for(world, data, "loops"), "--json", "--quiet")
    assert trained.exit_code == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["images"]["train"] + summary["images"]["val"] == 16  # not 16 x 41
    predicted = cli("predict", data, "--run", summary["run_dir"], "-f", "jsonl")
    assert predicted.exit_code == 0 and len(predicted.stdout.splitlines()) == 16


def test_symlinked_class_and_split_folders_stay_supported(cli, world):
    elsewhere = copy_data(world, "elsewhere")
    assembled = world["root"] / "assembled"
    (assembled / "train").mkdir(parents=True)
    for name in ("cats", "dogs"):
        (assembled / "train" / name).symlink_to(elsewhere / name)
    checked = json.loads(cli("check", assembled, "--json", "--no-cache").stdout)
    assert sum(checked["listed"].values()) == 16 and checked["classes"] == ["cats", "dogs"]


# ----------------------------------------------------------------------------- the feature cache


def source_and_target(world, name: str, **target_sections) -> Path:
    """A config whose frozen base (an earlier run's) trains on cached features."""
    raw = tiny_config(
        world["data"],
        world["root"] / "runs",
        name=name,
        train={"epochs": 2},
        head={"dropout": 0.0},
        runtime={"deterministic": True},
        **target_sections,
    )
    raw["base"] = {"run": str(world["reference"]), "trainable": "none"}
    return write_config(world["root"] / f"{name}.yaml", raw)


def packs_of(summary: dict) -> list[Path]:
    return sorted(Path(summary["cache"]["folder"]).glob("packs/[!.]*.npy"))


@pytest.mark.slow
def test_a_damaged_pack_never_changes_a_figure(cli, world, tmp_path, monkeypatch):
    monkeypatch.setenv("TLCLI_CACHE_DIR", str(tmp_path / "cache"))
    config = source_and_target(world, "cachevictim")
    first = json.loads(cli("train", config, "--json", "--quiet").stdout)
    assert first["cache"]["extracted"] == 16
    [pack] = packs_of(first)

    data = bytearray(pack.read_bytes())
    data[-8:] = b"\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f"  # the last feature value, same size
    pack.write_bytes(bytes(data))
    second = cli("train", config, "--json")
    assert second.exit_code == 0
    summary = json.loads(second.stdout)
    assert (
        summary["cache"]["damaged_packs"] == 1
        and summary["cache"]["extracted"] == 16
        and summary["final"] == first["final"]
    )
    assert "damaged pack" in second.stderr

    packs_of(summary)[0].write_bytes(b"")  # zero bytes
    third = json.loads(cli("train", config, "--json", "--quiet").stdout)
    assert third["cache"]["damaged_packs"] == 1 and third["final"] == first["final"]
    fourth = json.loads(cli("train", config, "--json", "--quiet").stdout)
    assert fourth["cache"]["hits"] == 16 and fourth["cache"]["damaged_packs"] == 0 and fourth["final"] == first["final"]


@pytest.mark.slow
def test_an_unusable_cache_folder_means_training_without_it(cli, world, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TLCLI_CACHE_DIR", str(blocker))
    config = source_and_target(world, "nocache")
    auto = cli("train", config, "--json")
    assert auto.exit_code == 0, auto.stderr
    assert "the feature cache cannot be used" in auto.stderr
    summary = json.loads(auto.stdout)
    assert summary["cache"]["mode"] == "features" and "key" not in summary["cache"]  # features in memory

    before = runs_now(world)
    disk = cli("train", source_and_target(world, "needsdisk", cache="disk"), "--quiet")
    assert disk.exit_code == 2 and one_line(disk).startswith("error: cache: disk: the feature cache cannot be used")
    assert runs_now(world) == before  # nothing was started


def unprivileged(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_read_only_cache_folder_for_an_unprivileged_user(tmp_path):
    """Root ignores file permissions, so this case drops to `nobody` (setpriv) or is skipped, never passed vacuously."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop privileges (root ignores file modes)")
    shared = Path(os.environ.get("TLCLI_TEST_SHARED_TMP", "/tmp")) / f"tlcli-ro-{os.getpid()}"
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir(mode=0o755)
    try:
        data = make_image_folder(shared / "data", {"a": 6, "b": 6})
        cache = shared / "cache"
        cache.mkdir(mode=0o555)  # nobody may not write here
        (shared / "runs").mkdir(mode=0o777)
        config = write_config(shared / "c.yaml", tiny_config(data, shared / "runs", train={"epochs": 1}, cache="disk"))
        for path in [shared, *shared.rglob("*")]:
            if path != cache:
                os.chmod(path, 0o777 if path.is_dir() else 0o644)
        env = {
            **os.environ,
            "TLCLI_CACHE_DIR": str(cache),
            "KERAS_HOME": str(shared / "keras"),
            "MPLCONFIGDIR": str(shared / "mpl"),
            "HOME": str(shared),
        }
        probe = unprivileged([sys.executable, "-c", "import tlcli"], env)
        if probe.returncode != 0:
            pytest.skip(
                "the test's interpreter or sources are not readable by an unprivileged user "
                f"({probe.stderr.strip().splitlines()[-1][:120]})"
            )
        tlcli = [sys.executable, "-c", "from tlcli.cli import main; main()"]
        refused = unprivileged([*tlcli, "train", str(config), "--quiet"], env)
        assert refused.returncode == 2 and "cache: disk: the feature cache cannot be used" in refused.stderr, (
            refused.stderr
        )
        assert not list((shared / "runs").iterdir())
        allowed = unprivileged([*tlcli, "train", str(config), "--quiet", "--set", "cache=auto"], env)
        assert allowed.returncode == 0, allowed.stderr
        assert "the feature cache cannot be used" in allowed.stderr
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# ----------------------------------------------------------------------------- run folders that were edited or damaged


def damaged_copy(world, name: str) -> Path:
    target = world["root"] / "runs" / f"20990101-000000-{name}"
    shutil.copytree(world["reference"], target)
    return target


def test_damaged_run_records_are_named_and_never_hide_other_runs(cli, world):
    listed_before = json.loads(cli("runs", "--runs-dir", world["root"] / "runs", "--json").stdout)
    bad_record = damaged_copy(world, "badrecord")
    (bad_record / "run.json").write_text("[1, 2, 3]")
    bad_labels = damaged_copy(world, "badlabels")
    (bad_labels / "labels.json").write_text('{"not": "a list"}')
    bad_model = damaged_copy(world, "badmodel")
    (bad_model / "model.json").write_text("[]")
    wrong_labels = damaged_copy(world, "wronglabels")
    (wrong_labels / "labels.json").write_text('["cats", "dogs", "birds"]')
    try:
        listed = cli("runs", "--runs-dir", world["root"] / "runs", "--json")
        assert listed.exit_code == 0
        statuses = {Path(r["path"]).name: (r["status"], r["problem"]) for r in json.loads(listed.stdout)}
        assert statuses[bad_record.name][0] == "damaged" and "run.json: damaged" in statuses[bad_record.name][1]
        assert len(statuses) == len(listed_before) + 4
        table = cli("runs", "--runs-dir", world["root"] / "runs")
        assert table.exit_code == 0 and "damaged" in table.stdout and f"{bad_record.name}: " in table.stdout

        for run_dir, words in (
            (bad_record, "run.json: damaged"),
            (bad_labels, "labels.json: damaged"),
            (bad_model, "model.json: missing or unreadable"),
            (wrong_labels, "lists 3 classes but model.keras has 2 outputs"),
        ):
            evaluated = cli("evaluate", run_dir)
            assert evaluated.exit_code == 2 and words in one_line(evaluated), (run_dir.name, evaluated.stderr)
        predicted = cli("predict", world["data"] / "cats", "--run", wrong_labels)
        assert predicted.exit_code == 2 and "lists 3 classes" in one_line(predicted)
        raw = tiny_config(world["data"], world["root"] / "runs", name="frombad")
        raw["base"] = {"run": str(bad_model), "trainable": "none"}
        refused = cli("validate", write_config(world["root"] / "frombad.yaml", raw))
        assert refused.exit_code == 2 and "model.json" in one_line(refused)
    finally:
        for folder in (bad_record, bad_labels, bad_model, wrong_labels):
            shutil.rmtree(folder)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("image_size", [0, 0], "image_size [0, 0]: expected [height, width], each 1 to 4096 pixels"),
        ("image_size", [100000, 100000], "image_size [100000, 100000]: expected [height, width]"),
        ("image_size", [32, 32], "image_size [32, 32] does not match model.keras, which takes 16x16 images"),
        ("channels", 2, "channels 2: expected 1 (grayscale) or 3 (RGB)"),
        ("channels", 1, "channels 1 does not match model.keras, which takes 3-channel images"),
        ("activation", "sigmoid", "activation sigmoid does not match model.keras's output layer (softmax)"),
        ("thresholds", [0.5], "thresholds lists 1 classes but model.keras has 2 outputs"),
    ],
    ids=["size-0", "size-100000", "size-32", "channels-2", "channels-1", "activation", "thresholds"],
)
def test_an_edited_model_json_is_named_before_any_image_is_decoded(cli, world, tmp_path, field, value, words):
    """model.json's size, channels and outputs against model.keras: an absurd size was blamed on every image (a
    division by zero, or memory), a wrong channel count was an internal error. Now every command that reads the run
    (evaluate, predict, export, base.run) is exit 2 naming model.json and the field, and writes nothing."""
    edited = damaged_copy(world, f"edited-{field}")
    record = json.loads((edited / "model.json").read_text())
    (edited / "model.json").write_text(json.dumps({**record, field: value}))
    before = snapshot(edited)
    raw = tiny_config(world["data"], world["root"] / "runs", name="fromedited")
    raw["base"] = {"run": str(edited), "trainable": "none"}
    try:
        for args in (
            ("evaluate", edited),
            ("predict", world["data"] / "cats", "--run", edited),
            ("export", edited, "--format", "saved_model", "--out", tmp_path / "export"),
            ("validate", write_config(tmp_path / "fromedited.yaml", raw)),
        ):
            result = cli(*args)
            line = one_line(result)
            assert result.exit_code == 2 and f"{edited / 'model.json'}: {words}" in line, (args[0], line)
        assert snapshot(edited) == before and not (tmp_path / "export").exists()
    finally:
        shutil.rmtree(edited)


# ----------------------------------------------------------------------------- configs that expand


def test_yaml_alias_bombs_and_duplicate_keys_are_refused(cli, world, tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{', '.join([f'*{previous}'] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 1000
    started = time.monotonic()
    refused = cli("validate", bomb)
    assert refused.exit_code == 2 and "expands to more than 100,000 values" in one_line(refused)
    assert time.monotonic() - started < 10
    trained = cli("train", bomb)
    assert trained.exit_code == 2 and "expands to more than" in one_line(trained)

    twice = tmp_path / "twice.yaml"
    twice.write_text(f"data:\n  dir: {world['data']}\ntrain:\n  epochs: 1\ntrain:\n  epochs: 50\n")
    duplicate = cli("validate", twice)
    assert (
        duplicate.exit_code == 2
        and one_line(duplicate) == f"error: {twice} line 5: key 'train' is given twice; keep one"
    )
    bad_set = cli("validate", config_for(world, world["data"], "setbomb"), "--set", "train.epochs=&a [*a]")
    assert bad_set.exit_code == 2 and "--set train.epochs" in one_line(bad_set)


# ----------------------------------------------------------------------------- exit codes


def test_a_class_with_only_unreadable_files_is_exit_2_and_leaves_no_run_folder(cli, world):
    data = copy_data(world, "deadclass")
    for file in (data / "dogs").iterdir():
        file.write_bytes(b"")
    checked = cli("check", data, "--no-cache")
    assert checked.exit_code == 2 and "class 'dogs' has no readable training image" in checked.stderr
    before = runs_now(world)
    trained = cli("train", config_for(world, data, "deadclass"), "--quiet")
    assert trained.exit_code == 2 and one_line(trained).startswith(
        "error: class 'dogs' has no readable training image; training needs at least one per class"
    )
    assert runs_now(world) == before


def test_paths_too_long_and_digits_onto_a_file_are_exit_2(cli, world, tmp_path):
    long = "/tmp/" + "x" * 300
    for args in (
        ("check", long),
        ("train", config_for(world, world["data"], "longruns"), "--runs-dir", long),
        ("predict", long + "/a.jpg", "--run", world["reference"]),
    ):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert one_line(result).startswith("error: ")
    a_file = tmp_path / "digits.txt"
    a_file.write_text("x")
    digits = cli("datasets", "digits", a_file)
    assert digits.exit_code == 2 and "exists and is not a folder" in one_line(digits)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs: a real full disk (skipped where mounting is not allowed)."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()[:120]})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_during_evaluate_and_predict_is_exit_2(cli, world, small_disk):
    run_copy = small_disk / "run"
    shutil.copytree(world["reference"], run_copy, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "eval"))
    filler = small_disk / "filler"
    with open(filler, "wb") as stream:
        try:
            stream.write(b"\0" * 2_000_000)
        except OSError:
            pass
    evaluated = cli("evaluate", run_copy)
    assert evaluated.exit_code == 2 and "disk full" in one_line(evaluated), evaluated.stderr
    assert not (run_copy / "eval").exists() or not any((run_copy / "eval").iterdir())  # no half report left
    predicted = cli("predict", world["data"] / "cats", "--run", world["reference"], "-o", small_disk / "out.jsonl")
    assert predicted.exit_code == 2 and "disk full" in one_line(predicted)
    assert not (small_disk / "out.jsonl").exists()


# ----------------------------------------------------------------------------- JSON for scripts, on every exit


def run_cli(*args) -> tuple[int, str, str]:
    """`tlcli ARGS` through `tlcli.cli.run`, the path `main` takes (usage errors included)."""
    from tlcli.cli import run

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = run([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_json_on_every_exit(cli, world, tmp_path):
    for args, code in (
        (("train", tmp_path / "missing.yaml", "--json"), 2),
        (("validate", tmp_path / "missing.yaml", "--json"), 2),
        (("check", tmp_path / "nowhere", "--json"), 2),
        (("evaluate", tmp_path / "nowhere", "--json"), 2),
        (("runs", "--runs-dir", tmp_path, "--json"), 0),
        (("predict", world["data"], "--run", tmp_path / "nowhere", "-f", "jsonl"), 2),
        (("predict", world["data"], "--run", tmp_path / "nowhere", "-f", "json"), 2),
    ):
        result = cli(*args)
        assert result.exit_code == code, (args, result.stderr)
        document = json.loads(result.stdout)
        if code:
            assert document["exit_code"] == code and document["error"] and document["error"] in result.stderr
    for args in (
        ("train", "--json", "--bogus"),
        ("check", "--json"),
        ("predict", "-f", "jsonl"),
        ("evaluate", "--json", world["reference"], "--top-k", "many"),
    ):
        code, out, err = run_cli(*args)
        assert code == 2, (args, err)
        assert json.loads(out)["exit_code"] == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (
            args,
            out,
            err,
        )
    code, out, err = run_cli("runs", "--runs-dir", world["root"] / "runs", "--json")
    assert code == 0 and isinstance(json.loads(out), list) and err == ""


# ----------------------------------------------------------------------------- half-finished reports and divergence


def test_a_killed_evaluation_leaves_no_half_report(world, monkeypatch):
    from tlcli import evaluate
    from tlcli.evaluation import report

    before = sorted(p.name for p in (world["reference"] / "eval").iterdir())

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill would, after metrics.json and the first plots were written

    monkeypatch.setattr(report, "plot_mistakes", crash)
    with pytest.raises(KeyboardInterrupt):
        evaluate(world["reference"])
    monkeypatch.undo()
    assert sorted(p.name for p in (world["reference"] / "eval").iterdir()) == before


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkilled_evaluations_leave_whole_reports_or_none(world):
    run_copy = world["root"] / "killed-evals"
    shutil.copytree(world["reference"], run_copy)
    command = [sys.executable, "-c", "from tlcli.cli import main; main()", "evaluate", str(run_copy), "--quiet"]
    for delay in (2.5, 3.0, 3.5, 30):
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
    required = {
        "metrics.json",
        "predictions.csv",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "reliability.png",
        "mistakes.png",
    }
    published = [p for p in (run_copy / "eval").iterdir() if not p.name.startswith(".")]
    assert all(required <= {f.name for f in folder.iterdir()} for folder in published)
    assert len(published) >= 2  # the training report and the last, uninterrupted evaluation


@pytest.mark.slow
def test_a_diverging_run_stops_with_the_reason(cli, world):
    config = config_for(
        world, world["data"], "diverges", train={"epochs": 5, "optimizer": "sgd", "learning_rate": 1.0e12}, cache="off"
    )
    result = cli("train", config, "--quiet")
    assert result.exit_code == 1 and "training diverged" in one_line(result)
    [failed] = [
        p
        for p in (world["root"] / "runs").iterdir()
        if "training diverged"
        in ((json.loads((p / "run.json").read_text()).get("error") or "") if (p / "run.json").is_file() else "")
    ]
    assert json.loads((failed / "run.json").read_text())["status"] == "failed"
    assert not (failed / "metrics.json").exists()


# ----------------------------------------------------------------------------- files other people can read


@pytest.mark.slow
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_honour_the_umask(cli, world, tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        result = cli("train", config_for(world, world["data"], f"umask{umask:o}"), "--json", "--quiet")
        run_dir = Path(json.loads(result.stdout)["run_dir"])
        out = tmp_path / "predictions.csv"
        assert cli("predict", world["data"] / "cats", "--run", run_dir, "-o", out, "--quiet").exit_code == 0
    finally:
        os.umask(previous)
    report = next((run_dir / "eval").iterdir())
    for path in (
        run_dir / "run.json",
        run_dir / "labels.json",
        run_dir / "metrics.json",
        run_dir / "splits" / "train.csv",
        run_dir / "model.keras",
        report / "metrics.json",
        report / "mistakes.png",
        out,
    ):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
