#!/usr/bin/env python
"""Benchmark: wall time of the full-mesh roll-out in render mode, against N, and against naive ways.

For each N it writes an inventory and a matching QKD topology with tools/generate_mesh_inventory.py
(a full mesh: N(N-1)/2 links, every link keyed from QKD + ML-KEM-768 + X25519), starts the
simulated QKD network, and times whole ansible-playbook runs:

* full_mesh.yml, first run: every link keyed (one hybrid_key call) and every site rendered
  (the mesh_render action) - the number the issue's target is about;
* full_mesh.yml, second run: nothing to key, nothing to write (the GitOps re-run);
* full_mesh.yml with qsafe_render_per_site=true on the stored keys: the mesh_site role on every
  host, Ansible's usual per-host way (only where it fits the time budget);
* the naive way, benchmarks/naive/per_link.yml: one task iteration per link, each keying its link
  with its own lookup call and writing one file (only where it fits the time budget).

Writes benchmarks/results/mesh_render.json and the mesh-render section of docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_mesh_render.py [--sites 5,10,20,50,100] [--budget 240] [--merge]
        [--no-baselines] [--keep] [--collections-path OTHER_CHECKOUT/.build]

With --merge, rows of the last results file for other site counts are kept (each row says when it
was measured and the load average then), so one N can be measured again on a quiet machine. With
--collections-path, the playbooks run another checkout's collection copy (its .build, after its
`make collection`), so two versions can be timed on one machine, one run after the other.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from qkdsim.process import SimulatorProcess

import common

HERE = os.path.dirname(os.path.abspath(__file__))

PLAYBOOK = os.path.join(common.REPO_ROOT, 'playbooks', 'full_mesh.yml')
NAIVE = os.path.join(HERE, 'naive', 'per_link.yml')
GENERATOR = os.path.join(common.REPO_ROOT, 'tools', 'generate_mesh_inventory.py')
TARGET_SECONDS_AT_100 = 60.0
TARGET_SPEEDUP = 10.0


# ANSIBLE_COLLECTIONS_PATH of the timed runs (--collections-path; else the environment's, else .build).
COLLECTIONS_PATH = {}


def timed_playbook(playbook, inventory, extra_vars, log_path):
    """Seconds of one ansible-playbook run; fails loudly (pointing at its log) when the run fails."""
    returncode, elapsed, output = common.ansible_playbook(playbook, extra_vars, inventory=inventory,
                                                          env=common.ansible_env(**COLLECTIONS_PATH))
    with open(log_path, 'w') as log:
        log.write(output)
    if returncode != 0:
        raise SystemExit('%s failed (exit %d); see %s' % (os.path.basename(playbook), returncode, log_path))
    return elapsed


def count_files(directory):
    return sum(len(names) for root, dirs, names in os.walk(directory))


def measure(sites, workdir, budget, per_link_seconds, per_site_seconds, baselines=True):
    links = sites * (sites - 1) // 2
    base = os.path.join(workdir, 'n%d' % sites)
    subprocess.run([sys.executable, GENERATOR, '--sites', str(sites), '--out', base], check=True, stdout=subprocess.DEVNULL)
    simulator = SimulatorProcess(os.path.join(base, 'qkdsim'), topology=os.path.join(base, 'topology.yml'))
    row = dict(sites=sites, links=links, load_before=common.load_average(), measured_at=common.utc_now())
    try:
        common_vars = dict(qsafe_endpoints_file=str(simulator.endpoints_file))
        store, out = os.path.join(base, 'store'), os.path.join(base, 'rendered')
        run_vars = dict(common_vars, qsafe_key_store=store, qsafe_output_dir=out)
        common.note('N=%d (%d links): full_mesh.yml, first run' % (sites, links))
        row['first_run_s'] = timed_playbook(PLAYBOOK, os.path.join(base, 'hosts.yml'), run_vars, os.path.join(base, 'first.log'))
        row['files'] = count_files(out)
        common.note('N=%d: full_mesh.yml, second run' % sites)
        row['second_run_s'] = timed_playbook(PLAYBOOK, os.path.join(base, 'hosts.yml'), run_vars, os.path.join(base, 'second.log'))

        if baselines and (per_site_seconds is None or per_site_seconds * sites <= budget):
            common.note('N=%d: per-site roles (qsafe_render_per_site)' % sites)
            row['per_site_roles_s'] = timed_playbook(
                PLAYBOOK, os.path.join(base, 'hosts.yml'),
                dict(run_vars, qsafe_output_dir=os.path.join(base, 'per-site'), qsafe_render_per_site=True),
                os.path.join(base, 'per-site.log'))
            per_site_seconds = row['per_site_roles_s'] / sites
        if baselines and (per_link_seconds is None or per_link_seconds * links <= budget):
            common.note('N=%d: naive, one task per link' % sites)
            row['naive_per_link_s'] = timed_playbook(
                NAIVE, os.path.join(base, 'hosts.yml'),
                dict(common_vars, qsafe_key_store=os.path.join(base, 'naive-store'), qsafe_output_dir=os.path.join(base, 'naive')),
                os.path.join(base, 'naive.log'))
            per_link_seconds = row['naive_per_link_s'] / links
            row['speedup_vs_naive'] = row['naive_per_link_s'] / row['first_run_s']
    finally:
        simulator.stop()
    return row, per_link_seconds, per_site_seconds


def fmt(value, pattern='%.1f'):
    return pattern % value if value is not None else 'not run'


def report(rows, machine, budget):
    top = rows[-1]
    lines = [
        '## Full-mesh roll-out (render mode) against N',
        '',
        common.machine_line(machine),
        '',
        'Wall time of whole `ansible-playbook` runs on the simulated QKD network (`benchmarks/bench_mesh_render.py`).',
        '*First run*: `playbooks/full_mesh.yml` keys every link (QKD + ML-KEM-768 + X25519, one `hybrid_key` call)',
        'and renders every site with the `mesh_render` action. *Second run*: the same inventory again (nothing keyed,',
        'nothing written). *Per-site roles*: the same files through the `mesh_site` role on every host',
        '(`qsafe_render_per_site=true`, keys already stored). *Naive*: `benchmarks/naive/per_link.yml`, one task',
        'iteration per link that keys it with its own lookup call and writes one file - less work than the roll-out.',
        'Runs the script predicted to exceed %d s are marked "not run". *Load* is the 1-minute load average' % budget,
        'when the row began (2 cores: above 2, other jobs shared the machine and every time in the row is longer).',
        '',
        '| sites | links | files | first run (s) | second run (s) | per-site roles (s) | naive, one task per link (s) | naive / first run | load | measured |',
        '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    ]
    for row in rows:
        lines.append('| %d | %d | %d | %.1f | %.1f | %s | %s | %s | %s | %s |' % (
            row['sites'], row['links'], row['files'], row['first_run_s'], row['second_run_s'],
            fmt(row.get('per_site_roles_s')), fmt(row.get('naive_per_link_s')), fmt(row.get('speedup_vs_naive'), '%.0fx'),
            fmt(row.get('load_before'), '%.1f') if row.get('load_before') is not None else 'not recorded',
            row.get('measured_at', 'not recorded')))
    lines.append('')
    if top['sites'] == 100:
        lines.append('- Target N = 100 (4,950 links) in <= %d s: **%s** (%.1f s).' % (
            TARGET_SECONDS_AT_100, 'met' if top['first_run_s'] <= TARGET_SECONDS_AT_100 else 'not met', top['first_run_s']))
    compared = [row for row in rows if row.get('speedup_vs_naive')]
    if compared:
        worst = min(compared, key=lambda row: row['speedup_vs_naive'])
        lines.append('- Target >= %dx faster than the naive loop: **%s** where both ran (lowest: %.0fx at N = %d; the gap grows with N).' % (
            TARGET_SPEEDUP, 'met' if worst['speedup_vs_naive'] >= TARGET_SPEEDUP else 'not met', worst['speedup_vs_naive'], worst['sites']))
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        growth, link_growth = last['first_run_s'] / first['first_run_s'], last['links'] / float(first['links'])
        per_link = [(row['first_run_s'] / row['links']) * 1000 for row in rows]
        lines.append('- Cost against links: from N = %d to N = %d the links grow %.0fx and the first run %.1fx; per link %s ms. '
                     'Target "no faster than the number of links": **%s**.' % (
                         first['sites'], last['sites'], link_growth, growth, ' / '.join('%.0f' % value for value in per_link),
                         'met' if growth <= link_growth else 'not met'))
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--sites', default='5,10,20,50,100', help='comma-separated site counts (default 5,10,20,50,100)')
    parser.add_argument('--budget', type=float, default=240.0,
                        help='skip a per-site or naive run predicted to take longer than this many seconds (default 240)')
    parser.add_argument('--keep', action='store_true', help='keep the work directory (logs, inventories, rendered files)')
    parser.add_argument('--no-baselines', action='store_true',
                        help='time only full_mesh.yml (first and second run), not the per-site roles or the naive loop')
    parser.add_argument('--merge', action='store_true',
                        help='keep the rows of the last results file for site counts not measured in this run')
    parser.add_argument('--collections-path', metavar='PATH',
                        help='ANSIBLE_COLLECTIONS_PATH of the timed runs, e.g. another checkout\'s .build, to time its '
                             'collection on this machine (default: the environment\'s, else .build)')
    args = parser.parse_args()
    if args.collections_path:
        COLLECTIONS_PATH['ANSIBLE_COLLECTIONS_PATH'] = os.path.abspath(args.collections_path)
    counts = sorted(int(value) for value in args.sites.split(','))
    machine = common.machine_description()
    workdir = tempfile.mkdtemp(prefix='qsafe-bench-render-')
    rows, per_link, per_site = [], None, None
    try:
        for sites in counts:
            row, per_link, per_site = measure(sites, workdir, args.budget, per_link, per_site, not args.no_baselines)
            rows.append(row)
            common.note(json.dumps(row))
    finally:
        if args.keep:
            common.note('work directory kept: %s' % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.merge:
        measured = set(counts)
        rows = sorted(rows + [row for row in common.load_results('mesh_render').get('rows', []) if row['sites'] not in measured], key=lambda row: row['sites'])
    collections_path = common.ansible_env(**COLLECTIONS_PATH)['ANSIBLE_COLLECTIONS_PATH']
    path = common.save_results('mesh_render', dict(machine=machine, budget_s=args.budget, rows=rows,
                                                   collections_path=collections_path))
    common.replace_section('mesh-render', report(rows, machine, args.budget))
    common.note('results: %s; docs/benchmarks.md updated' % path)


if __name__ == '__main__':
    main()
