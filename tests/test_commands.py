"""The small commands: `datasets digits`, `layers`, `bases`, `config-reference`, `cache info|clear`, `weights list`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import make_image_folder, tiny_config, write_config
from PIL import Image


def test_datasets_digits_writes_the_quickstart_folders(cli, tmp_path):
    out = tmp_path / "digits"
    result = cli("datasets", "digits", out, "--target-train-per-class", "3")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (out / "source" / "train").iterdir()) == ["0", "1", "2", "3", "4"]
    assert sorted(p.name for p in (out / "target" / "train").iterdir()) == ["5", "6", "7", "8", "9"]
    assert all(len(list(folder.iterdir())) == 3 for folder in (out / "target" / "train").iterdir())
    total = sum(1 for _ in out.rglob("*.png"))
    assert total == 1797  # every bundled digit, once
    pixels = np.asarray(Image.open(next((out / "source" / "val" / "0").iterdir())))
    assert pixels.shape == (8, 8) and pixels.dtype == np.uint8 and pixels.max() > 200
    assert f"{out / 'target'}: train 15, val" in " ".join(result.stdout.split())
    again = cli("datasets", "digits", out, "--target-train-per-class", "3")
    assert again.exit_code == 0 and sum(1 for _ in out.rglob("*.png")) == total  # rerunning rewrites the same files
    refused = cli("datasets", "digits", out, "--target-train-per-class", "0")
    assert refused.exit_code == 2 and "--target-train-per-class" in refused.stderr


def test_layers_lists_the_base_from_the_top(cli, tmp_path):
    data = make_image_folder(tmp_path / "images", {"a": 4, "b": 4})
    config = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "runs"))
    result = cli("layers", config)
    assert result.exit_code == 0, result.stderr
    assert "SmallCNN: 15 layers" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "block1_conv1" in line]
    assert rows and "Conv2D" in rows[0] and " 14 " in f" {' '.join(rows[0].split())} "  # index 1, 14 from the top
    bad = cli("layers", config, "--set", "base.name=SmalCNN")
    assert bad.exit_code == 2 and "did you mean SmallCNN" in bad.stderr


def test_bases_lists_every_application_with_its_preprocessing(cli):
    result = cli("bases")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    for name, mode in (
        ("MobileNet", "tf"),
        ("ResNet50", "caffe"),
        ("DenseNet121", "torch"),
        ("EfficientNetB0", "none"),
        ("SmallCNN", "unit"),
    ):
        assert f"{name} {mode}" in text or f"{name} │ {mode}" in text, name


def test_config_reference_is_the_docs_table(cli):
    from conftest import ROOT

    result = cli("config-reference")
    assert result.exit_code == 0
    assert result.stdout.startswith("| key | default | meaning |")
    assert result.stdout in (ROOT / "docs" / "reference" / "config.md").read_text(encoding="utf-8")


def test_cache_info_and_clear(cli, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("TLCLI_CACHE_DIR", str(cache))
    empty = json.loads(cli("cache", "info", "--json").stdout)
    assert empty["folder"] == str(cache) and empty["bytes"] == 0 and empty["entries"] == []

    data = make_image_folder(tmp_path / "images", {"a": 6, "b": 6})
    source = tiny_config(data, tmp_path / "runs", name="source", train={"epochs": 1})
    assert cli("train", write_config(tmp_path / "s.yaml", source), "--quiet").exit_code == 0
    target = tiny_config(data, tmp_path / "runs", name="target", train={"epochs": 1})
    target["base"] = {"run": "source", "trainable": "none"}
    assert cli("train", write_config(tmp_path / "t.yaml", target), "--quiet").exit_code == 0

    info = json.loads(cli("cache", "info", "--json").stdout)
    [entry] = info["entries"]
    assert (
        entry["files"] == 12
        and entry["base"] == "SmallCNN"
        and entry["cut"] == "pool"
        and entry["image_size"] == [16, 16]
    )
    assert info["bytes"] > 0 and info["cap_bytes"] > info["bytes"]
    table = cli("cache", "info")
    assert table.exit_code == 0 and entry["key"][:12] in table.stdout and "1 model key(s)" in table.stdout

    cleared = cli("cache", "clear")
    assert cleared.exit_code == 0 and f"cleared {cache / 'features'}" in cleared.stdout
    assert json.loads(cli("cache", "info", "--json").stdout)["entries"] == []
    assert not (cache / "features").exists()


def test_weights_list_shows_the_keras_cache(cli, isolated_caches, tmp_path):
    empty = json.loads(cli("weights", "list", "--json").stdout)
    assert empty == {"folder": str(isolated_caches / "models"), "files": []}
    weights = tmp_path / "mobilenet_2_5_224_tf_no_top.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 2_000_000)
    assert cli("weights", "import", weights).exit_code == 0
    listed = json.loads(cli("weights", "list", "--json").stdout)
    assert listed["files"] == [str(isolated_caches / "models" / weights.name)]
    table = cli("weights", "list")
    assert f"{isolated_caches / 'models'}: 1 file(s)" in table.stdout and f"{weights.name}  2.0 MB" in table.stdout
    assert not [p for p in Path(isolated_caches / "models").iterdir() if p.name.startswith(".")]  # no partial copy left


def test_library_errors_name_the_argument_and_the_cli_the_flag(cli, tmp_path):
    """A Python caller passed no flag: the library names its argument; the CLI prints the flag the user typed."""
    import pytest

    from tlcli.errors import UserError
    from tlcli.training.launcher import launch

    with pytest.raises(UserError, match=r"^workers: a cluster needs at least 2 workers"):
        launch(["train", "cfg.yaml"], 1)
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "images", tmp_path / "runs"))
    result = cli("train", config, "--workers", "1", "--json")
    assert result.exit_code == 2 and result.stderr.startswith("error: --workers: a cluster needs at least 2")
    assert json.loads(result.stdout)["error"].startswith("--workers: ")
    refused = cli("train", config, "--device", "tpu")
    assert refused.exit_code == 2 and "error: --device: expected auto, cpu or gpu, got 'tpu'" in refused.stderr


def test_each_invocation_has_its_own_output(cli, tmp_path):
    """A JSON document printed by one command does not silence the next one's error document."""
    cache = cli("cache", "info", "--json")
    assert cache.exit_code == 0 and json.loads(cache.stdout)
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "images", tmp_path / "runs"))
    failed = cli("train", config, "--workers", "1", "--json")
    assert failed.exit_code == 2 and json.loads(failed.stdout)["exit_code"] == 2


def test_import_tlcli_loads_no_stage_until_a_name_is_used():
    """The package root is lazy (PEP 562): `import tlcli` loads no stage; a public name loads its own module."""
    import subprocess
    import sys

    code = (
        "import sys, tlcli; before = sorted(m for m in sys.modules if m.startswith('tlcli.'));"
        "tlcli.list_runs; print(before, 'tlcli.runs.listing' in sys.modules, 'tlcli.training' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["['tlcli.lazy',", "'tlcli.version']", "True", "False"], out
