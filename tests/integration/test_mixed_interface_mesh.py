"""One mesh whose sites speak ETSI 014, ETSI 004 and Cisco SKIP, keyed end to end by full_mesh.yml (render mode).

playbooks/inventories/mixed_interfaces against qkdsim/topologies/mixed_interfaces.yml (each KME serves only the
interfaces its site uses): site-a and site-d (strongSwan) fetch QKD keys over ETSI 014, site-c and site-f
(strongSwan) over ETSI 004, site-b and site-e (IOS-XE DMVPN hub and spoke) over Cisco SKIP. The fifteen links
cover every combination of master and slave interface; site-b--site-e is the SKIP<->SKIP pair whose routers
fetch their PPK themselves (``ppk dynamic``), so the controller makes no QKD call for it. Keys, IKE PSKs and
SKIP PSKs are compared by check value or digest and never shown.
"""

import hashlib
import json
import os
import re
import shutil
import stat

import pytest
import yaml
from ciscoconfparse2 import CiscoConfParse

from playbook_support import REPO_ROOT, ansible_playbook, key_spellings
from charon_support import Charons
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value
from qkdsim.process import SimulatorProcess

PLAYBOOK = os.path.join(REPO_ROOT, 'playbooks', 'full_mesh.yml')
INVENTORY = os.path.join(REPO_ROOT, 'playbooks', 'inventories', 'mixed_interfaces')
TOPOLOGY = os.path.join(REPO_ROOT, 'qkdsim', 'topologies', 'mixed_interfaces.yml')
INTERFACE = {'site-a': 'etsi014', 'site-b': 'skip', 'site-c': 'etsi004', 'site-d': 'etsi014', 'site-e': 'skip',
             'site-f': 'etsi004'}
IOS_XE = ('site-b', 'site-e')
LINUX = ('site-a', 'site-c', 'site-d', 'site-f')
SKIP_PAIR = 'site-b--site-e'
SAE = dict((site, 'SAE-' + site[-1].upper()) for site in INTERFACE)
SITES = sorted(INTERFACE)
LINKS = ['%s--%s' % (a, b) for n, a in enumerate(SITES) for b in SITES[n + 1:]]
# One simulator log line per call (qkdsim log format): who asked which KME through which interface.
_ETSI014_CALL = re.compile(r' INFO (?P<kme>KME-\w) (?P<sae>SAE-\w) POST /api/v1/keys/\S+/(?:enc_keys|dec_keys) 200 '
                           r'keys=(?P<keys>\d+) ')
_ETSI004_KEY = re.compile(r' INFO (?P<kme>KME-\w)/etsi004 (?P<sae>SAE-\w) 004 GET_KEY status=0 keys=(?P<keys>\d+) ')
_SKIP_CALL = re.compile(r' INFO (?P<kme>KME-\w)/skip (?P<sae>SAE-\w) GET /key(?:/(?P<key_id>\w+))?\?\S* 200 '
                        r'keys=(?P<keys>\d+) ')
_KEY_CALL = re.compile(r' (?:POST /api/v1/keys/\S+/(?:enc|dec)_keys|GET_KEY|OPEN_CONNECT|GET /key)\S* ')


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def kcv_of_hex(hex_text):
    return key_check_value(bytes.fromhex(hex_text))


@pytest.fixture(scope='module')
def mesh(tmp_path_factory):
    """The simulator, a copy of the example inventory, and a first full_mesh.yml run (render mode, --diff)."""
    base = tmp_path_factory.mktemp('mixed-mesh')
    process = SimulatorProcess(base / 'qkdsim', TOPOLOGY)
    try:
        inventory = base / 'inventory'
        shutil.copytree(INVENTORY, str(inventory))
        mesh = dict(process=process, inventory=inventory, store=base / 'store', out=base / 'out')
        mesh['rc'], mesh['output'] = run(mesh, '--diff')
        yield mesh
    finally:
        assert process.stop() == 0


def run(mesh, *args, **extra):
    extra_vars = dict(qsafe_endpoints_file=str(mesh['process'].endpoints_file), qsafe_key_store=str(mesh['store']),
                      qsafe_output_dir=str(mesh['out']))
    extra_vars.update(extra)
    return ansible_playbook(PLAYBOOK, '-i', str(mesh['inventory']), '-e', json.dumps(extra_vars), *args)


def records(mesh):
    return dict((link, json.loads((mesh['store'] / (link + '.json')).read_text())) for link in LINKS)


def swanctl_ends(mesh, site):
    """{link_id: {ike: KCV, ppk: (PPK ID, KCV)}} of a strongSwan site, from its rendered files."""
    conf_d = mesh['out'] / site / 'swanctl' / 'conf.d'
    peers = dict(re.findall(r'# qsafe-peer name=(\S+) link_id=(\S+) ', (conf_d / 'qsafe-mesh.conf').read_text()))
    secrets = (conf_d / 'qsafe-mesh.secrets.conf').read_text()
    ends = {}
    for peer, link_id in peers.items():
        (ike,) = re.findall(r'ike-%s \{[^}]*secret = 0x([0-9a-f]+)' % re.escape(peer), secrets)
        (ppk,) = re.findall(r'ppk-%s \{\s*id = (\S+)\s*secret = 0x([0-9a-f]+)' % re.escape(peer), secrets)
        ends[link_id] = dict(ike=kcv_of_hex(ike), ppk=(ppk[0], kcv_of_hex(ppk[1])))
    return ends


def ios_xe_config(mesh, site):
    return CiscoConfParse(str(mesh['out'] / site / 'ios_xe.cfg'), syntax='ios')


def children(parent):
    return [child.text.strip() for child in parent.children]


def ios_xe_ends(mesh, site):
    """{link_id: {ike: KCV, ppk: (PPK ID, KCV) or 'dynamic:<skip client>'}} of an IOS-XE site's keyring."""
    (keyring,) = ios_xe_config(mesh, site).find_parent_objects([r'^crypto ikev2 keyring '])
    ends = {}
    for peer in keyring.children:
        lines = children(peer)
        (link_id,) = [line.split()[2] for line in lines if line.startswith('description link ')]
        (ike,) = [line.split()[2] for line in lines if line.startswith('pre-shared-key hex ')]
        (ppk,) = [line.split() for line in lines if line.startswith('ppk ')]
        if ppk[1] == 'manual':
            assert ppk[2] == 'id' and ppk[4:6] == ['key', 'hex'] and ppk[-1] == 'required', link_id
            ends[link_id] = dict(ike=kcv_of_hex(ike), ppk=(ppk[3], kcv_of_hex(ppk[6])))
        else:
            assert ppk[1] == 'dynamic' and ppk[-1] == 'required', link_id
            ends[link_id] = dict(ike=kcv_of_hex(ike), ppk='dynamic:' + ppk[2])
    return ends


def test_every_link_is_keyed_and_both_ends_render_the_same_keys(mesh):
    assert mesh['rc'] == 0, mesh['output']
    for link, record in records(mesh).items():
        assert not record['degraded'], link
        if link == SKIP_PAIR:   # the routers fetch the PPK over SKIP; the controller's key gives the IKE PSK only
            assert 'qkd' not in record['sources'] and not record['qkd_key_ids'], record['sources']
            assert 'pqc' in record['sources']
        else:                   # QKD reached both ends, each over its own interface
            assert 'qkd' in record['sources'] and len(record['qkd_key_ids']) == 1, link
        for spelling in key_spellings(bytes.fromhex(record['key'])):
            assert spelling not in mesh['output'], 'the key of %s is shown in the output' % link

    ends = dict((site, swanctl_ends(mesh, site)) for site in LINUX)
    ends.update((site, ios_xe_ends(mesh, site)) for site in IOS_XE)
    for site in SITES:
        assert sorted(ends[site]) == [link for link in LINKS if site in link.split('--')], site
    for link in LINKS:
        first, second = link.split('--')
        assert ends[first][link]['ike'] == ends[second][link]['ike'], link
        assert ends[first][link]['ppk'] == ends[second][link]['ppk'], link
        if link == SKIP_PAIR:
            assert ends[first][link]['ppk'] == 'dynamic:QSAFE-SKIP'
        else:
            assert isinstance(ends[first][link]['ppk'], tuple), link   # a manual PPK keyed by the controller
    # the SKIP routers' other links keep a manual PPK; nothing else is dynamic
    assert sorted(link for link in LINKS if not isinstance(ends[link.split('--')[0]][link]['ppk'], tuple)) == [SKIP_PAIR]


def test_each_site_fetched_over_its_own_interface_and_the_skip_pair_through_no_controller(mesh):
    assert mesh['rc'] == 0, mesh['output']
    log = mesh['process'].log_file.read_text()
    used = dict((sae, {'etsi014': 0, 'etsi004': 0, 'skip': 0}) for sae in SAE.values())
    for match in _ETSI014_CALL.finditer(log):
        used[match.group('sae')]['etsi014'] += int(match.group('keys'))
    for match in _ETSI004_KEY.finditer(log):
        used[match.group('sae')]['etsi004'] += int(match.group('keys'))
    skip_by_id = []
    for match in _SKIP_CALL.finditer(log):
        used[match.group('sae')]['skip'] += int(match.group('keys'))
        if match.group('key_id'):
            skip_by_id.append((match.group('sae'), match.group('key_id')))
    for site, interface in INTERFACE.items():
        # one QKD key per link the controller keys with QKD: all five of a site's links, but the SKIP pair's
        expected = dict((name, 0) for name in used[SAE[site]])
        expected[interface] = 4 if site in SKIP_PAIR.split('--') else 5
        assert used[SAE[site]] == expected, (site, used[SAE[site]])

    # Every key a SKIP end collected by ID belongs to a link of that site other than the SKIP pair.
    owner = dict((key_id.replace('-', ''), link) for link, record in records(mesh).items()
                 for key_id in record['qkd_key_ids'])
    assert len(skip_by_id) >= 2
    for sae, key_id in skip_by_id:
        link = owner[key_id.replace('-', '')]
        assert link != SKIP_PAIR and sae in [SAE[site] for site in link.split('--')], (sae, link)
    # No SKIP call at all names the other router's KME as the key's partner; a new SKIP key is always for a site
    # that does not speak SKIP (the SKIP ends that are masters: site-b to c, d, f; site-e to f).
    assert (used['SAE-B']['skip'], used['SAE-E']['skip']) == (4, 4)
    assert len(re.findall(r' KME-B/skip SAE-B GET /key\?', log)) == 3
    assert len(re.findall(r' KME-E/skip SAE-E GET /key\?', log)) == 1


def test_ios_xe_configs_parse_and_are_structurally_complete(mesh):
    assert mesh['rc'] == 0, mesh['output']
    endpoints = mesh['process'].endpoints
    hosts = yaml.safe_load((mesh['inventory'] / 'hosts.yml').read_text())['all']['children']
    site_vars = hosts['qsafe_sites']['hosts']
    for site in IOS_XE:
        path = mesh['out'] / site / 'ios_xe.cfg'
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        parsed = ios_xe_config(mesh, site)
        others = [name for name in SITES if name != site]

        # the SKIP client: the KME's SKIP service (port from the manifest), the router's identity and PSK
        (client,) = parsed.find_parent_objects([r'^crypto skip-client QSAFE-SKIP$'])
        port = endpoints['kmes']['KME-' + site[-1].upper()]['interfaces']['skip']['url'].rsplit(':', 1)[1]
        server_ip = hosts['skip_routers']['hosts'][site]['qsafe_site_skip_server_ip']
        assert children(client)[0] == 'server ipv4 %s port %s' % (server_ip, port)
        with open(endpoints['saes'][SAE[site]]['skip_psk_file']) as handle:
            psk = handle.read().strip()
        (psk_line,) = [line for line in children(client) if line.startswith('psk id ')]
        assert digest(psk_line) == digest('psk id %s key hex %s' % (SAE[site], psk.lower())), 'SKIP PSK line differs'

        # keyring: one peer per other site, each with its address, IKE PSK and exactly one PPK
        (keyring,) = parsed.find_parent_objects([r'^crypto ikev2 keyring '])
        keyring_name = keyring.text.split()[3]
        peers = dict((peer.text.split()[1], children(peer)) for peer in keyring.children)
        assert sorted(peers) == others, site
        for peer, lines in peers.items():
            assert 'address %s' % site_vars[peer]['qsafe_site_underlay_ip'] in lines, (site, peer)
            assert len([line for line in lines if line.startswith('pre-shared-key hex ')]) == 1, (site, peer)
            assert len([line for line in lines if line.startswith('ppk ')]) == 1, (site, peer)

        # IKEv2 profile: every peer matched, the keyring for IKE and PPK; the IPsec profile uses it
        (profile,) = parsed.find_parent_objects([r'^crypto ikev2 profile '])
        profile_lines = children(profile)
        for peer in others:
            assert 'match identity remote address %s 255.255.255.255' % site_vars[peer]['qsafe_site_underlay_ip'] \
                in profile_lines, (site, peer)
        assert {'keyring local %s' % keyring_name, 'keyring ppk %s' % keyring_name} <= set(profile_lines)
        proposals = [line.text.split()[3] for line in parsed.find_parent_objects([r'^crypto ikev2 proposal '])]
        (policy,) = parsed.find_parent_objects([r'^crypto ikev2 policy '])
        assert [line.split()[1] for line in children(policy) if line.startswith('proposal ')] == proposals
        (ipsec_profile,) = parsed.find_parent_objects([r'^crypto ipsec profile '])
        assert 'set ikev2-profile %s' % profile.text.split()[3] in children(ipsec_profile)
        transform_sets = [line.text.split()[3] for line in parsed.find_parent_objects([r'^crypto ipsec transform-set '])]
        assert [line.split()[2] for line in children(ipsec_profile) if line.startswith('set transform-set ')] \
            == transform_sets

        # the tunnel is protected by that IPsec profile; a spoke registers with the hub
        (tunnel,) = parsed.find_parent_objects([r'^interface Tunnel'])
        tunnel_lines = children(tunnel)
        assert 'tunnel protection ipsec profile %s' % ipsec_profile.text.split()[3] in tunnel_lines
        assert 'ip address %s 255.255.255.0' % site_vars[site]['qsafe_site_tunnel_ip'] in tunnel_lines
        if site_vars[site]['qsafe_site_dmvpn_role'] == 'spoke':
            hub = site_vars['site-b']
            assert 'ip nhrp nhs %s nbma %s multicast' % (hub['qsafe_site_tunnel_ip'], hub['qsafe_site_underlay_ip']) \
                in tunnel_lines
        else:
            assert 'ip nhrp map multicast dynamic' in tunnel_lines


def test_the_strongswan_sites_load_into_a_real_charon(mesh, tmp_path):
    assert mesh['rc'] == 0, mesh['output']
    charons = Charons(tmp_path)   # skips with charon_support.skip_reason() where real charons cannot run
    try:
        for site in LINUX:
            charon = charons.start(site)
            swanctl_dir = mesh['out'] / site / 'swanctl'
            output = charon.swanctl('--load-all', '--noprompt', '--file', str(swanctl_dir / 'swanctl.conf'),
                                    swanctl_dir=swanctl_dir)
            assert 'successfully loaded 5 connections, 0 unloaded' in output, (site, output)
            for peer in SITES:
                if peer != site:
                    assert "loaded ike secret 'ike-%s'" % peer in output, (site, peer)
                    assert "loaded ppk secret 'ppk-%s'" % peer in output, (site, peer)
            # every connection requires its link's PPK, by the ID the other end holds too
            conns = charon.swanctl('--list-conns')
            assert sorted(re.findall(r'^  ppk: (\S+), required$', conns, re.M)) == \
                sorted(end['ppk'][0] for end in swanctl_ends(mesh, site).values()), site
            charon.stop()
    finally:
        charons.stop()


def test_a_second_run_spends_no_key_and_writes_nothing(mesh):
    assert mesh['rc'] == 0, mesh['output']

    def snapshot():
        files = {}
        for directory in (mesh['out'], mesh['store']):
            for root, dirs, names in os.walk(str(directory)):
                for name in names:
                    path = os.path.join(root, name)
                    with open(path, 'rb') as handle:
                        files[path] = (os.stat(path).st_mtime_ns, hashlib.sha256(handle.read()).hexdigest())
        return files

    before, log_before = snapshot(), mesh['process'].log_file.read_text()
    rc, output = run(mesh)
    assert rc == 0 and '"keyed_now": []' in output and '"kept": 15' in output, output
    assert re.search(r'localhost\s*: ok=\d+\s+changed=0 ', output), output
    assert snapshot() == before
    log_after = mesh['process'].log_file.read_text()
    assert log_after.startswith(log_before)
    assert not _KEY_CALL.findall(log_after[len(log_before):]), 'a second run asked a KME for a key'


@pytest.fixture
def broken(mesh, tmp_path):
    """A private copy of the example inventory against the running simulator, for inventories that must fail."""
    inventory = tmp_path / 'inventory'
    shutil.copytree(INVENTORY, str(inventory))
    yield dict(mesh, inventory=inventory, store=tmp_path / 'store', out=tmp_path / 'out')


def test_an_unknown_interface_fails_early_naming_the_site(broken):
    hosts = broken['inventory'] / 'hosts.yml'
    hosts.write_text(hosts.read_text().replace('qsafe_site_key_interface: etsi004', 'qsafe_site_key_interface: etsi005', 1))
    rc, output = run(broken)
    assert rc != 0 and "site site-c: qsafe_site_key_interface must be one of etsi014, etsi004, skip, got 'etsi005'" in output
    assert not broken['store'].exists() or not os.listdir(str(broken['store']))


@pytest.mark.parametrize('site, sae, kme, interface', [
    ('site-a', 'SAE-A', 'KME-A', 'etsi004'),   # KME-A serves ETSI 014 only
    ('site-c', 'SAE-C', 'KME-C', 'etsi014'),   # KME-C serves ETSI 004 only: no ETSI 014 behind it
    ('site-d', 'SAE-D', 'KME-D', 'skip'),      # KME-D serves ETSI 014 and 004, not SKIP
])
def test_a_site_whose_kme_lacks_its_interface_is_named(broken, site, sae, kme, interface):
    hosts = broken['inventory'] / 'hosts.yml'
    text = hosts.read_text()
    changed = re.sub(r'(qsafe_site_sae_id: %s\n\s+qsafe_site_key_interface: )\w+' % sae, r'\g<1>' + interface, text)
    assert changed != text
    hosts.write_text(changed)
    rc, output = run(broken)
    assert rc != 0 and 'KME %s in endpoints_file' % kme in output and 'does not serve interface %s' % interface in output
    assert not broken['store'].exists() or not os.listdir(str(broken['store']))
