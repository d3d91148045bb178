"""The node-local flow: each end derives the link key itself; only public values pass through."""

import json
import os
import re

import pytest

from playbook_support import REPO_ROOT, ansible_playbook, key_spellings, recap, run_tasks

PLAYBOOK = os.path.join(REPO_ROOT, 'playbooks', 'node_local_link_key.yml')


def inventory(tmp_path, link_id, master='SAE-MAD-1', slave='SAE-MAD-2'):
    path = tmp_path / 'inventory.yml'
    path.write_text(json.dumps({'all': {'vars': {'qsafe_link_id': link_id}, 'children': {
        'qsafe_link_master': {'hosts': {'master-node': {
            'ansible_connection': 'local', 'qsafe_sae_id': master, 'qsafe_key_dir': str(tmp_path / 'master')}}},
        'qsafe_link_slave': {'hosts': {'slave-node': {
            'ansible_connection': 'local', 'qsafe_sae_id': slave, 'qsafe_key_dir': str(tmp_path / 'slave')}}},
    }}}))
    return str(path)


def link_file(tmp_path, end, link_id):
    with open(str(tmp_path / end / (link_id + '.json'))) as handle:
        return json.load(handle)


def test_both_nodes_derive_the_same_key_and_no_secret_is_shown(simulator, tmp_path):
    rc, output = ansible_playbook(PLAYBOOK, '-i', inventory(tmp_path, 'NL-1'), '-vvvv', '--diff',
                                  '-e', 'qsafe_endpoints_file=%s' % simulator['endpoints_file'])
    assert rc == 0, output
    master, slave = link_file(tmp_path, 'master', 'NL-1'), link_file(tmp_path, 'slave', 'NL-1')
    assert master['key'] == slave['key'] and master['kcv'] == slave['kcv'] and master['ppk_id'] == slave['ppk_id']
    assert sorted(master['sources']) == ['classical', 'pqc', 'qkd'] and master['qkd_key_ids'] == slave['qkd_key_ids']
    for path in ('master/NL-1.json', 'slave/NL-1.json', 'slave/kem.key', 'slave/x25519.key'):
        assert oct(os.stat(str(tmp_path / path)).st_mode & 0o777) == '0o600'
    secrets = [bytes.fromhex(master['key']), (tmp_path / 'slave' / 'kem.key').read_bytes(),
               (tmp_path / 'slave' / 'x25519.key').read_bytes()]
    for secret in secrets:
        for spelling in key_spellings(secret):
            assert spelling not in output
    assert master['kcv'] in output


def test_second_run_changes_nothing_and_rekey_makes_a_new_key(simulator, tmp_path):
    args = ('-i', inventory(tmp_path, 'NL-2', 'SAE-MAD-2', 'SAE-MAD-3'),
            '-e', 'qsafe_endpoints_file=%s' % simulator['endpoints_file'])
    assert ansible_playbook(PLAYBOOK, *args)[0] == 0
    first = link_file(tmp_path, 'slave', 'NL-2')
    rc, output = ansible_playbook(PLAYBOOK, *args)
    assert rc == 0 and re.search(r'master-node\s*:\s*ok=\d+\s+changed=0', output) and \
        re.search(r'slave-node\s*:\s*ok=\d+\s+changed=0', output), output
    assert link_file(tmp_path, 'slave', 'NL-2')['key'] == first['key']
    rc, output = ansible_playbook(PLAYBOOK, *args, '-e', 'qsafe_rekey=true')
    assert rc == 0, output
    assert link_file(tmp_path, 'slave', 'NL-2')['key'] != first['key']
    assert link_file(tmp_path, 'slave', 'NL-2')['key'] == link_file(tmp_path, 'master', 'NL-2')['key']


FLIPPED_CIPHERTEXT = "{{ (m.kem_ciphertext | b64decode(encoding='latin-1') | reverse | join) | b64encode(encoding='latin-1') }}"
TAMPER = {  # what the slave is given instead of the master's values
    'ciphertext': dict(kem_ciphertext=FLIPPED_CIPHERTEXT),
    'policy': dict(policy='qkd'),
    'link_id': dict(link_id='MAD-3--MAD-1'),
    'key_id': dict(qkd_key_ids='{{ other.key_ids }}'),  # a real key of the same pair, but not the master's
}
MASTER_AND_SLAVE = '''\
- qsafe.keyfabric.pqc_kem: {{operation: keypair, private_key_path: "{tmp}/kem.key"}}
  register: kem
- qsafe.keyfabric.pqc_kem: {{operation: keypair, algorithm: X25519, private_key_path: "{tmp}/x.key"}}
  register: xk
- qsafe.keyfabric.hybrid_link_key:
    role: master
    link_id: TAMPER
    endpoints_file: "{endpoints}"
    sae_id: SAE-MAD-1
    peer_sae_id: SAE-MAD-3
    peer_kem_public_key: "{{{{ kem.public_key }}}}"
    peer_classical_public_key: "{{{{ xk.public_key }}}}"
    dest: "{tmp}/master.json"
  register: m
- qsafe.keyfabric.qkd_key:
    endpoints_file: "{endpoints}"
    sae_id: SAE-MAD-1
    role: master
    peer_sae_id: SAE-MAD-3
    dest: "{tmp}/other.json"
  register: other
- qsafe.keyfabric.hybrid_link_key:
    role: slave
    link_id: "{link_id}"
    policy: "{policy}"
    endpoints_file: "{endpoints}"
    sae_id: SAE-MAD-3
    peer_sae_id: SAE-MAD-1
    kem_private_key_path: "{tmp}/kem.key"
    classical_private_key_path: "{tmp}/x.key"
    qkd_key_ids: "{qkd_key_ids}"
    kem_ciphertext: "{kem_ciphertext}"
    classical_ciphertext: "{{{{ m.classical_ciphertext }}}}"
    expected_kcv: "{{{{ m.kcv }}}}"
    dest: "{tmp}/slave.json"
'''


UNTAMPERED = dict(link_id='TAMPER', policy='qkd+pqc', kem_ciphertext='{{ m.kem_ciphertext }}',
                  qkd_key_ids='{{ m.qkd_key_ids }}')


@pytest.mark.parametrize('tamper', sorted(TAMPER))
def test_tampering_is_caught_by_key_confirmation_and_nothing_is_written(simulator, tmp_path, tamper):
    values = dict(UNTAMPERED)
    values.update(TAMPER[tamper])
    rc, output = run_tasks(tmp_path, MASTER_AND_SLAVE.format(tmp=tmp_path, endpoints=simulator['endpoints_file'], **values))
    assert rc != 0 and 'key confirmation failed for link' in output, output
    assert (tmp_path / 'master.json').exists() and not (tmp_path / 'slave.json').exists()
    assert 'Traceback' not in output and recap(output)['failed'] == 1


def test_untampered_run_of_the_same_tasks_succeeds(simulator, tmp_path):
    rc, output = run_tasks(tmp_path, MASTER_AND_SLAVE.format(tmp=tmp_path, endpoints=simulator['endpoints_file'],
                                                             **UNTAMPERED))
    assert rc == 0, output
    assert json.loads((tmp_path / 'slave.json').read_text())['key'] == json.loads((tmp_path / 'master.json').read_text())['key']
