# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the transport core of the three key-delivery clients (ETSI 014, ETSI 004, SKIP). Not a public API.

What every client shares, written once:

* **The request deadline.** ``timeout`` bounds a whole request: connecting, the TLS handshake,
  sending, and receiving the whole answer. A per-socket timeout alone bounds each read, so a KME
  that trickles a valid answer one byte at a time would hold a task for ever. ``deadline_context``
  makes an ``ssl.SSLContext`` wrap sockets whose handshake, reads and writes give up when the
  deadline of the request running in this thread (``request_deadline``) has passed.
  requests/urllib3 and http.client offer no such bound (urllib3's ``Timeout(total=)`` still
  bounds each read), hence this small hook on the one object all three clients share: the TLS
  socket.
* **The retry table** (``RETRY_TABLE``): what a failed request may be followed by, so that no key
  is ever consumed twice; docs/design.md shows the same table.
* **Capped exponential backoff** (``backoff_delays``): each sleep at most ``MAX_RETRY_DELAY``.
* **KME text** (``kme_text``): anything a KME sent is stripped of control characters and capped
  before it reaches a message.
* The checks and TLS set-up every client does (``check_timing``, ``check_files``, ``mtls_context``,
  ``describe_tls_error``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os
import socket
import ssl
import threading
import time
import unicodedata

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError

MAX_RETRY_DELAY = 30.0     # seconds: the longest single sleep between two attempts
KME_TEXT_LIMIT = 200       # characters of KME text quoted in a message
MAX_DETAILS = 10           # entries of a KME's error details kept

# -- the retry table ----------------------------------------------------------------------

# How a request failed ...
NOT_SENT = 'not sent'              # no connection could be made: refused, connect timeout, unreachable
UNAVAILABLE = 'unavailable'        # the KME answered that it hands out nothing now (503, 004 statuses 2/4/6)
ANSWER_LOST = 'answer lost'        # the request was sent; its answer did not arrive (deadline, connection broke)
ANSWER_INVALID = 'answer invalid'  # an answer arrived but is not a valid one (or the peer hung up before its first)
REFUSED = 'refused'                # TLS handshake failed, or the KME refused the request (400, 401, 404 ...)
# ... and what follows it.
RETRY, FAIL, FAIL_CONSUMED = 'retry', 'fail', 'fail, consumed'

# failure -> (after a read-only request, after a key-consuming request). "fail, consumed": the KME
# may have handed out keys that the caller never got; the error says so (``consumed=True``) and the
# request is not repeated, so no key is ever consumed twice.
RETRY_TABLE = {
    NOT_SENT: (RETRY, RETRY),
    UNAVAILABLE: (RETRY, RETRY),
    ANSWER_LOST: (RETRY, FAIL_CONSUMED),
    ANSWER_INVALID: (FAIL, FAIL_CONSUMED),
    REFUSED: (FAIL, FAIL),
}


def transport_error(message, kind, failure, consumes_key, lost_answer=None, status_code=None, details=None):
    """The KeyDeliveryError for a request that failed as ``failure`` (a RETRY_TABLE row).

    ``consumes_key``: the request hands out key material (014 enc_keys/dec_keys, 004 GET_KEY, SKIP
    key). ``lost_answer``: the sentence added when keys may be gone for good."""
    outcome = RETRY_TABLE[failure][1 if consumes_key else 0]
    consumed = outcome == FAIL_CONSUMED
    if consumed and lost_answer:
        message += '; ' + lost_answer
    return KeyDeliveryError(message, kind=kind, consumed=consumed, status_code=status_code,
                            details=sanitised_details(details), retryable=outcome == RETRY)


def backoff_delays(retry_backoff, retries, max_delay=MAX_RETRY_DELAY):
    """The sleeps before retry 1..retries: ``retry_backoff`` doubling, each at most ``max_delay``."""
    delays, delay = [], float(retry_backoff)
    for _ignored in range(max(0, retries)):
        delays.append(min(delay, max_delay))
        delay = min(delay * 2, max_delay)
    return delays


def max_total_wait(retry_backoff, retries, max_delay=MAX_RETRY_DELAY):
    """The most a request can sleep between its attempts in all (what the doc fragment promises)."""
    return sum(backoff_delays(retry_backoff, retries, max_delay))


def call_with_retries(attempt, timeout, retries, retry_backoff, warn, sleep=None):
    """``attempt(final)`` under a deadline of ``timeout`` seconds, again while its KeyDeliveryError is
    ``retryable`` and retries are left (a warning and a capped backoff sleep before each retry).

    ``final`` is True on the last attempt (a caller that retries on a status returns it then)."""
    delays = backoff_delays(retry_backoff, retries)
    number = 0
    while True:
        try:
            with request_deadline(timeout):
                return attempt(number >= retries)
        except KeyDeliveryError as error:
            if not error.retryable or number >= retries:
                raise
            delay = delays[number]
            number += 1
            warn('%s; retry %d of %d in %.1f s' % (error.message, number, retries, delay))
            (sleep or time.sleep)(delay)


# -- the request deadline -------------------------------------------------------------------

_DEADLINE = threading.local()


class DeadlineExceeded(socket.timeout):
    """The request's deadline passed (a socket.timeout, so callers treat it as one)."""


@contextlib.contextmanager
def request_deadline(seconds):
    """Bound every TLS socket operation of this thread (see deadline_context) to ``seconds`` from now."""
    previous = getattr(_DEADLINE, 'at', None)
    _DEADLINE.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _DEADLINE.at = previous


def deadline_remaining():
    """Seconds left of this thread's request deadline, or None when no request runs."""
    at = getattr(_DEADLINE, 'at', None)
    return None if at is None else at - time.monotonic()


class _DeadlineSocket:
    """Mixed into an SSLSocket class: the handshake, each read and each write get at most what is left."""

    def _bound(self):
        remaining = deadline_remaining()
        if remaining is not None:
            if remaining <= 0:
                raise DeadlineExceeded('the request deadline passed')
            self.settimeout(remaining)

    def do_handshake(self, *args, **kwargs):
        self._bound()
        return super(_DeadlineSocket, self).do_handshake(*args, **kwargs)

    def read(self, *args, **kwargs):
        self._bound()
        return super(_DeadlineSocket, self).read(*args, **kwargs)

    def send(self, *args, **kwargs):
        self._bound()
        return super(_DeadlineSocket, self).send(*args, **kwargs)


_DEADLINE_CLASSES = {}


def deadline_context(context):
    """``context`` (an ssl.SSLContext, also sslpsk3's), made to wrap deadline-bound sockets."""
    base = context.sslsocket_class
    if not issubclass(base, _DeadlineSocket):
        if base not in _DEADLINE_CLASSES:
            _DEADLINE_CLASSES[base] = type('Deadline' + base.__name__, (_DeadlineSocket, base), {})
        context.sslsocket_class = _DEADLINE_CLASSES[base]
    return context


def connect_timeout(timeout):
    """The TCP connect timeout: what is left of the request's deadline, at most ``timeout``."""
    remaining = deadline_remaining()
    return timeout if remaining is None else max(0.001, min(timeout, remaining))


# -- checks and TLS set-up ------------------------------------------------------------------

def check_timing(timeout, retries):
    """Reject a timeout or retry count no request could work with."""
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise KeyDeliveryError('timeout must be positive, got %r' % (timeout,), kind='config')
    if not isinstance(retries, int) or retries < 0:
        raise KeyDeliveryError('retries must be 0 or more, got %r' % (retries,), kind='config')


def check_files(what, files):
    """Each (option, path) of ``files`` must name a file; ``what`` says who needs them (in the message)."""
    for option, path in files:
        if not path:
            raise KeyDeliveryError('%s is required for %s' % (option, what), kind='config')
        if not os.path.isfile(path):
            raise KeyDeliveryError('%s %s does not exist or is not a file' % (option, path), kind='config')


def mtls_context(client_cert, client_key, ca_cert):
    """A deadline-bound TLS 1.2+ client context that verifies the KME against ``ca_cert`` and shows the client
    certificate."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_cert)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(client_cert, client_key)
    except (ssl.SSLError, OSError) as exc:
        raise KeyDeliveryError('cannot load the client certificate %s and its key, or ca_cert %s: %s'
                               % (client_cert, ca_cert, describe_tls_error(exc, client_cert, ca_cert)), kind='config')
    return deadline_context(context)


def describe_tls_error(exc, client_cert=None, ca_cert=None):
    """A TLS failure as a sentence that names the certificate at fault.

    Only the ssl module's own text is quoted (OpenSSL reason strings); any other exception is named
    by its class, as its text could come from the peer."""
    text = kme_text(str(exc) if isinstance(exc, ssl.SSLError) else exception_name(exc), 300)
    upper = text.upper()
    client = ' %s' % client_cert if client_cert else ''
    if 'CERTIFICATE_VERIFY_FAILED' in upper:
        return ("TLS handshake failed: the KME's server certificate does not verify against ca_cert%s (CA mismatch, "
                "wrong host name, or expired server certificate): %s" % (' %s' % ca_cert if ca_cert else '', text))
    if 'ALERT' in upper or 'CERTIFICATE REQUIRED' in upper:
        return ('TLS handshake failed: the KME rejected the client certificate%s (expired, revoked, or not issued by '
                'a CA the KME trusts): %s' % (client, text))
    if 'EOF' in upper or 'RESET' in upper or 'BROKENPIPE' in upper:
        return ('TLS handshake failed: the KME closed the connection, most likely because it rejected the client '
                'certificate%s (expired, revoked, or not issued by a CA the KME trusts): %s' % (client, text))
    if 'PEM' in upper or 'KEY_VALUES_MISMATCH' in upper or 'NO SUCH FILE' in upper:
        return 'cannot load the client certificate%s and its key: %s' % (client, text)
    return 'TLS failure: %s' % text


# -- text from the peer ---------------------------------------------------------------------

def exception_name(exc):
    """An exception named by its class and errno, never by its text: the text of protocol errors can hold what
    the peer sent (http.client's BadStatusLine carries the line received), which may be key material."""
    errno = getattr(exc, 'errno', None)
    if isinstance(errno, int):
        return '%s, errno %d: %s' % (exc.__class__.__name__, errno, getattr(exc, 'strerror', None) or '')
    return exc.__class__.__name__


def kme_text(value, limit=KME_TEXT_LIMIT):
    """Text a KME sent, fit for a message: control and format characters (ESC, NUL, bidi marks) removed,
    whitespace runs made one space, at most ``limit`` characters (then ``...``)."""
    if value is None:
        return 'no message in the answer'
    text = ''.join(' ' if char.isspace() else char for char in str(value)
                   if char.isspace() or not unicodedata.category(char).startswith('C'))
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[:limit] + '...'


def sanitised_details(details):
    """A KME's error ``details`` (a list) as they may go into a module result: at most MAX_DETAILS entries,
    every string in them passed through kme_text."""
    if not details:
        return []
    if not isinstance(details, list):
        details = [details]

    def clean(value, depth=0):
        if isinstance(value, str):
            return kme_text(value)
        if depth > 4:
            return kme_text(json.dumps(value, sort_keys=True, default=str))
        if isinstance(value, dict):
            return dict((kme_text(key), clean(item, depth + 1)) for key, item in list(value.items())[:MAX_DETAILS])
        if isinstance(value, (list, tuple)):
            return [clean(item, depth + 1) for item in value[:MAX_DETAILS]]
        return value if isinstance(value, (int, float, bool)) or value is None else kme_text(value)
    return [clean(entry) for entry in details[:MAX_DETAILS]]
