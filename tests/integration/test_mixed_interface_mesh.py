"""A mesh whose sites speak different key-delivery interfaces, keyed end to end by full_mesh.yml (render mode).

playbooks/inventories/mixed_interfaces against qkdsim/topologies/mixed_interfaces.yml: site-a and site-d
fetch QKD keys over ETSI 014, site-b and site-c over ETSI 004, so the six links cover every
combination of master and slave interface (014->004, 014->014, 004->004, 004->014).
"""

import json
import os
import re
import shutil

import pytest

from conftest import REPO_ROOT
from test_playbooks import ansible_playbook, key_spellings
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value
from qkdsim.process import SimulatorProcess

PLAYBOOK = os.path.join(REPO_ROOT, 'playbooks', 'full_mesh.yml')
INVENTORY = os.path.join(REPO_ROOT, 'playbooks', 'inventories', 'mixed_interfaces')
TOPOLOGY = os.path.join(REPO_ROOT, 'qkdsim', 'topologies', 'mixed_interfaces.yml')
INTERFACE = {'site-a': 'etsi014', 'site-b': 'etsi004', 'site-c': 'etsi004', 'site-d': 'etsi014'}
SAE = dict((site, 'SAE-' + site[-1].upper()) for site in INTERFACE)
LINKS = ['site-a--site-b', 'site-a--site-c', 'site-a--site-d', 'site-b--site-c', 'site-b--site-d', 'site-c--site-d']
# One simulator log line per call (qkdsim log format): who asked which KME through which interface.
_ETSI014_CALL = re.compile(r' INFO (?P<kme>KME-\w) (?P<sae>SAE-\w) POST /api/v1/keys/\S+/(?P<op>enc_keys|dec_keys) 200 '
                           r'keys=(?P<keys>\d+) ')
_ETSI004_KEY = re.compile(r' INFO (?P<kme>KME-\w)/etsi004 (?P<sae>SAE-\w) 004 GET_KEY status=0 keys=(?P<keys>\d+) ')


@pytest.fixture
def mixed(tmp_path):
    process = SimulatorProcess(tmp_path / 'qkdsim', TOPOLOGY)
    inventory = tmp_path / 'inventory'
    shutil.copytree(INVENTORY, str(inventory))
    yield dict(process=process, inventory=inventory, store=tmp_path / 'store', out=tmp_path / 'out')
    assert process.stop() == 0


def run(mixed, *args):
    extra = dict(qsafe_endpoints_file=str(mixed['process'].endpoints_file), qsafe_key_store=str(mixed['store']),
                 qsafe_output_dir=str(mixed['out']))
    return ansible_playbook(PLAYBOOK, '-i', str(mixed['inventory']), '-e', json.dumps(extra), *args)


def ppk_kcvs(mixed, site):
    """KCV of each PPK in the site's rendered strongSwan secrets, by PPK ID (the keys are never shown)."""
    with open(os.path.join(str(mixed['out']), site, 'swanctl', 'conf.d', 'qsafe-mesh.secrets.conf')) as handle:
        text = handle.read()
    pairs = re.findall(r'ppk-\S+ \{\s*id = (\S+)\s*secret = 0x([0-9a-f]+)', text)
    return dict((ppk_id, key_check_value(bytes.fromhex(secret))) for ppk_id, secret in pairs)


def ppk_ids(mixed, site):
    """PPK ID of each link of the site, from the public comments of its strongSwan connections file."""
    with open(os.path.join(str(mixed['out']), site, 'swanctl', 'conf.d', 'qsafe-mesh.conf')) as handle:
        return dict(re.findall(r'# qsafe-peer name=\S+ link_id=(\S+) ppk_id=(\S+)', handle.read()))


def test_sites_on_014_and_004_key_every_link_end_to_end(mixed):
    rc, output = run(mixed, '--diff')
    assert rc == 0, output
    records = dict((link, json.loads((mixed['store'] / (link + '.json')).read_text())) for link in LINKS)
    for link, record in records.items():
        assert 'qkd' in record['sources'] and not record['degraded'], link   # QKD reached both ends of every link
        assert len(record['qkd_key_ids']) == 1
        for spelling in key_spellings(bytes.fromhex(record['key'])):
            assert spelling not in output

    # Both ends of every link hold the same PPK: same PPK ID, same key check value.
    kcvs = dict((site, ppk_kcvs(mixed, site)) for site in INTERFACE)
    for link, record in records.items():
        first, second = link.split('--')
        ppk_id = ppk_ids(mixed, first)[link]
        assert ppk_id == ppk_ids(mixed, second)[link], link
        assert kcvs[first][ppk_id] == kcvs[second][ppk_id], link

    # Each site fetched its QKD keys over its own interface only, one key per link it is in.
    log = mixed['process'].log_file.read_text()
    used = dict((sae, {'etsi014': 0, 'etsi004': 0}) for sae in SAE.values())
    for match in _ETSI014_CALL.finditer(log):
        used[match.group('sae')]['etsi014'] += int(match.group('keys'))
    for match in _ETSI004_KEY.finditer(log):
        used[match.group('sae')]['etsi004'] += int(match.group('keys'))
    for site, interface in INTERFACE.items():
        other = 'etsi004' if interface == 'etsi014' else 'etsi014'
        assert used[SAE[site]] == {interface: 3, other: 0}, (site, used[SAE[site]])

    # A second run spends no key, over either interface.
    rc, again = run(mixed)
    assert rc == 0 and '"keyed_now": []' in again, again
    assert mixed['process'].log_file.read_text().count(' GET_KEY status=0 ') == log.count(' GET_KEY status=0 ')


def test_an_unknown_interface_fails_early_naming_the_site(mixed):
    hosts = mixed['inventory'] / 'hosts.yml'
    hosts.write_text(hosts.read_text().replace('qsafe_site_key_interface: etsi004', 'qsafe_site_key_interface: etsi005', 1))
    rc, output = run(mixed)
    assert rc != 0 and "site site-b: qsafe_site_key_interface must be one of etsi014, etsi004, skip, got 'etsi005'" in output
    assert not mixed['store'].exists() or not os.listdir(str(mixed['store']))


def test_a_site_whose_kme_lacks_its_interface_is_named(mixed):
    hosts = mixed['inventory'] / 'hosts.yml'
    text = hosts.read_text()
    hosts.write_text(text.replace('SAE-D\n          qsafe_site_key_interface: etsi014', 'SAE-D\n          qsafe_site_key_interface: etsi004'))
    rc, output = run(mixed)
    assert rc != 0 and 'KME KME-D in endpoints_file' in output and 'does not serve interface etsi004' in output
