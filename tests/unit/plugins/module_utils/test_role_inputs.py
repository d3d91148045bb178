# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.qsafe.keyfabric.plugins.module_utils import mesh_inventory
from ansible_collections.qsafe.keyfabric.plugins.module_utils._role_inputs import NETMASKS


def role_input_errors(inputs, role):
    """As the role_input_errors filter calls it (tests/unit/plugins/filter/test_role_input_errors.py: the wrapper)."""
    return mesh_inventory.role_input_errors(role, inputs)


PPK, PSK = 'ab' * 32, 'cd' * 32


def ios_peer(name, number, **extra):
    peer = dict(name=name, link_id='hub--%s' % name, underlay_ip='198.51.100.%d' % number, tunnel_ip='100.64.0.%d' % number,
                ppk_id='qkf-%016x' % number, ppk_hex=PPK, ike_psk_hex=PSK)
    peer.update(extra)
    return peer


def ios_inputs(**extra):
    inputs = dict(dmvpn_ios_xe_site_name='spoke-1', dmvpn_ios_xe_role='spoke', dmvpn_ios_xe_underlay_interface='GigabitEthernet1',
                  dmvpn_ios_xe_underlay_ip='198.51.100.1', dmvpn_ios_xe_tunnel_interface='Tunnel100', dmvpn_ios_xe_tunnel_ip='100.64.0.1',
                  dmvpn_ios_xe_tunnel_mask='255.255.255.0', dmvpn_ios_xe_nhrp_network_id=100, dmvpn_ios_xe_mode='render',
                  dmvpn_ios_xe_output_dir='/tmp/out', dmvpn_ios_xe_peers=[ios_peer('hub', 2), ios_peer('spoke-2', 3)],
                  dmvpn_ios_xe_hubs=[dict(name='hub', tunnel_ip='100.64.0.2', underlay_ip='198.51.100.2')],
                  dmvpn_ios_xe_skip_clients=[])
    inputs.update(extra)
    return inputs


def swan_peer(name, number, **extra):
    peer = dict(name=name, link_id='a--%s' % name, underlay_ip='198.51.100.%d' % number, tunnel_ip='100.64.0.%d' % number,
                ppk_id='qkf-%016x' % number, ppk_hex=PPK, ike_psk_hex=PSK)
    peer.update(extra)
    return peer


def swan_inputs(**extra):
    inputs = dict(strongswan_site_name='a', strongswan_site_local_id='a', strongswan_site_underlay_ip='198.51.100.1',
                  strongswan_site_tunnel_ip='100.64.0.1', strongswan_site_mode='render', strongswan_site_output_dir='/tmp/out',
                  strongswan_site_peers=[swan_peer('b', 2), swan_peer('c', 3)])
    inputs.update(extra)
    return inputs


def test_good_inputs_have_no_errors():
    assert role_input_errors(ios_inputs(), 'dmvpn_ios_xe') == []
    assert role_input_errors(swan_inputs(), 'strongswan_site') == []


def test_netmasks_are_slash_8_to_30():
    assert '255.0.0.0' in NETMASKS and '255.255.255.252' in NETMASKS and len(NETMASKS) == 23
    assert '255.255.255.254' not in NETMASKS and '255.255.0.255' not in NETMASKS


@pytest.mark.parametrize('change, message', [
    (dict(dmvpn_ios_xe_underlay_ip='198.51.100'), 'dmvpn_ios_xe_underlay_ip: not an IPv4 address: 198.51.100'),
    (dict(dmvpn_ios_xe_tunnel_ip='127.0.0.1'), 'dmvpn_ios_xe_tunnel_ip: 127.0.0.1 is not a unicast host address'),
    (dict(dmvpn_ios_xe_tunnel_interface='Tun 1'), 'dmvpn_ios_xe_tunnel_interface: must be Tunnel<number>, got Tun 1'),
    (dict(dmvpn_ios_xe_tunnel_mask='255.255.255.254'), 'dmvpn_ios_xe_tunnel_mask: not a netmask from /8 to /30: 255.255.255.254'),
    (dict(dmvpn_ios_xe_nhrp_network_id='zero'), 'dmvpn_ios_xe_nhrp_network_id: must be 1 to 4294967295'),
    (dict(dmvpn_ios_xe_output_dir=''), 'dmvpn_ios_xe_output_dir: required in render mode'),
    (dict(dmvpn_ios_xe_peers=[]), 'dmvpn_ios_xe_peers: a site needs at least one peer'),
    (dict(dmvpn_ios_xe_peers=[ios_peer('hub', 2, ppk_hex=PPK[:62])]),
     'dmvpn_ios_xe_peers[0].ppk_hex (peer hub): the PPK must be at least 256 bits (64 hex digits), got 248 bits'),
    (dict(dmvpn_ios_xe_peers=[ios_peer('hub', 2, ike_psk_hex=PSK + 'a')]),
     'dmvpn_ios_xe_peers[0].ike_psk_hex (peer hub): the IKEv2 pre-shared key must be whole bytes (an even number of hex digits), got 65 digits'),
    (dict(dmvpn_ios_xe_peers=[ios_peer('hub', 2, ppk_hex='zz' * 32)]), 'dmvpn_ios_xe_peers[0].ppk_hex (peer hub): the PPK must be hex digits only'),
    (dict(dmvpn_ios_xe_peers=[ios_peer('hub', 2), ios_peer('hub', 3)]), 'dmvpn_ios_xe_peers: duplicate name hub'),
    (dict(dmvpn_ios_xe_peers=[ios_peer('spoke-1', 2)]), 'dmvpn_ios_xe_peers[0].name (peer spoke-1): is this site itself'),
    (dict(dmvpn_ios_xe_peers=[ios_peer('hub', 1)]), "dmvpn_ios_xe_peers[0].underlay_ip (peer hub): is this site's own dmvpn_ios_xe_underlay_ip"),
    (dict(dmvpn_ios_xe_hubs=[]), 'dmvpn_ios_xe_hubs: a spoke needs at least one hub (its NHS)'),
    (dict(dmvpn_ios_xe_hubs=[dict(name='hub', tunnel_ip='100.64.0.2', underlay_ip='198.51.100.9')]),
     'dmvpn_ios_xe_hubs[0].underlay_ip (hub hub): no entry of dmvpn_ios_xe_peers has this address'),
    (dict(dmvpn_ios_xe_peers=[ios_peer('hub', 2, ppk_source='skip', ppk_hex=None, skip_client='NOPE')]),
     'dmvpn_ios_xe_peers[0].skip_client (peer hub): must name an entry of dmvpn_ios_xe_skip_clients, got NOPE'),
    (dict(dmvpn_ios_xe_skip_clients=[dict(name='K', server_ip='192.0.2.1', server_port=0, psk_identity='x', psk_hex=PSK)]),
     'dmvpn_ios_xe_skip_clients[0].server_port (client K): must be 1 to 65535'),
])
def test_dmvpn_ios_xe_errors_name_the_field(change, message):
    errors = role_input_errors(ios_inputs(**change), 'dmvpn_ios_xe')
    assert any(error.startswith(message) for error in errors), errors
    assert not any(PPK in error or PSK in error for error in errors)


def test_a_long_bad_value_is_cut():
    errors = role_input_errors(ios_inputs(dmvpn_ios_xe_underlay_interface='x ' * 60), 'dmvpn_ios_xe')
    assert errors == ['dmvpn_ios_xe_underlay_interface: not an interface name: ' + ('x ' * 22).rstrip() + '...'], errors


@pytest.mark.parametrize('change, message', [
    (dict(strongswan_site_name='a b'), 'strongswan_site_name must be letters, digits, - and _ (got a b)'),
    (dict(strongswan_site_local_id='a b'), 'strongswan_site_local_id must be one word'),
    (dict(strongswan_site_tunnel_ip='100.64.0.300'), 'strongswan_site_tunnel_ip is not an IPv4 or IPv6 address (got 100.64.0.300)'),
    (dict(strongswan_site_output_dir=''), 'strongswan_site_output_dir is required in render mode'),
    (dict(strongswan_site_peers=[swan_peer('a', 2)]), 'strongswan_site_peers[0] (a): name is this site'),
    (dict(strongswan_site_peers=[swan_peer('b', 2, underlay_ip='2001:db8::2')]),
     'strongswan_site_peers[0] (b): underlay_ip is not of the address family of strongswan_site_underlay_ip'),
    (dict(strongswan_site_peers=[swan_peer('b', 2, ppk_hex=PPK[:-1])]),
     'strongswan_site_peers[0] (b): ppk_hex must be an even number of hex digits, at least 64 (256 bits)'),
    (dict(strongswan_site_peers=[swan_peer('b', 2), swan_peer('c', 3, ppk_id='qkf-%016x' % 2)]),
     'strongswan_site_peers: two peers have the ppk_id qkf-0000000000000002 (ppk_id must be unique)'),
])
def test_strongswan_site_errors_name_the_field(change, message):
    errors = role_input_errors(swan_inputs(**change), 'strongswan_site')
    assert any(error.startswith(message) for error in errors), errors


def test_ipv6_sites_are_accepted():
    inputs = swan_inputs(strongswan_site_underlay_ip='2001:db8::1', strongswan_site_tunnel_ip='fd00::1',
                         strongswan_site_peers=[swan_peer('b', 2, underlay_ip='2001:db8::2', tunnel_ip='fd00::2')])
    assert role_input_errors(inputs, 'strongswan_site') == []


def test_unknown_role_and_bad_input_are_errors():
    with pytest.raises(mesh_inventory.MeshInventoryError, match='role must be one of dmvpn_ios_xe, macsec_link, strongswan_site'):
        role_input_errors({}, 'mesh_site')
    with pytest.raises(mesh_inventory.MeshInventoryError, match='must be a dict'):
        role_input_errors([], 'dmvpn_ios_xe')


# -- macsec_link (was Jinja in roles/macsec_link/vars/main.yml) ---------------------------------

CAK = 'ef' * 32


def macsec_link(link_id, interface, **extra):
    link = dict(link_id=link_id, peer='dc-2', interface=interface, ckn_hex='0a' * 16, cak_hex=CAK, cipher_suite='gcm-aes-256')
    link.update(extra)
    return link


def macsec_inputs(**extra):
    inputs = dict(macsec_link_platform='ios_xe', macsec_link_mode='render', macsec_link_output_dir='/tmp/out',
                  macsec_link_key_server_priority=None, macsec_link_ios_xe_rollover_overlap=60,
                  macsec_link_links=[macsec_link('DC-1--DC-2', 'Te0/0/1'), macsec_link('DC-1--DC-3', 'Te0/0/2', ckn_hex='0b' * 16)])
    inputs.update(extra)
    return inputs


def test_good_macsec_inputs_have_no_errors():
    assert role_input_errors(macsec_inputs(), 'macsec_link') == []
    rotated = macsec_link('DC-1--DC-2', 'Te0/0/1', generation=2, active_from=1900000000,
                          previous=dict(ckn_hex='0c' * 16, cak_hex='12' * 32, active_from=1800000000))
    assert role_input_errors(macsec_inputs(macsec_link_links=[rotated]), 'macsec_link') == []


@pytest.mark.parametrize('change, message', [
    (dict(macsec_link_platform='eos'), 'macsec_link_platform must be one of ios_xe, junos, linux'),
    (dict(macsec_link_output_dir=''), 'macsec_link_output_dir is required in render mode'),
    (dict(macsec_link_key_server_priority=256), 'macsec_link_key_server_priority must be from 0 to 255'),
    (dict(macsec_link_ios_xe_rollover_overlap='-1'), 'macsec_link_ios_xe_rollover_overlap must be from 0 to 86400 seconds'),
    (dict(macsec_link_ios_xe_rollover_overlap=86401), 'macsec_link_ios_xe_rollover_overlap must be from 0 to 86400 seconds'),
    (dict(macsec_link_links=[macsec_link('DC 1', 'Te0/0/1')]), 'macsec_link_links[0] (link DC 1): link_id may hold letters'),
    (dict(macsec_link_links=[macsec_link('A--B', 'Te0/0/1'), macsec_link('a--b', 'Te0/0/2', ckn_hex='0b' * 16)]),
     'macsec_link_links[1] (link a--b): link_id is given twice (link IDs are compared ignoring case)'),
    (dict(macsec_link_links=[macsec_link('A--B', 'Te0/0/1'), macsec_link('A--C', 'Te0/0/1', ckn_hex='0b' * 16)]),
     'macsec_link_links[1] (link A--C): interface Te0/0/1 already carries link A--B (one link per interface)'),
    (dict(macsec_link_platform='linux', macsec_link_links=[macsec_link('A--B', 'eth1', cipher_suite='gcm-aes-xpn-256')]),
     'macsec_link_links[0] (link A--B): cipher_suite gcm-aes-xpn-256 is not available on platform linux '
     '(wpa_supplicant has no XPN cipher suite): use gcm-aes-128 or gcm-aes-256'),
    (dict(macsec_link_links=[macsec_link('A--B', 'Te0/0/1', ckn_hex='0g')]), 'macsec_link_links[0] (link A--B): ckn_hex must be hex digits only'),
    (dict(macsec_link_links=[macsec_link('A--B', 'Te0/0/1', ckn_hex='abc')]),
     'macsec_link_links[0] (link A--B): ckn_hex must be an even number of hex digits from 2 to 64 (1 to 32 bytes), got 3'),
    (dict(macsec_link_links=[macsec_link('A--B', 'Te0/0/1', cak_hex='ab' * 16)]),
     'macsec_link_links[0] (link A--B): cak_hex must be 64 hex digits (a 256-bit CAK) for cipher_suite gcm-aes-256, got 32'),
    (dict(macsec_link_links=[macsec_link('A--B', 'Te0/0/1', generation=0)]), 'macsec_link_links[0] (link A--B): generation must be a whole number from 1'),
    (dict(macsec_link_links=[macsec_link('A--B', 'Te0/0/1', active_from=12)]),
     'macsec_link_links[0] (link A--B): active_from must be a UNIX time from 2000 to 2035 (IOS-XE key lifetimes end in 2035)'),
    (dict(macsec_link_links=[macsec_link('A--B', 'Te0/0/1', previous='x')]),
     'macsec_link_links[0] (link A--B): previous must be a dict with ckn_hex and cak_hex (the key being replaced)'),
    (dict(macsec_link_links=[macsec_link('A--B', 'Te0/0/1', previous=dict(ckn_hex='0A' * 16, cak_hex='12' * 32))]),
     'macsec_link_links[0] (link A--B): previous.ckn_hex is the same as ckn_hex (a rotated key has a new CKN)'),
    (dict(macsec_link_links=[macsec_link('A--B', 'Te0/0/1', previous=dict(ckn_hex='0c' * 16, cak_hex='12' * 32))]),
     'macsec_link_links[0] (link A--B): previous needs active_from (when the new key takes over from it)'),
    (dict(macsec_link_links=[macsec_link('A--B', 'Te0/0/1', active_from=1800000000,
                                         previous=dict(ckn_hex='0c' * 16, cak_hex='12' * 32, active_from=1800000000))]),
     'macsec_link_links[0] (link A--B): previous.active_from must come before active_from'),
])
def test_bad_macsec_inputs_are_named(change, message):
    errors = role_input_errors(macsec_inputs(**change), 'macsec_link')
    assert any(error.startswith(message) for error in errors), errors
    assert not any(CAK in error or '12' * 32 in error for error in errors)
