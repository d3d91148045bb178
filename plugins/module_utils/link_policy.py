# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which key sources a link key must be made from, and what happens when one is missing.

A link key mixes up to three sources (see hybrid_combiner):

* ``classical`` - an X25519 shared secret. Not quantum-safe on its own.
* ``qkd``       - a QKD key delivered by the KMEs (ETSI GS QKD 014).
* ``pqc``       - an ML-KEM shared secret.

A policy names the sources a link REQUIRES:

==========  ==================  =====================================================
name        required sources    meaning
==========  ==================  =====================================================
qkd+pqc     qkd, pqc            both quantum-safe sources, independent of each other
qkd         qkd                 QKD; ML-KEM is mixed in when present
pqc         pqc                 ML-KEM; QKD is mixed in when present
any         (none)              at least one quantum-safe source, whichever it is
==========  ==================  =====================================================

Every source that is present is always mixed in (``classical`` included); a policy only says
what must not be missing. A dict spec ``{require: [...], on_missing: fail|degrade}`` may require
any subset of the sources, ``classical`` included (for a mandated classical + PQ hybrid); its
name is the required sources joined with ``+`` in the order classical, qkd, pqc, or ``any``.

Besides its required sources, EVERY policy expects at least one quantum-safe source (qkd or
pqc): a key made from ``classical`` alone is never accepted silently, whatever the policy.

A *shortfall* is a required source missing, or no quantum-safe source at all. On a shortfall:

* ``on_missing: fail`` (the default) - ``decide`` raises PolicyViolation; no key is made.
* ``on_missing: degrade`` - the key is made from what is present; the decision says
  ``degraded=True`` and carries an alarm naming the missing source(s) and, when nothing
  quantum-safe is left, saying that the key is NOT quantum-safe.

With no source at all, ``decide`` always raises PolicyViolation (there is nothing to make a key
from). The decision records exactly which sources went in (``sources_used``) and which required
ones did not (``missing``), so a key is never weaker than its policy without saying so.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections import namedtuple

from ansible_collections.qsafe.keyfabric.plugins.module_utils._errors import KeyfabricError

SOURCES = ('classical', 'qkd', 'pqc')
QUANTUM_SAFE_SOURCES = frozenset(('qkd', 'pqc'))
ON_MISSING = ('fail', 'degrade')
ANY = 'any'

POLICIES = {
    'qkd+pqc': frozenset(('qkd', 'pqc')),
    'qkd': frozenset(('qkd',)),
    'pqc': frozenset(('pqc',)),
    ANY: frozenset(),
}

_SPEC_FIELDS = ('require', 'on_missing')

PolicyDecision = namedtuple('PolicyDecision', ['sources_used', 'missing', 'degraded', 'alarm'])
PolicyDecision.__doc__ = """The outcome of LinkPolicy.decide.

sources_used: tuple of the sources that go into the key, in the order classical, qkd, pqc.
missing: tuple of the required sources that are absent (same order); empty when none.
degraded: True when the key falls short of the policy (missing source, or not quantum-safe).
alarm: a one-line message for logs and monitoring when degraded, else None.
"""


class LinkPolicyError(KeyfabricError, ValueError):
    """A policy spec, or a list of present sources, is not valid."""


class PolicyViolation(KeyfabricError):
    """A link lacks a source its policy requires and the policy says to fail.

    link_id, policy (name), missing (tuple) and present (tuple) say what was wrong.
    """

    def __init__(self, message, link_id=None, policy=None, missing=(), present=()):
        super(PolicyViolation, self).__init__(message)
        self.message = message
        self.link_id = link_id
        self.policy = policy
        self.missing = tuple(missing)
        self.present = tuple(present)


def _ordered(sources):
    """``sources`` (a set) as a tuple in the canonical order classical, qkd, pqc."""
    return tuple(source for source in SOURCES if source in sources)


def _check_sources(sources, what):
    """A frozenset of ``sources`` (iterable of names); LinkPolicyError naming ``what`` if bad."""
    if isinstance(sources, (str, bytes)) or not hasattr(sources, '__iter__'):
        raise LinkPolicyError('%s must be a list of sources (%s), got %r' % (what, ', '.join(SOURCES), sources))
    result = frozenset(sources)
    unknown = sorted(str(source) for source in result if source not in SOURCES)
    if unknown:
        raise LinkPolicyError('%s: unknown source(s) %s; known sources are %s'
                              % (what, ', '.join(unknown), ', '.join(SOURCES)))
    return result


def _name_of(required):
    return '+'.join(_ordered(required)) or ANY


class LinkPolicy:
    """Which sources a link key requires (``required``) and what to do when one is missing.

    name: 'qkd+pqc', 'qkd', 'pqc', 'any', or for dict specs the required sources joined with '+'.
    required: frozenset of sources.
    on_missing: 'fail' or 'degrade'.
    """

    __slots__ = ('name', 'required', 'on_missing')

    def __init__(self, required, on_missing='fail'):
        required = _check_sources(required, 'require')
        if on_missing not in ON_MISSING:
            raise LinkPolicyError('on_missing must be one of %s, got %r' % (', '.join(ON_MISSING), on_missing))
        self.required = required
        self.on_missing = on_missing
        self.name = _name_of(required)

    @classmethod
    def from_spec(cls, spec):
        """A LinkPolicy from a policy name, a dict ``{require: [...], on_missing: ...}``, or a LinkPolicy.

        ``require`` is a list of sources or a '+'-joined string of them ('qkd+pqc', 'any');
        ``on_missing`` defaults to 'fail'. Errors name the bad field and value.
        """
        if isinstance(spec, LinkPolicy):
            return spec
        if isinstance(spec, str):
            if spec not in POLICIES:
                raise LinkPolicyError('unknown link policy %r; known policies are %s (or a dict with require and on_missing)'
                                      % (spec, ', '.join(sorted(POLICIES))))
            return cls(POLICIES[spec])
        if not isinstance(spec, dict):
            raise LinkPolicyError('a link policy is a policy name or a dict with require and on_missing, got %s'
                                  % type(spec).__name__)
        unknown = sorted(str(field) for field in spec if field not in _SPEC_FIELDS)
        if unknown:
            raise LinkPolicyError('link policy: unknown field(s) %s; known fields are %s'
                                  % (', '.join(unknown), ', '.join(_SPEC_FIELDS)))
        if 'require' not in spec:
            raise LinkPolicyError("link policy: field 'require' is missing (a list of sources, or [] for any)")
        required = spec['require']
        if isinstance(required, str):
            required = [] if required == ANY else required.split('+')
        return cls(_check_sources(required, "link policy field 'require'"), spec.get('on_missing', 'fail'))

    def decide(self, present_sources, link_id=None):
        """The PolicyDecision for a key made from ``present_sources``; PolicyViolation on a refused shortfall."""
        present = _check_sources(present_sources, 'present sources')
        used = _ordered(present)
        missing = _ordered(self.required - present)
        quantum_safe = bool(present & QUANTUM_SAFE_SOURCES)
        where = 'link %s: ' % link_id if link_id is not None else ''
        if not present:
            raise PolicyViolation('%sno key source present (policy %s needs %s)'
                                  % (where, self.name, self._needs()), link_id, self.name, missing, used)
        if not missing and quantum_safe:
            return PolicyDecision(used, missing, False, None)
        problems = []
        if missing:
            problems.append('required source(s) missing: %s' % ', '.join(missing))
        if not quantum_safe:
            problems.append('no quantum-safe source (qkd or pqc), so NOT quantum-safe')
        if self.on_missing == 'fail':
            raise PolicyViolation('%spolicy %s (on_missing=fail) refuses the key: %s; present: %s'
                                  % (where, self.name, '; '.join(problems), ', '.join(used)),
                                  link_id, self.name, missing, used)
        alarm = '%sDEGRADED key under policy %s: %s; key made from %s only' % (
            where, self.name, '; '.join(problems), '+'.join(used))
        return PolicyDecision(used, missing, True, alarm)

    def _needs(self):
        required = _ordered(self.required)
        if not self.required & QUANTUM_SAFE_SOURCES:
            required += ('a quantum-safe source (qkd or pqc)',)
        return ' and '.join(required)

    def describe(self):
        """The policy as a plain dict (for module results)."""
        return dict(name=self.name, require=list(_ordered(self.required)), on_missing=self.on_missing)

    def __eq__(self, other):
        return isinstance(other, LinkPolicy) and (self.required, self.on_missing) == (other.required, other.on_missing)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.required, self.on_missing))

    def __repr__(self):
        return 'LinkPolicy(%r, on_missing=%r)' % (self.name, self.on_missing)
