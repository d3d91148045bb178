# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

import pytest

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_key_store import (
    LinkKeyStoreError,
    link_key_path,
    previous_in_window,
    previous_link_key_path,
    public_record,
    read_link_key,
    replace_link_key,
    retire_previous_link_key,
    reusable,
    rollover_time,
    write_link_key,
)

WANTED = dict(link_id='A--B', master_id='SAE-A', slave_id='SAE-B', policy='qkd+pqc', kem_algorithm='ML-KEM-768',
              hash_algorithm='sha256', size=256)
RECORD = dict(WANTED, key='11' * 32, ppk_id='qkf-0000000000000001', kcv=key_check_value(b'\x11' * 32), created=1000, generation=1,
              degraded=False)
KCV_22 = key_check_value(b'\x22' * 32)


def test_round_trip_is_0600_and_public_record_has_no_key(tmp_path):
    path = link_key_path(str(tmp_path), 'A--B')
    write_link_key(path, RECORD)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_link_key(path)['key'] == '11' * 32
    assert 'key' not in public_record(read_link_key(path)) and '11' * 32 not in str(public_record(RECORD))


@pytest.mark.parametrize('link_id', ['../escape', 'a/b', '', '.hidden', 'x..y'])
def test_link_ids_that_are_not_file_names_are_refused(tmp_path, link_id):
    with pytest.raises(LinkKeyStoreError):
        link_key_path(str(tmp_path), link_id)


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / 'A--B.json'
    path.write_text('{"format": "other", "key": "zz"}')
    with pytest.raises(LinkKeyStoreError) as err:
        read_link_key(str(path))
    assert 'not a link key file' in str(err.value)


def test_absent_file_reads_as_none(tmp_path):
    assert read_link_key(str(tmp_path / 'none.json')) is None


@pytest.mark.parametrize('change, expected', [
    ({}, True),
    (dict(policy='pqc'), False),
    (dict(kem_algorithm='ML-KEM-1024'), False),
    (dict(size=512), False),
    (dict(master_id='SAE-B', slave_id='SAE-A'), False),
    (dict(degraded=True), False),
])
def test_reuse_only_when_everything_fits(change, expected):
    assert reusable(dict(RECORD, **change), WANTED) is expected


def test_a_reader_of_the_store_takes_a_degraded_key_a_keying_call_does_not():
    degraded = dict(RECORD, degraded=True)
    assert not reusable(degraded, WANTED)
    assert reusable(degraded, WANTED, accept_degraded=True)
    assert not reusable(dict(degraded, policy='pqc'), WANTED, accept_degraded=True)


def test_reuse_ends_with_max_age():
    assert reusable(RECORD, WANTED, max_age=100, now=1099)
    assert not reusable(RECORD, WANTED, max_age=100, now=1100)
    assert not reusable(None, WANTED)


def test_replacing_keeps_the_previous_key(tmp_path):
    path = link_key_path(str(tmp_path), 'A--B')
    write_link_key(path, RECORD)
    new = replace_link_key(path, dict(RECORD, key='22' * 32, kcv=KCV_22, ppk_id='qkf-0000000000000002'), read_link_key(path))
    assert new['generation'] == 2 and new['previous_ppk_id'] == 'qkf-0000000000000001'
    assert read_link_key(str(tmp_path / 'A--B.previous.json'))['key'] == '11' * 32
    assert read_link_key(path)['key'] == '22' * 32


def rotated(tmp_path, created=5000):
    """A link rotated once at ``created``: (path, new record as stored)."""
    path = link_key_path(str(tmp_path), 'A--B')
    write_link_key(path, RECORD)
    replace_link_key(path, dict(RECORD, key='22' * 32, kcv=KCV_22, ppk_id='qkf-0000000000000002', created=created), read_link_key(path))
    return path, read_link_key(path)


def test_a_rotated_key_takes_over_at_its_creation_plus_the_window():
    assert rollover_time(RECORD, 3600) is None, "a link's first key is in force from the start"
    assert rollover_time(dict(RECORD, generation=2), 3600) == 1000 + 3600
    assert rollover_time(dict(RECORD, generation=2), 0) == 1000
    assert rollover_time(None, 3600) is None


def test_the_previous_key_is_handed_out_only_while_the_window_is_open(tmp_path):
    path, new = rotated(tmp_path, created=5000)
    assert previous_link_key_path(path).endswith('A--B.previous.json')
    previous = previous_in_window(path, new, 600, now=5599)
    assert previous['key'] == '11' * 32 and previous['ppk_id'] == 'qkf-0000000000000001'
    assert previous_in_window(path, new, 600, now=5600) is None, 'the new key has taken over'
    assert previous_in_window(path, new, 0, now=5000) is None, 'no window: break-before-make'
    assert previous_in_window(path, read_link_key(previous_link_key_path(path)), 600, now=5000) is None, \
        'a first key has no previous key'


def test_a_previous_file_that_is_not_the_named_predecessor_is_not_handed_out(tmp_path):
    path, new = rotated(tmp_path)
    assert previous_in_window(path, dict(new, previous_ppk_id='qkf-00000000000000ff'), 600, now=5000) is None
    write_link_key(previous_link_key_path(path), dict(RECORD, link_id='A--C'))
    assert previous_in_window(path, new, 600, now=5000) is None
    (tmp_path / 'A--B.previous.json').write_text('not json')
    with pytest.raises(LinkKeyStoreError):
        previous_in_window(path, new, 600, now=5000)


def test_the_previous_file_is_retired_once_the_new_key_has_taken_over(tmp_path):
    path, new = rotated(tmp_path, created=5000)
    assert retire_previous_link_key(path, new, 600, now=5599) is False
    assert os.path.exists(previous_link_key_path(path))
    assert retire_previous_link_key(path, new, 600, now=5600) is True
    assert not os.path.exists(previous_link_key_path(path)) and read_link_key(path)['key'] == '22' * 32
    assert retire_previous_link_key(path, new, 600, now=9999) is False, 'nothing left to retire'
