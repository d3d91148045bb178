"""ETSI GS QKD 014 behaviour of the simulated KMEs, driven with requests over mutual TLS."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from qkdsim_support import key_bytes, key_ids

STATUS_FIELDS = ("source_KME_ID", "target_KME_ID", "master_SAE_ID", "slave_SAE_ID", "key_size", "stored_key_count",
                 "max_key_count", "max_key_per_request", "max_key_size", "min_key_size", "max_SAE_ID_count")


def test_status_reports_all_fields(default_sim, sae):
    body = sae(default_sim, "SAE-MAD-1").status("SAE-MAD-2").json()
    assert set(STATUS_FIELDS) <= set(body)
    assert body["source_KME_ID"] == "KME-MAD-1" and body["target_KME_ID"] == "KME-MAD-2"
    assert body["master_SAE_ID"] == "SAE-MAD-1" and body["slave_SAE_ID"] == "SAE-MAD-2"
    assert (body["key_size"], body["min_key_size"], body["max_key_size"]) == (256, 64, 4096)
    assert body["max_key_count"] == 4096 and 0 < body["stored_key_count"] <= 4096
    assert (body["max_key_per_request"], body["max_SAE_ID_count"]) == (1024, 0)


def test_long_haul_link_works_and_mexico_has_no_qkd_link(default_sim, sae):
    mad1 = sae(default_sim, "SAE-MAD-1")
    assert mad1.status("SAE-NSP-1").json()["target_KME_ID"] == "KME-NSP-1"
    response = mad1.status("SAE-MEX-1")
    assert response.status_code == 400 and "no QKD link" in response.json()["message"]
    assert sae(default_sim, "SAE-MEX-1").enc_keys("SAE-MAD-1").status_code == 400


@pytest.mark.parametrize("enc_method, dec_method", [("GET", "GET"), ("POST", "POST")])
def test_key_delivered_to_slave_exactly_once(default_sim, sae, enc_method, dec_method):
    master, slave = sae(default_sim, "SAE-MAD-2"), sae(default_sim, "SAE-MAD-3")
    issued = master.enc_keys("SAE-MAD-3", method=enc_method)
    [key_id] = key_ids(issued)
    assert uuid.UUID(key_id).version == 4
    assert len(key_bytes(issued)[0]) == 32
    delivered = slave.dec_keys("SAE-MAD-2", [key_id], method=dec_method)
    assert delivered.json() == issued.json()
    again = slave.dec_keys("SAE-MAD-2", [key_id], method=dec_method)
    assert again.status_code == 400 and again.json()["details"][0]["key_ID"] == key_id


def test_number_and_size(default_sim, sae):
    response = sae(default_sim, "SAE-MAD-1").enc_keys("SAE-MAD-2", method="POST", number=3, size=512)
    assert [len(key) for key in key_bytes(response)] == [64, 64, 64]
    assert len(set(key_ids(response))) == 3


def test_wrong_slave_gets_401_and_key_stays_deliverable(lab_sim, sae):
    [key_id] = key_ids(sae(lab_sim, "SAE-A").enc_keys("SAE-B1"))
    response = sae(lab_sim, "SAE-B2").dec_keys("SAE-A", [key_id])
    assert response.status_code == 401
    assert "SAE-B2" in response.json()["details"][0]["reason"]
    assert key_ids(sae(lab_sim, "SAE-B1").dec_keys("SAE-A", [key_id])) == [key_id]


def test_wrong_master_in_path_gets_401(default_sim, sae):
    [key_id] = key_ids(sae(default_sim, "SAE-MAD-1").enc_keys("SAE-MAD-3"))
    slave = sae(default_sim, "SAE-MAD-3")
    response = slave.dec_keys("SAE-MAD-2", [key_id])
    assert response.status_code == 401 and "SAE-MAD-2" in response.json()["details"][0]["reason"]
    assert slave.dec_keys("SAE-MAD-1", [key_id]).status_code == 200


def test_master_cannot_collect_its_own_key(default_sim, sae):
    master = sae(default_sim, "SAE-MAD-1")
    [key_id] = key_ids(master.enc_keys("SAE-MAD-2"))
    assert master.dec_keys("SAE-MAD-2", [key_id]).status_code == 401


def test_unknown_key_id_is_400(default_sim, sae):
    unknown = str(uuid.uuid4())
    response = sae(default_sim, "SAE-MAD-2").dec_keys("SAE-MAD-1", [unknown], method="GET")
    assert response.status_code == 400
    assert response.json()["details"] == [{"key_ID": unknown, "reason": "unknown or already delivered key_ID"}]


def test_multi_key_dec_is_all_or_nothing(default_sim, sae):
    ids = key_ids(sae(default_sim, "SAE-MAD-1").enc_keys("SAE-MAD-2", method="POST", number=3))
    slave = sae(default_sim, "SAE-MAD-2")
    bogus = str(uuid.uuid4())
    failed = slave.dec_keys("SAE-MAD-1", ids[:2] + [bogus])
    assert failed.status_code == 400 and [d["key_ID"] for d in failed.json()["details"]] == [bogus]
    assert slave.dec_keys("SAE-MAD-1", [ids[0], ids[0]]).status_code == 400
    assert key_ids(slave.dec_keys("SAE-MAD-1", ids)) == ids


@pytest.mark.parametrize("params, parameter", [
    ({"number": 1025}, "number"),
    ({"number": 0}, "number"),
    ({"size": 100}, "size"),
    ({"size": 32}, "size"),
    ({"size": 8192}, "size"),
    ({"number": "2"}, "number"),
    ({"number": True}, "number"),
    ({"additional_slave_SAE_IDs": ["SAE-MAD-3"]}, "additional_slave_SAE_IDs"),
    ({"extension_mandatory": [{"route_type": "direct"}]}, "extension_mandatory"),
    ({"numbr": 2}, "numbr"),
])
def test_bad_key_request_is_400(default_sim, sae, params, parameter):
    master = sae(default_sim, "SAE-MAD-1")
    before = master.stored("SAE-MAD-2")
    response = master.enc_keys("SAE-MAD-2", method="POST", **params)
    assert response.status_code == 400, response.text
    assert response.json()["details"][0]["parameter"] == parameter
    assert master.stored("SAE-MAD-2") >= before  # nothing consumed


def test_optional_extensions_are_ignored(default_sim, sae):
    response = sae(default_sim, "SAE-MAD-1").enc_keys("SAE-MAD-2", method="POST", extension_optional=[{"x": 1}])
    assert len(key_ids(response)) == 1


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/SAE-MAD-2/enc_keys?number=abc", None),
    ("GET", "/SAE-MAD-2/enc_keys?number=1&number=2", None),
    ("GET", "/SAE-MAD-2/enc_keys?colour=blue", None),
    ("POST", "/SAE-MAD-2/enc_keys", b"{not json"),
    ("POST", "/SAE-MAD-2/enc_keys", b"[1, 2]"),
    ("POST", "/SAE-MAD-2/enc_keys?number=2", b"{}"),
    ("POST", "/SAE-MAD-2/dec_keys", b'{"key_IDs": []}'),
    ("POST", "/SAE-MAD-2/dec_keys", b'{"key_IDs": ["not-an-object"]}'),
    ("GET", "/SAE-MAD-2/dec_keys", None),
])
def test_malformed_requests_are_400(default_sim, sae, method, path, body):
    response = sae(default_sim, "SAE-MAD-1").request(method, path, data=body)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["message"], str)


@pytest.mark.parametrize("caller, peer, status, fragment", [
    ("SAE-MAD-1", "SAE-MAD-1", 400, "must differ"),
    ("SAE-MAD-1", "SAE-NOPE", 400, "unknown slave SAE"),
])
def test_peer_checks(default_sim, sae, caller, peer, status, fragment):
    response = sae(default_sim, caller).enc_keys(peer)
    assert response.status_code == status and fragment in response.json()["message"]


def test_no_keys_between_saes_of_one_kme(lab_sim, sae):
    response = sae(lab_sim, "SAE-B1").status("SAE-B2")
    assert response.status_code == 400 and "attached to KME-B too" in response.json()["message"]


def test_sae_calling_a_foreign_kme_is_401(default_sim, sae):
    client = sae(default_sim, "SAE-MAD-2")
    client.url = default_sim.endpoints["kmes"]["KME-MAD-1"]["etsi014_url"] + "/api/v1/keys"
    response = client.status("SAE-MAD-3")
    assert response.status_code == 401 and "not attached to KME-MAD-1" in response.json()["message"]


def test_pool_exhaustion_is_503_and_consumes_nothing(lab_sim, sae):
    master = sae(lab_sim, "SAE-A")
    status = master.status("SAE-D").json()
    assert (status["key_size"], status["max_key_count"], status["stored_key_count"]) == (128, 4, 4)
    response = master.enc_keys("SAE-D", number=5)
    assert response.status_code == 503 and "not enough key" in response.json()["message"]
    assert master.stored("SAE-D") == 4
    assert len(key_ids(master.enc_keys("SAE-D", number=4))) == 4
    assert master.enc_keys("SAE-D").status_code == 503
    assert master.stored("SAE-D") == 0


def test_alarmed_link_delivers_no_key(lab_sim, sae):
    master = sae(lab_sim, "SAE-A")
    assert master.stored("SAE-E") == 0
    response = master.enc_keys("SAE-E")
    assert response.status_code == 503 and "alarmed" in response.json()["message"]


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/nope", 404),
    ("GET", "/SAE-MAD-2/keys", 404),
    ("GET", "/SAE-MAD-2/status/extra", 404),
    ("POST", "/SAE-MAD-2/status", 405),
    ("DELETE", "/SAE-MAD-2/enc_keys", 405),
    ("PUT", "/SAE-MAD-1/dec_keys", 405),
])
def test_unknown_paths_404_and_wrong_methods_405(default_sim, sae, method, path, status):
    response = sae(default_sim, "SAE-MAD-1").request(method, path)
    assert response.status_code == status and response.json()["message"]
    if status == 405:
        assert "GET" in response.headers["Allow"]


def test_many_pairs_share_one_kept_alive_connection_per_sae(default_sim, sae):
    """Keep-alive works and Nagle is off (else each kept-alive request waits ~40 ms for the
    delayed ACK). Speed itself is measured by benchmarks/bench_key_delivery.py, not here."""
    from qkdsim.etsi014 import Etsi014Handler
    assert Etsi014Handler.disable_nagle_algorithm is True and Etsi014Handler.protocol_version == "HTTP/1.1"
    master, slave = sae(default_sim, "SAE-MAD-1"), sae(default_sim, "SAE-MAD-2")
    for _pair in range(20):
        [key_id] = key_ids(master.enc_keys("SAE-MAD-2"))
        key_ids(slave.dec_keys("SAE-MAD-1", [key_id], method="GET"))
    adapters = (master.session.adapters["https://"], slave.session.adapters["https://"])
    pools = [adapter.poolmanager.pools for adapter in adapters]
    assert all(len(pool.keys()) == 1 for pool in pools)
    assert all(pool[next(iter(pool.keys()))].num_connections == 1 for pool in pools)


def test_batch_of_1000_keys(default_sim, sae):
    master, slave = sae(default_sim, "SAE-MAD-1"), sae(default_sim, "SAE-MAD-3")
    issued = master.enc_keys("SAE-MAD-3", method="POST", number=1000)
    delivered = slave.dec_keys("SAE-MAD-1", key_ids(issued))
    assert delivered.json() == issued.json()
    assert len(set(key_bytes(issued))) == 1000


def test_concurrent_clients_get_distinct_keys(default_sim, sae):
    clients = [sae(default_sim, "SAE-MAD-2") for _client in range(8)]

    def fetch(client):
        return [key_id for _batch in range(10) for key_id in key_ids(client.enc_keys("SAE-MAD-1", number=5))]

    with ThreadPoolExecutor(len(clients)) as pool:
        ids = [key_id for batch in pool.map(fetch, clients) for key_id in batch]
    assert len(ids) == len(set(ids)) == 400


@pytest.mark.parametrize("raw, status", [
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET /a b HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"BREW /api/v1/keys/SAE-MAD-2/status HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    (b"POST /api/v1/keys/SAE-MAD-2/enc_keys HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xb2\r\n\r\n", 400),
    (b"POST /api/v1/keys/SAE-MAD-2/enc_keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /api/v1/keys/SAE-MAD-2/enc_keys?number=%C2%B2 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
])
def test_protocol_errors_are_json_too(default_sim, raw, status):
    endpoints = default_sim.endpoints
    sae_files = endpoints["saes"]["SAE-MAD-1"]
    context = ssl.create_default_context(cafile=endpoints["ca_cert"])
    context.load_cert_chain(sae_files["client_cert"], sae_files["client_key"])
    port = int(endpoints["kmes"]["KME-MAD-1"]["etsi014_url"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain, \
            context.wrap_socket(plain, server_hostname="127.0.0.1") as tls:
        tls.sendall(raw)
        response = http.client.HTTPResponse(tls)
        response.begin()
        assert response.status == status
        assert response.getheader("Content-Type") == "application/json"
        assert json.loads(response.read())["message"]
