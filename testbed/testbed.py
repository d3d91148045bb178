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

This module keeps the state, builds and removes the sites; the rest is split by concern:
``links`` (run in a site, connect and verify the links: the base class ``Links``), ``charon``
(strongswan.conf, swanctl, IKE SAs), ``simulator`` (the qkdsim process), ``processes`` (pids, atomic
files, phase timing) and ``netns`` (namespaces).
"""

import functools
import json
import os
import re
import shutil
import subprocess
import sys

from testbed import charon, netns, processes, simulator
from testbed.errors import TestbedError
from testbed.links import Links
from testbed.processes import Phases, alive, write_atomic

MAX_SITES = 50
PREFIX_RE = re.compile(r'^[a-z][a-z0-9]{0,11}$')
STATE_FILE = 'testbed.json'
MARKER_FILE = '.qsafe-testbed'   # written first: down removes a state directory only when it holds this
CHARON_START_TIMEOUT = 20
DEFAULT_POLICY = 'qkd+pqc'
POLICY_NAME_RE = re.compile(r'^[a-z0-9]+(\+[a-z0-9]+)*$')
ON_MISSING = ('fail', 'degrade')


def skip_reason():
    """Why this machine cannot run the testbed, or None."""
    if not sys.platform.startswith('linux'):
        return 'the testbed needs Linux network namespaces'
    if os.geteuid() != 0:
        return 'the testbed needs root (network namespaces, veth pairs, mounts)'
    reason = charon.missing()
    if reason:
        return reason
    if not os.path.exists('/dev/net/tun'):
        return '/dev/net/tun is missing (kernel-libipsec needs a TUN device)'
    if shutil.which('ip') is None:
        return 'iproute2 (ip) is not installed'
    return None


def site_name(index):
    return 'site-%03d' % index


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


class Testbed(Links):
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
            write_atomic(marker, 'qsafe.keyfabric testbed %s: playbooks/testbed_down.yml removes this directory\n' % self.prefix)
        write_atomic(self.state_file, json.dumps(self.state, indent=1, sort_keys=True))

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
            conf = charon.write_conf(directory, write_atomic)
            with open(os.path.join(directory, 'charon.out'), 'w') as out:
                # ip netns exec gives a private (slave) mount namespace: the tmpfs over /run keeps
                # charon's fixed pid file /run/charon.pid apart from the host's and the other sites'
                process = subprocess.Popen(
                    ['ip', 'netns', 'exec', self.netns(site), 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /run && exec ' + charon.CHARON],
                    env=dict(os.environ, STRONGSWAN_CONF=conf), stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
            self.state['sites'][site]['charon_pid'] = process.pid
            started.append((site, process))
        self._save()
        for site, process in started:
            socket_path = self.path('charons', site, 'charon.vici')
            processes.wait_until(functools.partial(os.path.exists, socket_path), process, CHARON_START_TIMEOUT, 'charon of ' + site,
                                 'no VICI socket', self.path('charons', site, 'charon.out'), TestbedError)

    def _start_qkdsim(self, restart):
        """The QKD network for the current sites (restarted when sites were added; the PKI is kept)."""
        record = self.state.get('qkdsim')
        if record and alive(record['pid']) and not restart:
            return
        if record:
            self._stop_qkdsim()
        self.state['qkdsim'], wait = simulator.start(self.path('qkdsim'), self.path('topology.yml'), self.sites(), TestbedError)
        self._save()
        wait()

    def _stop_qkdsim(self):
        simulator.stop(self.state.get('qkdsim'))
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
        write_atomic(self.path('inventory.json'), json.dumps(self.inventory(), indent=1, sort_keys=True))

    def info(self):
        """What the playbooks need: the sites' host variables, the mesh and the paths full_mesh.yml takes."""
        return dict(prefix=self.prefix, state_dir=self.state_dir, sites=self.sites(),
                    hosts=self.inventory()['all']['children']['qsafe_sites']['hosts'], mesh=self.mesh(),
                    inventory=self.path('inventory.json'), key_store=self.path('store'),
                    output_dir=self.path('rendered'),
                    endpoints_file=(self.state.get('qkdsim') or {}).get('endpoints_file'),
                    qkdsim_log=(self.state.get('qkdsim') or {}).get('log_file'),
                    phases=dict(self.phases.seconds))

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
                   if record.get('charon_pid') and alive(record['charon_pid']) and 'charon' in processes.cmdline(record['charon_pid']))
        for name in namespaces:
            pids.update(netns.pids(name))
        # the simulator runs in the host namespace: the one recorded, and any started for this state
        # directory whose record was lost (its command line names the directory)
        pids.update(simulator.strays(self.path('qkdsim')))
        pids.discard(os.getpid())
        processes.terminate(sorted(pids))
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
                       if record.get('charon_pid') and alive(record['charon_pid']))
        qkdsim = self.state.get('qkdsim')
        return dict(prefix=self.prefix, state_dir=self.state_dir if os.path.exists(self.state_dir) else None,
                    namespaces=self.our_namespaces(), charons=charons,
                    qkdsim=qkdsim['pid'] if qkdsim and alive(qkdsim['pid']) else None, sites=self.sites())
