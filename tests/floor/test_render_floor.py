# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The render path on the oldest ansible-core the collection claims (meta/runtime.yml).

`make floor` runs this module in a virtualenv of its own built from tests/floor/requirements.txt
(that ansible-core and the collection's runtime dependencies), with the collection copy in .build
(ANSIBLE_COLLECTIONS_PATH) and the simulated QKD network started from the same interpreter:
playbooks/full_mesh.yml keys and renders the paper's five sites, a second run changes nothing, and the
per-site path (the roles on a DMVPN+MACsec site and a strongSwan site) agrees with the mesh_render action.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import re
import subprocess
import sys
import time

import pytest

from ansible.release import __version__ as ansible_version

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = os.path.join(REPO_ROOT, 'playbooks', 'full_mesh.yml')
PAPER = os.path.join(REPO_ROOT, 'playbooks', 'inventories', 'paper')
LINKS = ['mad-1--mad-2', 'mad-1--mad-3', 'mad-1--mex-1', 'mad-1--nsp-1', 'mad-2--mad-3',
         'mad-2--mex-1', 'mad-2--nsp-1', 'mad-3--mex-1', 'mad-3--nsp-1', 'mex-1--nsp-1']
SITES = ('mad-1', 'mad-2', 'mad-3', 'mex-1', 'nsp-1')


def floor_version():
    """The ansible-core version tests/floor/requirements.txt pins."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'requirements.txt')) as handle:
        return re.search(r'(?m)^ansible-core==(\S+)$', handle.read()).group(1)


def runtime_floor():
    """The version meta/runtime.yml's requires_ansible starts at."""
    with open(os.path.join(REPO_ROOT, 'meta', 'runtime.yml')) as handle:
        return re.search(r'''(?m)^requires_ansible:\s*['"]>=([0-9.]+)''', handle.read()).group(1)


def test_this_run_is_the_claimed_floor():
    """The core under test is the pinned one, and it is the floor meta/runtime.yml and the roles state."""
    assert ansible_version == floor_version()
    claimed = runtime_floor()
    assert ansible_version.split('.')[:2] == claimed.split('.')[:2]
    for role in sorted(os.listdir(os.path.join(REPO_ROOT, 'roles'))):
        with open(os.path.join(REPO_ROOT, 'roles', role, 'meta', 'main.yml')) as handle:
            minimum = re.search(r'''(?m)^\s*min_ansible_version:\s*['"]?([0-9.]+)''', handle.read()).group(1)
        assert minimum.split('.')[:2] == claimed.split('.')[:2], role


@pytest.fixture(scope='module')
def simulator(tmp_path_factory):
    """qkdsim's default five-site network, run by this interpreter. Yields its endpoints file."""
    state = tmp_path_factory.mktemp('qkdsim')
    endpoints, log = state / 'endpoints.json', state / 'qkdsim.log'
    process = subprocess.Popen([sys.executable, '-m', 'qkdsim', '--state-dir', str(state), '--log-file', str(log)],
                               cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 30
        while not (endpoints.exists() and endpoints.stat().st_size):
            assert process.poll() is None, 'qkdsim exited early: %s' % (log.read_text() if log.exists() else '')
            assert time.monotonic() < deadline, 'qkdsim did not come up within 30 s'
            time.sleep(0.1)
        yield str(endpoints)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, 'qkdsim did not stop cleanly on SIGTERM'


@pytest.fixture(scope='module')
def mesh(simulator, tmp_path_factory):
    root = tmp_path_factory.mktemp('mesh')
    return dict(endpoints=simulator, store=str(root / 'store'), out=str(root / 'out'))


def full_mesh(mesh, *args, **extra):
    extra_vars = dict(qsafe_endpoints_file=mesh['endpoints'], qsafe_key_store=mesh['store'], qsafe_output_dir=mesh['out'])
    extra_vars.update(extra)
    env = dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING='False',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='False', ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0')
    assert 'ANSIBLE_COLLECTIONS_PATH' in env, 'make floor sets ANSIBLE_COLLECTIONS_PATH to the collection copy in .build'
    env.pop('PYTHONPATH', None)  # ansible-playbook finds the collection as a user's would: through its collections path
    command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', PAPER, PLAYBOOK,
               '-e', json.dumps(extra_vars)] + list(args)
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=300, check=False)
    output = done.stdout.decode('utf-8', 'replace')
    assert done.returncode == 0, output
    return output


def recap(output, host):
    match = re.search(r'(?m)^%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)' % re.escape(host), output)
    assert match, output
    return dict(zip(('ok', 'changed', 'unreachable', 'failed'), map(int, match.groups())))


def keyed_now(output):
    match = re.search(r'"keyed_now": \[(.*?)\]', output, re.S)
    assert match, output
    return sorted(re.findall(r'"([^"]+)"', match.group(1)))


def rendered(mesh):
    files = {}
    for root, dirs, names in os.walk(mesh['out']):
        for name in names:
            path = os.path.join(root, name)
            with open(path, 'rb') as handle:
                files[os.path.relpath(path, mesh['out'])] = (handle.read(), os.stat(path).st_mode & 0o777)
    return files


def assert_no_key_shown(mesh, output):
    names = [name for name in os.listdir(mesh['store']) if name.endswith('.json')]
    assert names
    for name in names:
        with open(os.path.join(mesh['store'], name)) as handle:
            key = bytes.fromhex(json.load(handle)['key'])
        for spelling in (key.hex(), key.hex().upper(), base64.b64encode(key).decode(), repr(key)[2:-1]):
            assert spelling not in output, 'a key of %s is in the output' % name


def test_full_mesh_renders_every_site_then_changes_nothing(mesh):
    output = full_mesh(mesh)
    assert keyed_now(output) == LINKS
    assert recap(output, 'localhost')['changed'] > 0
    files = rendered(mesh)
    assert sorted(set(path.split(os.sep)[0] for path in files)) == list(SITES)
    # the files that hold keys (IOS-XE and MACsec configurations, strongSwan's secrets) are the owner's only
    assert all(mode == 0o600 for path, (data, mode) in files.items() if path.endswith(('.cfg', '.secrets.conf')))
    assert_no_key_shown(mesh, output)

    again = full_mesh(mesh)
    assert keyed_now(again) == []
    assert recap(again, 'localhost')['changed'] == 0, again
    assert rendered(mesh) == files


def test_per_site_path_agrees(mesh):
    """The roles on the hosts (qsafe_render_per_site) find the action's files as they would write them.

    Two sites cover the three roles (mad-1: DMVPN and MACsec on IOS-XE; mad-3: strongSwan on Linux) at
    less than half the cost of all five.
    """
    if not os.path.isdir(mesh['out']):  # run alone (-k): render first
        full_mesh(mesh)
    before = rendered(mesh)
    output = full_mesh(mesh, '--limit', 'localhost,mad-1,mad-3', qsafe_render_per_site=True)
    for host in ('localhost', 'mad-1', 'mad-3'):
        assert recap(output, host)['changed'] == 0, output
    assert 'dmvpn_ios_xe' in output and 'macsec_link' in output and 'strongswan_site' in output, output
    assert rendered(mesh) == before
    assert_no_key_shown(mesh, output)
