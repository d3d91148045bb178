"""ETSI GS QKD 014 v1.1.1 key delivery API of one simulated KME.

``Etsi014Api`` holds the rules (who may ask what, limits, key delivery) independent of HTTP;
``Etsi014Handler`` maps the REST calls under ``/api/v1/keys/`` onto it. The calling SAE is the
subject CN of its TLS client certificate.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote

from .httpd import HttpError, JsonRequestHandler
from .keystore import DeliveryRefused, Key, KeyStore, KeyUnavailable, LinkPool
from .topology import Topology

API_PREFIX = "/api/v1/keys/"
_ROUTE = re.compile(r"/api/v1/keys/(?P<sae>[^/]+)/(?P<operation>status|enc_keys|dec_keys)")
_METHODS = {"status": ("GET",), "enc_keys": ("GET", "POST"), "dec_keys": ("GET", "POST")}
_DECIMAL = re.compile(r"[0-9]{1,9}")
_KEY_REQUEST_FIELDS = {"number", "size", "additional_slave_SAE_IDs", "extension_mandatory", "extension_optional"}


@dataclass(frozen=True)
class KeyRequest:
    """A parsed Key request; None means "use the default"."""

    number: int | None = None
    size: int | None = None
    additional_slave_sae_ids: tuple[str, ...] = ()
    extension_mandatory: list | dict | None = None


@dataclass(frozen=True)
class Pairing:
    """A checked (calling SAE, peer SAE) pair and the QKD link between their KMEs."""

    caller: str
    peer: str
    peer_kme: str
    pool: LinkPool


class Etsi014Api:
    """The key delivery rules of one KME."""

    def __init__(self, kme_id: str, topology: Topology, keystore: KeyStore):
        self.kme_id = kme_id
        self.keystore = keystore
        self._sae_sites = {sae: site for site in topology.sites for sae in site.saes}

    def pairing(self, caller: str | None, peer: str, peer_role: str) -> Pairing:
        """Check that ``caller`` may ask this KME about ``peer`` (its slave or master SAE)."""
        caller_site = self._sae_sites.get(caller)
        if caller_site is None:
            raise HttpError(401, f"client certificate CN {caller!r} is not a known SAE",
                            [{"client_certificate_CN": caller}])
        if caller_site.kme_id != self.kme_id:
            raise HttpError(401, f"SAE {caller} is not attached to {self.kme_id} (its KME is {caller_site.kme_id})",
                            [{"SAE_ID": caller, "KME_ID": self.kme_id}])
        if peer == caller:
            raise HttpError(400, f"the {peer_role} SAE must differ from the calling SAE {caller}",
                            [{f"{peer_role}_SAE_ID": peer}])
        peer_site = self._sae_sites.get(peer)
        if peer_site is None:
            raise HttpError(400, f"unknown {peer_role} SAE {peer!r}", [{f"{peer_role}_SAE_ID": peer}])
        if peer_site.kme_id == self.kme_id:
            raise HttpError(400, f"{peer_role} SAE {peer} is attached to {self.kme_id} too; keys are delivered "
                                 "only across a QKD link", [{f"{peer_role}_SAE_ID": peer}])
        pool = self.keystore.pool(self.kme_id, peer_site.kme_id)
        if pool is None:
            raise HttpError(400, f"no QKD link between {self.kme_id} and {peer_site.kme_id} "
                                 f"(the KME of {peer_role} SAE {peer})",
                            [{f"{peer_role}_SAE_ID": peer, "source_KME_ID": self.kme_id,
                              "target_KME_ID": peer_site.kme_id}])
        return Pairing(caller=caller, peer=peer, peer_kme=peer_site.kme_id, pool=pool)

    def status(self, pairing: Pairing) -> dict:
        """Status of the link, as seen by master ``pairing.caller`` for slave ``pairing.peer``."""
        link = pairing.pool.link
        policy = link.policy
        return {
            "source_KME_ID": self.kme_id,
            "target_KME_ID": pairing.peer_kme,
            "master_SAE_ID": pairing.caller,
            "slave_SAE_ID": pairing.peer,
            "key_size": policy.key_size,
            "stored_key_count": pairing.pool.available_bits() // policy.key_size,
            "max_key_count": link.pool_capacity_bits // policy.key_size,
            "max_key_per_request": policy.max_key_per_request,
            "max_key_size": policy.max_key_size,
            "min_key_size": policy.min_key_size,
            "max_SAE_ID_count": 0,
        }

    def enc_keys(self, pairing: Pairing, request: KeyRequest) -> dict:
        """New keys for master ``pairing.caller`` and slave ``pairing.peer``."""
        policy = pairing.pool.link.policy
        number = 1 if request.number is None else request.number
        size = policy.key_size if request.size is None else request.size
        if not 1 <= number <= policy.max_key_per_request:
            raise _bad_parameter("number", number, f"must be between 1 and max_key_per_request "
                                                   f"({policy.max_key_per_request})")
        if size % 8 or not policy.min_key_size <= size <= policy.max_key_size:
            raise _bad_parameter("size", size, f"must be a multiple of 8 between min_key_size ({policy.min_key_size})"
                                               f" and max_key_size ({policy.max_key_size})")
        if request.additional_slave_sae_ids:
            raise _bad_parameter("additional_slave_SAE_IDs", list(request.additional_slave_sae_ids),
                                 "key multicast is not supported (max_SAE_ID_count is 0)")
        if request.extension_mandatory:
            raise _bad_parameter("extension_mandatory", _extension_names(request.extension_mandatory),
                                 "unsupported mandatory extension")
        try:
            keys = self.keystore.issue(pairing.pool, master=pairing.caller, slave=pairing.peer,
                                       number=number, size=size)
        except KeyUnavailable as exc:
            raise HttpError(503, str(exc), exc.details) from None
        return _key_container(keys)

    def dec_keys(self, pairing: Pairing, key_ids: list[str]) -> dict:
        """The keys ``key_ids`` that master ``pairing.peer`` obtained for slave ``pairing.caller``."""
        limit = pairing.pool.link.policy.max_key_per_request
        if len(key_ids) > limit:
            raise _bad_parameter("key_IDs", len(key_ids), f"at most max_key_per_request ({limit}) key_IDs per request")
        try:
            keys = self.keystore.deliver(slave=pairing.caller, master=pairing.peer, key_ids=key_ids)
        except DeliveryRefused as exc:
            if exc.unauthorized:
                raise HttpError(401, f"SAE {pairing.caller} may not receive some of the requested keys; "
                                     "nothing was delivered", exc.failures) from None
            raise HttpError(400, "unknown or already delivered key_ID; nothing was delivered", exc.failures) from None
        return _key_container(keys)


class Etsi014Handler(JsonRequestHandler):
    """REST mapping of ETSI GS QKD 014; ``server.context`` is the KME's ``Etsi014Api``."""

    def route(self, method: str, url: SplitResult, body: bytes) -> tuple[dict, int]:
        match = _ROUTE.fullmatch(url.path)
        if not match:
            raise HttpError(404, f"no resource {url.path}; the ETSI GS QKD 014 API lives under {API_PREFIX}"
                                 "{SAE_ID}/status|enc_keys|dec_keys")
        operation = match["operation"]
        if method not in _METHODS[operation]:
            allowed = ", ".join(_METHODS[operation])
            raise HttpError(405, f"method {method} is not allowed on {operation} (allowed: {allowed})",
                            headers={"Allow": allowed})
        if method == "POST" and url.query:
            raise HttpError(400, "POST takes its parameters in the JSON body, not in the query string")
        api: Etsi014Api = self.server.context
        pairing = api.pairing(self.peer_cn, unquote(match["sae"]), "master" if operation == "dec_keys" else "slave")
        if operation == "status":
            _query(url.query, set())
            return api.status(pairing), 0
        if operation == "enc_keys":
            request = parse_key_request_query(url.query) if method == "GET" else parse_key_request_body(body)
            container = api.enc_keys(pairing, request)
        else:
            key_ids = parse_key_ids_query(url.query) if method == "GET" else parse_key_ids_body(body)
            container = api.dec_keys(pairing, key_ids)
        return container, len(container["keys"])


def parse_key_request_query(query: str) -> KeyRequest:
    """``GET enc_keys?number=&size=``."""
    params = _query(query, {"number", "size"})
    return KeyRequest(number=_integer_param(params, "number"), size=_integer_param(params, "size"))


def parse_key_request_body(body: bytes) -> KeyRequest:
    """``POST enc_keys`` with a Key request JSON object."""
    document = _json_object(body, _KEY_REQUEST_FIELDS, "Key request")
    additional = _field(document, "additional_slave_SAE_IDs", list) or []
    if not all(isinstance(sae, str) for sae in additional):
        raise _bad_parameter("additional_slave_SAE_IDs", additional, "must be an array of strings")
    _field(document, "extension_optional", (list, dict))
    return KeyRequest(number=_field(document, "number", int), size=_field(document, "size", int),
                      additional_slave_sae_ids=tuple(additional),
                      extension_mandatory=_field(document, "extension_mandatory", (list, dict)))


def parse_key_ids_query(query: str) -> list[str]:
    """``GET dec_keys?key_ID=``: exactly one key_ID."""
    params = _query(query, {"key_ID"})
    if not params.get("key_ID"):
        raise _bad_parameter("key_ID", None, "is required")
    return [params["key_ID"]]


def parse_key_ids_body(body: bytes) -> list[str]:
    """``POST dec_keys`` with a Key IDs JSON object."""
    document = _json_object(body, {"key_IDs", "key_IDs_extension"}, "Key IDs")
    items = _field(document, "key_IDs", list)
    if not items:
        raise _bad_parameter("key_IDs", items, "must be a non-empty array")
    key_ids = []
    for index, item in enumerate(items):
        if not (isinstance(item, dict) and isinstance(item.get("key_ID"), str)
                and set(item) <= {"key_ID", "key_ID_extension"}):
            raise _bad_parameter(f"key_IDs[{index}]", item,
                                 'must be an object {"key_ID": string, "key_ID_extension"?: object}')
        key_ids.append(item["key_ID"])
    return key_ids


def _key_container(keys: list[Key]) -> dict:
    return {"keys": [{"key_ID": key.key_id, "key": base64.b64encode(key.material).decode("ascii")} for key in keys]}


def _bad_parameter(name: str, value: Any, reason: str) -> HttpError:
    return HttpError(400, f"{name}: {reason}", [{"parameter": name, "value": value, "reason": reason}])


def _query(query: str, allowed: set[str]) -> dict[str, str]:
    """Query parameters; unknown or repeated ones are an error."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            expected = ", ".join(sorted(allowed)) or "none"
            raise _bad_parameter(name, None, f"unknown query parameter (expected: {expected})")
        if name in params:
            raise _bad_parameter(name, None, "query parameter given more than once")
        params[name] = value
    return params


def _integer_param(params: dict[str, str], name: str) -> int | None:
    if name not in params:
        return None
    if not _DECIMAL.fullmatch(params[name]):
        raise _bad_parameter(name, params[name], "must be a decimal integer")
    return int(params[name])


def _json_object(body: bytes, allowed: set[str], what: str) -> dict:
    try:
        document = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        raise HttpError(400, f"request body is not valid JSON (expected a {what} object)") from None
    if not isinstance(document, dict):
        raise HttpError(400, f"request body must be a JSON object ({what})")
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise _bad_parameter(unknown[0], None, f"unknown field in {what} (allowed: {', '.join(sorted(allowed))})")
    return document


def _field(document: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    """Field ``name`` of a JSON object, None if absent or null; wrong type is an error."""
    value = document.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        expected = {int: "an integer", list: "an array", (list, dict): "an array or an object"}[kind]
        raise _bad_parameter(name, value, f"must be {expected}")
    return value


def _extension_names(extensions: list | dict) -> list[str]:
    if isinstance(extensions, dict):
        return sorted(extensions)
    return sorted({str(name) for item in extensions for name in (item if isinstance(item, dict) else [item])})
