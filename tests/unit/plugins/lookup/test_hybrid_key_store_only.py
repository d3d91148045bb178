# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""hybrid_key with a key store and no KME: what store_only hands out around a rotation, and the
retirement of the previous key file (no key is derived here, so no KME is needed)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

import pytest
import yaml

from ansible.errors import AnsibleLookupError
from ansible.plugins.loader import lookup_loader

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value
from ansible_collections.qsafe.keyfabric.plugins.lookup import hybrid_key
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_key_store import (
    STORE_DEFAULTS,
    STORE_VARIABLES,
    link_key_path,
    read_link_key,
    replace_link_key,
    stored_link_keys,
    write_link_key,
)

LINK = dict(master='SAE-A', slave='SAE-B')
FIRST = dict(link_id='SAE-A--SAE-B', master_id='SAE-A', slave_id='SAE-B', policy='qkd+pqc', kem_algorithm='ML-KEM-768',
             hash_algorithm='sha256', size=256, key='11' * 32, ppk_id='qkf-0000000000000001', kcv=key_check_value(b'\x11' * 32),
             created=1000, generation=1, degraded=False, alarms=[])
KCV_22 = key_check_value(b'\x22' * 32)


def lookup(store, **options):
    return lookup_loader.get('qsafe.keyfabric.hybrid_key').run([LINK], variables={}, key_store=str(store), **options)


def rotate(store, created):
    path = link_key_path(str(store), 'SAE-A--SAE-B')
    write_link_key(path, FIRST)
    replace_link_key(path, dict(FIRST, key='22' * 32, kcv=KCV_22, ppk_id='qkf-0000000000000002', created=created), read_link_key(path))
    return path


def test_a_first_key_comes_alone(tmp_path):
    write_link_key(link_key_path(str(tmp_path), 'SAE-A--SAE-B'), FIRST)
    result = lookup(tmp_path, store_only=True)[0]
    assert result['key'] == FIRST['key'] and result['reused']
    assert not [name for name in result if name.startswith(('previous', 'active_from'))]


def test_store_only_hands_out_the_previous_key_while_the_window_is_open(tmp_path):
    created = int(time.time()) - 10
    rotate(tmp_path, created)
    result = lookup(tmp_path, store_only=True)[0]
    assert result['key'] == '22' * 32 and result['generation'] == 2
    assert result['active_from'] == created + 3600, 'default window: an hour'
    assert result['previous_key'] == '11' * 32 and result['previous_ppk_id'] == FIRST['ppk_id']
    assert 'previous_active_from' not in result, 'the previous key was a first key'
    result = lookup(tmp_path, store_only=True, previous_key_lifetime=600)[0]
    assert result['active_from'] == created + 600 and result['previous_key'] == '11' * 32


def test_after_the_window_the_new_key_comes_alone_and_a_keying_call_retires_the_old_file(tmp_path):
    created = int(time.time()) - 7200
    path = rotate(tmp_path, created)
    result = lookup(tmp_path, store_only=True)[0]
    assert result['active_from'] == created + 3600 and 'previous_key' not in result
    assert os.path.exists(path[:-5] + '.previous.json'), 'store_only only reads'
    lookup(tmp_path, dry_run=True)
    assert os.path.exists(path[:-5] + '.previous.json'), 'a dry run writes nothing'
    assert lookup(tmp_path)[0]['reused'] is True
    assert not os.path.exists(path[:-5] + '.previous.json') and read_link_key(path)['key'] == '22' * 32


def test_no_window_means_the_new_key_is_in_force_at_once(tmp_path):
    created = int(time.time()) - 10
    rotate(tmp_path, created)
    result = lookup(tmp_path, store_only=True, previous_key_lifetime=0)[0]
    assert result['active_from'] == created and 'previous_key' not in result


def test_a_broken_previous_file_fails_before_anything_else(tmp_path):
    path = rotate(tmp_path, int(time.time()))
    with open(path[:-5] + '.previous.json', 'w') as handle:
        handle.write('{"format": "other"}')
    with pytest.raises(AnsibleLookupError) as err:
        lookup(tmp_path, store_only=True)
    assert 'not a link key file' in str(err.value) and '11' * 16 not in str(err.value)


def test_a_negative_window_is_refused(tmp_path):
    with pytest.raises(AnsibleLookupError) as err:
        lookup(tmp_path, store_only=True, previous_key_lifetime=-1)
    assert 'previous_key_lifetime must be 0 or more seconds' in str(err.value)


@pytest.mark.parametrize('age, window', [(10, 3600), (7200, 3600), (10, 0), (10, 600)])
def test_the_action_reads_exactly_what_store_only_returns(tmp_path, age, window):
    """mesh_render reads keys through stored_link_keys; the lookup's store_only goes through the same function."""
    rotate(tmp_path, int(time.time()) - age)
    assert stored_link_keys(str(tmp_path), [LINK], previous_key_lifetime=window) == \
        lookup(tmp_path, store_only=True, previous_key_lifetime=window)


def test_store_defaults_are_the_lookups_documented_defaults():
    options = yaml.safe_load(hybrid_key.DOCUMENTATION)['options']
    for name, value in STORE_DEFAULTS.items():
        assert options[name]['default'] == value, name
    for name, variable in STORE_VARIABLES.items():
        assert {'name': variable} in options[name]['vars'], name


def test_a_damaged_key_fails_the_lookup_naming_the_file_before_any_key_is_spent(tmp_path):
    path = link_key_path(str(tmp_path), 'SAE-A--SAE-B')
    write_link_key(path, dict(FIRST, kcv=KCV_22))
    for options in (dict(store_only=True), dict(dry_run=True), dict()):
        with pytest.raises(AnsibleLookupError) as err:
            lookup(tmp_path, **options)
        assert 'no link was keyed' in str(err.value) and path in str(err.value) and 'damaged' in str(err.value)
        assert '11' * 16 not in str(err.value)
