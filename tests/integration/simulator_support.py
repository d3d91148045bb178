"""The live simulator in the integration tests: how many keys it served (from its request log) and the
collection's own key-delivery client for one of its SAEs.
"""

import re
import time

from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import (
    ConnectionOptions,
    open_client,
    resolve_connection,
)

# One simulator request line (format: tests/qkdsim/test_qkdsim_logging.py), for a 200 answer to enc_keys.
_ENC_KEYS_200 = re.compile(r'^\S+ \S+ INFO (?P<kme>\S+) (?P<caller>\S+) (?:GET|POST) /api/v1/keys/(?P<slave>[^/?\s]+)/enc_keys'
                           r'(?:\?\S*)? 200 keys=(?P<keys>\d+) \S+ms$')


def _enc_keys_logged(log_file, master_sae, slave_sae):
    with open(log_file) as handle:
        matches = (_ENC_KEYS_200.match(line.rstrip('\n')) for line in handle)
        return sum(int(match.group('keys')) for match in matches
                   if match and match.group('caller') == master_sae and match.group('slave') == slave_sae)


def enc_keys_served(simulator, master_sae, slave_sae, settle=0.3, timeout=2.0):
    """Keys the simulator has handed to master_sae for slave_sae (200 answers to enc_keys), from its request log.

    Unlike stored_key_count (pools refill within milliseconds) this only grows, so ``after == before`` proves that
    nothing was fetched in between. The server logs a request after answering it: the count is read until it has
    not changed for ``settle`` seconds (or ``timeout`` seconds have gone by).
    """
    deadline = time.monotonic() + timeout
    count = _enc_keys_logged(simulator['log_file'], master_sae, slave_sae)
    stable_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - stable_since < settle:
        time.sleep(0.05)
        latest = _enc_keys_logged(simulator['log_file'], master_sae, slave_sae)
        if latest != count:
            count, stable_since = latest, time.monotonic()
    return count


def client_for(simulator, sae_id, warn=None, **overrides):
    """The collection's client of ``sae_id`` (no retries unless ``overrides`` say so), from the simulator's manifest."""
    options = dict(endpoints_file=simulator['endpoints_file'], sae_id=sae_id, retries=0, retry_backoff=0.01)
    options.update(overrides)
    return open_client(resolve_connection(ConnectionOptions.from_dict(options)), warn=warn)
