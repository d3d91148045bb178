# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the client side of the two ETSI GS QKD 004 wire formats. Not a public API.

ETSI 004 defines calls and status codes, not a wire format (docs/qkdsim.md). ``WIRES`` maps a wire
name to its codec; both run over one kept TLS connection with mutual certificates:

* ``json`` (``kme_url`` ``tls://host:port``): one JSON object per line each way,
  ``{"command": ..., "data": {...}}``.
* ``binary`` (``kme_url`` ``tls+binary://host:port``): an 8-byte header (version major, minor,
  patch, service type, uint32 payload length) and fixed-layout payloads. Answers are returned in
  the shape of the JSON dialect, so the client (etsi004_client) does not know which wire it talks.

``call`` raises ``Unsent`` when the request surely never left this host, ``Lost`` when it was sent
and no valid answer came back; the client maps both through the transport core's retry table.
The TLS context comes from ``_kme_transport.mtls_context``: every socket operation obeys the
request's deadline.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import socket
import ssl
import struct
import uuid

from ansible_collections.qsafe.keyfabric.plugins.module_utils._kme_transport import (
    connect_timeout,
    describe_tls_error,
    exception_name,
)

MAX_LINE_BYTES = 1 << 20


class Unsent(Exception):
    """The request never left this host (no connection, TLS handshake refused)."""

    def __init__(self, kind, message):
        super(Unsent, self).__init__(message)
        self.kind = kind
        self.message = message


class Lost(Exception):
    """The request was sent; its answer did not arrive (timeout, connection broken, not JSON)."""

    def __init__(self, kind, message):
        super(Lost, self).__init__(message)
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
        """Send one request, return the answer (a dict). Raises Unsent or Lost."""
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
            raise exchange_failure(exc, fresh, self.timeout + wait)
        if not answer and fresh:
            self.close()   # closed before the first answer of a new connection: the handshake was refused
            raise Lost('tls', describe_tls_error(ConnectionResetError('EOF before the first answer')))
        if not answer.endswith(b'\n'):
            self.close()
            raise Lost('protocol' if answer else 'timeout', 'the KME closed the connection before its answer '
                       'was complete' if not answer or len(answer) <= MAX_LINE_BYTES else 'the answer is too long')
        try:
            document = json.loads(answer)
        except ValueError:
            self.close()
            raise Lost('protocol', 'the answer is not JSON (%d bytes)' % len(answer))
        if not isinstance(document, dict):
            raise Lost('protocol', 'the answer is not a JSON object')
        return document

    def _connect(self):
        try:
            raw = socket.create_connection((self.host, self.port), timeout=connect_timeout(self.timeout))
        except socket.timeout:
            raise Unsent('unreachable', 'cannot connect to the KME (connect timeout after %s s)' % self.timeout)
        except OSError as exc:
            raise Unsent('unreachable', 'cannot connect to the KME (%s)' % exception_name(exc))
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self.tls.wrap_socket(raw, server_hostname=self.host.strip('[]'))
        except (ssl.SSLError, OSError) as exc:
            raw.close()
            raise Unsent('tls', describe_tls_error(exc))
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
            raise exchange_failure(exc, fresh, self.timeout + wait)
        if len(header) < self.HEADER.size:
            self.close()
            if not header and fresh:
                raise Lost('tls', describe_tls_error(ConnectionResetError('EOF before the first answer')))
            raise Lost('timeout', 'the KME closed the connection before its answer was complete')
        if service != self.SERVICES[command] + 1 or len(body) != length or length < 4:
            self.close()
            raise Lost('protocol', 'the answer is not a %s response frame' % command)
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
            raise Lost('protocol', 'the %s response frame is malformed' % command)
        if command == 'GET_KEY' and status == 0:
            data['key_stream_ID'] = self._last_ksid
        answer['data'] = data
        if rest:
            answer['message'] = rest.decode('utf-8', 'replace')
        return answer


WIRES = {'json': JsonLineWire, 'binary': BinaryWire}


def exchange_failure(exc, fresh, waited):
    """The error for a request/answer exchange that failed with ``exc`` (the connection is closed)."""
    if isinstance(exc, socket.timeout):
        return Lost('timeout', 'the KME did not answer within %s s' % waited)
    if isinstance(exc, ssl.SSLError) and 'ALERT' in str(exc).upper():
        # TLS 1.3: a refused client certificate shows on the first read; the KME took no request.
        return Unsent('tls', describe_tls_error(exc))
    if fresh:
        return Lost('tls', describe_tls_error(exc))
    return Lost('timeout', 'the connection to the KME broke before its answer arrived (%s)' % exception_name(exc))
