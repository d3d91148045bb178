"""The collection's ETSI 004 client against the live simulator, alone and beside the ETSI 014 client."""

import os
import re
import socket

import pytest

from ansible_collections.qsafe.keyfabric.plugins.module_utils import etsi004_client
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError, LINK_STATUS_FIELDS
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value
from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import (
    ConnectionOptions,
    open_client,
    resolve_connection,
)
from playbook_support import REPO_ROOT
from qkdsim.process import SimulatorProcess

TOPOLOGY = os.path.join(REPO_ROOT, 'tests', 'qkdsim', 'etsi004_topology.yml')
NIL = '00000000-0000-4000-8000-000000000000'


@pytest.fixture(scope='module')
def sim(tmp_path_factory):
    """KMEs A and B serve ETSI 004 and 014, C/D/E 004 only, F 014 only (tests/qkdsim/etsi004_topology.yml)."""
    process = SimulatorProcess(tmp_path_factory.mktemp('qkdsim-004'), TOPOLOGY)
    received = []
    yield dict(process.endpoints, endpoints_file=str(process.endpoints_file), log_file=str(process.log_file),
               received=received)
    assert process.stop() == 0
    log = process.log_file.read_text()
    assert not [key for key in received if key.hex() in log or key.hex().upper() in log]


def client_for(sim, sae_id, interface='etsi004', warn=None, **overrides):
    options = dict(endpoints_file=sim['endpoints_file'], sae_id=sae_id, interface=interface, retries=0,
                   retry_backoff=0.01)
    options.update(overrides)
    return open_client(resolve_connection(ConnectionOptions.from_dict(options)), warn=warn)


def kcvs(sim, keys):
    sim['received'].extend(key.key for key in keys)
    return [(key.key_id, key_check_value(key.key)) for key in keys]


@pytest.fixture
def pair(sim):
    with client_for(sim, 'SAE-A') as master, client_for(sim, 'SAE-B') as slave:
        yield master, slave


def test_status_tells_what_004_can(pair):
    master, slave = pair
    status = master.status('SAE-B')
    assert set(LINK_STATUS_FIELDS) <= set(status)
    assert (status['master_SAE_ID'], status['slave_SAE_ID'], status['key_size']) == ('SAE-A', 'SAE-B', 256)
    assert status['stored_key_count'] == -1 and status['status_extension']['key_counts_reported'] is False
    assert status['status_extension']['qos']['max_bps'] == 51200


def test_master_and_slave_get_the_same_keys_once(sim, pair):
    master, slave = pair
    keys = master.get_new_keys('SAE-B', number=3, size=512)
    assert len(keys) == 3 and all(key.size == 512 for key in keys)
    wanted = [key.key_id for key in reversed(keys)]
    assert kcvs(sim, slave.get_keys_by_id('SAE-A', wanted)) == kcvs(sim, list(reversed(keys)))
    with pytest.raises(KeyDeliveryError) as err:
        slave.get_keys_by_id('SAE-A', [keys[0].key_id])
    assert err.value.kind == 'bad_request' and 'unknown key_stream_ID %s' % keys[0].key_id in err.value.message
    assert not err.value.consumed


@pytest.mark.parametrize('master_interface, slave_interface', [('etsi014', 'etsi004'), ('etsi004', 'etsi014')])
def test_a_014_end_and_a_004_end_share_keys(sim, master_interface, slave_interface):
    with client_for(sim, 'SAE-A', master_interface) as master, client_for(sim, 'SAE-B', slave_interface) as slave:
        keys = master.get_new_keys('SAE-B', number=2)
        assert kcvs(sim, slave.get_keys_by_id('SAE-A', [key.key_id for key in keys])) == kcvs(sim, keys)
    # and the key is gone for the other interface of the slave too
    with client_for(sim, 'SAE-B', master_interface) as other:
        with pytest.raises(KeyDeliveryError) as err:
            other.get_keys_by_id('SAE-A', [keys[0].key_id])
    assert err.value.kind == 'bad_request'


def test_unknown_or_malformed_key_ids_are_named(pair):
    master, slave = pair
    with pytest.raises(KeyDeliveryError) as err:
        slave.get_keys_by_id('SAE-A', [NIL])
    assert err.value.kind == 'bad_request' and 'unknown key_stream_ID %s' % NIL in err.value.message
    with pytest.raises(KeyDeliveryError) as err:
        slave.get_keys_by_id('SAE-A', ['stream-7:3'])
    assert err.value.kind == 'bad_request' and "key ID 'stream-7:3' is not a UUID" in err.value.message


def test_a_key_for_another_sae_is_refused_and_stays_deliverable(sim, pair):
    master, slave = pair
    (key,) = master.get_new_keys('SAE-B')
    with client_for(sim, 'SAE-C') as stranger:
        with pytest.raises(KeyDeliveryError) as err:
            stranger.get_keys_by_id('SAE-A', [key.key_id])
    assert err.value.kind == 'unauthorized' and 'was not issued by SAE-A for SAE-C' in err.value.message
    assert kcvs(sim, slave.get_keys_by_id('SAE-A', [key.key_id])) == kcvs(sim, [key])


def test_qos_that_cannot_be_met_carries_the_counter_proposal(sim):
    with client_for(sim, 'SAE-A') as master:
        master.qos = dict(min_bps=10 ** 9)
        with pytest.raises(KeyDeliveryError) as err:
            master.get_new_keys('SAE-B')
    assert err.value.kind == 'bad_request' and err.value.status_code == 7 and not err.value.consumed
    assert 'QoS not met' in err.value.message and 'min_bps 1000000000 is above the key rate' in err.value.message
    assert err.value.details[0]['min_bps'] == 51200 and '"min_bps": 51200' in err.value.message


def test_a_small_metadata_buffer_is_retried_with_the_size_asked(sim, pair, monkeypatch):
    master, slave = pair
    monkeypatch.setattr(etsi004_client, 'METADATA_SIZE', 10)
    keys = master.get_new_keys('SAE-B', number=1)
    assert kcvs(sim, slave.get_keys_by_id('SAE-A', [keys[0].key_id])) == kcvs(sim, keys)
    with open(sim['log_file']) as handle:
        statuses = re.findall(r'KME-A/etsi004 SAE-A 004 GET_KEY (status=\d)', handle.read())
    assert statuses[-2:] == ['status=8', 'status=0']


def test_running_out_of_key_part_way_says_which_keys_are_lost(sim):
    with client_for(sim, 'SAE-A') as master:                 # A--D holds four 128-bit keys, no refill
        with pytest.raises(KeyDeliveryError) as err:
            master.get_new_keys('SAE-D', number=5, size=128)
    assert err.value.kind == 'unavailable' and err.value.consumed and err.value.status_code == 2
    assert 'not enough key on QKD link A--D' in err.value.message
    assert '4 key(s) of this request had been handed out before and are not returned' in err.value.message
    with client_for(sim, 'SAE-A') as master:
        with pytest.raises(KeyDeliveryError) as err:
            master.get_new_keys('SAE-D', size=128)
    assert err.value.kind == 'unavailable' and not err.value.consumed   # nothing handed out: nothing lost


def test_not_enough_key_is_retried_with_a_warning_until_the_pool_refills(sim):
    warnings = []
    with client_for(sim, 'SAE-A', warn=warnings.append, retries=4, retry_backoff=0.2) as master:
        keys = master.get_new_keys('SAE-C', number=12)          # A--C holds 8 keys, refills 10 keys/s
    assert len(keys) == 12 and len(set(key.key_id for key in keys)) == 12
    assert warnings and 'status 2 (insufficient key)' in warnings[0] and 'retry 1 of 4' in warnings[0]


@pytest.mark.parametrize('peer, status, cause', [
    ('SAE-E', 4, 'QKD link A--E is alarmed'),
    ('SAE-F', 4, 'no QKD link between KME-A and KME-F'),
])
def test_no_qkd_connection_is_unavailable(sim, peer, status, cause):
    with client_for(sim, 'SAE-A') as master:
        with pytest.raises(KeyDeliveryError) as err:
            master.get_new_keys(peer)
    assert err.value.kind == 'unavailable' and err.value.status_code == status and cause in err.value.message
    assert not err.value.consumed


def test_a_kme_that_is_not_there_is_unreachable(sim):
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]          # bound, never listening: connections are refused
        with client_for(sim, 'SAE-A', kme_url='tls://127.0.0.1:%d' % port) as master:
            with pytest.raises(KeyDeliveryError) as err:
                master.get_new_keys('SAE-B')
    assert err.value.kind == 'unreachable' and 'cannot connect to the KME' in err.value.message


def test_rogue_certificates_are_tls_errors(sim):
    material = sim['test_material']
    with client_for(sim, 'SAE-A', client_cert=material['rogue_client_cert'],
                    client_key=material['rogue_client_key']) as master:
        with pytest.raises(KeyDeliveryError) as err:
            master.get_new_keys('SAE-B')
    assert err.value.kind == 'tls' and 'rejected the client certificate' in err.value.message
    with client_for(sim, 'SAE-A', ca_cert=material['rogue_ca_cert']) as master:
        with pytest.raises(KeyDeliveryError) as err:
            master.get_new_keys('SAE-B')
    assert err.value.kind == 'tls' and 'does not verify against ca_cert' in err.value.message


@pytest.mark.parametrize('overrides, problem', [
    (dict(kme_url='https://127.0.0.1:1'), 'kme_url of an ETSI 004 KME must be tls://<host>:<port>'),
    (dict(endpoints_file=None, kme_url='tls://127.0.0.1:1', client_cert=__file__, client_key=__file__,
          ca_cert=__file__), 'sae_id is required for ETSI GS QKD 004'),
])
def test_configuration_errors_are_named(sim, overrides, problem):
    with pytest.raises(KeyDeliveryError) as err:
        client_for(sim, None if 'endpoints_file' in overrides else 'SAE-A', **overrides)
    assert err.value.kind == 'config' and problem in err.value.message


def test_a_kme_without_004_is_named(sim):
    with pytest.raises(KeyDeliveryError) as err:
        client_for(sim, 'SAE-F')
    assert err.value.kind == 'config' and 'KME KME-F in endpoints_file' in err.value.message
    assert 'does not serve interface etsi004' in err.value.message


def test_the_modules_take_interface_etsi004(sim, tmp_path):
    from playbook_support import recap, run_tasks
    with open(sim['log_file']) as handle:
        before = handle.read().count('KME-B/etsi004 SAE-B 004 GET_KEY status=0')
    rc, output = run_tasks(tmp_path, '''\
        - name: Link status over ETSI 004
          qsafe.keyfabric.qkd_link_info:
            endpoints_file: "{endpoints}"
            interface: etsi004
            sae_id: SAE-B
            peer_sae_id: SAE-A
          register: info
        - name: Master over ETSI 004, check mode first (fetches nothing)
          qsafe.keyfabric.qkd_key:
            endpoints_file: "{endpoints}"
            interface: etsi004
            sae_id: SAE-B
            role: master
            peer_sae_id: SAE-A
            number: 2
            dest: "{tmp}/master.json"
          check_mode: true
        - name: Master over ETSI 004
          qsafe.keyfabric.qkd_key:
            endpoints_file: "{endpoints}"
            interface: etsi004
            sae_id: SAE-B
            role: master
            peer_sae_id: SAE-A
            number: 2
            dest: "{tmp}/master.json"
          register: master
        - name: Slave over ETSI 014, by the master's key IDs
          qsafe.keyfabric.qkd_key:
            endpoints_file: "{endpoints}"
            sae_id: SAE-A
            role: slave
            peer_sae_id: SAE-B
            key_ids: "{{{{ master.key_ids }}}}"
            dest: "{tmp}/slave.json"
          register: slave
        - name: Same keys at both ends; the 004 status reports no counts
          ansible.builtin.assert:
            that:
              - master.keys_info | map(attribute='kcv') | list == slave.keys_info | map(attribute='kcv') | list
              - master.key_ids | length == 2
              - info.link_status.stored_key_count == -1
              - info.link_status.status_extension.interface == 'etsi004'
              - info.interface == 'etsi004'
        '''.format(endpoints=sim['endpoints_file'], tmp=tmp_path))
    assert rc == 0, output
    assert recap(output)['failed'] == 0
    with open(sim['log_file']) as handle:
        log = handle.read()
    assert log.count('KME-B/etsi004 SAE-B 004 GET_KEY status=0') - before == 2   # check mode fetched nothing


def binary_url(sim, sae_id):
    kme = sim['kmes'][sim['saes'][sae_id]['kme_id']]
    return kme['interfaces']['etsi004']['binary_url']


@pytest.mark.parametrize('master_wire, slave_wire', [('binary', 'binary'), ('binary', 'json'), ('json', 'binary'),
                                                     ('etsi014', 'binary')])
def test_the_binary_framing_shares_keys_with_the_json_dialect_and_014(sim, master_wire, slave_wire):
    def end(sae_id, wire):
        if wire == 'etsi014':
            return client_for(sim, sae_id, 'etsi014')
        return client_for(sim, sae_id, kme_url=binary_url(sim, sae_id) if wire == 'binary' else None)
    with end('SAE-A', master_wire) as master, end('SAE-B', slave_wire) as slave:
        keys = master.get_new_keys('SAE-B', number=3, size=384)
        assert kcvs(sim, slave.get_keys_by_id('SAE-A', [key.key_id for key in keys])) == kcvs(sim, keys)
        with pytest.raises(KeyDeliveryError) as err:
            slave.get_keys_by_id('SAE-A', [keys[0].key_id])
    assert err.value.kind == 'bad_request' and 'unknown key_stream_ID' in err.value.message


def test_the_binary_framing_carries_statuses_and_messages(sim, monkeypatch):
    with client_for(sim, 'SAE-A', kme_url=binary_url(sim, 'SAE-A')) as master:
        assert master.status('SAE-B')['status_extension']['qos']['key_chunk_size'] == 32
        master.qos = dict(min_bps=10 ** 9)
        with pytest.raises(KeyDeliveryError) as err:
            master.get_new_keys('SAE-B')
        assert err.value.status_code == 7 and err.value.details[0]['min_bps'] == 51200
        assert 'min_bps 1000000000 is above the key rate' in err.value.message
        master.qos = {}
        with pytest.raises(KeyDeliveryError) as err:
            master.get_new_keys('SAE-E')
        assert err.value.kind == 'unavailable' and err.value.status_code == 4 and 'alarmed' in err.value.message
        monkeypatch.setattr(etsi004_client, 'METADATA_SIZE', 10)
        (key,) = master.get_new_keys('SAE-B')          # status 8, then retried with the size asked for
    with client_for(sim, 'SAE-B', kme_url=binary_url(sim, 'SAE-B')) as slave:
        assert kcvs(sim, slave.get_keys_by_id('SAE-A', [key.key_id])) == kcvs(sim, [key])
