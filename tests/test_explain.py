"""Grad-CAM heatmaps (issue 28): the planted patch is where the heatmap lands, `predict --explain` writes an overlay
per image named in every output format, `evaluate` writes the gallery of its most confident mistakes (and
`--no-explain` does not), and the heatmap's shape and range."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import label_squares, one_line, tiny_config, write_image
from PIL import Image

from tlcli import grad_cam, load_config, predict, train, write_overlay
from tlcli.errors import UserError
from tlcli.evaluation.gallery import GALLERY
from tlcli.evaluation.report import EvalSpec, Scored, write_evaluation
from tlcli.inference.explain import feature_layer, prepare_explain_dir
from tlcli.inference.predict import Explanations, ModelSource, predict_with
from tlcli.modeling.build import build_model, load_run_model
from tlcli.runs.records import read_labels

PATCHES = {"blue": 2, "red": 0}  # each class's colour channel: its 16 px patch is in the top-left corner


def patch_image(name: str, rng: np.random.Generator) -> np.ndarray:
    """Dark noise with one bright 16 px square of the class's colour in the top-left corner: nothing else tells the
    classes apart."""
    image = rng.integers(0, 60, size=(64, 64, 3), dtype=np.uint8)
    image[:16, :16, PATCHES[name]] = 240
    return image


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory):
    """A SmallCNN (3 blocks: an 8x8 final feature map at 64 px) trained 3 epochs on the patch images: 24 a class in
    train/ (split into train and val), 6 in test/."""
    root = tmp_path_factory.mktemp("patches")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 6)):
        for name in PATCHES:
            for i in range(count):
                write_image(root / "data" / split / name / f"{name}_{i:03d}.png", patch_image(name, rng))
    config = tiny_config(
        root / "data",
        root / "runs",
        data={"image_size": 64, "batch_size": 8},
        base={"args": {"filters": 8, "blocks": 3}},
        train={"epochs": 3},
    )
    return root, train(load_config(config)).run_dir


@pytest.mark.slow
def test_grad_cam_puts_the_mass_on_the_planted_patch(patch_run):
    """Per image (each test image of each class): at least 60% of the Grad-CAM mass of the image's own class lies in
    the patch's quadrant (the top-left 4x4 of the 8x8 feature map)."""
    root, run_dir = patch_run
    model = load_run_model(run_dir)
    assert feature_layer(model) == "block3_pool"
    class_names = read_labels(run_dir)
    for name in PATCHES:
        files = sorted((root / "data" / "test" / name).glob("*.png"))
        pixels = np.stack([np.asarray(Image.open(f)) for f in files])
        maps = grad_cam(model, pixels, class_names.index(name))
        assert maps.shape == (len(files), 8, 8)
        mass = maps[:, :4, :4].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
        assert (mass >= 0.6).all(), (name, mass)


def _test_images(root: Path) -> list[str]:
    return [str(root / "data" / "test" / name / f"{name}_000.png") for name in PATCHES]


@pytest.mark.slow
def test_predict_explain_writes_an_overlay_per_image_named_in_every_format(patch_run, cli, tmp_path):
    """The command once (csv), then the library's result in the other formats (one model load each)."""
    from tlcli.cli.predict import _table_text
    from tlcli.inference import format_predictions

    root, run_dir = patch_run
    result = cli("predict", *_test_images(root), "--run", run_dir, "--explain", tmp_path / "cli", "-f", "csv")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0])[-4:] == ["explanation", "unknown_score", "would_be", "error"]  # the run's rule: beside it
    overlays = sorted(str(p) for p in (tmp_path / "cli").iterdir())
    assert [Path(p).name for p in overlays] == ["1-blue_000.png", "2-red_000.png"]
    assert [row["explanation"] for row in rows] == overlays

    out = tmp_path / "library"
    predicted = predict(_test_images(root), run=run_dir, explain_dir=out)
    overlays = sorted(str(p) for p in out.iterdir())
    document = json.loads(format_predictions(predicted, "json"))
    assert document["explain_dir"] == str(out) and [p["explanation"] for p in document["predictions"]] == overlays
    lines = format_predictions(predicted, "jsonl").splitlines()
    assert [json.loads(line)["explanation"] for line in lines] == overlays
    table = _table_text(predicted)
    assert "explanation" in table.splitlines()[2] and "2-red_000" in table.replace("\n", "")
    # An overlay: the image, the heatmap and both, side by side.
    width, height = Image.open(overlays[0]).size
    assert width > 2 * height
    # Without --explain, the rows are as before: no explanation column.
    plain = predict(_test_images(root), run=run_dir)
    assert "explanation" not in format_predictions(plain, "csv") + format_predictions(plain, "json")


@pytest.mark.slow
def test_explain_refuses_a_folder_in_use_and_an_exported_model(patch_run, cli, tmp_path):
    root, run_dir = patch_run
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    result = cli("predict", *_test_images(root), "--run", run_dir, "--explain", used)
    assert result.exit_code == 2 and "--explain" in one_line(result) and "not empty" in one_line(result)
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    result = cli("predict", *_test_images(root), "--model", tmp_path / "model.onnx", "--explain", tmp_path / "new")
    line = one_line(result)
    assert result.exit_code == 2 and "--explain" in line and "--model" in line
    assert not (tmp_path / "new").exists()
    result = cli("predict", *_test_images(root), "--run", run_dir, "--explain", tmp_path / "x", "--explain-layer", "no")
    assert result.exit_code == 2 and "--explain-layer" in one_line(result)


@pytest.mark.slow
def test_evaluate_writes_the_mistakes_gallery_unless_switched_off(patch_run, cli, run_copy, tmp_path):
    root, run_dir = patch_run
    run = run_copy(run_dir)
    swapped = tmp_path / "swapped"  # every label wrong: the gallery has its eight most confident mistakes
    for name, other in (("red", "blue"), ("blue", "red")):
        shutil.copytree(root / "data" / "test" / name, swapped / other)
    result = cli("evaluate", run, "--data", swapped, "--json")
    assert result.exit_code == 0, result.stderr
    gallery = Path(json.loads(result.stdout)["eval_dir"]) / GALLERY
    width, height = Image.open(gallery).size
    assert height > 4 * width / 3  # eight rows of three panels
    result = cli("evaluate", run, "--data", swapped, "--json", "--no-explain")
    assert result.exit_code == 0, result.stderr
    assert not (Path(json.loads(result.stdout)["eval_dir"]) / GALLERY).exists()


# ----------------------------------------------------------------------------- without training


def built(tmp_path: Path, classes: int = 3, **sections):
    """A SmallCNN model as a run builds it (64 px, 3 blocks: an 8x8 final feature map), untrained."""
    raw = tiny_config(tmp_path, tmp_path / "runs", base={"args": {"filters": 4, "blocks": 3}}, **sections)
    raw["data"]["image_size"] = 64
    if "manifest" in raw["data"]:
        del raw["data"]["dir"]
    return build_model(load_config(raw), classes)[0]


def test_heatmaps_are_at_the_feature_maps_resolution_in_zero_one(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, size=(3, 64, 64, 3), dtype=np.uint8)
    for model, classes in (
        (built(tmp_path), [0, 1, 2]),
        (built(tmp_path, 2, head={"activation": "sigmoid"}), [0, 1, 0]),
    ):
        one = grad_cam(model, pixels[0], classes[0])
        assert one.shape == (8, 8) and one.dtype == np.float32
        maps = grad_cam(model, pixels, classes)
        assert maps.shape == (3, 8, 8) and maps.min() >= 0.0 and maps.max() <= 1.0
        assert all(m.max() in (0.0, 1.0) for m in maps)  # each normalised by its own peak (zero: no evidence)
        assert np.allclose(maps[0], one, atol=1e-5)
    # Past the first 16 images of a model, a compiled function computes the same maps (the sigmoid head's here).
    many = grad_cam(model, np.concatenate([pixels] * 6), classes * 6)
    assert many.shape == (18, 8, 8) and np.allclose(many[:3], maps, atol=1e-4)
    model = built(tmp_path)
    assert grad_cam(model, pixels[0], 0, layer="block2_pool").shape == (16, 16)
    with pytest.raises(UserError, match="explain_layer: 'nope': no such layer"):
        grad_cam(model, pixels[0], 0, layer="nope")
    path = write_overlay(tmp_path / "one.png", pixels[0], grad_cam(model, pixels[0], 1), "a title")
    assert Image.open(path).size[0] > 2 * Image.open(path).size[1]


@pytest.mark.slow
def test_multi_label_overlays_have_a_row_per_predicted_label_and_its_gallery_is_written(tmp_path):
    """Untrained, so the predictions are whatever they are: thresholds at 0 predict every label, at 1 none."""
    (tmp_path / "m.csv").write_text("path,label\nimg/0.png,red\n")
    model = built(tmp_path, data={"multi_label": True, "manifest": str(tmp_path / "m.csv")})
    names = ["blue", "green", "red"]
    rng = np.random.default_rng(2)
    images = {tmp_path / "img" / f"{i}.png": label_squares(("red",), rng, size=64) for i in range(2)}
    for path, pixels in images.items():
        write_image(path, pixels)
    keys = {path: str(path) for path in images}

    def heights(thresholds: tuple[float, ...], folder: Path) -> list[int]:
        source = ModelSource(
            None, names, (64, 64), 3, lambda x, b: np.asarray(model.predict_on_batch(x)), thresholds, model=model
        )
        explain = Explanations(model, prepare_explain_dir(folder), len(keys), names)
        result = predict_with(source, keys, explain=explain)
        assert [json.loads(json.dumps(p.to_dict(True)))["explanation"] for p in result.predictions] == [
            str(folder / f"{i}-{i - 1}.png") for i in (1, 2)
        ]
        return [Image.open(p.explanation).size[1] for p in result.predictions]

    every, none = heights((0.0, 0.0, 0.0), tmp_path / "every"), heights((1.0, 1.0, 1.0), tmp_path / "none")
    assert all(e > 2.5 * n for e, n in zip(every, none))  # three rows against one (the top class, said so)

    pixels = np.stack(list(images.values()))
    scored = Scored(
        np.asarray(model.predict_on_batch(pixels.astype("float32"))),
        np.array([[0, 0, 1], [0, 0, 1]]),
        [str(p) for p in images],
        names,
        pixels,
        (0.0, 0.0, 0.0),  # blue and green added wrongly in both images: four mistakes
        heatmaps_of=lambda x, classes: grad_cam(model, x, classes),
    )
    evaluation = write_evaluation(tmp_path / "run", scored, EvalSpec("manifest"))
    assert (evaluation.eval_dir / GALLERY).is_file()
