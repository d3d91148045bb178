"""The dmvpn_ios_xe role: DMVPN phase 3 sites on IOS-XE keyed per site pair with RFC 8784 PPKs.

The role renders through ansible-playbook (include_role); each rendered configuration is read back
with a real IOS configuration parser (ciscoconfparse2) and checked for structure: every peer has its
own keyring peer with its address and its PPK, the tunnel's protection chain (ipsec profile ->
IKEv2 profile -> keyring) resolves to objects that exist, hubs redirect and spokes take shortcuts
towards every hub. No key byte may reach the playbook output, even with -vvvv --diff.
"""

import itertools
import json
import os
import re
import stat

import pytest
from ciscoconfparse2 import CiscoConfParse

from playbook_support import ansible_playbook, key_spellings, recap, run_tasks

ROLE = 'qsafe.keyfabric.dmvpn_ios_xe'
# name: (role, underlay_ip, tunnel_ip)
SITES = {
    'mad-1': ('hub', '198.51.100.1', '100.64.0.1'),
    'mad-2': ('spoke', '198.51.100.2', '100.64.0.2'),
    'mad-3': ('spoke', '198.51.100.3', '100.64.0.3'),
}


def mesh_keys():
    """Fresh keys for every site pair: {(a, b): {link_id, ppk_id, ppk, psk}} with a < b."""
    return {(a, b): dict(link_id='%s--%s' % (a, b), ppk_id='qkf-' + os.urandom(8).hex(),
                         ppk=os.urandom(32), psk=os.urandom(32))
            for a, b in itertools.combinations(sorted(SITES), 2)}


def pair(keys, a, b):
    return keys[tuple(sorted((a, b)))]


def peer_entry(keys, site, other):
    link = pair(keys, site, other)
    return dict(name=other, link_id=link['link_id'], underlay_ip=SITES[other][1], tunnel_ip=SITES[other][2],
                ppk_id=link['ppk_id'], ppk_hex=link['ppk'].hex(), ike_psk_hex=link['psk'].hex())


def site_vars(site, keys, output_dir, **overrides):
    role, underlay_ip, tunnel_ip = SITES[site]
    values = dict(
        dmvpn_ios_xe_site_name=site, dmvpn_ios_xe_role=role, dmvpn_ios_xe_underlay_interface='GigabitEthernet1',
        dmvpn_ios_xe_underlay_ip=underlay_ip, dmvpn_ios_xe_tunnel_ip=tunnel_ip, dmvpn_ios_xe_tunnel_mask='255.255.255.0',
        dmvpn_ios_xe_nhrp_network_id=100, dmvpn_ios_xe_mode='render', dmvpn_ios_xe_output_dir=str(output_dir),
        dmvpn_ios_xe_hubs=[dict(name=name, tunnel_ip=SITES[name][2], underlay_ip=SITES[name][1])
                           for name in sorted(SITES) if SITES[name][0] == 'hub' and name != site],
        dmvpn_ios_xe_peers=[peer_entry(keys, site, other) for other in sorted(SITES) if other != site])
    values.update(overrides)
    return values


def render(tmp_path, *site_var_sets, args=()):
    """One play (tmp_path/play.yml), one include_role task per site; returns (rc, output)."""
    tasks = ''.join('- name: Site {site}\n  ansible.builtin.include_role:\n    name: {role}\n  vars: {vars}\n'.format(
        site=values['dmvpn_ios_xe_site_name'], role=ROLE, vars=json.dumps(values)) for values in site_var_sets)
    return run_tasks(tmp_path, tasks, *args)


def config_path(output_dir, site):
    return os.path.join(str(output_dir), site, 'ios_xe.cfg')


def read(output_dir, site, mode='r'):
    with open(config_path(output_dir, site), mode) as handle:
        return handle.read()


def parse(output_dir, site):
    return CiscoConfParse(read(output_dir, site).splitlines(), syntax='ios')


def one(parsed, regex):
    """The single top-level object matching regex."""
    found = parsed.find_objects(regex)
    assert len(found) == 1, 'expected one %r, found %d' % (regex, len(found))
    return found[0]


def child_value(parent, regex):
    """The first group of the one child line of parent matching regex (None when there is none)."""
    values = [child.re_match_typed(regex, default='') for child in parent.children]
    values = [value for value in values if value]
    assert len(values) <= 1, 'more than one %r under %r' % (regex, parent.text)
    return values[0] if values else None


def all_keys(keys):
    return [link[kind] for link in keys.values() for kind in ('ppk', 'psk')]


def assert_no_key_in(text, secrets, what='the playbook output'):
    for secret in secrets:
        for spelling in key_spellings(secret):
            assert spelling not in text, 'key bytes in %s' % what


def check_site(parsed, site, keys, peers=None):
    """The structure of one site's configuration."""
    role, underlay_ip, tunnel_ip = SITES[site]
    peers = sorted(peers if peers is not None else [name for name in SITES if name != site])

    # The protection chain: tunnel -> ipsec profile -> IKEv2 profile -> keyring.
    tunnel = one(parsed, r'^interface Tunnel100$')
    ipsec_name = child_value(tunnel, r'^\s+tunnel protection ipsec profile (\S+)$')
    assert ipsec_name, 'tunnel without tunnel protection'
    ipsec_profile = one(parsed, r'^crypto ipsec profile %s$' % re.escape(ipsec_name))
    transform = child_value(ipsec_profile, r'^\s+set transform-set (\S+)$')
    assert parsed.find_objects(r'^crypto ipsec transform-set %s esp-gcm 256$' % re.escape(transform))
    ikev2_name = child_value(ipsec_profile, r'^\s+set ikev2-profile (\S+)$')
    assert ikev2_name, 'ipsec profile without set ikev2-profile'
    ikev2_profile = one(parsed, r'^crypto ikev2 profile %s$' % re.escape(ikev2_name))
    keyring_name = child_value(ikev2_profile, r'^\s+keyring ppk (\S+)$')
    assert keyring_name and child_value(ikev2_profile, r'^\s+keyring local (\S+)$') == keyring_name
    assert ikev2_profile.find_child_objects(r'^\s+authentication local pre-share$')
    assert ikev2_profile.find_child_objects(r'^\s+authentication remote pre-share$')
    keyring = one(parsed, r'^crypto ikev2 keyring %s$' % re.escape(keyring_name))

    # One keyring peer per site pair, with its address, its PSK and its PPK (the pair's own key).
    keyring_peers = dict((child.re_match_typed(r'^\s+peer (\S+)$'), child) for child in keyring.children
                         if child.re_match_typed(r'^\s+peer (\S+)$'))
    assert sorted(keyring_peers) == peers
    for name in peers:
        link, entry = pair(keys, site, name), keyring_peers[name]
        assert child_value(entry, r'^\s+address (\S+)$') == SITES[name][1]
        assert child_value(entry, r'^\s+pre-shared-key hex ([0-9a-f]+)$') == link['psk'].hex()
        ppk = entry.find_child_objects(r'^\s+ppk manual id %s key hex [0-9a-f]{64,} required$' % re.escape(link['ppk_id']))
        assert len(ppk) == 1, 'peer %s of %s has no manual PPK line with its ppk_id' % (name, site)
        assert ppk[0].text.split()[6] == link['ppk'].hex()
    matched = sorted(child.re_match_typed(r'^\s+match identity remote address (\S+) 255\.255\.255\.255$')
                     for child in ikev2_profile.children if child.re_match_typed(r'^\s+match identity remote address (\S+)'))
    assert matched == sorted(SITES[name][1] for name in peers)

    # No wildcard-address peer carries a PPK (there is no wildcard peer at all).
    for keyring_obj in parsed.find_objects(r'^crypto ikev2 keyring '):
        for entry in keyring_obj.children:
            address = child_value(entry, r'^\s+address (.+)$') or ''
            wildcard = address.split()[0] == '0.0.0.0' or (len(address.split()) > 1 and address.split()[1] != '255.255.255.255')
            assert not (wildcard and entry.find_child_objects(r'^\s+ppk ')), 'a wildcard peer carries a PPK'
            assert not wildcard

    # DMVPN phase 3.
    assert child_value(tunnel, r'^\s+ip address (\S+ \S+)$') == tunnel_ip + ' 255.255.255.0'
    assert child_value(tunnel, r'^\s+ip nhrp network-id (\d+)$') == '100'
    assert tunnel.find_child_objects(r'^\s+tunnel mode gre multipoint$')
    assert child_value(tunnel, r'^\s+tunnel source (\S+)$') == 'GigabitEthernet1'
    nhs = sorted(child.re_match_typed(r'^\s+ip nhrp nhs (\S+ nbma \S+) multicast$') for child in tunnel.children
                 if child.re_match_typed(r'^\s+ip nhrp nhs (\S+)'))
    if role == 'hub':
        assert tunnel.find_child_objects(r'^\s+ip nhrp redirect$')
        assert tunnel.find_child_objects(r'^\s+ip nhrp map multicast dynamic$')
        assert not nhs and not tunnel.find_child_objects(r'^\s+ip nhrp shortcut$')
    else:
        assert tunnel.find_child_objects(r'^\s+ip nhrp shortcut$')
        assert nhs == sorted('%s nbma %s' % (SITES[hub][2], SITES[hub][1]) for hub in SITES if SITES[hub][0] == 'hub')
        assert not tunnel.find_child_objects(r'^\s+ip nhrp redirect$')
    return keyring_peers


@pytest.fixture(scope='module')
def mesh(tmp_path_factory):
    """A hub and two spokes rendered once with -vvvv --diff: (output_dir, keys, rc, output, playbook)."""
    tmp_path = tmp_path_factory.mktemp('dmvpn-mesh')
    keys, output_dir = mesh_keys(), tmp_path / 'rendered'
    rc, output = render(tmp_path, *[site_vars(site, keys, output_dir) for site in sorted(SITES)],
                        args=('-vvvv', '--diff'))
    return output_dir, keys, rc, output, str(tmp_path / 'play.yml')


def test_hub_and_spokes_render_with_the_expected_structure(mesh):
    output_dir, keys, rc, output, _playbook = mesh
    assert rc == 0, output
    ppk_ids = {}
    for site in SITES:
        for name, entry in check_site(parse(output_dir, site), site, keys).items():
            ppk_ids[(site, name)] = entry.find_child_objects(r'^\s+ppk manual id ')[0].text.split()[3]
    for a, b in itertools.combinations(SITES, 2):
        assert ppk_ids[(a, b)] == ppk_ids[(b, a)] == pair(keys, a, b)['ppk_id'], 'both ends of %s--%s' % (a, b)


def test_no_key_byte_in_verbose_diff_output_and_files_are_private(mesh):
    output_dir, keys, rc, output, _playbook = mesh
    assert rc == 0, output
    assert_no_key_in(output, all_keys(keys))
    assert recap(output)['changed'] >= 3
    for site in SITES:
        assert stat.S_IMODE(os.stat(config_path(output_dir, site)).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(config_path(output_dir, site))).st_mode) == 0o700
        first = read(output_dir, site).splitlines()[0]
        assert first.startswith('! ') and 'Ansible managed' in first
    # The report names peers and PPK IDs, never a key.
    assert 'qkf-' in output and '"added"' in output


def test_second_run_changes_nothing(mesh):
    output_dir, _keys, rc, _output, playbook = mesh
    assert rc == 0
    before = {site: read(output_dir, site, 'rb') for site in SITES}
    rc, output = ansible_playbook(playbook)
    assert rc == 0, output
    assert recap(output)['changed'] == 0, output
    assert {site: read(output_dir, site, 'rb') for site in SITES} == before


def test_removed_peer_disappears_and_rekey_is_reported_without_keys(tmp_path):
    keys, output_dir = mesh_keys(), tmp_path / 'rendered'
    assert render(tmp_path, site_vars('mad-1', keys, output_dir))[0] == 0
    old_keys, old_ppk_id = all_keys(keys), pair(keys, 'mad-1', 'mad-2')['ppk_id']
    # mad-3 leaves the mesh; mad-1--mad-2 is re-keyed.
    new_link = dict(pair(keys, 'mad-1', 'mad-2'), ppk_id='qkf-' + os.urandom(8).hex(), ppk=os.urandom(32), psk=os.urandom(32))
    keys[('mad-1', 'mad-2')] = new_link
    rc, output = render(tmp_path, site_vars('mad-1', keys, output_dir, dmvpn_ios_xe_peers=[peer_entry(keys, 'mad-1', 'mad-2')]),
                        args=('-vvvv', '--diff'))
    assert rc == 0, output
    assert recap(output)['changed'] == 1
    check_site(parse(output_dir, 'mad-1'), 'mad-1', keys, peers=['mad-2'])
    text = read(output_dir, 'mad-1')
    assert 'mad-3' not in text and SITES['mad-3'][1] not in text
    assert_no_key_in(text, old_keys, 'the new file (old keys)')
    assert_no_key_in(output, old_keys + [new_link['ppk'], new_link['psk']])
    assert re.search(r'"removed": \[\s*"mad-3"\s*\]', output), output
    assert '"mad-2": "%s -> %s"' % (old_ppk_id, new_link['ppk_id']) in output, output


def test_check_mode_writes_nothing(tmp_path):
    keys, output_dir = mesh_keys(), tmp_path / 'rendered'
    rc, output = render(tmp_path, site_vars('mad-2', keys, output_dir), args=('--check', '--diff'))
    assert rc == 0, output
    assert recap(output)['changed'] >= 1
    assert not os.path.exists(str(output_dir))
    # An existing file stays as it is, while the report says what would change.
    assert render(tmp_path, site_vars('mad-2', keys, output_dir))[0] == 0
    before = read(output_dir, 'mad-2', 'rb')
    rc, output = render(tmp_path, site_vars('mad-2', keys, output_dir, dmvpn_ios_xe_peers=[peer_entry(keys, 'mad-2', 'mad-1')]),
                        args=('--check',))
    assert rc == 0, output
    assert read(output_dir, 'mad-2', 'rb') == before
    assert re.search(r'"removed": \[\s*"mad-3"\s*\]', output), output


def test_a_skip_peer_renders_a_dynamic_ppk_and_its_skip_client(tmp_path):
    keys, output_dir = mesh_keys(), tmp_path / 'rendered'
    skip_psk = os.urandom(32)
    peers = [peer_entry(keys, 'mad-2', 'mad-1'), dict(peer_entry(keys, 'mad-2', 'mad-3'), ppk_source='skip', skip_client='SKIP-KME')]
    del peers[1]['ppk_hex']
    rc, output = render(tmp_path, site_vars(
        'mad-2', keys, output_dir, dmvpn_ios_xe_peers=peers,
        dmvpn_ios_xe_skip_clients=[dict(name='SKIP-KME', server_ip='192.0.2.10', server_port=8443, psk_identity='mad-2',
                                        psk_hex=skip_psk.hex())]), args=('-vvvv', '--diff'))
    assert rc == 0, output
    assert_no_key_in(output, all_keys(keys) + [skip_psk])
    parsed = parse(output_dir, 'mad-2')
    client = one(parsed, r'^crypto skip-client SKIP-KME$')
    assert child_value(client, r'^\s+server ipv4 (\S+ port \d+)$') == '192.0.2.10 port 8443'
    assert child_value(client, r'^\s+psk id mad-2 key hex ([0-9a-f]+)$') == skip_psk.hex()
    keyring_peers = dict((child.re_match_typed(r'^\s+peer (\S+)$'), child)
                         for child in one(parsed, r'^crypto ikev2 keyring ').children)
    assert keyring_peers['mad-3'].find_child_objects(r'^\s+ppk dynamic SKIP-KME required$')
    assert not keyring_peers['mad-3'].find_child_objects(r'^\s+ppk manual ')
    assert keyring_peers['mad-1'].find_child_objects(r'^\s+ppk manual id %s key hex' % pair(keys, 'mad-1', 'mad-2')['ppk_id'])


def short_ppk(values):
    values['dmvpn_ios_xe_peers'][0]['ppk_hex'] = values['dmvpn_ios_xe_peers'][0]['ppk_hex'][:62]


def duplicate_peer(values):
    values['dmvpn_ios_xe_peers'].append(dict(values['dmvpn_ios_xe_peers'][0]))


def spoke_without_hubs(values):
    values['dmvpn_ios_xe_hubs'] = []


def invalid_peer_ip(values):
    values['dmvpn_ios_xe_peers'][1]['underlay_ip'] = '198.51.100.300'


def invalid_own_ip(values):
    values['dmvpn_ios_xe_underlay_ip'] = '198.51.100'


def missing_psk(values):
    del values['dmvpn_ios_xe_peers'][0]['ike_psk_hex']


def unknown_skip_client(values):
    values['dmvpn_ios_xe_peers'][0].update(ppk_source='skip', skip_client='NOPE')
    del values['dmvpn_ios_xe_peers'][0]['ppk_hex']


@pytest.mark.parametrize('spoil, message', [
    (short_ppk, 'dmvpn_ios_xe_peers[0].ppk_hex (peer mad-1): the PPK must be at least 256 bits (64 hex digits), got 248 bits'),
    (duplicate_peer, 'dmvpn_ios_xe_peers: duplicate name mad-1'),
    (spoke_without_hubs, 'dmvpn_ios_xe_hubs: a spoke needs at least one hub'),
    (invalid_peer_ip, 'dmvpn_ios_xe_peers[1].underlay_ip (peer mad-3): not an IPv4 address: 198.51.100.300'),
    (invalid_own_ip, 'dmvpn_ios_xe_underlay_ip: not an IPv4 address: 198.51.100'),
    (missing_psk, 'missing required arguments: ike_psk_hex found in dmvpn_ios_xe_peers'),
    (unknown_skip_client, 'dmvpn_ios_xe_peers[0].skip_client (peer mad-1): must name an entry of dmvpn_ios_xe_skip_clients'),
], ids=lambda value: getattr(value, '__name__', ''))
def test_bad_input_fails_early_naming_the_field(tmp_path, spoil, message):
    keys, output_dir = mesh_keys(), tmp_path / 'rendered'
    values = site_vars('mad-2', keys, output_dir)
    spoil(values)
    rc, output = render(tmp_path, values, args=('-vvvv',))
    assert rc != 0 and message in output, output
    assert 'Traceback' not in output
    assert not os.path.exists(str(output_dir)), 'something was written before the inputs were checked'
    secrets = all_keys(keys)
    if spoil is short_ppk:
        secrets.append(bytes.fromhex(values['dmvpn_ios_xe_peers'][0]['ppk_hex']))
    assert_no_key_in(output, secrets)
