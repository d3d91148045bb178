"""Independent clients: the PyPI ``etsi-qkd-014-client`` and the system ``curl``.

The curl probe checks the responses against the data formats of ETSI GS QKD 014 v1.1.1
(section 6: Status, Key container, Error), without Python's HTTP or TLS stack on the client side.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess

import pytest
from etsi_qkd_014_client import QKD014Client

STATUS_FORMAT = {"source_KME_ID": str, "target_KME_ID": str, "master_SAE_ID": str, "slave_SAE_ID": str,
                 "key_size": int, "stored_key_count": int, "max_key_count": int, "max_key_per_request": int,
                 "max_key_size": int, "min_key_size": int, "max_SAE_ID_count": int}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _client(simulator, sae_id):
    sae = simulator.endpoints["saes"][sae_id]
    url = simulator.endpoints["kmes"][sae["kme_id"]]["etsi014_url"]
    return QKD014Client(url.removeprefix("https://"), sae["client_cert"], sae["client_key"],
                        simulator.endpoints["ca_cert"])


def test_pypi_client_status_key_and_key_by_id(default_sim, seen_keys):
    master, slave = _client(default_sim, "SAE-MAD-1"), _client(default_sim, "SAE-MAD-3")
    code, status = master.get_status("SAE-MAD-3")
    assert code == 200 and status.target_kme_id == "KME-MAD-3" and status.max_sae_id_count == 0
    code, container = master.get_key("SAE-MAD-3")
    assert code == 200 and len(container.keys) == 1
    issued = container.keys[0]
    seen_keys.append(issued.key)
    code, container = slave.get_key_with_key_IDs("SAE-MAD-1", [issued.key_id])
    assert code == 200
    assert (container.keys[0].key_id, container.keys[0].key) == (issued.key_id, issued.key)
    code, error = slave.get_key_with_key_IDs("SAE-MAD-1", [issued.key_id])
    assert code == 400 and error.message


def test_pypi_client_key_request_with_parameters(default_sim, seen_keys):
    code, container = _client(default_sim, "SAE-MAD-2").get_key("SAE-MAD-1", number=2, size=128)
    assert code == 200 and [len(base64.b64decode(key.key)) for key in container.keys] == [16, 16]
    seen_keys.extend(key.key for key in container.keys)


class Curl:
    """``curl`` as one SAE of a running simulator."""

    def __init__(self, simulator, sae_id):
        sae = simulator.endpoints["saes"][sae_id]
        self.base = simulator.endpoints["kmes"][sae["kme_id"]]["etsi014_url"] + "/api/v1/keys"
        self.tls = ["--cert", sae["client_cert"], "--key", sae["client_key"],
                    "--cacert", simulator.endpoints["ca_cert"]]
        self.env = {name: value for name, value in os.environ.items() if name != "CURL_CA_BUNDLE"}

    def __call__(self, path, body=None):
        """(status, parsed JSON body) of one request; the body must be JSON."""
        command = ["curl", "-sS", "--max-time", "10", *self.tls, "-w", "\n%{http_code} %{content_type}"]
        if body is not None:
            command += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        result = subprocess.run(command + [self.base + path], capture_output=True, text=True, env=self.env,
                                check=True)
        text, trailer = result.stdout.rsplit("\n", 1)
        status, content_type = trailer.split(" ", 1)
        assert content_type == "application/json", result.stdout
        return int(status), json.loads(text)


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl command")


def _check_key_container(body, count, size_bits):
    assert set(body) <= {"keys", "key_container_extension"}
    assert isinstance(body["keys"], list) and len(body["keys"]) == count
    for key in body["keys"]:
        assert set(key) <= {"key_ID", "key_ID_extension", "key", "key_extension"}
        assert isinstance(key["key_ID"], str) and UUID.fullmatch(key["key_ID"])
        assert isinstance(key["key"], str)
        assert len(base64.b64decode(key["key"], validate=True)) == size_bits // 8


def _check_error(body):
    assert isinstance(body.get("message"), str) and body["message"]
    assert set(body) <= {"message", "details"}
    assert isinstance(body.get("details", []), list)
    assert all(isinstance(item, dict) for item in body.get("details", []))


@needs_curl
def test_curl_conformance(default_sim, lab_sim, seen_keys):
    master, slave = Curl(default_sim, "SAE-MAD-1"), Curl(default_sim, "SAE-NSP-1")

    code, status = master("/SAE-NSP-1/status")
    assert code == 200
    assert set(status) >= set(STATUS_FORMAT)
    assert all(isinstance(status[name], kind) and not isinstance(status[name], bool)
               for name, kind in STATUS_FORMAT.items())

    code, issued = master("/SAE-NSP-1/enc_keys?number=2&size=192")
    assert code == 200
    _check_key_container(issued, 2, 192)
    code, posted = master("/SAE-NSP-1/enc_keys", {"number": 1, "size": 512})
    assert code == 200
    _check_key_container(posted, 1, 512)
    seen_keys.extend(key["key"] for key in issued["keys"] + posted["keys"])

    code, delivered = slave(f"/SAE-MAD-1/dec_keys?key_ID={issued['keys'][0]['key_ID']}")
    assert code == 200 and delivered["keys"] == issued["keys"][:1]
    rest = issued["keys"][1:] + posted["keys"]
    code, delivered = slave("/SAE-MAD-1/dec_keys", {"key_IDs": [{"key_ID": key["key_ID"]} for key in rest]})
    assert code == 200 and delivered["keys"] == rest

    code, other = master("/SAE-MAD-2/enc_keys")  # a key for SAE-MAD-2, not for SAE-NSP-1
    assert code == 200
    seen_keys.extend(key["key"] for key in other["keys"])
    used_id, other_id = issued["keys"][0]["key_ID"], other["keys"][0]["key_ID"]
    for client, path, body, expected in [
        (master, "/SAE-NSP-1/enc_keys?size=7", None, 400),
        (slave, "/SAE-MAD-1/dec_keys", {"key_IDs": [{"key_ID": used_id}]}, 400),
        (slave, f"/SAE-MAD-1/dec_keys?key_ID={other_id}", None, 401),
        (master, "/nothing/here", None, 404),
        (master, "/SAE-NSP-1/status", {}, 405),
        (Curl(lab_sim, "SAE-A"), "/SAE-E/enc_keys", None, 503),
    ]:
        code, error = client(path, body)
        assert code == expected, error
        _check_error(error)


@needs_curl
def test_curl_reuses_one_connection(default_sim):
    curl = Curl(default_sim, "SAE-MAD-2")
    url = curl.base + "/SAE-MAD-3/status"
    urls = ["-o", os.devnull, url] * 3
    result = subprocess.run(["curl", "-sS", *curl.tls, "-w", "%{http_code} %{num_connects}\n", *urls],
                            capture_output=True, text=True, env=curl.env, check=True)
    assert result.stdout.splitlines() == ["200 1", "200 0", "200 0"]


@needs_curl
def test_curl_without_client_certificate_fails(default_sim):
    curl = Curl(default_sim, "SAE-MAD-1")
    command = ["curl", "-sS", "--cacert", default_sim.endpoints["ca_cert"], curl.base + "/SAE-MAD-2/status"]
    result = subprocess.run(command, capture_output=True, text=True, env=curl.env, check=False)
    assert result.returncode != 0 and not result.stdout
