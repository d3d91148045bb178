"""PKI: created once, reused, regenerated only where it no longer fits."""

from __future__ import annotations

import datetime
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qkdsim_support import LAB_TOPOLOGY

from qkdsim.pki import ensure_pki
from qkdsim.topology import load_topology


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _snapshot(directory) -> dict:
    return {path: path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.fixture
def pki(tmp_path):
    return ensure_pki(tmp_path / "pki", load_topology(LAB_TOPOLOGY), "127.0.0.1")


def test_layout_names_and_usages(pki):
    ca = _cert(pki.ca.cert)
    assert set(pki.saes) == {"SAE-A", "SAE-B1", "SAE-B2", "SAE-C", "SAE-D", "SAE-E"}
    for sae_id, pair in pki.saes.items():
        cert = _cert(pair.cert)
        cert.verify_directly_issued_by(ca)
        assert _cn(cert) == sae_id
        assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    kme = _cert(pki.kmes["KME-B"].cert)
    kme.verify_directly_issued_by(ca)
    assert _cn(kme) == "KME-B"
    sans = kme.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]


def test_private_keys_are_0600(pki, tmp_path):
    keys = list((tmp_path / "pki").rglob("*.key"))
    assert len(keys) == 1 + 5 + 6 + 3  # CA, KMEs, SAEs, rogue CA + rogue client + expired client
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in keys)
    assert not list((tmp_path / "pki").rglob(".*"))  # no temporary file left behind


def test_negative_test_material(pki):
    ca, rogue_ca = _cert(pki.ca.cert), _cert(pki.rogue_ca.cert)
    expired, rogue = _cert(pki.expired_client.cert), _cert(pki.rogue_client.cert)
    assert pki.negative_test_sae == "SAE-A" and _cn(expired) == _cn(rogue) == "SAE-A"
    expired.verify_directly_issued_by(ca)
    assert expired.not_valid_after_utc < datetime.datetime.now(datetime.UTC)
    rogue.verify_directly_issued_by(rogue_ca)
    with pytest.raises(ValueError):
        rogue.verify_directly_issued_by(ca)


def test_second_run_reuses_everything(pki, tmp_path):
    before = _snapshot(tmp_path / "pki")
    ensure_pki(tmp_path / "pki", load_topology(LAB_TOPOLOGY), "127.0.0.1")
    assert _snapshot(tmp_path / "pki") == before


def test_missing_or_broken_files_are_regenerated_alone(pki, tmp_path):
    before = _snapshot(tmp_path / "pki")
    pki.saes["SAE-B1"].key.unlink()
    pki.kmes["KME-C"].cert.write_text("garbage")
    ensure_pki(tmp_path / "pki", load_topology(LAB_TOPOLOGY), "127.0.0.1")
    after = _snapshot(tmp_path / "pki")
    changed = {path for path in after if after[path] != before.get(path)}
    assert changed == {pki.saes["SAE-B1"].key, pki.saes["SAE-B1"].cert, pki.kmes["KME-C"].key, pki.kmes["KME-C"].cert}


def test_new_host_reissues_server_certificates_only(pki, tmp_path):
    before = _snapshot(tmp_path / "pki")
    pki = ensure_pki(tmp_path / "pki", load_topology(LAB_TOPOLOGY), "kme.example.test")
    after = _snapshot(tmp_path / "pki")
    changed = {path for path in after if after[path] != before[path]}
    assert changed == {path for pair in pki.kmes.values() for path in (pair.cert, pair.key)}
    sans = _cert(pki.kmes["KME-A"].cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kme.example.test" in sans.get_values_for_type(x509.DNSName)


def test_new_ca_reissues_all_leaves(pki, tmp_path):
    pki.ca.key.unlink()
    ensure_pki(tmp_path / "pki", load_topology(LAB_TOPOLOGY), "127.0.0.1")
    ca = _cert(pki.ca.cert)
    for pair in [*pki.kmes.values(), *pki.saes.values(), pki.expired_client]:
        _cert(pair.cert).verify_directly_issued_by(ca)
