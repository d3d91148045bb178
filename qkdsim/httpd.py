"""HTTPS/JSON server plumbing shared by the KME interfaces.

A threading HTTP/1.1 server whose TLS handshake runs in the connection's own thread (a slow or
failing client never blocks ``accept``), with mutual TLS, keep-alive, Nagle disabled, JSON bodies
for every response (errors included) and one log line per request. Subclasses of
``JsonRequestHandler`` implement ``route()``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

log = logging.getLogger("qkdsim")

MAX_BODY_BYTES = 1 << 20
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0


class HttpError(Exception):
    """An error response: ``{"message": ..., "details": [...]}`` with ``status``."""

    def __init__(self, status: int, message: str, details: list[dict] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict:
        body: dict[str, Any] = {"message": self.message}
        if self.details:
            body["details"] = self.details
        return body


def server_tls_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """TLS >= 1.2 server context that requires a client certificate issued by ``client_ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=client_ca)
    return context


class TlsHttpServer(ThreadingHTTPServer):
    """Threading HTTPS server; ``name`` prefixes its log lines, ``context`` is for its handlers."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 tls: ssl.SSLContext, name: str, context: Any = None):
        self.tls = tls
        self.name = name
        self.context = context
        self._connections: set[ssl.SSLSocket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def finish_request(self, request: socket.socket, client_address: tuple) -> None:
        """Handshake in this connection's thread, then serve it until it closes."""
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            connection = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.info("%s TLS handshake with %s:%s failed: %s", self.name, *client_address[:2], _reason(exc))
            _close_after_alert(request)
            return
        with self._connections_lock:
            self._connections.add(connection)
        try:
            self.RequestHandlerClass(connection, client_address, self)
        finally:
            with self._connections_lock:
                self._connections.discard(connection)
            connection.close()

    def close_connections(self) -> None:
        """Shut down every open client connection (their handler threads then end)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: tuple) -> None:
        """A connection ended abnormally (reset, broken pipe, ...): one line, no traceback."""
        log.info("%s connection from %s:%s ended: %s", self.name, *client_address[:2], _reason(sys.exc_info()[1]))


def _close_after_alert(sock: socket.socket) -> None:
    """Close a connection whose handshake failed so that the TLS alert reaches the client.

    With TLS 1.3 the client may already have sent its request when the server rejects its
    certificate; closing with that request unread makes the kernel send a reset, which can
    overtake the alert, and the client then sees a bare EOF instead of "bad certificate".
    So: half-close, drain what the client sent (briefly), then close.
    """
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.5)
        while sock.recv(65536):
            pass
    sock.close()


class JsonRequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler answering JSON; subclasses implement ``route()``."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT
    wbufsize = 1 << 16          # headers and body leave in one write
    server: TlsHttpServer

    def setup(self) -> None:
        super().setup()
        self.peer_cn = _peer_common_name(self.connection)
        self._started = time.perf_counter()

    def route(self, method: str, url: SplitResult, body: bytes) -> tuple[dict, int]:
        """Answer one request: (JSON body, number of keys it carries) or raise HttpError."""
        raise NotImplementedError

    def version_string(self) -> str:
        return "qkdsim"

    def parse_request(self) -> bool:
        self._started = time.perf_counter()
        return super().parse_request()

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        keys = 0
        try:
            payload, keys = self.route(self.command, url, self._read_body())
            status, headers = 200, {}
        except HttpError as error:
            status, payload, headers = error.status, error.body(), error.headers
        except OSError:
            raise  # the connection failed: the server logs it and closes it
        except Exception:  # a simulator bug: log it, answer 500, keep serving
            log.exception("%s internal error on %s %s", self.server.name, self.command, url.path)
            status, payload, headers = 500, {"message": "internal simulator error"}, {}
        self._send_json(status, payload, headers)
        self._log_request(status, url, keys)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _read_body(self) -> bytes:
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            raise HttpError(400, "chunked request bodies are not supported: send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not (length.isascii() and length.isdigit()):
            self.close_connection = True
            raise HttpError(400, f"invalid Content-Length {length!r}")
        if len(length) > 9 or int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            raise HttpError(400, f"request body larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(int(length))

    def _send_json(self, status: int, payload: dict, headers: dict[str, str]) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, unknown method, ...) as JSON too."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # request line unparsed: still send status line and headers
            self.request_version = self.protocol_version
        self._send_json(code, {"message": message or self.responses.get(code, ("error",))[0]}, {})
        self._log_request(code, urlsplit(getattr(self, "path", "") or ""), 0)

    def _log_request(self, status: int, url: SplitResult, keys: int) -> None:
        """One line per request. Query values are left out; no key material ever reaches a log."""
        names = "&".join(f"{pair[0]}=" for pair in parse_qsl(url.query, keep_blank_values=True)).encode(
            "unicode_escape").decode("ascii")
        elapsed = (time.perf_counter() - self._started) * 1000
        path = url.path.encode("unicode_escape").decode("ascii") or "-"  # no control characters from clients
        log.info("%s %s %s %s%s %d keys=%d %.2fms", self.server.name, self.peer_cn or "-", self.command or "-",
                 path, f"?{names}" if names else "", status, keys, elapsed)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        """Replaced by ``_log_request``."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.server.name, format % args)


def _peer_common_name(connection: ssl.SSLSocket) -> str | None:
    for rdn in (connection.getpeercert() or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return None


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason
    return str(exc) or type(exc).__name__
