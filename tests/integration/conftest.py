"""Integration tests: the collection against a live simulated QKD network.

Run from the repository root with the collection importable: ``make integration`` sets
ANSIBLE_COLLECTIONS_PATH to the synced tree in .build (pyproject.toml's pytest section puts .build and this
directory on the import path); ansible-playbook runs from the same virtual environment, where ``make venv``
installed qkdsim and testbed. Helpers the test modules share live in *_support.py next to them; the
fixtures they share are here.
"""

import shutil

import pytest

from playbook_support import PAPER
from qkdsim.process import SimulatorProcess


@pytest.fixture(scope='session')
def simulator(tmp_path_factory):
    """The default five-site network, shared by the whole session. Yields its manifest."""
    process = SimulatorProcess(tmp_path_factory.mktemp('qkdsim'))
    manifest = dict(process.endpoints, endpoints_file=str(process.endpoints_file), log_file=str(process.log_file))
    yield manifest
    assert process.stop() == 0, 'qkdsim did not stop cleanly on SIGTERM'


@pytest.fixture
def misbehaving_kme(tmp_path):
    """Factory: a TLS server that misbehaves as asked (see misbehaving_kme.BEHAVIOURS)."""
    from misbehaving_kme import MisbehavingKME
    servers = []

    def start(behaviour, **kwargs):
        directory = tmp_path / ('kme-%d' % len(servers))
        directory.mkdir()
        servers.append(MisbehavingKME(directory, behaviour, **kwargs))
        return servers[-1]
    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def mesh(simulator, tmp_path):
    """A copy of the paper inventory, a key store and an output directory (run it with playbook_support.run)."""
    inventory = tmp_path / 'inventory'
    shutil.copytree(PAPER, str(inventory))
    return dict(inventory=inventory, store=tmp_path / 'store', out=tmp_path / 'out', simulator=simulator)
