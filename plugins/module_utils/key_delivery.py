# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The contract every key-delivery client (ETSI GS QKD 014, later 004 and SKIP) fulfils.

A client talks to ONE key management entity (KME) on behalf of ONE secure application entity
(SAE, the caller). It offers three operations:

* ``status(peer_sae_id)``                -> LinkStatus
* ``get_new_keys(slave_sae_id, number, size)`` -> list of QKDKey  (caller is the master)
* ``get_keys_by_id(master_sae_id, key_ids)``   -> list of QKDKey  (caller is the slave)

Every failure is a ``KeyDeliveryError`` whose ``kind`` says what went wrong and whose
``consumed`` says whether key material may have been used up on the KME. Nothing here ever
puts key bytes into a message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.qsafe.keyfabric.plugins.module_utils._errors import KeyfabricError


class KeyDeliveryError(KeyfabricError):
    """A key-delivery operation failed.

    kind: one of KINDS below.
    consumed: True when the KME may have handed out or used up keys even though the caller
      did not get them (for example the answer of a new-key request was lost). The message
      then says so, because those keys are gone for good.
    status_code: the HTTP status (or interface status code) when the KME answered.
    retryable: True when the request may be sent again (the transport core's retry table
      decided that nothing can have been handed out).
    """

    KINDS = (
        'bad_request',    # the KME refused the request as malformed or impossible (400)
        'unauthorized',   # the KME refused the caller for this key or SAE (401)
        'unavailable',    # the KME cannot serve now: not enough key, link alarmed (503)
        'tls',            # the TLS handshake failed: certificate or CA problem
        'unreachable',    # no connection could be made to the KME
        'timeout',        # the KME did not answer in time
        'protocol',       # the KME answered something that is not a valid answer
        'config',         # the client is not configured correctly (missing file, option)
        'internal',       # a failure of this client itself
    )

    def __init__(self, message, kind='internal', consumed=False, status_code=None, details=None, retryable=False):
        super(KeyDeliveryError, self).__init__(message)
        if kind not in self.KINDS:
            raise ValueError('unknown KeyDeliveryError kind %r' % (kind,))
        self.kind = kind
        self.retryable = retryable
        self.consumed = consumed
        self.status_code = status_code
        self.details = details or []

    def to_result(self):
        """The error as a dict fit for a module result (no key material is ever in here)."""
        return dict(msg=self.message, error_kind=self.kind, keys_possibly_consumed=self.consumed,
                    kme_status_code=self.status_code, kme_error_details=self.details)


class QKDKey:
    """One key as delivered by a KME: its ID and its bytes.

    ``repr`` and ``str`` never show the key bytes.
    """

    __slots__ = ('key_id', 'key')

    def __init__(self, key_id, key):
        self.key_id = key_id
        self.key = key

    @property
    def size(self):
        """The key length in bits."""
        return len(self.key) * 8

    def __repr__(self):
        return 'QKDKey(key_id=%r, size=%d bits)' % (self.key_id, self.size)

    __str__ = __repr__

    def __eq__(self, other):
        return isinstance(other, QKDKey) and self.key_id == other.key_id and self.key == other.key

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = None


# The fields of a link status as ETSI GS QKD 014 defines them; other interfaces map onto these.
LINK_STATUS_FIELDS = (
    'source_KME_ID', 'target_KME_ID', 'master_SAE_ID', 'slave_SAE_ID', 'key_size',
    'stored_key_count', 'max_key_count', 'max_key_per_request', 'max_key_size', 'min_key_size',
    'max_SAE_ID_count',
)
LINK_STATUS_INT_FIELDS = LINK_STATUS_FIELDS[4:]


# ETSI GS QKD 014 and 004 key_IDs are UUIDs.
KEY_ID_SHAPE = re.compile(r'^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')


def checked_number_and_size(number, size):
    """Check the ``number`` and ``size`` (bits) of a new-key request before any request is sent."""
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise KeyDeliveryError('number must be a whole number of at least 1, got %r' % (number,), kind='bad_request')
    if size is not None and (not isinstance(size, int) or size <= 0 or size % 8):
        raise KeyDeliveryError('size must be a positive multiple of 8 bits, got %r' % (size,), kind='bad_request')


def checked_sae_id(sae_id):
    """``sae_id`` when it can name a peer in a request: a non-empty string without "/"."""
    if not isinstance(sae_id, str) or not sae_id or '/' in sae_id:
        raise KeyDeliveryError('SAE ID must be a non-empty string without "/", got %r' % (sae_id,), kind='bad_request')
    return sae_id


def checked_key_ids(key_ids):
    """``key_ids`` as a list, checked before any request: a non-empty list (not a string) without duplicates."""
    if isinstance(key_ids, str) or not key_ids:
        raise KeyDeliveryError('key_ids must be a non-empty list of key IDs', kind='bad_request')
    key_ids = list(key_ids)
    if len(set(key_ids)) != len(key_ids):
        raise KeyDeliveryError('key_ids contains duplicates', kind='bad_request')
    return key_ids


class KeyDeliveryClient:
    """Base class of the key-delivery clients. Subclasses implement the three operations."""

    interface = None

    def status(self, peer_sae_id):
        raise NotImplementedError

    def get_new_keys(self, slave_sae_id, number=1, size=None):
        raise NotImplementedError

    def get_keys_by_id(self, master_sae_id, key_ids):
        raise NotImplementedError

    def close(self):
        """Release connections; the client must not be used afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
