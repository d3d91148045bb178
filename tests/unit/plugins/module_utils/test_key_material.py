# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import stat

import pytest

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError, QKDKey
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import (
    describe_keys,
    key_check_value,
    read_key_bundle,
    write_key_bundle,
    write_secret_file,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def test_kcv_is_six_hex_digits_and_deterministic():
    kcv = key_check_value(KEY_A)
    assert len(kcv) == 6 and int(kcv, 16) >= 0
    assert kcv == key_check_value(bytes(KEY_A))


def test_kcv_differs_for_different_keys_and_reveals_no_key_bytes():
    assert key_check_value(KEY_A) != key_check_value(KEY_B)
    assert KEY_A.hex().upper()[:6] != key_check_value(KEY_A)


def test_qkdkey_repr_never_shows_the_key():
    key = QKDKey('id-1', b'\xaa' * 32)
    assert 'aa' not in repr(key).lower() and 'id-1' in repr(key) and '256' in str(key)


def test_describe_keys_holds_no_key_bytes():
    info = describe_keys([QKDKey('k1', KEY_A)])
    assert info == [dict(key_id='k1', size=256, kcv=key_check_value(KEY_A))]
    assert KEY_A.hex() not in json.dumps(info)


def test_secret_file_is_0600_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / 'secret.bin'
    write_secret_file(str(path), b'first')
    write_secret_file(str(path), b'second')
    assert path.read_bytes() == b'second'
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    assert os.listdir(str(tmp_path)) == ['secret.bin']


def test_secret_file_in_missing_directory_fails_clearly(tmp_path):
    with pytest.raises(KeyDeliveryError) as err:
        write_secret_file(str(tmp_path / 'nope' / 'k.json'), b'x')
    assert 'does not exist' in str(err.value)


def test_key_bundle_round_trip(tmp_path):
    path = str(tmp_path / 'bundle.json')
    keys = [QKDKey('k1', KEY_A), QKDKey('k2', KEY_B)]
    write_key_bundle(path, keys, role='master', peer_sae_id='SAE-B')
    metadata, loaded = read_key_bundle(path)
    assert loaded == keys
    assert metadata['role'] == 'master' and metadata['peer_sae_id'] == 'SAE-B'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_missing_bundle_reads_as_none(tmp_path):
    assert read_key_bundle(str(tmp_path / 'absent.json')) == (None, None)


def test_foreign_file_is_refused_without_echoing_its_content(tmp_path):
    path = tmp_path / 'other.json'
    path.write_text('{"format": "something else", "secret": "c2VjcmV0LWJ5dGVz"}')
    with pytest.raises(KeyDeliveryError) as err:
        read_key_bundle(str(path))
    assert 'not a readable key bundle' in str(err.value)
    assert 'c2VjcmV0' not in str(err.value)


def test_secret_file_is_0600_from_creation_and_fsyncs_file_then_directory(tmp_path, monkeypatch):
    """The one writer of key files: the temporary file is 0600 before a byte is written, the file is
    fsynced before the rename and the directory after it (so the rename survives a crash)."""
    path = str(tmp_path / 'secret.bin')
    events = []
    real_fsync, real_rename, real_fdopen = os.fsync, os.rename, os.fdopen

    def fsync(fd):
        events.append(('fsync', 'dir' if stat.S_ISDIR(os.fstat(fd).st_mode) else 'file'))
        real_fsync(fd)

    def rename(source, destination):
        events.append(('rename', os.path.dirname(source) == str(tmp_path), destination))
        real_rename(source, destination)

    def fdopen(fd, *args, **kwargs):
        events.append(('mode before write', stat.S_IMODE(os.fstat(fd).st_mode)))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'rename', rename)
    monkeypatch.setattr(os, 'fdopen', fdopen)
    write_secret_file(path, b'\x01' * 32)
    assert events == [('mode before write', 0o600), ('fsync', 'file'), ('rename', True, path), ('fsync', 'dir')]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and os.listdir(str(tmp_path)) == ['secret.bin']


def test_secret_file_replaces_atomically_and_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / 'secret.bin')
    write_secret_file(path, b'old')

    def broken_fsync(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', broken_fsync)
    with pytest.raises(OSError):
        write_secret_file(path, b'new')
    monkeypatch.undo()
    with open(path, 'rb') as handle:
        assert handle.read() == b'old'
    assert os.listdir(str(tmp_path)) == ['secret.bin'], 'no temporary file is left behind'


def test_a_file_without_secrets_may_get_another_mode(tmp_path):
    path = str(tmp_path / 'public.conf')
    write_secret_file(path, b'x', mode=0o644)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_a_bundle_key_that_does_not_match_its_kcv_is_refused(tmp_path):
    path = str(tmp_path / 'bundle.json')
    write_key_bundle(path, [QKDKey('k1', KEY_A)], role='master', peer_sae_id='SAE-B')
    with open(path) as handle:
        bundle = json.load(handle)
    bundle['keys'][0]['key'] = base64.b64encode(bytes([KEY_A[0] ^ 1]) + KEY_A[1:]).decode('ascii')
    with open(path, 'w') as handle:
        json.dump(bundle, handle)
    with pytest.raises(KeyDeliveryError) as err:
        read_key_bundle(path)
    assert path in str(err.value) and 'k1' in str(err.value) and 'key check value' in str(err.value)
    assert bundle['keys'][0]['key'] not in str(err.value)
