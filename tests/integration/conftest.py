"""Integration tests: the collection against a live simulated QKD network.

Run from the repository root with the collection importable: ``make integration`` sets
ANSIBLE_COLLECTIONS_PATH to the synced tree in .build; ansible-playbook runs from the same
virtual environment.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS_PATH = os.environ.get('ANSIBLE_COLLECTIONS_PATH', os.path.join(REPO_ROOT, '.build')).split(os.pathsep)[0]
if COLLECTIONS_PATH not in sys.path:
    sys.path.insert(0, COLLECTIONS_PATH)


def start_simulator(state_dir, topology=None, timeout=30.0):
    """Start ``python -m qkdsim`` as a real process; return (process, manifest)."""
    state_dir = str(state_dir)
    command = [sys.executable, '-m', 'qkdsim', '--state-dir', state_dir,
               '--log-file', os.path.join(state_dir, 'qkdsim.log')]
    if topology:
        command += ['--topology', str(topology)]
    os.makedirs(state_dir, exist_ok=True)
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    endpoints = os.path.join(state_dir, 'endpoints.json')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError('qkdsim exited with %s: %s' % (process.returncode, process.stdout.read().decode()))
        try:
            with open(endpoints) as handle:
                manifest = json.load(handle)
            if manifest.get('pid') == process.pid:
                return process, manifest
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError('qkdsim did not write %s within %s s' % (endpoints, timeout))


def stop_simulator(process):
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()


@pytest.fixture(scope='session')
def simulator(tmp_path_factory):
    """The default five-site network, shared by the whole session. Yields its manifest."""
    state_dir = tmp_path_factory.mktemp('qkdsim')
    process, manifest = start_simulator(state_dir)
    manifest['endpoints_file'] = os.path.join(str(state_dir), 'endpoints.json')
    manifest['log_file'] = os.path.join(str(state_dir), 'qkdsim.log')
    yield manifest
    assert stop_simulator(process) == 0, 'qkdsim did not stop cleanly on SIGTERM'


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
