"""qkdsim and testbed as installed packages (pyproject.toml, installed into the venv by ``make venv``): the
console scripts exist and run from any directory, and the built-in topology ships as package data."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

SCRIPTS = {"qkdsim": "qkdsim.__main__:main", "qkdsim-control": "qkdsim.control:main", "testbed": "testbed.__main__:main"}


def script(name: str) -> Path:
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{name} is not installed next to {sys.executable} (make venv installs pyproject.toml)"
    return path


def test_the_console_scripts_are_declared_and_installed():
    declared = {entry.name: entry.value for entry in metadata.entry_points(group="console_scripts") if entry.name in SCRIPTS}
    assert declared == SCRIPTS
    for name in SCRIPTS:
        script(name)


@pytest.mark.parametrize("name, usage", [("qkdsim", "usage: qkdsim "), ("qkdsim-control", "usage: qkdsim-control "),
                                         ("testbed", "usage: testbed ")])
def test_each_console_script_runs_outside_the_repository(tmp_path, name, usage):
    done = subprocess.run([str(script(name)), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and done.stdout.startswith(usage), done.stdout + done.stderr


def test_qkdsim_serves_the_builtin_topology_from_any_directory(tmp_path):
    """The console script in an empty directory: the packages and default_topology.yml come from the install."""
    state = tmp_path / "state"
    process = subprocess.Popen([str(script("qkdsim")), "--state-dir", str(state), "--log-file", str(tmp_path / "log")],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        endpoints = None
        while endpoints is None and time.monotonic() < deadline and process.poll() is None:
            try:
                endpoints = json.loads((state / "endpoints.json").read_text())
            except (OSError, ValueError):
                time.sleep(0.05)
        assert endpoints is not None, process.stderr.read() if process.poll() is not None else "no endpoints.json"
        assert "KME-MAD-1" in endpoints["kmes"] and endpoints["pid"] == process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        process.stdout.close()
        process.stderr.close()


def test_python_m_still_runs_the_packages(tmp_path):
    for module in ("qkdsim", "qkdsim.control", "testbed"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0 and done.stdout.startswith(f"usage: python -m {module} "), done.stdout + done.stderr
