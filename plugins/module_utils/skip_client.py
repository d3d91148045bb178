# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cisco SKIP (Secure Key Integration Protocol, draft-cisco-skip) client behind the key-delivery contract.

SKIP is four GET resources of a key provider (KME): ``/capabilities``, ``/key?remoteSystemID=&size=``
(a new key for a remote system), ``/key/{keyId}?remoteSystemID=`` (the remote system's key, once)
and ``/entropy``. Keys and key IDs are hex. The transport IOS-XE uses is TLS 1.2 with a pre-shared
key (PSK and DHE-PSK suites, AES-256, SHA-384): the KME knows the caller by its PSK identity.
Mutual TLS with certificates is the other option (``auth='mtls'``).

Mapping onto the contract (key_delivery): SKIP names systems, not SAEs. ``remote_system_ids``
maps a peer SAE ID to the system ID of its KME (from an endpoints manifest); a peer not in the
map is taken to be a system ID itself.

* ``status(peer)``         -> GET /capabilities; the peer's system must be listed. SKIP reports
  no key counts: ``stored_key_count`` and ``max_key_count`` are -1 (unknown).
* ``get_new_keys(slave)``  -> GET /key?remoteSystemID=<slave's system>&size=, once per key.
* ``get_keys_by_id(master, ids)`` -> GET /key/{id}?remoteSystemID=<master's system> per key ID.

Key IDs: a 32-hex-digit keyId (128 bits) is reported in UUID form, and a UUID is asked for as 32 hex
digits, so a link whose two ends use different interfaces (ETSI 014 at one, SKIP at the other) names its
key the same way at both ends.

Deadline, retries and the retry table come from the transport core (_kme_transport), as for the
other clients: a retry only when the KME surely handed out nothing (connection not made, or HTTP
503); a key request whose answer may have been lost is never repeated, and the error says
``consumed``. Python 3.11's ssl has no PSK callbacks: sslpsk3 adds them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import socket
import ssl
import time

try:
    from http.client import HTTPException, HTTPSConnection
    from urllib.parse import quote, urlsplit
except ImportError:  # pragma: no cover - Python 2 is not supported, kept for sanity tests
    HTTPException = HTTPSConnection = quote = urlsplit = None

try:
    from sslpsk3 import SSLPSKContext
except ImportError:  # pragma: no cover - reported through KeyDeliveryError(kind='config')
    SSLPSKContext = None

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import (
    KeyDeliveryClient, KeyDeliveryError, checked_key_ids, checked_number_and_size, QKDKey)
from ansible_collections.qsafe.keyfabric.plugins.module_utils._kme_transport import (
    ANSWER_INVALID, ANSWER_LOST, NOT_SENT, REFUSED, UNAVAILABLE, call_with_retries, check_files, check_timing,
    connect_timeout, deadline_context, exception_name, kme_text, mtls_context, transport_error)

AUTH_MODES = ('psk', 'mtls')
# TLS 1.2 PSK suites as IOS-XE's crypto skip-client offers them (AES-256 with SHA-384), DHE first.
PSK_CIPHERS = 'DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES256-CBC-SHA384:PSK-AES256-GCM-SHA384:PSK-AES256-CBC-SHA384'
DEFAULT_KEY_SIZE = 256
# A kept-alive connection is reused only this soon after its last answer (well inside any KME's idle
# timeout), so that a key request is never sent on a connection the KME may already have closed.
REUSE_SECONDS = 5.0
MIN_PSK_BYTES = 16
_HEX = re.compile(r'^(?:[0-9A-Fa-f]{2})+$')
_UUID = re.compile(r'^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')
_SAFE_TEXT = re.compile(r'^[A-Za-z0-9_.:/-]{1,128}$')
_CONSUMES_KEY = {'capabilities': False, 'entropy': False, 'key': True, 'key by ID': True}
_LOST_ANSWER = {
    'key': ('the KME may have issued a key for the remote system in the lost answer; it was not '
            'requested again, so no key is consumed twice. Request a new key.'),
    'key by ID': ('the KME may have delivered this key in the lost answer and will not deliver it '
                  'again. The other end must obtain a new key for this link.'),
}


def read_psk(path=None, value=None):
    """The PSK bytes from a hex string or a file holding one (the file is read, never logged)."""
    if value is None and path:
        try:
            with open(path) as handle:
                value = handle.read().strip()
        except (OSError, IOError) as exc:
            raise KeyDeliveryError('cannot read skip_psk_file %s: %s' % (path, exc.strerror or exc), kind='config')
        where = 'skip_psk_file %s' % path
    else:
        where = 'skip_psk'
    if not value:
        raise KeyDeliveryError('SKIP with auth psk needs a PSK: give skip_psk_file or skip_psk', kind='config')
    if not isinstance(value, str) or not _HEX.match(value) or len(value) < 2 * MIN_PSK_BYTES:
        raise KeyDeliveryError('%s must hold the PSK as hex, at least %d bytes (%d hex digits)'
                               % (where, MIN_PSK_BYTES, 2 * MIN_PSK_BYTES), kind='config')
    return bytes.fromhex(value)


def skip_key_id(key_id):
    """The SKIP form of a key ID: hex as given; a UUID (an ETSI 014 key_ID) without its dashes."""
    if isinstance(key_id, str) and _UUID.match(key_id):
        return key_id.replace('-', '').lower()
    if isinstance(key_id, str) and _HEX.match(key_id):
        return key_id
    raise KeyDeliveryError('SKIP key IDs are hex strings, got %s' % _text(key_id), kind='bad_request')


def contract_key_id(key_id):
    """The key ID a SKIP keyId is reported under: 32 hex digits (128 bits) in UUID form, the form ETSI 014 and
    004 key_IDs take, so both ends of a link whose other end speaks another interface agree on it; else as given."""
    if len(key_id) == 32:
        return '%s-%s-%s-%s-%s' % (key_id[:8], key_id[8:12], key_id[12:16], key_id[16:20], key_id[20:])
    return key_id


def _text(value):
    """Echo only short, harmless identifiers: anything else a peer sent could be key material."""
    if isinstance(value, str) and _SAFE_TEXT.match(value) and not (len(value) > 40 and _HEX.match(value)):
        return repr(value)
    return '(a %s that is not shown)' % type(value).__name__


class SkipClient(KeyDeliveryClient):
    """One SAE talking to one KME over Cisco SKIP, with one kept-alive TLS connection."""

    interface = 'skip'

    def __init__(self, kme_url, auth='psk', psk_identity=None, psk=None, client_cert=None, client_key=None,
                 ca_cert=None, remote_system_ids=None, timeout=10.0, retries=3, retry_backoff=0.5, warn=None):
        parts = urlsplit(kme_url or '')
        if parts.scheme != 'https' or not parts.hostname or parts.path not in ('', '/'):
            raise KeyDeliveryError('kme_url of a SKIP KME must be https://host:port, got %r' % (kme_url,),
                                   kind='config')
        if auth not in AUTH_MODES:
            raise KeyDeliveryError('skip_auth must be one of %s, got %r' % (', '.join(AUTH_MODES), auth),
                                   kind='config')
        check_timing(timeout, retries)
        self.kme_url = '%s://%s' % (parts.scheme, parts.netloc)
        self.host, self.port = parts.hostname, parts.port or 443
        self.auth = auth
        self.psk_identity = psk_identity
        self.client_cert = client_cert
        self.remote_system_ids = dict(remote_system_ids or {})
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self._warn = warn or (lambda message: None)
        self._sleep = None   # time.sleep; tests put a recorder here
        self._context = self._tls_context(psk, client_cert, client_key, ca_cert)
        self._connection = None
        self._last_used = 0.0
        self._capabilities = None

    def _tls_context(self, psk, client_cert, client_key, ca_cert):
        if self.auth == 'mtls':
            check_files('SKIP with mutual TLS (it needs client_cert, client_key and ca_cert)',
                        (('client_cert', client_cert), ('client_key', client_key), ('ca_cert', ca_cert)))
            return mtls_context(client_cert, client_key, ca_cert)
        if SSLPSKContext is None:
            raise KeyDeliveryError('SKIP with TLS-PSK needs the Python library sslpsk3 (Python 3.11 ssl has no '
                                   'PSK callbacks): pip install sslpsk3', kind='config')
        if not self.psk_identity:
            raise KeyDeliveryError('SKIP with auth psk needs skip_psk_identity', kind='config')
        if not isinstance(psk, bytes) or len(psk) < MIN_PSK_BYTES:
            raise KeyDeliveryError('SKIP with auth psk needs a PSK of at least %d bytes' % MIN_PSK_BYTES,
                                   kind='config')
        context = SSLPSKContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # the PSK authenticates the KME: no certificate in PSK suites
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(PSK_CIPHERS)
        identity = self.psk_identity
        context.set_psk_client_callback(lambda hint: (identity, psk))
        return deadline_context(context)

    # -- the contract -------------------------------------------------------------------

    def capabilities(self):
        """The KME's /capabilities (localSystemID, remoteSystemID, ...)."""
        body = self._call('capabilities', '/capabilities')
        if not isinstance(body, dict) or not isinstance(body.get('localSystemID'), str) \
                or not isinstance(body.get('remoteSystemID'), list):
            raise self._protocol_error('capabilities', 'no localSystemID string and remoteSystemID list')
        self._capabilities = body
        return body

    def system_id(self, sae_id):
        """The SKIP system ID of a peer SAE (its KME), or the peer ID itself when no map names it."""
        system = self.remote_system_ids.get(sae_id, sae_id)
        if not isinstance(system, str) or not system:
            raise KeyDeliveryError('peer must be a non-empty SAE or system ID, got %r' % (sae_id,), kind='bad_request')
        return system

    def status(self, peer_sae_id):
        """The link to ``peer_sae_id`` as the ETSI 014 Status fields (SKIP has no counts: -1)."""
        remote = self.system_id(peer_sae_id)
        capabilities = self.capabilities()
        if remote not in capabilities['remoteSystemID']:
            raise KeyDeliveryError('SKIP capabilities at %s: remote system %s (of peer %s) is not among the remote '
                                   'systems of %s: %s' % (self.kme_url, _text(remote), _text(peer_sae_id),
                                                          _text(capabilities['localSystemID']),
                                                          ', '.join(_text(s) for s in capabilities['remoteSystemID'])
                                                          or 'none'), kind='bad_request')
        return dict(source_KME_ID=capabilities['localSystemID'], target_KME_ID=remote,
                    master_SAE_ID=self.psk_identity or '', slave_SAE_ID=peer_sae_id, key_size=DEFAULT_KEY_SIZE,
                    stored_key_count=-1, max_key_count=-1, max_key_per_request=1, max_key_size=-1,
                    min_key_size=-1, max_SAE_ID_count=0,
                    status_extension=dict(interface='skip', key_counts_reported=False,
                                          entropy=bool(capabilities.get('entropy')),
                                          algorithm=capabilities.get('algorithm')))

    def get_new_keys(self, slave_sae_id, number=1, size=None):
        """``number`` new keys for the slave's system, one request each (SKIP returns one key per call)."""
        checked_number_and_size(number, size)
        query = 'remoteSystemID=%s' % quote(self.system_id(slave_sae_id), safe='')
        if size is not None:
            query += '&size=%d' % size
        keys = []
        for index in range(number):
            try:
                keys.append(self._key('key', '/key?' + query, size))
            except KeyDeliveryError as exc:
                if keys:
                    exc.consumed = True
                    exc.message += '; the %d key(s) received before this one are dropped and used up on the KME' % len(keys)
                    exc.args = (exc.message,)
                raise
        return keys

    def get_keys_by_id(self, master_sae_id, key_ids):
        """The keys ``key_ids`` that the master's system requested for this system (once each)."""
        key_ids = checked_key_ids(key_ids)
        remote = quote(self.system_id(master_sae_id), safe='')
        keys = []
        for key_id in key_ids:
            wanted = skip_key_id(key_id)
            try:
                key = self._key('key by ID', '/key/%s?remoteSystemID=%s' % (wanted, remote), None)
                if skip_key_id(key.key_id).lower() != wanted.lower():
                    raise self._protocol_error('key by ID', 'asked for keyId %s, got another' % wanted)
            except KeyDeliveryError as exc:
                message = 'key ID %s: %s' % (key_id, exc.message)
                if keys:
                    exc.consumed = True
                    message += ('; the %d key(s) delivered before this one are dropped and will not be delivered '
                                'again' % len(keys))
                exc.message = message
                exc.args = (message,)
                raise
            keys.append(QKDKey(key_id, key.key))
        return keys

    def entropy(self, minentropy=None):
        """Random bytes from the KME's /entropy (not QKD key: nothing is consumed)."""
        body = self._call('entropy', '/entropy' + ('?minentropy=%d' % minentropy if minentropy else ''))
        if not isinstance(body, dict) or not isinstance(body.get('randomStr'), str) or not _HEX.match(body['randomStr']):
            raise self._protocol_error('entropy', 'no hex randomStr')
        return bytes.fromhex(body['randomStr'])

    def close(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- transport ----------------------------------------------------------------------

    def _key(self, operation, path, size):
        body = self._call(operation, path)
        if not isinstance(body, dict) or not isinstance(body.get('keyId'), str) or not isinstance(body.get('key'), str):
            raise self._protocol_error(operation, 'the answer lacks a string keyId and key')
        if not _HEX.match(body['keyId']):
            raise self._protocol_error(operation, 'keyId is not hex')
        if not _HEX.match(body['key']):
            raise self._protocol_error(operation, 'the key of keyId %s is not hex' % _text(body['keyId']))
        key = QKDKey(contract_key_id(body['keyId'].lower()), bytes.fromhex(body['key']))
        if size is not None and key.size != size:
            raise self._protocol_error(operation, 'key %s is %d bits long, not %d' % (key.key_id, key.size, size))
        return key

    def _call(self, operation, path):
        def attempt(final):
            status, body = self._request(operation, path)
            if status == 200:
                return body
            raise self._http_error(operation, status, body)
        return call_with_retries(attempt, self.timeout, self.retries, self.retry_backoff, self._warn, self._sleep)

    def _request(self, operation, path):
        """(status, JSON body) of one GET on the kept-alive connection (a new one when it is stale)."""
        if self._connection is not None and time.monotonic() - self._last_used > REUSE_SECONDS:
            self.close()  # the KME may have closed it meanwhile: a key request must not be sent into that doubt
        if self._connection is None:
            self._connection = self._connect(operation)
        try:
            self._connection.request('GET', path, headers={'Accept': 'application/json'})
            response = self._connection.getresponse()
            data = response.read()
            self._last_used = time.monotonic()
            if response.getheader('Connection', '').lower() == 'close':
                self.close()
        except (socket.timeout, OSError, HTTPException) as exc:
            self.close()
            if isinstance(exc, socket.timeout):
                what = 'the KME did not answer within %s s' % self.timeout
            else:
                what = 'the connection to the KME broke before its answer arrived (%s)' % exc.__class__.__name__
            raise transport_error('SKIP %s at %s: %s' % (operation, self.kme_url, what), 'timeout', ANSWER_LOST,
                                  _CONSUMES_KEY[operation], _LOST_ANSWER.get(operation))
        try:
            body = json.loads(data.decode('utf-8')) if data else None
        except ValueError:
            if response.status == 200:
                raise self._protocol_error(operation, 'the answer is not JSON (%d bytes)' % len(data))
            body = None
        return response.status, body

    def _connect(self, operation):
        """A new TLS connection; failures before any request was sent consume nothing."""
        connection = HTTPSConnection(self.host, self.port, timeout=connect_timeout(self.timeout), context=self._context)
        try:
            connection.connect()
        except ssl.SSLError as exc:
            connection.close()
            raise self._not_sent(operation, 'tls', self._describe_tls_error(exc))
        except socket.timeout:
            connection.close()
            raise self._not_sent(operation, 'unreachable', 'cannot connect to the KME within %s s' % self.timeout)
        except OSError as exc:
            connection.close()
            if isinstance(exc, (ConnectionResetError, ConnectionAbortedError)) or 'EOF' in str(exc):
                raise self._not_sent(operation, 'tls', 'TLS handshake failed: the KME closed the connection (%s)%s'
                                     % (exc.__class__.__name__, self._auth_hint()))
            raise self._not_sent(operation, 'unreachable', 'cannot connect to the KME (%s)' % exception_name(exc))
        return connection

    def _not_sent(self, operation, kind, what):
        """The error of a connection that failed before the request was sent (a TLS failure is not retried)."""
        return transport_error('SKIP %s at %s: %s' % (operation, self.kme_url, what), kind,
                               REFUSED if kind == 'tls' else NOT_SENT, _CONSUMES_KEY[operation])

    def _auth_hint(self):
        if self.auth == 'psk':
            return '; check the PSK identity %r and its key' % (self.psk_identity,)
        return '; check client_cert %s' % self.client_cert

    def _describe_tls_error(self, exc):
        text = str(exc)
        upper = text.upper()
        if self.auth == 'psk':
            if 'UNKNOWN PSK IDENTITY' in upper or 'PSK_IDENTITY_NOT_FOUND' in upper:
                return ('TLS-PSK handshake failed: the KME does not know the PSK identity %r (skip_psk_identity)'
                        % (self.psk_identity,))
            if 'BAD_RECORD_MAC' in upper or 'DECRYPT' in upper or 'BAD RECORD MAC' in upper:
                return ('TLS-PSK handshake failed: the PSK of identity %r does not match the KME\'s (wrong '
                        'skip_psk or skip_psk_file)' % (self.psk_identity,))
            if 'NO_SHARED_CIPHER' in upper or 'HANDSHAKE_FAILURE' in upper or 'NO SHARED CIPHER' in upper:
                return ('TLS-PSK handshake failed: the KME accepts none of the TLS 1.2 PSK suites %s' % PSK_CIPHERS)
            return 'TLS-PSK handshake failed: %s' % kme_text(text)
        if 'CERTIFICATE_VERIFY_FAILED' in upper:
            return ('TLS handshake failed: the KME\'s server certificate does not verify against ca_cert '
                    '(CA mismatch, wrong host name, or expired): %s' % kme_text(text))
        return 'TLS handshake failed (mutual TLS, client_cert %s): %s' % (self.client_cert, kme_text(text))

    def _http_error(self, operation, status, body):
        kme_message = body.get('message') if isinstance(body, dict) else None
        details = body.get('details') if isinstance(body, dict) else None
        kind = {400: 'bad_request', 401: 'unauthorized', 403: 'unauthorized', 404: 'bad_request',
                405: 'bad_request', 503: 'unavailable'}.get(status, 'protocol')
        message = 'SKIP %s at %s refused (HTTP %d): %s' % (
            operation, self.kme_url, status,
            kme_text(kme_message) if isinstance(kme_message, str) else 'no error message in the answer')
        return transport_error(message, kind, UNAVAILABLE if kind == 'unavailable' else REFUSED, _CONSUMES_KEY[operation],
                               status_code=status, details=details)

    def _protocol_error(self, operation, problem):
        return transport_error('SKIP %s at %s: invalid answer: %s' % (operation, self.kme_url, problem), 'protocol',
                               ANSWER_INVALID, _CONSUMES_KEY[operation], _LOST_ANSWER.get(operation))
