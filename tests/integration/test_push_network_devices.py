"""Push mode for IOS-XE and Junos sites, as far as a machine without a router goes.

There is no IOS-XE or Junos device here (nor an emulator), so nothing is ever pushed to one. What is
checked: the standard network collections (from the pinned `ansible` wheel, `make network-collections`)
meet galaxy.yml's dependencies; every task that push mode runs resolves its module, and uses only
arguments that module's argument_spec takes (read from the installed collections); the playbook
passes --syntax-check with them; and a push run to routers that are not there fails each site
clearly, at its first contact with the device (or before, for connection settings that cannot
work), without a traceback, without a key byte in the output and leaving no secret on the controller.

Skipped, saying so, when the network collections are not on ANSIBLE_COLLECTIONS_PATH.
"""

import glob
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import yaml

from playbook_support import COLLECTIONS_PATH, REPO_ROOT, key_spellings, keyed_now

PLAYBOOK = os.path.join(REPO_ROOT, 'playbooks', 'full_mesh.yml')
PUSH_PLAY = "Push every site's configuration"
ROLES = ('mesh_site', 'dmvpn_ios_xe', 'strongswan_site', 'macsec_link')
NETWORK_MODULES = {'cisco.ios.ios_command', 'cisco.ios.ios_config', 'junipernetworks.junos.junos_config'}
CHECKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'push_task_modules.py')


@pytest.fixture(scope='module')
def collections_path():
    """ANSIBLE_COLLECTIONS_PATH with this collection and the network collections."""
    for path in os.environ.get('ANSIBLE_COLLECTIONS_PATH', '').split(os.pathsep):
        if path and os.path.isdir(os.path.join(path, 'ansible_collections', 'cisco', 'ios')):
            return os.pathsep.join([COLLECTIONS_PATH, path])
    pytest.skip('cisco.ios is not on ANSIBLE_COLLECTIONS_PATH (make network-collections; make integration adds it)')
    return None


def run(command, collections_path, **env):
    environment = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
                       ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False',
                       ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', **env)
    done = subprocess.run(command, env=environment, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=300, check=False)
    return done.returncode, done.stdout.decode('utf-8', 'replace'), done.stderr.decode('utf-8', 'replace')


def tool(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def test_network_collections_meet_the_declared_dependencies(collections_path):
    from ansible.galaxy.dependency_resolution.versioning import meets_requirements
    with open(os.path.join(REPO_ROOT, 'galaxy.yml')) as handle:
        wanted = yaml.safe_load(handle)['dependencies']
    installed = {}
    for manifest in glob.glob(os.path.join(collections_path.split(os.pathsep)[1], 'ansible_collections', '*', '*',
                                           'MANIFEST.json')):
        with open(manifest) as handle:
            info = json.load(handle)['collection_info']
        installed['%s.%s' % (info['namespace'], info['name'])] = info
    assert {'cisco.ios', 'junipernetworks.junos', 'ansible.netcommon', 'ansible.utils'} <= set(installed)
    for name, versions in list(wanted.items()) + [dep for info in installed.values()
                                                  for dep in info['dependencies'].items()]:
        assert meets_requirements(installed[name]['version'], versions), (name, versions, installed[name]['version'])


def check_modules(collections_path, *specs):
    rc, out, err = run([sys.executable, CHECKER] + list(specs), collections_path)
    assert rc == 0, err
    return json.loads(out)


def test_every_push_task_resolves_its_module_and_uses_only_its_arguments(collections_path):
    files = sorted(path for role in ROLES for kind in ('tasks', 'handlers')
                   for path in glob.glob(os.path.join(REPO_ROOT, 'roles', role, kind, '*.yml')))
    files.append(os.path.join(REPO_ROOT, 'playbooks', 'tasks', 'mesh_site.yml'))
    results = check_modules(collections_path, *(files + [PLAYBOOK + ':' + PUSH_PLAY]))
    assert len(results) > 50
    problems = [entry for entry in results if entry.get('error') or not entry['fqcn'] or entry.get('unknown')]
    assert problems == []
    checked = dict((entry['fqcn'], entry['how']) for entry in results if entry['fqcn'] in NETWORK_MODULES)
    assert checked == dict.fromkeys(NETWORK_MODULES, 'argument_spec')
    # what the includes name exists: roles of this collection, task files (a templated name: some file)
    for entry in results:
        if entry['fqcn'].endswith('_role'):
            assert re.match(r'^qsafe\.keyfabric\.\w+$', entry['include']), entry
            assert os.path.isfile(os.path.join(REPO_ROOT, 'roles', entry['include'].split('.')[2], 'tasks', 'main.yml'))
        elif entry['fqcn'].endswith('_tasks'):
            pattern = re.sub(r'\{\{.*?\}\}', '*', entry['include'])
            assert glob.glob(os.path.join(os.path.dirname(entry['file']), pattern)), entry


def test_the_module_check_finds_a_wrong_module_or_argument(collections_path, tmp_path):
    tasks = tmp_path / 'tasks.yml'
    tasks.write_text(yaml.safe_dump([
        {'name': 'misspelt argument', 'cisco.ios.ios_config': {'src': 'x.cfg', 'save': True}},
        {'name': 'no such module', 'cisco.ios.ios_nothing': {'lines': ['x']}},
        {'name': 'in a block', 'block': [{'name': 'argument of another module', 'junipernetworks.junos.junos_config':
                                          {'lines': ['set x'], 'parents': 'y'}}]},
    ]))
    results = dict((entry['task'], entry) for entry in check_modules(collections_path, str(tasks)))
    assert results['misspelt argument']['unknown'] == ['save']
    assert results['no such module']['fqcn'] is None or 'error' in results['no such module']
    assert results['argument of another module']['unknown'] == ['parents']


def test_full_mesh_passes_syntax_check_with_the_network_collections(collections_path):
    rc, out, err = run([tool('ansible-playbook'), '--syntax-check', '-i', 'localhost,', PLAYBOOK], collections_path)
    assert rc == 0, out + err


DEVICE = dict(ansible_host='127.0.0.1', ansible_user='qsafe', ansible_password='not-a-secret')


@pytest.fixture
def no_device():
    """A local port that refuses connections (bound, never listening, held for the test)."""
    with socket.socket() as refusing:
        refusing.bind(('127.0.0.1', 0))
        yield refusing.getsockname()[1]


def device_inventory(tmp_path, port):
    """mad-1 (IOS-XE hub) with DMVPN to mad-3 (IOS-XE spoke) and to nsp-1 (IOS-XE, no connection settings),
    MACsec to mad-2 (Junos over NETCONF); every device address a port that refuses."""
    ios = dict(DEVICE, ansible_port=port, ansible_connection='ansible.netcommon.network_cli',
               ansible_network_os='cisco.ios.ios')
    hosts = {
        'mad-1': dict(ios, qsafe_site_platform='ios_xe', qsafe_site_dmvpn_role='hub', qsafe_site_sae_id='SAE-MAD-1',
                      qsafe_site_underlay_ip='198.51.100.1', qsafe_site_tunnel_ip='100.64.0.1',
                      qsafe_site_macsec_interfaces={'mad-2': 'TenGigabitEthernet0/0/1'}),
        'mad-2': dict(DEVICE, ansible_port=port, ansible_connection='ansible.netcommon.netconf',
                      ansible_network_os='junipernetworks.junos.junos', qsafe_site_platform='junos',
                      qsafe_site_sae_id='SAE-MAD-2', qsafe_site_underlay_ip='198.51.100.2',
                      qsafe_site_tunnel_ip='100.64.0.2', qsafe_site_macsec_interfaces={'mad-1': 'xe-0/0/1'}),
        'mad-3': dict(ios, qsafe_site_platform='ios_xe', qsafe_site_sae_id='SAE-MAD-3',
                      qsafe_site_underlay_ip='198.51.100.3', qsafe_site_tunnel_ip='100.64.0.3'),
        'nsp-1': dict(qsafe_site_platform='ios_xe', qsafe_site_sae_id='SAE-NSP-1',
                      qsafe_site_underlay_ip='198.51.100.4', qsafe_site_tunnel_ip='100.64.0.4'),
    }
    links = [{'sites': ['mad-1', 'mad-2'], 'type': 'macsec'}, {'sites': ['mad-1', 'mad-3'], 'type': 'ipsec'},
             {'sites': ['mad-1', 'nsp-1'], 'type': 'ipsec'}]
    path = tmp_path / 'inventory.json'
    path.write_text(json.dumps({'all': {'children': {'qsafe_sites': {'hosts': hosts}}, 'vars': {'qsafe_mesh': {
        'name': 'devices', 'links': links, 'link_defaults': {'policy': 'qkd+pqc'}}}}}))
    return str(path)


def missing_library(platform):
    """What the controller lacks to reach a device of the platform (the connection plugin's library), or None."""
    if platform == 'ios_xe':   # network_cli: ansible-pylibssh, or paramiko
        if not (importlib.util.find_spec('pylibsshext') or importlib.util.find_spec('paramiko')):
            return 'paramiko is not installed'
        return None
    return None if importlib.util.find_spec('ncclient') else 'Failed to import the required Python library (ncclient)'


def test_push_to_routers_that_are_not_there_fails_each_site_clearly(simulator, collections_path, no_device, tmp_path):
    controller_tmp = tmp_path / 'controller-tmp'
    controller_tmp.mkdir()
    extra_vars = dict(qsafe_mode='push', qsafe_endpoints_file=simulator['endpoints_file'],
                      qsafe_key_store=str(tmp_path / 'store'))
    inventory = device_inventory(tmp_path, no_device)
    outputs = []
    for verbosity in ([], ['-vvvv']):
        rc, out, err = run([tool('ansible-playbook'), '-i', inventory, PLAYBOOK, '-e', json.dumps(extra_vars)]
                           + verbosity, collections_path, TMPDIR=str(controller_tmp))
        outputs.append(out + err)
        assert rc == 2, out + err
        recap = dict(re.findall(r'(?m)^(\S+)\s*:\s*ok=\d+\s+changed=\d+\s+unreachable=\d+\s+(failed=\d+)', out))
        assert recap == {'localhost': 'failed=0', 'mad-1': 'failed=1', 'mad-2': 'failed=1', 'mad-3': 'failed=1',
                         'nsp-1': 'failed=1'}, out
        # nothing of a site's configuration, with its keys, is left on the controller
        assert os.listdir(str(controller_tmp)) == []
    assert '"path": "%s/' % controller_tmp in outputs[1], 'the temporary directories were not made in TMPDIR'
    # the keys made by the first run stay in the store: the second run spends none
    assert keyed_now(outputs[0]) == ['mad-1--mad-2', 'mad-1--mad-3', 'mad-1--nsp-1'] and keyed_now(outputs[1]) == []
    output = outputs[0]
    assert 'Traceback' not in output and 'MODULE FAILURE' not in output, output
    # a site whose connection settings cannot reach a router: named, with what it needs, before any contact
    assert ('site nsp-1 (ios_xe): push mode needs ansible_connection ansible.netcommon.network_cli and '
            'ansible_network_os cisco.ios.ios (got ssh and nothing)') in output, output
    # the routers: each fails at its first contact (IOS-XE: reading the keyring, before anything is rendered)
    sections = re.split(r'(?m)^TASK \[([^\]]+)\].*$', output)
    failed_tasks = [(host, task) for task, text in zip(sections[1::2], sections[2::2])
                    for host in re.findall(r'(?m)^fatal: \[(\S+)\]', text)]
    assert sorted(failed_tasks) == [
        ('mad-1', 'qsafe.keyfabric.dmvpn_ios_xe : Running keyring and IKEv2 profile (holds keys - no log)'),
        ('mad-2', 'qsafe.keyfabric.macsec_link : Load the MACsec configuration (Junos)'),
        ('mad-3', 'qsafe.keyfabric.dmvpn_ios_xe : Running keyring and IKEv2 profile (holds keys - no log)'),
        ('nsp-1', 'qsafe.keyfabric.mesh_site : Push mode - the site\'s connection settings fit its platform'),
    ], output
    assert 'IOS-XE configuration (SECRET' not in output, 'a router that cannot be reached had its configuration rendered'
    for platform in ('ios_xe', 'junos'):
        # this machine has neither library, so that is what the sites report; with them, the refused connection
        expected = missing_library(platform) or 'Connection refused'
        assert expected in output, (platform, expected, output)
    for name in os.listdir(str(tmp_path / 'store')):
        with open(str(tmp_path / 'store' / name)) as handle:
            key = bytes.fromhex(json.load(handle)['key'])
        for spelling in key_spellings(key):
            assert all(spelling not in text for text in outputs), name
