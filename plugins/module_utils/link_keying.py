# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keying one link from its three sources: the steps shared by the lookup and the node modules.

A link key mixes (hybrid_combiner) up to three contributions, as the link's policy
(link_policy) allows:

* ``classical``: an X25519 secret; the master encapsulates to the slave's X25519 public key;
* ``qkd``: a QKD key; the master gets it new from its KME, the slave by key_ID from its own;
* ``pqc``: an ML-KEM secret; the master encapsulates to the slave's ML-KEM public key.

The controller flow (the ``hybrid_key`` lookup) runs both ends in one process and confirms
that the master's and the slave's derivations agree (same KCV) before it hands a key out. The
node-local flow (the ``hybrid_link_key`` module) runs the master's half on the master node and
the slave's half on the slave node; only public values travel between them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.qsafe.keyfabric.plugins.module_utils._errors import KeyfabricError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError
import hmac
import time

from ansible_collections.qsafe.keyfabric.plugins.module_utils.hybrid_combiner import Contribution, derive_link_key
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_policy import PolicyViolation

# The name the combiner binds for the QKD source. Not the delivery interface: the two ends of a link may
# fetch the same key over different interfaces (ETSI 014 at one, ETSI 004 or SKIP at the other).
QKD_ALGORITHM = 'QKD'
# Failures that mean "the QKD source cannot deliver now" (the policy decides); all others are raised.
QKD_MISSING_KINDS = ('unavailable', 'unreachable', 'timeout')
CLASSICAL_ALGORITHM = 'X25519'
# The phases of keying a link, timed by key_controller_link (milliseconds; public, no key material):
# the master's and the slave's QKD calls, each KEM source (key pair, encapsulation, decapsulation),
# mixing both ends with key confirmation, and the whole.
TIMING_PHASES = ('qkd_master', 'qkd_slave', 'pqc', 'classical', 'mix', 'total')


class LinkKeyingError(KeyfabricError):
    """Keying a link failed; the message names the link and the cause (never key bytes)."""


def qkd_master_contribution(client, slave_sae_id, size):
    """Master half of the QKD source: a new key for the slave. Returns (Contribution, None) or
    (None, alarm) when the KME cannot deliver; configuration errors are raised."""
    try:
        (key,) = client.get_new_keys(slave_sae_id, number=1, size=size)
    except KeyDeliveryError as exc:
        if exc.kind not in QKD_MISSING_KINDS or exc.consumed:
            raise  # a wrong certificate, size or answer is an error to fix, not a missing source
        return None, 'QKD key unavailable: %s' % exc.message
    return Contribution('qkd', QKD_ALGORITHM, key.key, b'', b'', (key.key_id,)), None


def qkd_slave_contribution(client, master_sae_id, key_ids):
    """Slave half of the QKD source: the master's key by its key_ID(s)."""
    keys = client.get_keys_by_id(master_sae_id, list(key_ids))
    return Contribution('qkd', QKD_ALGORITHM, b''.join(key.key for key in keys), b'', b'',
                        tuple(key.key_id for key in keys))


def kem_master_contribution(source, backend, algorithm, slave_public_key):
    """Master half of a KEM source: encapsulate to the slave's public key.

    Returns (Contribution, ciphertext); the ciphertext is public and goes to the slave."""
    ciphertext, secret = backend.encapsulate(algorithm, slave_public_key)
    return Contribution(source, algorithm, secret, ciphertext, slave_public_key, ()), ciphertext


def kem_slave_contribution(source, backend, algorithm, private_key, public_key, ciphertext):
    """Slave half of a KEM source: decapsulate the master's ciphertext."""
    secret = backend.decapsulate(algorithm, private_key, ciphertext)
    return Contribution(source, algorithm, secret, ciphertext, public_key, ())


def derive(link, contributions, policy, hash_algorithm, length, alarms=()):
    """The link key from the contributions present, as the policy allows. A policy violation
    carries the ``alarms`` that explain why a source is missing."""
    try:
        return derive_link_key(link['link_id'], link['master'], link['slave'], contributions, policy,
                               length=length, hash_algorithm=hash_algorithm)
    except PolicyViolation as exc:
        if not alarms:
            raise
        raise PolicyViolation('%s (%s)' % (exc, '; '.join(alarms)), link_id=exc.link_id, policy=exc.policy,
                              missing=exc.missing, present=exc.present)


class _PhaseClock:
    """Milliseconds spent per phase, into ``timings`` (a dict) when one is given."""

    def __init__(self, timings):
        self.timings = timings
        self.started = time.perf_counter()
        if timings is not None:
            timings.update((phase, 0.0) for phase in TIMING_PHASES)

    def lap(self, phase, since):
        """Add the time from ``since`` (a perf_counter value) to now to ``phase``; returns now."""
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[phase] = round(self.timings[phase] + (now - since) * 1000.0, 3)
        return now

    def finish(self):
        self.lap('total', self.started)


def key_controller_link(link, policy, master_client, slave_client, kem_backend, classical_backend,
                        kem_algorithm, qkd_key_size=256, hash_algorithm='sha256', length=32, use_qkd=True,
                        timings=None):
    """Both ends of one link in this process: returns the confirmed LinkKey.

    ``link`` is a dict with link_id, master and slave (SAE IDs). The slave's KEM key pairs are
    ephemeral, made here for this one derivation. A ``timings`` dict receives the milliseconds
    spent per phase (TIMING_PHASES; a phase not run stays 0.0, a QKD call that failed counts).
    """
    clock = _PhaseClock(timings)
    master_side, slave_side, alarms = [], [], []
    try:
        for source, backend, algorithm in (('classical', classical_backend, CLASSICAL_ALGORITHM),
                                           ('pqc', kem_backend, kem_algorithm)):
            if backend is None:
                continue
            started = time.perf_counter()
            public_key, private_key = backend.generate(algorithm)
            contribution, ciphertext = kem_master_contribution(source, backend, algorithm, public_key)
            master_side.append(contribution)
            slave_side.append(kem_slave_contribution(source, backend, algorithm, private_key, public_key, ciphertext))
            clock.lap(source, started)
        if use_qkd:
            started = time.perf_counter()
            try:
                contribution, alarm = qkd_master_contribution(master_client, link['slave'], qkd_key_size)
            finally:
                started = clock.lap('qkd_master', started)
            if contribution is None:
                alarms.append(alarm)
            else:
                master_side.append(contribution)
                try:
                    slave_side.append(qkd_slave_contribution(slave_client, link['master'], contribution.key_ids))
                except KeyDeliveryError as exc:
                    raise LinkKeyingError('link %s: the slave %s could not get QKD key %s: %s' % (
                        link['link_id'], link['slave'], ', '.join(contribution.key_ids), exc.message))
                finally:
                    clock.lap('qkd_slave', started)
        started = time.perf_counter()
        master_key = derive(link, master_side, policy, hash_algorithm, length, alarms)
        slave_key = derive(link, slave_side, policy, hash_algorithm, length, alarms)
        confirmed = hmac.compare_digest(master_key.key, slave_key.key)
        clock.lap('mix', started)
    finally:
        clock.finish()
    if not confirmed:
        raise LinkKeyingError('link %s: key confirmation failed: the master derived KCV %s, the slave %s; '
                              'the key is not used' % (link['link_id'], master_key.kcv, slave_key.kcv))
    return master_key, alarms
