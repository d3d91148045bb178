"""Link key streams with a controlled clock: refill, exhaustion, exactly-once delivery."""

from __future__ import annotations

import pytest

from qkdsim_support import LAB_TOPOLOGY

from qkdsim.keystore import DeliveryRefused, KeyStore, KeyUnavailable
from qkdsim.topology import load_topology


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(clock):
    return KeyStore(load_topology(LAB_TOPOLOGY), clock=clock, max_waiting=10)


def test_pool_refills_lazily_at_key_rate_up_to_capacity(store, clock):
    pool = store.pool("KME-A", "KME-C")  # 2560 bit/s, 2048 bits, starts empty
    assert pool.available_bits() == 0
    clock.now += 0.5
    assert pool.available_bits() == 1280
    pool.take(1000)
    assert pool.available_bits() == 280
    clock.now += 10
    assert pool.available_bits() == 2048


def test_not_enough_key_consumes_nothing(store):
    pool = store.pool("KME-D", "KME-A")
    with pytest.raises(KeyUnavailable, match="512 available") as raised:
        store.issue(pool, "SAE-A", "SAE-D", number=5, size=128)
    assert raised.value.details == [{"link_id": "A--D", "requested_bits": 640, "available_bits": 512}]
    assert pool.available_bits() == 512


def test_alarmed_link_has_no_key(store, clock):
    pool = store.pool("KME-A", "KME-E")
    assert pool.available_bits() == 0
    with pytest.raises(KeyUnavailable, match="alarmed"):
        pool.take(1)


def test_no_link_between_unlinked_kmes(store):
    assert store.pool("KME-B", "KME-C") is None


def test_keys_are_fresh_and_never_in_repr(store):
    keys = store.issue(store.pool("KME-A", "KME-B"), "SAE-A", "SAE-B1", number=3, size=64)
    assert [len(key.material) for key in keys] == [8, 8, 8]
    assert len({key.material for key in keys}) == len({key.key_id for key in keys}) == 3
    assert all(key.material.hex() not in repr(key) and "material" not in repr(key) for key in keys)


def test_delivery_is_exactly_once_and_all_or_nothing(store):
    keys = store.issue(store.pool("KME-A", "KME-B"), "SAE-A", "SAE-B1", number=2, size=256)
    ids = [key.key_id for key in keys]
    with pytest.raises(DeliveryRefused) as refused:
        store.deliver("SAE-B2", "SAE-A", ids)
    assert refused.value.unauthorized
    with pytest.raises(DeliveryRefused) as refused:
        store.deliver("SAE-B1", "SAE-A", ids + ["nope"])
    assert not refused.value.unauthorized and [f["key_ID"] for f in refused.value.failures] == ["nope"]
    assert store.deliver("SAE-B1", "SAE-A", ids) == keys
    with pytest.raises(DeliveryRefused):
        store.deliver("SAE-B1", "SAE-A", ids[:1])


def test_oldest_waiting_keys_are_discarded_beyond_the_limit(store):
    pool = store.pool("KME-A", "KME-B")
    first = store.issue(pool, "SAE-A", "SAE-B1", number=4, size=64)
    store.issue(pool, "SAE-A", "SAE-B1", number=8, size=64)
    with pytest.raises(DeliveryRefused):
        store.deliver("SAE-B1", "SAE-A", [first[0].key_id])
    assert store.deliver("SAE-B1", "SAE-A", [first[2].key_id]) == [first[2]]
