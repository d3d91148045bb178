"""Integration tests: the collection against a live simulated QKD network.

Run from the repository root with the collection importable: ``make integration`` sets
ANSIBLE_COLLECTIONS_PATH to the synced tree in .build; ansible-playbook runs from the same
virtual environment.
"""

import os
import re
import sys
import time

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS_PATH = os.environ.get('ANSIBLE_COLLECTIONS_PATH', os.path.join(REPO_ROOT, '.build')).split(os.pathsep)[0]
for path in (COLLECTIONS_PATH, REPO_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

from qkdsim.process import SimulatorProcess  # noqa: E402

# One simulator request line (format: tests/qkdsim/test_qkdsim_logging.py), for a 200 answer to enc_keys.
_ENC_KEYS_200 = re.compile(r'^\S+ \S+ INFO (?P<kme>\S+) (?P<caller>\S+) (?:GET|POST) /api/v1/keys/(?P<slave>[^/?\s]+)/enc_keys'
                           r'(?:\?\S*)? 200 keys=(?P<keys>\d+) \S+ms$')


def _enc_keys_logged(log_file, master_sae, slave_sae):
    with open(log_file) as handle:
        matches = (_ENC_KEYS_200.match(line.rstrip('\n')) for line in handle)
        return sum(int(match.group('keys')) for match in matches
                   if match and match.group('caller') == master_sae and match.group('slave') == slave_sae)


def enc_keys_served(simulator, master_sae, slave_sae, settle=0.3, timeout=2.0):
    """Keys the simulator has handed to master_sae for slave_sae (200 answers to enc_keys), from its request log.

    Unlike stored_key_count (pools refill within milliseconds) this only grows, so ``after == before`` proves that
    nothing was fetched in between. The server logs a request after answering it: the count is read until it has
    not changed for ``settle`` seconds (or ``timeout`` seconds have gone by).
    """
    deadline = time.monotonic() + timeout
    count = _enc_keys_logged(simulator['log_file'], master_sae, slave_sae)
    stable_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - stable_since < settle:
        time.sleep(0.05)
        latest = _enc_keys_logged(simulator['log_file'], master_sae, slave_sae)
        if latest != count:
            count, stable_since = latest, time.monotonic()
    return count


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
