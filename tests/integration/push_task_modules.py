"""Report the module of every task in the given task files, whether it resolves, and the arguments
that module does not take. Run as a script (in its own process: it installs Ansible's collection
loader) by test_push_network_devices.py, with ANSIBLE_COLLECTIONS_PATH naming the collections:

    python push_task_modules.py FILE[:PLAY NAME] ...

FILE:PLAY NAME takes the tasks and handlers of that one play of a playbook. Prints JSON, one entry
per task: file, task (its name), action (as written), fqcn (as resolved, or null), args (as used),
include (the file or role an include names), unknown (arguments the module does not take; not
checked for set_fact, whose arguments are variable names) and how the valid arguments were found:
`argument_spec` (captured by running the module's main() with AnsibleModule stubbed out) or
`documentation` (the documented options, for actions without a module of their own: debug, assert,
template ...).
"""

import json
import runpy
import sys
from unittest import mock

import yaml

from ansible.module_utils import basic
from ansible.parsing.mod_args import ModuleArgsParser
from ansible.plugins.loader import fragment_loader, init_plugin_loader, module_loader
from ansible.utils.plugin_docs import get_docstring

# Blocks hold tasks; includes take a file or a role, not module arguments.
BLOCK_KEYS = ('block', 'rescue', 'always')
INCLUDES = {'ansible.builtin.include_tasks', 'ansible.builtin.import_tasks', 'ansible.builtin.include_role',
            'ansible.builtin.import_role', 'ansible.legacy.include_tasks', 'ansible.legacy.include_role'}
INTERNAL_ARGS = {'_raw_params', '_uses_shell', '_variable_params'}
# Actions whose arguments are names of the caller's choosing (variables).
FREE_FORM = {'ansible.builtin.set_fact', 'ansible.builtin.set_stats'}


class ArgumentSpec(Exception):
    """Raised by the stubbed AnsibleModule.__init__ with the spec it was given."""


def _capture(self, argument_spec=None, add_file_common_args=False, **kwargs):
    spec = dict(argument_spec or {})
    if add_file_common_args:   # mode, owner, group ... (AnsibleModule adds them to the spec itself)
        spec.update(basic.FILE_COMMON_ARGUMENTS)
    raise ArgumentSpec(spec)


def valid_arguments(path, fqcn):
    """(names and aliases the module takes, how they were found)."""
    if path.endswith('.py'):
        python_name = 'ansible.modules.' + fqcn.split('.')[-1] if fqcn.startswith('ansible.builtin.') else \
            'ansible_collections.%s.plugins.modules.%s' % tuple(fqcn.rsplit('.', 1))
        with mock.patch.object(basic.AnsibleModule, '__init__', _capture), mock.patch.object(sys, 'argv', [path]):
            try:
                runpy.run_module(python_name, run_name='__main__')
            except ArgumentSpec as spec:
                names = set()
                for name, option in spec.args[0].items():
                    names.add(name)
                    names.update(option.get('aliases') or [])
                return names, 'argument_spec'
            except (SystemExit, Exception) as error:  # pylint: disable=broad-exception-caught
                sys.stderr.write('%s: %r\n' % (fqcn, error))
    doc = get_docstring(path, fragment_loader)[0] or {}
    names = set()
    for name, option in (doc.get('options') or {}).items():
        names.add(name)
        names.update(option.get('aliases') or [])
    return names, 'documentation'


def tasks_of(path, play_name=None):
    with open(path) as handle:
        data = yaml.safe_load(handle) or []
    if play_name:
        plays = [play for play in data if play.get('name') == play_name]
        if len(plays) != 1:
            raise SystemExit('%s: no single play named %r' % (path, play_name))
        data = plays[0].get('pre_tasks', []) + plays[0].get('tasks', []) + plays[0].get('handlers', []) \
            + plays[0].get('post_tasks', [])
    todo = list(data)
    while todo:
        task = todo.pop(0)
        if any(key in task for key in BLOCK_KEYS):
            todo[:0] = [inner for key in BLOCK_KEYS for inner in task.get(key) or []]
        else:
            yield task


def check(path, play_name=None):
    results = []
    for task in tasks_of(path, play_name):
        entry = dict(file=path, task=task.get('name'))
        try:
            action, args, _delegate_to = ModuleArgsParser(task).parse()
        except Exception as error:  # pylint: disable=broad-exception-caught
            results.append(dict(entry, action=None, fqcn=None, error=str(error).splitlines()[0]))
            continue
        found = module_loader.find_plugin_with_context(action)
        fqcn = found.resolved_fqcn if found.resolved else None
        entry.update(action=action, fqcn=fqcn, args=sorted(set(args) - INTERNAL_ARGS))
        if fqcn in INCLUDES:
            entry.update(include=args.get('name') or args.get('file') or args.get('_raw_params'))
        elif fqcn and fqcn not in FREE_FORM:
            names, how = valid_arguments(found.plugin_resolved_path, fqcn)
            entry.update(unknown=sorted(set(entry['args']) - names), how=how, known=len(names))
        results.append(entry)
    return results


def main():
    init_plugin_loader()
    results = []
    for spec in sys.argv[1:]:
        path, _colon, play_name = spec.partition(':')
        results.extend(check(path, play_name or None))
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
