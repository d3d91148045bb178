# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mixing a link's key sources into one key: ETSI TS 103 744 CatKDF.

``catkdf`` is the concatenate hybrid KDF of ETSI TS 103 744 clause 8.2::

    secret    = psk || k1 || ... || kn
    f_context = H(len(context) || context || len(MA) || MA || len(MB) || MB)
    key       = HKDF-H(IKM=secret, salt=label, info=f_context, L)

with 32-bit big-endian byte lengths and HKDF as in RFC 5869. It reproduces the standard's test
vector (Annex C.2.1). HKDF is built on the standard library's ``hmac``, so nothing here needs
``cryptography``.

``derive_link_key`` makes the key of one link (IPsec PPK, MACsec CAK) from the Contributions
present - ``classical`` (X25519), ``qkd`` (ETSI GS QKD 014 key), ``pqc`` (ML-KEM) - after asking
the link's LinkPolicy (see link_policy) whether they are enough:

* secrets k1..kn: the contributions' secrets in the fixed order classical, qkd, pqc;
* context: ``link_context`` - the domain label, link ID, master and slave IDs, policy, hash,
  key length and, per contribution, source, algorithm and QKD key_IDs, all length-prefixed;
* MA / MB: the master's / slave's public values (X25519 publics, ML-KEM ciphertext / public key),
  each length-prefixed, in the same order;
* label = LA || LB: the length-prefixed master ID and slave ID.

Both ends call it with the same arguments (the same master and slave, whichever end they are)
and get the same key; any difference in any input gives an unrelated key and another KCV. The
key length and hash are in the context because HKDF outputs of different lengths are prefixes
of one another. ``ppk_id`` names the key from public data only. No message, repr or public fact
ever holds secret bytes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import hmac
import struct

from ansible_collections.qsafe.keyfabric.plugins.module_utils._errors import KeyfabricError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_policy import SOURCES, LinkPolicy

HASH_ALGORITHMS = ('sha256', 'sha384', 'sha512', 'sha3-256', 'sha3-384', 'sha3-512')
_HASHLIB_NAMES = dict((name, name.replace('-', '_')) for name in HASH_ALGORITHMS)

CONTEXT_LABEL = b'qsafe.keyfabric link key v1'
PPK_ID_PREFIX = 'qkf-'
MIN_LINK_KEY_BYTES = 32     # RFC 8784 PPKs (and strongSwan's) need at least 256 bits
MIN_SECRET_BYTES = 16       # a contribution below 128 bits adds no real strength


class CombinerError(KeyfabricError, ValueError):
    """The inputs of a key derivation are not valid. The message never holds key bytes."""


def _length_prefixed(*fields):
    """Each field (bytes) preceded by its length as a 32-bit big-endian integer."""
    return b''.join(struct.pack('>I', len(field)) + field for field in fields)


def _text(value, what):
    if not isinstance(value, str) or not value:
        raise CombinerError('%s must be a non-empty string, got %r' % (what, value))
    return value.encode('utf-8')


def _as_bytes(value, what):
    if not isinstance(value, (bytes, bytearray)):
        raise CombinerError('%s must be bytes, got %s' % (what, type(value).__name__))
    return bytes(value)


def _hash_name(hash_algorithm):
    if hash_algorithm not in _HASHLIB_NAMES:
        raise CombinerError('unknown hash algorithm %r; known: %s' % (hash_algorithm, ', '.join(HASH_ALGORITHMS)))
    return _HASHLIB_NAMES[hash_algorithm]


def _hkdf(hash_name, ikm, salt, info, length):
    """HKDF (RFC 5869) extract-then-expand with the hashlib hash ``hash_name``."""
    prk = hmac.new(salt, ikm, hash_name).digest()
    block = b''
    output = b''
    counter = 1
    while len(output) < length:
        block = hmac.new(prk, block + info + struct.pack('B', counter), hash_name).digest()
        output += block
        counter += 1
    return output[:length]


def catkdf(secrets, context, ma, mb, label, length, hash_algorithm='sha256', psk=b''):
    """ETSI TS 103 744 clause 8.2 CatKDF: ``length`` bytes from ``secrets`` (k1..kn, in order).

    context, ma, mb, label and psk are bytes; psk (optional) is put before k1.
    """
    hash_name = _hash_name(hash_algorithm)
    digest_size = hashlib.new(hash_name).digest_size
    if isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= 255 * digest_size:
        raise CombinerError('length must be 1..%d bytes for %s, got %r' % (255 * digest_size, hash_algorithm, length))
    if not isinstance(secrets, (list, tuple)) or not secrets:
        raise CombinerError('secrets must be a non-empty list of bytes (k1..kn)')
    parts = [_as_bytes(psk, 'psk')]
    for index, secret in enumerate(secrets, 1):
        secret = _as_bytes(secret, 'secret k%d' % index)
        if not secret:
            raise CombinerError('secret k%d is empty' % index)
        parts.append(secret)
    f_context = hashlib.new(hash_name, _length_prefixed(_as_bytes(context, 'context'), _as_bytes(ma, 'MA'),
                                                        _as_bytes(mb, 'MB'))).digest()
    return _hkdf(hash_name, b''.join(parts), _as_bytes(label, 'label'), f_context, length)


class _Frozen:
    """Base of the immutable value classes below (attributes set once, in __init__)."""

    __slots__ = ()

    def _set(self, **values):
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError('%s is immutable' % type(self).__name__)

    def __delattr__(self, name):
        raise AttributeError('%s is immutable' % type(self).__name__)


class Contribution(_Frozen):
    """One source's part of a link key: its shared secret and the public values that made it.

    source: 'classical' | 'qkd' | 'pqc'.
    algorithm: e.g. 'X25519', 'QKD-ETSI014', 'ML-KEM-768'.
    secret: the shared secret (at least 16 bytes, not all zero).
    master_public: what the master sent (X25519 ephemeral public key; ML-KEM ciphertext).
    slave_public: the slave's public value (X25519 public key; ML-KEM encapsulation key).
    key_ids: the QKD key_IDs (qkd only, at least one).

    classical and pqc need both public values; QKD has none (b'' by default).
    ``repr`` shows sizes, never the secret.
    """

    __slots__ = ('source', 'algorithm', 'secret', 'master_public', 'slave_public', 'key_ids')

    def __init__(self, source, algorithm, secret, master_public=b'', slave_public=b'', key_ids=()):
        if source not in SOURCES:
            raise CombinerError('unknown contribution source %r; known: %s' % (source, ', '.join(SOURCES)))
        what = '%s contribution' % source
        _text(algorithm, '%s: algorithm' % what)
        secret = _as_bytes(secret, '%s: secret' % what)
        if len(secret) < MIN_SECRET_BYTES:
            raise CombinerError('%s: secret is %d bytes; at least %d are needed' % (what, len(secret), MIN_SECRET_BYTES))
        if not any(bytearray(secret)):
            raise CombinerError('%s: secret is all zero bytes (for X25519: a low-order peer public key)' % what)
        master_public = _as_bytes(master_public, '%s: master_public' % what)
        slave_public = _as_bytes(slave_public, '%s: slave_public' % what)
        if isinstance(key_ids, str) or not isinstance(key_ids, (list, tuple)):
            raise CombinerError('%s: key_ids must be a list of key_ID strings' % what)
        key_ids = tuple(key_ids)
        for key_id in key_ids:
            _text(key_id, '%s: each key_ID' % what)
        if len(set(key_ids)) != len(key_ids):
            raise CombinerError('%s: duplicate key_ID in %r' % (what, key_ids))
        if source == 'qkd' and not key_ids:
            raise CombinerError('%s: key_ids is empty; the QKD key_IDs are bound into the link key' % what)
        if source != 'qkd':
            if key_ids:
                raise CombinerError('%s: key_ids are for qkd contributions only' % what)
            if not master_public or not slave_public:
                raise CombinerError('%s: master_public and slave_public are both needed' % what)
        self._set(source=source, algorithm=algorithm, secret=secret, master_public=master_public,
                  slave_public=slave_public, key_ids=key_ids)

    def __repr__(self):
        return 'Contribution(source=%r, algorithm=%r, secret=<%d bytes>, master_public=<%d bytes>, slave_public=<%d bytes>, key_ids=%r)' % (
            self.source, self.algorithm, len(self.secret), len(self.master_public), len(self.slave_public), self.key_ids)


class LinkKey(_Frozen):
    """A derived link key and the public facts about it. ``repr`` never shows the key."""

    __slots__ = ('key', 'kcv', 'ppk_id', 'link_id', 'master_id', 'slave_id', 'policy', 'sources', 'algorithms',
                 'qkd_key_ids', 'hash_algorithm', 'degraded', 'alarms')

    def __init__(self, key, ppk_id, link_id, master_id, slave_id, policy, contributions, hash_algorithm, decision):
        self._set(key=key, kcv=key_check_value(key), ppk_id=ppk_id, link_id=link_id, master_id=master_id,
                  slave_id=slave_id, policy=policy, hash_algorithm=hash_algorithm,
                  sources=tuple(item.source for item in contributions),
                  algorithms=dict((item.source, item.algorithm) for item in contributions),
                  qkd_key_ids=tuple(key_id for item in contributions for key_id in item.key_ids),
                  degraded=decision.degraded, alarms=(decision.alarm,) if decision.alarm else ())

    def public_facts(self):
        """Everything but the key, as plain JSON-able values (for module results and logs)."""
        return dict(link_id=self.link_id, master_id=self.master_id, slave_id=self.slave_id, ppk_id=self.ppk_id,
                    kcv=self.kcv, size=len(self.key) * 8, hash_algorithm=self.hash_algorithm, policy=self.policy,
                    sources=list(self.sources), algorithms=dict(self.algorithms), qkd_key_ids=list(self.qkd_key_ids),
                    degraded=self.degraded, alarms=list(self.alarms))

    def __repr__(self):
        return 'LinkKey(link_id=%r, ppk_id=%r, kcv=%r, size=%d bits, sources=%r, degraded=%r)' % (
            self.link_id, self.ppk_id, self.kcv, len(self.key) * 8, self.sources, self.degraded)


def _ordered_contributions(contributions):
    """The contributions sorted classical, qkd, pqc; CombinerError if not a list or a source repeats."""
    if not isinstance(contributions, (list, tuple)) or not contributions:
        raise CombinerError('contributions must be a non-empty list of Contribution')
    seen = set()
    for item in contributions:
        if not isinstance(item, Contribution):
            raise CombinerError('contributions must be Contribution objects, got %s' % type(item).__name__)
        if item.source in seen:
            raise CombinerError('duplicate %s contribution: each source contributes once per link key' % item.source)
        seen.add(item.source)
    return tuple(sorted(contributions, key=lambda item: SOURCES.index(item.source)))


def _link_ends(link_id, master_id, slave_id):
    """(link_id, master_id, slave_id) as UTF-8 bytes; CombinerError if one is empty or both ends are the same."""
    ends = (_text(link_id, 'link_id'), _text(master_id, 'master_id'), _text(slave_id, 'slave_id'))
    if master_id == slave_id:
        raise CombinerError('link %s: master_id and slave_id are both %r; a link has two different ends' % (link_id, master_id))
    return ends


def link_context(link_id, master_id, slave_id, contributions, policy_name, length=MIN_LINK_KEY_BYTES, hash_algorithm='sha256'):
    """The CatKDF context of a link key: a length-prefixed, unambiguous encoding of public facts.

    Fields: CONTEXT_LABEL, link_id, master_id, slave_id, policy_name, hash_algorithm, length, and
    one nested field per contribution (order classical, qkd, pqc) of source, algorithm, key_IDs.
    """
    ends = _link_ends(link_id, master_id, slave_id)
    ordered = _ordered_contributions(contributions)
    _hash_name(hash_algorithm)
    if isinstance(length, bool) or not isinstance(length, int) or not 0 < length < 2 ** 32:
        raise CombinerError('length must be a positive integer number of bytes, got %r' % (length,))
    blocks = [_length_prefixed(item.source.encode('ascii'), item.algorithm.encode('utf-8'),
                               _length_prefixed(*[key_id.encode('utf-8') for key_id in item.key_ids]))
              for item in ordered]
    return _length_prefixed(CONTEXT_LABEL, *(ends + (_text(policy_name, 'policy_name'), hash_algorithm.encode('ascii'),
                                                     struct.pack('>I', length), _length_prefixed(*blocks))))


def derive_link_key(link_id, master_id, slave_id, contributions, policy, length=MIN_LINK_KEY_BYTES, hash_algorithm='sha256'):
    """The LinkKey of ``link_id`` from ``contributions`` (list of Contribution) under ``policy``.

    policy: a LinkPolicy or a spec for LinkPolicy.from_spec. Raises PolicyViolation when the
    policy refuses the sources present, LinkPolicyError for a bad policy spec and CombinerError
    for any other bad input (unknown hash, length below 32 bytes, duplicate source, ...).
    """
    _hash_name(hash_algorithm)
    if isinstance(length, bool) or not isinstance(length, int) or length < MIN_LINK_KEY_BYTES:
        raise CombinerError('link key length must be an integer of at least %d bytes (256 bits), got %r'
                            % (MIN_LINK_KEY_BYTES, length))
    ends = _link_ends(link_id, master_id, slave_id)
    ordered = _ordered_contributions(contributions)
    policy = LinkPolicy.from_spec(policy)
    decision = policy.decide([item.source for item in ordered], link_id=link_id)
    context = link_context(link_id, master_id, slave_id, ordered, policy.name, length, hash_algorithm)
    ma = _length_prefixed(*[item.master_public for item in ordered])
    mb = _length_prefixed(*[item.slave_public for item in ordered])
    label = _length_prefixed(ends[1], ends[2])
    key = catkdf([item.secret for item in ordered], context, ma, mb, label, length, hash_algorithm)
    ppk_id = PPK_ID_PREFIX + hashlib.sha256(_length_prefixed(context, ma, mb)).hexdigest()[:16]
    return LinkKey(key, ppk_id, link_id, master_id, slave_id, policy.name, ordered, hash_algorithm, decision)


# What one link key is used for, with the length of each derived secret in bytes (None: the caller says).
SUBKEY_PURPOSES = {'ikev2-ppk': 32, 'ikev2-psk': 32, 'macsec-cak': None}


def derive_subkey(link_key, purpose, ppk_id, length=None):
    """A secret for one purpose, derived from a link key (HKDF-SHA256, info = purpose || PPK ID).

    One link key feeds several uses (the IKEv2 PPK, the IKEv2 authentication PSK, the MACsec
    CAK); each gets its own derived secret so that none of them is another's key.
    """
    if purpose not in SUBKEY_PURPOSES:
        raise CombinerError('unknown key purpose %r; known: %s' % (purpose, ', '.join(sorted(SUBKEY_PURPOSES))))
    length = length or SUBKEY_PURPOSES[purpose]
    if not length or length < 16:
        raise CombinerError('a %s must be at least 16 bytes, got %r' % (purpose, length))
    if len(link_key) < MIN_LINK_KEY_BYTES:
        raise CombinerError('a link key has at least %d bytes, got %d' % (MIN_LINK_KEY_BYTES, len(link_key)))
    info = _length_prefixed(CONTEXT_LABEL, purpose.encode('ascii'), _text(ppk_id, 'ppk_id'))
    return _hkdf('sha256', link_key, b'', info, length)


def macsec_ckn(ppk_id):
    """The public MACsec connectivity association key name of a link key: 32 bytes from its PPK ID."""
    return hashlib.sha256(_length_prefixed(CONTEXT_LABEL, b'macsec-ckn', _text(ppk_id, 'ppk_id'))).digest()
