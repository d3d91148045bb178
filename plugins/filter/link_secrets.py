# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The link_secrets filter: per-purpose secrets of a link key (documentation in link_secrets.yml)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.qsafe.keyfabric.plugins.module_utils.hybrid_combiner import (
    CombinerError,
    derive_subkey,
    macsec_ckn,
)


def link_secrets(link, cak_bits=256):
    """What the device configurations of one link need, from a hybrid_key result."""
    if not isinstance(link, dict) or not link.get('key') or not link.get('ppk_id'):
        raise AnsibleFilterError('link_secrets needs a hybrid_key result (a dict with key and ppk_id)')
    if cak_bits not in (128, 256):
        raise AnsibleFilterError('cak_bits must be 128 or 256, got %r' % (cak_bits,))
    if link.get('previous_key') and not link.get('previous_ppk_id'):
        raise AnsibleFilterError('link_secrets for link %s: previous_key comes with previous_ppk_id' % link.get('link_id'))
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
        # Rotation (hybrid_key with store_only): when this key takes over, and the key it replaces
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
        raise AnsibleFilterError('link_secrets for link %s: %s' % (link.get('link_id'), exc))


class FilterModule(object):
    def filters(self):
        return {'link_secrets': link_secrets}
