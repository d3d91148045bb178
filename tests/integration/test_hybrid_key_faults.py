"""The hybrid_key lookup under QKD faults, end to end: a real simulator, faults set over its control
socket (qkdsim.control), the lookup run by ansible-playbook. Each link's policy applies to that link;
the other links are keyed normally. Also: the per-link timings the lookup returns."""

import pytest

from playbook_support import lookup_playbook
from qkdsim.control import ControlClient
from qkdsim.process import SimulatorProcess

HIT = 'SAE-MAD-1--SAE-MAD-2'        # the link the fault hits
SPARED = 'SAE-MAD-2--SAE-MAD-3'     # a link that shares no KME or QKD link with the fault
TIMING_PHASES = {'qkd_master', 'qkd_slave', 'pqc', 'classical', 'mix', 'total'}
# One retry, short backoff: the fault is permanent within a run, the retry path is still taken.
FAST = dict(retries=1, retry_backoff=0.05)

# fault: (set it, clear it, the cause the lookup reports). A KME that is down and refuses connections,
# an exhausted link and an alarmed link leave QKD missing: the link's policy decides.
FAULTS = {
    'kme-down-refuse': (lambda control: control.kme_down('KME-MAD-1', mode='refuse'),
                        lambda control: control.kme_up('KME-MAD-1'),
                        'cannot connect to the KME (NewConnectionError)'),
    'link-exhausted': (lambda control: control.drain('MAD-1--MAD-2', hold=True),
                       lambda control: control.fill('MAD-1--MAD-2'),
                       'not enough key on QKD link MAD-1--MAD-2 (held empty)'),
    'qber-alarm': (lambda control: control.set_qber('MAD-1--MAD-2', 0.2),
                   lambda control: control.set_qber('MAD-1--MAD-2', 0.02),
                   'QKD link MAD-1--MAD-2 is alarmed: QBER 0.2 is above the threshold 0.11'),
}


@pytest.fixture(scope='module')
def fault_simulator(tmp_path_factory):
    """A five-site network of its own (faults must not reach the shared one), and its control client."""
    process = SimulatorProcess(tmp_path_factory.mktemp('qkdsim-faults'))
    manifest = dict(process.endpoints, endpoints_file=str(process.endpoints_file), log_file=str(process.log_file))
    yield manifest, ControlClient.for_state_dir(process.state_dir)
    assert process.stop() == 0, 'qkdsim did not stop cleanly on SIGTERM'


@pytest.fixture(params=sorted(FAULTS))
def fault(request, fault_simulator):
    """(manifest, fault name, cause text): the fault is on for the test and cleared afterwards."""
    manifest, control = fault_simulator
    set_fault, clear_fault, cause = FAULTS[request.param]
    set_fault(control)
    yield manifest, request.param, cause
    clear_fault(control)


def mesh(policy_of_hit):
    """The link the fault hits (with the given policy) and a link it spares."""
    return [dict(master='SAE-MAD-1', slave='SAE-MAD-2', policy=policy_of_hit),
            dict(master='SAE-MAD-2', slave='SAE-MAD-3', policy='qkd+pqc')]


def test_on_missing_fail_fails_the_run_naming_link_and_cause_and_keys_the_others(fault, tmp_path):
    manifest, name, cause = fault
    store = tmp_path / 'keys'
    store.mkdir(mode=0o700)
    rc, output, results = lookup_playbook(tmp_path, manifest, mesh(dict(require=['qkd', 'pqc'], on_missing='fail')),
                                          key_store=str(store), **FAST)
    assert rc != 0 and results is None, output
    assert '1 of 2 links failed: link %s: policy qkd+pqc (on_missing=fail) refuses the key: required source(s) ' \
           'missing: qkd' % HIT in output, output
    assert cause in output, (name, output)
    assert 'The 1 other links were keyed' in output
    assert sorted(path.name for path in store.iterdir()) == ['%s.json' % SPARED], 'the spared link is keyed and stored'
    assert 'Traceback' not in output


def test_on_missing_degrade_keys_the_link_from_the_rest_with_an_alarm(fault, tmp_path):
    manifest, name, cause = fault
    rc, output, results = lookup_playbook(tmp_path, manifest, mesh(dict(require=['qkd', 'pqc'], on_missing='degrade')),
                                          **FAST)
    assert rc == 0, output
    hit, spared = results
    assert hit['link_id'] == HIT and hit['degraded'] is True
    assert hit['sources'] == ['classical', 'pqc'] and hit['qkd_key_ids'] == []
    assert any(cause in alarm for alarm in hit['alarms']), (name, hit['alarms'])
    assert any('DEGRADED key under policy qkd+pqc' in alarm for alarm in hit['alarms'])
    assert '[WARNING]: hybrid_key: link %s' % HIT in output
    assert spared['link_id'] == SPARED and spared['degraded'] is False
    assert spared['sources'] == ['classical', 'qkd', 'pqc'] and len(spared['qkd_key_ids']) == 1
    # Timings: the failed QKD call took time, the slave was never asked.
    assert set(hit['timings_ms']) == TIMING_PHASES
    assert hit['timings_ms']['qkd_master'] > 0 and hit['timings_ms']['qkd_slave'] == 0


@pytest.mark.parametrize('on_missing', ['fail', 'degrade'])
def test_a_kme_that_resets_connections_never_gives_a_silent_or_wrong_key(fault_simulator, tmp_path, on_missing):
    """A KME whose port accepts TCP connections and resets them at once. The reset comes before or during
    the TLS handshake, so no enc_keys reached the KME (etsi014_client tells this from a reset after the
    request was written): QKD is missing and the policy decides. The hit link fails, or degrades saying
    why; the other link is keyed normally."""
    manifest, control = fault_simulator
    control.kme_down('KME-MAD-1', mode='drop')
    try:
        rc, output, results = lookup_playbook(tmp_path, manifest, mesh(dict(require=['qkd', 'pqc'], on_missing=on_missing)),
                                              **FAST)
    finally:
        control.kme_up('KME-MAD-1')
    assert 'no key is consumed twice' not in output, output
    if on_missing == 'fail':
        assert rc != 0 and results is None, output
        assert '1 of 2 links failed: link %s: policy qkd+pqc (on_missing=fail) refuses the key' % HIT in output and \
            'cannot connect to the KME' in output, output
        assert 'The 1 other links were keyed' in output
    else:
        assert rc == 0, output
        hit, spared = results
        assert hit['degraded'] and hit['sources'] == ['classical', 'pqc']
        assert any('cannot connect to the KME' in alarm for alarm in hit['alarms']), hit['alarms']
        assert not spared['degraded'] and 'qkd' in spared['sources']


def test_the_link_is_keyed_normally_once_the_fault_is_cleared(fault_simulator, tmp_path):
    manifest, control = fault_simulator
    for set_fault, clear_fault, unused_cause in FAULTS.values():
        set_fault(control)
        clear_fault(control)
    rc, output, results = lookup_playbook(tmp_path, manifest, mesh('qkd+pqc'), **FAST)
    assert rc == 0, output
    assert [result['degraded'] for result in results] == [False, False]
    assert all('qkd' in result['sources'] for result in results)


def test_timings_cover_every_phase_of_a_keyed_link_and_not_reused_ones(fault_simulator, tmp_path):
    manifest, unused_control = fault_simulator
    store = tmp_path / 'keys'
    store.mkdir(mode=0o700)
    rc, output, results = lookup_playbook(tmp_path, manifest, mesh('qkd+pqc'), key_store=str(store), workers=1)
    assert rc == 0, output
    for result in results:
        timings = result['timings_ms']
        assert set(timings) == TIMING_PHASES | {'store'}
        assert all(isinstance(value, float) and value > 0 for value in timings.values()), timings
        phases = sum(timings[phase] for phase in ('qkd_master', 'qkd_slave', 'pqc', 'classical', 'mix'))
        assert phases <= timings['total'] + 0.01, timings     # the phases are parts of the whole
    rc, output, again = lookup_playbook(tmp_path, manifest, mesh('qkd+pqc'), key_store=str(store))
    assert rc == 0, output
    assert [result['reused'] for result in again] == [True, True]
    assert all('timings_ms' not in result for result in again), 'a reused key was not keyed, so it has no timings'
