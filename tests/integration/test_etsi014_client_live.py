"""The collection's ETSI 014 client against the live simulator and against broken KMEs."""

import base64
import socket

import pytest

from simulator_support import client_for, enc_keys_served
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError, LINK_STATUS_FIELDS
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value
from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import open_client

MASTER, SLAVE, THIRD, NO_QKD_PEER = 'SAE-MAD-1', 'SAE-MAD-2', 'SAE-MAD-3', 'SAE-MEX-1'


@pytest.fixture
def master(simulator):
    with client_for(simulator, MASTER) as client:
        yield client


@pytest.fixture
def slave(simulator):
    with client_for(simulator, SLAVE) as client:
        yield client


def test_status_has_every_etsi014_field(master):
    status = master.status(SLAVE)
    assert set(LINK_STATUS_FIELDS) <= set(status)
    assert status['master_SAE_ID'] == MASTER and status['slave_SAE_ID'] == SLAVE
    assert status['stored_key_count'] > 0 and status['key_size'] == 256


def test_master_and_slave_get_the_same_keys_once(master, slave):
    keys = master.get_new_keys(SLAVE, number=5, size=256)
    assert len(keys) == 5 and all(key.size == 256 for key in keys)
    delivered = slave.get_keys_by_id(MASTER, [key.key_id for key in reversed(keys)])
    assert [key.key_id for key in delivered] == [key.key_id for key in reversed(keys)]
    assert [key_check_value(k.key) for k in delivered] == [key_check_value(k.key) for k in reversed(keys)]
    with pytest.raises(KeyDeliveryError) as err:
        slave.get_keys_by_id(MASTER, [keys[0].key_id])
    assert err.value.kind == 'bad_request' and keys[0].key_id in str(err.value)


def test_a_large_batch_arrives_whole(master, slave):
    keys = master.get_new_keys(SLAVE, number=500)
    assert len(set(key.key_id for key in keys)) == 500
    assert slave.get_keys_by_id(MASTER, [key.key_id for key in keys]) == keys


def test_key_for_another_sae_is_refused_and_stays_deliverable(simulator, master, slave):
    (key,) = master.get_new_keys(SLAVE)
    with client_for(simulator, THIRD) as intruder:
        with pytest.raises(KeyDeliveryError) as err:
            intruder.get_keys_by_id(MASTER, [key.key_id])
    assert err.value.kind == 'unauthorized' and err.value.status_code == 401
    assert slave.get_keys_by_id(MASTER, [key.key_id]) == [key]


def test_unknown_key_id_is_named(slave):
    with pytest.raises(KeyDeliveryError) as err:
        slave.get_keys_by_id(MASTER, ['00000000-0000-4000-8000-000000000000'])
    assert err.value.kind == 'bad_request' and '00000000-0000-4000-8000-000000000000' in str(err.value)


@pytest.mark.parametrize('peer', ['SAE-NOBODY', NO_QKD_PEER])
def test_unknown_sae_or_no_qkd_link_is_a_bad_request(master, peer):
    with pytest.raises(KeyDeliveryError) as err:
        master.get_new_keys(peer)
    assert err.value.kind == 'bad_request' and err.value.status_code == 400 and not err.value.consumed


@pytest.mark.parametrize('number, size', [(1, 8), (1, 8192), (100000, 256)])
def test_impossible_sizes_and_counts_consume_nothing(simulator, master, number, size):
    before = enc_keys_served(simulator, MASTER, SLAVE)
    with pytest.raises(KeyDeliveryError) as err:
        master.get_new_keys(SLAVE, number=number, size=size)
    assert err.value.kind == 'bad_request' and not err.value.consumed
    assert enc_keys_served(simulator, MASTER, SLAVE) == before


def test_exhausted_pool_is_retried_then_reported_and_consumes_nothing(simulator):
    warnings = []
    with client_for(simulator, MASTER, warn=warnings.append, retries=2) as client:
        status = client.status(SLAVE)
        before = enc_keys_served(simulator, MASTER, SLAVE)
        with pytest.raises(KeyDeliveryError) as err:
            client.get_new_keys(SLAVE, number=status['max_key_per_request'], size=status['max_key_size'])
        assert err.value.kind == 'unavailable' and err.value.status_code == 503 and not err.value.consumed
        assert len(warnings) == 2 and 'retry 1 of 2' in warnings[0]
        assert enc_keys_served(simulator, MASTER, SLAVE) == before


@pytest.mark.parametrize('cert', ['rogue', 'expired'])
def test_bad_client_certificates_are_named(simulator, cert):
    material = simulator['test_material']
    with client_for(simulator, MASTER, client_cert=material['%s_client_cert' % cert],
                    client_key=material['%s_client_key' % cert]) as client:
        with pytest.raises(KeyDeliveryError) as err:
            client.status(SLAVE)
    assert err.value.kind == 'tls' and not err.value.consumed
    assert material['%s_client_cert' % cert] in str(err.value)


def test_ca_mismatch_is_named(simulator, master):
    rogue_ca = simulator['test_material']['rogue_ca_cert']
    with client_for(simulator, MASTER, ca_cert=rogue_ca) as client:
        with pytest.raises(KeyDeliveryError) as err:
            client.status(SLAVE)
    assert err.value.kind == 'tls' and 'does not verify against ca_cert %s' % rogue_ca in str(err.value)


def test_system_ca_environment_does_not_replace_the_kme_ca(simulator, monkeypatch):
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', '/etc/ssl/certs/ca-certificates.crt')
    monkeypatch.setenv('CURL_CA_BUNDLE', '/etc/ssl/certs/ca-certificates.crt')
    with client_for(simulator, MASTER) as client:
        assert client.status(SLAVE)['slave_SAE_ID'] == SLAVE


def test_kme_down_is_retried_then_unreachable(simulator):
    # A port bound but not listening: the kernel refuses connections to it, and while this socket holds it no other
    # process can take it (binding, closing and reusing the number races with whoever binds it next).
    with socket.socket() as refusing:
        refusing.bind(('127.0.0.1', 0))
        warnings = []
        with client_for(simulator, MASTER, warn=warnings.append, retries=2,
                        kme_url='https://127.0.0.1:%d' % refusing.getsockname()[1]) as client:
            with pytest.raises(KeyDeliveryError) as err:
                client.get_new_keys(SLAVE)
    assert err.value.kind == 'unreachable' and not err.value.consumed and len(warnings) == 2
    assert 'cannot connect' in str(err.value)


def _open(server):
    return open_client(server.client_settings())


@pytest.mark.parametrize('behaviour', ['slow', 'drop', 'reset_after_request', 'garbage', 'wrong_shape', 'bad_base64'])
def test_lost_or_broken_answer_to_a_key_request_is_never_repeated(misbehaving_kme, behaviour):
    server = misbehaving_kme(behaviour)
    with _open(server) as client:
        with pytest.raises(KeyDeliveryError) as err:
            client.get_new_keys('SAE-B')
    assert server.requests == 1, 'a key request was sent again'
    assert err.value.consumed and 'no key is consumed twice' in str(err.value)
    assert err.value.kind == ('timeout' if behaviour in ('slow', 'drop', 'reset_after_request') else 'protocol')


def test_lost_answer_to_a_key_id_request_says_the_keys_are_gone(misbehaving_kme):
    server = misbehaving_kme('drop')
    with _open(server) as client:
        with pytest.raises(KeyDeliveryError) as err:
            client.get_keys_by_id('SAE-A', ['k1'])
    assert server.requests == 1 and err.value.consumed and 'will not deliver them again' in str(err.value)


@pytest.mark.parametrize('operation', ['enc_keys', 'dec_keys'])
@pytest.mark.parametrize('behaviour', ['reset_at_accept', 'reset_in_handshake'])
def test_a_reset_before_the_tls_handshake_completes_sent_nothing_so_it_is_retried(misbehaving_kme, behaviour, operation):
    """A KME that accepts and resets (qkdsim's kme-down --mode drop does this) cannot have seen the request: urllib3
    writes it only after the handshake. Such a KME is unreachable, the key request is retried and consumed nothing
    (so a link policy may degrade), unlike a reset after the request was written (the test above)."""
    server = misbehaving_kme(behaviour)
    warnings = []
    with open_client(server.client_settings(), warn=warnings.append) as client:
        with pytest.raises(KeyDeliveryError) as err:
            if operation == 'enc_keys':
                client.get_new_keys('SAE-B')
            else:
                client.get_keys_by_id('SAE-A', ['0b5c6c8e-5a43-4c0e-9a3e-0f1d1c2b3a49'])
    assert server.requests == 0 and server.connections == 3, 'expected a first try and 2 retries, no request'
    assert err.value.kind == 'unreachable' and not err.value.consumed, err.value.message
    assert 'cannot connect to the KME' in err.value.message and 'consumed twice' not in err.value.message
    assert len(warnings) == 2


def test_a_reset_after_the_key_id_request_says_the_keys_are_gone(misbehaving_kme):
    server = misbehaving_kme('reset_after_request')
    with _open(server) as client:
        with pytest.raises(KeyDeliveryError) as err:
            client.get_keys_by_id('SAE-A', ['0b5c6c8e-5a43-4c0e-9a3e-0f1d1c2b3a49'])
    assert server.requests == 1 and err.value.consumed and 'will not deliver them again' in err.value.message


@pytest.mark.parametrize('behaviour', ['slow', 'drop'])
def test_status_is_read_only_so_it_is_retried(misbehaving_kme, behaviour):
    server = misbehaving_kme(behaviour)
    with _open(server) as client:
        with pytest.raises(KeyDeliveryError) as err:
            client.status('SAE-B')
    assert server.requests == 3 and err.value.kind == 'timeout' and not err.value.consumed


@pytest.mark.parametrize('behaviour, problem', [
    ('garbage', 'is not JSON'),
    ('partial_status', 'lacks target_KME_ID'),
    ('http500', 'HTTP 500'),
])
def test_garbage_status_answers_are_described(misbehaving_kme, behaviour, problem):
    with _open(misbehaving_kme(behaviour)) as client:
        with pytest.raises(KeyDeliveryError) as err:
            client.status('SAE-B')
    assert problem in str(err.value) and err.value.kind == 'protocol'


def test_kme_text_reaches_messages_without_control_characters_and_capped(misbehaving_kme):
    with _open(misbehaving_kme('hostile_message')) as client:
        with pytest.raises(KeyDeliveryError) as err:
            client.get_new_keys('SAE-B')
    message = err.value.message
    assert err.value.kind == 'bad_request' and 'refused (HTTP 400): bad request' in message
    assert not any(ord(char) < 32 or ord(char) == 127 for char in message), repr(message[:120])
    assert len(message) < 600, len(message)
    assert '\x1b' not in repr(err.value.to_result()) and len(repr(err.value.details)) < 400


def test_keys_are_base64_of_the_requested_size(master, slave):
    (key,) = master.get_new_keys(SLAVE, size=512)
    assert key.size == 512
    (again,) = slave.get_keys_by_id(MASTER, [key.key_id])
    assert base64.b64encode(again.key) == base64.b64encode(key.key)
