"""playbooks/full_mesh.yml on the paper's five sites: render, idempotence, GitOps changes, secrets."""

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from macsec_support import ios_xe_ends, linux_ends
from playbook_support import REPO_ROOT, ansible_playbook, keyed_now, key_spellings, run
from simulator_support import enc_keys_served

PAPER_LINKS = ['mad-1--mad-2', 'mad-1--mad-3', 'mad-1--mex-1', 'mad-1--nsp-1', 'mad-2--mad-3',
               'mad-2--mex-1', 'mad-2--nsp-1', 'mad-3--mex-1', 'mad-3--nsp-1', 'mex-1--nsp-1']


def rendered(mesh):
    files = {}
    for root, dirs, names in os.walk(str(mesh['out'])):
        for name in names:
            path = os.path.join(root, name)
            with open(path) as handle:
                files[os.path.relpath(path, str(mesh['out']))] = handle.read()
    return files


def stored_keys(mesh):
    return dict((name, json.loads((mesh['store'] / name).read_text())['key'])
                for name in sorted(os.listdir(str(mesh['store']))) if not name.endswith('.previous.json'))


def test_five_sites_render_and_no_key_byte_is_shown(mesh):
    rc, output = run(mesh, '-vvvv', '--diff')
    assert rc == 0, output
    assert keyed_now(output) == PAPER_LINKS
    files = rendered(mesh)
    assert sorted(set(path.split(os.sep)[0] for path in files)) == ['mad-1', 'mad-2', 'mad-3', 'mex-1', 'nsp-1']
    for key in stored_keys(mesh).values():
        for spelling in key_spellings(bytes.fromhex(key)):
            assert spelling not in output
    from ansible_collections.qsafe.keyfabric.plugins.filter.link_secrets import link_secrets
    for name in os.listdir(str(mesh['store'])):
        record = json.loads((mesh['store'] / name).read_text())
        secrets = link_secrets(record)
        for secret in (secrets['ppk_hex'], secrets['ike_psk_hex'], secrets['macsec_cak_hex']):
            assert secret not in output and secret.upper() not in output
        # both ends' configurations carry the link's PPK ID
        ends = record['link_id'].split('--')
        assert all(any(secrets['ppk_id'] in text or secrets['macsec_ckn_hex'] in text.lower()
                       for path, text in files.items() if path.startswith(end + os.sep)) for end in ends), record['link_id']


def test_second_run_changes_nothing_and_spends_no_key(mesh):
    assert run(mesh)[0] == 0
    before, keys = rendered(mesh), stored_keys(mesh)
    rc, output = run(mesh)
    assert rc == 0, output
    assert keyed_now(output) == []
    assert re.search(r'localhost\s*:\s*ok=\d+\s+changed=0', output), output
    assert rendered(mesh) == before and stored_keys(mesh) == keys
    # the per-site path agrees (the same files, nothing to change)
    rc, output = run(mesh, qsafe_render_per_site=True)
    assert rc == 0, output
    for site in ('localhost', 'mad-1', 'mad-2', 'mad-3', 'nsp-1', 'mex-1'):
        assert re.search(r'%s\s*:\s*ok=\d+\s+changed=0' % site, output), output
    assert rendered(mesh) == before and stored_keys(mesh) == keys


@pytest.fixture
def five_plus_one(tmp_path):
    """The simulator's default network plus a sixth site, MAD-4, that has no QKD link."""
    import yaml
    from qkdsim.process import SimulatorProcess
    with open(os.path.join(REPO_ROOT, 'qkdsim', 'default_topology.yml')) as handle:
        topology = yaml.safe_load(handle)
    topology['sites'].append(dict(id='MAD-4', name='Madrid campus D', location='Madrid, ES'))
    path = tmp_path / 'six.yml'
    path.write_text(yaml.safe_dump(topology))
    process = SimulatorProcess(tmp_path / 'sim6', topology=path)
    yield dict(process.endpoints, endpoints_file=str(process.endpoints_file))
    assert process.stop() == 0


def test_adding_and_removing_a_site_touches_only_what_it_must(mesh, five_plus_one):
    mesh['simulator'] = five_plus_one
    assert run(mesh)[0] == 0
    keys = stored_keys(mesh)
    hosts = (mesh['inventory'] / 'hosts.yml').read_text()
    added = hosts.replace('        mex-1:', '''        mad-4:
          qsafe_site_platform: linux
          qsafe_site_sae_id: SAE-MAD-4
          qsafe_site_underlay_ip: 198.51.100.14
          qsafe_site_tunnel_ip: 100.64.0.6
        mex-1:''')
    (mesh['inventory'] / 'hosts.yml').write_text(added)
    # MAD-4 is no site of the simulator's default network: its links need no QKD (pqc policy).
    group_vars = mesh['inventory'] / 'group_vars' / 'all.yml'
    mesh_vars = group_vars.read_text()
    group_vars.write_text(mesh_vars + ''.join(
        '    - {sites: [%s, mad-4], policy: pqc}\n' % site for site in ('mad-1', 'mad-2', 'mad-3')) +
        '    - {sites: [mad-4, mex-1], policy: pqc}\n    - {sites: [mad-4, nsp-1], policy: pqc}\n')
    rc, output = run(mesh)
    assert rc == 0, output
    assert keyed_now(output) == ['mad-1--mad-4', 'mad-2--mad-4', 'mad-3--mad-4', 'mad-4--mex-1', 'mad-4--nsp-1']
    new_keys = stored_keys(mesh)
    assert all(new_keys[name] == key for name, key in keys.items())

    (mesh['inventory'] / 'hosts.yml').write_text(hosts)
    group_vars.write_text(mesh_vars)
    rc, output = run(mesh)
    assert rc == 0, output
    assert keyed_now(output) == [] and stored_keys(mesh) == keys
    others = dict((path, text) for path, text in rendered(mesh).items() if not path.startswith('mad-4' + os.sep))
    assert others and not any('mad-4' in text or '198.51.100.14' in text for text in others.values())


def test_rotation_rekeys_only_the_links_named(mesh):
    assert run(mesh)[0] == 0
    keys = stored_keys(mesh)
    rc, output = run(mesh, qsafe_rotate=['mad-1--mad-3'])
    assert rc == 0, output
    assert keyed_now(output) == ['mad-1--mad-3']
    after = stored_keys(mesh)
    assert after['mad-1--mad-3.json'] != keys['mad-1--mad-3.json']
    assert all(after[name] == key for name, key in keys.items() if name != 'mad-1--mad-3.json')
    assert (mesh['store'] / 'mad-1--mad-3.previous.json').exists()


def macsec_mesh(mesh):
    """The paper's mesh with a second MACsec link, mad-1 (IOS-XE) to mad-3 (Linux, wpa_supplicant): a suite both run."""
    hosts = mesh['inventory'] / 'hosts.yml'
    hosts.write_text(hosts.read_text().replace(
        '            mad-2: TenGigabitEthernet0/0/1\n', '            mad-2: TenGigabitEthernet0/0/1\n'
        '            mad-3: TenGigabitEthernet0/0/2\n').replace(
        '          qsafe_site_sae_id: SAE-MAD-3\n', '          qsafe_site_sae_id: SAE-MAD-3\n'
        '          qsafe_site_macsec_interfaces:\n            mad-1: eth1\n'))
    group_vars = mesh['inventory'] / 'group_vars' / 'all.yml'
    group_vars.write_text(group_vars.read_text().replace('  tunnel_mask: 255.255.255.0\n', '  tunnel_mask: 255.255.255.0\n'
                                                         '  cipher_suite: gcm-aes-256\n')
                          + '    - {sites: [mad-1, mad-3], type: ipsec+macsec}\n')


def assert_nothing_changed(output):
    """Every host in the play recap (the controller, and the sites when they are rendered per site) changed nothing."""
    recap = dict((host, int(changed)) for host, changed in re.findall(r'^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)', output, re.M))
    assert 'localhost' in recap and not any(recap.values()), output


def macsec_keys(mesh, link_id):
    """The link's MACsec CKN and CAK, from its stored key: (current, previous or None)."""
    from ansible_collections.qsafe.keyfabric.plugins.filter.link_secrets import link_secrets
    from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_key_store import read_link_key
    pairs = []
    for name in ('%s.json' % link_id, '%s.previous.json' % link_id):
        record = read_link_key(str(mesh['store'] / name))
        secrets = link_secrets(record) if record else None
        pairs.append(secrets and (secrets['macsec_ckn_hex'], secrets['macsec_cak_hex'], record))
    return pairs


def macsec_ends(mesh):
    """Each MACsec link end as its device reads it: {(site, link_id): end} (see test_role_macsec_link)."""
    ends = {}
    for site in ('mad-1', 'mad-2'):
        with open(str(mesh['out'] / site / 'macsec-ios_xe.cfg')) as handle:
            for link_id, end in ios_xe_ends(handle.read()).items():
                ends[(site, link_id.lower())] = end
    files = dict((path.name, path.read_text()) for path in (mesh['out'] / 'mad-3').glob('macsec-*.conf'))
    for link_id, end in linux_ends(files).items():
        ends[('mad-3', link_id)] = end
    return ends


def test_macsec_rotation_is_make_before_break_and_the_previous_key_goes_after_the_window(mesh):
    """After a rotation both ends of each MACsec link hold the old and the new key, with the same rollover time
    (the new key's creation in the key store plus qsafe_previous_key_lifetime, an hour by default); reruns in the
    window change nothing; the first run after it renders the new key alone and removes the old key from the
    store; the run after that changes nothing."""
    macsec_mesh(mesh)
    rc, output = run(mesh)
    assert rc == 0, output
    links = {'mad-1--mad-2': ('mad-1', 'mad-2'), 'mad-1--mad-3': ('mad-1', 'mad-3')}
    first = dict((link_id, macsec_keys(mesh, link_id)[0]) for link_id in links)
    ends = macsec_ends(mesh)
    for link_id, sites in links.items():
        for site in sites:
            assert (ends[(site, link_id)]['ckn'], ends[(site, link_id)]['cak']) == first[link_id][:2]
            assert 'previous' not in ends[(site, link_id)]

    rc, output = run(mesh, '-vvvv', '--diff', qsafe_rotate=list(links))
    assert rc == 0, output
    assert keyed_now(output) == sorted(links)
    ends = macsec_ends(mesh)
    for link_id, sites in links.items():
        (ckn, cak, record), (old_ckn, old_cak, old_record) = macsec_keys(mesh, link_id)
        assert ckn != first[link_id][0] and (old_ckn, old_cak) == first[link_id][:2]
        active_from = record['created'] + 3600
        for site in sites:
            end = ends[(site, link_id)]
            assert (end['ckn'], end['cak']) == (ckn, cak), (site, link_id)
            assert (end['previous']['ckn'], end['previous']['cak']) == (old_ckn, old_cak), (site, link_id)
            if site == 'mad-3':
                assert end['running'] == old_ckn, 'wpa_supplicant stays on the old key until the switch'
            else:
                assert end['previous']['lifetime'][1] == active_from and end['lifetime'] == (active_from - 60, None)
        for secret in (cak, old_cak, record['key'], old_record['key']):
            for spelling in key_spellings(bytes.fromhex(secret)):
                assert spelling not in output, 'a key in the playbook output'
        # mesh_render reports the rotation by its public lines: the link's new CKN beside the previous one
        assert re.search(r'qsafe-link link_id=%s .*ckn=%s .*previous_ckn=%s' % (link_id, ckn, old_ckn), output), output

    window = rendered(mesh)
    rc, output = run(mesh)
    assert rc == 0, output
    assert_nothing_changed(output)
    assert rendered(mesh) == window, 'a rerun inside the window renders the same files'

    # An hour later (the store's rotation times moved back by two hours): the new keys alone.
    from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_key_store import read_link_key, write_link_key
    for link_id in links:
        path = str(mesh['store'] / ('%s.json' % link_id))
        record = read_link_key(path)
        write_link_key(path, dict(record, created=record['created'] - 7200))
    rc, output = run(mesh)
    assert rc == 0, output
    assert keyed_now(output) == []
    ends = macsec_ends(mesh)
    for link_id, sites in links.items():
        (ckn, cak, record), previous = macsec_keys(mesh, link_id)
        assert previous is None, 'the old key is removed from the key store'
        for site in sites:
            end = ends[(site, link_id)]
            assert 'previous' not in end and (end['ckn'], end['cak']) == (ckn, cak), (site, link_id)
            if site != 'mad-3':
                assert end['lifetime'] == (record['created'] + 3600 - 60, None), 'the key keeps its lifetime'
        assert not any(first[link_id][1] in text for text in rendered(mesh).values()), 'an old CAK is left'
    after = rendered(mesh)
    rc, output = run(mesh)
    assert rc == 0, output
    assert_nothing_changed(output)
    assert rendered(mesh) == after


def test_check_mode_spends_no_key_and_writes_nothing(mesh):
    rc, output = run(mesh, '--check')
    assert rc == 0, output
    assert not mesh['out'].exists() or rendered(mesh) == {}
    assert list(mesh['store'].iterdir()) == []
    assert '"would_key": [' in output


@pytest.mark.parametrize('edit, message', [
    (lambda text: text.replace('          qsafe_site_sae_id: SAE-MAD-3\n', ''), 'mad-3'),
    (lambda text: text.replace('qsafe_site_tunnel_ip: 100.64.0.5', 'qsafe_site_tunnel_ip: 100.64.0.1'),
     'have the same qsafe_site_tunnel_ip'),
    (lambda text: text.replace('qsafe_site_platform: linux', 'qsafe_site_platform: vyos', 1), 'qsafe_site_platform'),
])
def test_wrong_inventory_fails_early_naming_site_and_field(mesh, edit, message):
    hosts = mesh['inventory'] / 'hosts.yml'
    hosts.write_text(edit(hosts.read_text()))
    rc, output = run(mesh)
    assert rc != 0 and message in output, output
    assert not mesh['store'].exists() or list(mesh['store'].iterdir()) == []
    assert 'Traceback' not in output


def qkd_keys_served(mesh, records):
    """QKD keys the simulator has served per link so far (enc_keys to the link's master for its slave)."""
    return dict((record['link_id'], enc_keys_served(mesh['simulator'], record['master_id'], record['slave_id']))
                for record in records)


def stored_records(mesh):
    from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_key_store import read_link_key
    return [read_link_key(str(mesh['store'] / name)) for name in sorted(os.listdir(str(mesh['store'])))
            if name.endswith('.json') and not name.endswith('.previous.json')]


def test_three_runs_at_once_on_one_key_store_key_each_link_once(mesh, tmp_path):
    """Three full_mesh.yml processes start together on one key store (each renders into its own directory):
    each link is keyed by one of them - one QKD key per link - and the others wait for it and reuse its key."""
    # The QKD keys served so far to each link's master for its slave (the simulator is shared by the session).
    ends = [link.upper().split('--') for link in PAPER_LINKS]
    pairs = [dict(link_id=link, master_id='SAE-' + master, slave_id='SAE-' + slave)
             for link, (master, slave) in zip(PAPER_LINKS, ends)]
    before = qkd_keys_served(mesh, pairs)

    outs = [tmp_path / ('out-%d' % number) for number in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(lambda out: run(mesh, qsafe_output_dir=str(out)), outs))
    for rc, output in outcomes:
        assert rc == 0, output
    records = stored_records(mesh)
    assert sorted(record['link_id'] for record in records) == sorted(pair['link_id'] for pair in pairs)
    after = qkd_keys_served(mesh, records)
    spent = dict((link_id, after[link_id] - before[link_id]) for link_id in after)
    assert spent == dict((record['link_id'], 1 if 'qkd' in record['sources'] else 0) for record in records), spent
    assert sum(spent.values()) >= 4, 'the mesh has QKD links'
    assert all(record['generation'] == 1 for record in records)
    assert not [name for name in os.listdir(str(mesh['store'])) if not name.endswith('.json') or 'previous' in name]
    # Every link keyed once, by one run; together the runs keyed each link once.
    keyed = sorted(link for rc, output in outcomes for link in keyed_now(output))
    assert keyed == sorted(record['link_id'] for record in records), keyed
    renders = [rendered(dict(mesh, out=out)) for out in outs]
    assert renders[0] and renders[0] == renders[1] == renders[2], 'all three rendered the same keys'


def test_a_flipped_bit_in_a_stored_key_fails_the_run_naming_the_link_and_renders_nothing(mesh):
    assert run(mesh)[0] == 0
    records = stored_records(mesh)
    before = rendered(mesh)
    mtimes = dict((path, os.stat(str(mesh['out'] / path)).st_mtime_ns) for path in before)
    served = qkd_keys_served(mesh, records)
    path = mesh['store'] / 'mad-1--mad-2.json'
    record = json.loads(path.read_text())
    good = record['key']
    key = bytearray(bytes.fromhex(good))
    key[7] ^= 0x04
    record['key'] = bytes(key).hex()
    path.write_text(json.dumps(record))

    rc, output = run(mesh, '-vvv')
    assert rc != 0, output
    assert 'mad-1--mad-2' in output and str(path) in output and 'damaged' in output, output
    assert 'Traceback' not in output
    for secret in (good, record['key']):
        for spelling in key_spellings(bytes.fromhex(secret)):
            assert spelling not in output, 'a key in the playbook output'
    assert rendered(mesh) == before, 'no configuration was rendered from the damaged key'
    assert dict((name, os.stat(str(mesh['out'] / name)).st_mtime_ns) for name in before) == mtimes
    assert qkd_keys_served(mesh, records) == served, 'no QKD key was spent'

    # The render step alone (mesh_render reads the keys an earlier play made): it refuses the key too.
    playbook = mesh['inventory'] / 'render_only.yml'
    playbook.write_text(json.dumps([dict(hosts='localhost', connection='local', gather_facts=False, tasks=[
        {'ansible.builtin.set_fact': {'plan': "{{ groups['qsafe_sites'] | qsafe.keyfabric.mesh_plan(hostvars, "
                                              "qsafe_mesh | default({})) }}"}},
        {'qsafe.keyfabric.mesh_render': {'plan': '{{ plan }}', 'key_store': str(mesh['store']),
                                         'output_dir': str(mesh['out'])}}])]))
    rc, output = ansible_playbook(str(playbook), '-i', str(mesh['inventory']))
    assert rc != 0 and 'mad-1--mad-2' in output and str(path) in output and 'damaged' in output, output
    assert 'Traceback' not in output and good not in output and record['key'] not in output
    assert rendered(mesh) == before
