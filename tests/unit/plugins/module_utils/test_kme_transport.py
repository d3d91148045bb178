# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The transport core: capped backoff, the retry table, KME text sanitising, the request deadline.

The deadline against a real TLS peer is tested in tests/integration/test_trickling_kme.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import ssl
import time

import pytest

from ansible_collections.qsafe.keyfabric.plugins.module_utils import _kme_transport as core
from ansible_collections.qsafe.keyfabric.plugins.module_utils._errors import KeyfabricError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError


# -- capped backoff ---------------------------------------------------------------------------

def test_backoff_doubles_then_stays_at_the_cap():
    assert core.backoff_delays(0.5, 4) == [0.5, 1.0, 2.0, 4.0]
    assert core.backoff_delays(0.5, 10)[-4:] == [core.MAX_RETRY_DELAY] * 4
    assert max(core.backoff_delays(1000.0, 3)) == core.MAX_RETRY_DELAY
    assert core.backoff_delays(0.5, 0) == []


def test_twenty_retries_against_a_503_wait_minutes_not_days():
    # uncapped, 0.5 * (2**20 - 1) s is about six days
    total = core.max_total_wait(0.5, 20)
    assert total == 0.5 + 1 + 2 + 4 + 8 + 16 + 14 * core.MAX_RETRY_DELAY  # 451.5 s
    assert total < 20 * core.MAX_RETRY_DELAY


def _unavailable():
    return core.transport_error('KME busy', 'unavailable', core.UNAVAILABLE, consumes_key=True)


def test_call_with_retries_sleeps_the_capped_schedule_and_warns_each_time():
    slept, warnings, calls = [], [], []

    def attempt(final):
        calls.append(final)
        raise _unavailable()
    with pytest.raises(KeyDeliveryError) as err:
        core.call_with_retries(attempt, 1.0, 20, 0.5, warnings.append, sleep=slept.append)
    assert err.value.kind == 'unavailable'
    assert slept == core.backoff_delays(0.5, 20) and sum(slept) == core.max_total_wait(0.5, 20)
    assert len(calls) == 21 and calls[-1] is True and not any(calls[:-1])
    assert len(warnings) == 20 and warnings[0] == 'KME busy; retry 1 of 20 in 0.5 s'
    assert warnings[-1] == 'KME busy; retry 20 of 20 in 30.0 s'


def test_call_with_retries_returns_what_the_attempt_returns():
    answers = iter([_unavailable(), 'ok'])

    def attempt(final):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer
    assert core.call_with_retries(attempt, 1.0, 3, 0.01, lambda message: None, sleep=lambda delay: None) == 'ok'


# -- the retry table --------------------------------------------------------------------------

@pytest.mark.parametrize('failure, consumes_key, retryable, consumed', [
    (core.NOT_SENT, True, True, False),
    (core.NOT_SENT, False, True, False),
    (core.UNAVAILABLE, True, True, False),
    (core.ANSWER_LOST, False, True, False),
    (core.ANSWER_LOST, True, False, True),
    (core.ANSWER_INVALID, False, False, False),
    (core.ANSWER_INVALID, True, False, True),
    (core.REFUSED, True, False, False),
    (core.REFUSED, False, False, False),
])
def test_the_retry_table_never_repeats_a_request_that_may_have_handed_out_a_key(failure, consumes_key, retryable,
                                                                                consumed):
    error = core.transport_error('x', 'timeout', failure, consumes_key, lost_answer='keys are gone')
    assert error.retryable is retryable and error.consumed is consumed
    assert ('keys are gone' in error.message) is consumed


def test_a_consumed_error_is_never_retried():
    calls = []

    def attempt(final):
        calls.append(final)
        raise core.transport_error('lost', 'timeout', core.ANSWER_LOST, consumes_key=True)
    with pytest.raises(KeyDeliveryError):
        core.call_with_retries(attempt, 1.0, 5, 0.01, lambda message: None, sleep=lambda delay: None)
    assert len(calls) == 1


# -- KME text ---------------------------------------------------------------------------------

def test_kme_text_removes_escape_sequences_and_nul():
    text = core.kme_text('not enough key\x1b[2J\x1b]0;pwned\x07 on link\x00 A\u202e--B\r\nnext')
    assert '\x1b' not in text and '\x00' not in text and '\x07' not in text and '\u202e' not in text
    assert text == 'not enough key[2J]0;pwned on link A--B next'


def test_kme_text_is_capped():
    text = core.kme_text('x' * 4000)
    assert len(text) == core.KME_TEXT_LIMIT + 3 and text.endswith('...')
    assert core.kme_text(None) == 'no message in the answer'


def test_details_from_a_kme_are_sanitised_and_capped():
    details = core.sanitised_details([{'reason': '\x1b[31mred\x1b[0m' + 'y' * 4000, 'count': 3}] * 50)
    assert len(details) == core.MAX_DETAILS and details[0]['count'] == 3
    assert '\x1b' not in details[0]['reason'] and len(details[0]['reason']) <= core.KME_TEXT_LIMIT + 3
    assert core.sanitised_details({'a': 1}) == [{'a': 1}] and core.sanitised_details(None) == []


def test_an_error_message_carries_no_control_character_from_the_kme():
    error = core.transport_error('refused: ' + core.kme_text('\x1b[2Jbad\x00'), 'bad_request', core.REFUSED, True,
                                 details=[{'message': '\x1b[2J' * 2000}])
    assert '\x1b' not in error.message and '\x1b' not in str(error.details)
    assert len(str(error.details)) < 300


def test_describe_tls_error_quotes_only_the_ssl_modules_text():
    from http.client import BadStatusLine
    assert 'SECRET' not in core.describe_tls_error(BadStatusLine('SECRET alert'))
    assert 'rejected the client certificate /c.pem' in core.describe_tls_error(
        ssl.SSLError('[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca'), '/c.pem', '/ca.pem')


# -- the request deadline ---------------------------------------------------------------------

def test_no_deadline_outside_a_request_and_nesting_restores_it():
    assert core.deadline_remaining() is None
    with core.request_deadline(5):
        outer = core.deadline_remaining()
        with core.request_deadline(1):
            assert core.deadline_remaining() <= 1
        assert 1 < core.deadline_remaining() <= outer
    assert core.deadline_remaining() is None
    assert core.connect_timeout(7) == 7


def test_a_deadline_bound_context_wraps_sockets_that_give_up_when_it_passed():
    context = core.deadline_context(ssl.create_default_context())
    assert core.deadline_context(context) is context   # idempotent
    assert issubclass(context.sslsocket_class, core._DeadlineSocket)
    assert issubclass(core.DeadlineExceeded, socket.timeout)
    server, client = socket.socketpair()
    try:
        with core.request_deadline(0.2):
            started = time.monotonic()
            with pytest.raises(socket.timeout):
                # the peer never answers the ClientHello: the handshake gives up at the deadline
                context.wrap_socket(client, server_hostname='kme.example')
            assert time.monotonic() - started < 1.0
    finally:
        server.close()
        client.close()


def test_key_delivery_errors_share_the_collections_base_class():
    error = KeyDeliveryError('boom', kind='timeout')
    assert isinstance(error, KeyfabricError) and error.message == 'boom' and str(error) == 'boom'
    assert error.retryable is False
