# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_policy import (
    POLICIES,
    LinkPolicy,
    LinkPolicyError,
    PolicyDecision,
    PolicyViolation,
)

# Every named policy x every set of present sources: (policy, present, missing, with fail, with degrade).
# present/missing are '+'-joined; outcomes: 'ok' (full key), 'refused' (PolicyViolation), 'degraded'.
DECISIONS = [
    ('qkd+pqc', '', 'qkd+pqc', 'refused', 'refused'),
    ('qkd+pqc', 'classical', 'qkd+pqc', 'refused', 'degraded'),
    ('qkd+pqc', 'qkd', 'pqc', 'refused', 'degraded'),
    ('qkd+pqc', 'pqc', 'qkd', 'refused', 'degraded'),
    ('qkd+pqc', 'classical+qkd', 'pqc', 'refused', 'degraded'),
    ('qkd+pqc', 'classical+pqc', 'qkd', 'refused', 'degraded'),
    ('qkd+pqc', 'qkd+pqc', '', 'ok', 'ok'),
    ('qkd+pqc', 'classical+qkd+pqc', '', 'ok', 'ok'),
    ('qkd', '', 'qkd', 'refused', 'refused'),
    ('qkd', 'classical', 'qkd', 'refused', 'degraded'),
    ('qkd', 'qkd', '', 'ok', 'ok'),
    ('qkd', 'pqc', 'qkd', 'refused', 'degraded'),
    ('qkd', 'classical+qkd', '', 'ok', 'ok'),
    ('qkd', 'classical+pqc', 'qkd', 'refused', 'degraded'),
    ('qkd', 'qkd+pqc', '', 'ok', 'ok'),
    ('qkd', 'classical+qkd+pqc', '', 'ok', 'ok'),
    ('pqc', '', 'pqc', 'refused', 'refused'),
    ('pqc', 'classical', 'pqc', 'refused', 'degraded'),
    ('pqc', 'qkd', 'pqc', 'refused', 'degraded'),
    ('pqc', 'pqc', '', 'ok', 'ok'),
    ('pqc', 'classical+qkd', 'pqc', 'refused', 'degraded'),
    ('pqc', 'classical+pqc', '', 'ok', 'ok'),
    ('pqc', 'qkd+pqc', '', 'ok', 'ok'),
    ('pqc', 'classical+qkd+pqc', '', 'ok', 'ok'),
    ('any', '', '', 'refused', 'refused'),
    ('any', 'classical', '', 'refused', 'degraded'),
    ('any', 'qkd', '', 'ok', 'ok'),
    ('any', 'pqc', '', 'ok', 'ok'),
    ('any', 'classical+qkd', '', 'ok', 'ok'),
    ('any', 'classical+pqc', '', 'ok', 'ok'),
    ('any', 'qkd+pqc', '', 'ok', 'ok'),
    ('any', 'classical+qkd+pqc', '', 'ok', 'ok'),
]


def _split(joined):
    return tuple(joined.split('+')) if joined else ()


def test_decision_table_covers_every_policy_and_source_set():
    assert sorted(set(row[0] for row in DECISIONS)) == sorted(POLICIES)
    assert len(DECISIONS) == len(POLICIES) * 8


@pytest.mark.parametrize('on_missing', ['fail', 'degrade'])
@pytest.mark.parametrize('name, present, missing, with_fail, with_degrade', DECISIONS)
def test_decide(name, present, missing, with_fail, with_degrade, on_missing):
    policy = LinkPolicy.from_spec({'require': name, 'on_missing': on_missing})
    expected = with_fail if on_missing == 'fail' else with_degrade
    # present sources in scrambled order: the decision lists them in canonical order
    present_sources = list(reversed(_split(present)))
    if expected == 'refused':
        with pytest.raises(PolicyViolation) as err:
            policy.decide(present_sources, link_id='madrid-north')
        assert err.value.missing == _split(missing)
        assert err.value.present == _split(present)
        assert err.value.link_id == 'madrid-north' and err.value.policy == name
        assert 'madrid-north' in str(err.value) and name in str(err.value)
        return
    decision = policy.decide(present_sources, link_id='madrid-north')
    assert isinstance(decision, PolicyDecision)
    assert decision.sources_used == _split(present)
    assert decision.missing == _split(missing)
    assert decision.degraded is (expected == 'degraded')
    if expected == 'ok':
        assert decision.alarm is None
    else:
        assert decision.alarm.startswith('link madrid-north: DEGRADED key under policy %s' % name)
        for source in _split(missing):
            assert source in decision.alarm.split('key made from')[0]
        assert decision.alarm.endswith('key made from %s only' % present)


def test_classical_only_is_flagged_not_quantum_safe_under_every_policy():
    for name in POLICIES:
        decision = LinkPolicy.from_spec({'require': name, 'on_missing': 'degrade'}).decide(['classical'])
        assert decision.degraded and 'NOT quantum-safe' in decision.alarm
        with pytest.raises(PolicyViolation, match='NOT quantum-safe'):
            LinkPolicy.from_spec(name).decide(['classical'])


def test_alarm_names_missing_sources_and_what_went_in():
    decision = LinkPolicy.from_spec({'require': ['qkd', 'pqc'], 'on_missing': 'degrade'}).decide(['classical'], link_id='L7')
    assert decision.alarm == ('link L7: DEGRADED key under policy qkd+pqc: required source(s) missing: qkd, pqc; '
                              'no quantum-safe source (qkd or pqc), so NOT quantum-safe; key made from classical only')
    decision = LinkPolicy(['qkd', 'pqc'], 'degrade').decide(['pqc', 'classical'])
    assert decision == PolicyDecision(('classical', 'pqc'), ('qkd',), True, 'DEGRADED key under policy qkd+pqc: '
                                      'required source(s) missing: qkd; key made from classical+pqc only')


def test_violation_message_says_what_is_missing_and_present():
    with pytest.raises(PolicyViolation) as err:
        LinkPolicy.from_spec('qkd+pqc').decide(['classical', 'qkd'], link_id='L1')
    assert str(err.value) == ('link L1: policy qkd+pqc (on_missing=fail) refuses the key: required source(s) missing: pqc; '
                              'present: classical, qkd')
    with pytest.raises(PolicyViolation, match='^no key source present .policy any needs a quantum-safe source'):
        LinkPolicy.from_spec({'require': [], 'on_missing': 'degrade'}).decide([])


def test_classical_can_be_required_in_a_dict_spec():
    policy = LinkPolicy.from_spec({'require': ['pqc', 'classical']})
    assert policy.name == 'classical+pqc' and policy.on_missing == 'fail'
    with pytest.raises(PolicyViolation, match='missing: classical'):
        policy.decide(['pqc', 'qkd'])
    assert not policy.decide(['classical', 'pqc']).degraded


@pytest.mark.parametrize('spec, name, required, on_missing', [
    ('qkd+pqc', 'qkd+pqc', {'qkd', 'pqc'}, 'fail'),
    ('qkd', 'qkd', {'qkd'}, 'fail'),
    ('pqc', 'pqc', {'pqc'}, 'fail'),
    ('any', 'any', set(), 'fail'),
    ({'require': ['pqc', 'qkd'], 'on_missing': 'degrade'}, 'qkd+pqc', {'qkd', 'pqc'}, 'degrade'),
    ({'require': 'qkd+pqc'}, 'qkd+pqc', {'qkd', 'pqc'}, 'fail'),
    ({'require': []}, 'any', set(), 'fail'),
    ({'require': 'any', 'on_missing': 'degrade'}, 'any', set(), 'degrade'),
])
def test_from_spec(spec, name, required, on_missing):
    policy = LinkPolicy.from_spec(spec)
    assert (policy.name, policy.required, policy.on_missing) == (name, frozenset(required), on_missing)
    assert LinkPolicy.from_spec(policy) is policy
    assert policy == LinkPolicy(required, on_missing) and hash(policy) == hash(LinkPolicy(required, on_missing))
    assert policy.describe() == dict(name=name, require=[s for s in ('classical', 'qkd', 'pqc') if s in required],
                                     on_missing=on_missing)
    assert repr(policy) == 'LinkPolicy(%r, on_missing=%r)' % (name, on_missing)


@pytest.mark.parametrize('spec, message', [
    ('qkd-only', "unknown link policy 'qkd-only'; known policies are any, pqc, qkd, qkd\\+pqc"),
    ('QKD', "unknown link policy 'QKD'"),
    (None, 'a link policy is a policy name or a dict .*, got NoneType'),
    (['qkd'], 'got list'),
    ({'require': ['qkd'], 'on_mising': 'fail'}, r'unknown field\(s\) on_mising; known fields are require, on_missing'),
    ({'on_missing': 'fail'}, "field 'require' is missing"),
    ({'require': ['qkd', 'bb84']}, r"field 'require': unknown source\(s\) bb84; known sources are classical, qkd, pqc"),
    ({'require': 'qkd+bb84'}, r"unknown source\(s\) bb84"),
    ({'require': 3}, "field 'require' must be a list of sources"),
    ({'require': ['qkd'], 'on_missing': 'warn'}, "on_missing must be one of fail, degrade, got 'warn'"),
])
def test_bad_specs_name_the_field_and_value(spec, message):
    with pytest.raises(LinkPolicyError, match=message) as err:
        LinkPolicy.from_spec(spec)
    assert isinstance(err.value, ValueError)


def test_unknown_present_source_is_an_error():
    with pytest.raises(LinkPolicyError, match=r'present sources: unknown source\(s\) ecdh'):
        LinkPolicy.from_spec('any').decide(['qkd', 'ecdh'])
    with pytest.raises(LinkPolicyError, match='must be a list'):
        LinkPolicy.from_spec('any').decide('qkd')
