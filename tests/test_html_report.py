"""report.html: one self-contained page per run and per evaluation, checked as text and in a real headless Chromium.

The browser tests drive Debian's `chromium` through its `chromedriver` with selenium (no browser is downloaded at
test time). Without them the browser tests skip; under CI=true they fail (`.ci/run` installs both).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tlcli import evaluate, write_report

SECTIONS = ("summary", "config", "data", "training", "evaluation", "provenance")
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def assert_self_contained(page: str) -> None:
    """Nothing to fetch, nothing to run: every image is a data URI with alt text."""
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page refers to the network"
    images = re.findall(r"<img\b[^>]*>", page)
    assert images
    for tag in images:
        assert re.search(r'src="data:image/(png|jpeg);base64,', tag), tag[:80]
        assert re.search(r'alt="[^"]+"', tag), "an image without alt text"


def test_train_writes_a_self_contained_report_with_every_section(binary_run):
    page = (binary_run / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    for section in SECTIONS:
        assert f'<section id="{section}"' in page
    assert "curves.png" in page and "confusion_matrix.png" in page and "reliability.png" in page
    assert "cats" in page and "dogs" in page  # the per-class table and the data counts
    assert "(0." in page or "(1." in page  # figures with their 95% intervals
    assert '<span class="ok">none</span>' in page  # status said in words, not colour alone


def test_an_older_run_without_the_new_files_still_renders(binary_run, run_copy):
    run = run_copy(binary_run, ignore=shutil.ignore_patterns("model.keras", "tensorboard", "checkpoints"))
    for name in ("data_trust.json", "data_problems.json", "env.json", "curves.png", "report.html"):
        (run / name).unlink(missing_ok=True)
    shutil.rmtree(run / "eval")
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("intervals", "format_version", "data_trust", "linear_probe"):
        metrics.pop(key, None)
    (run / "metrics.json").write_text(json.dumps(metrics))
    page = write_report(run).read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}"' in page
    for line in ("No curves.png", "No env.json", "No data_problems.json", "No evaluation folder under eval/"):
        assert line in page


def test_a_file_of_another_shape_costs_its_section_one_line(binary_run, run_copy):
    run = run_copy(binary_run, ignore=shutil.ignore_patterns("model.keras", "tensorboard", "checkpoints"))
    (run / "dataset.json").write_text("[1, 2]")  # edited by hand into another shape
    page = write_report(run).read_text(encoding="utf-8")
    assert page.count("This section could not be drawn") == 1
    assert "confusion_matrix.png" in page and "tensorflow" in page  # the other sections are whole


def test_tlcli_report_rebuilds_the_page(binary_run, run_copy, cli):
    run = run_copy(binary_run, ignore=shutil.ignore_patterns("model.keras", "tensorboard", "checkpoints"))
    (run / "report.html").unlink()
    result = cli("report", run, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"report": str(run / "report.html")}
    assert_self_contained((run / "report.html").read_text(encoding="utf-8"))
    refused = cli("report", run / "splits")
    assert refused.exit_code == 2 and "not a run folder" in refused.stderr


@pytest.fixture(scope="module")
def evaluated(binary_run, tmp_path_factory):
    """A copy of the binary run evaluated by `tlcli evaluate` (its eval folder has report.html)."""
    run = Path(shutil.copytree(binary_run, tmp_path_factory.mktemp("report") / binary_run.name))
    return evaluate(run, split="val")


def test_evaluate_writes_a_report_into_its_folder(evaluated):
    page = (evaluated.eval_dir / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "the report of one evaluation of the run" in page


def test_output_report_false_turns_the_evaluation_page_off(binary_run, run_copy):
    run = run_copy(binary_run, ignore=shutil.ignore_patterns("tensorboard", "checkpoints"))
    config = (run / "config.yaml").read_text()
    assert "report: true" in config
    (run / "config.yaml").write_text(config.replace("report: true", "report: false"))
    assert not (evaluate(run, split="val", explain=False).eval_dir / "report.html").exists()


# ----------------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium through selenium; skipped when absent, failed under CI=true (.ci/run installs it)."""
    missing = next(
        (
            f"{p} is not installed (apt-get install chromium chromium-driver)"
            for p in (CHROMIUM, CHROMEDRIVER)
            if not p.is_file()
        ),
        None,
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing = missing or "selenium is not installed (the test extra has it)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), service_args=["--log-level=OFF"]), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(20)
        yield driver
    finally:
        driver.quit()


def distinct_colours(png: bytes) -> int:
    from PIL import Image

    return len(Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 20) or ())


@pytest.mark.parametrize("which", ["run", "evaluation"])
def test_the_report_renders_in_chromium(browser, binary_run, evaluated, which):
    page = binary_run / "report.html" if which == "run" else evaluated.eval_dir / "report.html"
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(page.as_uri())
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
    )
    assert len(images) >= 4  # curves, confusion matrix, reliability, mistakes (and the heatmaps when there are any)
    assert all(complete and width > 0 and height > 0 for _, complete, width, height in images), images
    assert all(alt for alt, *_ in images)
    sections = browser.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
    assert sections == list(SECTIONS)
    assert distinct_colours(browser.get_screenshot_as_png()) > 50  # text and pictures, not a blank page


def test_dark_mode_turns_the_page_dark(browser, binary_run):
    browser.get((binary_run / "report.html").as_uri())
    scheme = {"media": "", "features": [{"name": "prefers-color-scheme", "value": "dark"}]}
    try:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", scheme)
        background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "", "features": []})
    red, green, blue = map(int, re.findall(r"\d+", background)[:3])
    assert red + green + blue < 150, background  # dark, and the text (a light colour) stays readable on it


@pytest.mark.slow
def test_output_report_false_writes_neither_the_page_nor_the_model_card(tmp_path):
    from conftest import make_image_folder, tiny_config

    from tlcli import train
    from tlcli.config import load_config

    make_image_folder(tmp_path / "data" / "train", {"a": 8, "b": 8}, seed=1)
    config = tiny_config(tmp_path / "data", tmp_path / "runs", output={"report": False}, train={"epochs": 1})
    run_dir = train(load_config(config)).run_dir
    assert (run_dir / "metrics.json").is_file()
    assert not (run_dir / "report.html").exists() and not (run_dir / "MODEL_CARD.md").exists()
