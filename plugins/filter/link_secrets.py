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
    try:
        key = bytes.fromhex(link['key'])
        return dict(
            link_id=link.get('link_id'),
            ppk_id=link['ppk_id'],
            ppk_hex=derive_subkey(key, 'ikev2-ppk', link['ppk_id']).hex(),
            ike_psk_hex=derive_subkey(key, 'ikev2-psk', link['ppk_id']).hex(),
            macsec_ckn_hex=macsec_ckn(link['ppk_id']).hex(),
            macsec_cak_hex=derive_subkey(key, 'macsec-cak', link['ppk_id'], cak_bits // 8).hex(),
        )
    except (ValueError, CombinerError) as exc:
        raise AnsibleFilterError('link_secrets for link %s: %s' % (link.get('link_id'), exc))


class FilterModule(object):
    def filters(self):
        return {'link_secrets': link_secrets}
