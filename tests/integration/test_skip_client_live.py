"""The collection's Cisco SKIP client against the live simulator (TLS 1.2 PSK, and mutual TLS), a broken SKIP KME,
and an independent SKIP client (PyPI skip-qkd) against the simulator. Keys are compared by check value only."""

import os
import socket
import ssl
import threading

import pytest
import sslpsk3

from playbook_support import REPO_ROOT
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError, LINK_STATUS_FIELDS
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value
from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import (
    ConnectionOptions,
    open_client,
    resolve_connection,
)
from ansible_collections.qsafe.keyfabric.plugins.module_utils.skip_client import SkipClient
from qkdsim.process import SimulatorProcess

SKIP_TOPOLOGY = os.path.join(REPO_ROOT, 'tests', 'qkdsim', 'skip_topology.yml')
MASTER, SLAVE, SLAVE_2, ETSI014_ONLY = 'SAE-A', 'SAE-B1', 'SAE-B2', 'SAE-C'


@pytest.fixture(scope='module')
def skip_sim(tmp_path_factory):
    """A network where A and B serve SKIP beside ETSI 014, C serves ETSI 014 only (tests/qkdsim/skip_topology.yml)."""
    process = SimulatorProcess(tmp_path_factory.mktemp('qkdsim-skip'), SKIP_TOPOLOGY)
    yield dict(process.endpoints, endpoints_file=str(process.endpoints_file), log_file=str(process.log_file))
    assert process.stop() == 0


def client_for(sim, sae_id, interface='skip', warn=None, **overrides):
    options = dict(endpoints_file=sim['endpoints_file'], sae_id=sae_id, interface=interface, retries=0,
                   retry_backoff=0.01)
    options.update(overrides)
    return open_client(resolve_connection(ConnectionOptions.from_dict(options)), warn=warn)


def kcvs(keys):
    return [key_check_value(key.key) for key in keys]


def test_status_comes_from_capabilities(skip_sim):
    with client_for(skip_sim, MASTER) as master:
        status = master.status(SLAVE)
        assert set(LINK_STATUS_FIELDS) <= set(status)
        assert (status['source_KME_ID'], status['target_KME_ID'], status['slave_SAE_ID']) == ('KME-A', 'KME-B', SLAVE)
        assert status['stored_key_count'] == -1 and status['status_extension']['key_counts_reported'] is False
        with pytest.raises(KeyDeliveryError) as err:
            master.status('KME-NOWHERE')
    assert err.value.kind == 'bad_request' and "remote system 'KME-NOWHERE' (of peer 'KME-NOWHERE') is not among " \
        "the remote systems of 'KME-A': 'KME-B', 'KME-C'" in str(err.value)


def test_master_and_slave_get_the_same_keys_once(skip_sim):
    with client_for(skip_sim, MASTER) as master, client_for(skip_sim, SLAVE) as slave:
        keys = master.get_new_keys(SLAVE, number=3, size=512)
        assert len(set(key.key_id for key in keys)) == 3 and all(key.size == 512 for key in keys)
        delivered = slave.get_keys_by_id(MASTER, [key.key_id for key in reversed(keys)])
        assert [key.key_id for key in delivered] == [key.key_id for key in reversed(keys)]
        assert kcvs(delivered) == kcvs(reversed(keys))
        with pytest.raises(KeyDeliveryError) as err:   # a key fetched twice
            slave.get_keys_by_id(MASTER, [keys[0].key_id])
    assert err.value.kind == 'bad_request' and err.value.status_code == 404 and not err.value.consumed
    assert keys[0].key_id in str(err.value) and 'unknown or already delivered' in str(err.value)


def test_any_sae_of_the_remote_system_may_collect_a_key_once(skip_sim):
    with client_for(skip_sim, MASTER) as master, client_for(skip_sim, SLAVE_2) as other, \
            client_for(skip_sim, SLAVE) as slave:
        (key,) = master.get_new_keys(SLAVE)
        assert kcvs(other.get_keys_by_id(MASTER, [key.key_id])) == kcvs([key])
        with pytest.raises(KeyDeliveryError):
            slave.get_keys_by_id(MASTER, [key.key_id])


def test_etsi014_master_and_skip_slave_share_the_link_key_stream(skip_sim):
    with client_for(skip_sim, MASTER, interface='etsi014') as master, client_for(skip_sim, SLAVE) as slave, \
            client_for(skip_sim, SLAVE, interface='etsi014') as slave014:
        (key,) = master.get_new_keys(SLAVE)
        (got,) = slave.get_keys_by_id(MASTER, [key.key_id])           # a UUID key_ID, asked over SKIP
        assert got.key_id == key.key_id and kcvs([got]) == kcvs([key])
        with pytest.raises(KeyDeliveryError) as err:                 # ... and never again over ETSI 014
            slave014.get_keys_by_id(MASTER, [key.key_id])
    assert err.value.kind == 'bad_request' and 'already delivered' in str(err.value)


def test_skip_master_and_etsi014_slave_agree_on_the_key_id(skip_sim):
    with client_for(skip_sim, MASTER) as master, client_for(skip_sim, SLAVE, interface='etsi014') as slave014:
        (key,) = master.get_new_keys(SLAVE)
        (got,) = slave014.get_keys_by_id(MASTER, [key.key_id])
    assert got.key_id == key.key_id and len(key.key_id) == 36 and kcvs([got]) == kcvs([key])


def test_unknown_key_id_is_named(skip_sim):
    with client_for(skip_sim, SLAVE) as slave:
        with pytest.raises(KeyDeliveryError) as err:
            slave.get_keys_by_id(MASTER, ['ab' * 16])
        assert err.value.kind == 'bad_request' and 'ab' * 16 in str(err.value)
        with pytest.raises(KeyDeliveryError) as err:
            slave.get_keys_by_id(MASTER, ['ab' * 20])
        assert err.value.kind == 'bad_request' and 'keyId: must be 32 hex digits' in str(err.value)
        with pytest.raises(KeyDeliveryError) as err:
            slave.get_keys_by_id(MASTER, ['not a key id'])
    assert err.value.kind == 'bad_request' and 'hex' in str(err.value)


@pytest.mark.parametrize('peer, words', [('KME-X', "unknown remoteSystemID 'KME-X'"),
                                         ('SAE-NOBODY', "unknown remoteSystemID 'SAE-NOBODY'")])
def test_unknown_remote_system_is_a_bad_request_and_consumes_nothing(skip_sim, peer, words):
    with client_for(skip_sim, MASTER) as master:
        with pytest.raises(KeyDeliveryError) as err:
            master.get_new_keys(peer)
    assert err.value.kind == 'bad_request' and not err.value.consumed and words in str(err.value)


def test_wrong_psk_key_is_a_clear_tls_failure(skip_sim):
    with client_for(skip_sim, MASTER, skip_psk='00' * 32) as master:
        with pytest.raises(KeyDeliveryError) as err:
            master.get_new_keys(SLAVE)
    assert err.value.kind == 'tls' and not err.value.consumed
    assert "the PSK of identity 'SAE-A' does not match the KME's" in str(err.value)
    assert '00' * 32 not in str(err.value)


def test_wrong_psk_identity_is_a_clear_tls_failure(skip_sim):
    with client_for(skip_sim, MASTER, skip_psk_identity='SAE-B1') as master:   # B1's identity at A's KME
        with pytest.raises(KeyDeliveryError) as err:
            master.status(SLAVE)
    assert err.value.kind == 'tls' and "does not know the PSK identity 'SAE-B1'" in str(err.value)


def test_psk_configuration_errors_are_named(skip_sim, tmp_path):
    bad = tmp_path / 'bad.psk'
    bad.write_text('not hex\n')
    for overrides, words in [(dict(skip_psk_file=str(bad)), 'skip_psk_file %s must hold the PSK as hex' % bad),
                             (dict(skip_psk='abcd'), 'at least 16 bytes'),
                             (dict(skip_psk_file=str(tmp_path / 'none')), 'cannot read skip_psk_file')]:
        with pytest.raises(KeyDeliveryError) as err:
            client_for(skip_sim, MASTER, **overrides)
        assert err.value.kind == 'config' and words in str(err.value)
    with pytest.raises(KeyDeliveryError) as err:
        client_for(skip_sim, ETSI014_ONLY)
    assert err.value.kind == 'config' and 'KME-C in endpoints_file' in str(err.value) and 'skip' in str(err.value)


def test_mutual_tls_option(skip_sim):
    with client_for(skip_sim, MASTER, skip_auth='mtls') as master, \
            client_for(skip_sim, SLAVE, skip_auth='mtls') as slave:
        (key,) = master.get_new_keys(SLAVE)
        assert kcvs(slave.get_keys_by_id(MASTER, [key.key_id])) == kcvs([key])


def test_not_enough_key_is_retried_then_unavailable(skip_sim):
    warnings = []
    with client_for(skip_sim, MASTER, warn=warnings.append, retries=2) as master:
        with pytest.raises(KeyDeliveryError) as err:
            master.get_new_keys(ETSI014_ONLY, size=4096)      # the A--C pool holds 512 bits
    assert err.value.kind == 'unavailable' and err.value.status_code == 503 and not err.value.consumed
    assert len(warnings) == 2 and 'retry 1 of 2' in warnings[0]


def test_kme_down_is_retried_then_unreachable(skip_sim):
    with socket.socket() as refusing:
        refusing.bind(('127.0.0.1', 0))
        warnings = []
        with client_for(skip_sim, MASTER, warn=warnings.append, retries=1,
                        kme_url='https://127.0.0.1:%d' % refusing.getsockname()[1]) as client:
            with pytest.raises(KeyDeliveryError) as err:
                client.get_new_keys(SLAVE)
    assert err.value.kind == 'unreachable' and not err.value.consumed and len(warnings) == 1


class DroppingSkipKme:
    """A TLS-PSK server that takes each request and closes without an answer (a lost answer)."""

    def __init__(self, psk):
        self.requests = 0
        context = sslpsk3.SSLPSKContext(ssl.PROTOCOL_TLS_SERVER)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers('PSK-AES256-GCM-SHA384')
        context.set_psk_server_callback(lambda identity: psk)
        self.context = context
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.listener.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                raw, address = self.listener.accept()
            except socket.timeout:
                continue
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    if tls.recv(65536):
                        self.requests += 1
            except (OSError, ssl.SSLError):
                pass

    def stop(self):
        self.running = False
        self.thread.join(5)
        self.listener.close()


@pytest.mark.parametrize('operation', ['key', 'key by ID', 'capabilities'])
def test_a_lost_answer_to_a_key_request_is_never_repeated(operation):
    psk = os.urandom(32)
    server = DroppingSkipKme(psk)
    try:
        client = SkipClient('https://127.0.0.1:%d' % server.listener.getsockname()[1], psk_identity='SAE-A', psk=psk,
                            retries=2, retry_backoff=0.01, timeout=5)
        with pytest.raises(KeyDeliveryError) as err:
            if operation == 'key':
                client.get_new_keys('KME-B')
            elif operation == 'key by ID':
                client.get_keys_by_id('KME-B', ['ab' * 16])
            else:
                client.status('KME-B')
        client.close()
    finally:
        server.stop()
    if operation == 'capabilities':   # read-only: retried
        assert server.requests == 3 and not err.value.consumed
    else:
        assert server.requests == 1, 'a key request was sent again'
        assert err.value.consumed and err.value.kind == 'timeout'
        assert 'no key is consumed twice' in str(err.value) or 'will not deliver it again' in str(err.value)


# --- an independent client: PyPI skip-qkd (one request per client object) -------------------------------

def skip_qkd_client(sim, sae_id, psk=False):
    from skip_qkd import MTLSConfig, PSKConfig, SkipQKDClient
    sae = sim['saes'][sae_id]
    kme = sim['kmes'][sae['kme_id']]
    mtls = MTLSConfig(sim['ca_cert'], sae['client_cert'], sae['client_key'])
    psk_config = None
    if psk:
        with open(sae['skip_psk_file']) as handle:
            psk_config = PSKConfig(sae['skip_psk_identity'], bytes.fromhex(handle.read().strip()))
    return SkipQKDClient(kme['interfaces']['skip']['url'][len('https://'):], sae['kme_id'], mtls_config=mtls,
                         psk_config=psk_config)


def test_skip_qkd_and_the_collection_key_one_link_both_ways(skip_sim):
    assert skip_qkd_client(skip_sim, MASTER).capabilities()['localSystemID'] == 'KME-A'
    new = skip_qkd_client(skip_sim, MASTER, psk=True).request_key('KME-B', size=256)
    with client_for(skip_sim, SLAVE) as slave:
        (got,) = slave.get_keys_by_id(MASTER, [new['keyId']])
    assert key_check_value(got.key) == key_check_value(bytes.fromhex(new['key']))
    with client_for(skip_sim, MASTER) as master:
        (key,) = master.get_new_keys(SLAVE)
    fetched = skip_qkd_client(skip_sim, SLAVE).fetch_key_by_id(key.key_id.replace('-', ''), 'KME-A')
    assert key_check_value(bytes.fromhex(fetched['key'])) == key_check_value(key.key)
    with pytest.raises(RuntimeError, match='404'):
        skip_qkd_client(skip_sim, SLAVE_2).fetch_key_by_id(key.key_id.replace('-', ''), 'KME-A')


def test_skip_qkd_psk_only_mode_cannot_connect_with_python_ssl(skip_sim):
    """skip-qkd 1.0.0 sets check_hostname=True and then CERT_NONE in its PSK-only mode, which Python's ssl refuses
    before any connection: interoperability is shown above through its mutual TLS (+ PSK) modes. If this test
    fails, the library was fixed: test its PSK-only mode against the simulator instead."""
    from skip_qkd import PSKConfig, SkipQKDClient
    address = skip_sim['kmes']['KME-A']['interfaces']['skip']['url'][len('https://'):]
    with pytest.raises(ValueError, match='check_hostname'):
        SkipQKDClient(address, 'KME-A', psk_config=PSKConfig('SAE-A', b'\x01' * 32)).capabilities()
