# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the ETSI 004 client: input checks, and how a KME that misbehaves is reported.

The misbehaving KME is a real TLS server on loopback (mutual TLS, certificates made here) that
answers OPEN_CONNECT properly and then does one wrong thing. Behaviour against the simulator is
tested in tests/integration/test_etsi004_client_live.py.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import datetime
import json
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.qsafe.keyfabric.plugins.module_utils.etsi004_client import Etsi004Client
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError

KSID = '6f0e1f8a-3c55-4f7e-9d3e-2b8f0c1d2e3f'
KEY_ID = '0b5c6c8e-5a43-4c0e-9a3e-0f1d1c2b3a49'


def _cert(tmp_path, name, issuer_key=None, issuer_name=None, server=False):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1)))
    if issuer_key is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName('localhost')]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    cert_path, key_path = tmp_path / (name + '.pem'), tmp_path / (name + '.key')
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path), key, subject


@pytest.fixture
def pki(tmp_path):
    ca_cert, unused, ca_key, ca_name = _cert(tmp_path, 'ca')
    server = _cert(tmp_path, 'kme', ca_key, ca_name, server=True)
    client = _cert(tmp_path, 'SAE-A', ca_key, ca_name)
    return dict(ca=ca_cert, server=server[:2], client=client[:2])


class MisbehavingKme:
    """Answers OPEN_CONNECT with a stream and CLOSE with 0; GET_KEY as ``behaviour`` says."""

    def __init__(self, pki, behaviour):
        self.behaviour = behaviour
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*pki['server'])
        self.context.load_verify_locations(pki['ca'])
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.requests = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            raw, unused = self.listener.accept()
        except OSError:
            return
        with self.context.wrap_socket(raw, server_side=True) as tls, tls.makefile('rwb') as stream:
            for line in stream:
                request = json.loads(line)
                self.requests.append(request['command'])
                answer = self._answer(request)
                if answer is None:
                    return                         # hang up without an answer
                if answer == 'wait':
                    stream.readline()              # never answers; ends when the client goes away
                    return
                stream.write(answer if isinstance(answer, bytes) else json.dumps(answer).encode() + b'\n')
                stream.flush()

    def _answer(self, request):
        command = request['command']
        if command == 'OPEN_CONNECT':
            return {'command': command, 'status': 1, 'data': {'key_stream_ID': KSID, 'qos': {'timeout': 0}}}
        if command == 'CLOSE':
            return {'command': command, 'status': 0, 'data': {}}
        return self.behaviour(request)

    def url(self):
        return 'tls://localhost:%d' % self.port

    def stop(self):
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def kme(pki):
    servers, clients = [], []

    def start(behaviour):
        servers.append(MisbehavingKme(pki, behaviour))
        clients.append(Etsi004Client(servers[-1].url(), 'SAE-A', pki['client'][0], pki['client'][1], pki['ca'],
                                     timeout=1.0, retries=0))
        return servers[-1], clients[-1]
    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def _key(index=0, key_id=KEY_ID, metadata=True):
    data = {'key_stream_ID': KSID, 'index': index, 'key_buffer': base64.b64encode(b'k' * 32).decode()}
    if metadata:
        data['metadata'] = json.dumps({'key_ID': key_id})
    return {'command': 'GET_KEY', 'status': 0, 'data': data}


def test_a_well_behaved_answer_is_a_key(kme):
    server, client = kme(lambda request: _key())
    (key,) = client.get_new_keys('SAE-B', size=256)
    assert key.key_id == KEY_ID and key.size == 256
    assert server.requests == ['OPEN_CONNECT', 'GET_KEY', 'CLOSE']
    assert 'kkk' not in repr(key)


@pytest.mark.parametrize('behaviour, kind, problem', [
    (lambda request: None, 'timeout', 'closed the connection before its answer was complete'),
    (lambda request: 'wait', 'timeout', 'did not answer within 1.0 s'),
    (lambda request: b'{not json\n', 'protocol', 'the answer is not JSON'),
    (lambda request: _key(metadata=False), 'protocol', "lacks a key, its key_ID (metadata) or the right index"),
    (lambda request: _key(index=5), 'protocol', 'the right index'),
    (lambda request: _key(key_id='not-a-uuid'), 'protocol', 'lacks a key, its key_ID'),
])
def test_a_lost_or_broken_get_key_answer_is_consumed_and_not_repeated(kme, behaviour, kind, problem):
    server, client = kme(behaviour)
    with pytest.raises(KeyDeliveryError) as err:
        client.get_new_keys('SAE-B')
    assert err.value.kind == kind and err.value.consumed and problem in err.value.message
    assert 'it was not requested again, so no key is consumed twice' in err.value.message
    assert server.requests.count('GET_KEY') == 1


def test_a_status_outside_the_standard_is_a_protocol_error(kme):
    server, client = kme(lambda request: {'command': 'GET_KEY', 'status': 9, 'data': {}})
    with pytest.raises(KeyDeliveryError) as err:
        client.get_new_keys('SAE-B')
    assert err.value.kind == 'bad_request' and 'status 9 (not an ETSI 004 status)' in err.value.message


def test_keys_handed_out_before_a_failure_are_reported_lost(kme):
    answers = iter([_key(0), None])
    server, client = kme(lambda request: next(answers))
    with pytest.raises(KeyDeliveryError) as err:
        client.get_new_keys('SAE-B', number=2)
    assert err.value.consumed and '1 key(s) of this request had been handed out before' in err.value.message
    assert 'closed the connection before its answer was complete' in err.value.message


@pytest.mark.parametrize('kwargs, problem', [
    (dict(kme_url='https://kme:443'), 'must be tls://<host>:<port>'),
    (dict(kme_url='tls://kme:0'), 'must be tls://<host>:<port>'),
    (dict(sae_id=''), 'sae_id is required'),
    (dict(qos={'speed': 1}), 'unknown QoS field speed'),
    (dict(timeout=0), 'timeout must be positive'),
    (dict(wire='xml'), 'wire must be one of binary, json'),
])
def test_configuration_is_checked(pki, kwargs, problem):
    options = dict(kme_url='tls://kme:9', sae_id='SAE-A', client_cert=pki['client'][0], client_key=pki['client'][1],
                   ca_cert=pki['ca'])
    options.update(kwargs)
    with pytest.raises(KeyDeliveryError) as err:
        Etsi004Client(**options)
    assert err.value.kind == 'config' and problem in err.value.message


@pytest.mark.parametrize('call, problem', [
    (lambda client: client.get_new_keys('SAE-B', 0), 'number must be'),
    (lambda client: client.get_new_keys('SAE-B', 1, 12), 'multiple of 8'),
    (lambda client: client.get_keys_by_id('SAE-B', []), 'non-empty list'),
    (lambda client: client.get_keys_by_id('SAE-B', [KEY_ID, KEY_ID]), 'duplicates'),
    (lambda client: client.get_keys_by_id('SAE-B', ['stream:1']), 'is not a UUID'),
    (lambda client: client.get_new_keys('SAE/B'), 'without "/"'),
])
def test_requests_are_checked_before_anything_is_sent(pki, call, problem):
    client = Etsi004Client('tls://127.0.0.1:9', 'SAE-A', pki['client'][0], pki['client'][1], pki['ca'], retries=0)
    with pytest.raises(KeyDeliveryError) as err:
        call(client)
    assert err.value.kind == 'bad_request' and problem in err.value.message and not err.value.consumed
