#!/usr/bin/env python
"""Benchmark: master -> slave key pairs through the collection's clients, for every key-delivery interface.

Starts the simulated QKD network once (two sites whose KMEs serve ETSI GS QKD 014, ETSI GS QKD 004 and
Cisco SKIP; a key rate far above any real link, so the pool never limits the measurement) and runs the
table of cases below through one timing loop. A case is an interface and transport at each end (ETSI 004
in the JSON dialect or the binary framing; SKIP over TLS 1.2 with a PSK, as IOS-XE, or mutual TLS;
mixed links), whether the connections are kept or opened again for every request, and the batches
(keys per pair) to time. One pair = the master's get_new_keys, then the slave's get_keys_by_id for the
same key IDs; the slave must get the master's keys. Each end keeps one client (one connection to its
own KME) for the whole case. Key bytes are compared, never printed.

Writes benchmarks/results/key_delivery.json and the key-delivery section of docs/benchmarks.md. A run
of part of the table (--interface, --case) keeps the other cases' rows of the last results file, each
row with the date and load average it was measured at.

    .venv/bin/python benchmarks/bench_key_delivery.py [--pairs 1000] [--interface etsi004] [--case NAME ...] [--quick] [--list]
"""

import argparse
import collections
import sys
import time

import common
from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import (
    ConnectionOptions, open_client, resolve_connection)

NAME = 'key_delivery'
SECTION = 'key-delivery'
TOPOLOGY = """\
defaults:
  key_size: 256
  max_key_per_request: 1024
sites:
  - {id: A, name: Bench site A, interfaces: [etsi014, etsi004, skip]}
  - {id: B, name: Bench site B, interfaces: [etsi014, etsi004, skip]}
links:
  - sites: [A, B]
    technology: DV
    key_rate_bps: 1000000000
    pool_capacity_bits: 4294967296
    initial_fill: 1.0
    qber: 0.01
"""
INTERFACES = ('etsi014', 'etsi004', 'skip')
# One end of a pair: interface/transport -> (label, interface option, how the client reaches its KME).
ENDS = {
    'etsi014': ('ETSI 014', 'etsi014', None),
    'etsi004': ('ETSI 004', 'etsi004', None),
    'etsi004/binary': ('ETSI 004 (binary framing)', 'etsi004', 'binary_url'),
    'skip': ('SKIP (TLS-PSK)', 'skip', None),
    'skip/mtls': ('SKIP (mutual TLS)', 'skip', 'mtls'),
}
Case = collections.namedtuple('Case', 'name master slave batches fresh')
# The table: every case runs through the same loop (run_pairs). SKIP carries one key per request, so a
# batch of n is n requests at each end; an ETSI 004 master opens one stream per request (OPEN_CONNECT,
# one GET_KEY per key, CLOSE), an ETSI 004 slave one stream per key ID (three calls per key).
CASES = (
    Case('etsi014', 'etsi014', 'etsi014', (1, 10, 100, 1000), False),
    Case('etsi004', 'etsi004', 'etsi004', (1, 10, 100), False),
    Case('etsi004-binary', 'etsi004/binary', 'etsi004/binary', (1, 10, 100), False),
    Case('etsi014-etsi004', 'etsi014', 'etsi004', (1, 10, 100), False),
    Case('etsi004-etsi014', 'etsi004', 'etsi014', (1, 10, 100), False),
    Case('skip', 'skip', 'skip', (1, 10), False),
    Case('skip-mtls', 'skip/mtls', 'skip/mtls', (1, 10), False),
    Case('etsi014-skip', 'etsi014', 'skip', (1, 10), False),
    Case('skip-etsi014', 'skip', 'etsi014', (1, 10), False),
    # what a client that keeps no connection (such as skip-qkd) pays: a DHE-PSK handshake per request
    Case('skip-fresh', 'skip', 'skip', (1,), True),
)
# Pairs timed per batch size, as a divisor of --pairs (the single-key count): 1000 -> 1000, 200, 40, 25.
REPEAT_DIVISOR = {1: 1, 10: 5, 100: 25, 1000: 40}
WARM_UP_PAIRS = 50
TARGET_P50_MS = 3.0         # single-key pair round trip, every case with kept connections
TARGET_KEYS_PER_S = 10000   # ETSI 014 with batches


def case_label(case):
    label = '%s -> %s' % (ENDS[case.master][0], ENDS[case.slave][0])
    return label + ', new connection per request' if case.fresh else label


def case_interfaces(case):
    return {ENDS[case.master][1], ENDS[case.slave][1]}


def select_cases(interfaces=None, names=None):
    """The cases that use one of ``interfaces`` at either end and, when ``names`` is given, are named there."""
    unknown = set(names or ()) - {case.name for case in CASES}
    if unknown:
        raise ValueError('unknown case(s): %s (see --list)' % ', '.join(sorted(unknown)))
    return [case for case in CASES
            if (not interfaces or case_interfaces(case) & set(interfaces)) and (not names or case.name in names)]


def repeats_for(batch, pairs):
    return max(3, pairs // REPEAT_DIVISOR[batch])


def open_end(endpoints, endpoints_file, sae_id, end):
    """A client for one end of a pair: ``end`` is a key of ENDS."""
    unused_label, interface, variant = ENDS[end]
    options = dict(endpoints_file=endpoints_file, sae_id=sae_id, retries=0, interface=interface)
    if variant == 'binary_url':
        kme = endpoints['kmes'][endpoints['saes'][sae_id]['kme_id']]
        options['kme_url'] = kme['interfaces']['etsi004']['binary_url']
    elif variant == 'mtls':
        options['skip_auth'] = 'mtls'
    return open_client(resolve_connection(ConnectionOptions.from_dict(options)))


def run_pairs(master, slave, batch, repeats, fresh=False):
    """``repeats`` master -> slave pairs of ``batch`` keys; returns per-pair seconds and total seconds.

    With ``fresh``, each end closes its connection before each request, so every request opens a new one."""
    samples = []
    started = time.perf_counter()
    for unused in range(repeats):
        t0 = time.perf_counter()
        if fresh:
            master.close()
        keys = master.get_new_keys('SAE-B', number=batch)
        if fresh:
            slave.close()
        delivered = slave.get_keys_by_id('SAE-A', [key.key_id for key in keys])
        samples.append(time.perf_counter() - t0)
        if len(keys) != batch or [key.key for key in delivered] != [key.key for key in keys]:
            raise SystemExit("the slave did not get the master's %d keys" % batch)
    return samples, time.perf_counter() - started


def measure(cases, pairs):
    rows = []
    with common.simulator(TOPOLOGY, 'bench-key-delivery-') as simulator:
        endpoints_file = str(simulator.endpoints_file)
        for case in cases:
            with open_end(simulator.endpoints, endpoints_file, 'SAE-A', case.master) as master, \
                    open_end(simulator.endpoints, endpoints_file, 'SAE-B', case.slave) as slave:
                run_pairs(master, slave, 1, WARM_UP_PAIRS, case.fresh)  # warm up: connections, caches
                for batch in case.batches:
                    repeats = repeats_for(batch, pairs)
                    load = common.load_average()
                    samples, total = run_pairs(master, slave, batch, repeats, case.fresh)
                    row = dict(case=case.name, label=case_label(case), master=case.master, slave=case.slave,
                               fresh_connections=case.fresh, batch=batch, pairs=repeats, keys=batch * repeats,
                               keys_per_s=batch * repeats / total, load_before=load, measured_at=common.utc_now(),
                               **common.summarize_ms(samples))
                    rows.append(row)
                    common.note('%-60s batch %4d: %8.0f keys/s, pair p50 %.2f ms, p99 %.2f ms'
                                % (row['label'], batch, row['keys_per_s'], row['p50'], row['p99']))
    return rows


def merge_rows(rows, previous):
    """``rows`` plus the rows of ``previous`` for cases not measured now, in the table's order."""
    measured = {row['case'] for row in rows}
    kept = [row for row in previous if row.get('case') not in measured and row.get('case') in {c.name for c in CASES}]
    order = dict((case.name, index) for index, case in enumerate(CASES))
    return sorted(rows + kept, key=lambda row: (order[row['case']], row['batch']))


def targets(rows):
    """The target lines for the rows there are."""
    lines = []
    kept = [row for row in rows if row['batch'] == 1 and not row['fresh_connections']]
    if kept:
        worst = max(kept, key=lambda row: row['p50'])
        lines.append('- Single-key pair p50 <= %.0f ms for every case with kept connections: **%s** (worst: %s, %.2f ms).'
                     % (TARGET_P50_MS, 'met' if worst['p50'] <= TARGET_P50_MS else 'not met', worst['label'], worst['p50']))
    batched = [row for row in rows if row['case'] == 'etsi014' and row['batch'] > 1]
    if batched:
        best = max(batched, key=lambda row: row['keys_per_s'])
        lines.append('- ETSI 014 with batches >= %d keys/s: **%s** (%.0f keys/s at %d keys per request).' % (
            TARGET_KEYS_PER_S, 'met' if best['keys_per_s'] >= TARGET_KEYS_PER_S else 'not met', best['keys_per_s'],
            best['batch']))
    return lines


def report(rows, machine):
    lines = [
        "## Key delivery: master -> slave key pairs through the collection's clients",
        '',
        common.machine_line(machine),
        '',
        'One simulator whose two KMEs serve ETSI 014, ETSI 004 (JSON dialect and binary framing) and Cisco SKIP',
        '(`benchmarks/bench_key_delivery.py`, one table of cases, one timing loop). Master and slave each keep one',
        'connection to their own KME (ETSI 014 and ETSI 004: mutual TLS; SKIP: TLS 1.2 with a PSK,',
        'DHE-PSK-AES256-GCM-SHA384, as IOS-XE, or mutual TLS). One pair = the master\'s new keys, then the slave\'s',
        'keys by ID; 256-bit keys. ETSI 014 takes one request per batch at each end; an ETSI 004 master opens one',
        'stream per request (OPEN_CONNECT, one GET_KEY per key, CLOSE) and an ETSI 004 slave one stream per key ID',
        '(three calls per key, the key-by-ID bridge of docs/qkdsim.md); SKIP carries one key per request. The last',
        'case opens a new TLS-PSK connection (a DHE handshake) for every request. *Load* is the 1-minute load',
        'average when the row began (2 cores: above 2, other jobs shared the machine). Raw data:',
        '`benchmarks/results/key_delivery.json`.',
        '',
        '| case | keys per pair | pairs timed | keys/s | pair p50 (ms) | pair p99 (ms) | load | measured |',
        '|---|---:|---:|---:|---:|---:|---:|---|',
    ]
    for row in rows:
        lines.append('| %s | %d | %d | %.0f | %.2f | %.2f | %.1f | %s |' % (
            row['label'], row['batch'], row['pairs'], row['keys_per_s'], row['p50'], row['p99'], row['load_before'],
            row['measured_at']))
    lines += [''] + targets(rows) + ['- For scale: a real QKD link yields a few to a few hundred 256-bit keys per second.']
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--pairs', type=int, default=1000,
                        help='single-key pairs to time per case (default 1000); batches of 10, 100 and 1000 keys '
                             'time 1/5, 1/25 and 1/40 as many')
    parser.add_argument('--interface', action='append', choices=INTERFACES,
                        help='only the cases that use this interface at either end (repeatable)')
    parser.add_argument('--case', action='append', metavar='NAME', help='only this case (repeatable; see --list)')
    parser.add_argument('--list', action='store_true', help='list the cases and exit')
    parser.add_argument('--quick', action='store_true',
                        help='a tenth of the pairs, and write neither the results file nor docs/')
    args = parser.parse_args(argv)
    try:
        cases = select_cases(args.interface, args.case)
    except ValueError as exc:
        parser.error(str(exc))
    if args.list:
        for case in cases:
            print('%-16s %-62s batches %s' % (case.name, case_label(case), ', '.join(map(str, case.batches))))
        return 0
    if not cases:
        parser.error('no case matches --interface %s --case %s' % (args.interface, args.case))
    pairs = max(10, args.pairs // 10) if args.quick else args.pairs
    machine = common.machine_description()   # before the run: its load average is the machine's, not ours
    rows = measure(cases, pairs)
    if args.quick:
        return 0
    if len(cases) < len(CASES):
        rows = merge_rows(rows, common.load_results(NAME).get('rows', []))
    path = common.save_results(NAME, dict(benchmark=NAME, machine=machine, pairs=pairs, rows=rows,
                                          targets=dict(pair_p50_ms=TARGET_P50_MS, etsi014_keys_per_s=TARGET_KEYS_PER_S)))
    common.replace_section(SECTION, report(rows, machine))
    common.note('results: %s; docs/benchmarks.md updated' % path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
