# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The mesh_render action: every site's configuration of a mesh, rendered on the controller in one task.

Documentation in plugins/modules/mesh_render.py. The per-site path (roles/mesh_site on every host)
costs Ansible's per-host, per-task overhead, which grows with sites x tasks; this renders the same
roles' templates in-process. It holds no copy of the roles: which roles a site gets is read from
roles/mesh_site/tasks/main.yml (its include_role tasks), what each role writes from the role's own
declaration (``_<role>_outputs`` in its vars/main.yml, which its tasks loop over too), and the site
view, secrets and input checks come from plugins/module_utils/mesh_inventory.py.
tests/integration/test_mesh_render.py checks that both paths write the same files.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_key_store import (
    STORE_VARIABLES,
    LinkKeyStoreError,
    stored_link_keys,
)
from ansible_collections.qsafe.keyfabric.plugins.module_utils.mesh_inventory import (
    MeshInventoryError,
    link_secrets,
    site_config,
)
from ansible_collections.qsafe.keyfabric.plugins.plugin_utils._ansible_compat import evaluate_conditional
from ansible_collections.qsafe.keyfabric.plugins.plugin_utils.role_renderer import (
    FileWriter,
    RoleRenderError,
    RoleTemplates,
    evaluate_params,
    own_files_not_kept,
)

# Inventory variables a site's roles can see (everything else in hostvars is not theirs).
INVENTORY_PREFIXES = ('qsafe_', 'mesh_site_', 'dmvpn_ios_xe_', 'strongswan_site_', 'macsec_link_', 'ansible_managed')
# The public comment lines the roles write into their files (peers, PPK IDs, CKNs - never a key).
PUBLIC_LINE = re.compile(r'(?m)^[!#] (qsafe-(?:peer|link) .*)$')
INCLUDE_ROLE = ('ansible.builtin.include_role', 'include_role')
COLLECTION_PREFIX = 'qsafe.keyfabric.'


def _secrets_of(record, cak_bits):
    """mesh_inventory.link_secrets, failing the task (not the controller) on a bad record."""
    try:
        return link_secrets(record, cak_bits)
    except MeshInventoryError as exc:
        raise AnsibleActionFail('%s' % exc)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(('plan', 'key_store', 'output_dir', 'sites', 'pending_links'))
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        plan = args.get('plan')
        if not isinstance(plan, dict) or not isinstance(plan.get('sites'), dict) or not isinstance(plan.get('links'), list):
            raise AnsibleActionFail('plan must be the result of the qsafe.keyfabric.mesh_plan filter')
        for name in ('key_store', 'output_dir'):
            if not isinstance(args.get(name), str) or not args[name]:
                raise AnsibleActionFail('%s is required (a directory)' % name)
        output_dir = os.path.abspath(os.path.expanduser(args['output_dir']))
        sites = args.get('sites') or sorted(plan['sites'])
        unknown = [site for site in sites if site not in plan['sites']]
        if unknown:
            raise AnsibleActionFail('sites: %s not in the plan' % ', '.join(unknown))
        pending = set(args.get('pending_links') or [])

        # Sites with a link that has no key yet (check mode before the first run) are left out, as in the per-site path.
        skipped = dict((site, sorted(link['link_id'] for link in plan['links'] if site in link['sites'] and link['link_id'] in pending))
                       for site in sites)
        skipped = dict((site, links) for site, links in skipped.items() if links)
        sites = [site for site in sites if site not in skipped]

        secrets = self._link_secrets(plan, sites, args['key_store'], task_vars)
        try:
            roles = dict(mesh_site=RoleTemplates(self._loader, 'mesh_site'))
            includes = self._mesh_site_includes(roles['mesh_site'])
            roles.update((name, RoleTemplates(self._loader, name)) for name in sorted(set(include[0] for include in includes)))
        except RoleRenderError as exc:
            raise AnsibleActionFail('roles/mesh_site: %s' % exc)
        for name, role in roles.items():
            if name != 'mesh_site' and role.outputs_var not in role.vars:
                raise AnsibleActionFail('roles/mesh_site includes %s, which declares no %s: mesh_render cannot render it'
                                        % (name, role.outputs_var))

        # Everything is rendered and checked first; files are written only when every site is good.
        errors, outputs = [], []
        hostvars = task_vars.get('hostvars') or {}
        for site in sites:
            try:
                outputs.extend(self._render_site(site, plan, secrets, output_dir, roles, includes,
                                                 self._inventory_vars(hostvars, site)))
            except (RoleRenderError, MeshInventoryError, KeyError) as exc:
                errors.append('site %s: %s' % (site, to_text(exc)))
        if errors:
            raise AnsibleActionFail('nothing written; %d site(s) cannot be rendered: %s' % (len(errors), '; '.join(errors)))

        self._before_lines = self._public_lines_on_disk(outputs)
        writer = FileWriter(check_mode=self._task.check_mode)
        per_site = {}
        for site, role, output in outputs:
            for directory, mode in output['directories']:
                writer.directory(directory, mode)
            for path, text, mode, force in output['files']:
                writer.write(path, text, mode, force)
            for path in output.get('stale', []):
                writer.remove(path)
        for kind, paths in (('written', writer.changed), ('removed', writer.removed)):
            for path in paths:
                relative = os.path.relpath(path, output_dir)
                per_site.setdefault(relative.split(os.sep)[0], {'written': [], 'removed': []})[kind].append(relative)
        for entry in per_site.values():
            entry['written'] = sorted(set(entry['written']) - set(entry['removed']))
        for site, (before, after) in self._public_changes(outputs, writer, output_dir).items():
            entry = per_site.setdefault(site, {'written': [], 'removed': []})
            entry.update(public_lines_added=sorted(after - before), public_lines_removed=sorted(before - after))

        result.update(
            changed=bool(writer.changed or writer.removed),
            output_dir=output_dir,
            sites=len(sites),
            links=len(plan['links']),
            files_written=len(writer.changed),
            files_removed=len(writer.removed),
            changes=per_site,
            skipped_sites=skipped,
        )
        return result

    # -- report -------------------------------------------------------------------------------

    @staticmethod
    def _public_lines_on_disk(outputs):
        """The public comment lines (qsafe-peer, qsafe-link) of the files about to be written or removed, per site."""
        lines = {}
        for site, role, output in outputs:
            paths = [entry[0] for entry in output['files']] + list(output.get('stale', []))
            for path in paths:
                try:
                    with open(path, 'rb') as handle:
                        text = handle.read().decode('utf-8', 'replace')
                except (IOError, OSError):
                    continue
                lines.setdefault(site, set()).update(PUBLIC_LINE.findall(text))
        return lines

    def _public_changes(self, outputs, writer, output_dir):
        """{site: (public lines before, after)} of the sites whose files changed (peers, PPK IDs, CKNs; no key)."""
        touched = set(os.path.relpath(path, output_dir).split(os.sep)[0] for path in writer.changed + writer.removed)
        before = self._before_lines
        changes = {}
        for site, role, output in outputs:
            if site not in touched:
                continue
            after = changes.setdefault(site, (before.get(site, set()), set()))[1]
            for path, text, mode, force in output['files']:
                after.update(PUBLIC_LINE.findall(text))
        return dict((site, pair) for site, pair in changes.items() if pair[0] != pair[1])

    # -- inputs --------------------------------------------------------------------------------

    def _link_secrets(self, plan, sites, key_store, task_vars):
        """Per-purpose secrets of every link of ``sites``, from the key store (SECRET; kept in memory).

        The keys are read as the hybrid_key lookup with store_only=True reads them: the same function, with
        the lookup's variables (STORE_VARIABLES; QSAFE_POLICY too). Every key is checked against its KCV and size."""
        wanted = set(link['link_id'] for link in plan['links'] if set(link['sites']).intersection(sites))
        terms = [link for link in plan['keying'] if link['link_id'] in wanted]
        if not terms:
            return {}
        settings = dict((name, self._templar.template(task_vars[variable]))
                        for name, variable in STORE_VARIABLES.items() if variable in task_vars)
        if 'policy' not in settings and os.environ.get('QSAFE_POLICY'):
            settings['policy'] = os.environ['QSAFE_POLICY']
        try:
            stored = stored_link_keys(os.path.expanduser(key_store), terms, warn=Display().warning, **settings)
        except (LinkKeyStoreError, ValueError, TypeError) as exc:
            raise AnsibleActionFail('reading the link keys from %s: %s' % (key_store, exc))
        cak_bits = 128 if '128' in plan.get('cipher_suite', '') else 256
        secrets = {}
        for record in stored:
            entry = _secrets_of(record, cak_bits)
            secrets[entry['link_id']] = entry
        return secrets

    @staticmethod
    def _inventory_vars(hostvars, site):
        if site not in hostvars:
            return {}
        host = hostvars[site]
        return dict((name, host[name]) for name in host if name.startswith(INVENTORY_PREFIXES))

    @staticmethod
    def _mesh_site_includes(mesh_site):
        """The include_role tasks of roles/mesh_site/tasks/main.yml: (role, when, vars), in order."""
        tasks = mesh_site._load('tasks/main.yml') or []
        includes = []
        for task in tasks:
            action = [key for key in INCLUDE_ROLE if key in task]
            if not action:
                continue
            name = task[action[0]]['name']
            if not name.startswith(COLLECTION_PREFIX):
                raise AnsibleActionFail('roles/mesh_site includes %s, which mesh_render cannot render' % name)
            when = task.get('when') or []
            includes.append((name[len(COLLECTION_PREFIX):], when if isinstance(when, list) else [when], task.get('vars') or {}))
        return includes

    # -- one site ------------------------------------------------------------------------------

    def _render_site(self, site, plan, secrets, output_dir, roles, includes, inventory_vars):
        """[(site, role, {directories, files: [(path, text, mode, force)], stale})] of one site (SECRET text)."""
        site_secrets = [secrets[link['link_id']] for link in plan['links'] if site in link['sites']]
        config = site_config(plan, site, site_secrets)
        mesh_site = roles['mesh_site']
        context = mesh_site.variables(inventory_vars, dict(
            inventory_hostname=site, mesh_site_mode='render', mesh_site_output_dir=output_dir,
            mesh_site_mesh=plan, mesh_site_config=config, ansible_check_mode=self._task.check_mode))
        errors = mesh_site.argument_errors(self._templar, inventory_vars, dict(mesh_site_config=config, mesh_site_mode='render',
                                                                               mesh_site_mesh=plan, mesh_site_output_dir=output_dir))
        if errors:
            raise RoleRenderError('; '.join(errors))
        site_templar = self._templar.copy_with_new_env(available_variables=context)
        outputs = []
        for role_name, conditions, params in includes:
            role = roles[role_name]
            if not all(evaluate_conditional(site_templar, condition) for condition in conditions):
                if '_%s_own_patterns' % role_name in role.vars:
                    # No link of this role left at this site (MACsec): the files of its former links go (they hold their keys).
                    own = dict(directory=os.path.join(output_dir, site), keep=(), patterns=role.vars['_%s_own_patterns' % role_name],
                               marker=role.vars['_%s_marker' % role_name])
                    outputs.append((site, role_name, dict(directories=[], files=[], stale=own_files_not_kept(own))))
                continue
            role_params = evaluate_params(self._templar, context, params)
            errors = role.argument_errors(self._templar, inventory_vars, role_params)
            if errors:
                raise RoleRenderError('; '.join(errors))
            variables = role.variables(inventory_vars, dict(role_params, inventory_hostname=site,
                                                            ansible_check_mode=self._task.check_mode))
            input_errors = role.input_errors(self._templar, variables)
            if input_errors:
                raise RoleRenderError('%s: %s' % (role_name, '; '.join(input_errors)))

            declared = role.outputs(self._templar, variables)
            files = []
            for template, path, mode, force, template_vars in declared['files']:
                if not path.startswith(output_dir + os.sep):
                    raise RoleRenderError('%s: %s is outside output_dir' % (role_name, path))
                files.append((path, role.render(self._templar, dict(variables, **template_vars), template, path), mode, force))
            stale = own_files_not_kept(declared['own']) if declared['own'] else []
            outputs.append((site, role_name, dict(directories=declared['directories'], files=files, stale=stale)))
        return outputs
