# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render a role of this collection in-process on the controller, as the role itself would.

The ``mesh_render`` action renders every site of a mesh in one task. To stay one source of truth
with the roles, it does not carry templates of its own: it loads a role's ``defaults/main.yml``,
``vars/main.yml`` and ``meta/argument_specs.yml`` and renders the role's own ``templates/`` with
Ansible's templar, with the variables in Ansible's precedence order (role defaults < inventory
< role vars < the include's vars). Which template goes to which file with which mode is declared
once, as data, in the role's ``vars/main.yml``: ``_<role>_outputs`` (directories, files, and for a
role that removes its files of links that are gone, how it recognises them), which the role's own
tasks loop over too. The role's input checks are ``_<role>_input_errors``.

Controller-only code (it imports the templar), hence plugin_utils rather than module_utils.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fnmatch
import os
import stat

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.qsafe.keyfabric.plugins.plugin_utils._ansible_compat import (
    AnsibleValueOmittedError,
    load_trusted_file,
    trust_as_template,
)

from ansible_collections.qsafe.keyfabric.plugins.module_utils._errors import KeyfabricError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import write_secret_file

# What the template module does by default (trim_blocks on, "\n" line ends).
TEMPLATE_OVERRIDES = dict(trim_blocks=True, lstrip_blocks=False, newline_sequence='\n')


class RoleRenderError(KeyfabricError):
    """A role cannot be rendered; the message names the role and the variable, never a value."""


def collection_roles_dir():
    """``roles/`` of the collection this file belongs to (installed or in a source checkout)."""
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'roles'))


class RoleTemplates(object):
    """One role's defaults, vars, argument spec and templates, loaded once and used for many hosts."""

    def __init__(self, loader, name, roles_dir=None):
        self.name = name
        self.path = os.path.join(roles_dir or collection_roles_dir(), name)
        if not os.path.isdir(self.path):
            raise RoleRenderError('role %s not found at %s' % (name, self.path))
        self._loader = loader
        self.defaults = self._load('defaults/main.yml') or {}
        self.vars = self._load('vars/main.yml') or {}
        specs = self._load('meta/argument_specs.yml') or {}
        self.options = ((specs.get('argument_specs') or {}).get('main') or {}).get('options') or {}
        self._templates = {}

    def _load(self, relative):
        path = os.path.join(self.path, relative)
        return load_trusted_file(self._loader, path) if os.path.exists(path) else None

    def variables(self, inventory_vars, params):
        """The variables the role's tasks see: defaults < inventory < role vars < params."""
        merged = dict(self.defaults)
        merged.update(inventory_vars)
        merged.update(self.vars)
        merged.update(params)
        return merged

    def argument_errors(self, templar, inventory_vars, params):
        """What the role's argument spec says about the values it would get (messages, no values)."""
        provided = {}
        for name in self.options:
            if name in params:  # already evaluated (evaluate_params)
                provided[name] = params[name]
            elif name in inventory_vars:
                provided[name] = resolve(templar, inventory_vars[name])
        # The validator deep-copies what it checks: a dict option without sub-options (the whole mesh plan)
        # is only type-checked, so it gets an empty stand-in of its own type.
        for name, spec in self.options.items():
            if spec.get('type') == 'dict' and not spec.get('options') and isinstance(provided.get(name), dict):
                provided[name] = {}
        result = ArgumentSpecValidator(self.options).validate(provided)
        return ['%s: %s' % (self.name, message) for message in result.error_messages]

    @property
    def outputs_var(self):
        """The role variable that declares its outputs (vars/main.yml)."""
        return '_%s_outputs' % self.name

    def input_errors(self, templar, variables):
        """The messages of the role's own input checks (``_<role>_input_errors``); empty when all is well."""
        return value_of(templar, variables, '_%s_input_errors' % self.name) or []

    def outputs(self, templar, variables):
        """What the role writes, from its declaration (``_<role>_outputs``) evaluated in ``variables``:
        ``{directories: [(path, mode or None)], files: [(template, path, mode, force, template vars)], own}``.
        Paths are normalised; ``own`` (or None) says how the role recognises its earlier files."""
        declared = value_of(templar, variables, self.outputs_var)
        try:
            directories = [(os.path.normpath(entry['path']), _mode(entry.get('mode'))) for entry in declared.get('directories') or []]
            files = [(entry['src'], os.path.normpath(entry['dest']), _mode(entry['mode']), bool(entry.get('force', True)),
                      dict(entry.get('vars') or {})) for entry in declared.get('files') or []]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise RoleRenderError('%s: %s is not a list of outputs (%s)' % (self.name, self.outputs_var, exc))
        return dict(directories=directories, files=files, own=declared.get('own'))

    def template_path(self, template):
        return os.path.join(self.path, 'templates', template)

    def render(self, templar, variables, template, dest):
        """The text of the role's ``templates/<template>`` for a file at ``dest``."""
        source = self.template_path(template)
        if template not in self._templates:
            with open(source, 'rb') as handle:
                self._templates[template] = (trust_as_template(handle.read().decode('utf-8')), os.stat(source))
        text, source_stat = self._templates[template]
        template_vars = dict(variables)
        template_vars.update(template_host=os.uname()[1], template_path=template, template_fullpath=source,
                             template_destpath=dest, template_uid=source_stat.st_uid)
        if 'ansible_managed' not in template_vars:
            template_vars['ansible_managed'] = trust_as_template(
                C.config.get_config_value('DEFAULT_MANAGED_STR').format(
                    host='{{ template_host }}', uid='{{ template_uid }}', file='{{ template_path }}'))
        renderer = templar.copy_with_new_env(searchpath=[os.path.dirname(source)], available_variables=template_vars)
        try:
            result = renderer.template(text, escape_backslashes=False, overrides=TEMPLATE_OVERRIDES)
        except AnsibleError as exc:
            # The message of a template error can quote the expression, never a variable's value.
            raise RoleRenderError('role %s, template %s: %s' % (self.name, template, exc.message))
        return '' if result is None else result


def _mode(mode):
    """A file mode as the template module takes it (an octal string such as "0600", or a number)."""
    if mode is None:
        return None
    return int(mode, 8) if isinstance(mode, str) else int(mode)


def own_files_not_kept(own):
    """The files of a role in ``own['directory']`` that it no longer writes: a name matching one of
    ``own['patterns']``, not in ``own['keep']``, and holding the role's ``own['marker']`` line."""
    found = []
    try:
        names = sorted(os.listdir(own['directory']))
    except FileNotFoundError:
        return found
    marker = own['marker'].encode('utf-8')
    for name in names:
        path = os.path.join(own['directory'], name)
        if name in own.get('keep', ()) or not any(fnmatch.fnmatchcase(name, pattern) for pattern in own['patterns']) \
                or not os.path.isfile(path):
            continue
        with open(path, 'rb') as handle:
            if marker in handle.read():
                found.append(path)
    return found


def resolve(templar, value):
    """``value`` with its templates resolved (a value that resolves to omit is None)."""
    try:
        return templar.template(value)
    except AnsibleValueOmittedError:
        return None


def value_of(templar, variables, name):
    """One variable of a role (templated in the role's variables)."""
    try:
        return templar.copy_with_new_env(available_variables=variables).template(trust_as_template('{{ %s }}' % name))
    except AnsibleError as exc:
        raise RoleRenderError('%s: %s' % (name, exc.message))


def evaluate_params(templar, context, params):
    """An include_role's ``vars:`` evaluated in the including task's variables; omitted ones left out."""
    evaluated = {}
    context_templar = templar.copy_with_new_env(available_variables=context)
    for name, value in params.items():
        try:
            evaluated[name] = context_templar.template(value)
        except AnsibleValueOmittedError:
            continue
    return evaluated


class FileWriter(object):
    """Writes rendered files atomically with their mode, as the template module would, and counts changes.

    In check mode nothing is written; the report is the same. Reports hold paths, never content.
    """

    def __init__(self, check_mode=False):
        self.check_mode = check_mode
        self.changed = []
        self.removed = []

    def directory(self, path, mode=None):
        if os.path.isdir(path):
            return
        if not self.check_mode:
            os.makedirs(path)
            if mode is not None:
                os.chmod(path, mode)

    def write(self, path, text, mode, force=True):
        data = text.encode('utf-8')
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None:
            if not force:
                return False
            if stat.S_IMODE(current.st_mode) == mode and current.st_size == len(data):
                with open(path, 'rb') as handle:
                    if handle.read() == data:
                        return False
        self.changed.append(path)
        if self.check_mode:
            return True
        write_secret_file(path, data, mode)  # the collection's one atomic, durable writer (fsync of file and directory)
        return True

    def remove(self, path):
        if not os.path.lexists(path):
            return False
        self.removed.append(path)
        if not self.check_mode:
            os.unlink(path)
        return True
