"""A real TLS server on loopback that trickles VALID answers one byte at a time.

It speaks just enough of each key-delivery interface to answer one request validly: ETSI 014
(HTTPS, mutual TLS), ETSI 004 (the JSON dialect and the binary framing, mutual TLS) and Cisco SKIP
(HTTPS over TLS-PSK via sslpsk3, or mutual TLS). The answers to key-consuming requests (014
enc_keys, 004 GET_KEY, SKIP /key) are sent one byte every ``interval`` seconds: each socket read of
the client succeeds well within its timeout, only the whole answer takes long. Everything else is
answered at once. The server counts the requests it got, per kind, so a test can prove a
key-consuming request was never repeated.
"""

import base64
import json
import os
import socket
import ssl
import struct
import threading
import time
import uuid

from misbehaving_kme import LoopbackTLSServer, _write_pki

PSK_IDENTITY = 'SAE-TEST'
PSK = bytes(range(32))  # a test PSK, not a key


class TricklingKME(LoopbackTLSServer):
    """Serve ``interface`` ('etsi014', 'etsi004', 'etsi004-binary', 'skip-psk', 'skip-mtls') until stop()."""

    def __init__(self, directory, interface, interval=0.05, trickle_close=False):
        self.paths = _write_pki(directory)
        self.interface = interface
        self.interval = interval
        self.trickle_close = trickle_close   # ETSI 004: trickle the answer to CLOSE too
        self.requests = {}
        self._lock = threading.Lock()
        self._listen(self._server_context(), {'etsi004': 'tls', 'etsi004-binary': 'tls+binary'}.get(interface, 'https'))

    def _server_context(self):
        if self.interface == 'skip-psk':
            from sslpsk3 import SSLPSKContext
            context = SSLPSKContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
            context.set_ciphers('PSK-AES256-GCM-SHA384')
            context.set_psk_server_callback(lambda identity: PSK if identity == PSK_IDENTITY else b'', 'trickle')
            return context
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self.paths['server'])
        context.load_verify_locations(cafile=self.paths['ca'])
        context.verify_mode = ssl.CERT_REQUIRED   # mutual TLS, as a KME does
        return context

    def count(self, kind):
        with self._lock:
            return self.requests.get(kind, 0)

    def _saw(self, kind):
        with self._lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1

    def _handle(self, raw):
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = self._context.wrap_socket(raw, server_side=True)
            conn.settimeout(30)
            reader = conn.makefile('rb')
            serve = {'etsi014': self._http, 'skip-psk': self._http, 'skip-mtls': self._http,
                     'etsi004': self._json_lines, 'etsi004-binary': self._binary}[self.interface]
            while not self._stopping.is_set() and serve(conn, reader):
                pass
        except (OSError, ssl.SSLError, ValueError):
            pass   # the client gave up (its deadline) and closed the connection
        finally:
            raw.close()

    def _send(self, conn, data, trickle):
        if not trickle:
            conn.sendall(data)
            return
        for index in range(len(data)):
            if self._stopping.is_set():
                return
            conn.sendall(data[index:index + 1])
            time.sleep(self.interval)

    # -- HTTPS: ETSI 014 and SKIP ----------------------------------------------------------

    def _http(self, conn, reader):
        request_line = reader.readline()
        if not request_line:
            return False
        method, target = request_line.split()[:2]
        length = 0
        while True:
            line = reader.readline()
            if line in (b'\r\n', b'\n', b''):
                break
            name, _sep, value = line.partition(b':')
            if name.strip().lower() == b'content-length':
                length = int(value.strip())
        if length:
            reader.read(length)
        path = target.decode().split('?')[0]
        if self.interface == 'etsi014':
            kind = path.rsplit('/', 1)[-1]   # status, enc_keys, dec_keys
            if kind == 'status':
                body = dict(source_KME_ID='KME-A', target_KME_ID='KME-B', master_SAE_ID='SAE-TEST', slave_SAE_ID='SAE-B',
                            key_size=256, stored_key_count=10, max_key_count=100, max_key_per_request=4,
                            max_key_size=1024, min_key_size=64, max_SAE_ID_count=0)
            else:
                body = {'keys': [{'key_ID': str(uuid.uuid4()), 'key': base64.b64encode(os.urandom(32)).decode()}]}
        else:
            kind = 'capabilities' if path == '/capabilities' else 'key'
            if kind == 'capabilities':
                body = dict(entropy=True, key=True, algorithm='qkd', localSystemID='KME-A', remoteSystemID=['KME-B'])
            else:
                body = {'keyId': uuid.uuid4().hex, 'key': os.urandom(32).hex()}
        self._saw(kind)
        payload = json.dumps(body).encode()
        answer = (b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n'
                  % len(payload)) + payload
        self._send(conn, answer, trickle=kind in ('status', 'enc_keys', 'dec_keys', 'key'))
        return True

    def _trickles(self, command):
        return command == 'GET_KEY' or command == 'CLOSE' and self.trickle_close

    # -- ETSI 004, JSON dialect ---------------------------------------------------------------

    def _json_lines(self, conn, reader):
        line = reader.readline()
        if not line:
            return False
        request = json.loads(line)
        command, data = request['command'], request['data']
        self._saw(command)
        if command == 'OPEN_CONNECT':
            answer = {'command': command, 'status': 0,
                      'data': {'key_stream_ID': data.get('key_stream_ID') or str(uuid.uuid4()),
                               'qos': dict(key_chunk_size=32, max_bps=1000, min_bps=0, jitter=0, priority=0,
                                           timeout=0, TTL=60, metadata_mimetype='application/json')}}
        elif command == 'GET_KEY':
            answer = {'command': command, 'status': 0,
                      'data': {'index': data['index'], 'key_stream_ID': data['key_stream_ID'],
                               'key_buffer': base64.b64encode(os.urandom(32)).decode(),
                               'metadata': json.dumps({'key_ID': str(uuid.uuid4())})}}
        else:
            answer = {'command': command, 'status': 0, 'data': {}}
        self._send(conn, json.dumps(answer).encode() + b'\n', trickle=self._trickles(command))
        return True

    # -- ETSI 004, binary framing ---------------------------------------------------------------

    HEADER = struct.Struct('!BBBbI')
    QOS = struct.Struct('!7I256s')

    def _binary(self, conn, reader):
        header = reader.read(self.HEADER.size)
        if len(header) < self.HEADER.size:
            return False
        service, length = self.HEADER.unpack(header)[3:]
        payload = reader.read(length)
        command = {0x02: 'OPEN_CONNECT', 0x04: 'GET_KEY', 0x08: 'CLOSE'}[service]
        self._saw(command)
        status = struct.pack('!I', 0)
        if command == 'OPEN_CONNECT':
            ksid = payload[-16:] if any(payload[-16:]) else uuid.uuid4().bytes
            body = status + self.QOS.pack(32, 1000, 0, 0, 0, 0, 60, b'application/json') + ksid
        elif command == 'GET_KEY':
            index = struct.unpack('!I', payload[16:20])[0]
            metadata = json.dumps({'key_ID': str(uuid.uuid4())}).encode()
            key = os.urandom(32)
            body = status + struct.pack('!II', index, len(key)) + key + struct.pack('!I', len(metadata)) + metadata
        else:
            body = status
        self._send(conn, self.HEADER.pack(1, 0, 1, service + 1, len(body)) + body, trickle=self._trickles(command))
        return True
