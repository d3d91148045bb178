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

The rest of the page is left as it is; a missing results file leaves its section alone. The SVGs are
written by hand (no plotting library needed).

    .venv/bin/python benchmarks/plot_testbed.py [--results FILE] [--testbed-results FILE]
"""

import argparse
import json
import math
import os
import re
import sys
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
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


# --- SVG ----------------------------------------------------------------------------------------

class Svg:
    """A tiny SVG writer: a plot area with axes, ticks and a legend."""

    def __init__(self, width, height, title):
        self.width, self.height = width, height
        self.items = ['<rect width="%d" height="%d" fill="white"/>' % (width, height),
                      self.text(width / 2, 24, title, size=15, anchor='middle', weight='bold')]

    @staticmethod
    def text(x, y, content, size=12, anchor='start', weight='normal', rotate=None):
        transform = ' transform="rotate(%d %.1f %.1f)"' % (rotate, x, y) if rotate else ''
        return ('<text x="%.1f" y="%.1f" font-family="DejaVu Sans, Arial, sans-serif" font-size="%d" text-anchor="%s" '
                'font-weight="%s"%s>%s</text>' % (x, y, size, anchor, weight, transform, escape(str(content))))

    def add(self, item):
        self.items.append(item)

    def save(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as handle:
            handle.write('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">\n'
                         % (self.width, self.height, self.width, self.height))
            handle.write('\n'.join(self.items))
            handle.write('\n</svg>\n')


def nice_max(value):
    """A round axis maximum at or above ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10.0 if value >= 1 else 0.1
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def axes(svg, left, top, width, height, y_max, y_label, ticks=5):
    svg.add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, top + height, left + width, top + height))
    svg.add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, top, left, top + height))
    for index in range(ticks + 1):
        value = y_max * index / ticks
        y = top + height - height * index / ticks
        svg.add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#dddddd"/>' % (left, y, left + width, y))
        svg.add(svg.text(left - 6, y + 4, ('%g' % round(value, 2)), size=11, anchor='end'))
    svg.add(svg.text(18, top + height / 2, y_label, size=12, anchor='middle', rotate=-90))


def latency_plot(rows, path):
    """Stacked bars: p50 per phase of one link's keying (workers=1), per N; a tick at the p99 total."""
    svg = Svg(840, 420, 'Key distribution per link against N (p50 per phase, workers=1)')
    left, top, width, height = 70, 50, 470, 310
    y_max = nice_max(max(row['workers_1']['summary_ms']['total']['p99'] for row in rows) * 1.05)
    axes(svg, left, top, width, height, y_max, 'milliseconds per link')
    slot = width / len(rows)
    bar_width = min(60, slot * 0.5)
    for index, row in enumerate(rows):
        summary = row['workers_1']['summary_ms']
        x = left + slot * index + (slot - bar_width) / 2
        base = 0.0
        for phase, unused_label, colour in PARTS:
            value = summary[phase]['p50']
            y = top + height - height * (base + value) / y_max
            svg.add('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>'
                    % (x, y, bar_width, height * value / y_max, colour))
            base += value
        p99 = top + height - height * summary['total']['p99'] / y_max
        p50 = top + height - height * summary['total']['p50'] / y_max
        svg.add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black" stroke-width="2"/>' % (x - 4, p99, x + bar_width + 4, p99))
        svg.add(svg.text(x + bar_width / 2, p99 - 5, 'p99 %.1f' % summary['total']['p99'], size=10, anchor='middle'))
        svg.add(svg.text(x + bar_width + 6, p50 + 4, '%.1f' % summary['total']['p50'], size=10))
        svg.add(svg.text(x + bar_width / 2, top + height + 18, 'N=%d' % row['sites'], size=12, anchor='middle'))
        svg.add(svg.text(x + bar_width / 2, top + height + 33, '%d links' % row['links'], size=10, anchor='middle'))
    legend_x, legend_y = left + width + 20, top + 10
    for number, (unused_phase, label, colour) in enumerate(reversed(PARTS)):
        y = legend_y + number * 22
        svg.add('<rect x="%d" y="%d" width="14" height="14" fill="%s"/>' % (legend_x, y, colour))
        svg.add(svg.text(legend_x + 20, y + 12, label, size=11))
    y = legend_y + len(PARTS) * 22 + 10
    svg.add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black" stroke-width="2"/>' % (legend_x, y, legend_x + 14, y))
    svg.add(svg.text(legend_x + 20, y + 4, 'p99 of the total', size=11))
    svg.add(svg.text(legend_x, y + 26, 'bars: p50 of each part;', size=11))
    svg.add(svg.text(legend_x, y + 40, 'number: p50 of the total', size=11))
    svg.save(path)


def wall_plot(rows, path):
    """Lines: seconds of one hybrid_key call for the whole mesh against links, workers 1 and 4."""
    svg = Svg(760, 400, 'One hybrid_key call keys the whole mesh: wall time against links')
    left, top, width, height = 70, 50, 600, 290
    x_max = max(row['links'] for row in rows)
    y_max = nice_max(max(max(row['workers_1']['lookup_s'], row['workers_4']['lookup_s']) for row in rows) * 1.1)
    axes(svg, left, top, width, height, y_max, 'seconds (whole call)')
    labelled = []     # x of the points that carry labels: crowded points (a few links at the left) get none
    for row in rows:
        x = left + width * row['links'] / x_max
        if labelled and x - labelled[-1] < 40:
            continue
        labelled.append(x)
        svg.add(svg.text(x, top + height + 18, '%d' % row['links'], size=11, anchor='middle'))
        svg.add(svg.text(x, top + height + 32, 'N=%d' % row['sites'], size=10, anchor='middle'))
    svg.add(svg.text(left + width / 2, top + height + 50, 'links keyed (N sites, full mesh)', size=12, anchor='middle'))
    for workers, colour in ((1, '#1f77b4'), (4, '#d62728')):
        points = [(left + width * row['links'] / x_max, top + height - height * row['workers_%d' % workers]['lookup_s'] / y_max)
                  for row in rows]
        svg.add('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                % (colour, ' '.join('%.1f,%.1f' % point for point in points)))
        for (x, y), row in zip(points, rows):
            svg.add('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>' % (x, y, colour))
            if x not in labelled:
                continue
            svg.add(svg.text(x + 6, y - 6 if workers == 4 else y + 14, '%.2f' % row['workers_%d' % workers]['lookup_s'],
                             size=10))
        legend_y = top + 10 + (workers // 4) * 20
        svg.add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>'
                % (left + 20, legend_y, left + 40, legend_y, colour))
        svg.add(svg.text(left + 46, legend_y + 4, 'workers=%d' % workers, size=11))
    svg.save(path)


def _bar_slots(svg, left, top, width, height, rows, bar_width_max=70, caption=lambda row: '%d links' % row['links']):
    """x of each row's bar and its width; N and ``caption(row)`` under each bar."""
    slot = width / len(rows)
    bar_width = min(bar_width_max, slot * 0.5)
    xs = []
    for index, row in enumerate(rows):
        x = left + slot * index + (slot - bar_width) / 2
        xs.append(x)
        svg.add(svg.text(x + bar_width / 2, top + height + 18, 'N=%d' % row['sites'], size=12, anchor='middle'))
        svg.add(svg.text(x + bar_width / 2, top + height + 33, caption(row), size=10, anchor='middle'))
    return xs, bar_width


def _stacked_bars(svg, left, top, width, height, rows, values_of, y_max, total_of, **slots):
    """One stacked bar per row; ``values_of(row)`` gives the part values in UP_PARTS order."""
    xs, bar_width = _bar_slots(svg, left, top, width, height, rows, **slots)
    for x, row in zip(xs, rows):
        base = 0.0
        for value, (unused_label, unused_phases, colour) in zip(values_of(row), UP_PARTS):
            y = top + height - height * (base + value) / y_max
            svg.add('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>'
                    % (x, y, bar_width, height * value / y_max, colour))
            base += value
        total = total_of(row)
        svg.add(svg.text(x + bar_width / 2, top + height - height * total / y_max - 6, '%.1f s' % total,
                         size=11, anchor='middle', weight='bold'))
    return xs, bar_width


def _legend(svg, x, y, entries):
    for number, (label, colour) in enumerate(entries):
        svg.add('<rect x="%d" y="%d" width="14" height="14" fill="%s"/>' % (x, y + number * 22, colour))
        svg.add(svg.text(x + 20, y + number * 22 + 12, label, size=11))
    return y + len(entries) * 22


def _part_values(phases):
    return [sum(phases.get(name, 0.0) for name in names) for unused_label, names, unused_colour in UP_PARTS]


def up_phases_plot(runs, path):
    """Stacked bars: one testbed_up.yml run from nothing (render mode) by phase, per N; the target at N=10."""
    svg = Svg(880, 430, 'Testbed up and verified against N: where the time goes (render mode)')
    left, top, width, height = 70, 50, 470, 310
    y_max = nice_max(max(max(row['up_s'] for row in runs), TARGET_UP_SECONDS_AT_10) * 1.1)
    axes(svg, left, top, width, height, y_max, 'seconds, whole ansible-playbook run')
    _stacked_bars(svg, left, top, width, height, runs, lambda row: _part_values(row['phases_s']), y_max,
                  lambda row: row['up_s'])
    target = top + height - height * TARGET_UP_SECONDS_AT_10 / y_max
    svg.add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d62728" stroke-dasharray="6,4"/>'
            % (left, target, left + width, target))
    svg.add(svg.text(left + width - 4, target - 5, 'target at N=10: %.0f s' % TARGET_UP_SECONDS_AT_10, size=10,
                     anchor='end'))
    y = _legend(svg, left + width + 20, top + 10, [(label, colour) for label, unused, colour in reversed(UP_PARTS)])
    svg.add(svg.text(left + width + 20, y + 20, 'load average before each run:', size=11))
    svg.add(svg.text(left + width + 20, y + 36, ', '.join('N=%d: %.1f' % (row['sites'], row['load_before']) for row in runs),
                     size=11))
    svg.add(svg.text(left + width + 20, y + 52, '(2 cores, shared)', size=11))
    svg.save(path)


def setup_spread_plot(runs, path):
    """Per N, the spread of per-link tunnel set-up: a box from p50 to p90 and a whisker to the max, for the
    charon log (IKE_SA_INIT + IKE_AUTH with the PPK) and for swanctl --initiate (with the queueing)."""
    svg = Svg(880, 430, 'Tunnel set-up time per link against N: p50, p90, max')
    left, top, width, height = 70, 50, 560, 310
    measures = (('setup_charon_ms', 'charon log: initiating IKE_SA to CHILD_SA established', '#1f77b4'),
                ('setup_swanctl_ms', 'swanctl --initiate wall time (all links at once)', '#ff7f0e'))
    highest = max(max(row[key].values()) for row in runs for key, unused, unused_colour in measures)
    y_max = 100.0 * math.ceil(highest * 1.1 / 100.0)
    axes(svg, left, top, width, height, y_max, 'milliseconds per link')
    slot = width / len(runs)
    box = min(34, slot * 0.25)

    def y_of(value):
        return top + height - height * value / y_max

    for index, row in enumerate(runs):
        centre = left + slot * index + slot / 2
        svg.add(svg.text(centre, top + height + 18, 'N=%d' % row['sites'], size=12, anchor='middle'))
        svg.add(svg.text(centre, top + height + 33, '%d links' % row['links'], size=10, anchor='middle'))
        for number, (key, unused_label, colour) in enumerate(measures):
            samples = [value / 1000.0 for value in row[key].values()]
            p50, p90, top_value = (common.percentile(samples, 0.5) * 1000, common.percentile(samples, 0.9) * 1000,
                                   max(samples) * 1000)
            x = centre + (number - 1) * (box + 6) + 3
            middle = x + box / 2
            svg.add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"/>'
                    % (middle, y_of(p90), middle, y_of(top_value), colour))
            svg.add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"/>'
                    % (middle - box / 4, y_of(top_value), middle + box / 4, y_of(top_value), colour))
            svg.add('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.35" stroke="%s"/>'
                    % (x, y_of(p90), box, max(1.0, y_of(p50) - y_of(p90)), colour, colour))
            svg.add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>'
                    % (x, y_of(p50), x + box, y_of(p50), colour))
            svg.add(svg.text(middle, y_of(top_value) - 5, '%.0f' % top_value, size=9, anchor='middle'))
            svg.add(svg.text(x + box + 2 if number else x - 2, y_of(p50) + 4, '%.0f' % p50, size=9,
                             anchor='start' if number else 'end'))
    target = y_of(TARGET_SETUP_P50_MS)
    svg.add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d62728" stroke-dasharray="6,4"/>'
            % (left, target, left + width, target))
    svg.add(svg.text(left + width - 4, target - 5, 'target: p50 <= %.0f ms' % TARGET_SETUP_P50_MS, size=10, anchor='end'))
    legend_x = left + width + 15
    y = top + 10
    for unused_key, label, colour in measures:
        svg.add('<rect x="%d" y="%d" width="14" height="14" fill="%s" fill-opacity="0.35" stroke="%s"/>'
                % (legend_x, y, colour, colour))
        words, line = label.split(' '), ''
        lines = []
        for word in words:
            if len(line) + len(word) > 26:
                lines.append(line)
                line = ''
            line = (line + ' ' + word).strip()
        lines.append(line)
        for offset, text in enumerate(lines):
            svg.add(svg.text(legend_x + 20, y + 12 + offset * 14, text, size=11))
        y += 22 + 14 * len(lines)
    for text in ('thick line: p50 (number)', 'box: p50 to p90', 'whisker: max (number)'):
        svg.add(svg.text(legend_x, y + 8, text, size=11))
        y += 16
    svg.save(path)


def addition_plot(runs, path):
    """Stacked bars: adding site N+1 to a running N-site mesh (testbed_up.yml with N+1), by phase."""
    rows = [row for row in runs if row.get('addition')]
    svg = Svg(880, 430, 'Adding one site to a running mesh: time against N (N new links)')
    left, top, width, height = 70, 50, 470, 310
    y_max = nice_max(max(row['addition']['seconds'] for row in rows) * 1.15)
    axes(svg, left, top, width, height, y_max, 'seconds, whole ansible-playbook run')
    xs, bar_width = _stacked_bars(svg, left, top, width, height, rows, lambda row: _part_values(row['addition']['phases_s']),
                                  y_max, lambda row: row['addition']['seconds'],
                                  caption=lambda row: 'to N+1: %d new links' % row['sites'])
    for x, row in zip(xs, rows):
        add = row['addition']
        ok = add.get('only_new_links_keyed') and add.get('existing_sas_kept')
        caption = 'keyed %d%s' % (len(add.get('keyed_now') or []), ', only these' if ok else '')
        svg.add(svg.text(x + bar_width / 2, top + height + 46, caption, size=9, anchor='middle'))
    _legend(svg, left + width + 20, top + 10, [(label, colour) for label, unused, colour in reversed(UP_PARTS)])
    svg.save(path)


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


def replace_block(path, markdown, marker=MARKER):
    start, end = '<!-- %s:start -->' % marker, '<!-- %s:end -->' % marker
    with open(path) as handle:
        page = handle.read()
    block = '%s\n%s\n%s' % (start, markdown.strip(), end)
    if start in page and end in page:
        page = page[:page.index(start)] + block + page[page.index(end) + len(end):]
    else:
        page = page.rstrip('\n') + '\n\n' + block + '\n'
    with open(path, 'w') as handle:
        handle.write(page)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--results', default=os.path.join(common.RESULTS_DIR, 'testbed_faults.json'))
    parser.add_argument('--testbed-results', default=os.path.join(common.RESULTS_DIR, 'testbed.json'),
                        help="bench_testbed.py's results (up time, set-up, node addition against N)")
    args = parser.parse_args()
    try:
        with open(args.testbed_results) as handle:
            testbed = json.load(handle)
    except (OSError, ValueError) as exc:
        common.note('plot_testbed: no orchestration plots: cannot read %s: %s (run benchmarks/bench_testbed.py)'
                    % (args.testbed_results, exc))
    else:
        runs = sorted((row for row in testbed.get('runs') or [] if row.get('verified')), key=lambda row: row['sites'])
        if runs:
            up_phases_plot(runs, os.path.join(IMG_DIR, 'testbed-up-phases.svg'))
            setup_spread_plot(runs, os.path.join(IMG_DIR, 'testbed-setup-spread.svg'))
            if any(row.get('addition') for row in runs):
                addition_plot(runs, os.path.join(IMG_DIR, 'testbed-node-addition.svg'))
            replace_block(TESTBED_MD, orchestration_section(dict(testbed, runs=runs)), ORCHESTRATION_MARKER)
    try:
        with open(args.results) as handle:
            results = json.load(handle)
    except (OSError, ValueError) as exc:
        raise SystemExit('plot_testbed: cannot read %s: %s (run benchmarks/bench_testbed_faults.py first)' % (args.results, exc))
    rows = results.get('latency') or []
    if rows:
        latency_plot(rows, os.path.join(IMG_DIR, 'testbed-key-latency.svg'))
        wall_plot(rows, os.path.join(IMG_DIR, 'testbed-lookup-wall.svg'))
    replace_block(TESTBED_MD, section(results))
    common.note('plot_testbed: docs/testbed.md (%s section), docs/img/testbed-*.svg' % MARKER)
    return 0


if __name__ == '__main__':
    sys.exit(main())
