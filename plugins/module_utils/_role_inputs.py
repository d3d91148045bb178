# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to mesh_inventory: the input checks of the three configuration roles that an argument spec cannot express.

dmvpn_ios_xe and strongswan_site: addresses, key lengths, duplicates, a spoke's hubs. macsec_link:
link IDs, one link per interface, cipher suites per platform, CKN and CAK lengths, rollover times.
Every message names the variable and the field, never a key's value (only its length). Reached
through ``mesh_inventory.role_input_errors`` - the ``role_input_errors`` filter the roles call before
they write anything, and the mesh_render action. They were Jinja once; a full-mesh site has hundreds
of peers, and in Python the check of a 100-site mesh costs milliseconds instead of seconds per site.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.module_utils.six.moves.collections_abc import Mapping
from ansible.module_utils.six import string_types

_OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
_IPV4 = '%s([.]%s){3}' % (_OCTET, _OCTET)
_IPV6 = ('(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|'
         '([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|'
         '([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|'
         '[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))')
IPV4_RE = re.compile('^%s$' % _IPV4)
IP_RE = re.compile('^(%s|%s)$' % (_IPV4, _IPV6))
HEX_RE = re.compile('^[0-9A-Fa-f]+$')
IOS_WORD_RE = re.compile('^[A-Za-z0-9][A-Za-z0-9._:-]*$')
IOS_INTERFACE_RE = re.compile('^[A-Za-z][A-Za-z0-9./:-]*$')
IOS_TUNNEL_RE = re.compile('^Tunnel[0-9]+$')
SWAN_NAME_RE = re.compile('^[A-Za-z0-9][A-Za-z0-9_-]*$')
SWAN_TOKEN_RE = re.compile('^[A-Za-z0-9][A-Za-z0-9._@:+/-]*$')
SWAN_KEY_RE = re.compile('^([0-9a-fA-F]{2}){32,}$')
# /8 to /30, dotted.
NETMASKS = frozenset('.'.join(str(((1 << 32) - (1 << (32 - prefix))) >> shift & 255) for shift in (24, 16, 8, 0))
                     for prefix in range(8, 31))


def _matches(pattern, value):
    return isinstance(value, string_types) and pattern.match(value) is not None


def _shown(value, length=48):
    """A value as an error message shows it: as text, cut at ``length`` (as Jinja's truncate does)."""
    text = '%s' % (value,)
    if len(text) <= length + 5:
        return text
    return text[:length - 3].rsplit(' ', 1)[0] + '...'


def _as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _duplicates(items, field):
    """Values of ``field`` seen more than once, each reported once, in the order the second one appears."""
    counts, repeated = {}, []
    for item in items:
        value = '%s' % (item.get(field),)
        counts[value] = counts.get(value, 0) + 1
        if counts[value] == 2:
            repeated.append(value)
    return repeated


# -- dmvpn_ios_xe ---------------------------------------------------------------------------------

def _ios_unicast(where, value):
    if not _matches(IPV4_RE, value):
        return '%s: not an IPv4 address: %s' % (where, _shown(value))
    first = int(value.split('.')[0])
    if first in (0, 127) or first >= 224:
        return '%s: %s is not a unicast host address' % (where, value)
    return None


def _ios_secret(where, value, what):
    if not _matches(HEX_RE, value):
        return '%s: the %s must be hex digits only' % (where, what)
    if len(value) < 64:
        return '%s: the %s must be at least 256 bits (64 hex digits), got %d bits' % (where, what, len(value) * 4)
    if len(value) % 2:
        return '%s: the %s must be whole bytes (an even number of hex digits), got %d digits' % (where, what, len(value))
    return None


def _ios_word(where, value):
    if not _matches(IOS_WORD_RE, value):
        return "%s: must be one word of letters, digits, '.', '_', ':' or '-', got %s" % (where, _shown(value))
    return None


def dmvpn_ios_xe_input_errors(inputs):
    """Errors of the dmvpn_ios_xe role's inputs (``inputs``: its variables by name)."""
    site_name = inputs.get('dmvpn_ios_xe_site_name')
    own_underlay = inputs.get('dmvpn_ios_xe_underlay_ip')
    checks = [
        _ios_word('dmvpn_ios_xe_site_name', site_name),
        _ios_unicast('dmvpn_ios_xe_underlay_ip', own_underlay),
        _ios_unicast('dmvpn_ios_xe_tunnel_ip', inputs.get('dmvpn_ios_xe_tunnel_ip')),
    ]
    interface = inputs.get('dmvpn_ios_xe_underlay_interface')
    if not _matches(IOS_INTERFACE_RE, interface):
        checks.append('dmvpn_ios_xe_underlay_interface: not an interface name: %s' % _shown(interface))
    tunnel = inputs.get('dmvpn_ios_xe_tunnel_interface')
    if not _matches(IOS_TUNNEL_RE, tunnel):
        checks.append('dmvpn_ios_xe_tunnel_interface: must be Tunnel<number>, got %s' % _shown(tunnel))
    if inputs.get('dmvpn_ios_xe_tunnel_mask') not in NETMASKS:
        checks.append('dmvpn_ios_xe_tunnel_mask: not a netmask from /8 to /30: %s' % _shown(inputs.get('dmvpn_ios_xe_tunnel_mask')))
    if not 1 <= _as_int(inputs.get('dmvpn_ios_xe_nhrp_network_id')) <= 4294967295:
        checks.append('dmvpn_ios_xe_nhrp_network_id: must be 1 to 4294967295')
    if inputs.get('dmvpn_ios_xe_mode') == 'render' and not inputs.get('dmvpn_ios_xe_output_dir'):
        checks.append('dmvpn_ios_xe_output_dir: required in render mode')

    peers = inputs.get('dmvpn_ios_xe_peers') or []
    clients = inputs.get('dmvpn_ios_xe_skip_clients') or []
    skip_names = [client.get('name') for client in clients]
    if not peers:
        checks.append('dmvpn_ios_xe_peers: a site needs at least one peer')
    for index, peer in enumerate(peers):
        at = 'dmvpn_ios_xe_peers[%d].' % index
        name = peer.get('name')
        who = ' (peer %s)' % name if isinstance(name, string_types) else ''
        checks.append(_ios_word(at + 'name' + who, name))
        if name == site_name:
            checks.append(at + 'name' + who + ': is this site itself')
        checks.append(_ios_word(at + 'link_id' + who, peer.get('link_id')))
        checks.append(_ios_word(at + 'ppk_id' + who, peer.get('ppk_id')))
        checks.append(_ios_unicast(at + 'underlay_ip' + who, peer.get('underlay_ip')))
        if peer.get('underlay_ip') == own_underlay:
            checks.append(at + 'underlay_ip' + who + ": is this site's own dmvpn_ios_xe_underlay_ip")
        if peer.get('tunnel_ip') is not None:
            checks.append(_ios_unicast(at + 'tunnel_ip' + who, peer.get('tunnel_ip')))
        checks.append(_ios_secret(at + 'ike_psk_hex' + who, peer.get('ike_psk_hex'), 'IKEv2 pre-shared key'))
        if (peer.get('ppk_source') or 'manual') == 'manual':
            if peer.get('ppk_hex') is None:
                checks.append(at + 'ppk_hex' + who + ': required with ppk_source manual')
            else:
                checks.append(_ios_secret(at + 'ppk_hex' + who, peer.get('ppk_hex'), 'PPK'))
            if peer.get('skip_client') is not None:
                checks.append(at + 'skip_client' + who + ': only with ppk_source skip')
        else:
            if peer.get('ppk_hex') is not None:
                checks.append(at + 'ppk_hex' + who + ': must be omitted with ppk_source skip (the router fetches the PPK)')
            if peer.get('skip_client') not in skip_names:
                checks.append(at + 'skip_client' + who + ': must name an entry of dmvpn_ios_xe_skip_clients, got '
                              + _shown(peer.get('skip_client')))
    for field in ('name', 'underlay_ip', 'ppk_id', 'link_id'):
        checks.extend('dmvpn_ios_xe_peers: duplicate %s %s (one keyring peer per site pair)' % (field, value)
                      for value in _duplicates(peers, field))

    if inputs.get('dmvpn_ios_xe_role') == 'spoke':
        hubs = inputs.get('dmvpn_ios_xe_hubs') or []
        if not hubs:
            checks.append('dmvpn_ios_xe_hubs: a spoke needs at least one hub (its NHS)')
        peer_addresses = set(peer.get('underlay_ip') for peer in peers)
        for index, hub in enumerate(hubs):
            at = 'dmvpn_ios_xe_hubs[%d].' % index
            who = ' (hub %s)' % hub.get('name') if isinstance(hub.get('name'), string_types) else ''
            checks.append(_ios_word(at + 'name' + who, hub.get('name')))
            checks.append(_ios_unicast(at + 'tunnel_ip' + who, hub.get('tunnel_ip')))
            checks.append(_ios_unicast(at + 'underlay_ip' + who, hub.get('underlay_ip')))
            if hub.get('name') == site_name:
                checks.append(at + 'name' + who + ': a spoke cannot be its own hub')
            elif hub.get('underlay_ip') not in peer_addresses:
                checks.append(at + 'underlay_ip' + who + ': no entry of dmvpn_ios_xe_peers has this address, '
                              'so the spoke would have no key for its hub')
        for field in ('name', 'tunnel_ip', 'underlay_ip'):
            checks.extend('dmvpn_ios_xe_hubs: duplicate %s %s' % (field, value) for value in _duplicates(hubs, field))

    for index, client in enumerate(clients):
        at = 'dmvpn_ios_xe_skip_clients[%d].' % index
        who = ' (client %s)' % client.get('name') if isinstance(client.get('name'), string_types) else ''
        checks.append(_ios_word(at + 'name' + who, client.get('name')))
        checks.append(_ios_unicast(at + 'server_ip' + who, client.get('server_ip')))
        checks.append(_ios_word(at + 'psk_identity' + who, client.get('psk_identity')))
        if not 1 <= _as_int(client.get('server_port')) <= 65535:
            checks.append(at + 'server_port' + who + ': must be 1 to 65535')
        checks.append(_ios_secret(at + 'psk_hex' + who, client.get('psk_hex'), 'SKIP pre-shared key'))
    if len(skip_names) != len(set('%s' % (name,) for name in skip_names)):
        checks.append('dmvpn_ios_xe_skip_clients: duplicate name')
    return [check.strip() for check in checks if check and check.strip()]


# -- strongswan_site ------------------------------------------------------------------------------

def strongswan_site_input_errors(inputs):
    """Errors of the strongswan_site role's inputs (``inputs``: its variables by name)."""
    errors = []
    name = inputs.get('strongswan_site_name')
    if not _matches(SWAN_NAME_RE, name):
        errors.append('strongswan_site_name must be letters, digits, - and _ (got %s)' % (name,))
    if not _matches(SWAN_TOKEN_RE, inputs.get('strongswan_site_local_id') or name):
        errors.append('strongswan_site_local_id must be one word of letters, digits and ._@:+/-')
    own = {}
    for field in ('underlay_ip', 'tunnel_ip'):
        own[field] = inputs.get('strongswan_site_' + field)
        if not _matches(IP_RE, own[field]):
            errors.append('strongswan_site_%s is not an IPv4 or IPv6 address (got %s)' % (field, own[field]))
    if inputs.get('strongswan_site_mode') == 'render' and not inputs.get('strongswan_site_output_dir'):
        errors.append('strongswan_site_output_dir is required in render mode')
    peers = inputs.get('strongswan_site_peers') or []
    for index, peer in enumerate(peers):
        where = 'strongswan_site_peers[%d] (%s)' % (index, peer.get('name'))
        if not _matches(SWAN_NAME_RE, peer.get('name')):
            errors.append(where + ': name must be letters, digits, - and _')
        elif peer.get('name') == name:
            errors.append(where + ': name is this site (strongswan_site_name)')
        for field in ['link_id', 'ppk_id'] + (['id'] if peer.get('id') else []):
            if not _matches(SWAN_TOKEN_RE, peer.get(field)):
                errors.append(where + ': ' + field + ' must be one word of letters, digits and ._@:+/-')
        for field in ('underlay_ip', 'tunnel_ip'):
            value = peer.get(field)
            if not _matches(IP_RE, value):
                errors.append('%s: %s is not an IPv4 or IPv6 address (got %s)' % (where, field, value))
            elif (':' in value) != (':' in ('%s' % (own[field],))):
                errors.append('%s: %s is not of the address family of strongswan_site_%s' % (where, field, field))
        for field in ('ppk_hex', 'ike_psk_hex'):
            if not _matches(SWAN_KEY_RE, peer.get(field)):
                errors.append(where + ': ' + field + ' must be an even number of hex digits, at least 64 (256 bits)')
    for field in ('name', 'link_id', 'ppk_id'):
        errors.extend('strongswan_site_peers: two peers have the %s %s (%s must be unique)' % (field, value, field)
                      for value in _duplicates(peers, field))
    return errors


# -- macsec_link ----------------------------------------------------------------------------------

MACSEC_DEFAULT_SUITE = 'gcm-aes-xpn-256'
# CAK length, in hex digits, of each cipher suite (the CAK is as long as the suite's key).
MACSEC_CAK_DIGITS = {'gcm-aes-128': 32, 'gcm-aes-xpn-128': 32, 'gcm-aes-256': 64, 'gcm-aes-xpn-256': 64}
# What each platform can run. wpa_supplicant (2.10, Debian bookworm and trixie) knows GCM-AES-128
# and GCM-AES-256 only: no XPN.
MACSEC_PLATFORM_SUITES = {
    'ios_xe': ('gcm-aes-128', 'gcm-aes-256', 'gcm-aes-xpn-128', 'gcm-aes-xpn-256'),
    'junos': ('gcm-aes-128', 'gcm-aes-256', 'gcm-aes-xpn-128', 'gcm-aes-xpn-256'),
    'linux': ('gcm-aes-128', 'gcm-aes-256'),
}
# Key lifetimes and start times: UNIX times from 2000-01-01 to 2035-12-31 (IOS-XE takes years up to 2035).
MACSEC_TIME_RANGE = (946684800, 2082758399)
MACSEC_LINK_ID_RE = re.compile('^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$')
HEX_DIGITS_RE = re.compile('^[0-9A-Fa-f]*$')
DIGITS_RE = re.compile('^[0-9]+$')


def _number(value):
    """A whole number as Jinja's ``int`` filter reads it (0 when it is not a number)."""
    try:
        return int(value, 10) if isinstance(value, string_types) else int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def _digits(value):
    """Whether ``value`` written as text is digits only."""
    return DIGITS_RE.match('%s' % (value,)) is not None


def _macsec_ckn(where, field, ckn):
    if not HEX_DIGITS_RE.match(ckn):
        return '%s: %s must be hex digits only' % (where, field)
    if len(ckn) < 2 or len(ckn) > 64 or len(ckn) % 2:
        return '%s: %s must be an even number of hex digits from 2 to 64 (1 to 32 bytes), got %d' % (where, field, len(ckn))
    return None


def _macsec_cak(where, field, cak, suite):
    if not HEX_DIGITS_RE.match(cak):
        return '%s: %s must be hex digits only' % (where, field)
    if suite in MACSEC_CAK_DIGITS and len(cak) != MACSEC_CAK_DIGITS[suite]:
        return '%s: %s must be %d hex digits (a %d-bit CAK) for cipher_suite %s, got %d' % (
            where, field, MACSEC_CAK_DIGITS[suite], MACSEC_CAK_DIGITS[suite] * 4, suite, len(cak))
    return None


def _macsec_link_errors(index, link, platform, ids, interfaces):
    """Errors of one entry of macsec_link_links (``ids``, ``interfaces``: of the entries before it, updated)."""
    errors = []
    where = 'macsec_link_links[%d] (link %s)' % (index, link.get('link_id'))
    suite = ('%s' % (link.get('cipher_suite') or MACSEC_DEFAULT_SUITE,)).lower()
    ckn, cak = '%s' % (link.get('ckn_hex'),), '%s' % (link.get('cak_hex'),)
    link_id = '%s' % (link.get('link_id'),)
    if not MACSEC_LINK_ID_RE.match(link_id):
        errors.append(where + ': link_id may hold letters, digits, ".", "_" and "-", at most 48, starting with a letter or digit')
    elif link_id.lower() in ids:
        errors.append(where + ': link_id is given twice (link IDs are compared ignoring case)')
    ids.append(link_id.lower())
    interface = link.get('interface')
    if interface in interfaces:
        errors.append('%s: interface %s already carries link %s (one link per interface)' % (where, interface, interfaces[interface]))
    else:
        interfaces[interface] = link.get('link_id')
    if platform in MACSEC_PLATFORM_SUITES and suite not in MACSEC_PLATFORM_SUITES[platform]:
        errors.append('%s: cipher_suite %s is not available on platform %s (wpa_supplicant has no XPN cipher suite): use %s'
                      % (where, suite, platform, ' or '.join(MACSEC_PLATFORM_SUITES[platform])))
    errors.extend((_macsec_ckn(where, 'ckn_hex', ckn), _macsec_cak(where, 'cak_hex', cak, suite)))
    if link.get('generation') is not None and (not _digits(link['generation']) or _number(link['generation']) < 1):
        errors.append(where + ': generation must be a whole number from 1')
    times = [('active_from', link.get('active_from'))]
    previous = link.get('previous')
    if previous is not None:
        if not isinstance(previous, Mapping) or 'ckn_hex' not in previous or 'cak_hex' not in previous:
            errors.append(where + ': previous must be a dict with ckn_hex and cak_hex (the key being replaced)')
        else:
            times.append(('previous.active_from', previous.get('active_from')))
            previous_ckn, previous_cak = '%s' % (previous['ckn_hex'],), '%s' % (previous['cak_hex'],)
            ckn_error = _macsec_ckn(where, 'previous.ckn_hex', previous_ckn)
            if ckn_error is None and previous_ckn.lower() == ckn.lower():
                ckn_error = where + ': previous.ckn_hex is the same as ckn_hex (a rotated key has a new CKN)'
            errors.extend((ckn_error, _macsec_cak(where, 'previous.cak_hex', previous_cak, suite)))
            if link.get('active_from') is None:
                errors.append(where + ': previous needs active_from (when the new key takes over from it)')
    for field, value in times:
        if value is not None and (not _digits(value) or not MACSEC_TIME_RANGE[0] <= _number(value) <= MACSEC_TIME_RANGE[1]):
            errors.append(where + ': ' + field + ' must be a UNIX time from 2000 to 2035 (IOS-XE key lifetimes end in 2035)')
    if len(times) == 2 and all(value is not None and _digits(value) for field, value in times) \
            and _number(times[1][1]) >= _number(times[0][1]):
        errors.append(where + ': previous.active_from must come before active_from')
    return errors


def macsec_link_input_errors(inputs):
    """Errors of the macsec_link role's inputs (``inputs``: its variables by name), each naming the link and the field."""
    errors = []
    platform = inputs.get('macsec_link_platform')
    if platform not in MACSEC_PLATFORM_SUITES:
        errors.append('macsec_link_platform must be one of ios_xe, junos, linux')
    if inputs.get('macsec_link_mode') == 'render' and not inputs.get('macsec_link_output_dir'):
        errors.append('macsec_link_output_dir is required in render mode')
    priority = inputs.get('macsec_link_key_server_priority')
    if priority is not None and not 0 <= _number(priority) <= 255:
        errors.append('macsec_link_key_server_priority must be from 0 to 255')
    overlap = inputs.get('macsec_link_ios_xe_rollover_overlap')
    if not _digits(overlap) or _number(overlap) > 86400:
        errors.append('macsec_link_ios_xe_rollover_overlap must be from 0 to 86400 seconds')
    ids, interfaces = [], {}
    for index, link in enumerate(inputs.get('macsec_link_links') or []):
        errors.extend(_macsec_link_errors(index, link, platform, ids, interfaces))
    return [error for error in errors if error]


ROLE_INPUT_CHECKS = {
    'dmvpn_ios_xe': dmvpn_ios_xe_input_errors,
    'macsec_link': macsec_link_input_errors,
    'strongswan_site': strongswan_site_input_errors,
}
