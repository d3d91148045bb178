"""Mutual TLS: only client certificates issued by the simulator CA, still valid, get in."""

from __future__ import annotations

import socket
import ssl

import pytest
import requests


def _status(simulator, cert):
    """A status call from SAE-MAD-1's KME with the given client certificate (or none)."""
    url = simulator.endpoints["kmes"]["KME-MAD-1"]["etsi014_url"] + "/api/v1/keys/SAE-MAD-2/status"
    return requests.get(url, cert=cert, verify=simulator.endpoints["ca_cert"], timeout=5)


def test_valid_client_certificate_is_accepted(default_sim):
    sae = default_sim.endpoints["saes"]["SAE-MAD-1"]
    assert _status(default_sim, (sae["client_cert"], sae["client_key"])).status_code == 200


@pytest.mark.parametrize("material", [None, "rogue_client", "expired_client"])
def test_handshake_fails_without_a_valid_client_certificate(default_sim, material):
    test_material = default_sim.endpoints["test_material"]
    assert test_material["sae_id"] == "SAE-MAD-1"
    cert = (test_material[f"{material}_cert"], test_material[f"{material}_key"]) if material else None
    with pytest.raises(requests.exceptions.ConnectionError):
        _status(default_sim, cert)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_1_2_is_refused(default_sim):
    sae = default_sim.endpoints["saes"]["SAE-MAD-1"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(default_sim.endpoints["ca_cert"])
    context.load_cert_chain(sae["client_cert"], sae["client_key"])
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    port = int(default_sim.endpoints["kmes"]["KME-MAD-1"]["etsi014_url"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLError) as refused:
        context.wrap_socket(raw, server_hostname="127.0.0.1")
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"  # the server's alert, not a client limit


def test_server_certificate_names_the_kme(default_sim):
    url = default_sim.endpoints["kmes"]["KME-MAD-2"]["etsi014_url"]
    port = int(url.rsplit(":", 1)[1])
    sae = default_sim.endpoints["saes"]["SAE-MAD-2"]
    context = ssl.create_default_context(cafile=default_sim.endpoints["ca_cert"])
    context.load_cert_chain(sae["client_cert"], sae["client_key"])
    for hostname in ("127.0.0.1", "localhost"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=hostname) as tls:
            subject = dict(rdn[0] for rdn in tls.getpeercert()["subject"])
            assert subject["commonName"] == "KME-MAD-2"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
