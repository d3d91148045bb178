"""A real TLS server on loopback that misbehaves the ways a broken KME does.

It is not a mock of the client's internals: the client under test opens a real TLS
connection and sends a real HTTP request. The server counts the requests it got, so tests can
prove that a key request was not repeated.
"""

import datetime
import ipaddress
import socket
import ssl
import struct
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BEHAVIOURS = {
    'garbage': (200, 'text/html', b'<html>surely not JSON</html>'),
    'wrong_shape': (200, 'application/json', b'{"keys": [{"key_ID": "x"}]}'),
    'bad_base64': (200, 'application/json', b'{"keys": [{"key_ID": "k1", "key": "!!not base64!!"}]}'),
    'partial_status': (200, 'application/json', b'{"source_KME_ID": "A", "key_size": "256"}'),
    'http500': (500, 'text/plain', b'internal error'),
    # A KME error text with terminal escape sequences, NUL and 4,000 characters (it must reach no message as it is).
    'hostile_message': (400, 'application/json',
                        b'{"message": "bad request\\u001b[2J\\u001b]0;owned\\u0007\\u0000' + b'x' * 4000
                        + b'", "details": [{"why": "\\u001b[31m' + b'y' * 4000 + b'"}]}'),
    'slow': (200, 'application/json', b'{}'),
    'drop': None,
    # TCP resets (SO_LINGER 0), at three moments: right after accept (what qkdsim's kme-down --mode drop does), after
    # reading the ClientHello and before answering it (in the TLS handshake), and after reading the whole request.
    'reset_at_accept': None,
    'reset_in_handshake': None,
    'reset_after_request': None,
    # Key material where an error message might quote it:
    'raw_keys': b'{"keys": [{"key_ID": "k1", "key": "U0VDUkVULUtFWS1CWVRFUy0wMTIzNDU2Nzg5YWJjZGVm"}]}\r\n\r\n',
    'swapped_fields': (200, 'application/json',
                       b'{"keys": [{"key_ID": "U0VDUkVULUtFWS1CWVRFUy0wMTIzNDU2Nzg5YWJjZGVm", "key": "not-base64-uuid"}]}'),
}
LEAKED_KEY = 'U0VDUkVULUtFWS1CWVRFUy0wMTIzNDU2Nzg5YWJjZGVm'


def _write_pki(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(subject_cn, issuer_name, issuer_key, key, is_ca, san=None):
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
                   .issuer_name(issuer_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def save(name, cert, key):
        (directory / (name + '.pem')).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / (name + '.key')).write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return str(directory / (name + '.pem')), str(directory / (name + '.key'))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'misbehaving test CA')])
    ca_cert = issue('misbehaving test CA', ca_name, ca_key, ca_key, True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    paths = {'ca': save('ca', ca_cert, ca_key)[0]}
    paths['server'] = save('server', issue('127.0.0.1', ca_name, ca_key, server_key, False,
                                           [x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), server_key)
    paths['client'] = save('client', issue('SAE-TEST', ca_name, ca_key, client_key, False), client_key)
    return paths


def _reset(sock):
    """Close ``sock`` with a TCP RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


class LoopbackTLSServer(object):
    """A TLS server on a loopback port: accepts until stop(), each connection handled by ``_handle`` in a thread.

    Subclasses set up what they need, then call ``_listen(context, scheme)``."""

    def _listen(self, context, scheme='https'):
        self._context = context
        self._sock = socket.socket()
        self._sock.bind(('127.0.0.1', 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.url = '%s://127.0.0.1:%d' % (scheme, self._sock.getsockname()[1])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stopping.is_set():
            try:
                raw = self._sock.accept()[0]
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw):
        raise NotImplementedError

    def stop(self):
        self._stopping.set()
        self._sock.close()
        self._thread.join(2)


class MisbehavingKME(LoopbackTLSServer):
    """Serves one behaviour from BEHAVIOURS on a loopback port until stop()."""

    def __init__(self, directory, behaviour, delay=3.0):
        self.paths = _write_pki(directory)
        self.behaviour = behaviour
        self.delay = delay
        self.requests = 0
        self.connections = 0
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self.paths['server'])
        self._listen(context)

    def client_settings(self, **overrides):
        settings = dict(interface='etsi014', kme_url=self.url, client_cert=self.paths['client'][0],
                        client_key=self.paths['client'][1], ca_cert=self.paths['ca'], timeout=1.0,
                        retries=2, retry_backoff=0.01)
        settings.update(overrides)
        return settings

    def _handle(self, raw):
        self.connections += 1
        try:
            if self.behaviour == 'reset_at_accept':
                _reset(raw)
                return
            if self.behaviour == 'reset_in_handshake':
                raw.settimeout(10)
                raw.recv(4096)          # the ClientHello, never answered
                _reset(raw)
                return
            conn = self._context.wrap_socket(raw, server_side=True)
            conn.settimeout(10)
            data = b''
            while b'\r\n\r\n' not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(b'\r\n\r\n', 1)
            length = 0
            for line in head.split(b'\r\n')[1:]:
                name, value = (line.split(b':', 1) + [b''])[:2]
                if name.strip().lower() == b'content-length':
                    length = int(value.strip())
            while len(body) < length:
                body += conn.recv(4096)
            self.requests += 1
            answer = BEHAVIOURS[self.behaviour]
            if self.behaviour == 'reset_after_request':
                _reset(conn)
                return
            if answer is None:
                conn.close()
                return
            if isinstance(answer, bytes):  # not even HTTP: the bytes as they are
                conn.sendall(answer)
                conn.close()
                return
            if self.behaviour == 'slow':
                time.sleep(self.delay)
            status, content_type, payload = answer
            conn.sendall(b'HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s'
                         % (status, content_type.encode(), len(payload), payload))
            conn.close()
        except (OSError, ssl.SSLError):
            pass
        finally:
            raw.close()
