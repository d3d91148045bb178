# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role_input_errors filter: a role's input checks (documentation in role_input_errors.yml)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.qsafe.keyfabric.plugins.plugin_utils.role_input_checks import ROLE_INPUT_CHECKS


def role_input_errors(inputs, role):
    """The messages of what is wrong with ``inputs`` (the role's variables by name); empty when all is well."""
    if role not in ROLE_INPUT_CHECKS:
        raise AnsibleFilterError('role_input_errors: role must be one of %s, got %r' % (', '.join(sorted(ROLE_INPUT_CHECKS)), role))
    if not isinstance(inputs, dict):
        raise AnsibleFilterError('role_input_errors: the input must be a dict of the role variables')
    return ROLE_INPUT_CHECKS[role](inputs)


class FilterModule(object):
    def filters(self):
        return {'role_input_errors': role_input_errors}
