#!/usr/bin/env python
"""Turn the testbed's raw results into tables and plots in docs/testbed.md and docs/img/.

From benchmarks/results/testbed_faults.json (bench_testbed_faults.py): docs/img/testbed-key-latency.svg
(per-link key-distribution latency by phase against N), docs/img/testbed-lookup-wall.svg (one
hybrid_key call for the whole mesh against the number of links) and the section between the markers
``<!-- testbed-faults:start -->`` and ``<!-- testbed-faults:end -->``.

From benchmarks/results/testbed.json (bench_testbed.py): docs/img/testbed-up-phases.svg (up time by
phase against N: the orchestration overhead), docs/img/testbed-setup-spread.svg (tunnel set-up time
per link, p50/p90/max, per N) and docs/img/testbed-node-addition.svg (adding site N+1 against N), and
the section between ``<!-- testbed-orchestration:start -->`` and ``<!-- testbed-orchestration:end -->``.

The rest of the page is left as it is; a missing results file leaves its section and plots alone.
The plots are drawn with matplotlib (Agg backend, SVG with text kept as text); a fixed hash salt and
no date in the SVG metadata make a rerun on the same data write the same bytes.

    .venv/bin/python benchmarks/plot_testbed.py [--results FILE] [--testbed-results FILE] [--img-dir DIR] [--page FILE]
"""

import argparse
import json
import math
import os
import re
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.patches import Patch  # noqa: E402

import common  # noqa: E402

TESTBED_MD = os.path.join(common.REPO_ROOT, 'docs', 'testbed.md')
IMG_DIR = os.path.join(common.REPO_ROOT, 'docs', 'img')
MARKER = 'testbed-faults'
ORCHESTRATION_MARKER = 'testbed-orchestration'
# bench_testbed.py's phases of one testbed_up.yml run, grouped for the plot (label, phases, colour)
UP_PARTS = (('namespaces, bridge, charons', ('namespaces', 'charons'), '#8c564b'),
            ('qkdsim (re)start', ('qkdsim',), '#c49c94'),
            ('keying: one hybrid_key call', ('keying',), '#1f77b4'),
            ('render: mesh_render', ('render',), '#6baed6'),
            ('load + initiate into the charons', ('load', 'initiate'), '#2ca02c'),
            ('verify (SAs, ppk=yes, pings)', ('verify',), '#98df8a'),
            ('ansible-playbook start-up and per-task', ('ansible_and_rest',), '#ff7f0e'))
TARGET_UP_SECONDS_AT_10 = 15.0      # the targets (bench_testbed.py checks them too)
TARGET_SETUP_P50_MS = 50.0
PARTS = (('qkd_master', 'QKD master (enc_keys)', '#1f77b4'), ('qkd_slave', 'QKD slave (dec_keys)', '#6baed6'),
         ('pqc', 'ML-KEM-768', '#2ca02c'), ('classical', 'X25519', '#98df8a'), ('mix', 'CatKDF both ends + confirmation', '#ff7f0e'))
TARGET_COLOUR = '#d62728'
# Reproducible SVGs: ids from a fixed salt, text as <text> (no glyph paths), no date in the metadata.
STYLE = {'svg.hashsalt': 'qsafe.keyfabric', 'svg.fonttype': 'none', 'font.family': 'DejaVu Sans', 'font.size': 10,
         'axes.grid': True, 'axes.grid.axis': 'y', 'grid.color': '#dddddd', 'axes.axisbelow': True,
         'axes.spines.top': False, 'axes.spines.right': False}


# --- plots --------------------------------------------------------------------------------------

def _figure(title, width=8.8, height=4.3):
    figure, axis = plt.subplots(figsize=(width, height))
    figure.suptitle(title, fontweight='bold')
    return figure, axis


def _save(figure, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format='svg', bbox_inches='tight', metadata={'Date': None})
    plt.close(figure)


def _n_labels(axis, rows, caption=lambda row: '%d links' % row['links']):
    axis.set_xticks(range(len(rows)), ['N=%d\n%s' % (row['sites'], caption(row)) for row in rows])


def _stacked(axis, columns, width=0.5):
    """One stacked bar per x (0, 1, ...); ``columns`` is a list of (values in order, colours)."""
    for x, (values, colours) in enumerate(columns):
        base = 0.0
        for value, colour in zip(values, colours):
            axis.bar(x, value, width, bottom=base, color=colour)
            base += value


def _part_values(phases):
    return [sum(phases.get(name, 0.0) for name in names) for unused_label, names, unused_colour in UP_PARTS]


def _up_parts_legend(axis, extra=()):
    handles = [Patch(color=colour, label=label) for label, unused, colour in reversed(UP_PARTS)] + list(extra)
    axis.legend(handles=handles, loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)


def latency_plot(rows, path):
    """Stacked bars: p50 per phase of one link's keying (workers=1), per N; a tick at the p99 total."""
    with plt.rc_context(STYLE):
        figure, axis = _figure('Key distribution per link against N (p50 per phase, workers=1)')
        summaries = [row['workers_1']['summary_ms'] for row in rows]
        _stacked(axis, [([summary[phase]['p50'] for phase, unused, unused_colour in PARTS],
                         [colour for unused, unused_label, colour in PARTS]) for summary in summaries])
        for x, summary in enumerate(summaries):
            total = summary['total']
            axis.hlines(total['p99'], x - 0.3, x + 0.3, colors='black', linewidth=2)
            axis.annotate('p99 %.1f' % total['p99'], (x, total['p99']), textcoords='offset points', xytext=(0, 4),
                          ha='center', fontsize=8)
            axis.annotate('%.1f' % total['p50'], (x + 0.25, total['p50']), textcoords='offset points', xytext=(4, -3),
                          fontsize=8)
        _n_labels(axis, rows)
        axis.set_ylabel('milliseconds per link')
        axis.set_ylim(0, max(summary['total']['p99'] for summary in summaries) * 1.15)
        handles = [Patch(color=colour, label=label) for unused, label, colour in reversed(PARTS)]
        handles.append(plt.Line2D([], [], color='black', linewidth=2, label='p99 of the total'))
        axis.legend(handles=handles, loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9,
                    title='bars: p50 of each part;\nnumber: p50 of the total', title_fontsize=9)
        _save(figure, path)


def wall_plot(rows, path):
    """Lines: seconds of one hybrid_key call for the whole mesh against links, workers 1 and 4."""
    with plt.rc_context(STYLE):
        figure, axis = _figure('One hybrid_key call keys the whole mesh: wall time against links', width=7.6, height=4.0)
        links = [row['links'] for row in rows]
        labelled = []   # crowded points (a few links at the left) carry no labels
        for row in rows:
            if not labelled or row['links'] - labelled[-1]['links'] >= 0.06 * max(links):
                labelled.append(row)
        for workers, colour, offset in ((1, '#1f77b4', -12), (4, TARGET_COLOUR, 6)):
            seconds = [row['workers_%d' % workers]['lookup_s'] for row in rows]
            axis.plot(links, seconds, marker='o', markersize=4, color=colour, linewidth=2, label='workers=%d' % workers)
            for row in labelled:
                value = row['workers_%d' % workers]['lookup_s']
                axis.annotate('%.2f' % value, (row['links'], value), textcoords='offset points', xytext=(5, offset), fontsize=8)
        axis.set_xticks([row['links'] for row in labelled], ['%d\nN=%d' % (row['links'], row['sites']) for row in labelled])
        axis.set_xlabel('links keyed (N sites, full mesh)')
        axis.set_ylabel('seconds (whole call)')
        axis.set_ylim(0, max(max(row['workers_1']['lookup_s'], row['workers_4']['lookup_s']) for row in rows) * 1.15)
        axis.legend(loc='upper left', frameon=False)
        _save(figure, path)


def _orchestration_bars(axis, rows, phases_of, total_of, caption):
    """Stacked phase bars with the run's total above each; returns the highest bar or total."""
    _stacked(axis, [(_part_values(phases_of(row)), [colour for unused, unused_phases, colour in UP_PARTS]) for row in rows])
    for x, row in enumerate(rows):
        axis.annotate('%.1f s' % total_of(row), (x, total_of(row)), textcoords='offset points', xytext=(0, 4), ha='center',
                      fontsize=9, fontweight='bold')
    _n_labels(axis, rows, caption)
    axis.set_ylabel('seconds, whole ansible-playbook run')
    return max(max(total_of(row), sum(_part_values(phases_of(row)))) for row in rows)


def up_phases_plot(runs, path):
    """Stacked bars: one testbed_up.yml run from nothing (render mode) by phase, per N; the target at N=10."""
    with plt.rc_context(STYLE):
        figure, axis = _figure('Testbed up and verified against N: where the time goes (render mode)')
        highest = _orchestration_bars(axis, runs, lambda row: row['phases_s'], lambda row: row['up_s'],
                                      lambda row: '%d links' % row['links'])
        axis.axhline(TARGET_UP_SECONDS_AT_10, color=TARGET_COLOUR, linestyle='--', linewidth=1)
        axis.annotate('target at N=10: %.0f s' % TARGET_UP_SECONDS_AT_10, (0.0, TARGET_UP_SECONDS_AT_10),
                      xycoords=('axes fraction', 'data'), textcoords='offset points', xytext=(4, 4), fontsize=8)
        axis.set_ylim(0, max(highest, TARGET_UP_SECONDS_AT_10) * 1.15)
        load = Patch(color='none', label='load average before each run:\n%s\n(2 cores, shared)' % ', '.join(
            'N=%d: %.1f' % (row['sites'], row['load_before']) for row in runs))
        _up_parts_legend(axis, [load])
        _save(figure, path)


def setup_spread_plot(runs, path):
    """Per N, the spread of per-link tunnel set-up: a box from p50 to p90 and a whisker to the max, for the
    charon log (IKE_SA_INIT + IKE_AUTH with the PPK) and for swanctl --initiate (with the queueing)."""
    measures = (('setup_charon_ms', 'charon log: initiating IKE_SA\nto CHILD_SA established', '#1f77b4'),
                ('setup_swanctl_ms', 'swanctl --initiate wall time\n(all links at once)', '#ff7f0e'))
    with plt.rc_context(STYLE):
        figure, axis = _figure('Tunnel set-up time per link against N: p50, p90, max')
        width = 0.3
        for number, (key, unused_label, colour) in enumerate(measures):
            for index, row in enumerate(runs):
                samples = [value / 1000.0 for value in row[key].values()]
                p50, p90, top = (common.percentile(samples, 0.5) * 1000, common.percentile(samples, 0.9) * 1000,
                                 max(samples) * 1000)
                x = index + (number - 0.5) * (width + 0.06)
                axis.vlines(x, p90, top, colors=colour, linewidth=1.5)
                axis.hlines(top, x - width / 4, x + width / 4, colors=colour, linewidth=1.5)
                axis.bar(x, max(p90 - p50, 0.5), width, bottom=p50, color=colour, alpha=0.35, edgecolor=colour)
                axis.hlines(p50, x - width / 2, x + width / 2, colors=colour, linewidth=3)
                axis.annotate('%.0f' % top, (x, top), textcoords='offset points', xytext=(0, 3), ha='center', fontsize=7)
                axis.annotate('%.0f' % p50, (x + (width / 2 if number else -width / 2), p50), textcoords='offset points',
                              xytext=(3 if number else -3, -3), ha='left' if number else 'right', fontsize=7)
        axis.axhline(TARGET_SETUP_P50_MS, color=TARGET_COLOUR, linestyle='--', linewidth=1)
        axis.annotate('target: p50 <= %.0f ms' % TARGET_SETUP_P50_MS, (0.0, TARGET_SETUP_P50_MS),
                      xycoords=('axes fraction', 'data'), textcoords='offset points', xytext=(4, 4), fontsize=8)
        _n_labels(axis, runs)
        highest = max(max(row[key].values()) for row in runs for key, unused, unused_colour in measures)
        axis.set_ylim(0, 100.0 * math.ceil(highest * 1.1 / 100.0))
        axis.set_ylabel('milliseconds per link')
        handles = [Patch(facecolor=colour, alpha=0.35, edgecolor=colour, label=label) for unused, label, colour in measures]
        handles.append(Patch(color='none', label='thick line: p50 (number)\nbox: p50 to p90\nwhisker: max (number)'))
        axis.legend(handles=handles, loc='upper left', bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
        _save(figure, path)


def addition_plot(runs, path):
    """Stacked bars: adding site N+1 to a running N-site mesh (testbed_up.yml with N+1), by phase."""
    rows = [row for row in runs if row.get('addition')]

    def caption(row):
        add = row['addition']
        ok = add.get('only_new_links_keyed') and add.get('existing_sas_kept')
        return 'to N+1: %d new links\nkeyed %d%s' % (row['sites'], len(add.get('keyed_now') or []), ', only these' if ok else '')

    with plt.rc_context(STYLE):
        figure, axis = _figure('Adding one site to a running mesh: time against N (N new links)')
        highest = _orchestration_bars(axis, rows, lambda row: row['addition']['phases_s'],
                                      lambda row: row['addition']['seconds'], caption)
        axis.set_ylim(0, highest * 1.2)
        _up_parts_legend(axis)
        _save(figure, path)


def orchestration_section(results):
    runs = results['runs']
    by_n = dict((row['sites'], row) for row in runs)
    biggest, smallest = runs[-1], runs[0]
    fixed = biggest['phases_s']['ansible_and_rest']
    lines = ['## Measured: orchestration against N (plots)', '',
             common.machine_line(results['machine']) + ' Raw data: `benchmarks/results/testbed.json`, from '
             '`benchmarks/bench_testbed.py` (its tables are in docs/benchmarks.md, "Live testbed"); plots from '
             '`benchmarks/plot_testbed.py`. The machine has two cores shared with other work: the 1-minute load '
             'average before each run was %s.' % ', '.join('%.1f (N=%d)' % (row['load_before'], row['sites']) for row in runs),
             '', '![Testbed up time by phase against N](img/testbed-up-phases.svg)', '',
             'A fresh testbed, from nothing to every pair pinging through its tunnel with ppk=yes, in render mode. '
             'The largest part at every N is ansible-playbook itself (start-up and per-task overhead, which also follows '
             'the load average: %.1f s at N=%d, %.1f s at N=%d); what grows with the N(N-1)/2 links is keying, rendering '
             'and starting the tunnels (%.1f s together at N=%d, %.1f s at N=%d).' % (
                 smallest['phases_s']['ansible_and_rest'], smallest['sites'], fixed, biggest['sites'],
                 sum(smallest['phases_s'][name] for name in ('keying', 'render', 'load', 'initiate')), smallest['sites'],
                 sum(biggest['phases_s'][name] for name in ('keying', 'render', 'load', 'initiate')), biggest['sites'])]
    if 10 in by_n:
        lines[-1] += ' N=10 was up in %.1f s (target %.0f s).' % (by_n[10]['up_s'], TARGET_UP_SECONDS_AT_10)
    charon_p50 = ', '.join('%.0f' % common.percentile(list(row['setup_charon_ms'].values()), 0.5) for row in runs)
    swanctl_p50 = ', '.join('%.0f' % common.percentile(list(row['setup_swanctl_ms'].values()), 0.5) for row in runs)
    lines += ['', '![Tunnel set-up time per link against N](img/testbed-setup-spread.svg)', '',
              'The IKE exchanges themselves (charon log) stay near their own cost as N grows: p50 %s ms for N = %s; '
              'the tail (max) is scheduling on two busy cores. The initiate command\'s wall time (p50 %s ms) grows with '
              'N because all links are started at once and queue for the two cores and the four initiates allowed '
              'into one charon at a time.' % (charon_p50, ', '.join(str(row['sites']) for row in runs), swanctl_p50)]
    added = [row for row in runs if row.get('addition')]
    if added:
        lines += ['', '![Adding one site against N](img/testbed-node-addition.svg)', '',
                  'Adding site N+1 to a running N-site mesh keys only its N new links (%s) and keeps every existing IKE SA '
                  '(%s); its time (%s s) is half or more ansible-playbook\'s own cost, as in a fresh run; what grows with N '
                  'is rendering every site again (each gains a peer), the simulator restart with the larger topology and '
                  'keying the N new links.' % (
                      'checked at every N' if all(row['addition']['only_new_links_keyed'] for row in added) else 'NOT at every N',
                      'checked at every N' if all(row['addition']['existing_sas_kept'] for row in added) else 'NOT at every N',
                      ', '.join('%.1f' % row['addition']['seconds'] for row in added))]
    return '\n'.join(lines)


# --- Markdown -----------------------------------------------------------------------------------

def latency_table(rows):
    lines = ['| N | links | QKD master p50 | QKD slave p50 | ML-KEM p50 | X25519 p50 | mix p50 | total p50 / p99 (ms) |'
             ' whole call, workers=1 / 4 (s) | whole call / links, workers=4 (ms) |', '|' + ' --- |' * 10]
    for row in rows:
        summary = row['workers_1']['summary_ms']
        lines.append('| %d | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f / %.1f | %.2f / %.2f | %.1f |' % (
            row['sites'], row['links'], summary['qkd_master']['p50'], summary['qkd_slave']['p50'], summary['pqc']['p50'],
            summary['classical']['p50'], summary['mix']['p50'], summary['total']['p50'], summary['total']['p99'],
            row['workers_1']['lookup_s'], row['workers_4']['lookup_s'], row['workers_4']['lookup_s'] * 1000 / row['links']))
    return lines


def failures_table(rows):
    lines = ['| fault | on_missing | run | links hit | keyed (of %d) | degraded | what the run said (first words) | seconds |'
             % rows[0]['links'], '|' + ' --- |' * 8]
    for row in rows:
        if row['rc'] == 0:
            hit = row.get('degraded') or []
            said = next(iter(next(iter(row.get('alarms', {}).values()), [])), '')
            outcome, keyed, degraded = 'ok', row['links'], len(hit)
        else:
            hit = row.get('failed') or []
            said = row.get('message', '')
            outcome, keyed, degraded = 'failed', row.get('others_keyed', 0), 0
        lines.append('| %s | %s | %s | %d | %d | %d | %s | %.2f |' % (
            row['fault'], row['on_missing'], outcome, len(hit), keyed, degraded,
            escape_cell(said[:170] + ('...' if len(said) > 170 else '')), row['seconds']))
    return lines


def sites_of(links):
    """N of a full mesh of ``links`` links (links = N(N-1)/2)."""
    return int(round((1 + (1 + 8 * links) ** 0.5) / 2))


def escape_cell(text):
    return text.replace('|', '\\|').replace('\n', ' ')


def live_lines(live):
    if not live:
        return ['Not measured yet (`bench_testbed_faults.py --sections live`, as root).']
    if live.get('skipped'):
        return ['Skipped on the machine of the last run: %s.' % live['skipped']]
    if live.get('error'):
        return ['The last run failed: %s' % escape_cell(live['error'][:500])]
    lines = ['Testbed of %d sites (%d tunnels), push mode, up in %.1f s.' % (live['sites'], live['links'], live['up_s']), '',
             '| measurement | result |', '| --- | --- |']
    throughput = live.get('throughput') or {}
    if 'mbit_s' in throughput:
        lines.append('| TCP through one tunnel (%s -> %s, one stream, %.0f s) | **%.1f Mbit/s** (%s); the receiver\'s CHILD_SA '
                     'counted %s inbound ESP packets meanwhile |' % (
                         throughput['sender'], throughput['receiver'], throughput['seconds'], throughput['mbit_s'],
                         throughput['esp'], throughput.get('child_sa_packets_in', 'no count of')))
    elif throughput:
        lines.append('| TCP through one tunnel | failed: %s |' % escape_cell(throughput.get('error', '?')))
    rotation = live.get('rotation')
    if rotation:
        lines.append('| mesh-wide PPK rotation (push mode, make-before-break) under ICMP echoes every %.0f ms on every pair |'
                     ' run %s in %.1f s; %d links re-keyed; **%d of %d echoes lost**; tunnels verified after: %s |' % (
                         rotation['interval_s'] * 1000, 'ok' if rotation['rc'] == 0 else 'FAILED (exit %d)' % rotation['rc'],
                         rotation['seconds'], len(rotation['links_rotated']), rotation['lost'], rotation['sent'],
                         rotation['verified']))
    alarm = live.get('alarm_during_rotation')
    if alarm:
        message = alarm['message']
        said = message[:message.index(' refuses the key') + 16] if ' refuses the key' in message else message[:160]
        cause = message[message.index('QKD link '):].split(';')[0] if 'QKD link ' in message else ''
        lines.append('| QBER alarm on QKD link %s during a rotation (policy qkd+pqc, on_missing=fail) | run %s in %.1f s: '
                     '"%s ... %s"; echoes lost during it: %d of %d; every tunnel still up and verified after: %s |' % (
                         alarm['qkd_link'], 'failed as it must' if alarm['rc'] != 0 else 'succeeded (unexpected)',
                         alarm['seconds'], escape_cell(said), escape_cell(cause), alarm['pings_lost'], alarm['pings_sent'],
                         alarm['tunnels_after']['ok']))
    down = live.get('down')
    if down:
        lines.append('| testbed_down.yml | %.1f s, left behind: %s |' % (down['seconds'], live.get('left_after_down') or 'nothing'))
    return lines


def degrade_lines(degrade):
    """The live on_missing=degrade measurement (bench_testbed_faults.py --sections degrade)."""
    if not degrade:
        return ['Not measured yet (`bench_testbed_faults.py --sections degrade`, as root).']
    if degrade.get('skipped'):
        return ['Skipped on the machine of the last run: %s.' % degrade['skipped']]
    if degrade.get('error'):
        return ['The last run failed: %s' % escape_cell(degrade['error'][:500])]
    lines = ['Testbed of %d sites (%d tunnels), push mode, `testbed_policy: %s`, up in %.1f s. Each run below is '
             'testbed_up.yml while every pair exchanges ICMP echoes every %.0f ms; "re-keyed" are the links whose PPK '
             'changed, with the sources of their new key from the key store (never the key).' % (
                 degrade['sites'], degrade['links'], json.dumps(degrade['policy'], sort_keys=True), degrade['up_s'],
                 degrade['interval_s'] * 1000), '',
             '| run | fault during it | result | re-keyed | from ML-KEM + X25519 only (degraded, alarm) | with QKD |'
             ' alarm (first words) | echoes lost | tunnels verified after |', '|' + ' --- |' * 9]
    for key, what in (('kme_down_drop', 'rotation'), ('qber_alarm', 'rotation'), ('recovered', 'run without rotation')):
        step = degrade.get(key)
        if not step:
            continue
        alarm = next(iter(next(iter(step['alarms'].values()), [])), '') if step['alarms'] else ''
        lines.append('| %s | %s | %s in %.1f s | %d | %d: %s | %d | %s | **%d of %d** | %s |' % (
            what, escape_cell(step['fault']), 'ok' if step['rc'] == 0 else 'FAILED (exit %d)' % step['rc'], step['seconds'],
            len(step['rekeyed']), len(step['degraded']), ', '.join(step['degraded']) or '-', len(step['rekeyed_with_qkd']),
            escape_cell(alarm[:150] + ('...' if len(alarm) > 150 else '')) or '-', step['pings_lost'], step['pings_sent'],
            step['verify']['ok']))
    failures = []
    for key in ('kme_down_drop', 'qber_alarm', 'recovered'):
        step = degrade.get(key) or {}
        if step.get('rc'):
            failures.append('%s: %s' % (key, first_failure(step.get('output', ''))))
        if step and not step['verify']['ok']:
            failures.append('%s: verify after it: %s' % (key, '; '.join(step['verify']['problems'][:2])))
    if failures:
        lines += ['', 'Where a run failed, a failed task from the recorded tail of its output (and what the verification '
                  'found after it):', '']
        lines += ['- %s' % escape_cell(failure) for failure in failures]
    down = degrade.get('down')
    if down:
        lines += ['', 'testbed_down.yml: %.1f s, left behind: %s.' % (down['seconds'], degrade.get('left_after_down') or 'nothing')]
    return lines


def first_failure(output):
    """The message of the first failed task in an ansible-playbook output, state-directory paths shortened."""
    match = re.search(r'fatal: \[([^\]]+)\]: FAILED! => \{.*?"msg": "((?:[^"\\]|\\.){0,400})', output, re.S)
    if not match:
        return 'no failed task in the recorded output'
    return '%s: %s' % (match.group(1), re.sub(r'/tmp/qsafe-bench-faults-[^/\s]+/', '<state>/', match.group(2)))


def section(results):
    lines = ['## Measured: key distribution, faults, throughput, rotation', '',
             common.machine_line(results['machine']) + measured_line(results.get('measured')) +
             ' Raw data: `benchmarks/results/testbed_faults.json`, from `benchmarks/bench_testbed_faults.py`; tables and '
             'plots from `benchmarks/plot_testbed.py`. Other benchmarks and tests shared the two cores during these runs.', '']
    rows = results.get('latency') or []
    if rows:
        lines += ['### Key distribution per link against N', '',
                  'One `hybrid_key` call keys every link of an N-site full mesh (the testbed\'s QKD topology: a '
                  'QKD link per pair) against the simulator, through ansible-playbook. Each link returns `timings_ms`; '
                  'the parts below are its p50s in milliseconds, with workers=1 (each link alone: the latency of one '
                  'link). "Whole call" is the wall time of the lookup task for the whole mesh, with workers=1 and '
                  'with the default 4. Delivery into the two charons is the testbed\'s load time (section above).', '',
                  '![Key distribution per link against N](img/testbed-key-latency.svg)', '']
        lines += latency_table(rows)
        lines += ['', '![Whole-mesh keying time against links](img/testbed-lookup-wall.svg)', '']
    failures = results.get('failures') or []
    if failures:
        lines += ['### Faults: the link policy applies, the other links are keyed', '',
                  'A %d-site mesh (%d links, policy `{require: [qkd, pqc], on_missing: ...}`, key store on); each fault '
                  'set over the simulator\'s control socket before one `hybrid_key` call and cleared after it. '
                  '"Links hit" are the links the run failed or degraded; "keyed" counts the links with a key afterwards '
                  '(stored, so a re-run spends no key on them). The client\'s defaults apply (3 retries, backoff 0.5 s '
                  'doubling), which is most of the seconds of a run with a fault.' % (
                      sites_of(failures[0]['links']), failures[0]['links']), '']
        lines += failures_table(failures)
    lines += ['', '### Live testbed: throughput, rotation under traffic, a fault during rotation', '']
    lines += live_lines(results.get('live'))
    lines += ['', '### Live testbed under on_missing=degrade: faults during rotations', '']
    lines += degrade_lines(results.get('degrade'))
    return '\n'.join(lines)


def measured_line(measured):
    if not measured:
        return ''
    return ' Sections measured: %s.' % ', '.join('%s %s' % item for item in sorted(measured.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--results', default=os.path.join(common.RESULTS_DIR, 'testbed_faults.json'),
                        help="bench_testbed_faults.py's results (key distribution, faults, live testbed)")
    parser.add_argument('--testbed-results', default=os.path.join(common.RESULTS_DIR, 'testbed.json'),
                        help="bench_testbed.py's results (up time, set-up, node addition against N)")
    parser.add_argument('--img-dir', default=IMG_DIR, help='where the SVGs go (default docs/img)')
    parser.add_argument('--page', default=TESTBED_MD, help='the page whose sections are replaced (default docs/testbed.md)')
    args = parser.parse_args(argv)
    written = []
    try:
        with open(args.testbed_results) as handle:
            testbed = json.load(handle)
    except (OSError, ValueError) as exc:
        common.note('plot_testbed: orchestration plots and section left as they are: cannot read %s: %s '
                    '(run benchmarks/bench_testbed.py)' % (args.testbed_results, exc))
    else:
        runs = sorted((row for row in testbed.get('runs') or [] if row.get('verified')), key=lambda row: row['sites'])
        if runs:
            up_phases_plot(runs, os.path.join(args.img_dir, 'testbed-up-phases.svg'))
            setup_spread_plot(runs, os.path.join(args.img_dir, 'testbed-setup-spread.svg'))
            written += ['testbed-up-phases.svg', 'testbed-setup-spread.svg']
            if any(row.get('addition') for row in runs):
                addition_plot(runs, os.path.join(args.img_dir, 'testbed-node-addition.svg'))
                written.append('testbed-node-addition.svg')
            common.replace_section(ORCHESTRATION_MARKER, orchestration_section(dict(testbed, runs=runs)), args.page)
            written.append('%s section' % ORCHESTRATION_MARKER)
    try:
        with open(args.results) as handle:
            results = json.load(handle)
    except (OSError, ValueError) as exc:
        common.note('plot_testbed: key-distribution plots and section left as they are: cannot read %s: %s '
                    '(run benchmarks/bench_testbed_faults.py)' % (args.results, exc))
    else:
        rows = results.get('latency') or []
        if rows:
            latency_plot(rows, os.path.join(args.img_dir, 'testbed-key-latency.svg'))
            wall_plot(rows, os.path.join(args.img_dir, 'testbed-lookup-wall.svg'))
            written += ['testbed-key-latency.svg', 'testbed-lookup-wall.svg']
        common.replace_section(MARKER, section(results), args.page)
        written.append('%s section' % MARKER)
    common.note('plot_testbed: wrote %s' % (', '.join(written) or 'nothing'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
