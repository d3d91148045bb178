"""Running the collection's playbooks in the integration tests: ansible-playbook from this venv against the
collection copy (ANSIBLE_COLLECTIONS_PATH, as `make integration` sets it), a play of a few tasks, the recap,
full_mesh.yml on a copy of an inventory (the ``mesh`` fixture in conftest.py), the hybrid_key lookup in a play,
and every spelling a key could leak in.
"""

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import textwrap

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS_PATH = os.environ.get('ANSIBLE_COLLECTIONS_PATH', os.path.join(REPO_ROOT, '.build')).split(os.pathsep)[0]
FULL_MESH = os.path.join(REPO_ROOT, 'playbooks', 'full_mesh.yml')
PAPER = os.path.join(REPO_ROOT, 'playbooks', 'inventories', 'paper')


def ansible_playbook(playbook, *args, extra_vars=None):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False',
               ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0')
    command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', playbook]
    if extra_vars:
        command += ['-e', json.dumps(extra_vars)]
    command += list(args)
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=300, check=False)
    return done.returncode, done.stdout.decode('utf-8', 'replace')


def recap(output):
    match = re.search(r'localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', output)
    assert match, output
    return dict(zip(('ok', 'changed', 'unreachable', 'failed'), map(int, match.groups())))


def key_spellings(key):
    """Every way a key could leak into text output."""
    return {base64.b64encode(key).decode(), key.hex(), key.hex().upper(), repr(key)[2:-1]}


def run_tasks(tmp_path, tasks, *args):
    playbook = tmp_path / 'play.yml'
    playbook.write_text(textwrap.dedent('''\
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
        ''') + textwrap.indent(textwrap.dedent(tasks), '    '))
    return ansible_playbook(str(playbook), *args)


def run(mesh, *args, **extra):
    """full_mesh.yml on the ``mesh`` fixture's inventory, key store and output directory; (rc, output)."""
    extra_vars = dict(qsafe_endpoints_file=mesh['simulator']['endpoints_file'], qsafe_key_store=str(mesh['store']),
                      qsafe_output_dir=str(mesh['out']))
    extra_vars.update(extra)
    return ansible_playbook(FULL_MESH, '-i', str(mesh['inventory']), '-e', json.dumps(extra_vars), *args)


def keyed_now(output):
    match = re.search(r'"keyed_now": \[(.*?)\]', output, re.S)
    assert match, output
    return sorted(re.findall(r'"([^"]+)"', match.group(1)))


def tree(directory):
    """{relative path: (mode, SHA-256 of the content)} of every file under ``directory``.

    Digests, not contents: the files hold keys, and a failing assertion prints what it compares.
    """
    files = {}
    for root, dirs, names in os.walk(str(directory)):
        for name in names:
            path = os.path.join(root, name)
            with open(path, 'rb') as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            files[os.path.relpath(path, str(directory))] = (stat.S_IMODE(os.stat(path).st_mode), digest)
    return files


def lookup_playbook(tmp_path, simulator, links, *args, **options):
    """Run the lookup in a play; returns (rc, output, results). Results go to a 0600 file, never to the output."""
    out = tmp_path / 'results.json'
    playbook = tmp_path / 'lookup.yml'
    option_text = ''.join(', %s=lookup_options.%s' % (name, name) for name in options)
    playbook.write_text(json.dumps([dict(
        hosts='localhost', connection='local', gather_facts=False,
        vars=dict(links=links, lookup_options=options),
        tasks=[
            {'ansible.builtin.set_fact': {'link_keys': "{{ query('qsafe.keyfabric.hybrid_key', links, endpoints_file='%s'%s) }}"
                                          % (simulator['endpoints_file'], option_text)}, 'no_log': True},
            {'ansible.builtin.copy': {'content': '{{ link_keys | to_json }}', 'dest': str(out), 'mode': '0600'},
             'no_log': True},
        ])]))
    rc, output = ansible_playbook(str(playbook), *args)
    results = json.loads(out.read_text()) if out.exists() else None
    return rc, output, results
