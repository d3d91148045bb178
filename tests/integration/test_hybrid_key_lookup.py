"""The hybrid_key lookup: whole meshes keyed in one call against the live simulator."""

import itertools
import json
import os

import pytest

from playbook_support import COLLECTIONS_PATH, ansible_playbook, lookup_playbook
from simulator_support import client_for, enc_keys_served
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError

MADRID = ['SAE-MAD-1', 'SAE-MAD-2', 'SAE-MAD-3']


def test_a_mesh_in_one_call_gives_distinct_confirmed_keys(simulator, tmp_path):
    links = [dict(master=a, slave=b) for a, b in itertools.combinations(MADRID, 2)]
    rc, output, results = lookup_playbook(tmp_path, simulator, links, '-vvvv')
    assert rc == 0, output
    assert [r['link_id'] for r in results] == ['%s--%s' % (l['master'], l['slave']) for l in links]
    for result in results:
        assert sorted(result['sources']) == ['classical', 'pqc', 'qkd'] and not result['degraded']
        assert len(bytes.fromhex(result['key'])) == 32 and len(result['kcv']) == 6
        assert len(result['qkd_key_ids']) == 1 and result['algorithms']['pqc'] == 'ML-KEM-768'
        assert result['key'] not in output and result['key'].upper() not in output
    assert len(set(r['key'] for r in results)) == 3 and len(set(r['ppk_id'] for r in results)) == 3


def test_the_qkd_key_in_the_mix_is_consumed_at_the_kme(simulator, tmp_path):
    rc, output, results = lookup_playbook(tmp_path, simulator, [dict(master='SAE-MAD-1', slave='SAE-MAD-2')])
    assert rc == 0, output
    with client_for(simulator, 'SAE-MAD-2') as slave:
        with pytest.raises(KeyDeliveryError) as err:
            slave.get_keys_by_id('SAE-MAD-1', results[0]['qkd_key_ids'])
    assert err.value.kind == 'bad_request' and results[0]['qkd_key_ids'][0] in str(err.value)


def test_site_without_qkd_fails_under_the_default_policy(simulator, tmp_path):
    rc, output, results = lookup_playbook(tmp_path, simulator, [dict(master='SAE-MAD-1', slave='SAE-MEX-1')])
    assert rc != 0 and results is None
    assert 'SAE-MAD-1--SAE-MEX-1' in output and 'qkd' in output
    assert 'Traceback' not in output


def test_site_without_qkd_degrades_with_an_alarm_when_allowed(simulator, tmp_path):
    rc, output, results = lookup_playbook(tmp_path, simulator, [dict(master='SAE-MAD-1', slave='SAE-MEX-1')],
                                          policy=dict(require=['qkd', 'pqc'], on_missing='degrade'))
    assert rc == 0, output
    (result,) = results
    assert result['degraded'] and sorted(result['sources']) == ['classical', 'pqc'] and result['alarms']
    assert result['qkd_key_ids'] == []
    assert '[WARNING]' in output and 'SAE-MAD-1--SAE-MEX-1' in output


def test_pqc_only_policy_needs_no_qkd(simulator, tmp_path):
    rc, output, results = lookup_playbook(tmp_path, simulator, [dict(master='SAE-NSP-1', slave='SAE-MEX-1', policy='pqc')])
    assert rc == 0, output
    assert not results[0]['degraded'] and 'pqc' in results[0]['sources']


@pytest.mark.parametrize('links, message', [
    ([dict(master='SAE-MAD-1')], 'slave must be an SAE ID'),
    ([dict(master='SAE-MAD-1', slave='SAE-MAD-1')], 'master and slave are both SAE-MAD-1'),
    ([dict(master='SAE-MAD-1', slave='SAE-MAD-2', colour='red')], 'unknown field colour'),
    ([dict(master='SAE-MAD-1', slave='SAE-MAD-2'), dict(master='SAE-MAD-1', slave='SAE-MAD-2')], 'given twice'),
    ([dict(master='SAE-MAD-1', slave='SAE-NOBODY')], 'SAE-NOBODY is not in endpoints_file'),
    ([dict(master='SAE-MAD-1', slave='SAE-MAD-2', policy='quantum-ish')], 'quantum-ish'),
    ([dict(master='SAE-MAD-1', slave='SAE-MAD-2', kem_algorithm='ML-KEM-512')], 'ML-KEM-512'),
])
def test_bad_links_are_named(simulator, tmp_path, links, message):
    rc, output, results = lookup_playbook(tmp_path, simulator, links)
    assert rc != 0 and message in output, output
    assert 'Traceback' not in output


def test_connection_options_come_from_variables(simulator, tmp_path):
    playbook = tmp_path / 'vars.yml'
    playbook.write_text('''\
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    qsafe_endpoints_file: {endpoints}
    qsafe_hash_algorithm: sha384
  tasks:
    - ansible.builtin.set_fact:
        facts: "{{{{ query('qsafe.keyfabric.hybrid_key', {{'master': 'SAE-MAD-2', 'slave': 'SAE-MAD-3'}})
                    | map('dict2items') | map('rejectattr', 'key', 'eq', 'key') | map('items2dict') }}}}"
    - ansible.builtin.assert:
        that:
          - facts[0].hash_algorithm == 'sha384'
          - facts[0].sources | length == 3
'''.format(endpoints=simulator['endpoints_file']))
    rc, output = ansible_playbook(str(playbook))
    assert rc == 0, output


def test_connection_options_come_from_the_environment(simulator, tmp_path, monkeypatch):
    playbook = tmp_path / 'env.yml'
    playbook.write_text('''\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.assert:
        that: "query('qsafe.keyfabric.hybrid_key', {'master': 'SAE-MAD-1', 'slave': 'SAE-MAD-3'})[0].kcv | length == 6"
''')
    monkeypatch.setenv('QSAFE_ENDPOINTS_FILE', simulator['endpoints_file'])
    rc, output = ansible_playbook(str(playbook))
    assert rc == 0, output
    monkeypatch.setenv('QSAFE_ENDPOINTS_FILE', str(tmp_path / 'missing.json'))
    rc, output = ansible_playbook(str(playbook))
    assert rc != 0 and 'cannot read endpoints_file' in output, output


def test_lookup_documentation_renders(simulator):
    import subprocess
    import sys
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR='1')
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-doc'), '-t', 'lookup',
                           'qsafe.keyfabric.hybrid_key'], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          check=False)
    text = done.stdout.decode()
    assert done.returncode == 0 and 'endpoints_file' in text and 'QSAFE_ENDPOINTS_FILE' in text, text


def test_key_store_makes_reruns_consume_no_key_and_rotation_make_before_break(simulator, tmp_path):
    store = tmp_path / 'store'
    store.mkdir(mode=0o700)
    links = [dict(master='SAE-MAD-1', slave='SAE-MAD-2'), dict(master='SAE-MAD-2', slave='SAE-MAD-3')]
    rc, output, first = lookup_playbook(tmp_path, simulator, links, key_store=str(store))
    assert rc == 0, output
    assert [r['reused'] for r in first] == [False, False] and [r['generation'] for r in first] == [1, 1]
    assert oct(os.stat(str(store / 'SAE-MAD-1--SAE-MAD-2.json')).st_mode & 0o777) == '0o600'
    before = [enc_keys_served(simulator, link['master'], link['slave']) for link in links]

    rc, output, second = lookup_playbook(tmp_path, simulator, links, key_store=str(store))
    assert rc == 0, output
    assert [r['reused'] for r in second] == [True, True]
    assert [r['key'] for r in second] == [r['key'] for r in first]
    assert [enc_keys_served(simulator, link['master'], link['slave']) for link in links] == before, 'a rerun fetched a key'

    rc, output, third = lookup_playbook(tmp_path, simulator, links, key_store=str(store), rotate=['SAE-MAD-2--SAE-MAD-3'])
    assert rc == 0, output
    # Only the rotated link takes a new QKD key (this also shows the count sees the lookup's key requests).
    assert [enc_keys_served(simulator, link['master'], link['slave']) for link in links] == [before[0], before[1] + 1]
    assert third[0]['key'] == first[0]['key'] and third[0]['reused']
    assert third[1]['key'] != first[1]['key'] and third[1]['generation'] == 2
    assert third[1]['previous_ppk_id'] == first[1]['ppk_id']
    assert json.loads((store / 'SAE-MAD-2--SAE-MAD-3.previous.json').read_text())['key'] == first[1]['key']


def test_store_only_never_derives(simulator, tmp_path):
    store = tmp_path / 'store'
    store.mkdir()
    rc, output, results = lookup_playbook(tmp_path, simulator, [dict(master='SAE-MAD-1', slave='SAE-MAD-3')],
                                          key_store=str(store), store_only=True)
    assert rc != 0 and 'link SAE-MAD-1--SAE-MAD-3: no usable key in key_store' in output, output
    assert list(store.iterdir()) == []


def test_return_keys_false_gives_only_public_fields(simulator, tmp_path):
    store = tmp_path / 'store'
    store.mkdir(mode=0o700)
    links = [dict(master='SAE-MAD-1', slave='SAE-MAD-2')]
    rc, output, keyed = lookup_playbook(tmp_path, simulator, links, key_store=str(store), return_keys=False)
    assert rc == 0, output
    assert 'key' not in keyed[0] and keyed[0]['reused'] is False and len(keyed[0]['kcv']) == 6
    rc, output, reused = lookup_playbook(tmp_path, simulator, links, key_store=str(store), return_keys=False)
    assert rc == 0, output
    assert 'key' not in reused[0] and reused[0]['reused'] is True and reused[0]['kcv'] == keyed[0]['kcv']
    # The key is in the store, and store_only reads it back: the same key the KCV names.
    rc, output, stored = lookup_playbook(tmp_path, simulator, links, key_store=str(store), store_only=True)
    assert rc == 0, output
    assert len(bytes.fromhex(stored[0]['key'])) == 32 and stored[0]['kcv'] == keyed[0]['kcv']


def test_a_degraded_key_is_read_by_store_only_and_replaced_by_the_next_keying_call(simulator, tmp_path):
    """Push mode configures each site from the keys the controller stored (store_only): a degraded key
    is the key in force, so store_only must give it; a keying call must not reuse it."""
    store = tmp_path / 'store'
    store.mkdir(mode=0o700)
    links = [dict(master='SAE-MAD-1', slave='SAE-MEX-1')]
    degrade = dict(require=['qkd', 'pqc'], on_missing='degrade')
    rc, output, keyed = lookup_playbook(tmp_path, simulator, links, key_store=str(store), policy=degrade)
    assert rc == 0, output
    assert keyed[0]['degraded'] and not keyed[0]['reused']
    rc, output, stored = lookup_playbook(tmp_path, simulator, links, key_store=str(store), policy=degrade, store_only=True)
    assert rc == 0, output
    assert stored[0]['degraded'] and stored[0]['kcv'] == keyed[0]['kcv'] and stored[0]['key'] == keyed[0]['key']
    rc, output, again = lookup_playbook(tmp_path, simulator, links, key_store=str(store), policy=degrade)
    assert rc == 0, output
    assert not again[0]['reused'] and again[0]['kcv'] != keyed[0]['kcv'] and again[0]['generation'] == 2
