# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the ansible-core names the controller-side code of this collection uses that differ between
ansible-core versions, in one place. The action and the role renderer import them only from here.

This is the ansible-core 2.19+ form (data tagging): ``trust_as_template`` and ``AnsibleValueOmittedError``
as ansible-core defines them, and a conditional evaluated with ``Templar.evaluate_conditional``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleValueOmittedError  # noqa: F401  pylint: disable=unused-import
from ansible.template import trust_as_template

__all__ = ('AnsibleValueOmittedError', 'evaluate_conditional', 'trust_as_template')


def evaluate_conditional(templar, expression):
    """Whether ``expression`` (a ``when:`` condition written in a role of this collection) is true."""
    return templar.evaluate_conditional(trust_as_template(expression))
