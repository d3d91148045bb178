"""ETSI GS QKD 004 v2.1.1 application interface of one simulated KME.

The standard defines three calls and their status codes, not a wire format:

* ``OPEN_CONNECT(source, destination, QoS, key_stream_ID?)`` -> key_stream_ID, QoS, status
* ``GET_KEY(key_stream_ID, index, metadata_size)``            -> key_buffer, index, metadata, status
* ``CLOSE(key_stream_ID)``                                    -> status

This module holds the rules (``Etsi004Api``), independent of the wire: ``dispatch`` answers one
call as a dict (the JSON dialect's answer). ``qkdsim.etsi004_wire`` carries the calls over the two
wire formats the simulator serves (the JSON dialect and the binary framing).

A request that is not a valid call at all (unknown command, wrong field types, an unknown
key_stream_ID, a caller that is not an end of the stream) gets ``{"command", "error":
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
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .etsi004_qos import QosError, check_qos
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

MAX_LINE_BYTES = 64 * 1024
MAX_INDEX = 2 ** 32 - 1
MAX_STREAMS = 1 << 16              # open streams over the whole network; beyond this OPEN_CONNECT is refused
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
        try:
            qos, counter = check_qos(data.get("qos"), pool)
        except QosError as exc:
            raise CallError("bad_request", str(exc)) from None
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
