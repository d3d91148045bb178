# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""LinkKeyStore: the per-link lock (threads and processes), the decision under it, and the check of
every stored key against its KCV and size."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import json
import multiprocessing
import os
import threading
import time

import pytest

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_key_store import (
    LinkKeyStore,
    LinkKeyStoreError,
    read_link_key,
    stored_link_keys,
    write_link_key,
)

WANTED = dict(link_id='A--B', master_id='SAE-A', slave_id='SAE-B', policy='qkd+pqc', kem_algorithm='ML-KEM-768',
              hash_algorithm='sha256', size=256)


def new_record(number, **extra):
    """A record as the lookup makes it, with a key of 32 bytes of ``number`` and its true KCV."""
    key = bytes([number]) * 32
    return dict(WANTED, key=key.hex(), kcv=key_check_value(key), ppk_id='qkf-%016x' % number, created=int(time.time()),
                generation=1, degraded=False, alarms=[], **extra)


class Keyer:
    """make_record for key_link: counts its calls; each call is slow, as a KME round trip is."""

    def __init__(self, delay=0.2, link_id='A--B'):
        self.calls, self.delay, self.lock, self.link_id = 0, delay, threading.Lock(), link_id

    def __call__(self):
        with self.lock:
            self.calls += 1
            number = self.calls
        time.sleep(self.delay)
        return new_record(number, link_id=self.link_id)


def in_threads(count, function):
    results, threads = [None] * count, []
    for index in range(count):
        threads.append(threading.Thread(target=lambda i=index: results.__setitem__(i, function())))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_threads_keying_one_link_key_it_once_the_others_wait_and_reuse(tmp_path):
    keyer = Keyer()
    store = LinkKeyStore(str(tmp_path))
    results = in_threads(6, lambda: store.key_link(WANTED, keyer, planned=None))
    assert keyer.calls == 1
    assert sorted(reused for record, reused in results) == [False] + [True] * 5
    assert len(set(record['ppk_id'] for record, reused in results)) == 1
    assert read_link_key(store.path('A--B'))['generation'] == 1


def test_parallel_rotations_planned_on_one_key_rotate_it_once(tmp_path):
    store = LinkKeyStore(str(tmp_path))
    write_link_key(store.path('A--B'), new_record(200))
    planned = store.read('A--B')
    keyer = Keyer()
    results = in_threads(4, lambda: store.key_link(WANTED, keyer, rotate=True, planned=planned))
    assert keyer.calls == 1, 'the runs that waited found the rotation done and reused its key'
    stored = store.read('A--B')
    assert stored['generation'] == 2 and stored['previous_ppk_id'] == planned['ppk_id']
    assert read_link_key(str(tmp_path / 'A--B.previous.json'))['ppk_id'] == planned['ppk_id']
    assert [reused for record, reused in results].count(False) == 1


def test_a_rotation_planned_on_the_key_in_the_store_rotates(tmp_path):
    store = LinkKeyStore(str(tmp_path))
    write_link_key(store.path('A--B'), new_record(200))
    keyer = Keyer(delay=0)
    record, reused = store.key_link(WANTED, keyer, rotate=True, planned=store.read('A--B'))
    assert not reused and keyer.calls == 1 and record['generation'] == 2


def _key_in_child(directory, started):
    store = LinkKeyStore(directory)

    def slow():
        started.set()
        time.sleep(1.0)
        return new_record(77)

    store.key_link(WANTED, slow, planned=None)


def test_another_process_keying_the_link_makes_this_one_wait_and_reuse(tmp_path):
    context = multiprocessing.get_context('fork')
    started = context.Event()
    child = context.Process(target=_key_in_child, args=(str(tmp_path), started))
    child.start()
    try:
        assert started.wait(10), 'the child process did not start keying'
        keyer = Keyer(delay=0)
        began = time.monotonic()
        record, reused = LinkKeyStore(str(tmp_path)).key_link(WANTED, keyer, planned=None)
        waited = time.monotonic() - began
    finally:
        child.join(10)
    assert child.exitcode == 0
    assert reused and keyer.calls == 0 and record['ppk_id'] == 'qkf-%016x' % 77
    assert waited > 0.5, 'it waited for the other process'


def test_the_wait_is_bounded_and_the_error_names_the_link_and_the_lock_file(tmp_path):
    store = LinkKeyStore(str(tmp_path), lock_timeout=0.3)
    holder = os.open(store.lock_path('A--B'), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        keyer = Keyer(delay=0)
        began = time.monotonic()
        with pytest.raises(LinkKeyStoreError) as err:
            store.key_link(WANTED, keyer, planned=None)
        assert 0.3 <= time.monotonic() - began < 2
    finally:
        os.close(holder)
    message = str(err.value)
    assert 'link A--B' in message and store.lock_path('A--B') in message and keyer.calls == 0
    assert store.key_link(WANTED, keyer, planned=None)[1] is False, 'free again once the holder is gone'


def test_the_lock_file_is_private_and_gone_after_use(tmp_path):
    store = LinkKeyStore(str(tmp_path))

    def make_record():
        assert os.stat(store.lock_path('A--B')).st_mode & 0o077 == 0, 'the lock file is private'
        return new_record(5)

    store.key_link(WANTED, make_record, planned=None)
    assert os.listdir(str(tmp_path)) == ['A--B.json'], 'no lock file is left in the store'
    with pytest.raises(LinkKeyStoreError):
        store.lock_path('../A--B')


def test_many_threads_on_many_links_key_each_link_once(tmp_path):
    """The holder removes the lock file as it lets go; waiters that locked the removed file try again."""
    store = LinkKeyStore(str(tmp_path))
    keyers = dict((link_id, Keyer(delay=0.01, link_id=link_id)) for link_id in ('L1', 'L2', 'L3'))
    results = in_threads(24, lambda: [store.key_link(dict(WANTED, link_id=link_id), keyers[link_id], planned=None)
                                      for link_id in sorted(keyers)])
    assert all(keyer.calls == 1 for keyer in keyers.values())
    assert sorted(os.listdir(str(tmp_path))) == ['L1.json', 'L2.json', 'L3.json']
    assert sum(not reused for per_thread in results for record, reused in per_thread) == 3


def damage(path, change):
    with open(path) as handle:
        record = json.load(handle)
    change(record)
    with open(path, 'w') as handle:
        json.dump(record, handle)


def flip_one_bit(record):
    key = bytearray(bytes.fromhex(record['key']))
    key[5] ^= 0x10
    record['key'] = bytes(key).hex()


@pytest.mark.parametrize('change, words', [
    (flip_one_bit, 'does not match the recorded key check value'),
    (lambda record: record.update(size=512), 'the file records size 512'),
    (lambda record: record.update(key=record['key'][:32]), 'its key is 128 bits'),
    (lambda record: record.pop('kcv'), 'does not match the recorded key check value'),
])
def test_a_stored_key_that_does_not_match_its_facts_is_refused_everywhere(tmp_path, change, words):
    store = LinkKeyStore(str(tmp_path))
    write_link_key(store.path('A--B'), new_record(9))
    good = store.read('A--B')
    damage(store.path('A--B'), change)
    with open(store.path('A--B')) as handle:
        stored_key = json.load(handle)['key']
    keyer = Keyer(delay=0)
    for attempt in (lambda: store.read('A--B'),
                    lambda: store.key_link(WANTED, keyer, planned=good),
                    lambda: store.in_force(WANTED, 'SAE-A', 'SAE-B'),
                    lambda: stored_link_keys(str(tmp_path), [dict(link_id='A--B', master='SAE-A', slave='SAE-B')])):
        with pytest.raises(LinkKeyStoreError) as err:
            attempt()
        message = str(err.value)
        assert words in message and store.path('A--B') in message and 'link A--B' in message, message
        assert stored_key not in message and good['key'] not in message
    assert keyer.calls == 0, 'a damaged key is not silently replaced either'


def test_a_damaged_previous_key_is_refused_too(tmp_path):
    store = LinkKeyStore(str(tmp_path))
    write_link_key(store.path('A--B'), new_record(1))
    store.key_link(WANTED, Keyer(delay=0), rotate=True, planned=store.read('A--B'))
    damage(str(tmp_path / 'A--B.previous.json'), flip_one_bit)
    with pytest.raises(LinkKeyStoreError) as err:
        store.in_force(WANTED, 'SAE-A', 'SAE-B')
    assert 'A--B.previous.json' in str(err.value)


def test_stored_link_keys_names_every_link_without_a_key(tmp_path):
    write_link_key(LinkKeyStore(str(tmp_path)).path('A--B'), new_record(3))
    links = [dict(link_id='A--B', master='SAE-A', slave={'sae_id': 'SAE-B', 'interface': 'etsi004'}),
             dict(master='SAE-A', slave='SAE-C')]
    with pytest.raises(LinkKeyStoreError) as err:
        stored_link_keys(str(tmp_path), links)
    assert str(err.value).startswith('link SAE-A--SAE-C: no usable key in key_store')
    assert stored_link_keys(str(tmp_path), links[:1])[0]['kcv'] == new_record(3)['kcv']
    with pytest.raises(LinkKeyStoreError):
        stored_link_keys(str(tmp_path), links[:1], hash_algorithm='sha384')


def test_planning_does_not_take_a_stored_key_for_a_rotation_or_an_expired_key(tmp_path):
    """At planning (no ``planned`` record) a stored key is what this call planned on: rotate and max_age apply."""
    stored = new_record(1)
    assert LinkKeyStore.fits(stored, WANTED) is True
    assert LinkKeyStore.fits(stored, WANTED, rotate=True) is False
    assert LinkKeyStore.fits(dict(stored, created=int(time.time()) - 100), WANTED, max_age=10) is False


def test_a_degraded_key_another_run_just_stored_is_reused_not_keyed_again(tmp_path):
    store = LinkKeyStore(str(tmp_path))
    write_link_key(store.path('A--B'), dict(new_record(7), degraded=True))
    keyer = Keyer(delay=0)
    record, reused = store.key_link(WANTED, keyer, planned=None)  # nothing was stored when this call planned
    assert reused and keyer.calls == 0 and record['ppk_id'] == new_record(7)['ppk_id']
    # The same degraded key, planned on by this call, is replaced (its missing source may be back).
    record, reused = store.key_link(WANTED, keyer, planned=read_link_key(store.path('A--B')))
    assert not reused and keyer.calls == 1


def test_an_unwritable_store_fails_before_a_key_is_spent(tmp_path, monkeypatch):
    from ansible_collections.qsafe.keyfabric.plugins.module_utils import key_material
    store = LinkKeyStore(str(tmp_path))
    keyer = Keyer(delay=0)
    real_access = os.access
    monkeypatch.setattr(key_material.os, 'access', lambda path, mode: False if path == str(tmp_path) else real_access(path, mode))
    with pytest.raises(Exception) as failure:
        store.key_link(WANTED, keyer, planned=None)
    assert 'not writable' in str(failure.value)
    assert keyer.calls == 0


def test_reusing_the_planned_key_takes_no_lock_but_reads_the_file_again(tmp_path):
    store = LinkKeyStore(str(tmp_path), lock_timeout=0)
    write_link_key(store.path('A--B'), new_record(3))
    planned = store.read('A--B')
    keyer = Keyer(delay=0)
    with store.locked('A--B'):  # another run holds the link: the planned key is still handed out
        record, reused = store.key_link(WANTED, keyer, planned=planned)
        assert reused and record['ppk_id'] == planned['ppk_id'] and keyer.calls == 0
        # The file changed since planning (another run replaced the key): the decision needs the lock.
        write_link_key(store.path('A--B'), new_record(4))
        with pytest.raises(LinkKeyStoreError):
            store.key_link(WANTED, keyer, planned=planned)
    assert keyer.calls == 0
