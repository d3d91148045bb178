"""Integration tests: the collection against a live simulated QKD network.

Run from the repository root with the collection importable: ``make integration`` sets
ANSIBLE_COLLECTIONS_PATH to the synced tree in .build; ansible-playbook runs from the same
virtual environment.
"""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS_PATH = os.environ.get('ANSIBLE_COLLECTIONS_PATH', os.path.join(REPO_ROOT, '.build')).split(os.pathsep)[0]
for path in (COLLECTIONS_PATH, REPO_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

from qkdsim.process import SimulatorProcess  # noqa: E402


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
