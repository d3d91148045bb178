# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

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
