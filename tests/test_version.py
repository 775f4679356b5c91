"""`tlcli --version` (package metadata, no TensorFlow), `tlcli env` (devices), and shell completion."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.subprocess
def test_version_prints_every_version_without_importing_tensorflow():
    code = (
        "import contextlib, io, sys\n"
        "from tlcli.cli import run\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    code = run(['--version'])\n"
        "print(code, 'tensorflow' in sys.modules or 'keras' in sys.modules, out.getvalue().strip())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    code, imported, line = done.stdout.strip().split(" ", 2)
    assert (code, imported) == ("0", "False"), done.stderr[-2000:]
    from tlcli import __version__

    assert line.startswith(f"tlcli {__version__} (Python ") and "TensorFlow 2." in line and "Keras 3." in line


def test_versions_come_from_package_metadata():
    from tlcli.version import versions

    found = versions()
    assert found.tlcli and found.python.count(".") == 2 and found.tensorflow and found.keras
    assert set(found.to_dict()) == {"tlcli", "python", "tensorflow", "keras"}


# Typer detects the shell from the parent processes (shellingham), which CI does not have: this switch of Typer's
# takes the shell named on the command line instead.
DETECTION_OFF = "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"


def test_show_completion_prints_a_bash_script(cli, monkeypatch):
    monkeypatch.setenv("SHELL", "/bin/bash")
    monkeypatch.setenv(DETECTION_OFF, "1")
    result = cli("--show-completion", "bash")
    assert result.exit_code == 0
    assert "complete -o default -F _tlcli_completion tlcli" in result.stdout and "_TLCLI_COMPLETE" in result.stdout


def test_env_json_lists_versions_and_devices(cli, monkeypatch):
    """The plumbing, without TensorFlow's import (seconds): the GPUs TensorFlow would list are stubbed."""
    from tlcli.cli import about
    from tlcli.modeling import environment
    from tlcli.modeling.devices import GpuInfo

    monkeypatch.setattr(about, "_import_tensorflow", lambda debug: None)
    monkeypatch.setattr(environment, "visible_gpus", lambda: [GpuInfo("Tesla T4", (7, 5))])
    result = cli("env", "--json")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["versions"]["tensorflow"] and found["gpus"] == [{"name": "Tesla T4", "compute_capability": [7, 5]}]
    assert found["devices"].startswith("1 GPU (Tesla T4)")
    assert found["keras_weights_dir"].endswith("models") and found["cpus"] >= 1


def test_install_completion_writes_the_script_and_sources_it(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SHELL", "/bin/bash")
    monkeypatch.setenv(DETECTION_OFF, "1")
    result = cli("--install-completion", "bash")
    assert result.exit_code == 0, result.stderr
    script = tmp_path / ".bash_completions" / "tlcli.sh"
    assert "_TLCLI_COMPLETE" in script.read_text() and f"source '{script}'" in (tmp_path / ".bashrc").read_text()
