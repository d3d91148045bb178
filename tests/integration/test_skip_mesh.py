"""The paper's mesh with its two Madrid IOS-XE routers speaking Cisco SKIP to their KMEs (render mode).

mad-1 and mad-2 fetch their shared PPK themselves (``crypto skip-client`` + ``ppk dynamic ... required``): no
QKD key of that link passes through the controller. Their links to the other sites keep a manual PPK that the
controller keys - over SKIP at the Madrid end. The rendered IOS-XE configs are read back with ciscoconfparse2;
keys and the SKIP PSKs are compared by check value and never shown.
"""

import json
import os
import re
import shutil

import pytest
import yaml
from ciscoconfparse2 import CiscoConfParse

from playbook_support import REPO_ROOT, ansible_playbook, key_spellings, tree
from qkdsim.process import SimulatorProcess

PLAYBOOK = os.path.join(REPO_ROOT, 'playbooks', 'full_mesh.yml')
PAPER = os.path.join(REPO_ROOT, 'playbooks', 'inventories', 'paper')
TOPOLOGY = os.path.join(REPO_ROOT, 'tests', 'integration', 'skip_mesh_topology.yml')
SKIP_ROUTERS = {'mad-1': ('SAE-MAD-1', '192.0.2.11'), 'mad-2': ('SAE-MAD-2', '192.0.2.12')}
# A simulator log line of a SKIP call (qkdsim log format): KME, caller (PSK identity), resource.
_SKIP_CALL = re.compile(r' INFO (?P<kme>KME-[\w-]+)/skip (?P<sae>\S+) GET (?P<path>/key(?:/\w+)?)\?\S* 200 keys=1 ')


@pytest.fixture(scope='module')
def skip_mesh(tmp_path_factory):
    base = tmp_path_factory.mktemp('skip-mesh')
    process = SimulatorProcess(base / 'qkdsim', TOPOLOGY)
    inventory = base / 'inventory'
    shutil.copytree(PAPER, str(inventory))
    hosts_file = inventory / 'hosts.yml'
    hosts = yaml.safe_load(hosts_file.read_text())
    sites = hosts['all']['children']['qsafe_sites']['hosts']
    psks = {}
    for site, (sae, address) in SKIP_ROUTERS.items():
        entry = process.endpoints['saes'][sae]
        with open(entry['skip_psk_file']) as handle:
            psks[site] = handle.read().strip()   # in a real inventory: Ansible Vault
        port = int(process.endpoints['kmes'][entry['kme_id']]['interfaces']['skip']['url'].rsplit(':', 1)[1])
        sites[site].update(qsafe_site_key_interface='skip', qsafe_site_skip_server_ip=address,
                           qsafe_site_skip_server_port=port, qsafe_site_skip_psk_hex=psks[site])
    hosts_file.write_text(yaml.safe_dump(hosts))
    group_file = inventory / 'group_vars' / 'all.yml'
    group = yaml.safe_load(group_file.read_text())
    for override in group['qsafe_mesh']['link_overrides']:
        if sorted(override['sites']) == ['mad-1', 'mad-2']:
            override['type'] = 'ipsec'   # IPsec only: a MACsec CAK would still need a controller-made QKD key
    group_file.write_text(yaml.safe_dump(group))
    mesh = dict(process=process, inventory=inventory, store=base / 'store', out=base / 'out', psks=psks)
    yield mesh
    assert process.stop() == 0


def run(mesh, *args, **extra):
    extra_vars = dict(qsafe_endpoints_file=str(mesh['process'].endpoints_file), qsafe_key_store=str(mesh['store']),
                      qsafe_output_dir=str(mesh['out']))
    extra_vars.update(extra)
    return ansible_playbook(PLAYBOOK, '-i', str(mesh['inventory']), '-e', json.dumps(extra_vars), *args)


def keyring_peers(parsed):
    (keyring,) = parsed.find_parent_objects([r'^crypto ikev2 keyring '])
    return dict((child.text.split()[1], child) for child in keyring.children if child.text.strip().startswith('peer '))


def test_skip_routers_fetch_their_own_ppk_and_the_controller_none_of_it(skip_mesh):
    rc, output = run(skip_mesh, '-vvvv', '--diff')
    assert rc == 0, output
    for psk in skip_mesh['psks'].values():
        assert psk not in output and psk.upper() not in output, 'a SKIP PSK is shown in the output'

    # mad-1--mad-2: keyed by the controller without QKD (the routers' PPK comes over SKIP); its key only gives the
    # IKE PSK. Every other link with a QKD path is keyed with QKD, over SKIP at a Madrid end.
    record = json.loads((skip_mesh['store'] / 'mad-1--mad-2.json').read_text())
    assert 'qkd' not in record['sources'] and not record['qkd_key_ids'] and not record['degraded']
    assert 'qkd' in json.loads((skip_mesh['store'] / 'mad-1--mad-3.json').read_text())['sources']
    for name in os.listdir(str(skip_mesh['store'])):
        key = bytes.fromhex(json.loads((skip_mesh['store'] / name).read_text())['key'])
        assert not any(spelling in output for spelling in key_spellings(key)), name

    # The controller's SKIP calls: one new key (/key) per QKD link from a Madrid router to a site that does not speak
    # SKIP (the Madrid end sorts first, so it is the master) - and none for the QKD link mad-1--mad-2 itself.
    log = skip_mesh['process'].log_file.read_text()
    calls = sorted((match.group('kme'), match.group('sae'), match.group('path')) for match in _SKIP_CALL.finditer(log))
    expected = sorted(('KME-' + end, 'SAE-' + end, '/key') for link in skip_mesh['process'].endpoints['links']
                      for end in link['sites'] if end in ('MAD-1', 'MAD-2') and sorted(link['sites']) != ['MAD-1', 'MAD-2'])
    assert calls == expected and len(expected) >= 2
    # The Madrid ends spoke SKIP only; their peers collected the SKIP-issued keys over ETSI 014 (one key stream).
    assert not re.search(r' INFO KME-MAD-[12] SAE-MAD-[12] POST /api/v1/keys/', log)
    assert len(re.findall(r' POST /api/v1/keys/SAE-MAD-[12]/dec_keys 200 keys=1 ', log)) == len(expected)

    for site, other in (('mad-1', 'mad-2'), ('mad-2', 'mad-1')):
        sae, address = SKIP_ROUTERS[site]
        path = skip_mesh['out'] / site / 'ios_xe.cfg'
        assert oct(path.stat().st_mode & 0o777) == '0o600'
        parsed = CiscoConfParse(str(path), syntax='ios')
        (client,) = parsed.find_parent_objects([r'^crypto skip-client QSAFE-SKIP$'])
        port = skip_mesh['process'].endpoints['kmes']['KME-' + site.upper()]['interfaces']['skip']['url'].rsplit(':', 1)[1]
        assert [child.text.strip() for child in client.children][0] == 'server ipv4 %s port %s' % (address, port)
        (psk_line,) = [child.text.strip() for child in client.children if child.text.strip().startswith('psk id ')]
        assert psk_line == 'psk id %s key hex %s' % (sae, skip_mesh['psks'][site])
        peers = keyring_peers(parsed)
        dynamic = [child.text.strip() for child in peers[other].children if 'ppk' in child.text]
        assert dynamic == ['ppk dynamic QSAFE-SKIP required']
        for peer, entry in peers.items():
            if peer != other:   # the links to sites that do not speak SKIP: manual PPK from the controller
                assert [c.text.split()[1] for c in entry.children if c.text.strip().startswith('ppk ')] == ['manual'], peer
        assert re.search(r'^! qsafe-peer name=%s .* ppk=dynamic:QSAFE-SKIP$' % other, path.read_text(), re.M)

    # mex-1 (IOS-XE, not SKIP) gets no SKIP client and only manual PPKs.
    mex = (skip_mesh['out'] / 'mex-1' / 'ios_xe.cfg').read_text()
    assert 'crypto skip-client' not in mex and 'ppk dynamic' not in mex


def test_the_action_writes_what_the_per_site_roles_write(skip_mesh, tmp_path):
    per_site, action = tmp_path / 'per-site', tmp_path / 'action'
    rc, output = run(skip_mesh, qsafe_render_per_site=True, qsafe_output_dir=str(per_site))
    assert rc == 0, output
    rc, output = run(skip_mesh, qsafe_output_dir=str(action))
    assert rc == 0, output
    expected, got = tree(per_site), tree(action)
    assert sorted(got) == sorted(expected) and 'mad-1/ios_xe.cfg' in got
    for path in expected:
        assert got[path] == expected[path], '%s differs from what the roles write (mode or content)' % path
    assert 'ppk dynamic QSAFE-SKIP required' in (action / 'mad-2' / 'ios_xe.cfg').read_text()


def test_a_skip_router_without_its_psk_is_named(skip_mesh, tmp_path):
    hosts_file = skip_mesh['inventory'] / 'hosts.yml'
    original = hosts_file.read_text()
    hosts = yaml.safe_load(original)
    del hosts['all']['children']['qsafe_sites']['hosts']['mad-2']['qsafe_site_skip_psk_hex']
    hosts_file.write_text(yaml.safe_dump(hosts))
    try:
        rc, output = run(skip_mesh, qsafe_output_dir=str(tmp_path / 'out'))
    finally:
        hosts_file.write_text(original)
    assert rc != 0 and 'dmvpn_ios_xe_skip_clients[0].psk_hex (client QSAFE-SKIP)' in output, output
    for psk in skip_mesh['psks'].values():
        assert psk not in output


@pytest.mark.parametrize('master, slave, interfaces', [
    ('SAE-MAD-1', 'SAE-MAD-2', ('skip', 'skip')),
    ('SAE-MAD-1', 'SAE-MAD-3', ('skip', 'etsi014')),
    ('SAE-MAD-3', 'SAE-MAD-2', ('etsi014', 'skip')),
])
def test_node_local_flow_over_skip(skip_mesh, tmp_path, master, slave, interfaces):
    """Each node fetches its QKD key over its own interface (hybrid_link_key); both derive the same key."""
    link_id = 'NL-SKIP-%s-%s' % (master[-1], slave[-1])
    nodes = {}
    for group, name, sae, interface in (('qsafe_link_master', 'master-node', master, interfaces[0]),
                                        ('qsafe_link_slave', 'slave-node', slave, interfaces[1])):
        nodes[group] = {'hosts': {name: {'ansible_connection': 'local', 'qsafe_sae_id': sae,
                                         'qsafe_interface': interface, 'qsafe_key_dir': str(tmp_path / name)}}}
    inventory = tmp_path / 'inventory.yml'
    inventory.write_text(json.dumps({'all': {'vars': {'qsafe_link_id': link_id}, 'children': nodes}}))
    rc, output = ansible_playbook(os.path.join(REPO_ROOT, 'playbooks', 'node_local_link_key.yml'), '-i', str(inventory),
                                  '-e', 'qsafe_endpoints_file=%s' % skip_mesh['process'].endpoints_file, '--diff')
    assert rc == 0, output
    ends = [json.loads((tmp_path / node / (link_id + '.json')).read_text()) for node in ('master-node', 'slave-node')]
    assert ends[0]['kcv'] == ends[1]['kcv'] and 'qkd' in ends[0]['sources']
    assert ends[0]['qkd_key_ids'] == ends[1]['qkd_key_ids']
    for spelling in key_spellings(bytes.fromhex(ends[0]['key'])):
        assert spelling not in output
    log = skip_mesh['process'].log_file.read_text()
    for sae, interface in ((master, interfaces[0]), (slave, interfaces[1])):
        if interface == 'skip':
            assert re.search(r' KME-%s/skip %s GET /key' % (sae[4:], sae), log), sae
