#!/usr/bin/env python
"""Benchmark: the live testbed (playbooks/testbed_up.yml) against N - up time and its phases, tunnel
set-up per link, and adding one site to a running mesh.

For each N (root needed; skipped with the reason where the testbed cannot run) it brings a fresh
testbed up with ansible-playbook and takes the times from three sources:

* the whole playbook run (wall clock around ansible-playbook), the issue's "up and verified" number;
* ansible's log (ANSIBLE_LOG_PATH, one timestamp per task): the keying task (one hybrid_key call:
  QKD fetch, ML-KEM, X25519, CatKDF for every link) and the render task (mesh_render);
* the testbed's own record (<state>/runs.jsonl from python -m testbed): namespaces, charons, qkdsim,
  load, initiate, verify; per link the time swanctl --initiate took (all links in parallel) and, from
  the initiator's charon log (millisecond timestamps), "initiating IKE_SA" to "CHILD_SA established".

Then it adds site N+1 (testbed_up.yml with N+1) and records its time, the links keyed
(keyed_now), the QKD keys the simulator served per link before and after (only the new links may
grow) and whether the existing sites' IKE SAs survived (same uniqueids). Finally testbed_down.yml,
timed, and a check that nothing is left.

Writes benchmarks/results/testbed.json and the testbed section of docs/benchmarks.md.

    .venv/bin/python benchmarks/bench_testbed.py [--sites 3,5,10,20] [--no-addition]
"""

import argparse
import datetime
import json
import os
import re
import shutil
import sys
import tempfile
import time

from testbed import Testbed, skip_reason

import common

UP = os.path.join(common.REPO_ROOT, 'playbooks', 'testbed_up.yml')
DOWN = os.path.join(common.REPO_ROOT, 'playbooks', 'testbed_down.yml')
PREFIX = 'qbench'
TARGET_UP_SECONDS_AT_10 = 15.0
TARGET_SETUP_P50_MS = 50.0
LOG_LINE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?\| (TASK|PLAY|PLAY RECAP) ?\[?([^\]]*)\]?')
ENC_KEYS_200 = re.compile(r'^\S+ \S+ INFO \S+ (?P<caller>\S+) (?:GET|POST) /api/v1/keys/(?P<slave>[^/?\s]+)/enc_keys'
                          r'(?:\?\S*)? 200 keys=(?P<keys>\d+) ')


def playbook(path, extra_vars, log_path):
    """(seconds, stdout) of one ansible-playbook run; exits naming the log when it fails."""
    returncode, seconds, output = common.ansible_playbook(path, extra_vars, env=common.ansible_env(ANSIBLE_LOG_PATH=log_path))
    with open(log_path + '.out', 'w') as handle:
        handle.write(output)
    if returncode != 0:
        raise SystemExit('%s failed (exit %d); see %s.out' % (os.path.basename(path), returncode, log_path))
    return seconds, output


def task_seconds(log_path):
    """{task name: seconds from its start to the next task's (or play's) start} from ansible's log."""
    marks = []
    with open(log_path) as handle:
        for line in handle:
            match = LOG_LINE.match(line)
            if match:
                stamp = datetime.datetime.strptime(match.group(1), '%Y-%m-%d %H:%M:%S,%f').timestamp()
                marks.append((stamp, match.group(2), match.group(3).strip()))
    seconds = {}
    for (stamp, kind, name), following in zip(marks, marks[1:]):
        if kind == 'TASK':
            seconds[name] = seconds.get(name, 0.0) + following[0] - stamp
    return seconds


def runs(state_dir):
    with open(os.path.join(state_dir, 'runs.jsonl')) as handle:
        return [json.loads(line) for line in handle]


def served_per_link(log_file):
    """{'SAE-A--SAE-B': keys served to master A for slave B}, from the simulator's request log."""
    counts = {}
    with open(log_file) as handle:
        for line in handle:
            match = ENC_KEYS_200.match(line)
            if match:
                link = '%s--%s' % (match.group('caller'), match.group('slave'))
                counts[link] = counts.get(link, 0) + int(match.group('keys'))
    return counts


def phase_row(up_seconds, tasks, records):
    up_record = [r for r in records if r['command'] == 'up'][-1]
    connect = [r for r in records if r['command'] == 'connect'][-1]
    keying = sum(v for k, v in tasks.items() if k.startswith('Key every link'))
    render = sum(v for k, v in tasks.items() if k.startswith("Render every site's configuration"))
    phases = dict(namespaces=up_record['phases'].get('namespaces', 0.0), charons=up_record['phases'].get('charons', 0.0),
                  qkdsim=up_record['phases'].get('qkdsim', 0.0), keying=keying, render=render,
                  load=connect['phases'].get('load', 0.0), initiate=connect['phases'].get('initiate', 0.0),
                  verify=connect['phases'].get('verify', 0.0))
    phases['ansible_and_rest'] = up_seconds - sum(phases.values())
    return dict((k, round(v, 3)) for k, v in phases.items()), connect


def measure(sites, workdir, addition):
    state_dir = os.path.join(workdir, 'n%d' % sites)
    common.note('N=%d: testbed_up.yml' % sites)
    extra = dict(testbed_sites=sites, testbed_state_dir=state_dir, testbed_prefix=PREFIX)
    log = os.path.join(workdir, 'n%d-up.log' % sites)
    # the machine is shared: the 1-minute load average before the run says how busy it was
    row = dict(sites=sites, links=sites * (sites - 1) // 2, load_before=common.load_average())
    try:
        up_seconds, output = playbook(UP, extra, log)
        phases, connect = phase_row(up_seconds, task_seconds(log), runs(state_dir))
        setup_log = sorted(connect['setup'].values())
        setup_wall = sorted(v['seconds'] for v in connect['initiate'].values())
        row.update(up_s=round(up_seconds, 3), verified=connect['verify']['ok'], keyed_now=len(common.keyed_now(output) or []),
                   phases_s=phases, setup_charon_ms=dict((k, round(v * 1000, 1)) for k, v in sorted(connect['setup'].items())),
                   setup_swanctl_ms=dict((k, round(v['seconds'] * 1000, 1)) for k, v in sorted(connect['initiate'].items())),
                   setup_charon_summary_ms=common.summarize_ms(setup_log), setup_swanctl_summary_ms=common.summarize_ms(setup_wall),
                   ping_rtt_ms=connect['verify']['rtt_ms'])
        if addition:
            bed = Testbed(state_dir, PREFIX)
            sas_before = dict((site, dict((sa['peer'], sa['uniqueid']) for sa in bed.ike_sas(site))) for site in bed.sites())
            served_before = served_per_link(bed.state['qkdsim']['log_file'])
            common.note('N=%d: add site %d' % (sites, sites + 1))
            log = os.path.join(workdir, 'n%d-add.log' % sites)
            add_seconds, output = playbook(UP, dict(extra, testbed_sites=sites + 1), log)
            bed = Testbed(state_dir, PREFIX)
            served_after = served_per_link(bed.state['qkdsim']['log_file'])
            new_site = 'site-%03d' % (sites + 1)
            grown = sorted(link for link in served_after if served_after[link] != served_before.get(link, 0))
            survived = all(dict((sa['peer'], sa['uniqueid']) for sa in bed.ike_sas(site) if sa['peer'] != new_site) == sas_before[site]
                           for site in sas_before)
            add_phases, add_connect = phase_row(add_seconds, task_seconds(log), runs(state_dir))
            row['addition'] = dict(
                seconds=round(add_seconds, 3), phases_s=add_phases, verified=add_connect['verify']['ok'],
                keyed_now=common.keyed_now(output), served_links_grown=grown,
                only_new_links_keyed=common.keyed_now(output) == ['site-%03d--%s' % (i, new_site) for i in range(1, sites + 1)]
                and all(new_site.upper() in link for link in grown) and len(grown) == sites,
                existing_sas_kept=survived, links_started=sorted(add_connect['initiate']))
    finally:
        started = time.perf_counter()
        log = os.path.join(workdir, 'n%d-down.log' % sites)
        playbook(DOWN, dict(testbed_state_dir=state_dir, testbed_prefix=PREFIX), log)
        row['down_s'] = round(time.perf_counter() - started, 3)
        row['left_after_down'] = common.left_behind(Testbed(state_dir, PREFIX).status())
    return row


def measure_push(sites, workdir):
    """testbed_up.yml in push mode (full_mesh.yml's per-site strongswan_site role over VICI), from nothing."""
    state_dir = os.path.join(workdir, 'push%d' % sites)
    common.note('N=%d: testbed_up.yml, push mode' % sites)
    row = dict(sites=sites, links=sites * (sites - 1) // 2)
    try:
        log = os.path.join(workdir, 'push%d-up.log' % sites)
        up_seconds, output = playbook(UP, dict(testbed_sites=sites, testbed_state_dir=state_dir, testbed_prefix=PREFIX,
                                               qsafe_mode='push'), log)
        connect = [r for r in runs(state_dir) if r['command'] == 'connect'][-1]
        tasks = task_seconds(log)
        row.update(up_s=round(up_seconds, 3), verified=connect['verify']['ok'], keyed_now=len(common.keyed_now(output) or []),
                   keying_s=round(sum(v for k, v in tasks.items() if k.startswith('Key every link')), 3),
                   site_configuration_s=round(sum(v for k, v in tasks.items() if not k.startswith('Key every link')
                                                  and 'testbed' not in k and k not in ('Inputs', 'Start time')), 3))
    finally:
        playbook(DOWN, dict(testbed_state_dir=state_dir, testbed_prefix=PREFIX), os.path.join(workdir, 'push%d-down.log' % sites))
        row['left_after_down'] = common.left_behind(Testbed(state_dir, PREFIX).status())
    return row


def markdown(results):
    lines = ['## Live testbed: up time, tunnel set-up, node addition', '',
             common.machine_line(results['machine']), '',
             'benchmarks/bench_testbed.py: playbooks/testbed_up.yml in render mode (full_mesh.yml keys every link and renders '
             'every site in one task; the testbed loads the files into every charon and starts every link in parallel), '
             'N sites as network namespaces with real charons (user-space ESP, kernel-libipsec). "Up" is the whole '
             'ansible-playbook run, from start to every pair pinging through its tunnel with ppk=yes on every IKE SA. '
             'Target: N=10 within %.0f s, set-up p50 <= %.0f ms.' % (TARGET_UP_SECONDS_AT_10, TARGET_SETUP_P50_MS), '',
             '| N | load avg | links | up (s) | namespaces | charons | qkdsim | keying | render | load | initiate | verify | ansible & rest |'
             ' set-up p50 / p99 (charon, ms) | swanctl --initiate p50 / p99 (ms) | down (s) | left |',
             '|' + ' --- |' * 17]
    for row in results['runs']:
        p = row['phases_s']
        lines.append('| %d | %.1f | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f / %.0f | %.0f / %.0f | %.2f | %s |' % (
            row['sites'], row['load_before'], row['links'], row['up_s'], p['namespaces'], p['charons'], p['qkdsim'], p['keying'], p['render'],
            p['load'], p['initiate'], p['verify'], p['ansible_and_rest'], row['setup_charon_summary_ms']['p50'],
            row['setup_charon_summary_ms']['p99'], row['setup_swanctl_summary_ms']['p50'], row['setup_swanctl_summary_ms']['p99'],
            row['down_s'], 'nothing' if not row['left_after_down'] else row['left_after_down']))
    lines += ['', 'Set-up (charon) is the initiator\'s log from "initiating IKE_SA" to "CHILD_SA established" (IKE_SA_INIT '
              'and IKE_AUTH with the PPK); swanctl --initiate is the wall time of each initiate command, all links started '
              'at once from 16 threads (at most 4 at a time into one charon) on 2 cores, so it includes the queueing. '
              '"load avg" is the 1-minute load average just before the run: this 2-core machine is shared, and "ansible & rest" '
              '(ansible-playbook start-up and its per-task overhead) grows with it.', '',
              '| N | add site N+1 (s) | keying | links keyed | only the new links keyed (keyed_now and QKD keys served) |'
              ' existing IKE SAs kept |', '|' + ' --- |' * 6]
    for row in results['runs']:
        add = row.get('addition')
        if add:
            values = (row['sites'], add['seconds'], add['phases_s']['keying'], len(add['keyed_now'] or []),
                      add['only_new_links_keyed'], add['existing_sas_kept'])
            lines.append('| %d | %.2f | %.2f | %d | %s | %s |' % values)
    for row in results.get('push', []):
        lines += ['', 'Push mode (testbed_up.yml -e qsafe_mode=push: full_mesh.yml runs the strongswan_site role per site, '
                  'which loads its files over VICI and starts its links, as on real Linux sites), N=%d from nothing: '
                  'up %.2f s (keying %.2f s), verified %s, left after down: %s.' % (
                      row['sites'], row['up_s'], row['keying_s'], row['verified'], row['left_after_down'] or 'nothing')]
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--sites', default='3,5,10,20', help='comma-separated site counts (default 3,5,10,20)')
    parser.add_argument('--no-addition', action='store_true', help='skip the node-addition run')
    parser.add_argument('--push-sites', default='3', help='site counts to bring up in push mode too (default 3; empty: none)')
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        common.note('bench_testbed: skipped: ' + reason)
        return 0
    workdir = tempfile.mkdtemp(prefix='qsafe-bench-testbed-')
    results = dict(machine=common.machine_description(), runs=[], workdir=workdir)
    try:
        for sites in [int(n) for n in args.sites.split(',')]:
            results['runs'].append(measure(sites, workdir, not args.no_addition))
            row = results['runs'][-1]
            common.note('N=%d: up %.2f s, set-up p50 %.0f ms, verified %s, down %.2f s' % (
                sites, row['up_s'], row['setup_charon_summary_ms']['p50'], row['verified'], row['down_s']))
        results['push'] = [measure_push(int(n), workdir) for n in args.push_sites.split(',') if n]
    finally:
        path = common.save_results('testbed', results)
        common.note('results: ' + path)
    if results['runs']:
        common.replace_section('testbed', markdown(results))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
