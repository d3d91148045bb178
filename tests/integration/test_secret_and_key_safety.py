"""Regression tests for secrets in error paths and for QKD keys spent before inputs were checked."""

import os

import pytest

from misbehaving_kme import LEAKED_KEY
from playbook_support import run_tasks

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import open_client


@pytest.mark.parametrize('behaviour', ['raw_keys', 'swapped_fields'])
@pytest.mark.parametrize('operation', ['enc_keys', 'dec_keys'])
def test_what_a_broken_kme_sends_is_never_quoted(misbehaving_kme, behaviour, operation):
    server = misbehaving_kme(behaviour)
    with open_client(server.client_settings()) as client:
        with pytest.raises(KeyDeliveryError) as err:
            if operation == 'enc_keys':
                client.get_new_keys('SAE-B')
            else:
                client.get_keys_by_id('SAE-A', ['k1'])
    assert LEAKED_KEY not in str(err.value) and LEAKED_KEY not in repr(err.value.to_result())
    assert err.value.consumed


def served(simulator, master, slave):
    """Keys handed out by 200 enc_keys from master to slave, per the simulator's log."""
    import re
    import time
    pattern = re.compile(r' %s GET| %s POST' % (master, master))
    total, last = None, -1
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        with open(simulator['log_file']) as handle:
            total = sum(int(line.rsplit('keys=', 1)[1].split()[0]) for line in handle
                        if pattern.search(line) and '/%s/enc_keys' % slave in line and ' 200 keys=' in line)
        if total == last:
            break
        last = total
        time.sleep(0.2)
    return total


@pytest.mark.parametrize('bad_option, problem', [
    ('key_length: 16', 'key_length must be at least 32'),
    ('qkd_key_size: 64', 'qkd_key_size must be a multiple of 8 and at least 128'),
    ('dest: /proc/qsafe-cannot-write-here/x.json', 'does not exist'),
])
def test_master_checks_its_inputs_before_spending_a_qkd_key(simulator, tmp_path, bad_option, problem):
    before = served(simulator, 'SAE-NSP-1', 'SAE-MAD-1')
    task = '''\
        - qsafe.keyfabric.pqc_kem: {{operation: keypair, private_key_path: "{tmp}/kem.key"}}
          register: kem
        - qsafe.keyfabric.pqc_kem: {{operation: keypair, algorithm: X25519, private_key_path: "{tmp}/x.key"}}
          register: xk
        - qsafe.keyfabric.hybrid_link_key:
            role: master
            link_id: CHECKS
            endpoints_file: "{endpoints}"
            sae_id: SAE-NSP-1
            peer_sae_id: SAE-MAD-1
            peer_kem_public_key: "{{{{ kem.public_key }}}}"
            peer_classical_public_key: "{{{{ xk.public_key }}}}"
            {bad}
            {dest}
        '''.format(tmp=tmp_path, endpoints=simulator['endpoints_file'], bad=bad_option,
                   dest='' if bad_option.startswith('dest') else 'dest: "%s/master.json"' % tmp_path)
    rc, output = run_tasks(tmp_path, task)
    assert rc != 0 and problem in output, output
    assert 'Traceback' not in output and 'MODULE FAILURE' not in output
    assert served(simulator, 'SAE-NSP-1', 'SAE-MAD-1') == before, 'a QKD key was spent on a task that could not succeed'
    assert not os.path.exists(str(tmp_path / 'master.json'))


def test_slave_without_the_masters_kcv_is_refused(simulator, tmp_path):
    rc, output = run_tasks(tmp_path, '''\
        - qsafe.keyfabric.hybrid_link_key:
            role: slave
            link_id: NOKCV
            endpoints_file: "{endpoints}"
            sae_id: SAE-MAD-2
            peer_sae_id: SAE-MAD-1
            qkd_key_ids: [00000000-0000-4000-8000-000000000000]
            dest: "{tmp}/slave.json"
        '''.format(tmp=tmp_path, endpoints=simulator['endpoints_file']))
    assert rc != 0 and 'expected_kcv' in output, output
