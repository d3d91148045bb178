# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role_input_errors filter: a role's input checks (documentation in role_input_errors.yml).

A thin wrapper: the checks are ``mesh_inventory.role_input_errors`` (plugins/module_utils/mesh_inventory.py).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.qsafe.keyfabric.plugins.module_utils import mesh_inventory


def role_input_errors(inputs, role):
    """The messages of what is wrong with ``inputs`` (the role's variables by name); empty when all is well."""
    try:
        return mesh_inventory.role_input_errors(role, inputs)
    except mesh_inventory.MeshInventoryError as exc:
        raise AnsibleFilterError('%s' % exc)


class FilterModule(object):
    def filters(self):
        return {'role_input_errors': role_input_errors}
