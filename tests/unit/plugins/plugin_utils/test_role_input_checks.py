# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.qsafe.keyfabric.plugins.filter.role_input_errors import role_input_errors
from ansible_collections.qsafe.keyfabric.plugins.plugin_utils.role_input_checks import NETMASKS

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
    with pytest.raises(AnsibleFilterError, match='role must be one of dmvpn_ios_xe, strongswan_site'):
        role_input_errors({}, 'macsec_link')
    with pytest.raises(AnsibleFilterError, match='must be a dict'):
        role_input_errors([], 'dmvpn_ios_xe')
