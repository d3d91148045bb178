# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the ETSI 014 client: input checks and how failures are classified.

Behaviour against a live KME (the simulator, and misbehaving TLS servers) is tested in
tests/integration/test_etsi014_client_live.py.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import ssl
import struct
import threading

import pytest
import requests
import urllib3

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError
from ansible_collections.qsafe.keyfabric.plugins.module_utils import etsi014_client
from ansible_collections.qsafe.keyfabric.plugins.module_utils.etsi014_client import Etsi014Client


@pytest.fixture
def client(tmp_path):
    paths = []
    for name in ('c.pem', 'c.key', 'ca.pem'):
        (tmp_path / name).write_text('placeholder')
        paths.append(str(tmp_path / name))
    return Etsi014Client('https://127.0.0.1:9/', *paths, retries=0)


def test_url_must_be_https(tmp_path):
    with pytest.raises(KeyDeliveryError) as err:
        Etsi014Client('http://kme:80', 'a', 'b', 'c')
    assert 'https://' in str(err.value) and err.value.kind == 'config'


@pytest.mark.parametrize('number, size, problem', [
    (0, None, 'number must be'),
    (-3, None, 'number must be'),
    ('2', None, 'number must be'),
    (1, 7, 'multiple of 8'),
    (1, 0, 'multiple of 8'),
])
def test_new_key_request_is_checked_before_sending(client, number, size, problem):
    with pytest.raises(KeyDeliveryError) as err:
        client.get_new_keys('SAE-B', number, size)
    assert problem in str(err.value) and err.value.kind == 'bad_request' and not err.value.consumed


@pytest.mark.parametrize('key_ids, problem', [
    ([], 'non-empty list'),
    ('one-id', 'non-empty list'),
    (['a', 'a'], 'duplicates'),
])
def test_key_id_request_is_checked_before_sending(client, key_ids, problem):
    with pytest.raises(KeyDeliveryError) as err:
        client.get_keys_by_id('SAE-A', key_ids)
    assert problem in str(err.value)


def test_sae_id_with_slash_is_refused(client):
    with pytest.raises(KeyDeliveryError) as err:
        client.status('../admin')
    assert 'without "/"' in str(err.value)


def test_trailing_slash_of_kme_url_is_dropped(client):
    assert client.kme_url == 'https://127.0.0.1:9'


def test_session_ignores_environment_ca_bundles(client):
    assert client._session.trust_env is False


@pytest.mark.parametrize('text, expected', [
    ('[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed', 'does not verify against ca_cert /ca.pem'),
    ('[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca', 'rejected the client certificate /c.pem'),
    ('[SSL: SSLV3_ALERT_CERTIFICATE_EXPIRED] sslv3 alert certificate expired', 'rejected the client certificate'),
    ('[SSL] PEM lib', 'cannot load the client certificate /c.pem'),
    ('EOF occurred in violation of protocol (_ssl.c:992)', 'most likely because it rejected the client certificate /c.pem'),
])
def test_tls_failures_name_the_certificate_at_fault(text, expected):
    assert expected in etsi014_client._describe_tls_error(ssl.SSLError(text), '/c.pem', '/ca.pem')


def _wrapped(reason):
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, '/x', reason))


def test_refused_connection_was_not_sent():
    assert not etsi014_client._may_have_been_sent(_wrapped(urllib3.exceptions.NewConnectionError(None, 'refused')))
    assert not etsi014_client._may_have_been_sent(requests.exceptions.ConnectTimeout())


def test_lost_answer_may_have_been_sent():
    assert etsi014_client._may_have_been_sent(requests.exceptions.ReadTimeout())
    reset = urllib3.exceptions.ProtocolError('Connection aborted.', ConnectionResetError())
    dropped = requests.exceptions.ConnectionError(reset)
    assert etsi014_client._may_have_been_sent(dropped)


class _ResettingListener(object):
    """A loopback TCP listener that resets each connection (SO_LINGER 0) at a chosen moment: 'accept' (at once),
    'hello' (after the first bytes arrive: a TLS ClientHello, never answered) or 'request' (after a whole HTTP
    request head). It gives the real exception chains of requests/urllib3, nothing is built by hand."""

    def __init__(self, moment):
        self.moment = moment
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(4)
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn = self.sock.accept()[0]
        except OSError:
            return
        conn.settimeout(5)
        try:
            data = b''
            while self._wants_more(data):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        conn.close()

    def _wants_more(self, data):
        if self.moment == 'hello':
            return not data
        return self.moment == 'request' and b'\r\n\r\n' not in data

    def error(self, scheme):
        with requests.Session() as session:
            session.trust_env = False
            try:
                session.post('%s://127.0.0.1:%d/api/v1/keys/SAE-B/enc_keys' % (scheme, self.port), json={'number': 1},
                             verify=False, timeout=5)
            except requests.exceptions.RequestException as exc:
                return exc
        raise AssertionError('the listener answered')

    def close(self):
        self.sock.close()
        self.thread.join(5)


# Only over TLS is "before the request" certain: the handshake must finish before urllib3 writes the request.
# Over plain HTTP a reset at accept races the request write (the kernel completes the TCP handshake before
# accept()), so either answer can be right there and the case is not pinned.
@pytest.mark.parametrize('moment, scheme', [('accept', 'https'), ('hello', 'https')])
def test_a_reset_before_the_request_was_written_was_not_sent(moment, scheme):
    listener = _ResettingListener(moment)
    try:
        exc = listener.error(scheme)
    finally:
        listener.close()
    assert not etsi014_client._may_have_been_sent(exc), repr(exc)


@pytest.mark.parametrize('scheme', ['http'])
def test_a_reset_after_the_request_was_written_may_have_been_sent(scheme):
    listener = _ResettingListener('request')
    try:
        exc = listener.error(scheme)
    finally:
        listener.close()
    assert etsi014_client._may_have_been_sent(exc), repr(exc)


@pytest.fixture
def refusing_port():
    """A port that refuses connections: bound but not listening, and held (so no other process can take it)."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    yield sock.getsockname()[1]
    sock.close()


def test_kme_down_is_unreachable_and_consumed_nothing(tmp_path, refusing_port):
    paths = []
    for name in ('c.pem', 'c.key', 'ca.pem'):
        (tmp_path / name).write_text('placeholder')
        paths.append(str(tmp_path / name))
    warnings = []
    client = Etsi014Client('https://127.0.0.1:%d' % refusing_port, *paths, retries=2, retry_backoff=0.01,
                           warn=warnings.append)
    with pytest.raises(KeyDeliveryError) as err:
        client.status('SAE-B')
    # The certificate files are placeholders: depending on where it fails, this is 'tls'
    # (cannot load) or 'unreachable'; either way nothing can have been consumed.
    assert err.value.kind in ('unreachable', 'tls') and not err.value.consumed


def test_peer_text_in_non_ssl_errors_is_never_quoted():
    leaked = 'U0VDUkVULUtFWS1CWVRFUw=='
    from http.client import BadStatusLine
    assert leaked not in etsi014_client._describe_tls_error(BadStatusLine('{"key": "%s"} alert' % leaked), '/c', '/ca')
    assert leaked not in etsi014_client._exception_name(BadStatusLine(leaked))


def test_key_ids_are_echoed_only_when_they_look_like_identifiers():
    assert etsi014_client._key_id_text('0b5c6c8e-5a43-4c0e-9a3e-0f1d1c2b3a49') == '0b5c6c8e-5a43-4c0e-9a3e-0f1d1c2b3a49'
    assert etsi014_client._key_id_text('U0VDUkVU+/LUtFWS1CWVRFUw==') == '(not a UUID)'
