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


def skip_sites():
    """a and b: IOS-XE routers that speak SKIP to their KMEs; c: a Linux site over ETSI 014."""
    hostvars = copy.deepcopy(SITES)
    for name, address in (('a', '192.0.2.11'), ('b', '192.0.2.12')):
        hostvars[name].update(qsafe_site_key_interface='skip', qsafe_site_skip_server_ip=address)
    hostvars['b']['qsafe_site_skip_server_port'] = 8443
    hostvars['b']['qsafe_site_skip_psk_identity'] = 'router-b'
    return hostvars


SECRETS = [dict(link_id=link_id, ppk_id='qkf-%d' % n, ppk_hex='11' * 32, ike_psk_hex='22' * 32)
           for n, link_id in enumerate(('a--b', 'a--c', 'b--c'))]


def test_a_link_between_two_skip_routers_gets_a_dynamic_ppk_and_no_qkd_through_the_controller():
    result = plan(hostvars=skip_sites())
    links = dict((link['link_id'], link) for link in result['links'])
    assert [links[link_id]['ppk_source'] for link_id in ('a--b', 'a--c', 'b--c')] == ['skip', 'manual', 'manual']
    keying = dict((term['link_id'], term) for term in result['keying'])
    assert keying['a--b']['qkd'] is False and keying['a--b']['policy'] == 'pqc'
    # the ends keep their interface (their KMEs may serve SKIP only); qkd false: the controller fetches no QKD key
    assert keying['a--b']['master'] == dict(sae_id='SAE-A', interface='skip')
    # a link where only one end speaks SKIP: manual PPK, keyed by the controller, each end over its own interface
    assert 'qkd' not in keying['a--c'] and keying['a--c']['master'] == dict(sae_id='SAE-A', interface='skip')
    config = site_config(result, 'b', SECRETS)
    assert config['skip_clients'] == [dict(name='QSAFE-SKIP', server_ip='192.0.2.12', server_port=8443,
                                           psk_identity='router-b')]
    peers = dict((peer['name'], peer) for peer in config['ipsec_peers'])
    assert peers['a'] == dict(name='a', link_id='a--b', underlay_ip='198.51.100.1', tunnel_ip='100.64.0.1',
                              ppk_id='qkf-0', ike_psk_hex='22' * 32, initiator=False, ppk_source='skip',
                              skip_client='QSAFE-SKIP')
    assert peers['c']['ppk_hex'] == '11' * 32 and 'ppk_source' not in peers['c']
    assert site_config(result, 'c', SECRETS)['skip_clients'] == []
    assert result['sites']['a']['skip_client']['psk_identity'] == 'SAE-A'   # defaults to the SAE ID
    assert 'psk_hex' not in repr(result), 'the plan is public: no SKIP PSK in it'


@pytest.mark.parametrize('policy, without_qkd', [
    ('qkd', 'pqc'), ('pqc', 'pqc'), ('any', 'any'),
    (dict(require=['qkd', 'pqc'], on_missing='degrade'), dict(require=['pqc'], on_missing='degrade')),
    (dict(require=['qkd']), dict(require=['pqc'])),
])
def test_a_dynamic_ppk_links_controller_key_drops_only_the_qkd_requirement(policy, without_qkd):
    result = plan(sites=('a', 'b'), hostvars=skip_sites(), link_defaults=dict(policy=policy))
    assert result['keying'][0]['policy'] == without_qkd and result['links'][0]['policy'] == policy


@pytest.mark.parametrize('change, ppk_source', [
    (lambda hv: hv['b'].pop('qsafe_site_skip_server_ip'), 'manual'),        # b's router has no SKIP client
    (lambda hv: hv['b'].update(qsafe_site_key_interface='etsi014'), 'manual'),  # b's KME is not asked over SKIP
    (lambda hv: None, 'skip'),
])
def test_a_dynamic_ppk_needs_a_skip_client_at_both_ends(change, ppk_source):
    hostvars = skip_sites()
    change(hostvars)
    assert plan(sites=('a', 'b'), hostvars=hostvars)['links'][0]['ppk_source'] == ppk_source


def test_an_ipsec_and_macsec_link_stays_keyed_by_the_controller():
    result = plan(sites=('a', 'b'), hostvars=skip_sites(), link_defaults=dict(type='ipsec+macsec'))
    assert result['links'][0]['ppk_source'] == 'manual' and 'qkd' not in result['keying'][0]


def test_a_bad_skip_port_is_named():
    hostvars = skip_sites()
    hostvars['b']['qsafe_site_skip_server_port'] = 70000
    with pytest.raises(MeshInventoryError) as err:
        plan(hostvars=hostvars)
    assert 'site b: qsafe_site_skip_server_port must be 1 to 65535, got 70000' in str(err.value)


# -- link secrets and role input checks: the same module the filters and mesh_render use -----------

@pytest.mark.parametrize('record, problem', [
    ({}, 'needs a hybrid_key result'),
    (dict(link_id='a--b', key='zz' * 32, ppk_id='qkf-1'), 'link_secrets for link a--b'),
    (dict(link_id='a--b', key='5a' * 32, ppk_id='qkf-1', previous_key='5b' * 32), 'previous_key comes with previous_ppk_id'),
])
def test_link_secrets_fails_with_a_model_error_naming_the_link_never_the_key(record, problem):
    from ansible_collections.qsafe.keyfabric.plugins.module_utils.mesh_inventory import link_secrets
    with pytest.raises(MeshInventoryError) as err:
        link_secrets(record)
    assert problem in str(err.value) and '5a' * 8 not in str(err.value) and '5b' * 8 not in str(err.value)


def test_every_role_has_its_input_checks_here():
    from ansible_collections.qsafe.keyfabric.plugins.module_utils.mesh_inventory import ROLES, role_input_errors
    assert ROLES == ('dmvpn_ios_xe', 'macsec_link', 'strongswan_site')
    assert role_input_errors('macsec_link', dict(macsec_link_platform='linux', macsec_link_mode='push',
                                                 macsec_link_ios_xe_rollover_overlap=60, macsec_link_links=[])) == []
    with pytest.raises(MeshInventoryError, match='role must be one of dmvpn_ios_xe, macsec_link, strongswan_site'):
        role_input_errors('mesh_site', {})
