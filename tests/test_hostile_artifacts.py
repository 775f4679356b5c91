"""Issue 25, classes 3, 4 and 7 (artifacts): no hang on an artifact or a server, integrity checks that check the
right thing, damaged export records refused in one line.

Every hostile case exits with its documented code and one `error:` line, within a stated bound; the shared run
(`binary_run`) is checked byte for byte unchanged by its fixture, and a verified export folder by `snapshot`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import one_line, snapshot

from tlcli.export.formats import DEFAULT_GATES

FIFO_BOUND_S = 20  # a non-regular artifact is refused at once (stat, no open); this is the test's wide margin
PG_BOUND_S = 30  # tlcli.tuning.study.CONNECT_SECONDS (10) per address tried, within the 30 s


@pytest.fixture(scope="module")
def exported(binary_run, tmp_path_factory) -> Path:
    """READ-ONLY. binary_run exported as saved_model and onnx into a folder outside the run."""
    from tlcli.export import export_run

    result = export_run(binary_run, ["saved_model", "onnx"], out=tmp_path_factory.mktemp("exports") / "export")
    assert result.passed
    return result.export_dir


@pytest.fixture
def copy_export(exported, tmp_path):
    def copy(name: str = "copy") -> Path:
        return Path(shutil.copytree(exported, tmp_path / name))

    return copy


def images_of(binary_run: Path) -> Path:
    return binary_run.parent.parent / "data" / "val" / "cats"


def unblocking(fifo: Path, after: float) -> threading.Event:
    """From `after` seconds on, open the FIFO for writing and close it, so a reader blocked on it (the defect) gets
    an empty file and the test ends; set the returned event to stop."""
    done = threading.Event()

    def loop() -> None:
        if done.wait(after):
            return
        while not done.is_set():
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # no reader yet
            time.sleep(0.2)

    threading.Thread(target=loop, daemon=True).start()
    return done


def timed_cli(cli, fifo: Path, *args):
    stop = unblocking(fifo, FIFO_BOUND_S)
    started = time.monotonic()
    try:
        return cli(*args), time.monotonic() - started
    finally:
        stop.set()


@pytest.mark.slow
def test_a_fifo_artifact_is_refused_before_it_is_opened(cli, binary_run, copy_export):
    """Class 3: predict --model, evaluate --model and export --verify blocked forever on a FIFO artifact."""
    folder = copy_export()
    before = snapshot(folder)
    (folder / "model.onnx").unlink()
    os.mkfifo(folder / "model.onnx")
    index = folder / "saved_model" / "variables" / "variables.index"
    index.unlink()
    os.mkfifo(index)
    for args, fifo, named in (
        (("predict", images_of(binary_run), "--model", folder / "model.onnx"), folder / "model.onnx", "model.onnx"),
        (("evaluate", binary_run, "--model", folder / "saved_model"), index, "variables.index"),
        (("export", "--verify", folder, "--format", "onnx"), folder / "model.onnx", "model.onnx"),
    ):
        out, seconds = timed_cli(cli, fifo, *args)
        assert seconds < FIFO_BOUND_S, (args[0], seconds)
        line = one_line(out)
        assert out.exit_code == 2 and f"{fifo}: a FIFO, not a regular file" in line, (args[0], line)
        assert named in line
    assert {k: v for k, v in snapshot(folder).items() if "model.onnx" not in k and "variables.index" not in k} == {
        k: v for k, v in before.items() if "model.onnx" not in k and "variables.index" not in k
    }


@pytest.mark.slow
def test_verify_checks_the_export_folders_own_files(cli, exported, copy_export, tmp_path):
    """Class 4: --verify followed export.json's `file` anywhere, and passed an export whose own model is empty."""
    elsewhere = copy_export("elsewhere")
    redirected = copy_export("redirected")
    (redirected / "model.onnx").write_bytes(b"")
    record = json.loads((redirected / "export.json").read_text())
    record["formats"]["onnx"]["file"] = str(elsewhere / "model.onnx")
    (redirected / "export.json").write_text(json.dumps(record))
    out = cli("export", "--verify", redirected, "--format", "onnx")
    assert out.exit_code == 2 and "formats.onnx.file" in one_line(out) and "export.json" in one_line(out)

    linked = copy_export("linked")
    (linked / "model.onnx").unlink()
    (linked / "model.onnx").symlink_to(elsewhere / "model.onnx")
    out = cli("export", "--verify", linked, "--format", "onnx")
    assert out.exit_code == 2 and "leads outside the export folder" in one_line(out)

    empty = copy_export("empty")
    (empty / "model.onnx").write_bytes(b"")
    before = snapshot(empty)
    out = cli("export", "--verify", empty, "--format", "onnx")
    assert out.exit_code == 3 and "onnx: " in one_line(out)
    assert snapshot(empty) == before  # --verify writes nothing
    assert cli("export", "--verify", exported, "--format", "onnx", "--quiet").exit_code == 0


@pytest.mark.parametrize("gate", sorted(DEFAULT_GATES))
@pytest.mark.parametrize("multi_label", [False, True])
def test_nan_probabilities_fail_every_gate(gate, multi_label):
    """Class 4: NaN compared with a limit is never "too far": an artifact giving NaN passed "within 1e-3"."""
    from tlcli.export.parity import compare, gate_failures

    reference = np.tile([0.9, 0.1], (8, 1))  # Keras says class 0 every time; NaN's argmax is 0 too
    probabilities = reference.copy()
    probabilities[:, :] = np.nan
    labels = np.zeros((8, 2)) if multi_label else np.zeros(8, dtype=int)
    parity = compare(reference, probabilities, labels, 0.1, (0.5, 0.5) if multi_label else None)
    failures = gate_failures(gate, parity, DEFAULT_GATES[gate])
    assert failures and "NaN" in failures[0]
    json.dumps(parity.to_dict(), allow_nan=False)  # export.json stays standard JSON


@pytest.mark.slow
def test_predict_refuses_labels_that_contradict_export_json(cli, binary_run, copy_export):
    """Class 4: predict --model took labels.txt over the export.json beside it, whatever it said."""
    folder = copy_export()
    (folder / "labels.txt").write_text("dogs\ncats\n")
    out = cli("predict", images_of(binary_run), "--model", folder / "model.onnx")
    line = one_line(out)
    assert out.exit_code == 2 and f"{folder / 'labels.txt'}: lists dogs, cats" in line and "export.json" in line


@pytest.mark.slow  # the module's export (its first use): the checks themselves take 0.1 s each
@pytest.mark.parametrize(
    "key, damage",
    [
        ("formats.onnx.gate.min_agreement", lambda r: r["formats"]["onnx"]["gate"].update(min_agreement="high")),
        (
            "formats.onnx.gate.max_difference",
            lambda r: r["formats"]["onnx"]["gate"].update(max_difference=float("nan")),
        ),
        ("formats.onnx.gate", lambda r: r["formats"]["onnx"].update(gate=[1])),
        ("formats.onnx.export_seconds", lambda r: r["formats"]["onnx"].update(export_seconds="slow")),
        ("formats.onnx.file", lambda r: r["formats"]["onnx"].update(file=5)),
        ("parity_images.requested", lambda r: r["parity_images"].update(requested="all")),
    ],
)
def test_damaged_export_json_fields_are_one_line(cli, exported, tmp_path, key, damage):
    """Class 7: a damaged export.json field crashed --verify; now exit 2, naming the file and the key, before any
    work."""
    folder = Path(shutil.copytree(exported, tmp_path / "copy", ignore=shutil.ignore_patterns("saved_model")))
    record = json.loads((folder / "export.json").read_text())
    damage(record)
    (folder / "export.json").write_text(json.dumps(record))
    out = cli("export", "--verify", folder, "--format", "onnx")
    line = one_line(out)
    assert out.exit_code == 2 and f"{folder / 'export.json'}: {key} is " in line, line


def write_saved_model(path: Path, two_inputs: bool) -> Path:
    import tensorflow as tf

    class Odd(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)] * (2 if two_inputs else 1))
        def serve(self, image, *other):
            return {"p": tf.reduce_mean(image, axis=[1, 2, 3])}  # rank 1: one number per image

    module = Odd()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    (path / "labels.txt").write_text("cats\ndogs\n")
    return path


@pytest.mark.slow
def test_a_savedmodel_of_two_inputs_or_a_rank_1_output_is_one_line(cli, binary_run, tmp_path):
    """Class 7: a SavedModel with two inputs, or a rank-1 output, was an internal error."""
    for two_inputs, words in ((True, "2 inputs (image, other_0) and 1 outputs"), (False, "output of shape [None]")):
        model = write_saved_model(tmp_path / f"odd-{two_inputs}", two_inputs)
        out = cli("predict", images_of(binary_run), "--model", model)
        line = one_line(out)
        assert out.exit_code == 2 and f"{model}: " in line and words in line, line


def hdf5_file(path: Path, value: float) -> Path:
    import h5py

    with h5py.File(path, "w") as handle:
        handle["w"] = np.full(3, value)
    return path


def test_weights_import_checks_the_content_and_keeps_a_different_file(cli, isolated_caches, tmp_path):
    """Class 4: any bytes named .h5 were imported, and a good file of the same name silently overwritten."""
    junk = tmp_path / "junk" / "mobilenet_2_5_224_tf_no_top.h5"
    junk.parent.mkdir()
    junk.write_bytes(b"<html>404 Not Found</html>")
    out = cli("weights", "import", junk)
    assert out.exit_code == 2 and "not an HDF5 file" in one_line(out)
    assert not (isolated_caches / "models" / junk.name).exists()
    zipless = tmp_path / "model.keras"
    zipless.write_bytes(b"not a zip")
    assert cli("weights", "import", zipless).exit_code == 2

    good = hdf5_file(tmp_path / junk.name, 1.0)
    assert cli("weights", "import", good).exit_code == 0
    cached = isolated_caches / "models" / good.name
    kept = cached.read_bytes()
    again = cli("weights", "import", good)
    assert again.exit_code == 0 and "unchanged" in again.stdout
    (tmp_path / "other").mkdir()
    other = hdf5_file(tmp_path / "other" / good.name, 2.0)
    out = cli("weights", "import", other)
    assert out.exit_code == 2 and "already exists" in one_line(out) and "--force" in one_line(out)
    assert cached.read_bytes() == kept
    assert cli("weights", "import", other, "--force").exit_code == 0 and cached.read_bytes() == other.read_bytes()


@pytest.mark.slow
def test_a_postgresql_server_that_never_answers_fails_within_the_bound():
    """Class 3: `tune` waited forever on a server that accepts the connection and never answers."""
    pytest.importorskip("psycopg2")
    from tlcli.errors import UserError
    from tlcli.tuning.study import open_storage

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []

    def accept_and_never_answer() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return  # the server was closed

    threading.Thread(target=accept_and_never_answer, daemon=True).start()
    outcome: list[BaseException | object] = []

    def open_it() -> None:
        try:
            outcome.append(open_storage(f"postgresql://tlcli:secret@127.0.0.1:{server.getsockname()[1]}/study"))
        except BaseException as exc:  # noqa: BLE001  (the outcome is what the test checks)
            outcome.append(exc)

    started = time.monotonic()
    opening = threading.Thread(target=open_it, daemon=True)
    opening.start()
    opening.join(PG_BOUND_S + 5)
    seconds = time.monotonic() - started
    for connection in held:
        connection.close()  # the defect's wait ends when the server goes away
    server.close()
    opening.join(10)
    assert seconds < PG_BOUND_S, f"still waiting after {seconds:.0f} s"
    (error,) = outcome
    assert isinstance(error, UserError) and error.exit_code == 2 and "\n" not in str(error)
    assert "cannot open the study storage" in str(error) and "secret" not in str(error)
