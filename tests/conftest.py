"""Shared fixtures: tiny generated image folders, an isolated Keras cache, the CLI, and trained runs shared by the
session (read-only: a test that writes into one copies it first, `run_copy`).

Tiers (markers registered in pyproject.toml): `slow` marks what trains, exports or waits on processes, so
`pytest -m "not slow"` is the fast inner loop; `subprocess` marks tests that start child processes.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
HYMENOPTERA = SHARED / "datasets" / "hymenoptera"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras reads KERAS_HOME once, at import (and writes keras.json there): point it away
# from the user's ~/.keras before any test imports Keras.
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="tlcli-tests-keras-")

# ----------------------------------------------------------------------------- tiers
# Slow and subprocess tests of the modules whose markers are kept here rather than on the tests themselves (the
# evaluate, predict, export, hostile-input and tune modules mark theirs in place). Patterns match "module::test"
# (fnmatch; a parametrized test matches by its name without the [case]).
SLOW = (
    "test_check.py::test_train_*",
    "test_check.py::test_a_failure_marks_only_the_new_run_failed",
    "test_check.py::test_messy_hymenoptera_*",
    "test_commands.py::test_cache_info_and_clear",
    "test_distributed.py::test_t[!f]*",
    "test_distributed.py::test_a_*",
    "test_distributed.py::test_stopping_*",
    "test_features.py::*",
    "test_manifest.py::test_every_bad_row_*",
    "test_manifest.py::test_a_relabelled_*",
    "test_manifest.py::test_evaluate_and_predict_*",
    "test_manifest.py::test_a_manifest_of_hymenoptera_*",
    "test_multilabel.py::test_a_multi_label_run_*",
    "test_multilabel.py::test_evaluate_gates_*",
    "test_multilabel.py::test_predict_gives_*",
    "test_multilabel.py::test_defaults_on_a_frozen_base_*",
    "test_multilabel.py::test_class_weight_auto_*",
    "test_multilabel.py::test_resume_extends_*",
    "test_resume.py::*",
    "test_selection.py::*",
    "test_tracking.py::test_a_*",
    "test_tracking.py::test_tlcli_runs_*",
    "test_tracking.py::test_resume_*",
    "test_tracking.py::test_evaluate_*",
    "test_tracking.py::test_credentials_*",
    "test_tracking.py::test_strict_*",
    "test_tracking.py::test_tune_*",
    "test_tracking.py::test_nothing_imports_mlflow_*",
    "test_train.py::test_run_folder_*",
    "test_train.py::test_saved_model_*",
    "test_train.py::test_resolved_config_*",
    "test_train.py::test_metrics_history_*",
    "test_train.py::test_two_phases_*",
    "test_train.py::test_failure_during_*",
    "test_train.py::test_class_weight_*",
    "test_train.py::test_sigmoid_head_*",
    "test_train.py::test_grayscale_training_*",
    "test_weights.py::test_imported_real_weights_*",
)
SUBPROCESS = (
    "test_architecture.py::test_import_tlcli_loads_no_heavy_library",
    "test_distributed.py::test_t[!f]*",
    "test_distributed.py::test_a_*",
    "test_distributed.py::test_stopping_*",
    "test_report_worker.py::test_keras_loads_*",
    "test_resume.py::test_ctrl_c_*",
    "test_resume.py::test_fault_injection_*",
    "test_tracking.py::test_a_server_stopped_*",
    "test_tracking.py::test_nothing_imports_mlflow_*",
)


def pytest_collection_modifyitems(config, items):
    """Mark the tests SLOW and SUBPROCESS name (the markers registered in pyproject.toml)."""
    for item in items:
        name = f"{item.path.name}::{item.originalname}"
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in SUBPROCESS):
            item.add_marker(pytest.mark.subprocess)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in SLOW):
            item.add_marker(pytest.mark.slow)


needs_shared = pytest.mark.skipif(
    not MOBILENET_WEIGHTS.is_file() or not HYMENOPTERA.is_dir(),
    reason="../shared (real weights and datasets) is absent",
)


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory, monkeypatch):
    """Never touch the user's real Keras or tlcli cache from a test."""
    home = tmp_path_factory.mktemp("keras_home")
    monkeypatch.setenv("KERAS_HOME", str(home))
    if "keras" in sys.modules:
        monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(home))
    monkeypatch.setenv("TLCLI_CACHE_DIR", str(tmp_path_factory.mktemp("tlcli_cache")))
    return home


def write_image(path: Path, pixels: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def class_pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB image whose class is easy to learn: a bright bar whose orientation and colour depend on the label."""
    image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    channel = label % 3
    band = slice(size // 3, 2 * size // 3)
    if label % 2 == 0:
        image[band, :, channel] = 230
    else:
        image[:, band, channel] = 230
    return image


# Multi-label images (tests/test_multilabel.py, tests/test_export.py): red, green and blue squares in their own corners.
def label_squares(labels: tuple[str, ...], rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """Dark noise with one bright square per label, each colour in its own corner: any subset is drawable."""
    image = rng.integers(0, 50, size=(size, size, 3), dtype=np.uint8)
    corners = {"red": (0, 0), "green": (0, size // 2), "blue": (size // 2, 0)}
    for name in labels:
        top, left = corners[name]
        image[top : top + size // 2, left : left + size // 2, ("red", "green", "blue").index(name)] = 235
    return image


def make_image_folder(root: Path, classes: dict[str, int], size: int = 16, seed: int = 0, suffix: str = ".png") -> Path:
    """root/<class>/<class>_<i><suffix>, `classes` maps class name -> image count."""
    rng = np.random.default_rng(seed)
    for label, (name, count) in enumerate(classes.items()):
        for i in range(count):
            write_image(root / name / f"{name}_{i:03d}{suffix}", class_pattern(label, size, rng))
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A class-per-folder dataset: 2 classes x 24 images of 16x16 (no val folder)."""
    return make_image_folder(tmp_path / "images", {"cats": 24, "dogs": 24})


@pytest.fixture
def split_folder(tmp_path) -> Path:
    """A parent folder with train/ and val/, 3 classes."""
    root = tmp_path / "split"
    make_image_folder(root / "train", {"a": 16, "b": 16, "c": 16}, seed=1)
    make_image_folder(root / "val", {"a": 6, "b": 6, "c": 6}, seed=2)
    return root


def tiny_config(data_dir: Path, runs_dir: Path, **sections) -> dict:
    """A fast config: SmallCNN from scratch on 16 px images, 2 epochs, everything pinned (no selection grid, no probe:
    each costs a scikit-learn import; tests of those mechanisms turn them on)."""
    config = {
        "name": "tiny",
        "seed": 3,
        "data": {"dir": str(data_dir), "image_size": 16, "batch_size": 8},
        "base": {"name": "SmallCNN", "weights": "none", "args": {"filters": 8, "blocks": 2}},
        "train": {"epochs": 2, "learning_rate": 0.01, "l2": 0.0},
        "output": {"runs_dir": str(runs_dir)},
        "probe": "off",
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def one_line(result) -> str:
    """The error: one line, the last on stderr (after any progress the command printed), no traceback."""
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return errors[0]


def write_config(path: Path, config: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli():
    """Run `tlcli ARGS...` in-process; returns exit code, stdout and stderr."""
    from typer.testing import CliRunner

    from tlcli.cli import _register_commands, app

    _register_commands()
    runner = CliRunner()

    def run(*args: str) -> CliResult:
        result = runner.invoke(app, [str(a) for a in args])
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


# ----------------------------------------------------------------------------- trained runs shared by the session


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One feature cache for the session: the shared runs train with it; a test that never needs a cold cache may use
    it too (`warm_cache`) and so reuse features another test extracted."""
    return tmp_path_factory.mktemp("tlcli_shared_cache")


@pytest.fixture
def warm_cache(shared_cache, monkeypatch) -> Path:
    monkeypatch.setenv("TLCLI_CACHE_DIR", str(shared_cache))
    return shared_cache


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, byte for byte."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train_shared(raw: dict, cache: Path) -> Path:
    """Train `raw` with the session's feature cache (session fixtures run before the per-test `isolated_caches`)."""
    from tlcli import load_config, train

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLCLI_CACHE_DIR", str(cache))
        return train(load_config(raw)).run_dir


def assert_untouched(run_dir: Path, before: dict[str, bytes]) -> None:
    """A shared run is read-only: a test that writes into one copies it first (`run_copy`)."""
    assert snapshot(run_dir) == before, f"a test wrote into the shared run {run_dir}; copy it first (run_copy)"


@pytest.fixture(scope="session")
def binary_run(tmp_path_factory, shared_cache):
    """READ-ONLY. A sigmoid single-unit head on cats vs dogs (16 + 16 train, 6 + 6 val images of 32 px, 3 epochs),
    output p of class 1: the run tests/test_predict.py and tests/test_export.py read."""
    root = tmp_path_factory.mktemp("binary")
    make_image_folder(root / "data" / "train", {"cats": 16, "dogs": 16}, size=32, seed=3)
    make_image_folder(root / "data" / "val", {"cats": 6, "dogs": 6}, size=32, seed=4)
    config = tiny_config(
        root / "data", root / "runs", data={"image_size": 32}, head={"activation": "sigmoid"}, train={"epochs": 3}
    )
    run_dir = train_shared(config, shared_cache)
    before = snapshot(run_dir)
    yield run_dir
    assert_untouched(run_dir, before)


@pytest.fixture(scope="session")
def frozen_source(tmp_path_factory, shared_cache):
    """READ-ONLY. A SmallCNN trained for 3 epochs whose frozen base gives separable features, and its data: 3 classes,
    train/ (24 each, hash-split into train and val) and test/ (6 each). Returns (data, run_dir, root): tests may write
    new folders under root, never into run_dir."""
    root = tmp_path_factory.mktemp("frozen-source")
    data = root / "data"
    make_image_folder(data / "train", {"a": 24, "b": 24, "c": 24}, seed=1)
    make_image_folder(data / "test", {"a": 6, "b": 6, "c": 6}, seed=5)
    config = tiny_config(data, root / "runs", name="source", train={"epochs": 3})
    run_dir = train_shared(config, shared_cache)
    before = snapshot(run_dir)
    yield data, run_dir, root
    assert_untouched(run_dir, before)


@pytest.fixture
def run_copy(tmp_path):
    """`run_copy(run)`: a copy of a shared run in tmp_path/runs/, for a test that writes into its run."""

    def copy(run_dir: Path, **options) -> Path:
        return Path(shutil.copytree(run_dir, tmp_path / "runs" / run_dir.name, **options))

    return copy


# ../shared beside the repository (a clone), or beside the folder of worktrees (a worktree of it).
REAL_WEIGHTS = next(
    (p for p in (MOBILENET_WEIGHTS, ROOT.parents[1] / "shared" / "weights" / MOBILENET_WEIGHTS.name) if p.is_file()),
    None,
)
needs_real_weights = pytest.mark.skipif(REAL_WEIGHTS is None, reason="../shared (real weights) is absent")


@pytest.fixture
def real_weights(isolated_caches) -> None:
    """MobileNet 0.25's ImageNet weights in this test's Keras cache (tests marked `needs_real_weights`)."""
    (isolated_caches / "models").mkdir(exist_ok=True)
    shutil.copy(REAL_WEIGHTS, isolated_caches / "models" / REAL_WEIGHTS.name)


def blobs(seed: int, tint: int, size: int = 72) -> Image.Image:
    """A photo-like image: smooth random colour blobs, tinted by class, with some detail (pretrained features tell
    such images apart, and a resized, recompressed copy from its source)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 200, (5, 5, 3)).astype(np.uint8)
    coarse[..., tint] += 55
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=float)
    return Image.fromarray(np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8))


def blob_folder(root: Path, planted: bool, copy_to: str = "val", splits=(("train", 8), ("val", 4))) -> Path:
    """Class folders `red` and `green` of blob images per split (train 8 + val 4 each by default); `planted`: a
    resized (72 -> 50 px), JPEG-40 copy of train/red/red3.png in `copy_to`/red/copy_of_red3.jpg."""
    for label, name in enumerate(("red", "green")):
        for number, (split, count) in enumerate(splits):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                blobs(1000 * label + 100 * number + k, label).save(folder / f"{name}{k}.png")
    if planted:
        source = Image.open(root / "train" / "red" / "red3.png")
        source.resize((50, 50), Image.LANCZOS).save(root / copy_to / "red" / "copy_of_red3.jpg", quality=40)
    return root
