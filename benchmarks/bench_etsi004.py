#!/usr/bin/env python
"""Benchmark: ETSI GS QKD 004 key pairs through the collection's client, next to ETSI 014 and mixed.

Starts the simulated QKD network (two sites whose KMEs serve ETSI 014 and ETSI 004, a key rate far
above any real link so the pool never limits the measurement) and times master -> slave key pairs
through the collection's clients, each over one kept connection to its own KME, for every
combination of interfaces: 014 -> 014, 004 -> 004, 014 -> 004 and 004 -> 014. One pair = the
master's get_new_keys, then the slave's get_keys_by_id for the same key IDs. An ETSI 004 master
opens one stream per request (OPEN_CONNECT, one GET_KEY per key, CLOSE); an ETSI 004 slave opens a
one-key stream per key ID (three calls per key). Writes benchmarks/results/etsi004.json and the
etsi004 section of docs/benchmarks.md. Key bytes are never printed.

    .venv/bin/python benchmarks/bench_etsi004.py [--pairs 1000] [--quick]
"""

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

sys.path.insert(0, common.REPO_ROOT)
sys.path.insert(0, os.environ.get('ANSIBLE_COLLECTIONS_PATH', os.path.join(common.REPO_ROOT, '.build')).split(':')[0])

from qkdsim.process import SimulatorProcess  # noqa: E402
from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import (  # noqa: E402
    ConnectionOptions, open_client, resolve_connection)

TOPOLOGY = """\
defaults:
  key_size: 256
  max_key_per_request: 1024
sites:
  - {id: A, name: Bench site A, interfaces: [etsi014, etsi004]}
  - {id: B, name: Bench site B, interfaces: [etsi014, etsi004]}
links:
  - sites: [A, B]
    technology: DV
    key_rate_bps: 1000000000
    pool_capacity_bits: 4294967296
    initial_fill: 1.0
    qber: 0.01
"""
COMBINATIONS = (('etsi014', 'etsi014'), ('etsi004', 'etsi004'), ('etsi004-binary', 'etsi004-binary'),
                ('etsi014', 'etsi004'), ('etsi004', 'etsi014'))
TARGET_P50_MS = 3.0   # the ETSI 014 pair target (bench_etsi014.py) applies to every interface


def client(endpoints, endpoints_file, sae_id, interface):
    """A client of ``interface``; ``etsi004-binary`` is ETSI 004 in the binary framing (kme_url tls+binary://)."""
    options = dict(endpoints_file=endpoints_file, sae_id=sae_id, retries=0, interface=interface.split('-')[0])
    if interface == 'etsi004-binary':
        options['kme_url'] = endpoints['kmes'][endpoints['saes'][sae_id]['kme_id']]['interfaces']['etsi004']['binary_url']
    return open_client(resolve_connection(ConnectionOptions.from_dict(options)))


def run_pairs(master, slave, batch, repeats):
    """``repeats`` master->slave pairs of ``batch`` keys; returns per-pair seconds and total seconds."""
    samples = []
    started = time.perf_counter()
    for unused in range(repeats):
        t0 = time.perf_counter()
        keys = master.get_new_keys('SAE-B', number=batch)
        delivered = slave.get_keys_by_id('SAE-A', [key.key_id for key in keys])
        samples.append(time.perf_counter() - t0)
        if [key.key for key in delivered] != [key.key for key in keys]:
            raise SystemExit('the slave did not get the master\'s keys')
    return samples, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--pairs', type=int, default=1000, help='single-key pairs to time per combination (default 1000)')
    parser.add_argument('--quick', action='store_true', help='a short run that does not touch docs/')
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    plan = [(1, max(10, int(args.pairs * scale))), (10, max(3, int(200 * scale))), (100, max(3, int(40 * scale)))]

    rows = []
    with tempfile.TemporaryDirectory(prefix='bench-etsi004-') as state_dir:
        topology = os.path.join(state_dir, 'topology.yml')
        with open(topology, 'w') as handle:
            handle.write(TOPOLOGY)
        simulator = SimulatorProcess(os.path.join(state_dir, 'sim'), topology=topology)
        try:
            endpoints = str(simulator.endpoints_file)
            for master_interface, slave_interface in COMBINATIONS:
                with client(simulator.endpoints, endpoints, 'SAE-A', master_interface) as master, \
                        client(simulator.endpoints, endpoints, 'SAE-B', slave_interface) as slave:
                    run_pairs(master, slave, 1, 50)  # warm up: TLS sessions, caches
                    for batch, repeats in plan:
                        samples, total = run_pairs(master, slave, batch, repeats)
                        row = dict(master=master_interface, slave=slave_interface, batch=batch, pairs=repeats,
                                   keys=batch * repeats, keys_per_s=batch * repeats / total,
                                   **common.summarize_ms(samples))
                        rows.append(row)
                        common.note('%s -> %s batch %3d: %7.0f keys/s, pair p50 %.2f ms, p99 %.2f ms'
                                    % (master_interface, slave_interface, batch, row['keys_per_s'], row['p50'],
                                       row['p99']))
        finally:
            simulator.stop()

    machine = common.machine_description()
    results = dict(benchmark='etsi004', machine=machine, rows=rows, targets=dict(pair_p50_ms=TARGET_P50_MS))
    if args.quick:
        return 0
    common.save_results('etsi004', results)
    names = {'etsi014': 'ETSI 014', 'etsi004': 'ETSI 004', 'etsi004-binary': 'ETSI 004 (binary framing)'}
    lines = [
        '## ETSI GS QKD 004 next to ETSI 014, and mixed links, through the collection\'s clients',
        '',
        common.machine_line(machine),
        '',
        'Both KMEs of the simulator serve ETSI 014 and ETSI 004, the latter in the JSON dialect and in the binary',
        'framing (`benchmarks/bench_etsi004.py`); master and',
        'slave each keep one mutual-TLS connection to their own KME. One pair = the master\'s new keys, then',
        'the slave\'s keys by ID. ETSI 004 master: OPEN_CONNECT, one GET_KEY per key, CLOSE; ETSI 004 slave:',
        'OPEN_CONNECT on the key ID, GET_KEY, CLOSE per key (the key-by-ID bridge, docs/qkdsim.md), so its',
        'cost grows with three calls per key where ETSI 014 takes one request per batch. 256-bit keys.',
        '',
        '| master | slave | keys per request | pairs timed | keys/s | pair p50 (ms) | pair p99 (ms) |',
        '|---|---|---:|---:|---:|---:|---:|',
    ]
    for row in rows:
        lines.append('| %s | %s | %d | %d | %.0f | %.2f | %.2f |' % (
            names[row['master']], names[row['slave']], row['batch'], row['pairs'], row['keys_per_s'], row['p50'],
            row['p99']))
    singles = [row for row in rows if row['batch'] == 1]
    worst = max(singles, key=lambda row: row['p50'])
    lines += [
        '',
        'Target: single-key pair p50 <= %.0f ms for every combination (worst measured: %s -> %s, %.2f ms: %s).'
        % (TARGET_P50_MS, names[worst['master']], names[worst['slave']], worst['p50'],
           'met' if worst['p50'] <= TARGET_P50_MS else 'NOT met'),
    ]
    common.replace_section('etsi004', '\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
