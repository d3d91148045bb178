"""ETSI GS QKD 004 v2.1.1 application interface of one simulated KME.

The standard defines three calls and their status codes, not a wire format:

* ``OPEN_CONNECT(source, destination, QoS, key_stream_ID?)`` -> key_stream_ID, QoS, status
* ``GET_KEY(key_stream_ID, index, metadata_size)``            -> key_buffer, index, metadata, status
* ``CLOSE(key_stream_ID)``                                    -> status

``Etsi004Api`` holds the rules, independent of the wire; ``WIRE_FORMATS`` maps a wire format name
to its request handler (the pluggable transport), each served on its own port with TLS 1.2+ and
mutual certificates (the simulator's PKI; the calling SAE is the subject CN of its client
certificate): ``binary`` (the binary framing, ``Etsi004BinaryHandler``) and ``json``, one JSON object
per line each way::

    {"command": "OPEN_CONNECT", "data": {"source": "qkd://SAE-A", "destination": "qkd://SAE-B", "qos": {...}}}
    {"command": "OPEN_CONNECT", "status": 1, "data": {"key_stream_ID": "...", "qos": {...}}, "message": "..."}

A request that is not a valid call at all (not JSON, unknown command, wrong field types, an
unknown key_stream_ID, a caller that is not an end of the stream) gets ``{"command", "error":
"bad_request"|"unauthorized", "message"}`` instead of a status: the standard has no status for
a malformed call. ``message`` (non-standard) explains every non-zero status too; it never holds
key material.

How streams map onto the link key streams (qkdsim.keystore), shared with ETSI 014
--------------------------------------------------------------------------------
A key_stream_ID names a stream between a master SAE (the one that opened it) and a slave SAE
over the QKD link between their KMEs. The master's ``GET_KEY(index)`` takes the chunk for that
index from the link's pool through the same ``KeyStore.issue`` as ETSI 014 ``enc_keys``: the chunk
gets a key_ID (a UUID, in the GET_KEY metadata) and waits for the slave in the same store. The
slave's ``GET_KEY(index)`` collects it through ``KeyStore.deliver``, like ``dec_keys``. So a key
leaves the store once, through whichever interface asks first; it is never delivered twice.

The "key by ID" bridge: a slave may also ``OPEN_CONNECT`` with a key_stream_ID that is the key_ID
of any key waiting for it (issued through ETSI 014, or a chunk of a 004 stream): that opens a
stream of that one key, at index 0. This is how an ETSI 004 SAE receives a key whose key_ID its
peer got over any interface, and how the collection's key-delivery contract maps onto 004 (key ID
= key_ID; the slave opens key_stream_ID = key ID and reads index 0).

Simulator choices where the standard leaves room
------------------------------------------------
* The master may GET_KEY before the slave has connected (the KMEs hold the chunk for the slave,
  as ETSI 014 does); its OPEN_CONNECT answers status 1 (peer not connected yet).
* The slave's GET_KEY of an index the master has not fetched waits up to QoS ``timeout`` ms for it
  (status 6 when it does not come); if the master has closed the stream it is status 3.
* GET_KEY of an index already delivered to the caller (a key fetched twice) is status 2.
* The master's GET_KEY waits up to ``timeout`` ms for the pool to refill when the link's rate can
  make up the difference in time; otherwise status 2 at once. An alarmed link is status 4.
* Metadata (``metadata_mimetype`` application/json): ``{"key_ID", "link_id", "technology",
  "index"}``; a ``metadata_size`` smaller than that is status 8 with the size needed; the chunk is
  not taken (master) or not delivered (slave), so nothing is lost.
* QoS that the link cannot meet is status 7 with a counter-proposal (nothing is opened).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from socketserver import StreamRequestHandler
from typing import Any

from .httpd import IDLE_TIMEOUT
from .keystore import DeliveryRefused, KeyStore, KeyUnavailable, LinkPool
from .topology import Topology

log = logging.getLogger("qkdsim")

# ETSI GS QKD 004 v2.1.1 status values.
SUCCESSFUL = 0
PEER_NOT_CONNECTED = 1             # OPEN_CONNECT succeeded, the peer has not connected yet
INSUFFICIENT_KEY = 2               # GET_KEY failed: not enough key (or none left at this index)
GET_KEY_PEER_NOT_CONNECTED = 3     # GET_KEY failed: the peer is not (or no longer) connected
NO_QKD_CONNECTION = 4              # no QKD connection available
KSID_IN_USE = 5                    # OPEN_CONNECT failed: key_stream_ID already in use
TIMEOUT = 6                        # the call did not complete within the QoS timeout
QOS_NOT_MET = 7                    # OPEN_CONNECT failed: QoS cannot be met (counter-proposal returned)
METADATA_TOO_SMALL = 8             # GET_KEY failed: metadata buffer too small
STATUS_NAMES = {
    SUCCESSFUL: "successful", PEER_NOT_CONNECTED: "successful, peer not connected",
    INSUFFICIENT_KEY: "insufficient key", GET_KEY_PEER_NOT_CONNECTED: "peer not connected",
    NO_QKD_CONNECTION: "no QKD connection available", KSID_IN_USE: "key_stream_ID in use",
    TIMEOUT: "timeout", QOS_NOT_MET: "QoS not met", METADATA_TOO_SMALL: "metadata buffer too small",
}

METADATA_MIMETYPES = ("application/json",)
MAX_TIMEOUT_MS = 60_000            # the longest a GET_KEY may block
MAX_TTL_S = 86_400
MAX_LINE_BYTES = 64 * 1024
MAX_INDEX = 2 ** 32 - 1
MAX_STREAMS = 1 << 16              # open streams over the whole network; beyond this OPEN_CONNECT is refused
QOS_FIELDS = ("key_chunk_size", "max_bps", "min_bps", "jitter", "priority", "timeout", "TTL", "metadata_mimetype")
URI_SCHEME = "qkd://"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PENDING = object()                # a chunk the master is being issued right now
_REFILL_STEP_S = 0.05


class CallError(Exception):
    """A request that is not a valid call (no 004 status applies): bad_request or unauthorized."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class Reply:
    """A 004 answer: a status, its data and an explanation for non-zero statuses."""

    status: int
    data: dict = field(default_factory=dict)
    message: str | None = None
    keys: int = 0                  # keys delivered (for the log line)


@dataclass
class Stream:
    """One key stream between a master and a slave SAE over one QKD link."""

    ksid: str
    master: str
    slave: str
    master_kme: str
    slave_kme: str
    pool: LinkPool
    qos: dict
    expires: float
    chunks: dict = field(default_factory=dict)     # index -> key_ID (or _PENDING)
    delivered: set = field(default_factory=set)    # indexes delivered to the slave
    master_open: bool = True
    slave_joined: bool = False
    slave_open: bool = False


class Etsi004Streams:
    """The key streams of the whole simulated network (its KMEs keep them in sync)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.streams: dict[str, Stream] = {}

    def sweep(self, now: float) -> None:
        """Forget streams whose TTL has passed (held chunks stay collectable by key_ID). Lock held."""
        for ksid in [ksid for ksid, stream in self.streams.items() if stream.expires <= now]:
            del self.streams[ksid]


class Etsi004Api:
    """The ETSI GS QKD 004 rules of one KME."""

    def __init__(self, kme_id: str, topology: Topology, keystore: KeyStore, streams: Etsi004Streams,
                 clock=time.monotonic):
        self.kme_id = kme_id
        self.keystore = keystore
        self.streams = streams
        self._clock = clock
        self._sae_sites = {sae: site for site in topology.sites for sae in site.saes}

    # -- OPEN_CONNECT ------------------------------------------------------------------------

    def open_connect(self, caller: str | None, data: dict) -> Reply:
        _only(data, {"source", "destination", "qos", "key_stream_ID"}, "OPEN_CONNECT data")
        source = _sae_uri(data.get("source"), "source")
        destination = _sae_uri(data.get("destination"), "destination")
        ksid = data.get("key_stream_ID")
        if ksid is not None and not (isinstance(ksid, str) and _UUID.fullmatch(ksid)):
            raise CallError("bad_request", "key_stream_ID must be a UUID string or null")
        self._own_sae(caller)
        if caller not in (source, destination):
            raise CallError("unauthorized", f"the calling SAE {caller} is neither the source {source} nor the "
                                            f"destination {destination}")
        if source == destination:
            raise CallError("bad_request", "source and destination must be two different SAEs")
        peer = destination if caller == source else source
        peer_site = self._sae_sites.get(peer)
        if peer_site is None:
            raise CallError("bad_request", f"unknown SAE {peer!r}")
        if peer_site.kme_id == self.kme_id:
            raise CallError("bad_request", f"SAE {peer} is attached to {self.kme_id} too; keys are delivered only "
                                           "across a QKD link")
        pool = self.keystore.pool(self.kme_id, peer_site.kme_id)
        if pool is None:
            return Reply(NO_QKD_CONNECTION, message=f"no QKD link between {self.kme_id} and {peer_site.kme_id} "
                                                    f"(the KME of {peer})")
        qos, counter = check_qos(data.get("qos"), pool)
        if counter is not None:
            return Reply(QOS_NOT_MET, {"qos": counter}, message="; ".join(counter.pop("_reasons")))
        now = self._clock()
        if caller == source and ksid is None:
            ksid = str(uuid.uuid4())
        with self.streams.lock:
            self.streams.sweep(now)
            stream = self.streams.streams.get(ksid)
            if caller == source:
                if stream is not None or self.keystore.waiting(ksid) is not None:
                    return Reply(KSID_IN_USE, message=f"key_stream_ID {ksid} is already in use")
                if len(self.streams.streams) >= MAX_STREAMS:
                    return Reply(NO_QKD_CONNECTION, message=f"{MAX_STREAMS} streams are open; close some first")
                self.streams.streams[ksid] = Stream(ksid, source, destination, self.kme_id, peer_site.kme_id, pool, qos,
                                                    now + qos["TTL"])
                return Reply(PEER_NOT_CONNECTED, {"key_stream_ID": ksid, "qos": qos},
                             message=f"stream open; the peer {destination} has not connected yet")
            if ksid is None:
                raise CallError("bad_request", f"the destination SAE {caller} joins a stream: key_stream_ID is required")
            if stream is None:
                stream = self._one_key_stream(ksid, source, destination, peer_site.kme_id, pool, qos, now)
            elif (stream.master, stream.slave) != (source, destination):
                raise CallError("unauthorized", f"key_stream_ID {ksid} is not a stream from {source} to {destination}")
            elif stream.slave_joined:
                return Reply(KSID_IN_USE, message=f"key_stream_ID {ksid} already has its destination connected")
            stream.slave_joined = stream.slave_open = True
            self.streams.changed.notify_all()
            return Reply(SUCCESSFUL, {"key_stream_ID": ksid, "qos": stream.qos})

    def _one_key_stream(self, ksid: str, master: str, slave: str, master_kme: str, pool: LinkPool, qos: dict,
                        now: float) -> Stream:
        """The "key by ID" bridge: a stream of the one key waiting under key_ID ``ksid``. Lock held."""
        waiting = self.keystore.waiting(ksid)
        if waiting is None:
            raise CallError("bad_request", f"unknown key_stream_ID {ksid}: no stream and no key waiting under that "
                                           "key_ID (unknown, expired, or already delivered)")
        issuer, addressee = waiting
        addressed = slave in addressee if isinstance(addressee, frozenset) else slave == addressee
        if not addressed or issuer != master:
            raise CallError("unauthorized", f"the key {ksid} was not issued by {master} for {slave}")
        stream = Stream(ksid, master, slave, master_kme, self.kme_id, pool, qos, now + qos["TTL"],
                        chunks={0: ksid}, master_open=False)
        self.streams.streams[ksid] = stream
        return stream

    # -- GET_KEY -----------------------------------------------------------------------------

    def get_key(self, caller: str | None, data: dict) -> Reply:
        _only(data, {"key_stream_ID", "index", "metadata_size"}, "GET_KEY data")
        ksid = data.get("key_stream_ID")
        index = data.get("index")
        metadata_size = data.get("metadata_size", 1024)
        if not _integer(index, 0, MAX_INDEX):
            raise CallError("bad_request", f"index must be an integer 0..{MAX_INDEX}")
        if not _integer(metadata_size, 0, MAX_LINE_BYTES):
            raise CallError("bad_request", f"metadata_size must be an integer 0..{MAX_LINE_BYTES}")
        stream, role = self._stream_of(caller, ksid)
        if role == "master":
            return self._master_get_key(stream, index, metadata_size)
        return self._slave_get_key(stream, index, metadata_size)

    def _master_get_key(self, stream: Stream, index: int, metadata_size: int) -> Reply:
        needed = len(_metadata(stream, index, str(uuid.UUID(int=0))))
        with self.streams.lock:
            if not stream.master_open:
                raise CallError("bad_request", f"key_stream_ID {stream.ksid} was closed by {stream.master}")
            if stream.slave_joined and not stream.slave_open:
                return Reply(GET_KEY_PEER_NOT_CONNECTED, message=f"{stream.slave} closed stream {stream.ksid}")
            if index in stream.chunks:
                return Reply(INSUFFICIENT_KEY, message=f"index {index} of stream {stream.ksid} was already delivered "
                                                       f"to {stream.master} (a key is delivered once)")
            if metadata_size < needed:
                return Reply(METADATA_TOO_SMALL, {"metadata_size": needed},
                             message=f"the metadata needs {needed} bytes, the buffer has {metadata_size}")
            stream.chunks[index] = _PENDING
        outcome = None
        try:
            outcome = self._issue(stream)
        finally:
            with self.streams.lock:
                if isinstance(outcome, _Issued):
                    stream.chunks[index] = outcome.key_id
                else:
                    stream.chunks.pop(index, None)
                self.streams.changed.notify_all()
        if isinstance(outcome, Reply):
            return outcome
        return self._answer(stream, index, outcome.key_id, outcome.material)

    def _issue(self, stream: Stream) -> _Issued | Reply:
        """The next chunk from the link's pool, waiting up to the QoS timeout when the rate can refill it."""
        bits = stream.qos["key_chunk_size"] * 8
        deadline = self._clock() + stream.qos["timeout"] / 1000.0
        while True:
            try:
                (key,) = self.keystore.issue(stream.pool, stream.master, stream.slave, 1, bits)
                return _Issued(key.key_id, key.material)
            except KeyUnavailable as exc:
                pool = stream.pool
                if pool.alarmed:
                    return Reply(NO_QKD_CONNECTION, message=str(exc))
                missing = bits - pool.available_bits()
                wait = missing / pool.link.key_rate_bps if missing > 0 else 0.0
                remaining = deadline - self._clock()
                if pool.held_empty or wait > remaining:
                    return Reply(INSUFFICIENT_KEY, message=f"{exc}; the link cannot refill it within the QoS "
                                                           f"timeout of {stream.qos['timeout']} ms")
                time.sleep(min(max(wait, 0.001), _REFILL_STEP_S, remaining))

    def _slave_get_key(self, stream: Stream, index: int, metadata_size: int) -> Reply:
        deadline = self._clock() + stream.qos["timeout"] / 1000.0
        with self.streams.lock:
            if not stream.slave_open:
                raise CallError("bad_request", f"key_stream_ID {stream.ksid} was closed by {stream.slave}")
            if index in stream.delivered:
                return Reply(INSUFFICIENT_KEY, message=f"index {index} of stream {stream.ksid} was already delivered "
                                                       f"to {stream.slave} (a key is delivered once)")
            while stream.chunks.get(index, _PENDING) is _PENDING:
                if index not in stream.chunks and not stream.master_open:
                    return Reply(GET_KEY_PEER_NOT_CONNECTED, message=f"{stream.master} closed stream {stream.ksid} "
                                                                     f"without fetching index {index}")
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return Reply(TIMEOUT, message=f"{stream.master} did not fetch index {index} of stream "
                                                  f"{stream.ksid} within the QoS timeout of {stream.qos['timeout']} ms")
                self.streams.changed.wait(remaining)
            key_id = stream.chunks[index]
            needed = len(_metadata(stream, index, key_id))
            if metadata_size < needed:
                return Reply(METADATA_TOO_SMALL, {"metadata_size": needed},
                             message=f"the metadata needs {needed} bytes, the buffer has {metadata_size}")
            stream.delivered.add(index)
        try:
            (key,) = self.keystore.deliver(stream.slave, stream.master, [key_id])
        except DeliveryRefused as exc:
            reason = exc.failures[0]["reason"] if exc.failures else "refused"
            return Reply(INSUFFICIENT_KEY, message=f"index {index} of stream {stream.ksid} (key_ID {key_id}): "
                                                   f"{reason}; it was delivered before, through ETSI 004 or 014")
        return self._answer(stream, index, key.key_id, key.material)

    def _answer(self, stream: Stream, index: int, key_id: str, material: bytes) -> Reply:
        return Reply(SUCCESSFUL, {"key_stream_ID": stream.ksid, "index": index,
                                  "key_buffer": base64.b64encode(material).decode("ascii"),
                                  "metadata": _metadata(stream, index, key_id)}, keys=1)

    # -- CLOSE -------------------------------------------------------------------------------

    def close(self, caller: str | None, data: dict) -> Reply:
        _only(data, {"key_stream_ID"}, "CLOSE data")
        stream, role = self._stream_of(caller, data.get("key_stream_ID"))
        with self.streams.lock:
            if role == "master":
                stream.master_open = False
            else:
                stream.slave_open = False
            if not stream.master_open and stream.slave_joined and not stream.slave_open:
                self.streams.streams.pop(stream.ksid, None)
            self.streams.changed.notify_all()
        return Reply(SUCCESSFUL)

    # -- checks ------------------------------------------------------------------------------

    def _own_sae(self, caller: str | None) -> None:
        site = self._sae_sites.get(caller)
        if site is None:
            raise CallError("unauthorized", f"client certificate CN {caller!r} is not a known SAE")
        if site.kme_id != self.kme_id:
            raise CallError("unauthorized", f"SAE {caller} is not attached to {self.kme_id} (its KME is {site.kme_id})")

    def _stream_of(self, caller: str | None, ksid: Any) -> tuple[Stream, str]:
        self._own_sae(caller)
        if not (isinstance(ksid, str) and _UUID.fullmatch(ksid)):
            raise CallError("bad_request", "key_stream_ID must be a UUID string")
        with self.streams.lock:
            self.streams.sweep(self._clock())
            stream = self.streams.streams.get(ksid)
        if stream is None:
            raise CallError("bad_request", f"unknown key_stream_ID {ksid} (never opened, closed, or past its TTL)")
        if caller == stream.master and self.kme_id == stream.master_kme:
            return stream, "master"
        if caller == stream.slave and self.kme_id == stream.slave_kme and stream.slave_joined:
            return stream, "slave"
        if caller == stream.slave:
            raise CallError("bad_request", f"{caller} has not joined stream {ksid}: OPEN_CONNECT with it first")
        raise CallError("unauthorized", f"SAE {caller} is not an end of stream {ksid}")


@dataclass(frozen=True)
class _Issued:
    key_id: str
    material: bytes = field(repr=False)


def check_qos(raw: Any, pool: LinkPool) -> tuple[dict, dict | None]:
    """The QoS of a request with defaults filled in, and a counter-proposal (with ``_reasons``) if the link
    cannot meet it. Wrong types are a CallError."""
    link, policy = pool.link, pool.link.policy
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CallError("bad_request", "qos must be an object")
    _only(raw, set(QOS_FIELDS), "qos")
    defaults = {"key_chunk_size": policy.key_size // 8, "max_bps": int(link.key_rate_bps), "min_bps": 0, "jitter": 0,
                "priority": 0, "timeout": 0, "TTL": 3600, "metadata_mimetype": METADATA_MIMETYPES[0]}
    qos = dict(defaults)
    for name, value in raw.items():
        if value is None:
            continue
        if name == "metadata_mimetype":
            if not isinstance(value, str):
                raise CallError("bad_request", "qos.metadata_mimetype must be a string")
        elif not _integer(value, 0, 2 ** 53):
            raise CallError("bad_request", f"qos.{name} must be a non-negative integer")
        qos[name] = value
    counter, reasons = dict(qos), []
    low, high = policy.min_key_size // 8, policy.max_key_size // 8
    if not low <= qos["key_chunk_size"] <= high:
        counter["key_chunk_size"] = min(max(qos["key_chunk_size"], low), high)
        reasons.append(f"key_chunk_size {qos['key_chunk_size']} bytes is outside {low}..{high} bytes on link "
                       f"{link.link_id}")
    if qos["min_bps"] > link.key_rate_bps:
        counter["min_bps"] = int(link.key_rate_bps)
        reasons.append(f"min_bps {qos['min_bps']} is above the key rate of link {link.link_id} "
                       f"({int(link.key_rate_bps)} bit/s)")
    if qos["max_bps"] < counter["min_bps"]:
        counter["max_bps"] = counter["min_bps"]
        reasons.append(f"max_bps {qos['max_bps']} is below min_bps")
    if qos["timeout"] > MAX_TIMEOUT_MS:
        counter["timeout"] = MAX_TIMEOUT_MS
        reasons.append(f"timeout {qos['timeout']} ms is above the simulator's limit of {MAX_TIMEOUT_MS} ms")
    if not 1 <= qos["TTL"] <= MAX_TTL_S:
        counter["TTL"] = min(max(qos["TTL"], 1), MAX_TTL_S)
        reasons.append(f"TTL {qos['TTL']} s is outside 1..{MAX_TTL_S} s")
    if qos["metadata_mimetype"] not in METADATA_MIMETYPES:
        counter["metadata_mimetype"] = METADATA_MIMETYPES[0]
        reasons.append(f"metadata_mimetype {qos['metadata_mimetype']!r} is not supported "
                       f"(supported: {', '.join(METADATA_MIMETYPES)})")
    if reasons:
        counter["_reasons"] = reasons
        return qos, counter
    return qos, None


def _metadata(stream: Stream, index: int, key_id: str) -> str:
    return json.dumps({"key_ID": key_id, "link_id": stream.pool.link.link_id,
                       "technology": stream.pool.link.technology, "index": index}, sort_keys=True)


def _sae_uri(value: Any, name: str) -> str:
    """The SAE ID of a ``qkd://<SAE_ID>`` URI (a bare SAE ID is accepted too)."""
    if not isinstance(value, str) or not value:
        raise CallError("bad_request", f"{name} must be a URI qkd://<SAE_ID>")
    sae = value[len(URI_SCHEME):] if value.startswith(URI_SCHEME) else value
    if not sae or "/" in sae:
        raise CallError("bad_request", f"{name} must be a URI qkd://<SAE_ID>, got {value!r}")
    return sae


def _integer(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _only(data: Any, allowed: set[str], what: str) -> None:
    if not isinstance(data, dict):
        raise CallError("bad_request", f"{what} must be an object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise CallError("bad_request", f"unknown field {unknown[0]!r} in {what} (allowed: {', '.join(sorted(allowed))})")


COMMANDS = {"OPEN_CONNECT": Etsi004Api.open_connect, "GET_KEY": Etsi004Api.get_key, "CLOSE": Etsi004Api.close}


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


def dispatch(api: Etsi004Api, caller: str | None, command: Any, data: Any) -> tuple[dict, str, str, int]:
    """One call, whatever the wire: (answer as in the JSON dialect, command, log outcome, keys delivered)."""
    try:
        if command not in COMMANDS:
            raise CallError("bad_request", f"unknown command {command!r} (known: {', '.join(COMMANDS)})")
        reply = COMMANDS[command](api, caller, data)
    except CallError as exc:
        return {"command": command, "error": exc.kind, "message": str(exc)}, str(command), exc.kind, 0
    answer = {"command": command, "status": reply.status, "data": reply.data}
    if reply.message:
        answer["message"] = reply.message
    return answer, command, f"status={reply.status}", reply.keys


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
