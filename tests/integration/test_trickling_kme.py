"""``timeout`` bounds a whole request: a KME that trickles a valid answer one byte at a time.

Each socket read succeeds well within ``timeout`` (a byte every 50 ms), so a per-read timeout never
fires; only the transport core's request deadline stops the client. Every client must fail within
timeout + 1 s and never repeat the key-consuming request (the server counts what it saw).
"""

import time

import pytest

from trickling_kme import PSK, PSK_IDENTITY, TricklingKME
from ansible_collections.qsafe.keyfabric.plugins.module_utils.etsi004_client import Etsi004Client
from ansible_collections.qsafe.keyfabric.plugins.module_utils.etsi014_client import Etsi014Client
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.skip_client import SkipClient

TIMEOUT = 1.5
SLAVE = 'SAE-B'


@pytest.fixture
def trickling_kme(tmp_path):
    servers = []

    def start(interface, **options):
        servers.append(TricklingKME(tmp_path, interface, **options))
        return servers[-1]
    yield start
    for server in servers:
        server.stop()


def _client(server, retries=3, retry_backoff=0.01):
    paths = server.paths
    mtls = dict(client_cert=paths['client'][0], client_key=paths['client'][1], ca_cert=paths['ca'])
    common = dict(timeout=TIMEOUT, retries=retries, retry_backoff=retry_backoff)
    if server.interface == 'etsi014':
        return Etsi014Client(server.url, mtls['client_cert'], mtls['client_key'], mtls['ca_cert'], **common)
    if server.interface.startswith('etsi004'):
        return Etsi004Client(server.url, 'SAE-TEST', mtls['client_cert'], mtls['client_key'], mtls['ca_cert'], **common)
    if server.interface == 'skip-psk':
        return SkipClient(server.url, auth='psk', psk_identity=PSK_IDENTITY, psk=PSK, **common)
    return SkipClient(server.url, auth='mtls', **dict(mtls, **common))


def _timed_key_request(server):
    """A master's key request to ``server``: (the KeyDeliveryError it ends in, seconds taken, warnings)."""
    warnings = []
    client = _client(server)
    client._warn = warnings.append
    started = time.monotonic()
    with pytest.raises(KeyDeliveryError) as err:
        client.get_new_keys(SLAVE, 1, 256)
    elapsed = time.monotonic() - started
    client.close()
    return err, elapsed, warnings


# interface -> (the request kind that hands out a key, as the server counts it)
KEY_REQUESTS = {'etsi014': 'enc_keys', 'etsi004': 'GET_KEY', 'etsi004-binary': 'GET_KEY', 'skip-psk': 'key',
                'skip-mtls': 'key'}


@pytest.mark.parametrize('interface', sorted(KEY_REQUESTS))
def test_a_trickled_key_answer_fails_within_the_timeout_and_is_never_repeated(trickling_kme, interface):
    server = trickling_kme(interface)
    err, elapsed, warnings = _timed_key_request(server)
    assert elapsed < TIMEOUT + 1.0, 'took %.2f s with timeout %s' % (elapsed, TIMEOUT)
    assert err.value.kind == 'timeout' and err.value.consumed, err.value.message
    assert 'no key is consumed twice' in err.value.message
    assert server.count(KEY_REQUESTS[interface]) == 1, server.requests
    assert not [w for w in warnings if 'retry' in w]


@pytest.mark.parametrize('interface', ['etsi014', 'skip-mtls'])
def test_a_trickled_key_id_answer_fails_within_the_timeout_and_says_the_key_is_gone(trickling_kme, interface):
    server = trickling_kme(interface)
    client = _client(server)
    started = time.monotonic()
    with pytest.raises(KeyDeliveryError) as err:
        client.get_keys_by_id('SAE-A', ['0b5c6c8e-5a43-4c0e-9a3e-0f1d1c2b3a49'])
    elapsed = time.monotonic() - started
    client.close()
    assert elapsed < TIMEOUT + 1.0 and err.value.consumed, (elapsed, err.value.message)
    assert server.count('dec_keys' if interface == 'etsi014' else 'key') == 1, server.requests


def test_a_trickled_status_answer_is_read_only_so_it_is_retried_each_attempt_bounded(trickling_kme):
    server = trickling_kme('etsi014')
    warnings = []
    client = _client(server, retries=1, retry_backoff=0.05)
    client._warn = warnings.append
    started = time.monotonic()
    with pytest.raises(KeyDeliveryError) as err:
        client.status(SLAVE)
    elapsed = time.monotonic() - started
    client.close()
    assert err.value.kind == 'timeout' and not err.value.consumed
    assert server.count('status') == 2 and len(warnings) == 1, (server.requests, warnings)
    assert elapsed < 2 * TIMEOUT + 0.05 + 1.0, elapsed


@pytest.mark.parametrize('interface', ['etsi004', 'etsi004-binary'])
def test_a_quick_answer_still_works_over_the_deadline_bound_sockets(trickling_kme, interface):
    """The same server answers OPEN_CONNECT and CLOSE at once: status() (open and close a stream) succeeds."""
    server = trickling_kme(interface)
    with _client(server) as client:
        status = client.status(SLAVE)
    assert status['key_size'] == 256 and server.count('OPEN_CONNECT') == 1 and server.count('CLOSE') == 1


@pytest.mark.parametrize('interface', ['etsi004', 'etsi004-binary'])
def test_after_a_lost_get_key_answer_the_004_client_does_not_wait_on_close(trickling_kme, interface):
    """A KME that trickles every answer after OPEN_CONNECT: CLOSE is not sent after the lost GET_KEY answer
    (the stream expires on its TTL), so the task still ends within timeout + 1 s."""
    server = trickling_kme(interface, trickle_close=True)
    err, elapsed, warnings = _timed_key_request(server)
    assert elapsed < TIMEOUT + 1.0 and err.value.consumed, (elapsed, err.value.message)
    assert server.count('GET_KEY') == 1 and server.count('CLOSE') == 0, server.requests
    assert any('is not closed' in warning for warning in warnings), warnings
