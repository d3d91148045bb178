# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The link key store: one JSON key file per link, mode 0600, written atomically, checked on every read.

The same format serves the controller's key store (the ``hybrid_key`` lookup's ``key_store``
directory: ``<store>/<link_id>.json``) and the node-local flow's ``dest`` files
(``hybrid_link_key``). A file holds the key (hex) and its public facts; ``public_record``
strips the key.

The key store is what makes a roll-out idempotent: a link whose stored key still fits (same
ends, policy, algorithms, length, and not due for rotation) reuses it, so a second run of the
same inventory consumes no QKD key. Rotation keeps the key it replaces as
``<link_id>.previous.json`` so configurations can carry both during a make-before-break change.

The overlap window: a rotated key (generation 2 and up) takes over from its predecessor at
``active_from = created + window`` (``rollover_time``). Until then configurations carry both keys
(``previous_in_window`` hands out the previous one); from then on the new key alone, and the
previous key file is no longer needed (``retire_previous_link_key`` removes it).

``LinkKeyStore`` is the one place that decides about a controller key store: the ``hybrid_key``
lookup keys through ``LinkKeyStore.key_link`` (re-read, decide reuse / rotation, key, write, retire
the previous key - all under the link's lock), and readers (the lookup's ``store_only``, the
``mesh_render`` action through ``stored_link_keys``) take ``LinkKeyStore.in_force``.

Locking: each link has a lock file ``<store>/.<link_id>.lock`` while it is being keyed;
``fcntl.flock`` on a file description opened for each acquisition excludes other processes and
other threads alike. A second run that wants the same link waits (at most ``lock_timeout``
seconds), then re-reads and reuses the key the first run stored. Readers take no lock: every write is an atomic rename, and
the previous key is handed out only when its PPK ID is the one the current key names.

Every read recomputes the key check value and the size of the stored key and refuses a file whose
key does not match its recorded ``kcv`` and ``size`` (LinkKeyStoreError naming the file and the
link): a damaged key is never reused and never rendered.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import json
import os
import re
import time
from contextlib import contextmanager

from ansible_collections.qsafe.keyfabric.plugins.module_utils._errors import KeyfabricError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import check_writable, key_check_value, write_secret_file
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_policy import LinkPolicy

LINK_KEY_FORMAT = 'qsafe-keyfabric-link-key/1'
# What must be equal for a stored key to be reused for a link.
MATCH_FIELDS = ('link_id', 'master_id', 'slave_id', 'policy', 'kem_algorithm', 'hash_algorithm', 'size')
_LINK_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
# How long a run waits for a link another run is keying (seconds), unless told otherwise.
DEFAULT_LOCK_TIMEOUT = 300
# The key-store settings of the hybrid_key lookup that decide whether a stored key fits, with the
# lookup's defaults (tests/unit checks that they equal the lookup's documented defaults).
STORE_DEFAULTS = dict(policy='qkd+pqc', kem_algorithm='ML-KEM-768', hash_algorithm='sha256', key_length=32,
                      previous_key_lifetime=3600)
# The play variables the lookup takes them from (a reader outside the lookup, such as mesh_render, uses the same).
STORE_VARIABLES = dict(policy='qsafe_policy', kem_algorithm='qsafe_kem_algorithm', hash_algorithm='qsafe_hash_algorithm',
                       key_length='qsafe_key_length', previous_key_lifetime='qsafe_previous_key_lifetime')


class LinkKeyStoreError(KeyfabricError):
    """A key file cannot be used; the message names it and never holds key bytes."""


def link_key_path(directory, link_id):
    """The key file of ``link_id`` in ``directory`` (link IDs become file names, so they are checked)."""
    if not _LINK_ID.match(link_id or '') or '..' in link_id:
        raise LinkKeyStoreError('link ID %r cannot name a key file: use letters, digits, ".", "_" and "-"' % (link_id,))
    return os.path.join(directory, link_id + '.json')


def read_link_key(path):
    """The record in ``path`` (with the key, hex), or None when there is no file.

    The key is checked against the record's own public facts: its key check value (``kcv``) is
    recomputed and its length compared with ``size`` (bits). A key that does not match is refused
    (LinkKeyStoreError naming the file and the link), so it is never reused or rendered.
    """
    try:
        with open(path) as handle:
            record = json.load(handle)
        if not isinstance(record, dict) or record.get('format') != LINK_KEY_FORMAT or \
                not isinstance(record.get('key'), str):
            raise ValueError()
        key = bytes.fromhex(record['key'])
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise LinkKeyStoreError('%s exists but is not a link key file; move it away or choose another path' % path)
    damage = []
    if record.get('size') != len(key) * 8:
        damage.append('its key is %d bits, the file records size %r' % (len(key) * 8, record.get('size')))
    if not isinstance(record.get('kcv'), str) or key_check_value(key) != record['kcv'].upper():
        damage.append('its key does not match the recorded key check value %r' % (record.get('kcv'),))
    if damage:
        raise LinkKeyStoreError(
            'key file %s of link %s is damaged: %s. The key is refused (not reused, not rendered); restore the file '
            'from a backup, or remove it so that the link is keyed again' % (path, record.get('link_id'), '; '.join(damage)))
    return record


def write_link_key(path, record):
    """Write ``record`` (public facts and ``key`` hex) atomically with mode 0600."""
    record = dict(record, format=LINK_KEY_FORMAT)
    write_secret_file(path, (json.dumps(record, indent=1, sort_keys=True) + '\n').encode('ascii'))


def public_record(record):
    """The record without the key."""
    return dict((name, value) for name, value in record.items() if name not in ('key', 'format'))


def reusable(record, wanted, max_age=0, now=None, accept_degraded=False):
    """Whether a stored ``record`` can serve as the key described by ``wanted`` (MATCH_FIELDS).

    A degraded key is not reused by a call that keys (it is replaced as soon as the missing source
    is back), but ``accept_degraded`` lets a reader of the keys an earlier call made (store_only)
    take it: that key is the one in force, and the configuration must carry it."""
    if record is None or (record.get('degraded') and not accept_degraded) or \
            any(record.get(name) != wanted.get(name) for name in MATCH_FIELDS):
        return False
    if max_age and (now or time.time()) - record.get('created', 0) >= max_age:
        return False
    return True


def previous_link_key_path(path):
    """Where the key that ``path``'s key replaced is kept."""
    return path[:-len('.json')] + '.previous.json'


def replace_link_key(path, record, previous):
    """Store a new key for a link, keeping the one it replaces as ``.previous.json``."""
    if previous is not None:
        write_link_key(previous_link_key_path(path), previous)
        record = dict(record, generation=previous.get('generation', 0) + 1, previous_ppk_id=previous.get('ppk_id'))
    write_link_key(path, record)
    return record


def rollover_time(record, window):
    """When the key of ``record`` takes over from the key it replaced (UNIX time), or None.

    Only a key that replaced another (generation 2 and up) has one: its ``created`` time plus the
    overlap ``window`` (seconds). A link's first key is in force from the start.
    """
    if not record or int(record.get('generation') or 1) < 2:
        return None
    return int(record.get('created') or 0) + max(0, int(window))


def previous_in_window(path, record, window, now=None):
    """The key that ``record`` (stored at ``path``) replaced, while the overlap window is open; else None.

    The previous key counts only if its file holds the key that ``record`` names as
    ``previous_ppk_id`` (for the same link): anything else is left alone and not handed out.
    """
    active_from = rollover_time(record, window)
    if active_from is None or not record.get('previous_ppk_id') or (time.time() if now is None else now) >= active_from:
        return None
    previous = read_link_key(previous_link_key_path(path))
    if previous is None or previous.get('ppk_id') != record['previous_ppk_id'] or \
            previous.get('link_id') != record.get('link_id'):
        return None
    return previous


def retire_previous_link_key(path, record, window, now=None):
    """Remove the previous key file of a link once its successor has taken over; True if one was removed.

    A link's first key (no rollover time) keeps nothing. A file there that is not a link key file is
    not removed: LinkKeyStoreError names it.
    """
    active_from = rollover_time(record, window)
    previous_path = previous_link_key_path(path)
    if active_from is None or (time.time() if now is None else now) < active_from or not os.path.exists(previous_path):
        return False
    read_link_key(previous_path)  # raises for a file that is not ours
    os.remove(previous_path)
    return True


def _ppk_id(record):
    return record.get('ppk_id') if record else None


class LinkKeyStore:
    """A controller key store directory: reads, the reuse / rotation decision, locked keying, rollover.

    ``previous_key_lifetime`` is the overlap window of a rotation (seconds); ``lock_timeout`` bounds
    the wait for a link that another run (process or thread) is keying.
    """

    def __init__(self, directory, previous_key_lifetime=STORE_DEFAULTS['previous_key_lifetime'],
                 lock_timeout=DEFAULT_LOCK_TIMEOUT):
        self.directory = directory
        self.previous_key_lifetime = previous_key_lifetime
        self.lock_timeout = lock_timeout

    def path(self, link_id):
        return link_key_path(self.directory, link_id)

    def lock_path(self, link_id):
        link_key_path(self.directory, link_id)  # checks the link ID
        return os.path.join(self.directory, '.%s.lock' % link_id)

    def read(self, link_id):
        """The stored record of ``link_id`` (checked, with the key), or None."""
        return read_link_key(self.path(link_id))

    @contextmanager
    def locked(self, link_id):
        """Hold the link's exclusive lock (waits at most ``lock_timeout`` seconds, then LinkKeyStoreError).

        The lock file exists only while somebody holds or waits for the lock: the holder removes it
        before it lets go, and a waiter that then gets the lock of a file no longer at the path (removed,
        or replaced by a newer one) lets go and locks the current file instead.
        """
        lock_path = self.lock_path(link_id)
        deadline = time.monotonic() + max(0, self.lock_timeout)
        while True:
            try:
                descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise LinkKeyStoreError('link %s: cannot open the key store lock %s: %s' % (link_id, lock_path, exc.strerror))
            try:
                self._flock(descriptor, deadline, link_id, lock_path)
                held = os.fstat(descriptor)
                try:
                    current = os.stat(lock_path)
                except FileNotFoundError:
                    current = None
            except BaseException:
                os.close(descriptor)
                raise
            if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                break
            os.close(descriptor)
        try:
            yield
        finally:
            try:
                os.unlink(lock_path)
            except OSError:
                pass
            os.close(descriptor)  # the only descriptor of this open file description: the lock goes with it

    def _flock(self, descriptor, deadline, link_id, lock_path):
        delay = 0.01
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkKeyStoreError(
                    'link %s: another run has held the key store lock %s for more than %s s; nothing was keyed for '
                    'this link (wait for that run to end, or raise lock_timeout)' % (link_id, lock_path, self.lock_timeout))
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)

    @staticmethod
    def fits(record, wanted, rotate=False, max_age=0, planned=False, now=None):
        """Whether a keying call reuses ``record`` for ``wanted``.

        A key another run stored after this one planned (``record`` is not ``planned``, compared by
        PPK ID; ``planned`` None: there was no key then, False: this is the planning itself) is reused
        when it fits, even with ``rotate`` or ``max_age`` and even when degraded: that run did the keying
        this one asked for, just now, and keying again would spend a second key for nothing.
        """
        if record is None:
            return False
        if planned is not False and _ppk_id(record) != _ppk_id(planned) and \
                reusable(record, wanted, accept_degraded=True):
            return True
        return not rotate and reusable(record, wanted, max_age, now=now)

    def key_link(self, wanted, make_record, rotate=False, max_age=0, planned=False, timings=None):
        """Key the link of ``wanted`` unless its stored key fits; under the link's lock. Returns (record, reused).

        ``make_record()`` keys the link and returns the new record (public facts and ``key``); it runs
        only when the stored key, re-read under the lock, does not fit. ``planned`` is the record read
        when the call planned (None: there was none; False: unknown). A reused key's predecessor file is
        retired once its window has closed; a new key replaces the stored one (kept as previous).
        """
        link_id = wanted['link_id']
        path = self.path(link_id)
        if planned and self.fits(planned, wanted, rotate, max_age) and not os.path.exists(previous_link_key_path(path)):
            # Reusing the planned key writes nothing, so it takes no lock (the lock costs ten times the checked
            # read): the file is read and checked again, and if it still holds that key, this run hands it out.
            current = read_link_key(path)
            if _ppk_id(current) == _ppk_id(planned):
                return current, True
        with self.locked(link_id):
            stored = read_link_key(path)
            if self.fits(stored, wanted, rotate, max_age, planned):
                retire_previous_link_key(path, stored, self.previous_key_lifetime)
                return stored, True
            # The store must take the new key before one is spent for it.
            check_writable(path, 'key_store')
            record = make_record()
            started = time.perf_counter()
            record = replace_link_key(path, record, stored)
            if timings is not None:
                timings['store'] = round((time.perf_counter() - started) * 1000.0, 3)
            return record, False

    def in_force(self, wanted, master, slave, warn=None):
        """What a configuration carries for ``wanted``: the stored key (reused=True), and for a rotated
        key ``active_from`` and, while the window is open, ``previous_key`` / ``previous_ppk_id`` (SECRET)
        and ``previous_active_from``. A degraded key counts (it is the key in force). LinkKeyStoreError
        when the store holds no key that fits."""
        path = self.path(wanted['link_id'])
        stored = read_link_key(path)
        if not reusable(stored, wanted, accept_degraded=True):
            raise LinkKeyStoreError('no usable key in key_store %s (store_only is set)' % self.directory)
        previous = previous_in_window(path, stored, self.previous_key_lifetime)
        result = dict(public_record(stored), master=master, slave=slave, key=stored['key'], reused=True)
        window = self.previous_key_lifetime
        active_from = rollover_time(stored, window)
        if active_from is not None:
            result['active_from'] = active_from
        if previous is not None:
            result.update(previous_key=previous['key'], previous_ppk_id=previous['ppk_id'])
            previous_active_from = rollover_time(previous, window)
            if previous_active_from is not None:
                result['previous_active_from'] = previous_active_from
                if previous_active_from > time.time() and warn is not None:
                    warn('hybrid_key: link %s was rotated again before its previous rotation took over; devices '
                         'still on the key before that lose it now' % wanted['link_id'])
        return result


def wanted_key(link_id, master, slave, policy, kem_algorithm, hash_algorithm, key_length):
    """The MATCH_FIELDS a stored key of a link must have (``policy`` a LinkPolicy or its spec)."""
    return dict(link_id=link_id, master_id=master, slave_id=slave, policy=LinkPolicy.from_spec(policy).name,
                kem_algorithm=kem_algorithm, hash_algorithm=hash_algorithm, size=key_length * 8)


def _sae_id(end):
    return end.get('sae_id') if isinstance(end, dict) else end


def stored_link_keys(directory, links, policy=None, kem_algorithm=None, hash_algorithm=None, key_length=None,
                     previous_key_lifetime=None, warn=None):
    """The keys in force of ``links`` (hybrid_key lookup terms: dicts with master, slave - SAE IDs or dicts
    with sae_id - and optionally link_id, policy, kem_algorithm), as the lookup with ``store_only=True``
    returns them (SECRET). Settings left None take the lookup's defaults (STORE_DEFAULTS).
    LinkKeyStoreError names every link without a usable key."""
    settings = dict(STORE_DEFAULTS)
    settings.update((name, value) for name, value in dict(
        policy=policy, kem_algorithm=kem_algorithm, hash_algorithm=hash_algorithm, key_length=key_length,
        previous_key_lifetime=previous_key_lifetime).items() if value is not None)
    store = LinkKeyStore(directory, int(settings['previous_key_lifetime']))
    results, problems = [], []
    for link in links:
        master, slave = _sae_id(link.get('master')), _sae_id(link.get('slave'))
        link_id = link.get('link_id') or '%s--%s' % (master, slave)
        try:
            wanted = wanted_key(link_id, master, slave, link.get('policy') or settings['policy'],
                                link.get('kem_algorithm') or settings['kem_algorithm'], settings['hash_algorithm'],
                                int(settings['key_length']))
            results.append(store.in_force(wanted, master, slave, warn=warn))
        except (LinkKeyStoreError, ValueError) as exc:
            problems.append('link %s: %s' % (link_id, exc))
    if problems:
        raise LinkKeyStoreError('; '.join(problems))
    return results
