"""Cisco SKIP of the simulator: the four resources, TLS-PSK as IOS-XE uses it, mutual TLS, and one key
stream shared with ETSI GS QKD 014 (a key delivered through one interface never comes out of another).

Keys are compared by digest and recorded (base64) for the log check of the session fixture; never printed.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import ssl
import stat
import uuid
from pathlib import Path

import pytest
import sslpsk3

from qkdsim_support import SaeClient, key_ids, key_bytes, key_in_text
from qkdsim.process import SimulatorProcess

SKIP_TOPOLOGY = Path(__file__).with_name("skip_topology.yml")
IOS_XE_PSK_CIPHERS = "DHE-PSK-AES256-GCM-SHA384:PSK-AES256-GCM-SHA384:DHE-PSK-AES256-CBC-SHA384:PSK-AES256-CBC-SHA384"


@pytest.fixture(scope="module")
def skip_sim(tmp_path_factory):
    seen: list[str] = []
    simulator = SimulatorProcess(tmp_path_factory.mktemp("qkdsim-skip"), SKIP_TOPOLOGY)
    simulator.seen_keys = seen
    yield simulator
    assert simulator.stop() == 0
    log = simulator.log_file.read_text()
    assert not [key for key in seen if key_in_text(key, log)], "a SKIP key appears in the simulator log"
    assert "SAE-A GET /key?remoteSystemID=" in log, "requests are logged with the PSK identity, query values left out"


class SkipTestClient:
    """One SKIP caller: TLS 1.2 PSK (identity, key) or a client certificate; one connection per request."""

    def __init__(self, sim, kme_id, identity=None, psk=None, cert=None, ciphers=IOS_XE_PSK_CIPHERS):
        url = sim.endpoints["kmes"][kme_id]["interfaces"]["skip"]["url"]
        host, port = url.removeprefix("https://").rsplit(":", 1)
        self.address = (host, int(port))
        self.seen = sim.seen_keys
        if cert:
            self.context = ssl.create_default_context(cafile=sim.endpoints["ca_cert"])
            self.context.load_cert_chain(*cert)
        else:
            self.context = sslpsk3.SSLPSKContext(ssl.PROTOCOL_TLS_CLIENT)
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE
            self.context.maximum_version = ssl.TLSVersion.TLSv1_2
            self.context.set_ciphers(ciphers)
            self.context.set_psk_client_callback(lambda hint: (identity, psk))
        self.cipher = None

    def get(self, path, method="GET"):
        connection = http.client.HTTPSConnection(*self.address, context=self.context, timeout=10)
        try:
            connection.request(method, path)
            self.cipher = connection.sock.cipher()
            response = connection.getresponse()
            body = json.loads(response.read())
        finally:
            connection.close()
        if isinstance(body, dict) and "key" in body and isinstance(body["key"], str):
            self.seen.append(base64.b64encode(bytes.fromhex(body["key"])).decode())
        return response.status, body, response


def psk_client(sim, kme_id, sae_id, **kwargs):
    sae = sim.endpoints["saes"][sae_id]
    psk = bytes.fromhex(Path(sae["skip_psk_file"]).read_text().strip())
    return SkipTestClient(sim, kme_id, sae["skip_psk_identity"], psk, **kwargs)


def digest(material: bytes) -> str:
    return hashlib.sha256(material).hexdigest()


def etsi014(sim, sae_id):
    return SaeClient(sim.endpoints, sae_id, sim.seen_keys)


def test_endpoints_list_skip_and_psk_files_are_private(skip_sim):
    kmes, saes = skip_sim.endpoints["kmes"], skip_sim.endpoints["saes"]
    assert sorted(kmes["KME-A"]["interfaces"]) == ["etsi014", "skip"]
    assert kmes["KME-A"]["interfaces"]["skip"]["system_id"] == "KME-A"
    assert sorted(kmes["KME-C"]["interfaces"]) == ["etsi014"]
    assert "skip_psk_file" not in saes["SAE-C"]
    for sae in ("SAE-A", "SAE-B1", "SAE-B2"):
        assert saes[sae]["skip_psk_identity"] == sae
        mode = stat.S_IMODE(Path(saes[sae]["skip_psk_file"]).stat().st_mode)
        assert mode == 0o600, f"{sae} PSK file has mode {mode:o}"
    text = json.dumps(skip_sim.endpoints)
    for sae in ("SAE-A", "SAE-B1", "SAE-B2"):
        assert Path(saes[sae]["skip_psk_file"]).read_text().strip() not in text, "a PSK value in endpoints.json"


def test_capabilities(skip_sim):
    status, body, response = psk_client(skip_sim, "KME-A", "SAE-A").get("/capabilities")
    assert status == 200 and response.getheader("Content-Type") == "application/json"
    assert body == {"entropy": True, "key": True, "algorithm": "QKD", "localSystemID": "KME-A",
                    "remoteSystemID": ["KME-B", "KME-C"]}


def test_tls12_psk_suites_as_ios_xe_uses_them(skip_sim):
    for ciphers in ("DHE-PSK-AES256-CBC-SHA384", "PSK-AES256-CBC-SHA384", "DHE-PSK-AES256-GCM-SHA384"):
        client = psk_client(skip_sim, "KME-A", "SAE-A", ciphers=ciphers)
        assert client.get("/capabilities")[0] == 200
        assert client.cipher[0] == ciphers and client.cipher[1] in ("TLSv1.2", "TLSv1.0"), client.cipher


def test_key_then_key_by_id_once_at_the_other_end(skip_sim):
    status, new, unused = psk_client(skip_sim, "KME-A", "SAE-A").get("/key?remoteSystemID=KME-B&size=512")
    assert status == 200 and set(new) == {"keyId", "key"}
    assert len(new["keyId"]) == 32 and int(new["keyId"], 16) >= 0
    assert len(bytes.fromhex(new["key"])) == 64
    peer = psk_client(skip_sim, "KME-B", "SAE-B2")
    status, got, unused = peer.get(f"/key/{new['keyId']}?remoteSystemID=KME-A")
    assert status == 200 and got["keyId"] == new["keyId"]
    assert digest(bytes.fromhex(got["key"])) == digest(bytes.fromhex(new["key"]))
    status, again, unused = psk_client(skip_sim, "KME-B", "SAE-B1").get(f"/key/{new['keyId']}?remoteSystemID=KME-A")
    assert status == 404 and "unknown or already delivered" in again["message"]


def test_a_key_delivered_through_one_interface_never_comes_out_of_another(skip_sim):
    # ETSI 014 master at A, SKIP at B: collected once over SKIP, then ETSI 014 refuses it.
    (key_id,) = key_ids(response := etsi014(skip_sim, "SAE-A").enc_keys("SAE-B1"))
    (material,) = key_bytes(response)
    status, got, unused = psk_client(skip_sim, "KME-B", "SAE-B1").get(f"/key/{uuid.UUID(key_id).hex}?remoteSystemID=KME-A")
    assert status == 200 and digest(bytes.fromhex(got["key"])) == digest(material)
    refused = etsi014(skip_sim, "SAE-B1").dec_keys("SAE-A", [key_id])
    assert refused.status_code == 400 and "already delivered" in refused.json()["details"][0]["reason"]
    # SKIP at A, ETSI 014 slave at B: collected once over ETSI 014, then SKIP refuses it.
    status, new, unused = psk_client(skip_sim, "KME-A", "SAE-A").get("/key?remoteSystemID=KME-B")
    assert status == 200
    (material,) = key_bytes(etsi014(skip_sim, "SAE-B2").dec_keys("SAE-A", [str(uuid.UUID(new["keyId"]))]))
    assert digest(material) == digest(bytes.fromhex(new["key"]))
    status, body, unused = psk_client(skip_sim, "KME-B", "SAE-B2").get(f"/key/{new['keyId']}?remoteSystemID=KME-A")
    assert status == 404


def test_a_key_for_another_system_is_refused_and_not_lost(skip_sim):
    status, new, unused = psk_client(skip_sim, "KME-A", "SAE-A").get("/key?remoteSystemID=KME-B")
    assert status == 200
    # the requesting end asks for its own key by ID (as if it were the remote system): not addressed to it
    status, body, unused = psk_client(skip_sim, "KME-A", "SAE-A").get(f"/key/{new['keyId']}?remoteSystemID=KME-B")
    assert status == 401 and "not addressed to SAE SAE-A" in body["message"]
    status, got, unused = psk_client(skip_sim, "KME-B", "SAE-B1").get(f"/key/{new['keyId']}?remoteSystemID=KME-A")
    assert status == 200 and digest(bytes.fromhex(got["key"])) == digest(bytes.fromhex(new["key"]))


@pytest.mark.parametrize("path, status, words", [
    ("/key?remoteSystemID=KME-X", 404, "unknown remoteSystemID 'KME-X'"),
    ("/key", 400, "remoteSystemID: is required"),
    ("/key?remoteSystemID=KME-B&size=7", 400, "size: must be a multiple of 8"),
    ("/key?remoteSystemID=KME-B&size=abc", 400, "size: must be a decimal integer"),
    ("/key?remoteSystemID=KME-B&number=2", 400, "number: unknown query parameter"),
    (f"/key/{'0' * 32}?remoteSystemID=KME-B", 404, "unknown or already delivered"),
    ("/key/not-hex?remoteSystemID=KME-B", 400, "keyId: must be 32 hex digits"),
    ("/key/00?remoteSystemID=KME-X", 404, "unknown remoteSystemID"),
    ("/entropy?minentropy=12", 400, "minentropy: must be a multiple of 8"),
    ("/api/v1/keys/SAE-B1/status", 404, "SKIP serves /capabilities, /key, /key/{keyId}, /entropy"),
])
def test_bad_requests_name_the_problem(skip_sim, path, status, words):
    got, body, unused = psk_client(skip_sim, "KME-A", "SAE-A").get(path)
    assert (got, words in body["message"]) == (status, True), body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(skip_sim, method):
    status, body, response = psk_client(skip_sim, "KME-A", "SAE-A").get("/key?remoteSystemID=KME-B", method=method)
    assert status == 405 and response.getheader("Allow") == "GET"


def test_not_enough_key_is_503_and_consumes_nothing(skip_sim):
    client = psk_client(skip_sim, "KME-A", "SAE-A")
    statuses = [client.get("/key?remoteSystemID=KME-C")[0] for unused in range(3)]
    assert statuses == [200, 200, 503]
    status, body, unused = client.get("/key?remoteSystemID=KME-C&size=64")
    assert status == 503 and "not enough key on QKD link A--C" in body["message"]


def test_entropy(skip_sim):
    status, body, unused = psk_client(skip_sim, "KME-B", "SAE-B1").get("/entropy?minentropy=512")
    assert status == 200 and body["minentropy"] == 512 and len(bytes.fromhex(body["randomStr"])) == 64
    assert psk_client(skip_sim, "KME-B", "SAE-B1").get("/entropy")[1]["minentropy"] == 256


def test_wrong_psk_key_or_identity_fails_the_handshake(skip_sim):
    with pytest.raises(ssl.SSLError, match="BAD_RECORD_MAC|DECRYPT"):
        SkipTestClient(skip_sim, "KME-A", "SAE-A", b"\x00" * 32).get("/capabilities")
    with pytest.raises(ssl.SSLError, match="unknown psk identity"):
        SkipTestClient(skip_sim, "KME-A", "SAE-NOBODY", b"\x00" * 32).get("/capabilities")
    # another KME's SAE with its own, valid PSK: not known to this KME's PSK table either
    sae = skip_sim.endpoints["saes"]["SAE-B1"]
    with pytest.raises(ssl.SSLError, match="unknown psk identity"):
        SkipTestClient(skip_sim, "KME-A", "SAE-B1", bytes.fromhex(Path(sae["skip_psk_file"]).read_text().strip())
                       ).get("/capabilities")


def test_mutual_tls_option(skip_sim):
    saes = skip_sim.endpoints["saes"]
    client = SkipTestClient(skip_sim, "KME-A", cert=(saes["SAE-A"]["client_cert"], saes["SAE-A"]["client_key"]))
    status, new, unused = client.get("/key?remoteSystemID=KME-B")
    assert status == 200
    peer = SkipTestClient(skip_sim, "KME-B", cert=(saes["SAE-B1"]["client_cert"], saes["SAE-B1"]["client_key"]))
    status, got, unused = peer.get(f"/key/{new['keyId']}?remoteSystemID=KME-A")
    assert status == 200 and digest(bytes.fromhex(got["key"])) == digest(bytes.fromhex(new["key"]))
    # a certificate of another KME's SAE: the KME refuses the caller
    status, body, unused = SkipTestClient(skip_sim, "KME-B", cert=(saes["SAE-A"]["client_cert"],
                                                                   saes["SAE-A"]["client_key"])).get("/capabilities")
    assert status == 401 and "not attached to KME-B" in body["message"]
    # no certificate and no PSK: no handshake
    bare = ssl.create_default_context(cafile=skip_sim.endpoints["ca_cert"])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(client.address, timeout=10) as raw:
            with bare.wrap_socket(raw, server_hostname=client.address[0]) as tls:
                tls.sendall(b"GET /capabilities HTTP/1.1\r\nHost: x\r\n\r\n")
                if not tls.recv(1):
                    raise ConnectionError("closed")
