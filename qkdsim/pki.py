"""Certificates of the simulated network: a CA, one server certificate per KME, one client
certificate per SAE (subject CN = SAE ID), and material for negative tests.

Everything is created on first start and reused afterwards. A file set is regenerated only when it
is missing or no longer fits: unreadable, key and certificate differ, not issued by the current CA,
wrong name, wrong SANs, or (nearly) expired. Private keys are written atomically with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .files import write_atomic
from .topology import Topology

CA_LIFETIME = datetime.timedelta(days=3650)
LEAF_LIFETIME = datetime.timedelta(days=825)
RENEW_BEFORE = datetime.timedelta(days=7)
_CLOCK_SKEW = datetime.timedelta(minutes=5)
_ORGANIZATION = "qkdsim"


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key, both PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Paths of all TLS material under one ``pki`` directory."""

    ca: CertPair
    kmes: dict[str, CertPair]
    saes: dict[str, CertPair]
    rogue_ca: CertPair
    rogue_client: CertPair
    expired_client: CertPair
    negative_test_sae: str


@dataclass(frozen=True)
class _LeafSpec:
    common_name: str
    server: bool            # serverAuth with SANs, else clientAuth
    sans: tuple[x509.GeneralName, ...] = ()
    expired: bool = False


def ensure_pki(pki_dir: Path, topology: Topology, host: str) -> Pki:
    """Create or reuse the PKI for ``topology``; KME certificates also name ``host``."""
    sae_id = topology.sites[0].saes[0]
    pki = Pki(
        ca=_pair(pki_dir, "ca"),
        kmes={site.kme_id: _pair(pki_dir / "kme", site.kme_id) for site in topology.sites},
        saes={sae: _pair(pki_dir / "sae", sae) for site in topology.sites for sae in site.saes},
        rogue_ca=_pair(pki_dir / "negative-tests", "rogue-ca"),
        rogue_client=_pair(pki_dir / "negative-tests", "rogue-client"),
        expired_client=_pair(pki_dir / "negative-tests", "expired-client"),
        negative_test_sae=sae_id,
    )
    ca = _ensure_ca(pki.ca, "qkdsim CA")
    sans = _server_sans(host)
    for kme_id, pair in pki.kmes.items():
        _ensure_leaf(pair, ca, _LeafSpec(kme_id, server=True, sans=sans))
    for sae, pair in pki.saes.items():
        _ensure_leaf(pair, ca, _LeafSpec(sae, server=False))
    _ensure_leaf(pki.expired_client, ca, _LeafSpec(sae_id, server=False, expired=True))
    rogue_ca = _ensure_ca(pki.rogue_ca, "qkdsim rogue CA (negative tests only)")
    _ensure_leaf(pki.rogue_client, rogue_ca, _LeafSpec(sae_id, server=False))
    return pki


def _pair(directory: Path, name: str) -> CertPair:
    return CertPair(cert=directory / f"{name}.pem", key=directory / f"{name}.key")


def _server_sans(host: str) -> tuple[x509.GeneralName, ...]:
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    try:
        extra: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        extra = x509.DNSName(host)
    if extra not in names:
        names.append(extra)
    return tuple(names)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _load(pair: CertPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The pair if both files load and the key belongs to the certificate, else None."""
    try:
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if _spki(key.public_key()) != _spki(cert.public_key()):
        return None
    return cert, key


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _ensure_ca(pair: CertPair, common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    loaded = _load(pair)
    if loaded and _common_name(loaded[0]) == common_name and loaded[0].not_valid_after_utc > _now() + RENEW_BEFORE:
        return loaded
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW).not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(pair, cert, key)
    return cert, key


def _ensure_leaf(pair: CertPair, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], spec: _LeafSpec) -> None:
    loaded = _load(pair)
    if loaded and _leaf_fits(loaded[0], issuer[0], spec):
        return
    ca_cert, ca_key = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    if spec.expired:
        not_before, not_after = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    else:
        not_before, not_after = now - _CLOCK_SKEW, now + LEAF_LIFETIME
    usage = ExtendedKeyUsageOID.SERVER_AUTH if spec.server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
                                 x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if spec.sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(spec.sans)), critical=False)
    _write(pair, builder.sign(ca_key, hashes.SHA256()), key)


def _leaf_fits(cert: x509.Certificate, ca_cert: x509.Certificate, spec: _LeafSpec) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    try:
        sans = tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = ()
    now = _now()
    if spec.expired:
        valid = cert.not_valid_after_utc < now
    else:
        valid = cert.not_valid_before_utc <= now and cert.not_valid_after_utc > now + RENEW_BEFORE
    return valid and _common_name(cert) == spec.common_name and set(sans) == set(spec.sans)


def _write(pair: CertPair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """Write key (0600) then certificate (0644), each atomically."""
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    write_atomic(pair.key, key_pem, 0o600)
    write_atomic(pair.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
