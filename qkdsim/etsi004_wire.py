"""The wires of the simulated ETSI GS QKD 004 KME: the JSON dialect and the binary framing.

ETSI GS QKD 004 defines calls, not a wire format (the calls and their rules: ``qkdsim.etsi004``).
``WIRE_FORMATS`` maps a wire format name to its request handler (the pluggable transport), each
served on its own port with TLS 1.2+ and mutual certificates (the simulator's PKI; the calling SAE
is the subject CN of its client certificate):

* ``json`` (``Etsi004JsonHandler``): one JSON object per line each way::

    {"command": "OPEN_CONNECT", "data": {"source": "qkd://SAE-A", "destination": "qkd://SAE-B", "qos": {...}}}
    {"command": "OPEN_CONNECT", "status": 1, "data": {"key_stream_ID": "...", "qos": {...}}, "message": "..."}

  A line that is not a JSON object is a ``bad_request`` call error.
* ``binary`` (``Etsi004BinaryHandler``): frames of a fixed header and a payload, encoded and decoded by
  ``decode_binary_request`` / ``encode_binary_answer`` to and from the JSON dialect's data.

Both hand each call to ``etsi004.dispatch`` and log one line per call (never key material).
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import struct
import time
import uuid
from socketserver import StreamRequestHandler
from typing import Any

from .etsi004 import (MAX_LINE_BYTES, METADATA_TOO_SMALL, PEER_NOT_CONNECTED, QOS_NOT_MET, SUCCESSFUL, CallError,
                      _only, dispatch)
from .httpd import IDLE_TIMEOUT

log = logging.getLogger("qkdsim")


class _Etsi004Handler(StreamRequestHandler):
    """A 004 connection served by ``httpd.TlsHttpServer`` (the TLS handshake runs in the connection's
    thread); ``server.context`` is the KME's ``Etsi004Api``; the caller is its certificate's CN."""

    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        subject = dict(item for rdn in (self.connection.getpeercert() or {}).get("subject", ()) for item in rdn)
        self.peer_cn = subject.get("commonName")


class Etsi004JsonHandler(_Etsi004Handler):
    """The JSON-over-TLS dialect: one JSON request per line, one JSON answer per line."""

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            started = time.perf_counter()
            if len(line) > MAX_LINE_BYTES:
                self._send({"command": None, "error": "bad_request",
                            "message": f"request line longer than {MAX_LINE_BYTES} bytes"}, "-", "bad_request", 0,
                           started)
                return
            answer, command, outcome, keys = self._answer(line)
            self._send(answer, command, outcome, keys, started)

    def _answer(self, line: bytes) -> tuple[dict, str, str, int]:
        command = None
        try:
            try:
                request = json.loads(line)
            except ValueError:
                raise CallError("bad_request", "request is not a JSON object on one line") from None
            _only(request, {"command", "data"}, "request")
            command = request.get("command")
        except CallError as exc:
            return {"command": command, "error": exc.kind, "message": str(exc)}, str(command), exc.kind, 0
        return dispatch(self.server.context, self.peer_cn, command, request.get("data") or {})

    def _send(self, answer: dict, command: str, outcome: str, keys: int, started: float) -> None:
        self.wfile.write(json.dumps(answer).encode() + b"\n")
        self.wfile.flush()
        _log_call(self.server.name, self.peer_cn, command, outcome, keys, started)


def _log_call(server: str, caller: str | None, command: Any, outcome: str, keys: int, started: float) -> None:
    """One log line per call; no key material."""
    log.info("%s %s 004 %s %s keys=%d %.2fms", server, caller or "-",
             str(command).encode("unicode_escape").decode("ascii")[:40], outcome, keys,
             (time.perf_counter() - started) * 1000)


class Etsi004BinaryHandler(_Etsi004Handler):
    """The binary framing over TLS: frames of an 8-byte header (version major, minor, patch: uint8 each;
    service type: int8; payload length: uint32, network order) and a payload.

    ======================  =====  =========================================================================
    service                 type   payload
    ======================  =====  =========================================================================
    OPEN_CONNECT request    0x02   source NUL, destination NUL, QoS, key_stream_ID (16 bytes; zeros: new)
    OPEN_CONNECT response   0x03   status; for 0, 1 and 7: QoS (granted, or the counter-proposal) and
                                   key_stream_ID (zeros for 7)
    GET_KEY request         0x04   key_stream_ID, index, metadata_size
    GET_KEY response        0x05   status; for 0: index, key length, key, metadata length, metadata;
                                   for 8: the metadata size needed
    CLOSE request           0x08   key_stream_ID
    CLOSE response          0x09   status
    ======================  =====  =========================================================================

    Integers are uint32 in network order; QoS is key_chunk_size, max_bps, min_bps, jitter, priority,
    timeout, TTL (uint32 each) and metadata_mimetype (256 bytes, NUL-padded). The simulator appends
    its explanation (UTF-8) after these fields for a non-zero status; a call that is not valid gets
    status 0xFFFFFFFF followed by ``{"error", "message"}`` as JSON.
    """

    def handle(self) -> None:
        while True:
            header = self.rfile.read(BINARY_HEADER.size)
            if len(header) < BINARY_HEADER.size:
                return
            started = time.perf_counter()
            major, minor, patch, service, length = BINARY_HEADER.unpack(header)
            if length > MAX_LINE_BYTES or service not in BINARY_REQUESTS:
                return            # not this protocol: drop the connection rather than guess at framing
            payload = self.rfile.read(length)
            if len(payload) < length:
                return
            command = BINARY_REQUESTS[service]
            try:
                data = decode_binary_request(command, payload)
            except CallError as exc:
                answer, outcome, keys = {"command": command, "error": exc.kind, "message": str(exc)}, exc.kind, 0
            else:
                answer, command, outcome, keys = dispatch(self.server.context, self.peer_cn, command, data)
            body = encode_binary_answer(command, answer)
            self.wfile.write(BINARY_HEADER.pack(*BINARY_VERSION, service + 1, len(body)) + body)
            self.wfile.flush()
            _log_call(self.server.name, self.peer_cn, command, outcome, keys, started)


BINARY_VERSION = (1, 0, 1)
BINARY_HEADER = struct.Struct("!BBBbI")
BINARY_QOS = struct.Struct("!7I256s")
BINARY_QOS_FIELDS = ("key_chunk_size", "max_bps", "min_bps", "jitter", "priority", "timeout", "TTL")
BINARY_REQUESTS = {0x02: "OPEN_CONNECT", 0x04: "GET_KEY", 0x08: "CLOSE"}
BINARY_NOT_A_CALL = 0xFFFFFFFF
_U32 = struct.Struct("!I")


def decode_binary_request(command: str, payload: bytes) -> dict:
    """The JSON-dialect ``data`` of a binary request; CallError if it is malformed."""
    try:
        if command == "OPEN_CONNECT":
            source, rest = payload.split(b"\0", 1)
            destination, rest = rest.split(b"\0", 1)
            if len(rest) != BINARY_QOS.size + 16:
                raise ValueError
            *values, mimetype = BINARY_QOS.unpack(rest[:BINARY_QOS.size])
            qos = dict(zip(BINARY_QOS_FIELDS, values), metadata_mimetype=mimetype.rstrip(b"\0").decode())
            for name in ("key_chunk_size", "max_bps", "TTL"):   # every field is on the wire: 0 asks for the default
                if not qos[name]:
                    del qos[name]
            if not qos["metadata_mimetype"]:
                del qos["metadata_mimetype"]
            ksid = uuid.UUID(bytes=rest[BINARY_QOS.size:])
            data = {"source": source.decode(), "destination": destination.decode(), "qos": qos}
            if ksid.int:
                data["key_stream_ID"] = str(ksid)
            return data
        if command == "GET_KEY":
            if len(payload) != 24:
                raise ValueError
            index, metadata_size = struct.unpack("!II", payload[16:])
            return {"key_stream_ID": str(uuid.UUID(bytes=payload[:16])), "index": index,
                    "metadata_size": min(metadata_size, MAX_LINE_BYTES)}
        if len(payload) != 16:
            raise ValueError
        return {"key_stream_ID": str(uuid.UUID(bytes=payload))}
    except (ValueError, UnicodeDecodeError):
        raise CallError("bad_request", f"malformed binary {command} request ({len(payload)} bytes)") from None


def encode_binary_answer(command: str, answer: dict) -> bytes:
    """The binary payload of a JSON-dialect answer."""
    if "error" in answer:
        return _U32.pack(BINARY_NOT_A_CALL) + json.dumps({"error": answer["error"], "message": answer["message"]}).encode()
    status, data = answer["status"], answer.get("data") or {}
    body = _U32.pack(status)
    if command == "OPEN_CONNECT" and status in (SUCCESSFUL, PEER_NOT_CONNECTED, QOS_NOT_MET):
        qos = data["qos"]
        body += BINARY_QOS.pack(*(qos[name] for name in BINARY_QOS_FIELDS), qos["metadata_mimetype"].encode()[:256])
        body += uuid.UUID(data["key_stream_ID"]).bytes if data.get("key_stream_ID") else bytes(16)
    elif command == "GET_KEY" and status == SUCCESSFUL:
        key, metadata = base64.b64decode(data["key_buffer"]), data["metadata"].encode()
        body += _U32.pack(data["index"]) + _U32.pack(len(key)) + key + _U32.pack(len(metadata)) + metadata
    elif command == "GET_KEY" and status == METADATA_TOO_SMALL:
        body += _U32.pack(data["metadata_size"])
    if status != SUCCESSFUL and answer.get("message"):
        body += answer["message"].encode()
    return body


# Wire formats of the 004 transport: name -> request handler.
WIRE_FORMATS = {"json": Etsi004JsonHandler, "binary": Etsi004BinaryHandler}
