# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The model of a mesh roll-out: which links exist, which end is master, what each site gets and checks.

This module is the one place of the rendering layer's logic (docs/design.md, "Rendering"); the
filters (mesh_plan, mesh_site_config, link_secrets, role_input_errors) and the mesh_render action
are thin callers of it.

The inventory is ordinary Ansible inventory (docs/inventory.md): every site is a host of the
group ``qsafe_sites`` with ``qsafe_site_*`` variables, and ``qsafe_mesh`` (group vars) says
which links there are (an implied full mesh, or a list), their type (``ipsec`` or ``macsec``)
and key policy. ``plan_mesh`` turns that into a public plan - no secrets - and fails early with
a message naming the site and the field. ``site_ipsec_peers`` and ``site_macsec_links`` join a
site's part of the plan with the link secrets (from the key store) into what the roles take;
during a rotation's overlap window a MACsec link also carries the key it replaces (``previous``).
``link_secrets`` derives a link's per-purpose secrets (PPK, IKE PSK, MACsec CKN and CAK) from its
key-store record; ``role_input_errors`` runs a configuration role's input checks (in the private
``_role_inputs``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import itertools

from ansible_collections.qsafe.keyfabric.plugins.module_utils._errors import KeyfabricError
from ansible_collections.qsafe.keyfabric.plugins.module_utils._role_inputs import ROLE_INPUT_CHECKS
from ansible_collections.qsafe.keyfabric.plugins.module_utils.hybrid_combiner import (
    CombinerError,
    derive_subkey,
    macsec_ckn,
)

PLATFORMS = ('ios_xe', 'junos', 'linux')
# Key-delivery interfaces a site may fetch its QKD keys with (qsafe_site_key_interface; kme_connection.INTERFACES).
KEY_INTERFACES = ('etsi014', 'etsi004', 'skip')
DEFAULT_CIPHER_SUITE = 'gcm-aes-xpn-256'
LINK_TYPES = ('ipsec', 'macsec', 'ipsec+macsec')  # ipsec+macsec: both, each with its own secret
# Which link types each platform's roles render.
PLATFORM_LINK_TYPES = {'ios_xe': ('ipsec', 'macsec'), 'junos': ('macsec',), 'linux': ('ipsec', 'macsec')}
SITE_FIELDS = ('qsafe_site_platform', 'qsafe_site_sae_id', 'qsafe_site_underlay_ip', 'qsafe_site_tunnel_ip')
MESH_FIELDS = ('links', 'link_defaults', 'link_overrides', 'name', 'nhrp_network_id', 'tunnel_mask', 'cipher_suite')
LINK_FIELDS = ('sites', 'type', 'policy', 'kem_algorithm', 'qkd')
# The fields of a planned link that the hybrid_key lookup takes.
KEYING_FIELDS = ('link_id', 'master', 'slave', 'policy', 'kem_algorithm', 'qkd')
# The name of an IOS-XE site's `crypto skip-client` (towards its own KME), for dynamic PPKs.
SKIP_CLIENT_NAME = 'QSAFE-SKIP'
DEFAULT_SKIP_PORT = 443


def carries(link, kind):
    """Whether ``link`` is (also) of ``kind`` (ipsec or macsec)."""
    return kind in link['type'].split('+')


class MeshInventoryError(KeyfabricError, ValueError):
    """The inventory (or a role's input) is not valid; the message names the site, link or field, never a key."""


def _ip(site, field, value):
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise MeshInventoryError('site %s: %s is not an IP address: %r' % (site, field, value))


def _site(name, hostvars):
    missing = [field for field in SITE_FIELDS if not hostvars.get(field)]
    if missing:
        raise MeshInventoryError('site %s: missing %s' % (name, ', '.join(missing)))
    platform = hostvars['qsafe_site_platform']
    if platform not in PLATFORMS:
        raise MeshInventoryError('site %s: qsafe_site_platform must be one of %s, got %r' % (name, ', '.join(PLATFORMS), platform))
    site = dict(name=name, platform=platform, sae_id=hostvars['qsafe_site_sae_id'],
                underlay_ip=_ip(name, 'qsafe_site_underlay_ip', hostvars['qsafe_site_underlay_ip']),
                tunnel_ip=_ip(name, 'qsafe_site_tunnel_ip', hostvars['qsafe_site_tunnel_ip']),
                dmvpn_role=hostvars.get('qsafe_site_dmvpn_role', 'spoke'),
                macsec_interfaces=dict(hostvars.get('qsafe_site_macsec_interfaces') or {}),
                key_interface=hostvars.get('qsafe_site_key_interface'))
    if site['key_interface'] == 'skip' and platform == 'ios_xe' and hostvars.get('qsafe_site_skip_server_ip'):
        site['skip_client'] = _skip_client(name, site['sae_id'], hostvars)
    if site['key_interface'] is not None and site['key_interface'] not in KEY_INTERFACES:
        raise MeshInventoryError('site %s: qsafe_site_key_interface must be one of %s, got %r'
                                 % (name, ', '.join(KEY_INTERFACES), site['key_interface']))
    if site['dmvpn_role'] not in ('hub', 'spoke'):
        raise MeshInventoryError('site %s: qsafe_site_dmvpn_role must be hub or spoke, got %r' % (name, site['dmvpn_role']))
    return site


def _skip_client(name, sae_id, hostvars):
    """The public part of an IOS-XE site's SKIP client (its KME's SKIP address and its PSK identity)."""
    port = hostvars.get('qsafe_site_skip_server_port', DEFAULT_SKIP_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise MeshInventoryError('site %s: qsafe_site_skip_server_port must be 1 to 65535, got %r' % (name, port))
    return dict(name=SKIP_CLIENT_NAME, server_ip=_ip(name, 'qsafe_site_skip_server_ip', hostvars['qsafe_site_skip_server_ip']),
                server_port=port, psk_identity=hostvars.get('qsafe_site_skip_psk_identity') or sae_id)


def _ppk_source(link, sites):
    """``skip`` when both ends are IOS-XE routers that speak SKIP to their KMEs (qsafe_site_key_interface skip and a
    SKIP client, qsafe_site_skip_server_ip) and the link is IPsec only: the routers fetch the PPK themselves
    (``ppk dynamic``), no QKD key passes through the controller. Otherwise ``manual``: the controller keys the link
    (each end over its own interface, SKIP included) and pushes the PPK - also where only one end speaks SKIP, as
    a dynamic PPK needs a SKIP client at both ends."""
    ends = [sites[name] for name in link['sites']]
    if link['type'] == 'ipsec' and all(site['key_interface'] == 'skip' and site['platform'] == 'ios_xe'
                                       and site.get('skip_client') for site in ends):
        return 'skip'
    return 'manual'


def _without_qkd(policy):
    """A link policy minus the QKD source (a dynamic-PPK link's controller-made key gives only its IKE PSK)."""
    if isinstance(policy, dict):
        required = [source for source in policy.get('require') or [] if source != 'qkd']
        return dict(policy, require=required or ['pqc'])
    if policy == 'any':
        return policy
    return '+'.join(source for source in str(policy).split('+') if source != 'qkd') or 'pqc'


def _pair_key(sites, where):
    if not isinstance(sites, (list, tuple)) or len(sites) != 2 or sites[0] == sites[1]:
        raise MeshInventoryError('%s: sites must name two different sites, got %r' % (where, sites))
    return tuple(sorted(sites))


def plan_mesh(site_names, hostvars, mesh):
    """The public plan of a mesh: ``{'name', 'sites': {name: site}, 'links': [link, ...]}``.

    A link is ``{link_id, sites: [a, b], master_site, slave_site, master, slave (SAE IDs), type,
    policy, kem_algorithm?, qkd?}``; the master is the site whose name sorts first, so every run
    and both ends agree without coordination.
    """
    mesh = dict(mesh or {})
    unknown = sorted(set(mesh) - set(MESH_FIELDS))
    if unknown:
        raise MeshInventoryError('qsafe_mesh: unknown field %s (known: %s)' % (', '.join(unknown), ', '.join(MESH_FIELDS)))
    sites = dict((name, _site(name, hostvars.get(name) or {})) for name in sorted(site_names))
    if len(sites) < 2:
        raise MeshInventoryError('qsafe_sites: a mesh needs at least two sites, got %d' % len(sites))
    for field in ('sae_id', 'underlay_ip', 'tunnel_ip'):
        seen = {}
        for site in sites.values():
            if site[field] in seen:
                raise MeshInventoryError('sites %s and %s have the same qsafe_site_%s %s'
                                         % (seen[site[field]], site['name'], field, site[field]))
            seen[site[field]] = site['name']

    defaults = dict(type='ipsec', policy='qkd+pqc')
    defaults.update(mesh.get('link_defaults') or {})
    listed = mesh.get('links', 'full')
    if listed == 'full':
        pairs = dict((pair, {}) for pair in itertools.combinations(sorted(sites), 2))
    elif isinstance(listed, list):
        pairs = {}
        for index, link in enumerate(listed):
            where = 'qsafe_mesh.links[%d]' % index
            pair = _pair_key((link or {}).get('sites'), where)
            if pair in pairs:
                raise MeshInventoryError('%s: the link %s--%s is listed twice' % (where, pair[0], pair[1]))
            pairs[pair] = link
    else:
        raise MeshInventoryError('qsafe_mesh.links must be "full" or a list of links, got %r' % (listed,))
    for index, override in enumerate(mesh.get('link_overrides') or []):
        where = 'qsafe_mesh.link_overrides[%d]' % index
        pair = _pair_key((override or {}).get('sites'), where)
        if pair not in pairs:
            raise MeshInventoryError('%s: %s--%s is not a link of the mesh' % (where, pair[0], pair[1]))
        pairs[pair] = dict(pairs[pair], **override)

    links = []
    for (first, second), spec in sorted(pairs.items()):
        link_id = '%s--%s' % (first, second)
        for name in (first, second):
            if name not in sites:
                raise MeshInventoryError('link %s: %s is not a host of qsafe_sites' % (link_id, name))
        unknown = sorted(set(spec) - set(LINK_FIELDS))
        if unknown:
            raise MeshInventoryError('link %s: unknown field %s (known: %s)' % (link_id, ', '.join(unknown), ', '.join(LINK_FIELDS)))
        link = dict(defaults, **dict((k, v) for k, v in spec.items() if k != 'sites'))
        if link['type'] not in LINK_TYPES:
            raise MeshInventoryError('link %s: type must be one of %s, got %r' % (link_id, ', '.join(LINK_TYPES), link['type']))
        for name in (first, second):
            site = sites[name]
            for kind in link['type'].split('+'):
                if kind not in PLATFORM_LINK_TYPES[site['platform']]:
                    raise MeshInventoryError('link %s: site %s (%s) cannot terminate %s links'
                                             % (link_id, name, site['platform'], kind))
            if carries(link, 'macsec') and site['platform'] == 'linux' and 'xpn' in mesh.get('cipher_suite', DEFAULT_CIPHER_SUITE):
                raise MeshInventoryError('link %s: site %s (linux, wpa_supplicant) cannot run the XPN suite %s; set '
                                         'qsafe_mesh.cipher_suite to gcm-aes-128 or gcm-aes-256'
                                         % (link_id, name, mesh.get('cipher_suite', DEFAULT_CIPHER_SUITE)))
            if carries(link, 'macsec') and not site['macsec_interfaces'].get(first if name == second else second):
                raise MeshInventoryError('link %s: site %s has no qsafe_site_macsec_interfaces entry for %s'
                                         % (link_id, name, first if name == second else second))
        link.update(link_id=link_id, sites=[first, second], master_site=first, slave_site=second,
                    master=sites[first]['sae_id'], slave=sites[second]['sae_id'])
        if carries(link, 'ipsec'):
            link['ppk_source'] = _ppk_source(link, sites)
        links.append(link)
    keying = [_keying_terms(link, sites) for link in links]
    return dict(name=mesh.get('name', 'qsafe-mesh'), sites=sites, links=links, keying=keying,
                hubs=[dict(name=site['name'], tunnel_ip=site['tunnel_ip'], underlay_ip=site['underlay_ip'])
                      for site in sites.values() if site['platform'] == 'ios_xe' and site['dmvpn_role'] == 'hub'],
                nhrp_network_id=mesh.get('nhrp_network_id', 100), tunnel_mask=mesh.get('tunnel_mask', '255.255.255.0'),
                cipher_suite=mesh.get('cipher_suite', DEFAULT_CIPHER_SUITE))


def _keying_terms(link, sites):
    """The hybrid_key lookup term of ``link``. An end whose site names its key-delivery interface
    (qsafe_site_key_interface) is ``{sae_id, interface}``, so each end fetches its QKD key over its own
    interface (the master's new key over one, the slave's key-by-ID over another); otherwise its SAE ID,
    and the lookup's ``interface`` option applies."""
    term = dict((k, link[k]) for k in KEYING_FIELDS if k in link)
    for end in ('master', 'slave'):
        interface = sites[link[end + '_site']]['key_interface']
        if interface is not None:
            term[end] = dict(sae_id=link[end], interface=interface)
    if link.get('ppk_source') == 'skip':
        # The routers fetch the PPK over SKIP: no QKD key passes through the controller. Its key for this link
        # only gives the IKE PSK, from the PQC and classical sources. The ends keep their interface (skip): the
        # lookup still resolves both ends' connections, and their KMEs may serve SKIP only.
        term.update(qkd=False, policy=_without_qkd(link.get('policy')))
    return term


def site_config(plan, site, secrets):
    """What the roles of ``site`` take: its IPsec peers and its MACsec links, with their secrets."""
    if site not in plan['sites']:
        raise MeshInventoryError('%s is not a site of the plan' % site)
    peers = site_ipsec_peers(plan, site, secrets)
    skip_client = plan['sites'][site].get('skip_client')
    return dict(site=plan['sites'][site], ipsec_peers=peers, macsec_links=site_macsec_links(plan, site, secrets),
                link_ids=[link['link_id'] for link in plan['links'] if site in link['sites']],
                skip_clients=[skip_client] if any(peer.get('ppk_source') == 'skip' for peer in peers) else [])


def _secrets_for(link_id, secrets):
    for entry in secrets:
        if entry.get('link_id') == link_id:
            return entry
    raise MeshInventoryError('no key for link %s' % link_id)


def site_ipsec_peers(plan, site, secrets):
    """The IPsec peers of ``site``: addresses from the plan, PPK and PSK from ``secrets`` (link_secrets results)."""
    peers = []
    for link in plan['links']:
        if not carries(link, 'ipsec') or site not in link['sites']:
            continue
        peer = plan['sites'][link['sites'][1] if link['sites'][0] == site else link['sites'][0]]
        entry = _secrets_for(link['link_id'], secrets)
        item = dict(name=peer['name'], link_id=link['link_id'], underlay_ip=peer['underlay_ip'],
                    tunnel_ip=peer['tunnel_ip'], ppk_id=entry['ppk_id'], ppk_hex=entry['ppk_hex'],
                    ike_psk_hex=entry['ike_psk_hex'], initiator=link['master_site'] == site)
        if link.get('ppk_source') == 'skip':  # the router fetches the PPK itself: none is handed to it
            del item['ppk_hex']
            item.update(ppk_source='skip', skip_client=SKIP_CLIENT_NAME)
        peers.append(item)
    return peers


def site_macsec_links(plan, site, secrets):
    """The MACsec links of ``site``: its interface towards each peer, CKN and CAK from ``secrets``."""
    links = []
    for link in plan['links']:
        if not carries(link, 'macsec') or site not in link['sites']:
            continue
        peer = link['sites'][1] if link['sites'][0] == site else link['sites'][0]
        entry = _secrets_for(link['link_id'], secrets)
        macsec = dict(link_id=link['link_id'], peer=peer, interface=plan['sites'][site]['macsec_interfaces'][peer],
                      ckn_hex=entry['macsec_ckn_hex'], cak_hex=entry['macsec_cak_hex'],
                      cipher_suite=plan['cipher_suite'])
        macsec.update(_macsec_rollover(link['link_id'], entry))
        links.append(macsec)
    return links


def _macsec_rollover(link_id, entry):
    """A rotated link's key generation, when its key takes over, and the key it replaces while the window is open."""
    rollover = dict((name, entry[name]) for name in ('generation', 'active_from') if entry.get(name) is not None)
    if entry.get('previous_macsec_cak_hex'):
        if rollover.get('active_from') is None:
            raise MeshInventoryError('link %s: a previous MACsec key needs active_from (when the new key takes over)' % link_id)
        previous = dict(ckn_hex=entry['previous_macsec_ckn_hex'], cak_hex=entry['previous_macsec_cak_hex'])
        if entry.get('previous_active_from') is not None:
            previous['active_from'] = entry['previous_active_from']
        rollover['previous'] = previous
    return rollover


# -- per-purpose secrets -------------------------------------------------------------------------

def link_secrets(link, cak_bits=256):
    """What the device configurations of one link need (SECRET), from its key-store record (a hybrid_key result).

    Every purpose gets its own key, derived from the link key and its PPK ID: the IKEv2 PPK, the IKEv2
    pre-shared key and the MACsec CAK (``cak_bits`` long); the MACsec CKN is public (from the PPK ID).
    """
    if not isinstance(link, dict) or not link.get('key') or not link.get('ppk_id'):
        raise MeshInventoryError('link_secrets needs a hybrid_key result (a dict with key and ppk_id)')
    if cak_bits not in (128, 256):
        raise MeshInventoryError('cak_bits must be 128 or 256, got %r' % (cak_bits,))
    if link.get('previous_key') and not link.get('previous_ppk_id'):
        raise MeshInventoryError('link_secrets for link %s: previous_key comes with previous_ppk_id' % link.get('link_id'))
    try:
        key = bytes.fromhex(link['key'])
        secrets = dict(
            link_id=link.get('link_id'),
            ppk_id=link['ppk_id'],
            ppk_hex=derive_subkey(key, 'ikev2-ppk', link['ppk_id']).hex(),
            ike_psk_hex=derive_subkey(key, 'ikev2-psk', link['ppk_id']).hex(),
            macsec_ckn_hex=macsec_ckn(link['ppk_id']).hex(),
            macsec_cak_hex=derive_subkey(key, 'macsec-cak', link['ppk_id'], cak_bits // 8).hex(),
        )
        # Rotation (the key store's record): when this key takes over, and the key it replaces
        # while the overlap window is open - for a MACsec key chain that holds both.
        for name in ('generation', 'active_from'):
            if link.get(name) is not None:
                secrets[name] = int(link[name])
        if link.get('previous_key'):
            previous_key = bytes.fromhex(link['previous_key'])
            secrets.update(
                previous_ppk_id=link['previous_ppk_id'],
                previous_macsec_ckn_hex=macsec_ckn(link['previous_ppk_id']).hex(),
                previous_macsec_cak_hex=derive_subkey(previous_key, 'macsec-cak', link['previous_ppk_id'], cak_bits // 8).hex(),
            )
            if link.get('previous_active_from') is not None:
                secrets['previous_active_from'] = int(link['previous_active_from'])
        return secrets
    except (ValueError, TypeError, CombinerError) as exc:
        raise MeshInventoryError('link_secrets for link %s: %s' % (link.get('link_id'), exc))


# -- role inputs ---------------------------------------------------------------------------------

ROLES = tuple(sorted(ROLE_INPUT_CHECKS))


def role_input_errors(role, inputs):
    """What is wrong with ``inputs`` (the variables of ``role`` by name): messages naming the field, never a key."""
    if role not in ROLE_INPUT_CHECKS:
        raise MeshInventoryError('role_input_errors: role must be one of %s, got %r' % (', '.join(ROLES), role))
    if not isinstance(inputs, dict):
        raise MeshInventoryError('role_input_errors: the input must be a dict of the role variables')
    return ROLE_INPUT_CHECKS[role](inputs)
