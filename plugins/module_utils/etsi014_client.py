# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ETSI GS QKD 014 v1.1.1 client: REST key delivery over HTTPS with mutual TLS.

Retries and the "never consume a key twice" rule
------------------------------------------------
A request is retried (with exponential backoff, and a warning per retry) only when it is
certain that the KME handed out no key for it:

* the connection could not be made (refused, connect timeout, or reset before or during the TLS
  handshake: urllib3 writes the request only once the handshake is done),
* the KME answered 503 (ETSI 014: server-side error, e.g. not enough key; it delivers nothing).

``status`` is read-only, so it is also retried after a read timeout or a dropped connection.
``enc_keys`` and ``dec_keys`` are NOT retried once the request may have reached the KME: if
the answer of an ``enc_keys`` is lost, the KME has already reserved those keys for the slave
under key_IDs the master never saw; a blind retry would reserve a second set and the first
would be lost silently. If the answer of a ``dec_keys`` is lost, the KME has already delivered
those keys once and, by the standard, will not deliver them again. In both cases the client
raises a ``KeyDeliveryError`` with ``consumed=True`` and a message that says exactly that, so
the caller (a playbook, the lookup) fetches a new key pair instead of guessing.

``enc_keys`` always uses POST (the standard allows GET with query parameters too): a
key-consuming request is never sent with a method that proxies or libraries treat as safe to
repeat.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import json
import os
import re
import ssl
import time

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover - Python 2 is not supported, kept for sanity tests
    from urllib import quote

try:
    import requests
    import requests.exceptions
    import urllib3.connection
    import urllib3.exceptions
except ImportError:  # pragma: no cover - reported by the caller through missing_required_lib
    requests = None
    REQUESTS_IMPORT_ERROR = True
else:
    REQUESTS_IMPORT_ERROR = False

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import (
    KeyDeliveryClient,
    KeyDeliveryError,
    checked_key_ids,
    LINK_STATUS_FIELDS,
    LINK_STATUS_INT_FIELDS,
    QKDKey,
)

API_PREFIX = '/api/v1/keys/'

# What each operation may be retried after, beyond "not connected" and 503.
_READ_RETRY_SAFE = {'status': True, 'enc_keys': False, 'dec_keys': False}


def _describe_tls_error(exc, client_cert, ca_cert):
    """Turn an SSL failure into a sentence that names the certificate at fault.

    Only the ssl module's own error text is quoted (OpenSSL reason strings); any other
    exception is named by its class, as its text could come from the peer."""
    text = str(exc) if isinstance(exc, ssl.SSLError) else _exception_name(exc)
    upper = text.upper()
    if 'CERTIFICATE_VERIFY_FAILED' in upper:
        return ("TLS handshake failed: the KME's server certificate does not verify against "
                "ca_cert %s (CA mismatch, wrong host name, or expired server certificate): %s"
                % (ca_cert, _short(text)))
    if 'ALERT' in upper or 'CERTIFICATE REQUIRED' in upper:
        return ("TLS handshake failed: the KME rejected the client certificate %s (expired, "
                "revoked, or not issued by a CA the KME trusts): %s" % (client_cert, _short(text)))
    if 'EOF' in upper or 'RESET' in upper:
        return ("TLS handshake failed: the KME closed the connection, most likely because it "
                "rejected the client certificate %s (expired, revoked, or not issued by a CA the "
                "KME trusts): %s" % (client_cert, _short(text)))
    if 'PEM' in upper or 'KEY_VALUES_MISMATCH' in upper or 'NO SUCH FILE' in upper:
        return ("cannot load the client certificate %s and its key: %s"
                % (client_cert, _short(text)))
    return 'TLS failure: %s' % _short(text)


def _exception_name(exc):
    """Name an exception without its text: the text of protocol errors can hold what the peer
    sent (http.client's BadStatusLine carries the line received), which may be key material."""
    name = exc.__class__.__name__
    errno = getattr(exc, 'errno', None)
    if isinstance(errno, int):
        return '%s, errno %d: %s' % (name, errno, getattr(exc, 'strerror', None) or '')
    return name


# ETSI GS QKD 014 key_IDs are UUIDs. Only UUIDs are echoed in messages: anything else a KME puts
# there could be key material (a KME that swapped key and key_ID).
_KEY_ID_SHAPE = re.compile(r'^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')


def _key_id_text(key_id):
    return key_id if isinstance(key_id, str) and _KEY_ID_SHAPE.match(key_id) else '(not a UUID)'


def _short(text, limit=300):
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[:limit] + '...'


def _root_cause(exc):
    """Walk requests/urllib3 wrappers down to the exception that started it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, 'reason', None)
        if inner is None and exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if inner is None or not isinstance(inner, BaseException):
            return exc
        exc = inner
    return exc


def _is_ssl_failure(exc):
    if isinstance(exc, requests.exceptions.SSLError):
        return True
    root = _root_cause(exc)
    return root.__class__.__name__ in ('SSLError', 'SSLZeroReturnError', 'SSLEOFError') or \
        'alert' in str(root).lower()


def _exception_chain(exc):
    """``exc`` and every exception it wraps (requests and urllib3 keep the cause in ``reason``, in ``args`` or in
    ``__cause__``), outermost first."""
    chain, pending = [], [exc]
    while pending and len(chain) < 16:
        link = pending.pop(0)
        if not isinstance(link, BaseException) or any(link is seen for seen in chain):
            continue
        chain.append(link)
        pending.extend([getattr(link, 'reason', None)] + list(link.args) + [link.__cause__])
    return chain


def _connect_codes():
    """Code objects of urllib3's connection set-up: TCP connect and TLS handshake, before any request byte."""
    codes = set()
    for cls in (urllib3.connection.HTTPConnection, urllib3.connection.HTTPSConnection):
        method = getattr(cls, 'connect', None)
        if method is not None:
            codes.add(method.__code__)
    return codes


def _raised_while_connecting(exc):
    """True when ``exc`` was raised inside urllib3's ``connect`` (TCP connect or TLS handshake).

    urllib3 writes the HTTP request only after ``connect`` returned, so an error raised in it cannot have carried
    the request. This is the only way to tell a reset during the handshake (a KME that accepts and resets, e.g.
    qkdsim's ``kme-down --mode drop``) from a reset while the answer was awaited: urllib3 wraps both in the same
    ``ProtocolError('Connection aborted.', ConnectionResetError(...))``."""
    codes = _connect_codes()
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code in codes:
            return True
        frame = frame.tb_next
    return False


def _may_have_been_sent(exc):
    """True when the request may have reached the KME before ``exc`` happened."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    for link in _exception_chain(exc):
        if isinstance(link, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                             ConnectionRefusedError)):
            return False
        if isinstance(link, OSError) and not isinstance(link, requests.exceptions.RequestException) \
                and _raised_while_connecting(link):
            return False
    return True


def _connection_failure(exc):
    """The exception that names why a connection failed: the innermost OSError that is not a requests wrapper."""
    for link in reversed(_exception_chain(exc)):
        if isinstance(link, OSError) and not isinstance(link, requests.exceptions.RequestException):
            return link
    return _root_cause(exc)


class Etsi014Client(KeyDeliveryClient):
    """One SAE talking to one KME over ETSI GS QKD 014, with one kept-alive HTTPS session."""

    interface = 'etsi014'

    def __init__(self, kme_url, client_cert, client_key, ca_cert, timeout=10.0, retries=3,
                 retry_backoff=0.5, warn=None):
        if REQUESTS_IMPORT_ERROR:
            raise KeyDeliveryError('the Python library "requests" is required for ETSI GS QKD 014',
                                   kind='config')
        if not kme_url or not kme_url.startswith('https://'):
            raise KeyDeliveryError('kme_url must be an https:// URL, got %r' % (kme_url,), kind='config')
        for option, path in (('client_cert', client_cert), ('client_key', client_key), ('ca_cert', ca_cert)):
            if not path:
                raise KeyDeliveryError('%s is required for ETSI GS QKD 014 (mutual TLS)' % option,
                                       kind='config')
            if not os.path.isfile(path):
                raise KeyDeliveryError('%s %s does not exist or is not a file' % (option, path),
                                       kind='config')
        if timeout <= 0:
            raise KeyDeliveryError('timeout must be positive, got %r' % (timeout,), kind='config')
        if retries < 0:
            raise KeyDeliveryError('retries must be 0 or more, got %r' % (retries,), kind='config')
        self.kme_url = kme_url.rstrip('/')
        self.client_cert = client_cert
        self.client_key = client_key
        self.ca_cert = ca_cert
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self._warn = warn or (lambda message: None)
        self._session = requests.Session()
        # REQUESTS_CA_BUNDLE and friends would otherwise override the KME CA silently.
        self._session.trust_env = False
        self._session.verify = ca_cert
        self._session.cert = (client_cert, client_key)
        self._session.headers.update({'Accept': 'application/json'})

    # -- the contract -------------------------------------------------------------------

    def status(self, peer_sae_id):
        """Status of the link to ``peer_sae_id`` (the slave SAE), as the 11 ETSI 014 fields."""
        body = self._call('status', 'GET', _path(peer_sae_id, 'status'))
        if not isinstance(body, dict):
            raise self._protocol_error('status', 'the answer is not a JSON object')
        missing = [field for field in LINK_STATUS_FIELDS if field not in body]
        if missing:
            raise self._protocol_error('status', 'the Status object lacks %s' % ', '.join(missing))
        for field in LINK_STATUS_INT_FIELDS:
            if not isinstance(body[field], int) or isinstance(body[field], bool):
                raise self._protocol_error('status', 'Status field %s is not an integer' % field)
        return body

    def get_new_keys(self, slave_sae_id, number=1, size=None):
        """New keys for ``slave_sae_id``; the caller is the master SAE."""
        if not isinstance(number, int) or number < 1:
            raise KeyDeliveryError('number must be a whole number of at least 1, got %r' % (number,),
                                   kind='bad_request')
        if size is not None and (not isinstance(size, int) or size <= 0 or size % 8):
            raise KeyDeliveryError('size must be a positive multiple of 8 bits, got %r' % (size,),
                                   kind='bad_request')
        request = {'number': number}
        if size is not None:
            request['size'] = size
        body = self._call('enc_keys', 'POST', _path(slave_sae_id, 'enc_keys'), request)
        keys = self._parse_key_container('enc_keys', body, consumed=True)
        if len(keys) != number:
            raise self._protocol_error('enc_keys', 'asked for %d keys, got %d' % (number, len(keys)),
                                       consumed=True)
        if size is not None:
            wrong = [key.key_id for key in keys if key.size != size]
            if wrong:
                raise self._protocol_error('enc_keys', 'keys %s are not %d bits long'
                                           % (', '.join(wrong), size), consumed=True)
        return keys

    def get_keys_by_id(self, master_sae_id, key_ids):
        """The keys with ``key_ids`` that ``master_sae_id`` obtained for this (slave) SAE."""
        key_ids = checked_key_ids(key_ids)
        request = {'key_IDs': [{'key_ID': key_id} for key_id in key_ids]}
        body = self._call('dec_keys', 'POST', _path(master_sae_id, 'dec_keys'), request)
        keys = self._parse_key_container('dec_keys', body, consumed=True)
        got = [key.key_id for key in keys]
        if sorted(got) != sorted(key_ids):
            raise self._protocol_error('dec_keys', 'asked for key_IDs %s, got %s'
                                       % (', '.join(key_ids), ', '.join(_key_id_text(k) for k in got) or 'none'),
                                       consumed=True)
        by_id = dict((key.key_id, key) for key in keys)
        return [by_id[key_id] for key_id in key_ids]

    def close(self):
        self._session.close()

    # -- transport ----------------------------------------------------------------------

    def _call(self, operation, method, path, payload=None):
        url = self.kme_url + API_PREFIX + path
        attempt = 0
        while True:
            try:
                response = self._session.request(method, url, json=payload, timeout=self.timeout,
                                                 verify=self.ca_cert, allow_redirects=False)
            except requests.exceptions.RequestException as exc:
                error = self._transport_error(operation, exc)
            else:
                if response.status_code == 200:
                    return self._json(operation, response)
                error = self._http_error(operation, response)
            retryable = error.kind == 'unavailable' or not error.consumed and error.kind in ('unreachable', 'timeout')
            if not retryable or attempt >= self.retries:
                raise error
            attempt += 1
            delay = self.retry_backoff * (2 ** (attempt - 1))
            self._warn('%s; retry %d of %d in %.1f s' % (error.message, attempt, self.retries, delay))
            time.sleep(delay)

    def _transport_error(self, operation, exc):
        if _is_ssl_failure(exc) and not isinstance(exc, requests.exceptions.ReadTimeout):
            return KeyDeliveryError('ETSI 014 %s at %s: %s' % (
                operation, self.kme_url, _describe_tls_error(_root_cause(exc), self.client_cert, self.ca_cert)),
                kind='tls')
        sent = _may_have_been_sent(exc)
        consumed = sent and not _READ_RETRY_SAFE[operation]
        if isinstance(exc, requests.exceptions.Timeout):
            kind, what = 'timeout', 'the KME did not answer within %s s' % self.timeout
        elif sent:
            kind, what = 'timeout', 'the connection to the KME broke before its answer arrived (%s)' % _exception_name(_root_cause(exc))
        elif _raised_while_connecting(_connection_failure(exc)):
            kind, what = 'unreachable', ('cannot connect to the KME: the connection broke before the TLS handshake '
                                         'completed, so no request was sent (%s)'
                                         % _exception_name(_connection_failure(exc)))
        else:
            kind, what = 'unreachable', 'cannot connect to the KME (%s)' % _exception_name(_root_cause(exc))
        message = 'ETSI 014 %s at %s: %s' % (operation, self.kme_url, what)
        if consumed:
            message += '; ' + _LOST_ANSWER[operation]
        return KeyDeliveryError(message, kind=kind, consumed=consumed)

    def _http_error(self, operation, response):
        kme_message, details = None, []
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            kme_message = body.get('message')
            details = body.get('details') or []
            if not isinstance(details, list):
                details = [details]
        kind = {400: 'bad_request', 401: 'unauthorized', 503: 'unavailable'}.get(response.status_code, 'protocol')
        message = 'ETSI 014 %s at %s refused (HTTP %d): %s' % (
            operation, self.kme_url, response.status_code,
            _short(kme_message) if isinstance(kme_message, str) else 'no error message in the answer')
        if details:
            message += ' (details: %s)' % _short(json.dumps(details, sort_keys=True))
        return KeyDeliveryError(message, kind=kind, status_code=response.status_code, details=details)

    def _json(self, operation, response):
        try:
            return response.json()
        except ValueError:
            raise self._protocol_error(operation, 'the answer is not JSON (Content-Type %s, %d bytes)' % (
                response.headers.get('Content-Type', 'none'), len(response.content)),
                consumed=operation != 'status')

    def _parse_key_container(self, operation, body, consumed):
        if not isinstance(body, dict) or not isinstance(body.get('keys'), list):
            raise self._protocol_error(operation, 'the answer is not a Key container (no "keys" list)',
                                       consumed=consumed)
        keys = []
        for index, entry in enumerate(body['keys']):
            if not isinstance(entry, dict) or not isinstance(entry.get('key_ID'), str) \
                    or not isinstance(entry.get('key'), str) or not entry['key_ID']:
                raise self._protocol_error(operation, 'keys[%d] lacks a string key_ID and key' % index,
                                           consumed=consumed)
            if not _KEY_ID_SHAPE.match(entry['key_ID']):
                raise self._protocol_error(operation, 'keys[%d] has a key_ID that is not a UUID' % index,
                                           consumed=consumed)
            try:
                key = base64.b64decode(entry['key'], validate=True)
            except (binascii.Error, ValueError):
                raise self._protocol_error(operation, 'keys[%d] (key_ID %s) is not valid base64'
                                           % (index, entry['key_ID']), consumed=consumed)
            if not key:
                raise self._protocol_error(operation, 'keys[%d] (key_ID %s) is empty'
                                           % (index, entry['key_ID']), consumed=consumed)
            keys.append(QKDKey(entry['key_ID'], key))
        return keys

    def _protocol_error(self, operation, problem, consumed=False):
        message = 'ETSI 014 %s at %s: invalid answer: %s' % (operation, self.kme_url, problem)
        if consumed:
            message += '; ' + _LOST_ANSWER[operation]
        return KeyDeliveryError(message, kind='protocol', consumed=consumed)


_LOST_ANSWER = {
    'status': '',
    'enc_keys': ('the KME may have reserved keys for the slave that this master never received; '
                 'they were not requested again, so no key is consumed twice. Request new keys.'),
    'dec_keys': ('the KME may have delivered these key_IDs in the lost answer and will not '
                 'deliver them again. The master must obtain new keys for this link.'),
}


def _path(sae_id, endpoint):
    if not isinstance(sae_id, str) or not sae_id or '/' in sae_id:
        raise KeyDeliveryError('SAE ID must be a non-empty string without "/", got %r' % (sae_id,),
                               kind='bad_request')
    return quote(sae_id, safe='') + '/' + endpoint
