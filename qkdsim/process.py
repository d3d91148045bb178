"""Run the simulator as a separate process: what tests, benchmarks and tools use to start one.

``SimulatorProcess(state_dir, topology)`` starts ``python -m qkdsim`` (the installed package:
``make venv`` installs it) and returns once ``endpoints.json`` names its pid (the readiness signal); ``stop()`` sends
SIGTERM and returns the exit code.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


class SimulatorProcess:
    """``python -m qkdsim`` in a subprocess, ready once endpoints.json names its pid."""

    def __init__(self, state_dir: Path | str, topology: Path | str | None = None, timeout: float = 20.0,
                 python: str = sys.executable):
        self.state_dir = Path(state_dir)
        self.log_file = self.state_dir / "qkdsim.log"
        self.endpoints_file = self.state_dir / "endpoints.json"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [python, "-m", "qkdsim", "--state-dir", str(state_dir), "--log-file", str(self.log_file)]
        if topology:
            command += ["--topology", str(topology)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.endpoints = self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"qkdsim exited with {self.process.returncode}: {self.process.stderr.read()}")
            try:
                endpoints = json.loads(self.endpoints_file.read_text())
                if endpoints.get("pid") == self.process.pid:
                    return endpoints
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        self.process.kill()
        raise RuntimeError(f"qkdsim wrote no endpoints.json within {timeout} s")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Send ``signum``; return the exit code (the process is killed if it outlives ``timeout``)."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self.process.stdout.close()
            self.process.stderr.close()
