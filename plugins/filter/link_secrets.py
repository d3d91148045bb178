# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The link_secrets filter: per-purpose secrets of a link key (documentation in link_secrets.yml).

A thin wrapper: the derivation is ``mesh_inventory.link_secrets`` (plugins/module_utils/mesh_inventory.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.qsafe.keyfabric.plugins.module_utils import mesh_inventory


def link_secrets(link, cak_bits=256):
    """What the device configurations of one link need, from a hybrid_key result."""
    try:
        return mesh_inventory.link_secrets(link, cak_bits)
    except mesh_inventory.MeshInventoryError as exc:
        raise AnsibleFilterError('%s' % exc)


class FilterModule(object):
    def filters(self):
        return {'link_secrets': link_secrets}
