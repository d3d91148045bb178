"""Cisco SKIP (Secure Key Integration Protocol, draft-cisco-skip) of one simulated KME.

``SkipApi`` holds the rules independent of HTTP; ``SkipHandler`` maps the four GET resources
onto it:

* ``GET /capabilities``                       -> {entropy, key, algorithm, localSystemID, remoteSystemID}
* ``GET /key?remoteSystemID=<id>[&size=<bits>]`` -> {keyId, key}   (a new key for the remote system)
* ``GET /key/{keyId}?remoteSystemID=<id>``       -> {keyId, key}   (the remote system's key, once)
* ``GET /entropy[?minentropy=<bits>]``          -> {randomStr, minentropy}

Keys, key IDs and random strings are hex. SKIP names systems, not applications: a system ID is
a KME ID. A key requested at KME A for remote system B is addressed to every SAE attached to B
and comes out of the same link key stream (``KeyStore``) as ETSI GS QKD 014, so a key delivered
through one interface is never delivered through another (key IDs are the 014 key_IDs written
as 32 hex digits; either form is accepted).

Transport: TLS 1.2 with the PSK cipher suites IOS-XE uses (PSK and DHE-PSK, AES-256, SHA-384),
the caller named by its PSK identity (an SAE ID; one PSK per SAE, kept 0600 in the state
directory), or mutual TLS with the simulator's certificates (TLS 1.2 or 1.3), the caller named
by its certificate CN - both on the same port. Python 3.11's ssl has no PSK callbacks:
``sslpsk3`` adds them (see docs/design.md).
"""

from __future__ import annotations

import os
import re
import secrets
import ssl
import threading
import uuid
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, unquote

from .files import write_atomic
from .httpd import HttpError, JsonRequestHandler
from .keystore import DeliveryRefused, KeyStore, KeyUnavailable, LinkPool
from .topology import Topology

try:
    from sslpsk3 import SSLPSKContext
except ImportError as _exc:  # pragma: no cover - requirements.txt installs it
    SSLPSKContext = None
    _SSLPSK_IMPORT_ERROR: ImportError | None = _exc
else:
    _SSLPSK_IMPORT_ERROR = None

INTERFACE = "skip"
PSK_CIPHERS = ("DHE-PSK-AES256-GCM-SHA384:PSK-AES256-GCM-SHA384:"
               "DHE-PSK-AES256-CBC-SHA384:PSK-AES256-CBC-SHA384")
"""TLS 1.2 PSK cipher suites as IOS-XE's skip-client offers them (AES-256, SHA-384)."""
MTLS_CIPHERS = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
PSK_BYTES = 32
PSK_IDENTITY_HINT = "qkdsim-skip"
ALGORITHM = "QKD"
DEFAULT_MINENTROPY = 256
MAX_MINENTROPY = 8192
RESOURCES = ("/capabilities", "/key", "/key/{keyId}", "/entropy")

# RFC 7919 ffdhe2048, for the DHE-PSK suites (a fixed, public, well-known group).
_FFDHE2048_PEM = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""
_KEY_ID = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DECIMAL = re.compile(r"[0-9]{1,9}")
_KEY_BY_ID = re.compile(r"/key/(?P<key_id>[^/]+)")
_handshake = threading.local()  # the PSK identity of the handshake running in this thread


class SkipTlsUnavailable(RuntimeError):
    """sslpsk3 is missing: the simulator cannot serve TLS-PSK."""


def ensure_psks(directory: Path, saes: list[str]) -> dict[str, Path]:
    """One PSK per SAE in ``directory`` (hex, mode 0600), made once and reused; returns SAE -> file."""
    files = {}
    for sae in saes:
        path = directory / f"{sae}.psk"
        if not _valid_psk_file(path):
            write_atomic(path, secrets.token_hex(PSK_BYTES).encode() + b"\n", 0o600)
        files[sae] = path
    return files


def _valid_psk_file(path: Path) -> bool:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False
    return len(text) == 2 * PSK_BYTES and all(c in "0123456789abcdef" for c in text)


def read_psk(path: Path) -> bytes:
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def skip_tls_context(psk_files: dict[str, Path], cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """Server context: TLS 1.2 PSK (identity = SAE ID) or mutual TLS with a certificate from ``client_ca``."""
    if SSLPSKContext is None:
        raise SkipTlsUnavailable(f"SKIP needs TLS-PSK, which needs the sslpsk3 package: {_SSLPSK_IMPORT_ERROR}")
    psks = {sae: read_psk(path) for sae, path in psk_files.items()}

    def psk_for(identity: str | None) -> bytes:
        _handshake.identity = identity
        return psks.get(identity or "", b"")  # empty: OpenSSL answers "unknown psk identity"

    context = SSLPSKContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(f"{PSK_CIPHERS}:{MTLS_CIPHERS}")
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=client_ca)
    context.verify_mode = ssl.CERT_REQUIRED  # asked only in certificate suites; PSK suites send no CertificateRequest
    dh_file = Path(cert).parent / "ffdhe2048.pem"
    if not dh_file.exists():
        write_atomic(dh_file, _FFDHE2048_PEM, 0o644)
    context.load_dh_params(str(dh_file))
    context.set_psk_server_callback(psk_for, PSK_IDENTITY_HINT)
    return context


def skip_key_id(key_id: str) -> str:
    """The SKIP form (32 lower-case hex digits) of a key store key ID (a UUID)."""
    return uuid.UUID(key_id).hex


class SkipApi:
    """The SKIP rules of one KME: who may ask, limits, key delivery."""

    def __init__(self, kme_id: str, topology: Topology, keystore: KeyStore):
        self.kme_id = kme_id
        self.keystore = keystore
        self._sae_sites = {sae: site for site in topology.sites for sae in site.saes}
        self._kme_saes = {site.kme_id: frozenset(site.saes) for site in topology.sites}
        self._remote = {kme: pool for kme in self._kme_saes if kme != kme_id
                        for pool in [keystore.pool(kme_id, kme)] if pool is not None}

    def caller(self, identity: str | None) -> str:
        """The SAE behind a PSK identity or certificate CN; it must be attached to this KME."""
        site = self._sae_sites.get(identity)
        if site is None:
            raise HttpError(401, f"caller {identity!r} is not a known SAE", [{"identity": identity}])
        if site.kme_id != self.kme_id:
            raise HttpError(401, f"SAE {identity} is not attached to {self.kme_id} (its KME is {site.kme_id})",
                            [{"identity": identity, "localSystemID": self.kme_id}])
        return identity

    def capabilities(self) -> dict:
        return {"entropy": True, "key": True, "algorithm": ALGORITHM, "localSystemID": self.kme_id,
                "remoteSystemID": sorted(self._remote)}

    def remote_pool(self, remote_system_id: str | None) -> LinkPool:
        if not remote_system_id:
            raise _bad_parameter("remoteSystemID", remote_system_id, "is required")
        pool = self._remote.get(remote_system_id)
        if pool is None:
            raise HttpError(404, f"unknown remoteSystemID {remote_system_id!r}: {self.kme_id} has no QKD link to it "
                                 f"(known: {', '.join(sorted(self._remote)) or 'none'})",
                            [{"remoteSystemID": remote_system_id}])
        return pool

    def new_key(self, caller: str, remote_system_id: str | None, size: int | None) -> dict:
        """A new key for ``caller`` and the remote system (any SAE attached to it may collect it once)."""
        pool = self.remote_pool(remote_system_id)
        policy = pool.link.policy
        size = policy.key_size if size is None else size
        if size % 8 or not policy.min_key_size <= size <= policy.max_key_size:
            raise _bad_parameter("size", size, f"must be a multiple of 8 between {policy.min_key_size} and "
                                               f"{policy.max_key_size} bits")
        try:
            (key,) = self.keystore.issue(pool, master=caller, slave=self._kme_saes[remote_system_id],
                                         number=1, size=size)
        except KeyUnavailable as exc:
            raise HttpError(503, str(exc), exc.details) from None
        return {"keyId": skip_key_id(key.key_id), "key": key.material.hex()}

    def key_by_id(self, caller: str, key_id: str, remote_system_id: str | None) -> dict:
        """The key ``key_id`` that an SAE of the remote system requested for this system, once."""
        self.remote_pool(remote_system_id)
        if not _KEY_ID.fullmatch(key_id):
            raise _bad_parameter("keyId", key_id, "must be 32 hex digits")
        store_id = str(uuid.UUID(key_id))
        try:
            (key,) = self.keystore.deliver(slave=caller, master=self._kme_saes[remote_system_id], key_ids=[store_id])
        except DeliveryRefused as exc:
            reason = exc.failures[0]["reason"]
            if exc.unauthorized:
                raise HttpError(401, f"keyId {key_id}: {reason}; nothing was delivered",
                                [{"keyId": key_id, "reason": reason}]) from None
            raise HttpError(404, f"keyId {key_id}: unknown or already delivered", [{"keyId": key_id}]) from None
        return {"keyId": skip_key_id(key.key_id), "key": key.material.hex()}

    @staticmethod
    def entropy(minentropy: int | None) -> dict:
        bits = DEFAULT_MINENTROPY if minentropy is None else minentropy
        if bits % 8 or not 8 <= bits <= MAX_MINENTROPY:
            raise _bad_parameter("minentropy", bits, f"must be a multiple of 8 between 8 and {MAX_MINENTROPY} bits")
        return {"randomStr": os.urandom(bits // 8).hex(), "minentropy": bits}


class SkipHandler(JsonRequestHandler):
    """HTTP mapping of SKIP; ``server.context`` is the KME's ``SkipApi``."""

    def setup(self) -> None:
        super().setup()
        if self.peer_cn is None:  # no certificate: a PSK suite; the handshake ran in this thread
            self.peer_cn = getattr(_handshake, "identity", None)

    def route(self, method: str, url: SplitResult, body: bytes) -> tuple[dict, int]:
        path = url.path.rstrip("/") or "/"
        match = _KEY_BY_ID.fullmatch(path)
        if path not in ("/capabilities", "/key", "/entropy") and not match:
            raise HttpError(404, f"no resource {url.path}; SKIP serves {', '.join(RESOURCES)}")
        if method != "GET":
            raise HttpError(405, f"method {method} is not allowed: SKIP resources take GET only",
                            headers={"Allow": "GET"})
        api: SkipApi = self.server.context
        caller = api.caller(self.peer_cn)
        if path == "/capabilities":
            _query(url.query, set())
            return api.capabilities(), 0
        if path == "/entropy":
            params = _query(url.query, {"minentropy"})
            return api.entropy(_integer(params, "minentropy")), 0
        if match:
            params = _query(url.query, {"remoteSystemID"})
            return api.key_by_id(caller, unquote(match["key_id"]), params.get("remoteSystemID")), 1
        params = _query(url.query, {"remoteSystemID", "size"})
        return api.new_key(caller, params.get("remoteSystemID"), _integer(params, "size")), 1


def _bad_parameter(name: str, value: object, reason: str) -> HttpError:
    return HttpError(400, f"{name}: {reason}", [{"parameter": name, "value": value, "reason": reason}])


def _query(query: str, allowed: set[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            raise _bad_parameter(name, None, f"unknown query parameter (expected: {', '.join(sorted(allowed)) or 'none'})")
        if name in params:
            raise _bad_parameter(name, None, "query parameter given more than once")
        params[name] = value
    return params


def _integer(params: dict[str, str], name: str) -> int | None:
    if name not in params:
        return None
    if not _DECIMAL.fullmatch(params[name]):
        raise _bad_parameter(name, params[name], "must be a decimal integer")
    return int(params[name])
