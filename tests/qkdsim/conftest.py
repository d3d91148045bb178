"""Fixtures for the qkdsim tests: simulators run as real ``python -m qkdsim`` processes.

Run from the repository root: ``python -m pytest tests/qkdsim`` (``make sim-tests``), with qkdsim installed
(``make venv``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qkdsim_support import LAB_TOPOLOGY, SaeClient, key_in_text
from qkdsim.process import SimulatorProcess


@pytest.fixture(scope="session")
def seen_keys() -> list[str]:
    """Base64 of every key any test received (the log must contain none of them)."""
    return []


def _running(state_dir: Path, topology: Path | None, seen: list[str]):
    simulator = SimulatorProcess(state_dir, topology)
    yield simulator
    assert simulator.stop() == 0, "qkdsim did not exit 0 on SIGTERM"
    assert not simulator.endpoints_file.exists(), "endpoints.json left behind after a clean stop"
    log = simulator.log_file.read_text()
    leaked = [key for key in seen if key_in_text(key, log)]
    assert not leaked, f"{len(leaked)} keys appear in {simulator.log_file}"


@pytest.fixture(scope="session")
def default_sim(tmp_path_factory, seen_keys):
    """The built-in five-site network, for the whole session."""
    yield from _running(tmp_path_factory.mktemp("qkdsim-default"), None, seen_keys)


@pytest.fixture(scope="session")
def lab_sim(tmp_path_factory, seen_keys):
    """The lab network of lab_topology.yml (one link per behaviour), for the whole session."""
    yield from _running(tmp_path_factory.mktemp("qkdsim-lab"), LAB_TOPOLOGY, seen_keys)


@pytest.fixture
def sae(seen_keys):
    """Factory: ``sae(simulator, "SAE-X")`` -> SaeClient of that SAE."""
    clients: list[SaeClient] = []

    def make(simulator: SimulatorProcess, sae_id: str, cert: tuple[str, str] | None = None) -> SaeClient:
        clients.append(SaeClient(simulator.endpoints, sae_id, seen_keys, cert))
        return clients[-1]
    yield make
    for client in clients:
        client.session.close()
