"""Key streams of the QKD links.

Each link has one pool of secret bits shared by its two KMEs, refilled lazily at the link's key
rate. A key taken from the pool for master SAE M and slave SAE S waits in the store until S
collects it (once) from its own KME. HTTP-agnostic; thread-safe: one lock per link pool, one lock
for the keys waiting for their slave.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .topology import Link, Topology

MAX_WAITING_KEYS = 1 << 17
"""Keys issued but not yet collected, over all links; beyond this the oldest are discarded."""


@dataclass(frozen=True)
class Key:
    """One key; ``material`` never appears in repr()."""

    key_id: str
    material: bytes = field(repr=False)


def _is_addressed(addressee: str | frozenset[str], sae: str) -> bool:
    return sae in addressee if isinstance(addressee, frozenset) else sae == addressee


def _describe(addressee: str | frozenset[str]) -> str:
    return f"one of the SAEs {', '.join(sorted(addressee))}" if isinstance(addressee, frozenset) else f"SAE {addressee}"


@dataclass(frozen=True)
class _WaitingKey:
    key: Key
    master: str
    slave: str | frozenset[str]


class KeyUnavailable(Exception):
    """The link cannot supply the requested key now (alarm or not enough key in the pool)."""

    def __init__(self, message: str, details: list[dict]):
        super().__init__(message)
        self.details = details


class DeliveryRefused(Exception):
    """At least one requested key_ID cannot be delivered; nothing was delivered."""

    def __init__(self, failures: list[dict], unauthorized: bool):
        super().__init__("key delivery refused")
        self.failures = failures            # [{"key_ID": ..., "reason": ...}]
        self.unauthorized = unauthorized    # a key exists but is not for this caller


class LinkPool:
    """The secret-bit pool of one link, refilled at ``key_rate_bps`` up to its capacity."""

    def __init__(self, link: Link, clock: Callable[[], float] = time.monotonic):
        self.link = link
        self._clock = clock
        self._lock = threading.Lock()
        self._bits = float(link.pool_capacity_bits * link.initial_fill)
        self._stamp = clock()
        self.qber = link.qber          # the link's QBER now; the control channel may change it
        self.held_empty = False        # drained and kept empty by the control channel

    @property
    def alarmed(self) -> bool:
        """True while the QBER is above the link's threshold: the link distils no key."""
        return self.qber > self.link.policy.qber_threshold

    def _refill(self) -> None:
        now = self._clock()
        if not self.held_empty:
            self._bits = min(float(self.link.pool_capacity_bits),
                             self._bits + self.link.key_rate_bps * (now - self._stamp))
        self._stamp = now

    def drain(self, hold: bool = False) -> int:
        """Empty the pool (it refills at the key rate, or stays empty while ``hold``); returns the bits dropped."""
        with self._lock:
            self._refill()
            dropped, self._bits = int(self._bits), 0.0
            self.held_empty = hold
            return dropped

    def release(self) -> None:
        """End a hold: the pool refills at the key rate from now on."""
        with self._lock:
            self._refill()
            self.held_empty = False

    def fill(self) -> None:
        """Fill the pool to its capacity at once (and end any hold)."""
        with self._lock:
            self._bits, self._stamp, self.held_empty = float(self.link.pool_capacity_bits), self._clock(), False

    def available_bits(self) -> int:
        """Bits the link can deliver now (0 while alarmed)."""
        if self.alarmed:
            return 0
        with self._lock:
            self._refill()
            return int(self._bits)

    def take(self, bits: int) -> None:
        """Consume ``bits`` from the pool, or raise KeyUnavailable and consume nothing."""
        link, qber = self.link, self.qber
        if qber > link.policy.qber_threshold:
            raise KeyUnavailable(
                f"QKD link {link.link_id} is alarmed: QBER {qber} is above the threshold "
                f"{link.policy.qber_threshold}; no key is distilled",
                [{"link_id": link.link_id, "qber": qber, "qber_threshold": link.policy.qber_threshold}])
        with self._lock:
            self._refill()
            available = int(self._bits)
            if bits > available:
                held = " (held empty)" if self.held_empty else ""
                raise KeyUnavailable(
                    f"not enough key on QKD link {link.link_id}{held}: {bits} bits requested, {available} available",
                    [{"link_id": link.link_id, "requested_bits": bits, "available_bits": available}])
            self._bits -= bits


class KeyStore:
    """All link pools of a topology and the keys waiting for their slave SAE."""

    def __init__(self, topology: Topology, clock: Callable[[], float] = time.monotonic,
                 max_waiting: int = MAX_WAITING_KEYS):
        self._pools = {frozenset(topology.link_kmes(link)): LinkPool(link, clock) for link in topology.links}
        self._waiting: OrderedDict[str, _WaitingKey] = OrderedDict()
        self._waiting_lock = threading.Lock()
        self._max_waiting = max_waiting

    def pools(self) -> list[LinkPool]:
        """Every link pool, in topology order."""
        return list(self._pools.values())

    def pool(self, kme_a: str, kme_b: str) -> LinkPool | None:
        """The pool of the QKD link between two KMEs, None if they share no link."""
        return self._pools.get(frozenset((kme_a, kme_b)))

    def issue(self, pool: LinkPool, master: str, slave: str | frozenset[str], number: int, size: int) -> list[Key]:
        """Take ``number`` keys of ``size`` bits for master and slave (an SAE ID or a set of SAE IDs, any of which
        may collect each key once); KeyUnavailable if the link cannot."""
        pool.take(number * size)
        length = size // 8
        material = os.urandom(number * length)
        ids = os.urandom(16 * number)
        keys = [Key(str(uuid.UUID(bytes=ids[16 * i:16 * i + 16], version=4)), material[length * i:length * (i + 1)])
                for i in range(number)]
        with self._waiting_lock:
            for key in keys:
                self._waiting[key.key_id] = _WaitingKey(key, master, slave)
            while len(self._waiting) > self._max_waiting:
                self._waiting.popitem(last=False)
        return keys

    def deliver(self, slave: str, master: str | frozenset[str], key_ids: list[str]) -> list[Key]:
        """Hand the keys ``key_ids`` to ``slave``, all or none; they must come from ``master`` (an SAE ID, or a set
        of SAE IDs any of which may have issued them). Whatever interface issued a key, it leaves the store once."""
        failures = []
        unauthorized = False
        seen: set[str] = set()
        with self._waiting_lock:
            for key_id in key_ids:
                waiting = self._waiting.get(key_id)
                if key_id in seen:
                    failures.append({"key_ID": key_id, "reason": "key_ID requested more than once"})
                elif waiting is None:
                    failures.append({"key_ID": key_id, "reason": "unknown or already delivered key_ID"})
                elif not _is_addressed(waiting.slave, slave):
                    unauthorized = True
                    failures.append({"key_ID": key_id, "reason": f"key_ID is not addressed to SAE {slave}"})
                elif not _is_addressed(master, waiting.master):
                    unauthorized = True
                    failures.append({"key_ID": key_id,
                                     "reason": f"key_ID was not issued to master {_describe(master)}"})
                seen.add(key_id)
            if failures:
                raise DeliveryRefused(failures, unauthorized)
            return [self._waiting.pop(key_id).key for key_id in key_ids]

    def waiting(self, key_id: str) -> tuple[str, str | frozenset[str]] | None:
        """(master, slave) of a key that waits for its slave, None if there is none with ``key_id``."""
        with self._waiting_lock:
            entry = self._waiting.get(key_id)
        return None if entry is None else (entry.master, entry.slave)
