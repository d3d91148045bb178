"""strongSwan's charon as the testbed (and the integration tests: tests/integration/charon_support.py) run it:
the binary and its Debian packages, a strongswan.conf with its own VICI socket and log, swanctl against
that socket, and the IKE SAs read back from ``swanctl --list-sas --raw``.
"""

import os
import re
import shutil
import subprocess

CHARON = '/usr/lib/ipsec/charon'
DEBIAN_PACKAGES = 'strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins'
PLUGINS = ('kernel-libipsec', 'openssl', 'gcm', 'vici')

STRONGSWAN_CONF = '''\
charon {
    # each pending VICI initiate holds a worker thread until its SA is up: keep threads for IKE
    threads = 32
    load_modular = no
    # kernel-libipsec before kernel-netlink: ESP in user space (this kernel has no ESP)
    load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey sha1 sha2 hmac aes gcm gmp kdf kernel-libipsec kernel-netlink socket-default vici updown
    plugins {
        vici {
            socket = unix://%(dir)s/charon.vici
        }
    }
    filelog {
        main {
            path = %(dir)s/charon.log
            time_format = %%s
            time_add_ms = yes
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

# `swanctl --list-sas --raw`: one line per IKE SA.
IKE_SA_RE = re.compile(r'(?m)^list-sa event \{(\S+) \{uniqueid=(\d+) version=\d+ state=(\S+)(.*)$')
CHILD_PACKETS_RE = re.compile(r'state=INSTALLED .*?packets-in=(\d+) .*?packets-out=(\d+)')
# charon.log lines with time_format %s and time_add_ms: "1732479000.123 07[IKE] ..."
LOG_TIME_RE = r'^(\d+\.\d{3}) \d+'


def missing():
    """Why strongSwan cannot run here (charon, swanctl or a plugin is missing), or None."""
    if not (os.access(CHARON, os.X_OK) and shutil.which('swanctl')):
        return 'strongSwan is not installed (Debian packages: %s)' % DEBIAN_PACKAGES
    for plugin in PLUGINS:
        if not os.path.exists('/usr/lib/ipsec/plugins/libstrongswan-%s.so' % plugin):
            return 'strongSwan plugin %s is missing (Debian packages: %s)' % (plugin, DEBIAN_PACKAGES)
    return None


def write_conf(directory, write=None):
    """``<directory>/strongswan.conf`` for a charon whose VICI socket (charon.vici) and log (charon.log) are in
    ``directory``; returns its path. ``write(path, text)`` writes it (default: a plain write)."""
    path = os.path.join(str(directory), 'strongswan.conf')
    text = STRONGSWAN_CONF % {'dir': str(directory)}
    if write:
        write(path, text)
    else:
        with open(path, 'w') as handle:
            handle.write(text)
    return path


def swanctl(uri, conf, *args, swanctl_dir=None, timeout=30):
    """``swanctl ARGS[0] --uri URI ARGS[1:]`` with ``conf`` as STRONGSWAN_CONF (and SWANCTL_DIR when given);
    the CompletedProcess, stdout and stderr together as text. Never raises on a failed command."""
    env = dict(os.environ, STRONGSWAN_CONF=str(conf))
    if swanctl_dir:
        env['SWANCTL_DIR'] = str(swanctl_dir)
    return subprocess.run(['swanctl', args[0], '--uri', uri] + list(args[1:]), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)


def ike_sas(output):
    """[dict(peer, uniqueid, state, ppk, child_installed, packets_in, packets_out)] of ``swanctl --list-sas --raw``
    output, in swanctl's order."""
    sas = []
    for peer, uniqueid, state, rest in IKE_SA_RE.findall(output):
        packets = CHILD_PACKETS_RE.search(rest)
        sas.append(dict(peer=peer, uniqueid=int(uniqueid), state=state, ppk=' ppk=yes' in rest,
                        child_installed=packets is not None,
                        packets_in=int(packets.group(1)) if packets else 0,
                        packets_out=int(packets.group(2)) if packets else 0))
    return sas
