"""The live testbed end to end with three sites (playbooks/testbed_up.yml, testbed_down.yml, python -m testbed):
every pair pings through its tunnel with ppk=yes on every IKE SA, a mesh-wide PPK rotation through
push mode (new IKE SAs with the new PPKs, traffic still flows), a wrong PPK at one end fails only
that link (AUTHENTICATION_FAILED) while the others stay up, and teardown leaves nothing behind, also
after a failure halfway and after processes were killed.

Needs root, iproute2 and strongSwan (charon_support.PACKAGES; `make integration` installs them);
skips, saying which is missing, elsewhere.
"""

import json
import os
import re
import signal

import pytest

from charon_support import skip_reason as charon_skip_reason
from playbook_support import REPO_ROOT, ansible_playbook, key_spellings, keyed_now
from simulator_support import enc_keys_served

UP = os.path.join(REPO_ROOT, 'playbooks', 'testbed_up.yml')
DOWN = os.path.join(REPO_ROOT, 'playbooks', 'testbed_down.yml')
SITES = ('site-001', 'site-002', 'site-003')
LINKS = ['site-001--site-002', 'site-001--site-003', 'site-002--site-003']


def _skip_reason():
    from testbed import skip_reason
    return skip_reason() or charon_skip_reason()


def prefix(tag):
    """A namespace prefix of this test run (several runs on one machine never collide)."""
    return 'qt%s%d' % (tag, os.getpid() % 100000)


def leftovers(testbed):
    """Whatever of the testbed still exists: namespaces with its prefix, live recorded processes, its state directory."""
    status = testbed.status()
    return dict((key, status[key]) for key in ('namespaces', 'charons', 'qkdsim', 'state_dir') if status[key])


def up(state_dir, name_prefix, **extra):
    rc, output = ansible_playbook(UP, extra_vars=dict(testbed_sites=3, testbed_state_dir=str(state_dir),
                                                      testbed_prefix=name_prefix, **extra))
    assert rc == 0, output
    return output


@pytest.fixture(scope='module')
def testbed(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from testbed import Testbed
    state_dir = tmp_path_factory.mktemp('testbed') / 'state'
    name_prefix = prefix('t')
    try:
        output = up(state_dir, name_prefix)
        yield dict(bed=Testbed(str(state_dir), name_prefix), output=output, state_dir=state_dir, prefix=name_prefix)
    finally:
        Testbed(str(state_dir), name_prefix).down()


def served(bed):
    manifest = dict(log_file=bed.state['qkdsim']['log_file'])
    counts = {}
    for link in LINKS:
        master, slave = link.split('--')
        counts[link] = enc_keys_served(manifest, 'SAE-' + master.upper(), 'SAE-' + slave.upper())
    return counts


def test_up_brings_every_link_up_with_its_ppk_and_traffic_flows(testbed):
    bed = testbed['bed']
    assert keyed_now(testbed['output']) == LINKS
    assert '"verified": true' in testbed['output'], testbed['output']
    assert sorted(bed.our_namespaces()) == sorted(['%s-core' % testbed['prefix']] + ['%s-%s' % (testbed['prefix'], s) for s in SITES])
    for site in SITES:
        sas = bed.ike_sas(site)
        assert [(sa['peer'], sa['state'], sa['ppk'], sa['child_installed']) for sa in sas] == \
            [(peer, 'ESTABLISHED', True, True) for peer in SITES if peer != site], (site, sas)
    result = bed.verify()
    assert result['ok'], result['problems']
    assert sorted(result['rtt_ms']) == LINKS
    # no key byte in the playbook's output or in the testbed's record of its runs
    with open(bed.path('runs.jsonl')) as handle:
        text = testbed['output'] + handle.read()
    for link in LINKS:
        with open(os.path.join(bed.info()['key_store'], link + '.json')) as handle:
            key = bytes.fromhex(json.load(handle)['key'])
        assert not [spelling for spelling in key_spellings(key) if spelling in text], link


def test_rotation_through_push_mode_rekeys_every_link_and_traffic_still_flows(testbed):
    bed = testbed['bed']
    before = dict((site, dict((sa['peer'], sa['uniqueid']) for sa in bed.ike_sas(site))) for site in SITES)
    served_before = served(bed)
    output = up(testbed['state_dir'], testbed['prefix'], qsafe_mode='push', qsafe_rotate=True)
    assert keyed_now(output) == LINKS
    assert all(count > served_before[link] for link, count in served(bed).items())
    for site in SITES:
        assert 'rotated with the new PPK: %s' % ', '.join(peer for peer in SITES if peer != site) in output
        after = dict((sa['peer'], sa['uniqueid']) for sa in bed.ike_sas(site))
        assert sorted(after) == sorted(before[site]) and all(after[peer] != before[site][peer] for peer in after), (site, before, after)
    result = bed.verify()
    assert result['ok'], result['problems']


def test_wrong_ppk_at_one_end_fails_only_that_link(testbed):
    bed = testbed['bed']
    secrets = os.path.join(bed.swanctl_dir('site-003'), 'conf.d', 'qsafe-mesh.secrets.conf')
    with open(secrets) as handle:
        text = handle.read()
    # site-003's PPK for its link to site-002 replaced by another 256-bit value (never printed)
    wrong, count = re.subn(r'(ppk-site-002 \{\s*id = \S+\s*secret = 0x)[0-9a-f]+', lambda m: m.group(1) + '5a' * 32, text)
    assert count == 1
    with open(secrets, 'w') as handle:
        handle.write(wrong)
    bed.swanctl('site-003', '--load-creds', '--noprompt', '--file', os.path.join(bed.swanctl_dir('site-003'), 'swanctl.conf'))
    bed.swanctl('site-002', '--terminate', '--ike', 'site-003', '--timeout', '10')
    failed = bed.swanctl('site-002', '--initiate', '--child', 'site-003', '--timeout', '10', check=False)
    assert failed.returncode != 0
    assert 'received AUTHENTICATION_FAILED notify error' in bed.charon_log('site-002')
    replies = bed.ping()
    assert [pair for pair, rtt in sorted(replies.items()) if rtt is None] == [('site-002', 'site-003')]
    for site, peer in (('site-001', 'site-002'), ('site-001', 'site-003')):
        assert [(sa['state'], sa['ppk']) for sa in bed.ike_sas(site) if sa['peer'] == peer] == [('ESTABLISHED', True)]
    # the right PPK back at site-003: the link comes up again
    with open(secrets, 'w') as handle:
        handle.write(text)
    bed.connect()
    result = bed.verify()
    assert result['ok'], result['problems']


def test_down_leaves_nothing(testbed):
    bed = testbed['bed']
    pids = [bed.state['sites'][site]['charon_pid'] for site in SITES] + [bed.state['qkdsim']['pid']]
    rc, output = ansible_playbook(DOWN, extra_vars=dict(testbed_state_dir=str(testbed['state_dir']), testbed_prefix=testbed['prefix']))
    assert rc == 0, output
    from testbed import Testbed
    after = Testbed(str(testbed['state_dir']), testbed['prefix'])
    assert leftovers(after) == {}
    assert not os.path.exists(str(testbed['state_dir']))
    assert [pid for pid in pids if os.path.exists('/proc/%d' % pid) and 'Z' not in open('/proc/%d/stat' % pid).read().split(') ')[1][:1]] == []
    # a second teardown finds nothing and succeeds
    rc, output = ansible_playbook(DOWN, extra_vars=dict(testbed_state_dir=str(testbed['state_dir']), testbed_prefix=testbed['prefix']))
    assert rc == 0 and 'changed=0' in output, output


def test_down_after_a_failure_halfway_and_killed_processes(tmp_path, monkeypatch):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    import testbed.charon as charon_module
    from testbed import Testbed, TestbedError
    # up fails after the namespaces exist: the charon binary cannot be run
    state_dir = tmp_path / 'failed'
    bed = Testbed(str(state_dir), prefix('f'))
    monkeypatch.setattr(charon_module, 'CHARON', '/bin/false')
    with pytest.raises(TestbedError, match='charon of site-001 did not start'):
        bed.up_infra(2)
    assert len(bed.our_namespaces()) == 3
    bed.down()
    assert leftovers(bed) == {}
    monkeypatch.undo()
    # a running testbed whose charon and simulator were killed, and whose state file was lost
    state_dir = tmp_path / 'killed'
    bed = Testbed(str(state_dir), prefix('k'))
    try:
        bed.up_infra(2)
        os.kill(bed.state['sites']['site-001']['charon_pid'], signal.SIGKILL)
        qkdsim_pid = bed.state['qkdsim']['pid']
        os.remove(bed.state_file)
        lost = Testbed(str(state_dir), prefix('k'))
        assert lost.sites() == [] and len(lost.our_namespaces()) == 3
        removed = lost.down()
        assert qkdsim_pid in removed['processes']
        assert leftovers(lost) == {}
        assert not os.path.exists(str(state_dir))
    finally:
        Testbed(str(state_dir), prefix('k')).down()
    # the state directory of another testbed is never taken for this one's
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'testbed.json').write_text(json.dumps(dict(prefix='qtother', core=None, sites={}, qkdsim=None)))
    with pytest.raises(TestbedError, match="belongs to the testbed with prefix 'qtother'"):
        Testbed(str(other), prefix('k'))


def test_python_module_reports_errors_clearly(tmp_path, capsys):
    from testbed.__main__ import main
    assert main(['up', '--sites', '1', '--state-dir', str(tmp_path / 's'), '--prefix', 'qtx']) == 1
    assert 'testbed: up: sites: must be an integer between 2 and 50, got 1' in capsys.readouterr().err
    assert main(['down', '--state-dir', str(tmp_path / 's'), '--prefix', 'Bad-Prefix']) == 1
    assert "testbed: down: prefix 'Bad-Prefix': must match" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / 's'))


@pytest.mark.parametrize('policy, problem', [
    ('qkd pqc', 'policy \'qkd pqc\': a policy name is sources joined by "+"'),
    ('{"require": [], "on_missing": "degrade"}', 'policy: require must be a non-empty list of source names'),
    ('{"require": ["qkd"], "on_missing": "maybe"}', "policy: on_missing must be fail or degrade, got 'maybe'"),
    ('{"require": ["qkd"], "when": "always"}', 'policy: unknown field(s) when'),
    ('[1, 2]', 'policy: a policy name or a dict with require and on_missing, got list'),
])
def test_a_bad_policy_is_refused_before_anything_is_built(tmp_path, capsys, policy, problem):
    from testbed.__main__ import main
    assert main(['up', '--sites', '3', '--state-dir', str(tmp_path / 's'), '--prefix', 'qtx', '--policy', policy]) == 1
    assert 'testbed: up: ' + problem in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / 's'))


def test_the_policy_is_every_links_policy_in_the_inventory_and_recorded(tmp_path):
    from testbed import Testbed
    bed = Testbed(str(tmp_path / 's'), 'qtx')
    assert bed.mesh()['link_defaults'] == {'type': 'ipsec', 'policy': 'qkd+pqc'}      # the default, unchanged
    bed.state['policy'] = {'require': ['qkd', 'pqc'], 'on_missing': 'degrade'}        # what up_infra(n, policy) records
    bed._save()
    again = Testbed(str(tmp_path / 's'), 'qtx')
    assert again.mesh()['link_defaults']['policy'] == {'require': ['qkd', 'pqc'], 'on_missing': 'degrade'}
    assert again.inventory()['all']['vars']['qsafe_mesh']['link_defaults']['policy']['on_missing'] == 'degrade'


def test_charon_conf_and_ike_sa_parser_shared_with_the_charon_tests(tmp_path):
    """testbed.charon is what the testbed and charon_support.py both use: the conf names the charon's own socket
    and log, and the parser reads swanctl's raw IKE SA lines (no charon needed)."""
    from testbed import charon
    with open(charon.write_conf(tmp_path)) as handle:
        conf = handle.read()
    assert 'socket = unix://%s/charon.vici' % tmp_path in conf and 'path = %s/charon.log' % tmp_path in conf
    output = ('list-sa event {site-003 {uniqueid=9 version=2 state=CONNECTING local-host=198.18.0.1}}\n'
              'list-sa event {site-002 {uniqueid=7 version=2 state=ESTABLISHED local-host=198.18.0.1 ppk=yes '
              'child-sas {site-002-1 {state=INSTALLED bytes-in=84 packets-in=1 bytes-out=168 packets-out=2}}}}\n')
    assert charon.ike_sas(output) == [
        dict(peer='site-003', uniqueid=9, state='CONNECTING', ppk=False, child_installed=False, packets_in=0, packets_out=0),
        dict(peer='site-002', uniqueid=7, state='ESTABLISHED', ppk=True, child_installed=True, packets_in=1, packets_out=2)]
