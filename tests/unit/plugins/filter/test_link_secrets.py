# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.qsafe.keyfabric.plugins.filter.link_secrets import link_secrets

LINK = dict(link_id='A--B', key='5a' * 32, ppk_id='qkf-0123456789abcdef')


def test_every_purpose_gets_its_own_secret_of_the_right_length():
    secrets = link_secrets(LINK)
    values = [secrets[name] for name in ('ppk_hex', 'ike_psk_hex', 'macsec_cak_hex', 'macsec_ckn_hex')]
    assert len(set(values)) == 4 and LINK['key'] not in values
    assert [len(value) for value in values] == [64, 64, 64, 64]
    assert len(link_secrets(LINK, 128)['macsec_cak_hex']) == 32


def test_both_ends_derive_the_same_and_another_key_derives_others():
    assert link_secrets(dict(LINK)) == link_secrets(LINK)
    other = link_secrets(dict(LINK, key='5b' * 32))
    assert other['ppk_hex'] != link_secrets(LINK)['ppk_hex']
    assert other['macsec_ckn_hex'] == link_secrets(LINK)['macsec_ckn_hex']  # the CKN is public, from the PPK ID


@pytest.mark.parametrize('link, cak_bits, problem', [
    ('not a dict', 256, 'needs a hybrid_key result'),
    (dict(LINK, key=''), 256, 'needs a hybrid_key result'),
    (dict(LINK, key='zz' * 32), 256, 'link_secrets for link A--B'),
    (dict(LINK, key='5a' * 8), 256, 'at least 32 bytes'),
    (LINK, 192, 'cak_bits must be 128 or 256'),
])
def test_bad_input_is_named(link, cak_bits, problem):
    with pytest.raises(AnsibleFilterError) as err:
        link_secrets(link, cak_bits)
    assert problem in str(err.value) and '5a' * 8 not in str(err.value)


ROTATED = dict(LINK, key='6b' * 32, ppk_id='qkf-1111111111111111', generation=2, created=5000, active_from=8600,
               previous_ppk_id=LINK['ppk_id'], previous_key=LINK['key'], previous_active_from=4000)


def test_a_rotated_link_in_its_window_gets_the_previous_macsec_key_too():
    secrets = link_secrets(ROTATED)
    before = link_secrets(LINK)
    assert secrets['previous_macsec_ckn_hex'] == before['macsec_ckn_hex']
    assert secrets['previous_macsec_cak_hex'] == before['macsec_cak_hex']
    assert secrets['macsec_cak_hex'] != before['macsec_cak_hex'] and secrets['macsec_ckn_hex'] != before['macsec_ckn_hex']
    assert (secrets['generation'], secrets['active_from'], secrets['previous_active_from']) == (2, 8600, 4000)
    assert secrets['previous_ppk_id'] == LINK['ppk_id']
    assert len(link_secrets(ROTATED, 128)['previous_macsec_cak_hex']) == 32
    assert ROTATED['previous_key'] not in secrets.values() and ROTATED['key'] not in secrets.values()


def test_without_a_previous_key_nothing_of_it_is_returned():
    secrets = link_secrets(dict(ROTATED, previous_key=None, previous_active_from=None))
    assert not [name for name in secrets if name.startswith('previous_macsec')]
    assert secrets['active_from'] == 8600
    assert 'active_from' not in link_secrets(LINK) and 'generation' not in link_secrets(LINK)


@pytest.mark.parametrize('change, problem', [
    (dict(previous_ppk_id=None), 'previous_key comes with previous_ppk_id'),
    (dict(previous_key='zz' * 32), 'link_secrets for link A--B'),
    (dict(previous_key='6b' * 8), 'at least 32 bytes'),
])
def test_a_bad_previous_key_is_named_never_shown(change, problem):
    with pytest.raises(AnsibleFilterError) as err:
        link_secrets(dict(ROTATED, **change))
    assert problem in str(err.value) and '6b' * 8 not in str(err.value) and '5a' * 8 not in str(err.value)


def test_the_filter_is_the_model_s_derivation():
    from ansible_collections.qsafe.keyfabric.plugins.module_utils import mesh_inventory
    assert link_secrets(LINK) == mesh_inventory.link_secrets(LINK)
    assert link_secrets(ROTATED, 128) == mesh_inventory.link_secrets(ROTATED, 128)
