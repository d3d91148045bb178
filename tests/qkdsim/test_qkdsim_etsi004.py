"""ETSI GS QKD 004 of the simulator, spoken raw (JSON lines over mutual TLS), beside ETSI 014.

Keys are compared by digest and never printed; every key received is recorded so that the
simulator log can be searched for it when the simulator stops.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import struct
from pathlib import Path

import pytest

from qkdsim_support import key_bytes, key_ids, key_in_text
from qkdsim.process import SimulatorProcess
from qkdsim.topology import TopologyError, parse_topology

TOPOLOGY = Path(__file__).with_name("etsi004_topology.yml")
NIL = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def sim(tmp_path_factory, seen_keys):
    simulator = SimulatorProcess(tmp_path_factory.mktemp("qkdsim-004"), TOPOLOGY)
    yield simulator
    assert simulator.stop() == 0
    log = simulator.log_file.read_text()
    assert " 004 GET_KEY status=0 keys=1 " in log       # the tests did fetch keys through 004 ...
    assert not [key for key in seen_keys if key_in_text(key, log)]  # ... and none of them is in the log


class Sae004:
    """One SAE speaking ETSI 004 to its own KME over one TLS connection."""

    def __init__(self, simulator: SimulatorProcess, sae_id: str, seen_keys: list[str], cert=None):
        endpoints = simulator.endpoints
        sae = endpoints["saes"][sae_id]
        interface = endpoints["kmes"][sae["kme_id"]]["interfaces"]["etsi004"]
        host, port = interface["url"].removeprefix("tls://").rsplit(":", 1)
        context = ssl.create_default_context(cafile=endpoints["ca_cert"])
        context.load_cert_chain(*(cert or (sae["client_cert"], sae["client_key"])))
        self.sae_id, self.seen_keys = sae_id, seen_keys
        self.sock = context.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host)
        self.reader = self.sock.makefile("rb")

    def call(self, command: str, **data) -> dict:
        self.sock.sendall(json.dumps({"command": command, "data": data}).encode() + b"\n")
        answer = json.loads(self.reader.readline())
        assert answer["command"] == command
        if answer.get("status") == 0 and command == "GET_KEY":
            self.seen_keys.append(answer["data"]["key_buffer"])
        return answer

    def open(self, master: str, slave: str, ksid: str | None = None, **qos) -> dict:
        data = {"source": f"qkd://{master}", "destination": f"qkd://{slave}", "qos": qos}
        if ksid:
            data["key_stream_ID"] = ksid
        return self.call("OPEN_CONNECT", **data)

    def get_key(self, ksid: str, index: int = 0, metadata_size: int = 1024) -> dict:
        return self.call("GET_KEY", key_stream_ID=ksid, index=index, metadata_size=metadata_size)

    def close(self, ksid: str) -> dict:
        return self.call("CLOSE", key_stream_ID=ksid)

    def shutdown(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def sae004(seen_keys):
    clients = []

    def make(simulator, sae_id, cert=None):
        clients.append(Sae004(simulator, sae_id, seen_keys, cert))
        return clients[-1]
    yield make
    for client in clients:
        client.shutdown()


def digest(answer: dict) -> str:
    assert answer["status"] == 0, answer
    return hashlib.sha256(base64.b64decode(answer["data"]["key_buffer"])).hexdigest()


def key_id_of(answer: dict) -> str:
    return json.loads(answer["data"]["metadata"])["key_ID"]


def opened(answer: dict, status: int = 1) -> str:
    assert answer["status"] == status, answer
    return answer["data"]["key_stream_ID"]


# -- topology and endpoints ------------------------------------------------------------------

def test_endpoints_list_every_interface_of_every_kme(sim):
    kmes = sim.endpoints["kmes"]
    assert set(kmes["KME-A"]["interfaces"]) == {"etsi014", "etsi004"}
    assert kmes["KME-A"]["interfaces"]["etsi004"]["url"].startswith("tls://127.0.0.1:")
    assert kmes["KME-A"]["interfaces"]["etsi004"]["wire"] == "json"
    assert kmes["KME-A"]["interfaces"]["etsi004"]["binary_url"].startswith("tls+binary://127.0.0.1:")
    assert "etsi004" not in kmes["KME-F"]["interfaces"]          # default: ETSI 014 only
    assert kmes["KME-F"]["etsi014_url"] == kmes["KME-F"]["interfaces"]["etsi014"]["url"]


@pytest.mark.parametrize("interfaces, problem", [
    ("[etsi004, etsi015]", "field 'interfaces': unknown interface 'etsi015'"),
    ("[]", "field 'interfaces': must list at least one of"),
    ("[etsi004, etsi004]", "field 'interfaces': lists an interface more than once"),
    ("etsi004", "field 'interfaces': must be a list"),
])
def test_bad_interfaces_are_named(interfaces, problem):
    with pytest.raises(TopologyError) as err:
        parse_topology(f"sites:\n  - id: A\n    interfaces: {interfaces}\n", "t.yml")
    assert f"t.yml: sites[0] (A): {problem}" in str(err.value)


# -- the three calls ---------------------------------------------------------------------------

def test_both_ends_open_the_same_stream_and_get_the_same_keys_by_index(sim, sae004):
    master, slave = sae004(sim, "SAE-A"), sae004(sim, "SAE-B")
    ksid = opened(master.open("SAE-A", "SAE-B", key_chunk_size=32))        # 1: the peer has not connected yet
    assert opened(slave.open("SAE-A", "SAE-B", ksid), status=0) == ksid
    first, second = master.get_key(ksid, 0), master.get_key(ksid, 1)
    assert len(base64.b64decode(first["data"]["key_buffer"])) == 32
    assert [digest(slave.get_key(ksid, 1)), digest(slave.get_key(ksid, 0))] == [digest(second), digest(first)]
    metadata = json.loads(first["data"]["metadata"])
    assert metadata["link_id"] == "A--B" and metadata["index"] == 0
    assert master.close(ksid)["status"] == 0 and slave.close(ksid)["status"] == 0


def test_a_key_is_fetched_once_at_each_end(sim, sae004):
    master, slave = sae004(sim, "SAE-A"), sae004(sim, "SAE-B")
    ksid = opened(master.open("SAE-A", "SAE-B"))
    digest(master.get_key(ksid, 0))
    again = master.get_key(ksid, 0)
    assert again["status"] == 2 and "already delivered" in again["message"]
    opened(slave.open("SAE-A", "SAE-B", ksid), status=0)
    digest(slave.get_key(ksid, 0))
    again = slave.get_key(ksid, 0)
    assert again["status"] == 2 and "already delivered" in again["message"]


def test_the_master_may_fetch_before_the_slave_connects_and_close_before_it_collects(sim, sae004):
    master = sae004(sim, "SAE-A")
    ksid = opened(master.open("SAE-A", "SAE-B"))
    key = digest(master.get_key(ksid, 0))
    assert master.close(ksid)["status"] == 0
    slave = sae004(sim, "SAE-B")
    opened(slave.open("SAE-A", "SAE-B", ksid), status=0)
    assert digest(slave.get_key(ksid, 0)) == key
    gone = slave.get_key(ksid, 1)           # the master closed without fetching index 1
    assert gone["status"] == 3 and "closed stream" in gone["message"]


def test_a_stream_closed_by_the_slave_is_status_3_for_the_master(sim, sae004):
    master, slave = sae004(sim, "SAE-A"), sae004(sim, "SAE-B")
    ksid = opened(master.open("SAE-A", "SAE-B"))
    opened(slave.open("SAE-A", "SAE-B", ksid), status=0)
    slave.close(ksid)
    answer = master.get_key(ksid, 0)
    assert answer["status"] == 3 and "SAE-B closed stream" in answer["message"]


def test_the_slave_waits_up_to_the_qos_timeout_for_the_master(sim, sae004):
    master, slave = sae004(sim, "SAE-A"), sae004(sim, "SAE-B")
    ksid = opened(master.open("SAE-A", "SAE-B", timeout=200))
    opened(slave.open("SAE-A", "SAE-B", ksid), status=0)
    answer = slave.get_key(ksid, 0)
    assert answer["status"] == 6 and "within the QoS timeout of 200 ms" in answer["message"]
    key = digest(master.get_key(ksid, 0))
    assert digest(slave.get_key(ksid, 0)) == key     # the timeout lost nothing


def test_ksid_in_use_is_status_5(sim, sae004):
    master, slave = sae004(sim, "SAE-A"), sae004(sim, "SAE-B")
    ksid = opened(master.open("SAE-A", "SAE-B"))
    assert master.open("SAE-A", "SAE-B", ksid)["status"] == 5          # the master proposes a used ID
    opened(slave.open("SAE-A", "SAE-B", ksid), status=0)
    assert slave.open("SAE-A", "SAE-B", ksid)["status"] == 5           # the slave joins twice


@pytest.mark.parametrize("qos, field, proposed", [
    ({"min_bps": 10 ** 9}, "min_bps", 51200),
    ({"key_chunk_size": 4}, "key_chunk_size", 8),
    ({"key_chunk_size": 4096}, "key_chunk_size", 512),
    ({"metadata_mimetype": "text/xml"}, "metadata_mimetype", "application/json"),
    ({"timeout": 3_600_000}, "timeout", 60_000),
    ({"TTL": 0}, "TTL", 1),
])
def test_qos_that_cannot_be_met_is_status_7_with_a_counter_proposal_and_opens_nothing(
        sim, sae004, qos, field, proposed):
    answer = sae004(sim, "SAE-A").open("SAE-A", "SAE-B", **qos)
    assert answer["status"] == 7 and field in answer["message"]
    assert answer["data"]["qos"][field] == proposed
    assert "key_stream_ID" not in answer["data"]
    accepted = sae004(sim, "SAE-A").open("SAE-A", "SAE-B", **answer["data"]["qos"])
    assert accepted["status"] == 1, "the counter-proposal is accepted as it stands"


def test_a_small_metadata_buffer_is_status_8_and_loses_no_key(sim, sae004):
    master, slave = sae004(sim, "SAE-A"), sae004(sim, "SAE-B")
    ksid = opened(master.open("SAE-A", "SAE-B"))
    small = master.get_key(ksid, 0, metadata_size=10)
    assert small["status"] == 8 and small["data"]["metadata_size"] > 10
    key = digest(master.get_key(ksid, 0, metadata_size=small["data"]["metadata_size"]))
    opened(slave.open("SAE-A", "SAE-B", ksid), status=0)
    assert slave.get_key(ksid, 0, metadata_size=10)["status"] == 8
    assert digest(slave.get_key(ksid, 0)) == key


# -- key supply ---------------------------------------------------------------------------------

def test_not_enough_key_is_status_2_and_takes_nothing(sim, sae004, sae):
    master = sae004(sim, "SAE-A")
    ksid = opened(master.open("SAE-A", "SAE-D", key_chunk_size=16))
    for index in range(4):                       # the pool holds four 128-bit keys, refills 1 bit/s
        digest(master.get_key(ksid, index))
    answer = master.get_key(ksid, 4)
    assert answer["status"] == 2 and "not enough key on QKD link A--D" in answer["message"]


def test_the_master_waits_for_refill_within_its_qos_timeout(sim, sae004):
    master = sae004(sim, "SAE-A")                # A--C refills 256 bits in 0.1 s
    ksid = opened(master.open("SAE-A", "SAE-C", timeout=2000))
    for index in range(3):
        digest(master.get_key(ksid, index))
    hurried = opened(master.open("SAE-A", "SAE-C", timeout=0))
    drained = [master.get_key(hurried, index)["status"] for index in range(12)]
    assert 2 in drained, "with timeout 0 the master does not wait for the pool"


def test_alarmed_link_and_no_link_are_status_4(sim, sae004):
    master = sae004(sim, "SAE-A")
    ksid = opened(master.open("SAE-A", "SAE-E"))
    answer = master.get_key(ksid, 0)
    assert answer["status"] == 4 and "alarmed" in answer["message"]
    answer = master.open("SAE-A", "SAE-F")
    assert answer["status"] == 4 and "no QKD link between KME-A and KME-F" in answer["message"]


# -- one key store for both interfaces ---------------------------------------------------------

def test_a_key_fetched_by_014_cannot_be_had_through_004(sim, sae, sae004):
    master14, slave14 = sae(sim, "SAE-A"), sae(sim, "SAE-B")
    response = master14.enc_keys("SAE-B", method="POST", number=1)
    (key_id,) = key_ids(response)
    assert key_bytes(slave14.dec_keys("SAE-A", [key_id]))            # collected through 014 ...
    answer = sae004(sim, "SAE-B").open("SAE-A", "SAE-B", key_id)     # ... so 004 does not know it any more
    assert answer["error"] == "bad_request" and f"unknown key_stream_ID {key_id}" in answer["message"]


def test_a_key_fetched_by_004_cannot_be_had_through_014(sim, sae, sae004):
    master, slave = sae004(sim, "SAE-A"), sae004(sim, "SAE-B")
    ksid = opened(master.open("SAE-A", "SAE-B"))
    key_id = key_id_of(master.get_key(ksid, 0))
    opened(slave.open("SAE-A", "SAE-B", ksid), status=0)
    digest(slave.get_key(ksid, 0))                                    # collected through 004 ...
    response = sae(sim, "SAE-B").dec_keys("SAE-A", [key_id])          # ... so 014 refuses it
    assert response.status_code == 400 and "unknown or already delivered" in response.text


def test_a_014_key_is_collected_through_004_by_its_key_id_once(sim, sae, sae004):
    response = sae(sim, "SAE-A").enc_keys("SAE-B", method="POST", number=1)
    (key_id,), (material,) = key_ids(response), key_bytes(response)
    slave = sae004(sim, "SAE-B")
    assert opened(slave.open("SAE-A", "SAE-B", key_id), status=0) == key_id
    answer = slave.get_key(key_id, 0)
    assert digest(answer) == hashlib.sha256(material).hexdigest() and key_id_of(answer) == key_id
    assert sae(sim, "SAE-B").dec_keys("SAE-A", [key_id]).status_code == 400


def test_a_004_key_is_collected_through_014_by_its_key_id(sim, sae, sae004):
    master = sae004(sim, "SAE-B")                       # B masters towards A, A collects over 014
    ksid = opened(master.open("SAE-B", "SAE-A"))
    answer = master.get_key(ksid, 0)
    (material,) = key_bytes(sae(sim, "SAE-A").dec_keys("SAE-B", [key_id_of(answer)]))
    assert hashlib.sha256(material).hexdigest() == digest(answer)
    slave = sae004(sim, "SAE-A")
    opened(slave.open("SAE-B", "SAE-A", ksid), status=0)
    assert slave.get_key(ksid, 0)["status"] == 2                       # and 004 does not deliver it again


# -- who may do what ---------------------------------------------------------------------------

def test_unknown_stream_and_strangers_are_refused(sim, sae004):
    master = sae004(sim, "SAE-A")
    answer = master.get_key(NIL)
    assert answer["error"] == "bad_request" and f"unknown key_stream_ID {NIL}" in answer["message"]
    ksid = opened(master.open("SAE-A", "SAE-B"))
    (key_id,) = [key_id_of(master.get_key(ksid, 0))]
    stranger = sae004(sim, "SAE-C")
    answer = stranger.open("SAE-A", "SAE-C", key_id)
    assert answer["error"] == "unauthorized" and "was not issued by SAE-A for SAE-C" in answer["message"]
    answer = stranger.open("SAE-A", "SAE-B")
    assert answer["error"] == "unauthorized" and "neither the source SAE-A nor the destination SAE-B" in answer["message"]
    answer = master.call("GET_KEY", key_stream_ID=ksid, index=-1)
    assert answer["error"] == "bad_request" and "index must be an integer" in answer["message"]
    answer = master.call("FETCH", key_stream_ID=ksid)
    assert answer["error"] == "bad_request" and "unknown command 'FETCH'" in answer["message"]


def test_an_sae_on_another_kme_is_refused(sim, sae004):
    endpoints = sim.endpoints
    other = endpoints["saes"]["SAE-B"]
    answer = sae004(sim, "SAE-A", cert=(other["client_cert"], other["client_key"])).open("SAE-B", "SAE-A")
    assert answer["error"] == "unauthorized" and "SAE SAE-B is not attached to KME-A" in answer["message"]


def test_a_client_without_a_trusted_certificate_is_refused(sim):
    material = sim.endpoints["test_material"]
    url = sim.endpoints["kmes"]["KME-A"]["interfaces"]["etsi004"]["url"]
    host, port = url.removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=sim.endpoints["ca_cert"])
    context.load_cert_chain(material["rogue_client_cert"], material["rogue_client_key"])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with context.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=host) as tls:
            tls.sendall(b'{"command": "CLOSE", "data": {}}\n')
            assert not tls.recv(1024)    # TLS 1.3: the refusal may only show on the first read
            raise ConnectionError("closed")


# -- the binary framing -------------------------------------------------------------------------

class Binary004:
    """Frames built by hand as the public binary dialect defines them (8-byte header, fixed payloads)."""

    def __init__(self, simulator: SimulatorProcess, sae_id: str, seen_keys: list[str]):
        endpoints = simulator.endpoints
        sae = endpoints["saes"][sae_id]
        url = endpoints["kmes"][sae["kme_id"]]["interfaces"]["etsi004"]["binary_url"]
        host, port = url.removeprefix("tls+binary://").rsplit(":", 1)
        context = ssl.create_default_context(cafile=endpoints["ca_cert"])
        context.load_cert_chain(sae["client_cert"], sae["client_key"])
        self.sock = context.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host)
        self.reader = self.sock.makefile("rb")
        self.seen_keys = seen_keys

    def frame(self, service: int, payload: bytes) -> tuple[int, bytes]:
        self.sock.sendall(struct.pack("!BBBbI", 1, 0, 1, service, len(payload)) + payload)
        header = self.reader.read(8)
        answer_service, length = struct.unpack("!BBBbI", header)[3:]
        return answer_service, self.reader.read(length)

    def open(self, master: str, slave: str, ksid: bytes = bytes(16), chunk: int = 32, min_bps: int = 0):
        qos = struct.pack("!7I", chunk, 51200, min_bps, 0, 0, 0, 3600) + b"application/json".ljust(256, b"\0")
        service, body = self.frame(0x02, f"qkd://{master}".encode() + b"\0" + f"qkd://{slave}".encode() + b"\0"
                                   + qos + ksid)
        assert service == 0x03
        status = struct.unpack("!I", body[:4])[0]
        if status in (0, 1, 7):
            return status, struct.unpack("!7I", body[4:32]), body[4 + 28 + 256:4 + 28 + 256 + 16]
        return status, None, None

    def get_key(self, ksid: bytes, index: int, metadata_size: int = 1024):
        service, body = self.frame(0x04, ksid + struct.pack("!II", index, metadata_size))
        assert service == 0x05
        status = struct.unpack("!I", body[:4])[0]
        if status:
            return status, body[4:], None
        got_index, size = struct.unpack("!II", body[4:12])
        key = body[12:12 + size]
        meta_size = struct.unpack("!I", body[12 + size:16 + size])[0]
        self.seen_keys.append(base64.b64encode(key).decode())
        assert got_index == index
        return status, key, json.loads(body[16 + size:16 + size + meta_size])

    def shutdown(self) -> None:
        self.reader.close()
        self.sock.close()


def test_the_binary_framing_serves_the_same_streams(sim, sae, seen_keys):
    master, slave = Binary004(sim, "SAE-A", seen_keys), Binary004(sim, "SAE-B", seen_keys)
    try:
        status, qos, ksid = master.open("SAE-A", "SAE-B")
        assert status == 1 and qos[0] == 32 and ksid != bytes(16)
        assert master.open("SAE-A", "SAE-B", min_bps=10 ** 9)[:2] == (7, (32, 51200, 51200, 0, 0, 0, 3600))
        status, key, metadata = master.get_key(ksid, 0)
        assert status == 0 and len(key) == 32 and metadata["link_id"] == "A--B"
        status, needed, unused = master.get_key(ksid, 1, metadata_size=10)
        assert status == 8 and struct.unpack("!I", needed[:4])[0] > 10 and b"metadata needs" in needed
        assert slave.open("SAE-A", "SAE-B", ksid)[0] == 0
        status, slave_key, unused = slave.get_key(ksid, 0)
        assert status == 0 and hashlib.sha256(slave_key).digest() == hashlib.sha256(key).digest()
        status, message, unused = slave.get_key(ksid, 0)
        assert status == 2 and b"already delivered" in message
        # the chunk is gone for ETSI 014 too
        response = sae(sim, "SAE-B").dec_keys("SAE-A", [metadata["key_ID"]])
        assert response.status_code == 400
        service, body = slave.frame(0x08, ksid)
        assert service == 0x09 and struct.unpack("!I", body[:4])[0] == 0
        service, body = master.frame(0x04, bytes(16) + struct.pack("!II", 0, 1024))   # an unknown stream
        assert struct.unpack("!I", body[:4])[0] == 0xFFFFFFFF
        assert json.loads(body[4:])["error"] == "bad_request"
        service, body = master.frame(0x04, b"short")                                   # malformed
        assert json.loads(body[4:])["message"] == "malformed binary GET_KEY request (5 bytes)"
        master.sock.sendall(struct.pack("!BBBbI", 1, 0, 1, 0x06, 0))                   # not a request type
        assert master.reader.read(8) == b""                                            # the KME hangs up
    finally:
        master.shutdown()
        slave.shutdown()


def test_open_streams_are_bounded(monkeypatch):
    """In process: beyond MAX_STREAMS open streams a new OPEN_CONNECT is status 4 and nothing is opened."""
    from qkdsim import etsi004
    from qkdsim.keystore import KeyStore
    from qkdsim.topology import load_topology
    topology = load_topology(TOPOLOGY)
    monkeypatch.setattr(etsi004, "MAX_STREAMS", 2)
    streams = etsi004.Etsi004Streams()
    api = etsi004.Etsi004Api("KME-A", topology, KeyStore(topology), streams)
    request = {"source": "qkd://SAE-A", "destination": "qkd://SAE-B"}
    assert [api.open_connect("SAE-A", dict(request)).status for unused in range(3)] == [1, 1, 4]
    assert len(streams.streams) == 2
    ksid = next(iter(streams.streams))
    assert api.close("SAE-A", {"key_stream_ID": ksid}).status == 0
