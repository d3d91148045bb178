#!/usr/bin/env python
"""Benchmark: ETSI GS QKD 014 enc_keys -> dec_keys pairs through the collection's client.

Starts the simulated QKD network (a two-site topology whose key rate is far above any real
link, so the pool never limits the measurement), then, over kept-alive mutual-TLS sessions,
measures a master getting keys (POST enc_keys) and the slave getting the same keys by ID
(POST dec_keys): one key per pair, and batches of 10, 100 and 1000 keys. Reports keys/s and
the pair round-trip latency p50/p99, writes benchmarks/results/etsi014.json and the
etsi014 section of docs/benchmarks.md. Key bytes are never printed.

    .venv/bin/python benchmarks/bench_etsi014.py [--pairs 2000] [--quick]
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
  - {id: A, name: Bench site A}
  - {id: B, name: Bench site B}
links:
  - sites: [A, B]
    technology: DV
    key_rate_bps: 1000000000
    pool_capacity_bits: 4294967296
    initial_fill: 1.0
    qber: 0.01
"""
TARGET_P50_MS = 3.0
TARGET_KEYS_PER_S = 10000


def client(endpoints_file, sae_id):
    options = ConnectionOptions.from_dict(dict(endpoints_file=endpoints_file, sae_id=sae_id, retries=0))
    return open_client(resolve_connection(options))


def run_pairs(master, slave, batch, repeats):
    """``repeats`` enc->dec pairs of ``batch`` keys; returns per-pair seconds and total seconds."""
    samples = []
    started = time.perf_counter()
    for unused in range(repeats):
        t0 = time.perf_counter()
        keys = master.get_new_keys('SAE-B', number=batch)
        delivered = slave.get_keys_by_id('SAE-A', [key.key_id for key in keys])
        samples.append(time.perf_counter() - t0)
        if len(delivered) != batch:
            raise SystemExit('slave got %d of %d keys' % (len(delivered), batch))
    return samples, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--pairs', type=int, default=2000, help='single-key pairs to time (default 2000)')
    parser.add_argument('--quick', action='store_true', help='a short run that does not touch docs/')
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0

    with tempfile.TemporaryDirectory(prefix='bench-etsi014-') as state_dir:
        topology = os.path.join(state_dir, 'topology.yml')
        with open(topology, 'w') as handle:
            handle.write(TOPOLOGY)
        simulator = SimulatorProcess(os.path.join(state_dir, 'sim'), topology=topology)
        try:
            endpoints = str(simulator.endpoints_file)
            with client(endpoints, 'SAE-A') as master, client(endpoints, 'SAE-B') as slave:
                run_pairs(master, slave, 1, 100)  # warm up: TLS sessions, caches
                rows = []
                plan = [(1, max(10, int(args.pairs * scale)))] + [
                    (batch, max(3, int(repeats * scale))) for batch, repeats in ((10, 500), (100, 200), (1000, 50))]
                for batch, repeats in plan:
                    samples, total = run_pairs(master, slave, batch, repeats)
                    row = dict(batch=batch, pairs=repeats, keys=batch * repeats,
                               keys_per_s=batch * repeats / total, **common.summarize_ms(samples))
                    rows.append(row)
                    common.note('batch %4d: %8.0f keys/s, pair p50 %.2f ms, p99 %.2f ms'
                                % (batch, row['keys_per_s'], row['p50'], row['p99']))
        finally:
            simulator.stop()

    machine = common.machine_description()
    results = dict(benchmark='etsi014', machine=machine, rows=rows,
                   targets=dict(pair_p50_ms=TARGET_P50_MS, keys_per_s_batched=TARGET_KEYS_PER_S))
    if args.quick:
        return 0
    common.save_results('etsi014', results)
    single = rows[0]
    best = max(rows[1:], key=lambda row: row['keys_per_s'])
    lines = [
        '## ETSI GS QKD 014: enc_keys -> dec_keys through the collection\'s client',
        '',
        common.machine_line(machine),
        '',
        'Master and slave each hold one kept-alive mutual-TLS session to their own KME of the',
        'simulator (`benchmarks/bench_etsi014.py`). One pair = POST enc_keys at the master\'s KME,',
        'then POST dec_keys for the same key_IDs at the slave\'s KME. 256-bit keys.',
        '',
        '| keys per request | pairs timed | keys/s | pair p50 (ms) | pair p99 (ms) |',
        '|---:|---:|---:|---:|---:|',
    ]
    for row in rows:
        lines.append('| %d | %d | %.0f | %.2f | %.2f |' % (row['batch'], row['pairs'], row['keys_per_s'],
                                                           row['p50'], row['p99']))
    lines += [
        '',
        'Targets: pair round trip p50 <= %.0f ms (measured %.2f ms: %s); >= %d keys/s with batches '
        '(measured %.0f keys/s at %d keys per request: %s).' % (
            TARGET_P50_MS, single['p50'], 'met' if single['p50'] <= TARGET_P50_MS else 'NOT met',
            TARGET_KEYS_PER_S, best['keys_per_s'], best['batch'],
            'met' if best['keys_per_s'] >= TARGET_KEYS_PER_S else 'NOT met'),
        'For scale: a real QKD link yields a few to a few hundred 256-bit keys per second.',
    ]
    common.replace_section('etsi014', '\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
