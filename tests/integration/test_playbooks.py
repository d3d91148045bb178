"""The collection's modules and playbooks driven through ansible-playbook against the simulator."""

import base64
import json
import os
import stat

import pytest

from playbook_support import REPO_ROOT, ansible_playbook, key_spellings, recap, run_tasks
from simulator_support import enc_keys_served

PLAYBOOK = os.path.join(REPO_ROOT, 'playbooks', 'qkd_key_pair.yml')


def bundle_keys(path):
    with open(path) as handle:
        return [base64.b64decode(entry['key']) for entry in json.load(handle)['keys']]


@pytest.fixture
def pair_vars(simulator, tmp_path):
    return dict(qsafe_endpoints_file=simulator['endpoints_file'], qsafe_key_dir=str(tmp_path / 'keys'),
                qsafe_master_sae='SAE-MAD-1', qsafe_slave_sae='SAE-MAD-3', qsafe_key_number=3)


def test_key_pair_playbook_keys_both_ends_and_leaks_no_key_byte(simulator, pair_vars):
    rc, output = ansible_playbook(PLAYBOOK, '-vvvv', '--diff', extra_vars=pair_vars)
    assert rc == 0, output
    key_dir = pair_vars['qsafe_key_dir']
    master_file = os.path.join(key_dir, 'SAE-MAD-1--SAE-MAD-3.master.json')
    slave_file = os.path.join(key_dir, 'SAE-MAD-1--SAE-MAD-3.slave.json')
    for path in (master_file, slave_file):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    keys = bundle_keys(master_file)
    assert len(keys) == 3 and keys == bundle_keys(slave_file)
    with open(simulator['log_file']) as handle:
        sim_log = handle.read()
    for key in keys:
        for spelling in key_spellings(key):
            assert spelling not in output, 'key bytes in the playbook output'
            assert spelling not in sim_log, 'key bytes in the simulator log'
    assert 'key_check_values' in output


def test_second_run_changes_nothing_and_consumes_no_key(simulator, pair_vars):
    start = enc_keys_served(simulator, 'SAE-MAD-1', 'SAE-MAD-3')
    assert ansible_playbook(PLAYBOOK, extra_vars=pair_vars)[0] == 0
    before = enc_keys_served(simulator, 'SAE-MAD-1', 'SAE-MAD-3')
    assert before == start + 3  # the count sees this pair's keys: the first run fetched qsafe_key_number of them
    master_file = os.path.join(pair_vars['qsafe_key_dir'], 'SAE-MAD-1--SAE-MAD-3.master.json')
    keys = bundle_keys(master_file)
    rc, output = ansible_playbook(PLAYBOOK, extra_vars=pair_vars)
    assert rc == 0 and recap(output)['changed'] == 0, output
    assert bundle_keys(master_file) == keys
    assert enc_keys_served(simulator, 'SAE-MAD-1', 'SAE-MAD-3') == before, 'the second run fetched a key'


def test_force_rekeys(simulator, pair_vars):
    assert ansible_playbook(PLAYBOOK, extra_vars=pair_vars)[0] == 0
    master_file = os.path.join(pair_vars['qsafe_key_dir'], 'SAE-MAD-1--SAE-MAD-3.master.json')
    old = bundle_keys(master_file)
    rc, output = ansible_playbook(PLAYBOOK, extra_vars=dict(pair_vars, qsafe_key_force=True))
    assert rc == 0, output
    new = bundle_keys(master_file)
    assert new != old and new == bundle_keys(master_file.replace('.master.', '.slave.'))


def test_check_mode_consumes_no_key_and_writes_nothing(simulator, pair_vars):
    before = enc_keys_served(simulator, 'SAE-MAD-2', 'SAE-MAD-3')
    rc, output = ansible_playbook(PLAYBOOK, '--check', '--diff', extra_vars=dict(
        pair_vars, qsafe_master_sae='SAE-MAD-2', qsafe_slave_sae='SAE-MAD-3'))
    assert rc == 0, output
    assert not os.path.exists(os.path.join(pair_vars['qsafe_key_dir'], 'SAE-MAD-2--SAE-MAD-3.master.json'))
    assert enc_keys_served(simulator, 'SAE-MAD-2', 'SAE-MAD-3') == before, 'check mode fetched a key'
    assert recap(output)['changed'] >= 1


@pytest.mark.parametrize('task, message', [
    ('''\
     - qsafe.keyfabric.qkd_key:
         endpoints_file: "{endpoints}"
         sae_id: SAE-MAD-1
         role: master
         peer_sae_id: SAE-NOBODY
         dest: "{tmp}/k.json"
     ''', 'refused (HTTP 400)'),
    ('''\
     - qsafe.keyfabric.qkd_key:
         endpoints_file: "{endpoints}"
         sae_id: SAE-MAD-2
         role: slave
         peer_sae_id: SAE-MAD-1
         key_ids: [00000000-0000-4000-8000-000000000000]
         dest: "{tmp}/k.json"
     ''', '00000000-0000-4000-8000-000000000000'),
    ('''\
     - qsafe.keyfabric.qkd_link_info:
         endpoints_file: "{endpoints}"
         sae_id: SAE-NOT-IN-MANIFEST
         peer_sae_id: SAE-MAD-2
     ''', 'SAE-NOT-IN-MANIFEST is not in endpoints_file'),
    ('''\
     - qsafe.keyfabric.qkd_link_info:
         endpoints_file: "{endpoints}"
         sae_id: SAE-MAD-1
         client_cert: "{rogue_cert}"
         client_key: "{rogue_key}"
         peer_sae_id: SAE-MAD-2
     ''', 'rejected the client certificate'),
    ('''\
     - qsafe.keyfabric.qkd_key:
         endpoints_file: "{endpoints}"
         sae_id: SAE-MAD-1
         role: master
         peer_sae_id: SAE-MAD-2
         dest: "{tmp}/no/such/dir/k.json"
     ''', 'does not exist'),
])
def test_module_errors_are_clear_and_have_no_traceback(simulator, tmp_path, task, message):
    material = simulator['test_material']
    rc, output = run_tasks(tmp_path, task.format(
        endpoints=simulator['endpoints_file'], tmp=tmp_path, rogue_cert=material['rogue_client_cert'],
        rogue_key=material['rogue_client_key']))
    assert rc != 0 and message in output, output
    assert 'Traceback' not in output and 'MODULE FAILURE' not in output


def test_returned_keys_only_on_request(simulator, tmp_path):
    rc, output = run_tasks(tmp_path, '''\
        - qsafe.keyfabric.qkd_key:
            endpoints_file: "{endpoints}"
            sae_id: SAE-MAD-2
            role: master
            peer_sae_id: SAE-MAD-3
            return_keys: true
          register: got
          no_log: true
        - ansible.builtin.assert:
            that:
              - got.key_material | length == 1
              - got.key_material[0].key | length == 44
              - got.keys_info[0].size == 256
        '''.format(endpoints=simulator['endpoints_file']), '-vvv')
    assert rc == 0, output
    assert 'censored' in output
