"""QoS of an ETSI GS QKD 004 key stream (OPEN_CONNECT): the defaults, and what a simulated link can meet.

``check_qos`` fills in the defaults and, when the link cannot meet the request, returns the
counter-proposal OPEN_CONNECT answers with status 7 (QOS_NOT_MET); the calls themselves are in
``qkdsim.etsi004``.
"""

from __future__ import annotations

from typing import Any

from .keystore import LinkPool

METADATA_MIMETYPES = ("application/json",)
MAX_TIMEOUT_MS = 60_000            # the longest a GET_KEY may block
MAX_TTL_S = 86_400
QOS_FIELDS = ("key_chunk_size", "max_bps", "min_bps", "jitter", "priority", "timeout", "TTL", "metadata_mimetype")


class QosError(ValueError):
    """The QoS of a request is malformed (not an object, an unknown field, a wrong type)."""


def check_qos(raw: Any, pool: LinkPool) -> tuple[dict, dict | None]:
    """The QoS of a request with defaults filled in, and a counter-proposal (with ``_reasons``) if the link
    cannot meet it. Wrong types or unknown fields are a QosError."""
    link, policy = pool.link, pool.link.policy
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise QosError("qos must be an object")
    unknown = sorted(set(raw) - set(QOS_FIELDS))
    if unknown:
        raise QosError(f"unknown field {unknown[0]!r} in qos (allowed: {', '.join(sorted(QOS_FIELDS))})")
    defaults = {"key_chunk_size": policy.key_size // 8, "max_bps": int(link.key_rate_bps), "min_bps": 0, "jitter": 0,
                "priority": 0, "timeout": 0, "TTL": 3600, "metadata_mimetype": METADATA_MIMETYPES[0]}
    qos = dict(defaults)
    for name, value in raw.items():
        if value is None:
            continue
        if name == "metadata_mimetype":
            if not isinstance(value, str):
                raise QosError("qos.metadata_mimetype must be a string")
        elif not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2 ** 53):
            raise QosError(f"qos.{name} must be a non-negative integer")
        qos[name] = value
    counter, reasons = dict(qos), []
    low, high = policy.min_key_size // 8, policy.max_key_size // 8
    if not low <= qos["key_chunk_size"] <= high:
        counter["key_chunk_size"] = min(max(qos["key_chunk_size"], low), high)
        reasons.append(f"key_chunk_size {qos['key_chunk_size']} bytes is outside {low}..{high} bytes on link "
                       f"{link.link_id}")
    if qos["min_bps"] > link.key_rate_bps:
        counter["min_bps"] = int(link.key_rate_bps)
        reasons.append(f"min_bps {qos['min_bps']} is above the key rate of link {link.link_id} "
                       f"({int(link.key_rate_bps)} bit/s)")
    if qos["max_bps"] < counter["min_bps"]:
        counter["max_bps"] = counter["min_bps"]
        reasons.append(f"max_bps {qos['max_bps']} is below min_bps")
    if qos["timeout"] > MAX_TIMEOUT_MS:
        counter["timeout"] = MAX_TIMEOUT_MS
        reasons.append(f"timeout {qos['timeout']} ms is above the simulator's limit of {MAX_TIMEOUT_MS} ms")
    if not 1 <= qos["TTL"] <= MAX_TTL_S:
        counter["TTL"] = min(max(qos["TTL"], 1), MAX_TTL_S)
        reasons.append(f"TTL {qos['TTL']} s is outside 1..{MAX_TTL_S} s")
    if qos["metadata_mimetype"] not in METADATA_MIMETYPES:
        counter["metadata_mimetype"] = METADATA_MIMETYPES[0]
        reasons.append(f"metadata_mimetype {qos['metadata_mimetype']!r} is not supported "
                       f"(supported: {', '.join(METADATA_MIMETYPES)})")
    if reasons:
        counter["_reasons"] = reasons
        return qos, counter
    return qos, None
