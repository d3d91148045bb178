# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ETSI GS QKD 004 v2.1.1 client: OPEN_CONNECT / GET_KEY / CLOSE behind the key-delivery contract.

ETSI 004 defines calls and status codes, not a wire format; ``WIRES`` maps a wire format name to
its codec, both over TLS with mutual certificates (docs/qkdsim.md): the JSON dialect (one JSON
object per line; ``kme_url`` ``tls://host:port``) and the binary framing (8-byte header, fixed
payloads; ``kme_url`` ``tls+binary://host:port``).

How the contract maps onto 004
------------------------------
* ``get_new_keys(slave, number, size)`` (this SAE is the master): ``OPEN_CONNECT(qkd://<self>,
  qkd://<slave>)`` with ``key_chunk_size = size / 8`` opens a new stream, ``GET_KEY`` reads the
  chunks at index 0 .. number-1, ``CLOSE`` ends it. Each key's ID is the key_ID the KME gives in
  the GET_KEY metadata (a UUID, the same namespace as ETSI 014 key_IDs).
* ``get_keys_by_id(master, key_ids)`` (this SAE is the slave): per key ID, ``OPEN_CONNECT(qkd://
  <master>, qkd://<self>, key_stream_ID = key ID)``, ``GET_KEY`` index 0, ``CLOSE``: a KME that
  serves 004 beside 014 opens the stream of that one key. So a 004 slave takes keys whose master
  used ETSI 014, and an ETSI 014 slave takes keys whose master used 004.
* ``status(peer)``: 004 has no status call; the client opens a stream to the peer and closes it at
  once (no key is taken), and reports what that tells: the link is up and its chunk size and rate.

Keys are never lost silently: a request that may have made the KME hand out a chunk (the answer
of a GET_KEY lost) is not repeated and fails with ``consumed=True``; ``metadata buffer too small``
(status 8; nothing was handed out) is retried once with the size the KME asked for; QoS that the
KME cannot meet (status 7) fails with the KME's counter-proposal in the message and details.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import json
import os
import re
import socket
import ssl
import struct
import time
import uuid

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import (
    KeyDeliveryClient,
    KeyDeliveryError,
    checked_key_ids,
    QKDKey,
)

URI_SCHEME = 'qkd://'
MAX_LINE_BYTES = 1 << 20
METADATA_SIZE = 1024
STATUS_NAMES = {
    0: 'successful', 1: 'successful, peer not connected', 2: 'insufficient key', 3: 'peer not connected',
    4: 'no QKD connection available', 5: 'key_stream_ID in use', 6: 'timeout', 7: 'QoS not met',
    8: 'metadata buffer too small',
}
_KEY_ID_SHAPE = re.compile(r'^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')
_URL = re.compile(r'^(?P<scheme>tls|tls\+binary)://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+):(?P<port>[0-9]{1,5})/?$')
QOS_FIELDS = ('key_chunk_size', 'max_bps', 'min_bps', 'jitter', 'priority', 'timeout', 'TTL', 'metadata_mimetype')


class _Unsent(Exception):
    """The request never left this host (no connection, TLS handshake refused)."""

    def __init__(self, kind, message):
        super(_Unsent, self).__init__(message)
        self.kind = kind
        self.message = message


class _Lost(Exception):
    """The request was sent; its answer did not arrive (timeout, connection broken, not JSON)."""

    def __init__(self, kind, message):
        super(_Lost, self).__init__(message)
        self.kind = kind
        self.message = message


class JsonLineWire:
    """The JSON dialect: one JSON object per line each way, over one kept TLS connection."""

    name = 'json'

    def __init__(self, host, port, tls_context, timeout):
        self.host, self.port, self.tls, self.timeout = host, port, tls_context, timeout
        self._sock = None
        self._reader = None
        self._fresh = False

    def call(self, command, data, wait=0.0):
        """Send one request, return the answer (a dict). Raises _Unsent or _Lost."""
        if self._sock is None:
            self._connect()
        fresh, self._fresh = self._fresh, False
        line = json.dumps({'command': command, 'data': data}).encode('utf-8') + b'\n'
        try:
            self._sock.settimeout(self.timeout + wait)
            self._sock.sendall(line)
            answer = self._reader.readline(MAX_LINE_BYTES + 1)
        except (ssl.SSLError, OSError) as exc:   # socket.timeout is an OSError
            self.close()
            raise _exchange_failure(exc, fresh, self.timeout + wait)
        if not answer and fresh:
            self.close()   # closed before the first answer of a new connection: the handshake was refused
            raise _Lost('tls', _tls_reason(ConnectionResetError('EOF before the first answer')))
        if not answer.endswith(b'\n'):
            self.close()
            raise _Lost('protocol' if answer else 'timeout', 'the KME closed the connection before its answer '
                        'was complete' if not answer or len(answer) <= MAX_LINE_BYTES else 'the answer is too long')
        try:
            document = json.loads(answer)
        except ValueError:
            self.close()
            raise _Lost('protocol', 'the answer is not JSON (%d bytes)' % len(answer))
        if not isinstance(document, dict):
            raise _Lost('protocol', 'the answer is not a JSON object')
        return document

    def _connect(self):
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.timeout:
            raise _Unsent('unreachable', 'cannot connect to the KME (connect timeout after %s s)' % self.timeout)
        except OSError as exc:
            raise _Unsent('unreachable', 'cannot connect to the KME (%s)' % _name(exc))
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self.tls.wrap_socket(raw, server_hostname=self.host.strip('[]'))
        except (ssl.SSLError, OSError) as exc:
            raw.close()
            raise _Unsent('tls', _tls_reason(exc))
        self._sock, self._reader, self._fresh = sock, sock.makefile('rb'), True

    def close(self):
        if self._sock is not None:
            for closer in (self._reader.close, self._sock.close):
                try:
                    closer()
                except OSError:
                    pass
        self._sock = self._reader = None


class BinaryWire(JsonLineWire):
    """The binary framing (``tls+binary://``): an 8-byte header (version major, minor, patch, service type,
    payload length) and fixed-layout payloads; see qkdsim/etsi004.py. Answers are returned in the shape of
    the JSON dialect, so the client above does not know which wire it talks."""

    name = 'binary'
    VERSION = (1, 0, 1)
    HEADER = struct.Struct('!BBBbI')
    QOS = struct.Struct('!7I256s')
    QOS_FIELDS = ('key_chunk_size', 'max_bps', 'min_bps', 'jitter', 'priority', 'timeout', 'TTL')
    SERVICES = {'OPEN_CONNECT': 0x02, 'GET_KEY': 0x04, 'CLOSE': 0x08}
    NOT_A_CALL = 0xFFFFFFFF

    def call(self, command, data, wait=0.0):
        if self._sock is None:
            self._connect()
        fresh, self._fresh = self._fresh, False
        payload = self._encode(command, data)
        self._last_ksid = data.get('key_stream_ID')
        try:
            self._sock.settimeout(self.timeout + wait)
            self._sock.sendall(self.HEADER.pack(*(self.VERSION + (self.SERVICES[command], len(payload)))) + payload)
            header = self._reader.read(self.HEADER.size)
            if len(header) == self.HEADER.size:
                service, length = self.HEADER.unpack(header)[3:]
                body = self._reader.read(length) if length <= MAX_LINE_BYTES else b''
        except (ssl.SSLError, OSError) as exc:   # socket.timeout is an OSError
            self.close()
            raise _exchange_failure(exc, fresh, self.timeout + wait)
        if len(header) < self.HEADER.size:
            self.close()
            if not header and fresh:
                raise _Lost('tls', _tls_reason(ConnectionResetError('EOF before the first answer')))
            raise _Lost('timeout', 'the KME closed the connection before its answer was complete')
        if service != self.SERVICES[command] + 1 or len(body) != length or length < 4:
            self.close()
            raise _Lost('protocol', 'the answer is not a %s response frame' % command)
        return self._decode(command, body)

    def _encode(self, command, data):
        if command == 'OPEN_CONNECT':
            qos = dict(data.get('qos') or {})
            values = [qos.get(name, 0) for name in self.QOS_FIELDS]   # 0: the KME's default (size, rate, TTL)
            mimetype = qos.get('metadata_mimetype', 'application/json').encode('utf-8')
            ksid = uuid.UUID(data['key_stream_ID']).bytes if data.get('key_stream_ID') else bytes(16)
            return (data['source'].encode('utf-8') + b'\0' + data['destination'].encode('utf-8') + b'\0'
                    + self.QOS.pack(*(values + [mimetype])) + ksid)
        ksid = uuid.UUID(data['key_stream_ID']).bytes
        if command == 'GET_KEY':
            return ksid + struct.pack('!II', data['index'], data['metadata_size'])
        return ksid

    def _decode(self, command, body):
        (status,) = struct.unpack('!I', body[:4])
        rest = body[4:]
        if status == self.NOT_A_CALL:
            try:
                error = json.loads(rest.decode('utf-8'))
            except ValueError:
                error = {}
            return {'command': command, 'error': error.get('error', 'bad_request'), 'message': error.get('message')}
        answer, data = {'command': command, 'status': status}, {}
        try:
            if command == 'OPEN_CONNECT' and status in (0, 1, 7):
                values = self.QOS.unpack(rest[:self.QOS.size])
                data['qos'] = dict(zip(self.QOS_FIELDS, values[:7]), metadata_mimetype=values[7].rstrip(b'\0').decode())
                ksid = uuid.UUID(bytes=rest[self.QOS.size:self.QOS.size + 16])
                if ksid.int:
                    data['key_stream_ID'] = str(ksid)
                rest = rest[self.QOS.size + 16:]
            elif command == 'GET_KEY' and status == 0:
                index, size = struct.unpack('!II', rest[:8])
                key = rest[8:8 + size]
                (meta_size,) = struct.unpack('!I', rest[8 + size:12 + size])
                metadata = rest[12 + size:12 + size + meta_size]
                if len(key) != size or len(metadata) != meta_size:
                    raise ValueError('short')
                data.update(index=index, key_buffer=base64.b64encode(key).decode('ascii'),
                            metadata=metadata.decode('utf-8'))
                rest = rest[12 + size + meta_size:]
            elif command == 'GET_KEY' and status == 8:
                (data['metadata_size'],) = struct.unpack('!I', rest[:4])
                rest = rest[4:]
        except (struct.error, ValueError, UnicodeDecodeError):
            raise _Lost('protocol', 'the %s response frame is malformed' % command)
        if command == 'GET_KEY' and status == 0:
            data['key_stream_ID'] = self._last_ksid
        answer['data'] = data
        if rest:
            answer['message'] = rest.decode('utf-8', 'replace')
        return answer


WIRES = {'json': JsonLineWire, 'binary': BinaryWire}


def _exchange_failure(exc, fresh, waited):
    """The error for a request/answer exchange that failed with ``exc`` (the connection is closed)."""
    if isinstance(exc, socket.timeout):
        return _Lost('timeout', 'the KME did not answer within %s s' % waited)
    if isinstance(exc, ssl.SSLError) and 'ALERT' in str(exc).upper():
        # TLS 1.3: a refused client certificate shows on the first read; the KME took no request.
        return _Unsent('tls', _tls_reason(exc))
    if fresh:
        return _Lost('tls', _tls_reason(exc))
    return _Lost('timeout', 'the connection to the KME broke before its answer arrived (%s)' % _name(exc))


def _name(exc):
    """An exception named by its class and errno, never by text a peer could have sent."""
    errno = getattr(exc, 'errno', None)
    if isinstance(errno, int):
        return '%s, errno %d: %s' % (exc.__class__.__name__, errno, getattr(exc, 'strerror', None) or '')
    return exc.__class__.__name__


def _tls_reason(exc):
    text = str(exc) if isinstance(exc, ssl.SSLError) else _name(exc)
    upper = text.upper()
    if 'CERTIFICATE_VERIFY_FAILED' in upper:
        return ("TLS handshake failed: the KME's server certificate does not verify against ca_cert (CA mismatch, "
                "wrong host name, or expired server certificate): %s" % text)
    if 'ALERT' in upper or 'EOF' in upper or 'RESET' in upper or 'BROKENPIPE' in upper:
        return ('TLS handshake failed: the KME rejected the client certificate (expired, revoked, or not issued by '
                'a CA the KME trusts): %s' % text)
    return 'TLS failure: %s' % text


class Etsi004Client(KeyDeliveryClient):
    """One SAE talking to one KME over ETSI GS QKD 004, with one kept TLS connection."""

    interface = 'etsi004'

    def __init__(self, kme_url, sae_id, client_cert, client_key, ca_cert, timeout=10.0, retries=3,
                 retry_backoff=0.5, warn=None, wire=None, qos=None):
        match = _URL.match(kme_url or '')
        if not match or not 0 < int(match.group('port')) < 65536:
            raise KeyDeliveryError('kme_url of an ETSI 004 KME must be tls://<host>:<port> (JSON dialect) or '
                                   'tls+binary://<host>:<port> (binary framing), got %r' % (kme_url,), kind='config')
        if not sae_id or not isinstance(sae_id, str) or '/' in sae_id:
            raise KeyDeliveryError('sae_id is required for ETSI GS QKD 004 (it names this SAE in OPEN_CONNECT), '
                                   'got %r' % (sae_id,), kind='config')
        for option, path in (('client_cert', client_cert), ('client_key', client_key), ('ca_cert', ca_cert)):
            if not path:
                raise KeyDeliveryError('%s is required for ETSI GS QKD 004 (mutual TLS)' % option, kind='config')
            if not os.path.isfile(path):
                raise KeyDeliveryError('%s %s does not exist or is not a file' % (option, path), kind='config')
        wire = wire or ('binary' if match.group('scheme') == 'tls+binary' else 'json')
        if wire not in WIRES:
            raise KeyDeliveryError('wire must be one of %s, got %r' % (', '.join(sorted(WIRES)), wire), kind='config')
        if timeout <= 0:
            raise KeyDeliveryError('timeout must be positive, got %r' % (timeout,), kind='config')
        if retries < 0:
            raise KeyDeliveryError('retries must be 0 or more, got %r' % (retries,), kind='config')
        unknown = sorted(set(qos or {}) - set(QOS_FIELDS))
        if unknown:
            raise KeyDeliveryError('unknown QoS field %s (known: %s)' % (', '.join(unknown), ', '.join(QOS_FIELDS)),
                                   kind='config')
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_cert)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(client_cert, client_key)
        except (ssl.SSLError, OSError) as exc:
            raise KeyDeliveryError('cannot load the client certificate %s and its key, or ca_cert %s: %s'
                                   % (client_cert, ca_cert, _tls_reason(exc)), kind='config')
        self.kme_url = kme_url.rstrip('/')
        self.sae_id = sae_id
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.qos = dict(qos or {})
        self._warn = warn or (lambda message: None)
        self._wire = WIRES[wire](match.group('host').strip('[]'), int(match.group('port')), context, timeout)

    # -- the contract -------------------------------------------------------------------

    def status(self, peer_sae_id):
        """What 004 can tell about the link to ``peer_sae_id``: a stream opens (and is closed at once)."""
        ksid, qos = self._open(self.sae_id, _sae(peer_sae_id), None, dict(self.qos))
        self._close(ksid)
        chunk = qos.get('key_chunk_size')
        chunk_bits = chunk * 8 if isinstance(chunk, int) and not isinstance(chunk, bool) else -1
        # 004 reports no counts and no KME IDs: -1 and '' (the convention of the SKIP client), the QoS granted aside.
        status = dict(source_KME_ID='', target_KME_ID='', master_SAE_ID=self.sae_id, slave_SAE_ID=peer_sae_id,
                      key_size=chunk_bits, stored_key_count=-1, max_key_count=-1, max_key_per_request=-1,
                      max_key_size=-1, min_key_size=-1, max_SAE_ID_count=0,
                      status_extension=dict(interface='etsi004', key_counts_reported=False, qos=qos))
        return status

    def get_new_keys(self, slave_sae_id, number=1, size=None):
        """New keys for ``slave_sae_id``: one stream, the chunks at index 0..number-1. The caller is the master."""
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise KeyDeliveryError('number must be a whole number of at least 1, got %r' % (number,), kind='bad_request')
        if size is not None and (not isinstance(size, int) or size <= 0 or size % 8):
            raise KeyDeliveryError('size must be a positive multiple of 8 bits, got %r' % (size,), kind='bad_request')
        qos = dict(self.qos)
        if size is not None:
            qos['key_chunk_size'] = size // 8
        ksid, granted = self._open(self.sae_id, _sae(slave_sae_id), None, qos)
        keys = []
        try:
            for index in range(number):
                keys.append(self._get_key(ksid, index, granted, 'master', issued=len(keys)))
        finally:
            self._close(ksid)
        if size is not None:
            wrong = [key.key_id for key in keys if key.size != size]
            if wrong:
                raise self._error('GET_KEY', 'protocol', 'keys %s are not %d bits long' % (', '.join(wrong), size),
                                  consumed=True)
        return keys

    def get_keys_by_id(self, master_sae_id, key_ids):
        """The keys ``key_ids`` that ``master_sae_id`` obtained for this (slave) SAE, over any interface."""
        key_ids = checked_key_ids(key_ids)
        for key_id in key_ids:
            if not isinstance(key_id, str) or not _KEY_ID_SHAPE.match(key_id):
                raise KeyDeliveryError('key ID %r is not a UUID (an ETSI 004 key ID is the key_ID the KMEs gave the '
                                       'key, which a slave opens as a key_stream_ID)' % (key_id,), kind='bad_request')
        master = _sae(master_sae_id)
        keys = []
        for key_id in key_ids:
            try:
                ksid, granted = self._open(master, self.sae_id, key_id, dict(self.qos))
            except KeyDeliveryError as exc:
                raise self._partial(exc, keys)
            try:
                key = self._get_key(ksid, 0, granted, 'slave', issued=len(keys))
            finally:
                self._close(ksid)
            if key.key_id != key_id:
                raise self._error('GET_KEY', 'protocol', 'asked for key_ID %s, got %s' % (key_id, key.key_id),
                                  consumed=True)
            keys.append(key)
        return keys

    def close(self):
        self._wire.close()

    # -- the three calls ----------------------------------------------------------------

    def _open(self, source, destination, ksid, qos):
        data = dict(source=URI_SCHEME + source, destination=URI_SCHEME + destination, qos=qos)
        if ksid is not None:
            data['key_stream_ID'] = ksid
        answer = self._call('OPEN_CONNECT', data, retry_safe=True, retry_statuses=(4,))
        status = answer['status']
        if status in (0, 1):
            got = answer['data'].get('key_stream_ID') if isinstance(answer.get('data'), dict) else None
            if not isinstance(got, str) or not _KEY_ID_SHAPE.match(got) or (ksid is not None and got != ksid):
                raise self._error('OPEN_CONNECT', 'protocol', 'the answer carries no valid key_stream_ID')
            granted = answer['data'].get('qos')
            return got, granted if isinstance(granted, dict) else {}
        if status == 7:
            counter = answer['data'].get('qos') if isinstance(answer.get('data'), dict) else None
            raise self._status_error('OPEN_CONNECT', answer, 'bad_request',
                                     'the KME proposes %s' % json.dumps(counter, sort_keys=True), details=[counter])
        kind = {4: 'unavailable', 5: 'bad_request', 6: 'timeout'}.get(status, 'protocol')
        raise self._status_error('OPEN_CONNECT', answer, kind)

    def _get_key(self, ksid, index, qos, role, issued):
        """One chunk; ``issued`` keys were already handed out before it (they are lost if this fails)."""
        metadata_size = METADATA_SIZE
        wait = (qos.get('timeout') or 0) / 1000.0 if isinstance(qos.get('timeout'), int) else 0.0
        for attempt in range(2):
            try:
                # master: 2 and 4 mean nothing was taken from the pool; slave: 6 means the master has not fetched yet
                answer = self._call('GET_KEY', dict(key_stream_ID=ksid, index=index, metadata_size=metadata_size),
                                    retry_safe=False, wait=wait, retry_statuses=(2, 4) if role == 'master' else (6,))
            except KeyDeliveryError as exc:
                raise self._partial(exc, issued)
            status = answer['status']
            if status == 0:
                return self._parse_key(answer, ksid, index)
            needed = answer['data'].get('metadata_size') if isinstance(answer.get('data'), dict) else None
            if status == 8 and attempt == 0 and isinstance(needed, int) and metadata_size < needed <= MAX_LINE_BYTES:
                metadata_size = needed   # nothing was handed out: ask again with the buffer the KME needs
                continue
            if status == 2 and role == 'master':
                kind = 'unavailable'
            elif status == 4:
                kind = 'unavailable'
            elif status == 6:
                kind = 'timeout'
            elif status == 3 and role == 'master':
                kind = 'unavailable'
            else:
                kind = 'bad_request'   # slave: the key at this index is gone or never came; 8 twice; 5
            raise self._partial(self._status_error('GET_KEY', answer, kind), issued)
        raise self._error('GET_KEY', 'internal', 'metadata retry loop ended')  # pragma: no cover

    def _close(self, ksid):
        """CLOSE, best effort: a stream that cannot be closed expires on its TTL and holds no key of ours."""
        try:
            self._call('CLOSE', dict(key_stream_ID=ksid), retry_safe=True, retries=0)
        except KeyDeliveryError as exc:
            self._warn('ETSI 004 CLOSE of stream %s at %s failed (it expires on its TTL): %s'
                       % (ksid, self.kme_url, exc.message))

    # -- transport and errors -----------------------------------------------------------

    def _call(self, command, data, retry_safe, wait=0.0, retries=None, retry_statuses=()):
        """One call, retried (backoff, a warning each) while nothing can have been handed out: no connection,
        a lost answer of a ``retry_safe`` call, or a status in ``retry_statuses``."""
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            try:
                answer = self._wire.call(command, data, wait)
            except _Unsent as exc:
                error = self._error(command, exc.kind, exc.message)
            except _Lost as exc:
                error = self._error(command, exc.kind, exc.message, consumed=not retry_safe)
            else:
                if 'error' in answer:
                    kind = answer.get('error') if answer.get('error') in ('bad_request', 'unauthorized') else 'protocol'
                    raise self._error(command, kind, 'refused: %s' % _text(answer.get('message')))
                if not isinstance(answer.get('status'), int) or isinstance(answer.get('status'), bool):
                    raise self._error(command, 'protocol', 'the answer has no status', consumed=not retry_safe)
                if answer['status'] in retry_statuses and attempt < retries:
                    error = self._status_error(command, answer, 'unavailable')   # nothing was handed out
                else:
                    return answer
            if error.consumed or error.kind not in ('unreachable', 'unavailable', 'timeout') or attempt >= retries:
                raise error
            attempt += 1
            delay = self.retry_backoff * (2 ** (attempt - 1))
            self._warn('%s; retry %d of %d in %.1f s' % (error.message, attempt, retries, delay))
            time.sleep(delay)

    def _parse_key(self, answer, ksid, index):
        data = answer.get('data')
        if not isinstance(data, dict) or not isinstance(data.get('key_buffer'), str):
            raise self._error('GET_KEY', 'protocol', 'the answer carries no key_buffer', consumed=True)
        try:
            material = base64.b64decode(data['key_buffer'], validate=True)
        except (binascii.Error, ValueError):
            raise self._error('GET_KEY', 'protocol', 'key_buffer is not valid base64', consumed=True)
        try:
            metadata = json.loads(data.get('metadata') or 'null')
        except (TypeError, ValueError):
            metadata = None
        key_id = metadata.get('key_ID') if isinstance(metadata, dict) else None
        if not material or not isinstance(key_id, str) or not _KEY_ID_SHAPE.match(key_id) \
                or data.get('index') != index or data.get('key_stream_ID') != ksid:
            raise self._error('GET_KEY', 'protocol', 'the answer for index %d of stream %s lacks a key, its key_ID '
                              '(metadata) or the right index' % (index, ksid), consumed=True)
        return QKDKey(key_id, material)

    def _status_error(self, command, answer, kind, extra=None, details=None):
        status = answer['status']
        message = 'status %d (%s)' % (status, STATUS_NAMES.get(status, 'not an ETSI 004 status'))
        if isinstance(answer.get('message'), str):
            message += ': ' + _text(answer['message'])
        if extra:
            message += '; ' + extra
        return self._error(command, kind, message, status_code=status, details=details)

    def _partial(self, error, issued):
        """``error`` after ``issued`` keys of this call were handed out: they are lost, say so."""
        if not issued:
            return error
        return self._error(None, error.kind, '%s; %d key(s) of this request had been handed out before and are '
                           'not returned, so they are lost. Request new keys.' % (error.message, issued),
                           consumed=True, raw=True, status_code=error.status_code, details=error.details)

    def _error(self, command, kind, problem, consumed=False, status_code=None, details=None, raw=False):
        message = problem if raw else 'ETSI 004 %s at %s: %s' % (command, self.kme_url, problem)
        if consumed and not raw:
            message += ('; the KME may have handed out a key in the lost answer; it was not requested again, '
                        'so no key is consumed twice. Request new keys.')
        return KeyDeliveryError(message, kind=kind, consumed=consumed, status_code=status_code, details=details)


def _sae(sae_id):
    if not isinstance(sae_id, str) or not sae_id or '/' in sae_id:
        raise KeyDeliveryError('SAE ID must be a non-empty string without "/", got %r' % (sae_id,), kind='bad_request')
    return sae_id


def _text(value, limit=300):
    text = ' '.join(str(value).split()) if value is not None else 'no message in the answer'
    return text if len(text) <= limit else text[:limit] + '...'
