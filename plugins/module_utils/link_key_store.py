# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Link key files: one JSON file per link, mode 0600, written atomically.

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
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import time

from ansible_collections.qsafe.keyfabric.plugins.module_utils._errors import KeyfabricError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import write_secret_file

LINK_KEY_FORMAT = 'qsafe-keyfabric-link-key/1'
# What must be equal for a stored key to be reused for a link.
MATCH_FIELDS = ('link_id', 'master_id', 'slave_id', 'policy', 'kem_algorithm', 'hash_algorithm', 'size')
_LINK_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')


class LinkKeyStoreError(KeyfabricError):
    """A key file cannot be used; the message names it and never holds key bytes."""


def link_key_path(directory, link_id):
    """The key file of ``link_id`` in ``directory`` (link IDs become file names, so they are checked)."""
    if not _LINK_ID.match(link_id or '') or '..' in link_id:
        raise LinkKeyStoreError('link ID %r cannot name a key file: use letters, digits, ".", "_" and "-"' % (link_id,))
    return os.path.join(directory, link_id + '.json')


def read_link_key(path):
    """The record in ``path`` (with the key, hex), or None when there is no file."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as handle:
            record = json.load(handle)
        if not isinstance(record, dict) or record.get('format') != LINK_KEY_FORMAT or \
                not isinstance(record.get('key'), str):
            raise ValueError()
        bytes.fromhex(record['key'])
    except (OSError, ValueError):
        raise LinkKeyStoreError('%s exists but is not a link key file; move it away or choose another path' % path)
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
