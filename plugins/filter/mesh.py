# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the mesh inventory model (documentation in mesh_plan.yml and mesh_site_config.yml)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.qsafe.keyfabric.plugins.module_utils.mesh_inventory import (
    MeshInventoryError,
    plan_mesh,
    site_config,
)


def mesh_plan(site_names, hostvars, mesh=None):
    """The public plan of the mesh formed by ``site_names`` (validated)."""
    try:
        return plan_mesh(list(site_names or []), dict((name, hostvars[name]) for name in site_names or []), mesh)
    except MeshInventoryError as exc:
        raise AnsibleFilterError('inventory: %s' % exc)


def mesh_site_config(plan, site, secrets):
    """A site's IPsec peers and MACsec links with their secrets (SECRET)."""
    try:
        return site_config(plan, site, list(secrets or []))
    except (MeshInventoryError, KeyError, TypeError) as exc:
        raise AnsibleFilterError('site %s: %s' % (site, exc))


class FilterModule(object):
    def filters(self):
        return {'mesh_plan': mesh_plan, 'mesh_site_config': mesh_site_config}
