# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

import pytest

from ansible_collections.qsafe.keyfabric.plugins.module_utils.mesh_inventory import (
    MeshInventoryError,
    plan_mesh,
    site_config,
)

SITES = {
    'a': dict(qsafe_site_platform='ios_xe', qsafe_site_dmvpn_role='hub', qsafe_site_sae_id='SAE-A',
              qsafe_site_underlay_ip='198.51.100.1', qsafe_site_tunnel_ip='100.64.0.1',
              qsafe_site_macsec_interfaces={'b': 'Te0/0/1'}),
    'b': dict(qsafe_site_platform='ios_xe', qsafe_site_sae_id='SAE-B', qsafe_site_underlay_ip='198.51.100.2',
              qsafe_site_tunnel_ip='100.64.0.2', qsafe_site_macsec_interfaces={'a': 'Te0/0/1'}),
    'c': dict(qsafe_site_platform='linux', qsafe_site_sae_id='SAE-C', qsafe_site_underlay_ip='198.51.100.3',
              qsafe_site_tunnel_ip='100.64.0.3'),
    'd': dict(qsafe_site_platform='junos', qsafe_site_sae_id='SAE-D', qsafe_site_underlay_ip='198.51.100.4',
              qsafe_site_tunnel_ip='100.64.0.4'),
}


def plan(sites=('a', 'b', 'c'), hostvars=None, **mesh):
    return plan_mesh(list(sites), hostvars or SITES, mesh)


def test_full_mesh_has_every_pair_once_with_a_stable_master():
    result = plan()
    assert [link['link_id'] for link in result['links']] == ['a--b', 'a--c', 'b--c']
    first = result['links'][0]
    assert (first['master_site'], first['slave_site'], first['master'], first['slave']) == ('a', 'b', 'SAE-A', 'SAE-B')
    assert result['keying'][0] == dict(link_id='a--b', master='SAE-A', slave='SAE-B', policy='qkd+pqc')
    assert result['hubs'] == [dict(name='a', tunnel_ip='100.64.0.1', underlay_ip='198.51.100.1')]


def test_listed_links_and_overrides():
    result = plan(links=[dict(sites=['c', 'a']), dict(sites=['a', 'b'], type='macsec')],
                  link_overrides=[dict(sites=['a', 'c'], policy='pqc')])
    assert [(l['link_id'], l['type'], l['policy']) for l in result['links']] == [
        ('a--b', 'macsec', 'qkd+pqc'), ('a--c', 'ipsec', 'pqc')]


@pytest.mark.parametrize('change, problem', [
    (lambda h: h['a'].pop('qsafe_site_sae_id'), 'site a: missing qsafe_site_sae_id'),
    (lambda h: h['b'].update(qsafe_site_platform='eos'), "site b: qsafe_site_platform must be one of"),
    (lambda h: h['c'].update(qsafe_site_underlay_ip='300.1.1.1'), 'site c: qsafe_site_underlay_ip is not an IP address'),
    (lambda h: h['c'].update(qsafe_site_tunnel_ip='100.64.0.1'), 'sites a and c have the same qsafe_site_tunnel_ip'),
    (lambda h: h['a'].update(qsafe_site_dmvpn_role='boss'), 'site a: qsafe_site_dmvpn_role must be hub or spoke'),
])
def test_bad_sites_are_named(change, problem):
    hostvars = copy.deepcopy(SITES)
    change(hostvars)
    with pytest.raises(MeshInventoryError) as err:
        plan(hostvars=hostvars)
    assert problem in str(err.value)


@pytest.mark.parametrize('mesh, sites, problem', [
    (dict(links=[dict(sites=['a', 'a'])]), ('a', 'b'), 'must name two different sites'),
    (dict(links=[dict(sites=['a', 'b']), dict(sites=['b', 'a'])]), ('a', 'b'), 'listed twice'),
    (dict(links=[dict(sites=['a', 'z'])]), ('a', 'b'), 'z is not a host of qsafe_sites'),
    (dict(link_overrides=[dict(sites=['a', 'z'])]), ('a', 'b'), 'a--z is not a link of the mesh'),
    (dict(link_defaults=dict(type='vxlan')), ('a', 'b'), 'type must be one of ipsec, macsec, ipsec+macsec'),
    (dict(colour='red'), ('a', 'b'), 'qsafe_mesh: unknown field colour'),
    (dict(links=[dict(sites=['a', 'b'], colour='red')]), ('a', 'b'), 'link a--b: unknown field colour'),
    (dict(), ('a', 'd'), 'site d (junos) cannot terminate ipsec links'),
    (dict(link_defaults=dict(type='macsec')), ('a', 'c'), 'site a has no qsafe_site_macsec_interfaces entry for c'),
    (dict(), ('a',), 'at least two sites'),
    (dict(links='some'), ('a', 'b'), 'must be "full" or a list'),
])
def test_bad_meshes_are_named(mesh, sites, problem):
    with pytest.raises(MeshInventoryError) as err:
        plan(sites=sites, **mesh)
    assert problem in str(err.value)


def test_site_config_joins_the_plan_with_the_secrets():
    result = plan(link_overrides=[dict(sites=['a', 'b'], type='macsec')])
    secrets = [dict(link_id=link_id, ppk_id='qkf-%d' % n, ppk_hex='11' * 32, ike_psk_hex='22' * 32,
                    macsec_ckn_hex='33' * 32, macsec_cak_hex='44' * 32) for n, link_id in enumerate(('a--b', 'a--c', 'b--c'))]
    config = site_config(result, 'a', secrets)
    assert config['link_ids'] == ['a--b', 'a--c']
    assert config['ipsec_peers'] == [dict(name='c', link_id='a--c', underlay_ip='198.51.100.3', tunnel_ip='100.64.0.3',
                                          ppk_id='qkf-1', ppk_hex='11' * 32, ike_psk_hex='22' * 32, initiator=True)]
    assert config['macsec_links'] == [dict(link_id='a--b', peer='b', interface='Te0/0/1', ckn_hex='33' * 32,
                                           cak_hex='44' * 32, cipher_suite='gcm-aes-xpn-256')]
    assert site_config(result, 'c', secrets)['ipsec_peers'][0]['initiator'] is False
    with pytest.raises(MeshInventoryError) as err:
        site_config(result, 'a', secrets[1:])
    assert 'no key for link a--b' in str(err.value)


def test_a_link_can_carry_ipsec_and_macsec_each_with_its_own_secret():
    result = plan(link_overrides=[dict(sites=['a', 'b'], type='ipsec+macsec')])
    secrets = [dict(link_id=link_id, ppk_id='qkf-%d' % n, ppk_hex='11' * 32, ike_psk_hex='22' * 32,
                    macsec_ckn_hex='33' * 32, macsec_cak_hex='44' * 32) for n, link_id in enumerate(('a--b', 'a--c', 'b--c'))]
    config = site_config(result, 'b', secrets)
    assert [peer['name'] for peer in config['ipsec_peers']] == ['a', 'c']
    assert [link['peer'] for link in config['macsec_links']] == ['a']


def test_a_rotated_macsec_link_carries_its_rollover_and_in_its_window_the_previous_key():
    result = plan(link_overrides=[dict(sites=['a', 'b'], type='macsec')])
    secrets = [dict(link_id=link_id, ppk_id='qkf-%d' % n, ppk_hex='11' * 32, ike_psk_hex='22' * 32,
                    macsec_ckn_hex='33' * 32, macsec_cak_hex='44' * 32) for n, link_id in enumerate(('a--b', 'a--c', 'b--c'))]
    secrets[0].update(generation=3, active_from=8600, previous_macsec_ckn_hex='55' * 32, previous_macsec_cak_hex='66' * 32,
                      previous_active_from=4000)
    for site in ('a', 'b'):
        link = site_config(result, site, secrets)['macsec_links'][0]
        assert (link['ckn_hex'], link['generation'], link['active_from']) == ('33' * 32, 3, 8600)
        assert link['previous'] == dict(ckn_hex='55' * 32, cak_hex='66' * 32, active_from=4000)
    # After the window: the rollover time stays (the key keeps its lifetime), the previous key is gone.
    for name in ('previous_macsec_ckn_hex', 'previous_macsec_cak_hex', 'previous_active_from'):
        del secrets[0][name]
    link = site_config(result, 'a', secrets)['macsec_links'][0]
    assert link['active_from'] == 8600 and 'previous' not in link
    # A previous key without a rollover time cannot be rendered.
    secrets[0].update(previous_macsec_ckn_hex='55' * 32, previous_macsec_cak_hex='66' * 32)
    del secrets[0]['active_from']
    with pytest.raises(MeshInventoryError) as err:
        site_config(result, 'a', secrets)
    assert 'link a--b: a previous MACsec key needs active_from' in str(err.value) and '66' * 32 not in str(err.value)


def test_linux_macsec_needs_a_suite_wpa_supplicant_has():
    hostvars = copy.deepcopy(SITES)
    hostvars['c']['qsafe_site_macsec_interfaces'] = {'a': 'eth1'}
    hostvars['a']['qsafe_site_macsec_interfaces']['c'] = 'Te0/0/2'
    with pytest.raises(MeshInventoryError) as err:
        plan(sites=('a', 'c'), hostvars=hostvars, link_defaults=dict(type='macsec'))
    assert 'site c (linux, wpa_supplicant) cannot run the XPN suite' in str(err.value)
    assert plan(sites=('a', 'c'), hostvars=hostvars, link_defaults=dict(type='macsec'), cipher_suite='gcm-aes-256')['links']


def test_each_end_keys_over_its_own_sites_interface():
    hostvars = copy.deepcopy(SITES)
    hostvars['a']['qsafe_site_key_interface'] = 'etsi004'
    hostvars['c']['qsafe_site_key_interface'] = 'etsi014'
    result = plan(hostvars=hostvars)
    assert [result['sites'][name]['key_interface'] for name in 'abc'] == ['etsi004', None, 'etsi014']
    keying = dict((term['link_id'], term) for term in result['keying'])
    assert keying['a--b']['master'] == dict(sae_id='SAE-A', interface='etsi004')
    assert keying['a--b']['slave'] == 'SAE-B'  # not set: the lookup's interface option applies
    assert keying['a--c']['slave'] == dict(sae_id='SAE-C', interface='etsi014')
    assert keying['b--c']['master'] == 'SAE-B'


def test_an_unknown_key_interface_is_named():
    hostvars = copy.deepcopy(SITES)
    hostvars['b']['qsafe_site_key_interface'] = 'etsi015'
    with pytest.raises(MeshInventoryError) as err:
        plan(hostvars=hostvars)
    assert "site b: qsafe_site_key_interface must be one of etsi014, etsi004, skip, got 'etsi015'" in str(err.value)
