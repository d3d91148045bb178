"""Real strongSwan charons for the integration tests, each in its own mount and network namespace.

Used by test_role_strongswan_site.py (one role, two sites) and test_full_mesh_push.py (the whole
playbook, three sites). They need the Debian packages in PACKAGES and root for unshare; `skip_reason`
says why a machine cannot run them, and the tests skip with that reason.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

CHARON = '/usr/lib/ipsec/charon'
PACKAGES = 'strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins'

CHARON_CONF = '''\
charon {
    load_modular = no
    load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey sha1 sha2 hmac aes gcm gmp kdf kernel-libipsec kernel-netlink socket-default vici updown
    plugins {
        vici {
            socket = unix://%(dir)s/charon.vici
        }
    }
    filelog {
        main {
            path = %(dir)s/charon.log
            flush_line = yes
            default = 1
            ike = 2
        }
    }
}
swanctl {
    load = pem pkcs1 pkcs8 x509 pubkey random nonce openssl
}
'''

# IKE SAs in `swanctl --list-sas --raw` output: connection, uniqueid, state, the rest of the line.
IKE_SA_RE = re.compile(r'(?m)^list-sa event \{(\S+) \{uniqueid=(\d+) version=\d+ state=(\S+)(.*)$')


def read(path):
    with open(str(path)) as handle:
        return handle.read()


def skip_reason():
    """Why real charons cannot run here, or None."""
    if not (os.access(CHARON, os.X_OK) and shutil.which('swanctl')):
        return 'strongSwan is not installed (Debian packages: %s)' % PACKAGES
    for plugin in ('kernel-libipsec', 'openssl', 'gcm', 'vici'):
        if not os.path.exists('/usr/lib/ipsec/plugins/libstrongswan-%s.so' % plugin):
            return 'strongSwan plugin %s is missing (Debian packages: %s)' % (plugin, PACKAGES)
    if subprocess.run(['unshare', '--mount', '--net', 'true'], check=False).returncode != 0:
        return 'unshare --mount --net is not permitted here (needs root)'
    return None


class Charon:
    """One charon in its own mount namespace (a tmpfs over /run for its fixed pid file) and network
    namespace, with its own strongswan.conf and VICI socket in `directory`."""

    def __init__(self, directory):
        self.dir = str(directory)
        os.makedirs(self.dir)
        self.conf = os.path.join(self.dir, 'strongswan.conf')
        with open(self.conf, 'w') as handle:
            handle.write(CHARON_CONF % {'dir': self.dir})
        self.socket = os.path.join(self.dir, 'charon.vici')
        self.uri = 'unix://' + self.socket
        self.log = os.path.join(self.dir, 'charon.log')
        with open(os.path.join(self.dir, 'charon.out'), 'w') as out:
            self.process = subprocess.Popen(
                ['unshare', '--mount', '--net', '--propagation', 'private', 'sh', '-c',
                 'mount -t tmpfs tmpfs /run && ip link set lo up && exec %s' % CHARON],
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
        env = dict(os.environ, STRONGSWAN_CONF=self.conf)
        if swanctl_dir:
            env['SWANCTL_DIR'] = str(swanctl_dir)
        done = subprocess.run(['swanctl', args[0], '--uri', self.uri] + list(args[1:]), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30, check=False)
        output = done.stdout.decode()
        assert done.returncode == 0, output
        return output

    def ike_sas(self):
        """[(connection, uniqueid, state, ppk)] of the IKE SAs."""
        return [(m[0], int(m[1]), m[2], ' ppk=yes' in m[3])
                for m in IKE_SA_RE.findall(self.swanctl('--list-sas', '--raw'))]

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
        for charon in self.started:
            charon.stop()


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
