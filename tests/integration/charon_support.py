"""Real strongSwan charons for the integration tests, each in its own mount and network namespace.

Used by test_role_strongswan_site.py (one role, two sites) and test_full_mesh_push.py (the whole
playbook, three sites). They need the Debian packages in PACKAGES and root for unshare; `skip_reason`
says why a machine cannot run them, and the tests skip with that reason. The charon binary, its
strongswan.conf, swanctl and the IKE SA parser are the testbed package's (testbed/charon.py).
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from testbed import charon

PACKAGES = charon.DEBIAN_PACKAGES


def read(path):
    with open(str(path)) as handle:
        return handle.read()


def skip_reason():
    """Why real charons cannot run here, or None."""
    reason = charon.missing()
    if reason:
        return reason
    if subprocess.run(['unshare', '--mount', '--net', 'true'], check=False).returncode != 0:
        return 'unshare --mount --net is not permitted here (needs root)'
    return None


class Charon:
    """One charon in its own mount namespace (a tmpfs over /run for its fixed pid file) and network
    namespace, with its own strongswan.conf and VICI socket in `directory`."""

    def __init__(self, directory):
        self.dir = str(directory)
        os.makedirs(self.dir)
        self.conf = charon.write_conf(self.dir)
        self.socket = os.path.join(self.dir, 'charon.vici')
        self.uri = 'unix://' + self.socket
        self.log = os.path.join(self.dir, 'charon.log')
        with open(os.path.join(self.dir, 'charon.out'), 'w') as out:
            self.process = subprocess.Popen(
                ['unshare', '--mount', '--net', '--propagation', 'private', 'sh', '-c',
                 'mount -t tmpfs tmpfs /run && ip link set lo up && exec %s' % charon.CHARON],
                env=dict(os.environ, STRONGSWAN_CONF=self.conf), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail('charon did not start: ' + read(os.path.join(self.dir, 'charon.out')))
            time.sleep(0.02)

    def netns(self, command):
        subprocess.run(['nsenter', '-t', str(self.process.pid), '-n', 'sh', '-ec', command], check=True)

    def swanctl(self, *args, swanctl_dir=None):
        done = charon.swanctl(self.uri, self.conf, *args, swanctl_dir=swanctl_dir)
        assert done.returncode == 0, done.stdout
        return done.stdout

    def ike_sas(self):
        """[(connection, uniqueid, state, ppk)] of the IKE SAs."""
        return [(sa['peer'], sa['uniqueid'], sa['state'], sa['ppk']) for sa in charon.ike_sas(self.swanctl('--list-sas', '--raw'))]

    def send_udp(self, source, destination):
        """One UDP datagram from `source` to port 9 of `destination`, both inner addresses."""
        self.netns('%s -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); '
                   's.bind((\'%s\', 0)); s.sendto(b\'ping\', (\'%s\', 9))"' % (sys.executable, source, destination))

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


class Charons:
    """Starts charons in subdirectories of `directory` and stops all of them (fixtures' teardown)."""

    def __init__(self, directory):
        reason = skip_reason()
        if reason:
            pytest.skip(reason)
        self.directory = directory
        self.started = []

    def start(self, name):
        self.started.append(Charon(self.directory / ('charon-' + name)))
        return self.started[-1]

    def stop(self):
        for started in self.started:
            started.stop()


def join(charon_a, charon_b, device_a, device_b):
    """A veth pair between the network namespaces of two charons (both ends down, no address)."""
    subprocess.run(['ip', 'link', 'add', device_a, 'netns', str(charon_a.process.pid), 'type', 'veth',
                    'peer', 'name', device_b, 'netns', str(charon_b.process.pid)], check=True)


def wait_for(condition, what, timeout=10):
    """The first true value of condition(), polled until `timeout` seconds have gone by (then fails)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, 'timed out waiting for ' + what
        time.sleep(0.05)
