"""Helpers shared by the qkdsim tests: an SAE client and key checks (qkdsim itself is installed in the venv:
``make venv``; pyproject.toml's pytest section puts this directory on the import path)."""

from __future__ import annotations

import base64
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_TOPOLOGY = Path(__file__).with_name("lab_topology.yml")
API = "/api/v1/keys"


class SaeClient:
    """One SAE talking to its own KME with ``requests``: mutual TLS, CA pinned per request.

    REQUESTS_CA_BUNDLE is set in this environment and would override ``Session.verify``, hence
    ``trust_env = False``. Every key received is recorded in ``seen_keys`` for the log checks.
    """

    def __init__(self, endpoints: dict, sae_id: str, seen_keys: list[str], cert: tuple[str, str] | None = None):
        sae = endpoints["saes"][sae_id]
        self.sae_id = sae_id
        self.url = endpoints["kmes"][sae["kme_id"]]["etsi014_url"] + API
        self.seen_keys = seen_keys
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = endpoints["ca_cert"]
        self.session.cert = cert or (sae["client_cert"], sae["client_key"])

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.session.request(method, self.url + path, timeout=10, **kwargs)
        assert response.headers["Content-Type"] == "application/json"
        body = response.json()
        if isinstance(body, dict):
            self.seen_keys.extend(key["key"] for key in body.get("keys", []))
        return response

    def status(self, slave: str) -> requests.Response:
        return self.request("GET", f"/{slave}/status")

    def enc_keys(self, slave: str, method: str = "GET", **params) -> requests.Response:
        if method == "GET":
            return self.request("GET", f"/{slave}/enc_keys", params=params)
        return self.request("POST", f"/{slave}/enc_keys", json=params)

    def dec_keys(self, master: str, key_ids: list[str], method: str = "POST") -> requests.Response:
        if method == "GET":
            return self.request("GET", f"/{master}/dec_keys", params={"key_ID": key_ids[0]})
        return self.request("POST", f"/{master}/dec_keys", json={"key_IDs": [{"key_ID": k} for k in key_ids]})

    def stored(self, slave: str) -> int:
        response = self.status(slave)
        assert response.status_code == 200, response.text
        return response.json()["stored_key_count"]


def key_ids(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [key["key_ID"] for key in response.json()["keys"]]


def key_bytes(response: requests.Response) -> list[bytes]:
    assert response.status_code == 200, response.text
    return [base64.b64decode(key["key"]) for key in response.json()["keys"]]


def key_in_text(key_b64: str, text: str) -> bool:
    """True if the key appears in ``text`` as base64 (standard or URL-safe) or hex (either case)."""
    raw = base64.b64decode(key_b64)
    return any(form in text for form in (key_b64, raw.hex(), raw.hex().upper(), base64.urlsafe_b64encode(raw).decode()))
