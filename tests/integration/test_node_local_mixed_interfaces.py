"""The node-local flow across interfaces: the master node fetches over ETSI 004, the slave node over ETSI 014."""

import json
import os

import pytest

from playbook_support import REPO_ROOT, ansible_playbook
from qkdsim.process import SimulatorProcess

PLAYBOOK = os.path.join(REPO_ROOT, 'playbooks', 'node_local_link_key.yml')
TOPOLOGY = os.path.join(REPO_ROOT, 'qkdsim', 'topologies', 'mixed_interfaces.yml')


@pytest.fixture(scope='module')
def mixed_sim(tmp_path_factory):
    process = SimulatorProcess(tmp_path_factory.mktemp('qkdsim-mixed'), TOPOLOGY)
    yield process
    assert process.stop() == 0


def inventory(tmp_path, master, slave):
    path = tmp_path / 'inventory.yml'
    hosts = {}
    for group, end, (sae_id, interface) in (('qsafe_link_master', 'master', master), ('qsafe_link_slave', 'slave', slave)):
        node = dict(ansible_connection='local', qsafe_sae_id=sae_id, qsafe_interface=interface,
                    qsafe_key_dir=str(tmp_path / end))
        hosts[group] = {'hosts': {end + '-node': node}}
    path.write_text(json.dumps({'all': {'vars': {'qsafe_link_id': 'NL-MIXED'}, 'children': hosts}}))
    return str(path)


@pytest.mark.parametrize('master, slave', [(('SAE-F', 'etsi004'), ('SAE-A', 'etsi014')),   # F: ETSI 004 only
                                           (('SAE-A', 'etsi014'), ('SAE-C', 'etsi004'))])
def test_each_node_fetches_over_its_own_interface_and_both_derive_the_same_key(mixed_sim, tmp_path, master, slave):
    before = mixed_sim.log_file.read_text()
    rc, output = ansible_playbook(PLAYBOOK, '-i', inventory(tmp_path, master, slave),
                                  '-e', 'qsafe_endpoints_file=%s' % mixed_sim.endpoints_file)
    assert rc == 0, output
    ends = [json.loads((tmp_path / end / 'NL-MIXED.json').read_text()) for end in ('master', 'slave')]
    assert ends[0]['kcv'] == ends[1]['kcv'] and ends[0]['qkd_key_ids'] == ends[1]['qkd_key_ids']
    assert 'qkd' in ends[0]['sources']
    log = mixed_sim.log_file.read_text()[len(before):]
    for (sae_id, interface), role in ((master, 'master'), (slave, 'slave')):
        via_004 = ' %s 004 GET_KEY status=0 keys=1 ' % sae_id in log
        via_014 = ' %s POST /api/v1/keys/' % sae_id in log
        assert (via_004, via_014) == (interface == 'etsi004', interface == 'etsi014'), (role, sae_id, interface)
