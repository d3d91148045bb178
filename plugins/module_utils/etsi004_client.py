# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ETSI GS QKD 004 v2.1.1 client: OPEN_CONNECT / GET_KEY / CLOSE behind the key-delivery contract.

ETSI 004 defines calls and status codes, not a wire format; the two wire codecs (the JSON dialect,
``kme_url`` ``tls://host:port``, and the binary framing, ``tls+binary://host:port``) live in
_etsi004_wire. Deadline, retries and the retry table come from the transport core (_kme_transport).

How the contract maps onto 004
------------------------------
* ``get_new_keys(slave, number, size)`` (this SAE is the master): ``OPEN_CONNECT(qkd://<self>,
  qkd://<slave>)`` with ``key_chunk_size = size / 8`` opens a new stream, ``GET_KEY`` reads the
  chunks at index 0 .. number-1, ``CLOSE`` ends it. Each key's ID is the key_ID the KME gives in
  the GET_KEY metadata (a UUID, the same namespace as ETSI 014 key_IDs).
* ``get_keys_by_id(master, key_ids)`` (this SAE is the slave): per key ID, ``OPEN_CONNECT(qkd://
  <master>, qkd://<self>, key_stream_ID = key ID)``, ``GET_KEY`` index 0, ``CLOSE``: a KME that
  serves 004 beside 014 opens the stream of that one key. So a 004 slave takes keys whose master
  used ETSI 014, and an ETSI 014 slave takes keys whose master used 004.
* ``status(peer)``: 004 has no status call; the client opens a stream to the peer and closes it at
  once (no key is taken), and reports what that tells: the link is up and its chunk size and rate.

Keys are never lost silently: a request that may have made the KME hand out a chunk (the answer
of a GET_KEY lost) is not repeated and fails with ``consumed=True``; ``metadata buffer too small``
(status 8; nothing was handed out) is retried once with the size the KME asked for; QoS that the
KME cannot meet (status 7) fails with the KME's counter-proposal in the message and details.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import json
import re

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import (
    KEY_ID_SHAPE, KeyDeliveryClient, KeyDeliveryError, checked_key_ids, checked_number_and_size, checked_sae_id,
    QKDKey)
from ansible_collections.qsafe.keyfabric.plugins.module_utils._etsi004_wire import MAX_LINE_BYTES, WIRES, Lost, Unsent
from ansible_collections.qsafe.keyfabric.plugins.module_utils._kme_transport import (
    ANSWER_INVALID, ANSWER_LOST, NOT_SENT, REFUSED, UNAVAILABLE, call_with_retries, check_files, check_timing,
    kme_text, mtls_context, transport_error)

URI_SCHEME = 'qkd://'
METADATA_SIZE = 1024
STATUS_NAMES = {
    0: 'successful', 1: 'successful, peer not connected', 2: 'insufficient key', 3: 'peer not connected',
    4: 'no QKD connection available', 5: 'key_stream_ID in use', 6: 'timeout', 7: 'QoS not met',
    8: 'metadata buffer too small',
}
_URL = re.compile(r'^(?P<scheme>tls|tls\+binary)://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+):(?P<port>[0-9]{1,5})/?$')
QOS_FIELDS = ('key_chunk_size', 'max_bps', 'min_bps', 'jitter', 'priority', 'timeout', 'TTL', 'metadata_mimetype')
_LOST_ANSWER = ('the KME may have handed out a key in the lost answer; it was not requested again, so no key is '
                'consumed twice. Request new keys.')


class Etsi004Client(KeyDeliveryClient):
    """One SAE talking to one KME over ETSI GS QKD 004, with one kept TLS connection."""

    interface = 'etsi004'

    def __init__(self, kme_url, sae_id, client_cert, client_key, ca_cert, timeout=10.0, retries=3,
                 retry_backoff=0.5, warn=None, wire=None, qos=None):
        match = _URL.match(kme_url or '')
        if not match or not 0 < int(match.group('port')) < 65536:
            raise KeyDeliveryError('kme_url of an ETSI 004 KME must be tls://<host>:<port> (JSON dialect) or '
                                   'tls+binary://<host>:<port> (binary framing), got %r' % (kme_url,), kind='config')
        if not sae_id or not isinstance(sae_id, str) or '/' in sae_id:
            raise KeyDeliveryError('sae_id is required for ETSI GS QKD 004 (it names this SAE in OPEN_CONNECT), '
                                   'got %r' % (sae_id,), kind='config')
        check_files('ETSI GS QKD 004 (mutual TLS)',
                    (('client_cert', client_cert), ('client_key', client_key), ('ca_cert', ca_cert)))
        wire = wire or ('binary' if match.group('scheme') == 'tls+binary' else 'json')
        if wire not in WIRES:
            raise KeyDeliveryError('wire must be one of %s, got %r' % (', '.join(sorted(WIRES)), wire), kind='config')
        check_timing(timeout, retries)
        unknown = sorted(set(qos or {}) - set(QOS_FIELDS))
        if unknown:
            raise KeyDeliveryError('unknown QoS field %s (known: %s)' % (', '.join(unknown), ', '.join(QOS_FIELDS)),
                                   kind='config')
        context = mtls_context(client_cert, client_key, ca_cert)
        self.kme_url = kme_url.rstrip('/')
        self.sae_id = sae_id
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.qos = dict(qos or {})
        self._warn = warn or (lambda message: None)
        self._sleep = None   # time.sleep; tests put a recorder here
        self._answer_lost = False   # the last exchange lost its answer (deadline passed, connection broke)
        self._wire = WIRES[wire](match.group('host').strip('[]'), int(match.group('port')), context, timeout)

    # -- the contract -------------------------------------------------------------------

    def status(self, peer_sae_id):
        """What 004 can tell about the link to ``peer_sae_id``: a stream opens (and is closed at once)."""
        ksid, qos = self._open(self.sae_id, _sae(peer_sae_id), None, dict(self.qos))
        self._close(ksid)
        chunk = qos.get('key_chunk_size')
        chunk_bits = chunk * 8 if isinstance(chunk, int) and not isinstance(chunk, bool) else -1
        # 004 reports no counts and no KME IDs: -1 and '' (the convention of the SKIP client), the QoS granted aside.
        status = dict(source_KME_ID='', target_KME_ID='', master_SAE_ID=self.sae_id, slave_SAE_ID=peer_sae_id,
                      key_size=chunk_bits, stored_key_count=-1, max_key_count=-1, max_key_per_request=-1,
                      max_key_size=-1, min_key_size=-1, max_SAE_ID_count=0,
                      status_extension=dict(interface='etsi004', key_counts_reported=False, qos=qos))
        return status

    def get_new_keys(self, slave_sae_id, number=1, size=None):
        """New keys for ``slave_sae_id``: one stream, the chunks at index 0..number-1. The caller is the master."""
        checked_number_and_size(number, size)
        qos = dict(self.qos)
        if size is not None:
            qos['key_chunk_size'] = size // 8
        ksid, granted = self._open(self.sae_id, _sae(slave_sae_id), None, qos)
        keys = []
        try:
            for index in range(number):
                keys.append(self._get_key(ksid, index, granted, 'master', issued=len(keys)))
        finally:
            self._close(ksid)
        if size is not None:
            wrong = [key.key_id for key in keys if key.size != size]
            if wrong:
                raise self._invalid('GET_KEY', 'keys %s are not %d bits long' % (', '.join(wrong), size))
        return keys

    def get_keys_by_id(self, master_sae_id, key_ids):
        """The keys ``key_ids`` that ``master_sae_id`` obtained for this (slave) SAE, over any interface."""
        key_ids = checked_key_ids(key_ids)
        for key_id in key_ids:
            if not isinstance(key_id, str) or not KEY_ID_SHAPE.match(key_id):
                raise KeyDeliveryError('key ID %r is not a UUID (an ETSI 004 key ID is the key_ID the KMEs gave the '
                                       'key, which a slave opens as a key_stream_ID)' % (key_id,), kind='bad_request')
        master = _sae(master_sae_id)
        keys = []
        for key_id in key_ids:
            try:
                ksid, granted = self._open(master, self.sae_id, key_id, dict(self.qos))
            except KeyDeliveryError as exc:
                raise self._partial(exc, keys)
            try:
                key = self._get_key(ksid, 0, granted, 'slave', issued=len(keys))
            finally:
                self._close(ksid)
            if key.key_id != key_id:
                raise self._invalid('GET_KEY', 'asked for key_ID %s, got %s' % (key_id, key.key_id))
            keys.append(key)
        return keys

    def close(self):
        self._wire.close()

    # -- the three calls ----------------------------------------------------------------

    def _open(self, source, destination, ksid, qos):
        data = dict(source=URI_SCHEME + source, destination=URI_SCHEME + destination, qos=qos)
        if ksid is not None:
            data['key_stream_ID'] = ksid
        answer = self._call('OPEN_CONNECT', data, consumes_key=False, retry_statuses=(4,))
        status = answer['status']
        if status in (0, 1):
            got = answer['data'].get('key_stream_ID') if isinstance(answer.get('data'), dict) else None
            if not isinstance(got, str) or not KEY_ID_SHAPE.match(got) or (ksid is not None and got != ksid):
                raise self._error('OPEN_CONNECT', 'protocol', 'the answer carries no valid key_stream_ID')
            granted = answer['data'].get('qos')
            return got, granted if isinstance(granted, dict) else {}
        if status == 7:
            counter = answer['data'].get('qos') if isinstance(answer.get('data'), dict) else None
            raise self._status_error('OPEN_CONNECT', answer, 'bad_request',
                                     'the KME proposes %s' % kme_text(json.dumps(counter, sort_keys=True)),
                                     details=[counter])
        kind = {4: 'unavailable', 5: 'bad_request', 6: 'timeout'}.get(status, 'protocol')
        raise self._status_error('OPEN_CONNECT', answer, kind)

    def _get_key(self, ksid, index, qos, role, issued):
        """One chunk; ``issued`` keys were already handed out before it (they are lost if this fails)."""
        metadata_size = METADATA_SIZE
        wait = (qos.get('timeout') or 0) / 1000.0 if isinstance(qos.get('timeout'), int) else 0.0
        for attempt in range(2):
            try:
                # master: 2 and 4 mean nothing was taken from the pool; slave: 6 means the master has not fetched yet
                answer = self._call('GET_KEY', dict(key_stream_ID=ksid, index=index, metadata_size=metadata_size),
                                    consumes_key=True, wait=wait, retry_statuses=(2, 4) if role == 'master' else (6,))
            except KeyDeliveryError as exc:
                raise self._partial(exc, issued)
            status = answer['status']
            if status == 0:
                return self._parse_key(answer, ksid, index)
            needed = answer['data'].get('metadata_size') if isinstance(answer.get('data'), dict) else None
            if status == 8 and attempt == 0 and isinstance(needed, int) and metadata_size < needed <= MAX_LINE_BYTES:
                metadata_size = needed   # nothing was handed out: ask again with the buffer the KME needs
                continue
            if status == 2 and role == 'master':
                kind = 'unavailable'
            elif status == 4:
                kind = 'unavailable'
            elif status == 6:
                kind = 'timeout'
            elif status == 3 and role == 'master':
                kind = 'unavailable'
            else:
                kind = 'bad_request'   # slave: the key at this index is gone or never came; 8 twice; 5
            raise self._partial(self._status_error('GET_KEY', answer, kind), issued)
        raise self._error('GET_KEY', 'internal', 'metadata retry loop ended')  # pragma: no cover

    def _close(self, ksid):
        """CLOSE, best effort: a stream that cannot be closed expires on its TTL and holds no key of ours.

        Not sent when the last answer was lost: a KME that did not answer in time would hold the task for
        another ``timeout``."""
        if self._answer_lost:
            self._warn('ETSI 004 stream %s at %s is not closed: the KME\'s last answer was lost (the stream expires '
                       'on its TTL)' % (ksid, self.kme_url))
            return
        try:
            self._call('CLOSE', dict(key_stream_ID=ksid), consumes_key=False, retries=0)
        except KeyDeliveryError as exc:
            self._warn('ETSI 004 CLOSE of stream %s at %s failed (it expires on its TTL): %s'
                       % (ksid, self.kme_url, exc.message))

    # -- transport and errors -----------------------------------------------------------

    def _call(self, command, data, consumes_key, wait=0.0, retries=None, retry_statuses=()):
        """One call under a deadline of ``timeout`` (+ ``wait``, the QoS timeout of a GET_KEY), retried (capped
        backoff, a warning each) as the retry table allows, and on a status in ``retry_statuses`` (nothing was
        handed out) but the last time."""
        def attempt(final):
            try:
                answer = self._wire.call(command, data, wait)
            except Unsent as exc:
                raise self._error(command, exc.kind, exc.message, REFUSED if exc.kind == 'tls' else NOT_SENT,
                                  consumes_key)
            except Lost as exc:
                self._answer_lost = exc.kind == 'timeout'
                raise self._error(command, exc.kind, exc.message,
                                  ANSWER_LOST if exc.kind == 'timeout' else ANSWER_INVALID, consumes_key)
            self._answer_lost = False
            if 'error' in answer:
                kind = answer.get('error') if answer.get('error') in ('bad_request', 'unauthorized') else 'protocol'
                raise self._error(command, kind, 'refused: %s' % kme_text(answer.get('message')))
            if not isinstance(answer.get('status'), int) or isinstance(answer.get('status'), bool):
                raise self._error(command, 'protocol', 'the answer has no status', ANSWER_INVALID, consumes_key)
            if answer['status'] in retry_statuses and not final:
                raise self._status_error(command, answer, 'unavailable', failure=UNAVAILABLE)
            return answer
        return call_with_retries(attempt, self.timeout + wait, self.retries if retries is None else retries,
                                 self.retry_backoff, self._warn, self._sleep)

    def _parse_key(self, answer, ksid, index):
        data = answer.get('data')
        if not isinstance(data, dict) or not isinstance(data.get('key_buffer'), str):
            raise self._invalid('GET_KEY', 'the answer carries no key_buffer')
        try:
            material = base64.b64decode(data['key_buffer'], validate=True)
        except (binascii.Error, ValueError):
            raise self._invalid('GET_KEY', 'key_buffer is not valid base64')
        try:
            metadata = json.loads(data.get('metadata') or 'null')
        except (TypeError, ValueError):
            metadata = None
        key_id = metadata.get('key_ID') if isinstance(metadata, dict) else None
        if not material or not isinstance(key_id, str) or not KEY_ID_SHAPE.match(key_id) \
                or data.get('index') != index or data.get('key_stream_ID') != ksid:
            raise self._invalid('GET_KEY', 'the answer for index %d of stream %s lacks a key, its key_ID '
                                '(metadata) or the right index' % (index, ksid))
        return QKDKey(key_id, material)

    def _status_error(self, command, answer, kind, extra=None, details=None, failure=REFUSED):
        status = answer['status']
        message = 'status %d (%s)' % (status, STATUS_NAMES.get(status, 'not an ETSI 004 status'))
        if isinstance(answer.get('message'), str):
            message += ': ' + kme_text(answer['message'])
        if extra:
            message += '; ' + extra
        return self._error(command, kind, message, failure, status_code=status, details=details)

    def _partial(self, error, issued):
        """``error`` after ``issued`` keys of this call were handed out: they are lost, say so."""
        if not issued:
            return error
        return KeyDeliveryError('%s; %d key(s) of this request had been handed out before and are not returned, so '
                                'they are lost. Request new keys.' % (error.message, issued), kind=error.kind,
                                consumed=True, status_code=error.status_code, details=error.details)

    def _invalid(self, command, problem):
        """A key-consuming call's answer that is not a valid one: the key it carried is gone."""
        return self._error(command, 'protocol', problem, ANSWER_INVALID, consumes_key=True)

    def _error(self, command, kind, problem, failure=REFUSED, consumes_key=False, status_code=None, details=None):
        return transport_error('ETSI 004 %s at %s: %s' % (command, self.kme_url, problem), kind, failure, consumes_key,
                               _LOST_ANSWER, status_code=status_code, details=details)


def _sae(sae_id):
    return checked_sae_id(sae_id)
