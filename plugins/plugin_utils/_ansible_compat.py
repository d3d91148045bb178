# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the few ansible-core templating names the controller-side plugins use, on every supported core.

ansible-core 2.19 reworked templating (data tagging): a string is a template only once it is trusted
(``trust_as_template``), a template that resolves to ``omit`` raises ``AnsibleValueOmittedError``, and
a ``when:`` expression is evaluated by ``Templar.evaluate_conditional``. ansible-core 2.16 to 2.18 have
none of these names. The collection's floor (meta/runtime.yml) is below 2.19, so the mesh_render
action and the role renderer import them from here only, never from ansible directly:

``trust_as_template(value)``
    2.19+: ansible.template.trust_as_template. Before: the value itself (every string that is not
    marked unsafe is a template there).
``AnsibleValueOmittedError``
    2.19+: ansible.errors.AnsibleValueOmittedError. Before: a stand-in subclass of AnsibleError that
    ansible-core never raises (a value that resolves to ``omit`` stays Ansible's omit placeholder
    string there, as it does for the roles themselves on that core).
``evaluate_conditional(templar, expression)``
    A ``when:`` expression (text or bool), evaluated with ``templar``'s variables, to a bool. 2.19+:
    ``templar.evaluate_conditional(trust_as_template(expression))``. Before: the Conditional class
    that evaluates a task's ``when:`` there (the same warnings, errors and bool checks as a task).
``load_trusted_file(loader, path)``
    A YAML or JSON file of the collection's own (role defaults, vars, tasks) through ``loader``, its
    strings trusted as templates as a role's own files are (``trusted_as_template=True`` from 2.19).

The floor is proven by ``make floor`` (tests/floor/): the render path run on the oldest supported
ansible-core.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleError

try:
    from ansible.template import trust_as_template
    from ansible.errors import AnsibleValueOmittedError
    HAS_DATA_TAGGING = True
except ImportError:  # ansible-core < 2.19
    HAS_DATA_TAGGING = False

    def trust_as_template(value):
        """Before 2.19 every string that is not marked unsafe is a template: the value itself."""
        return value

    class AnsibleValueOmittedError(AnsibleError):
        """Stand-in: ansible-core before 2.19 has no such error and never raises this one."""

__all__ = ('AnsibleValueOmittedError', 'HAS_DATA_TAGGING', 'evaluate_conditional', 'load_trusted_file', 'trust_as_template')


def evaluate_conditional(templar, expression):
    """``expression`` (a ``when:`` condition: text or bool) evaluated with ``templar``'s variables."""
    if HAS_DATA_TAGGING:
        # Trust applies to text only (a literal ``when: true`` loads as a bool).
        return templar.evaluate_conditional(trust_as_template(expression) if isinstance(expression, str) else expression)
    # Imported here: the playbook package loads much of ansible-core, and only this branch needs it.
    from ansible.playbook.conditional import Conditional
    conditional = Conditional(loader=templar._loader)
    conditional.when = [expression]
    return conditional.evaluate_conditional(templar, templar.available_variables)


def load_trusted_file(loader, path):
    """The data of a YAML/JSON file of the collection's own, its strings trusted as templates."""
    if HAS_DATA_TAGGING:
        return loader.load_from_file(path, trusted_as_template=True)
    return loader.load_from_file(path)
