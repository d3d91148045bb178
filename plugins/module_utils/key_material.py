# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Handling key bytes safely: key check values, and key bundle files written atomically, 0600.

A key check value (KCV) lets two ends confirm they hold the same key without revealing it:
``KCV = first 3 bytes of HMAC-SHA256(key, "qsafe.keyfabric KCV v1")``, as 6 hex digits. It is a
keyed PRF output truncated to 24 bits, so it tells nothing useful about the key, for any key
length (unlike the classic AES-ECB KCV, which needs an AES-sized key).

A key bundle file is JSON:
``{"format": "qsafe-keyfabric-keys/1", "interface": ..., "kme_url": ..., "role": ...,
   "sae_id": ..., "peer_sae_id": ..., "size": ..., "keys": [{"key_ID": ..., "key": <base64>,
   "kcv": ...}]}``
Every file that holds a key (key bundles, link key files, KEM secrets, rendered configurations)
is written by ``write_secret_file``: a temporary file in the destination directory with mode 0600
from its creation, fsynced, renamed over the destination, and the directory fsynced - a reader
sees the old file or the new one, never a half-written one, and the new one survives a crash.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import hmac
import json
import os
import tempfile

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError, QKDKey

BUNDLE_FORMAT = 'qsafe-keyfabric-keys/1'
_KCV_LABEL = b'qsafe.keyfabric KCV v1'


def key_check_value(key):
    """The 6-hex-digit key check value of ``key`` (bytes)."""
    return hmac.new(key, _KCV_LABEL, hashlib.sha256).hexdigest()[:6].upper()


def describe_keys(keys):
    """Public facts about keys: key_ID, size, KCV. Never the key bytes."""
    return [dict(key_id=key.key_id, size=key.size, kcv=key_check_value(key.key)) for key in keys]


def check_writable(path, option='dest'):
    """Fail before any key is fetched when ``path`` cannot be written (its directory must exist)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise KeyDeliveryError('%s %s: directory %s does not exist' % (option, path, directory), kind='config')
    if not os.access(directory, os.W_OK | os.X_OK):
        raise KeyDeliveryError('%s %s: directory %s is not writable' % (option, path, directory), kind='config')


def write_secret_file(path, data, mode=0o600):
    """Write ``data`` (bytes) to ``path`` atomically and durably: the collection's one writer of files that hold keys.

    A temporary file in the same directory (mode 0600 from its creation, by ``mkstemp``) gets the
    data, is fsynced, then renamed over ``path``, and the directory is fsynced so the rename itself
    survives a crash. A reader sees the old file or the new one, never a partial one. ``mode`` is
    set on the temporary file before any byte is written (0600 unless the file holds no secret).
    """
    check_writable(path, option='file')
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix='.%s.' % os.path.basename(path), suffix='.tmp')
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_key_bundle(path, keys, **metadata):
    """Write ``keys`` (QKDKey list) and ``metadata`` as a key bundle file."""
    bundle = dict(metadata)
    bundle['format'] = BUNDLE_FORMAT
    bundle['keys'] = [
        {'key_ID': key.key_id, 'key': base64.b64encode(key.key).decode('ascii'),
         'kcv': key_check_value(key.key)} for key in keys]
    write_secret_file(path, (json.dumps(bundle, indent=1, sort_keys=True) + '\n').encode('utf-8'))


def read_key_bundle(path):
    """Read a key bundle file: returns (metadata dict, QKDKey list), or (None, None) if absent.

    Each key is checked against the key check value recorded beside it; a key that does not match
    raises KeyDeliveryError naming the file and the key_ID.

    A file that exists but is not a key bundle raises KeyDeliveryError (it is never overwritten
    silently: it may be somebody else's file).
    """
    if not os.path.exists(path):
        return None, None
    try:
        with open(path, 'rb') as handle:
            bundle = json.loads(handle.read().decode('utf-8'))
        if not isinstance(bundle, dict) or bundle.get('format') != BUNDLE_FORMAT:
            raise ValueError('not a %s file' % BUNDLE_FORMAT)
        keys = [QKDKey(entry['key_ID'], base64.b64decode(entry['key'], validate=True))
                for entry in bundle['keys']]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyDeliveryError('%s exists but is not a readable key bundle (%s); move it away or '
                               'choose another dest' % (path, exc.__class__.__name__), kind='config')
    for entry, key in zip(bundle['keys'], keys):
        if key_check_value(key.key) != str(entry.get('kcv', '')).upper():
            raise KeyDeliveryError('%s: the key with key_ID %s does not match its recorded key check value; the bundle is '
                                   'refused (restore it, or move it away to fetch new keys)' % (path, key.key_id), kind='config')
    metadata = dict((name, value) for name, value in bundle.items() if name != 'keys')
    return metadata, keys
