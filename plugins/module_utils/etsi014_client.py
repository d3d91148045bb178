# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ETSI GS QKD 014 v1.1.1 client: REST key delivery over HTTPS with mutual TLS.

Retries and the "never consume a key twice" rule
------------------------------------------------
The transport core (_kme_transport) bounds each request by ``timeout`` and holds the retry table;
this client tells it how a request failed. A request is retried (capped exponential backoff, a
warning per retry) only when it is certain that the KME handed out no key for it:

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

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover - Python 2 is not supported, kept for sanity tests
    from urllib import quote

try:
    import requests
    import requests.exceptions
    import requests.adapters
    import urllib3.connection
    import urllib3.exceptions
    import urllib3.util.ssl_
except ImportError:  # pragma: no cover - reported by the caller through missing_required_lib
    requests = None
    REQUESTS_IMPORT_ERROR = True
else:
    REQUESTS_IMPORT_ERROR = False

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import (
    KEY_ID_SHAPE, KeyDeliveryClient, KeyDeliveryError, checked_key_ids, checked_number_and_size, checked_sae_id,
    LINK_STATUS_FIELDS, LINK_STATUS_INT_FIELDS, QKDKey)
from ansible_collections.qsafe.keyfabric.plugins.module_utils._kme_transport import (
    ANSWER_INVALID, ANSWER_LOST, NOT_SENT, REFUSED, UNAVAILABLE, call_with_retries, check_files, check_timing,
    deadline_context, describe_tls_error as _describe_tls_error, exception_name as _exception_name, kme_text,
    sanitised_details, transport_error)

API_PREFIX = '/api/v1/keys/'

# The operations that hand out key material (the retry table treats them apart).
_CONSUMES_KEY = {'status': False, 'enc_keys': True, 'dec_keys': True}


def _key_id_text(key_id):
    """Only UUIDs are echoed in messages: anything else a KME puts there could be key material (a KME that
    swapped key and key_ID)."""
    return key_id if isinstance(key_id, str) and KEY_ID_SHAPE.match(key_id) else '(not a UUID)'


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


if requests is not None:
    class _DeadlineAdapter(requests.adapters.HTTPAdapter):
        """An HTTPAdapter whose TLS sockets obey the request deadline of the transport core."""

        def init_poolmanager(self, *args, **kwargs):
            kwargs['ssl_context'] = deadline_context(urllib3.util.ssl_.create_urllib3_context())
            super(_DeadlineAdapter, self).init_poolmanager(*args, **kwargs)


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
        check_files('ETSI GS QKD 014 (mutual TLS)',
                    (('client_cert', client_cert), ('client_key', client_key), ('ca_cert', ca_cert)))
        check_timing(timeout, retries)
        self.kme_url = kme_url.rstrip('/')
        self.client_cert = client_cert
        self.client_key = client_key
        self.ca_cert = ca_cert
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self._warn = warn or (lambda message: None)
        self._sleep = None   # time.sleep; tests put a recorder here
        self._session = requests.Session()
        self._session.mount('https://', _DeadlineAdapter())
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
        checked_number_and_size(number, size)
        request = {'number': number}
        if size is not None:
            request['size'] = size
        body = self._call('enc_keys', 'POST', _path(slave_sae_id, 'enc_keys'), request)
        keys = self._parse_key_container('enc_keys', body)
        if len(keys) != number:
            raise self._protocol_error('enc_keys', 'asked for %d keys, got %d' % (number, len(keys)))
        if size is not None:
            wrong = [key.key_id for key in keys if key.size != size]
            if wrong:
                raise self._protocol_error('enc_keys', 'keys %s are not %d bits long'
                                           % (', '.join(wrong), size))
        return keys

    def get_keys_by_id(self, master_sae_id, key_ids):
        """The keys with ``key_ids`` that ``master_sae_id`` obtained for this (slave) SAE."""
        key_ids = checked_key_ids(key_ids)
        request = {'key_IDs': [{'key_ID': key_id} for key_id in key_ids]}
        body = self._call('dec_keys', 'POST', _path(master_sae_id, 'dec_keys'), request)
        keys = self._parse_key_container('dec_keys', body)
        got = [key.key_id for key in keys]
        if sorted(got) != sorted(key_ids):
            raise self._protocol_error('dec_keys', 'asked for key_IDs %s, got %s'
                                       % (', '.join(key_ids), ', '.join(_key_id_text(k) for k in got) or 'none'))
        by_id = dict((key.key_id, key) for key in keys)
        return [by_id[key_id] for key_id in key_ids]

    def close(self):
        self._session.close()

    # -- transport ----------------------------------------------------------------------

    def _call(self, operation, method, path, payload=None):
        url = self.kme_url + API_PREFIX + path

        def attempt(final):
            try:
                # the socket timeouts bound connect and each read; the core's deadline bounds the whole request
                response = self._session.request(method, url, json=payload, timeout=self.timeout,
                                                 verify=self.ca_cert, allow_redirects=False)
            except requests.exceptions.RequestException as exc:
                raise self._transport_error(operation, exc)
            if response.status_code == 200:
                return self._json(operation, response)
            raise self._http_error(operation, response)
        return call_with_retries(attempt, self.timeout, self.retries, self.retry_backoff, self._warn, self._sleep)

    def _transport_error(self, operation, exc):
        if _is_ssl_failure(exc) and not isinstance(exc, requests.exceptions.ReadTimeout):
            return transport_error('ETSI 014 %s at %s: %s' % (
                operation, self.kme_url, _describe_tls_error(_root_cause(exc), self.client_cert, self.ca_cert)),
                'tls', REFUSED, _CONSUMES_KEY[operation])
        sent = _may_have_been_sent(exc)
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
        return transport_error('ETSI 014 %s at %s: %s' % (operation, self.kme_url, what), kind,
                               ANSWER_LOST if sent else NOT_SENT, _CONSUMES_KEY[operation], _LOST_ANSWER[operation])

    def _http_error(self, operation, response):
        try:
            body = response.json()
        except ValueError:
            body = None
        kme_message = body.get('message') if isinstance(body, dict) else None
        details = sanitised_details(body.get('details') if isinstance(body, dict) else None)
        kind = {400: 'bad_request', 401: 'unauthorized', 503: 'unavailable'}.get(response.status_code, 'protocol')
        message = 'ETSI 014 %s at %s refused (HTTP %d): %s' % (
            operation, self.kme_url, response.status_code,
            kme_text(kme_message) if isinstance(kme_message, str) else 'no error message in the answer')
        if details:
            message += ' (details: %s)' % kme_text(json.dumps(details, sort_keys=True))
        return transport_error(message, kind, UNAVAILABLE if kind == 'unavailable' else REFUSED,
                               _CONSUMES_KEY[operation], status_code=response.status_code, details=details)

    def _json(self, operation, response):
        try:
            return response.json()
        except ValueError:
            raise self._protocol_error(operation, 'the answer is not JSON (Content-Type %s, %d bytes)' % (
                kme_text(response.headers.get('Content-Type', 'none'), 80), len(response.content)))

    def _parse_key_container(self, operation, body):
        if not isinstance(body, dict) or not isinstance(body.get('keys'), list):
            raise self._protocol_error(operation, 'the answer is not a Key container (no "keys" list)')
        keys = []
        for index, entry in enumerate(body['keys']):
            if not isinstance(entry, dict) or not isinstance(entry.get('key_ID'), str) \
                    or not isinstance(entry.get('key'), str) or not entry['key_ID']:
                raise self._protocol_error(operation, 'keys[%d] lacks a string key_ID and key' % index)
            if not KEY_ID_SHAPE.match(entry['key_ID']):
                raise self._protocol_error(operation, 'keys[%d] has a key_ID that is not a UUID' % index)
            try:
                key = base64.b64decode(entry['key'], validate=True)
            except (binascii.Error, ValueError):
                raise self._protocol_error(operation, 'keys[%d] (key_ID %s) is not valid base64'
                                           % (index, entry['key_ID']))
            if not key:
                raise self._protocol_error(operation, 'keys[%d] (key_ID %s) is empty'
                                           % (index, entry['key_ID']))
            keys.append(QKDKey(entry['key_ID'], key))
        return keys

    def _protocol_error(self, operation, problem):
        return transport_error('ETSI 014 %s at %s: invalid answer: %s' % (operation, self.kme_url, problem),
                               'protocol', ANSWER_INVALID, _CONSUMES_KEY[operation], _LOST_ANSWER[operation])


_LOST_ANSWER = {
    'status': '',
    'enc_keys': ('the KME may have reserved keys for the slave that this master never received; '
                 'they were not requested again, so no key is consumed twice. Request new keys.'),
    'dec_keys': ('the KME may have delivered these key_IDs in the lost answer and will not '
                 'deliver them again. The master must obtain new keys for this link.'),
}


def _path(sae_id, endpoint):
    return quote(checked_sae_id(sae_id), safe='') + '/' + endpoint
