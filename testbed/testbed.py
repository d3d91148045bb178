"""The testbed: N sites, each a network namespace with its own charon, on one bridge, keyed from qkdsim.

Layout (all inside namespaces the testbed creates; nothing on the host's interfaces or routes):

* ``<prefix>-core``: a bridge ``br0`` with one veth port ``p<NNN>`` per site;
* ``<prefix>-site-NNN``: ``eth0`` (the other veth end) with the site's underlay address
  198.18.0.NNN/15, ``lo`` with its tunnel (inner) address 100.64.0.NNN/32, and a charon
  (kernel-libipsec: ESP in user space through the TUN device ipsec0) with its own strongswan.conf,
  VICI socket and a private /run for its pid file;
* one ``python -m qkdsim`` on 127.0.0.1 (host namespace) with a KME per site and a QKD link per pair.

Everything the testbed starts or creates is recorded in ``<state_dir>/testbed.json`` before the next
step runs, so ``down()`` removes exactly that, also after a failure halfway; ``down()`` then also sweeps
every namespace named ``<prefix>-core`` / ``<prefix>-site-NNN`` (and the processes in them).
"""

import concurrent.futures
import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import yaml

from testbed import netns

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARON = '/usr/lib/ipsec/charon'
DEBIAN_PACKAGES = 'strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins'
MAX_SITES = 50
PREFIX_RE = re.compile(r'^[a-z][a-z0-9]{0,11}$')
STATE_FILE = 'testbed.json'
MARKER_FILE = '.qsafe-testbed'   # written first: down removes a state directory only when it holds this
SWANCTL_TIMEOUT = 10
# A VICI initiate holds one of charon's worker threads until its SA is up; too many at once into
# one charon leave none to process the IKE messages themselves (seen at 20 sites: 10 s stalls).
INITIATES_PER_SITE = 4
DEFAULT_POLICY = 'qkd+pqc'
POLICY_NAME_RE = re.compile(r'^[a-z0-9]+(\+[a-z0-9]+)*$')
ON_MISSING = ('fail', 'degrade')

CHARON_CONF = '''\
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


class TestbedError(Exception):
    """A testbed step failed; the message says which and why."""


def skip_reason():
    """Why this machine cannot run the testbed, or None."""
    if not sys.platform.startswith('linux'):
        return 'the testbed needs Linux network namespaces'
    if os.geteuid() != 0:
        return 'the testbed needs root (network namespaces, veth pairs, mounts)'
    if not (os.access(CHARON, os.X_OK) and shutil.which('swanctl')):
        return 'strongSwan is not installed (Debian packages: %s)' % DEBIAN_PACKAGES
    for plugin in ('kernel-libipsec', 'openssl', 'gcm', 'vici'):
        if not os.path.exists('/usr/lib/ipsec/plugins/libstrongswan-%s.so' % plugin):
            return 'strongSwan plugin %s is missing (Debian packages: %s)' % (plugin, DEBIAN_PACKAGES)
    if not os.path.exists('/dev/net/tun'):
        return '/dev/net/tun is missing (kernel-libipsec needs a TUN device)'
    if shutil.which('ip') is None:
        return 'iproute2 (ip) is not installed'
    return None


def site_name(index):
    return 'site-%03d' % index


def _generator():
    spec = importlib.util.spec_from_file_location('generate_mesh_inventory',
                                                  os.path.join(REPO_ROOT, 'tools', 'generate_mesh_inventory.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_atomic(path, text, mode=0o644):
    temporary = '%s.%d.tmp' % (path, os.getpid())
    with open(temporary, 'w') as handle:
        handle.write(text)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().split(') ', 1)[1][0] != 'Z'
    except OSError:
        return False


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def _reap(pids, timeout):
    """Wait up to ``timeout`` seconds for ``pids`` to end, reaping those that are our children."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.02)


def _terminate(pids, timeout=5.0):
    """SIGTERM to each live pid, SIGKILL to those still alive after ``timeout`` seconds; waits for them."""
    pids = [pid for pid in pids if _alive(pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _reap(pids, timeout)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _reap(pids, timeout)


class Phases:
    """Wall time of named phases, in order."""

    def __init__(self):
        self.seconds = {}

    def timed(self, name):
        phases = self

        class _Timer:
            def __enter__(self):
                self.started = time.perf_counter()

            def __exit__(self, *exc):
                phases.seconds[name] = phases.seconds.get(name, 0.0) + time.perf_counter() - self.started
        return _Timer()


def check_policy(policy):
    """Raise TestbedError unless ``policy`` has the shape of a link policy: a name of sources joined by '+'
    (``qkd+pqc``, ``pqc``, ...) or ``{require: [source, ...], on_missing: fail|degrade}``. full_mesh.yml's plan
    checks the sources themselves and names an unknown one."""
    if isinstance(policy, str):
        if POLICY_NAME_RE.match(policy):
            return
        raise TestbedError('policy %r: a policy name is sources joined by "+", e.g. qkd+pqc' % (policy,))
    if isinstance(policy, dict):
        unknown = sorted(set(policy) - {'require', 'on_missing'})
        required = policy.get('require')
        if unknown:
            raise TestbedError('policy: unknown field(s) %s (a policy dict has require and on_missing)' % ', '.join(unknown))
        if not isinstance(required, list) or not required or not all(isinstance(item, str) and item for item in required):
            raise TestbedError('policy: require must be a non-empty list of source names, got %r' % (required,))
        if policy.get('on_missing', 'fail') not in ON_MISSING:
            raise TestbedError('policy: on_missing must be fail or degrade, got %r' % (policy.get('on_missing'),))
        return
    raise TestbedError('policy: a policy name or a dict with require and on_missing, got %s' % type(policy).__name__)


class Testbed:
    """One testbed, known by its state directory and its name prefix.

    The Python API (the playbooks and the benchmark scripts use the same):

    * ``up_infra(n, policy=None)``: namespaces, underlay, charons, qkdsim and the inventory for sites
      1..n (adds the missing sites to a running testbed); ``policy`` is every link's key policy (a name
      such as ``qkd+pqc`` or ``{require: [...], on_missing: fail|degrade}``), recorded: None keeps the
      recorded one (``qkd+pqc`` for a new testbed); returns ``info()``;
    * ``connect()``: load every site's rendered swanctl files into its charon and start the links
      that have no IKE SA yet, all in parallel; returns per-link set-up times;
    * ``verify()``: every pair pings through its tunnel, every IKE SA is ESTABLISHED with ppk=yes;
    * ``run(site, argv)``, ``swanctl(site, *args)``, ``ping(pairs)``, ``ike_sas(site)``;
    * ``down()``: stop and remove everything (recorded or named with the prefix);
    * ``status()``: what exists now.
    """

    def __init__(self, state_dir, prefix='qtb'):
        if not PREFIX_RE.match(prefix or ''):
            raise TestbedError('prefix %r: must match %s (it names the namespaces %s-core, %s-site-NNN)'
                               % (prefix, PREFIX_RE.pattern, prefix, prefix))
        self.state_dir = os.path.abspath(state_dir)
        self.prefix = prefix
        self.state_file = os.path.join(self.state_dir, STATE_FILE)
        self.state = self._load()
        self.phases = Phases()

    # --- state ------------------------------------------------------------------------------

    def _load(self):
        try:
            with open(self.state_file) as handle:
                state = json.load(handle)
        except FileNotFoundError:
            return dict(prefix=self.prefix, core=None, sites={}, qkdsim=None)
        if state.get('prefix') != self.prefix:
            raise TestbedError('%s belongs to the testbed with prefix %r, not %r'
                               % (self.state_file, state.get('prefix'), self.prefix))
        return state

    def _save(self):
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        marker = self.path(MARKER_FILE)
        if not os.path.exists(marker):
            _write_atomic(marker, 'qsafe.keyfabric testbed %s: playbooks/testbed_down.yml removes this directory\n' % self.prefix)
        _write_atomic(self.state_file, json.dumps(self.state, indent=1, sort_keys=True))

    @property
    def core(self):
        return '%s-core' % self.prefix

    def netns(self, site):
        return '%s-%s' % (self.prefix, site)

    def sites(self):
        return sorted(self.state['sites'])

    def path(self, *parts):
        return os.path.join(self.state_dir, *parts)

    def swanctl_dir(self, site):
        """Where full_mesh.yml writes the site's swanctl files: render mode's output dir and push mode's swanctl dir alike."""
        return self.path('rendered', site, 'swanctl')

    def vici_uri(self, site):
        return 'unix://' + self.path('charons', site, 'charon.vici')

    def our_namespaces(self):
        """Existing namespaces named with this testbed's prefix."""
        pattern = re.compile(r'^%s-(core|site-\d{3})$' % re.escape(self.prefix))
        return [name for name in netns.names() if pattern.match(name)]

    # --- up ---------------------------------------------------------------------------------

    def up_infra(self, count, policy=None):
        """Sites 1..count with their namespaces, charons and QKD network; sites already up are kept.

        ``policy``: the key policy of every link (recorded; None keeps the recorded one, see the class)."""
        if not isinstance(count, int) or isinstance(count, bool) or not 2 <= count <= MAX_SITES:
            raise TestbedError('sites: must be an integer between 2 and %d, got %r' % (MAX_SITES, count))
        if policy is not None:
            check_policy(policy)
        reason = skip_reason()
        if reason:
            raise TestbedError('cannot build the testbed here: ' + reason)
        have = self.sites()
        if len(have) > count:
            raise TestbedError('the testbed has %d sites; it can grow but not shrink to %d (run down first)' % (len(have), count))
        stray = sorted(set(self.our_namespaces()) - set([self.core] if self.state['core'] else [])
                       - set(self.netns(site) for site in have))
        if stray:
            raise TestbedError('namespaces %s exist but %s does not record them (left by another run with prefix %r?): '
                               'run down with that prefix first' % (', '.join(stray), self.state_file, self.prefix))
        new = [site_name(index) for index in range(1, count + 1) if site_name(index) not in self.state['sites']]
        if policy is not None:
            self.state['policy'] = policy
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self._save()
        with self.phases.timed('namespaces'):
            self._underlay(new)
        with self.phases.timed('charons'):
            self._start_charons(new)
        with self.phases.timed('qkdsim'):
            self._start_qkdsim(restart=bool(new))
        self._write_inventory()
        return self.info()

    def _underlay(self, new):
        # ip -batch per namespace: one process for all namespaces, one for the core, one per site
        created, core = [], []
        if not self.state['core']:
            self.state['core'] = self.core
            created.append('netns add %s' % self.core)
            core += ['link set lo up', 'link add br0 type bridge', 'link set br0 up']
        for site in new:
            index = int(site.split('-')[1])
            self.state['sites'][site] = dict(index=index, netns=self.netns(site), underlay_ip='198.18.0.%d' % index,
                                             tunnel_ip='100.64.0.%d' % index, charon_pid=None)
            created.append('netns add %s' % self.netns(site))
        self._save()
        steps = [(None, created), (self.core, core + ['link add p%03d type veth peer name eth0 netns %s' % (
            self.state['sites'][site]['index'], self.netns(site)) for site in new] + [
            'link set p%03d master br0 up' % self.state['sites'][site]['index'] for site in new])]
        for site in new:
            record = self.state['sites'][site]
            steps.append((record['netns'], ['link set lo up', 'addr add %s/15 dev eth0' % record['underlay_ip'],
                                            'link set eth0 up', 'addr add %s/32 dev lo' % record['tunnel_ip']]))
        for name, lines in steps:
            if not lines:
                continue
            try:
                netns.batch(lines, netns=name)
            except subprocess.CalledProcessError as error:
                raise TestbedError('building the underlay failed (%s): %s' % (name or 'host', error.stderr.strip())) from error

    def _start_charons(self, new):
        started = []
        for site in new:
            directory = self.path('charons', site)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            conf = os.path.join(directory, 'strongswan.conf')
            _write_atomic(conf, CHARON_CONF % {'dir': directory})
            with open(os.path.join(directory, 'charon.out'), 'w') as out:
                # ip netns exec gives a private (slave) mount namespace: the tmpfs over /run keeps
                # charon's fixed pid file /run/charon.pid apart from the host's and the other sites'
                process = subprocess.Popen(
                    ['ip', 'netns', 'exec', self.netns(site), 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /run && exec ' + CHARON],
                    env=dict(os.environ, STRONGSWAN_CONF=conf), stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
            self.state['sites'][site]['charon_pid'] = process.pid
            started.append((site, process))
        self._save()
        deadline = time.monotonic() + 20
        for site, process in started:
            socket_path = self.path('charons', site, 'charon.vici')
            while not os.path.exists(socket_path):
                if process.poll() is not None or time.monotonic() > deadline:
                    with open(self.path('charons', site, 'charon.out')) as handle:
                        output = handle.read().strip()
                    raise TestbedError('charon of %s did not start (%s): %s' % (
                        site, 'exit %s' % process.returncode if process.returncode is not None else 'no VICI socket after 20 s',
                        output[-500:] or 'no output'))
                time.sleep(0.01)

    def _start_qkdsim(self, restart):
        """The QKD network for the current sites (restarted when sites were added; the PKI is kept)."""
        record = self.state.get('qkdsim')
        if record and _alive(record['pid']) and not restart:
            return
        if record:
            self._stop_qkdsim()
        directory = self.path('qkdsim')
        os.makedirs(directory, mode=0o700, exist_ok=True)
        topology = self.path('topology.yml')
        _write_atomic(topology, yaml.safe_dump(_generator().topology(self.sites()), sort_keys=False))
        endpoints_file = os.path.join(directory, 'endpoints.json')
        log_file = os.path.join(directory, 'qkdsim.log')
        with open(os.path.join(directory, 'qkdsim.out'), 'a') as out:
            process = subprocess.Popen(
                [sys.executable, '-m', 'qkdsim', '--state-dir', directory, '--log-file', log_file, '--topology', topology],
                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True)
        self.state['qkdsim'] = dict(pid=process.pid, state_dir=directory, endpoints_file=endpoints_file, log_file=log_file)
        self._save()
        deadline = time.monotonic() + 30
        while True:
            try:
                with open(endpoints_file) as handle:
                    if json.load(handle).get('pid') == process.pid:
                        return
            except (OSError, ValueError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(directory, 'qkdsim.out')) as handle:
                    output = handle.read().strip()
                raise TestbedError('qkdsim did not start (%s): %s' % (
                    'exit %s' % process.returncode if process.returncode is not None else 'no endpoints.json after 30 s',
                    output[-500:] or 'no output'))
            time.sleep(0.02)

    def _stop_qkdsim(self):
        record = self.state.get('qkdsim')
        if record and _alive(record['pid']) and 'qkdsim' in _cmdline(record['pid']):
            _terminate([record['pid']])
        self.state['qkdsim'] = None
        self._save()

    def inventory(self):
        """The Ansible inventory of the testbed's sites (push mode reaches each charon over its VICI socket)."""
        hosts = {}
        for site in self.sites():
            record = self.state['sites'][site]
            hosts[site] = dict(qsafe_site_platform='linux', qsafe_site_sae_id='SAE-' + site.upper(),
                               qsafe_site_underlay_ip=record['underlay_ip'], qsafe_site_tunnel_ip=record['tunnel_ip'],
                               qsafe_site_swanctl_dir=self.swanctl_dir(site), qsafe_site_vici_uri=self.vici_uri(site),
                               ansible_connection='local')
        return {'all': {'children': {'qsafe_sites': {'hosts': hosts}},
                        'vars': {'qsafe_mesh': self.mesh()}}}

    def policy(self):
        """Every link's key policy: the one recorded by up_infra, else qkd+pqc."""
        return self.state.get('policy') or DEFAULT_POLICY

    def mesh(self):
        return dict(name='testbed-' + self.prefix, links='full', link_defaults=dict(type='ipsec', policy=self.policy()))

    def _write_inventory(self):
        _write_atomic(self.path('inventory.json'), json.dumps(self.inventory(), indent=1, sort_keys=True))

    def info(self):
        """What the playbooks need: the sites' host variables, the mesh and the paths full_mesh.yml takes."""
        return dict(prefix=self.prefix, state_dir=self.state_dir, sites=self.sites(),
                    hosts=self.inventory()['all']['children']['qsafe_sites']['hosts'], mesh=self.mesh(),
                    inventory=self.path('inventory.json'), key_store=self.path('store'),
                    output_dir=self.path('rendered'),
                    endpoints_file=(self.state.get('qkdsim') or {}).get('endpoints_file'),
                    qkdsim_log=(self.state.get('qkdsim') or {}).get('log_file'),
                    phases=dict(self.phases.seconds))

    # --- running things in sites ------------------------------------------------------------

    def run(self, site, argv, timeout=30):
        """``argv`` inside the site's network namespace; the CompletedProcess (stdout and stderr together)."""
        return netns.run(self.netns(site), argv, timeout=timeout)

    def swanctl(self, site, *args, timeout=SWANCTL_TIMEOUT + 20, check=True):
        """``swanctl ARGS --uri <site's VICI socket>`` with the site's swanctl directory; its output."""
        env = dict(os.environ, SWANCTL_DIR=self.swanctl_dir(site),
                   STRONGSWAN_CONF=self.path('charons', site, 'strongswan.conf'))
        done = subprocess.run(['swanctl', args[0], '--uri', self.vici_uri(site)] + list(args[1:]), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise TestbedError('%s: swanctl %s failed (exit %d): %s'
                               % (site, ' '.join(args), done.returncode, done.stdout.strip()[-400:]))
        return done

    def ike_sas(self, site):
        """[dict(peer, uniqueid, state, ppk, packets_in, packets_out)] of the site's IKE SAs."""
        output = self.swanctl(site, '--list-sas', '--raw').stdout
        sas = []
        for peer, uniqueid, state, rest in IKE_SA_RE.findall(output):
            packets = CHILD_PACKETS_RE.search(rest)
            sas.append(dict(peer=peer, uniqueid=int(uniqueid), state=state, ppk=' ppk=yes' in rest,
                            child_installed=packets is not None,
                            packets_in=int(packets.group(1)) if packets else 0,
                            packets_out=int(packets.group(2)) if packets else 0))
        return sorted(sas, key=lambda sa: (sa['peer'], sa['uniqueid']))

    def charon_log(self, site):
        with open(self.path('charons', site, 'charon.log')) as handle:
            return handle.read()

    def pairs(self):
        return list(itertools.combinations(self.sites(), 2))

    def ping(self, pairs=None, timeout=2.0, workers=32):
        """{(a, b): round-trip seconds or None}: one ICMP echo from a's tunnel address to b's, in a's namespace."""
        pairs = list(pairs if pairs is not None else self.pairs())
        records = self.state['sites']

        def one(numbered):
            number, (a, b) = numbered
            return netns.icmp_echo(self.netns(a), records[a]['tunnel_ip'], records[b]['tunnel_ip'],
                                   timeout=timeout, identifier=(os.getpid() + number) & 0xffff)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(pairs)))) as pool:
            return dict(zip(pairs, pool.map(one, enumerate(pairs))))

    # --- connect and verify -----------------------------------------------------------------

    def load(self, sites=None):
        """``swanctl --load-all`` of each site's swanctl files into its charon, all sites in parallel."""
        sites = list(sites or self.sites())
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(sites))) as pool:
            list(pool.map(lambda site: self.swanctl(
                site, '--load-all', '--noprompt', '--file', os.path.join(self.swanctl_dir(site), 'swanctl.conf')), sites))

    def initiate(self, workers=16, per_site=INITIATES_PER_SITE):
        """Start every link that has no IKE SA at its initiator (the site whose name sorts first), in
        parallel (at most ``per_site`` at a time into one charon, sites taken in turn);
        {link_id: dict(seconds swanctl --initiate took, ok, error)} for the links started."""
        queues = []
        for site in self.sites():
            have = set(sa['peer'] for sa in self.ike_sas(site))
            queues.append([(site, peer) for peer in self.sites() if peer > site and peer not in have])
        # round robin over the initiators, so that the first site's links do not all go first
        to_start = [pair for column in itertools.zip_longest(*queues) for pair in column if pair]
        slots = dict((site, threading.BoundedSemaphore(per_site)) for site in self.sites())

        def one(pair):
            site, peer = pair
            with slots[site]:
                started = time.perf_counter()
                done = self.swanctl(site, '--initiate', '--child', peer, '--timeout', str(SWANCTL_TIMEOUT), check=False)
                return '%s--%s' % pair, time.perf_counter() - started, done.returncode, done.stdout
        results = {}
        if to_start:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(to_start))) as pool:
                for link, seconds, returncode, output in pool.map(one, to_start):
                    results[link] = dict(seconds=seconds, ok=returncode == 0,
                                         error=None if returncode == 0 else output.strip().splitlines()[-1:])
        return results

    def connect(self):
        """Load and start (render mode's fast path); returns dict(initiate=..., setup=per-link log times)."""
        with self.phases.timed('load'):
            self.load()
        with self.phases.timed('initiate'):
            initiated = self.initiate()
        return dict(initiate=initiated, setup=self.setup_times())

    def setup_times(self):
        """{link_id: seconds from 'initiating IKE_SA' to 'CHILD_SA ... established' in the initiator's
        charon log} for the latest set-up of each link (charon's own clock, millisecond resolution)."""
        times = {}
        for site in self.sites():
            log = self.charon_log(site)
            for peer in self.sites():
                if peer <= site:
                    continue
                starts = re.findall(LOG_TIME_RE + r'\[IKE\] initiating IKE_SA %s\[' % re.escape(peer), log, re.M)
                if not starts:
                    continue
                done = [float(t) for t in re.findall(LOG_TIME_RE + r'\[IKE\] CHILD_SA %s\{\d+\} established' % re.escape(peer),
                                                     log, re.M) if float(t) >= float(starts[-1])]
                if done:
                    times['%s--%s' % (site, peer)] = round(done[0] - float(starts[-1]), 3)
        return times

    def verify(self, timeout=10.0):
        """Every pair: exactly one ESTABLISHED IKE SA with ppk=yes at both ends, and an ICMP echo between the
        tunnel addresses that the CHILD_SAs carried. Waits up to ``timeout`` s for SAs being set up.
        Returns dict(ok, pairs, problems, rtt_ms); never raises on a failed pair."""
        sites = self.sites()
        deadline = time.monotonic() + timeout
        while True:
            problems = self._sa_problems(sites)
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        before = dict((site, dict((sa['peer'], sa['packets_in']) for sa in self.ike_sas(site))) for site in sites)
        replies = self.ping()
        after = dict((site, dict((sa['peer'], sa['packets_in']) for sa in self.ike_sas(site))) for site in sites)
        rtt = {}
        for (a, b), seconds in sorted(replies.items()):
            link = '%s--%s' % (a, b)
            if seconds is None:
                problems.append('%s: no ICMP echo reply through the tunnel' % link)
                continue
            rtt[link] = round(seconds * 1000, 3)
            for site, peer in ((a, b), (b, a)):
                if after[site].get(peer, 0) <= before[site].get(peer, 0):
                    problems.append('%s: the echo did not go through the CHILD_SA at %s' % (link, site))
        return dict(ok=not problems, pairs=len(replies), problems=problems, rtt_ms=rtt)

    def _sa_problems(self, sites):
        problems = []
        for site in sites:
            sas = self.ike_sas(site)
            for peer in sites:
                if peer == site:
                    continue
                mine = [sa for sa in sas if sa['peer'] == peer]
                good = [sa for sa in mine if sa['state'] == 'ESTABLISHED' and sa['ppk'] and sa['child_installed']]
                if len(mine) != 1 or not good:
                    problems.append('%s -> %s: %s' % (site, peer, ', '.join(
                        '%s%s%s' % (sa['state'], ' ppk=yes' if sa['ppk'] else ' no PPK',
                                    '' if sa['child_installed'] else ' no CHILD_SA') for sa in mine) or 'no IKE SA'))
        return problems

    # --- down and status --------------------------------------------------------------------

    def down(self):
        """Stop and remove everything of this testbed: recorded charons and qkdsim, every process in its
        namespaces, the namespaces (their veths and bridge go with them) and the state directory.
        Returns what it removed."""
        removed = dict(processes=[], namespaces=[], state_dir=None)
        namespaces = sorted(set(self.our_namespaces())
                            | set(record['netns'] for record in self.state['sites'].values() if record.get('netns'))
                            | set([self.state['core']] if self.state.get('core') else []))
        namespaces = [name for name in namespaces if name in netns.names()]
        pids = set(record['charon_pid'] for record in self.state['sites'].values()
                   if record.get('charon_pid') and _alive(record['charon_pid']) and 'charon' in _cmdline(record['charon_pid']))
        for name in namespaces:
            pids.update(netns.pids(name))
        # the simulator runs in the host namespace: the one recorded, and any started for this state
        # directory whose record was lost (its command line names the directory)
        qkdsim_args = '-m qkdsim --state-dir %s ' % self.path('qkdsim')
        pids.update(pid for pid in (int(entry) for entry in os.listdir('/proc') if entry.isdigit())
                    if _cmdline(pid).find(qkdsim_args) >= 0)
        pids.discard(os.getpid())
        _terminate(sorted(pids))
        removed['processes'] = sorted(pids)
        for name in namespaces:
            netns.ip('netns', 'del', name, check=False)
        removed['namespaces'] = namespaces
        left = [name for name in namespaces if name in netns.names()]
        if left:
            raise TestbedError('could not delete namespaces %s' % ', '.join(left))
        if os.path.isdir(self.state_dir):
            if os.path.exists(self.path(MARKER_FILE)) or not os.listdir(self.state_dir):
                shutil.rmtree(self.state_dir)
                removed['state_dir'] = self.state_dir
            else:
                raise TestbedError('%s has no %s: not removed (not a testbed state directory)' % (self.state_dir, MARKER_FILE))
        self.state = dict(prefix=self.prefix, core=None, sites={}, qkdsim=None)
        return removed

    def status(self):
        """What exists now: namespaces with the prefix, live charons and qkdsim, the state directory."""
        charons = dict((site, record['charon_pid']) for site, record in self.state['sites'].items()
                       if record.get('charon_pid') and _alive(record['charon_pid']))
        qkdsim = self.state.get('qkdsim')
        return dict(prefix=self.prefix, state_dir=self.state_dir if os.path.exists(self.state_dir) else None,
                    namespaces=self.our_namespaces(), charons=charons,
                    qkdsim=qkdsim['pid'] if qkdsim and _alive(qkdsim['pid']) else None, sites=self.sites())
