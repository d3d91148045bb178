"""The mesh_render action (full_mesh.yml's render mode) against the per-site role path it replaces.

Both must write the same files, byte for byte and mode for mode: the action renders the roles' own
templates with their own variables, so a difference means it no longer follows the roles.
"""

import json
import os

import pytest
import yaml

from playbook_support import key_spellings, run, tree


@pytest.fixture
def varied_mesh(mesh):  # noqa: F811
    """The paper's mesh plus a Linux MACsec link and a host variable of a platform role."""
    hosts_file = mesh['inventory'] / 'hosts.yml'
    hosts = yaml.safe_load(hosts_file.read_text())
    sites = hosts['all']['children']['qsafe_sites']['hosts']
    sites['mad-3']['qsafe_site_macsec_interfaces'] = {'nsp-1': 'eth1'}
    sites['nsp-1']['qsafe_site_macsec_interfaces'] = {'mad-3': 'eth2'}
    sites['mad-2']['dmvpn_ios_xe_tunnel_interface'] = 'Tunnel200'   # inventory over the role's default
    hosts_file.write_text(yaml.safe_dump(hosts))
    group_file = mesh['inventory'] / 'group_vars' / 'all.yml'
    group = yaml.safe_load(group_file.read_text())
    group['qsafe_mesh']['cipher_suite'] = 'gcm-aes-256'   # Linux (wpa_supplicant) has no XPN suite
    for override in group['qsafe_mesh']['link_overrides']:
        if sorted(override['sites']) == ['mad-3', 'nsp-1']:
            override['type'] = 'ipsec+macsec'
    group_file.write_text(yaml.safe_dump(group))
    return mesh


def test_the_action_writes_what_the_per_site_roles_write(varied_mesh, tmp_path):
    per_site = tmp_path / 'per-site'
    rc, output = run(varied_mesh, qsafe_render_per_site=True, qsafe_output_dir=str(per_site))
    assert rc == 0, output
    rc, output = run(varied_mesh, '-v')
    assert rc == 0, output
    expected, got = tree(per_site), tree(varied_mesh['out'])
    assert sorted(got) == sorted(expected)
    assert 'mad-3/macsec-mad-3--nsp-1.conf' in got and 'mad-2/ios_xe.cfg' in got
    assert 'interface Tunnel200' in (varied_mesh['out'] / 'mad-2' / 'ios_xe.cfg').read_text()
    for path in expected:
        assert got[path][0] == expected[path][0], '%s: mode %o, the roles write %o' % (path, got[path][0], expected[path][0])
        assert got[path][1] == expected[path][1], '%s differs from what the roles write' % path
    assert all(mode == 0o600 for path, (mode, data) in got.items() if not path.endswith(('swanctl.conf', 'qsafe-mesh.conf')))


def test_a_second_run_writes_nothing_and_a_removed_link_takes_its_files(varied_mesh):
    assert run(varied_mesh)[0] == 0
    before = tree(varied_mesh['out'])
    rc, output = run(varied_mesh, '-v')
    assert rc == 0, output
    assert 'changed=0' in output.replace(' ', '').replace('changed=0unreachable', 'changed=0 unreachable'), output
    assert tree(varied_mesh['out']) == before

    group_file = varied_mesh['inventory'] / 'group_vars' / 'all.yml'
    group = yaml.safe_load(group_file.read_text())
    for override in group['qsafe_mesh']['link_overrides']:
        if sorted(override['sites']) == ['mad-3', 'nsp-1']:
            override['type'] = 'ipsec'
    group_file.write_text(yaml.safe_dump(group))
    rc, output = run(varied_mesh, '-v')
    assert rc == 0, output
    after = tree(varied_mesh['out'])
    assert not {'mad-3/macsec-mad-3--nsp-1.conf', 'nsp-1/macsec-mad-3--nsp-1.conf'} & set(after)
    assert '"mad-3/macsec-mad-3--nsp-1.conf"' in output   # reported as removed, by name
    unchanged = [path for path in before if path.split(os.sep)[0] not in ('mad-3', 'nsp-1')]
    assert all(after[path] == before[path] for path in unchanged)


def test_bad_role_input_fails_naming_site_and_field_and_writes_nothing(mesh, tmp_path):  # noqa: F811
    assert run(mesh)[0] == 0
    before = tree(mesh['out'])
    hosts_file = mesh['inventory'] / 'hosts.yml'
    hosts = yaml.safe_load(hosts_file.read_text())
    hosts['all']['children']['qsafe_sites']['hosts']['mex-1']['dmvpn_ios_xe_tunnel_interface'] = 'Tun 1'
    hosts['all']['children']['qsafe_sites']['hosts']['nsp-1']['strongswan_site_local_id'] = 'nsp 1'
    hosts_file.write_text(yaml.safe_dump(hosts))
    rc, output = run(mesh)
    assert rc != 0, output
    assert 'site mex-1: dmvpn_ios_xe: dmvpn_ios_xe_tunnel_interface: must be Tunnel<number>, got Tun 1' in output, output
    assert 'site nsp-1: strongswan_site: strongswan_site_local_id must be one word' in output, output
    assert 'Traceback' not in output
    assert tree(mesh['out']) == before


def test_bad_macsec_input_fails_naming_site_and_field_and_writes_nothing(varied_mesh):
    """macsec_link's checks (Python now, in mesh_inventory) reach the action as the other roles' do."""
    hosts_file = varied_mesh['inventory'] / 'hosts.yml'
    hosts = yaml.safe_load(hosts_file.read_text())
    hosts['all']['children']['qsafe_sites']['hosts']['nsp-1']['macsec_link_key_server_priority'] = 300
    hosts_file.write_text(yaml.safe_dump(hosts))
    rc, output = run(varied_mesh)
    assert rc != 0, output
    assert 'site nsp-1: macsec_link: macsec_link_key_server_priority must be from 0 to 255' in output, output
    assert 'Traceback' not in output
    assert tree(varied_mesh['out']) == {}


def test_check_mode_reports_and_writes_nothing_and_no_key_is_shown(mesh):  # noqa: F811
    assert run(mesh)[0] == 0
    before = tree(mesh['out'])
    for path in list(before)[:2]:
        os.unlink(str(mesh['out'] / path))
    rc, output = run(mesh, '--check', '--diff', '-vvvv')
    assert rc == 0, output
    assert tree(mesh['out']) == dict((path, value) for path, value in before.items() if path not in list(before)[:2])
    assert all(json.dumps(path) in output for path in list(before)[:2]), output
    from ansible_collections.qsafe.keyfabric.plugins.filter.link_secrets import link_secrets
    for name in os.listdir(str(mesh['store'])):
        record = json.loads((mesh['store'] / name).read_text())
        assert not any(spelling in output for spelling in key_spellings(bytes.fromhex(record['key'])))
        secrets = link_secrets(record)
        for secret in (secrets['ppk_hex'], secrets['ike_psk_hex'], secrets['macsec_cak_hex']):
            assert not any(spelling in output for spelling in key_spellings(bytes.fromhex(secret)))


ROLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'roles')


def tasks_of(role):
    """{tasks file name: [task, ...]} of a role, blocks flattened."""
    found = {}
    for name in sorted(os.listdir(os.path.join(ROLES_DIR, role, 'tasks'))):
        with open(os.path.join(ROLES_DIR, role, 'tasks', name)) as handle:
            pending, flat = list(yaml.safe_load(handle) or []), []
        while pending:
            task = pending.pop(0)
            flat.append(task)
            pending[:0] = list(task.get('block') or []) + list(task.get('rescue') or []) + list(task.get('always') or [])
        found[name] = flat
    return found


@pytest.mark.parametrize('role', ['dmvpn_ios_xe', 'strongswan_site', 'macsec_link'])
def test_each_role_writes_only_the_files_it_declares_once(role):
    """The files a role renders are declared once (_<role>_outputs), and its tasks loop over that
    declaration - the mesh_render action reads the same variable, so there is nothing to keep equal."""
    with open(os.path.join(ROLES_DIR, role, 'vars', 'main.yml')) as handle:
        assert '_%s_outputs' % role in yaml.safe_load(handle)
    writers = [(name, task) for name, tasks in tasks_of(role).items() if not name.startswith('push')
               for task in tasks if 'ansible.builtin.template' in task]
    assert writers
    for name, task in writers:
        assert '_%s_outputs.files' % role in task['loop'], (name, task['name'])
        loop_var = task['loop_control']['loop_var']
        assert task['ansible.builtin.template']['src'] == '{{ %s.src }}' % loop_var, (name, task['name'])
        assert task['ansible.builtin.template']['dest'] == '{{ %s.dest }}' % loop_var, (name, task['name'])
        secret = "selectattr('secret')" in task['loop']
        assert secret or "rejectattr('secret')" in task['loop'], (name, task['name'])
        assert not secret or (task['no_log'] is True and task['diff'] is False), (name, task['name'])
