#!/usr/bin/env python
"""Benchmark: key-distribution latency per link against N, the link policy under QKD faults, and on
the live testbed: throughput through one tunnel and packet loss during a mesh-wide PPK rotation.

Sections (``--sections``, default all; ``live`` needs root and the testbed's packages, else it is
recorded as skipped with the reason):

* ``latency``: for N = 3, 5, 10, 20 sites (the testbed's full-mesh QKD topology,
  tools/generate_mesh_inventory.py), one hybrid_key call keys every link through ansible-playbook
  against a real qkdsim; each link returns ``timings_ms`` (master enc_keys, slave dec_keys, ML-KEM,
  X25519, CatKDF mixing with key confirmation, total). Run with workers=1 (per-link latency without
  contention) and with the default workers=4 (the wall time full_mesh.yml sees).
* ``failures``: a 5-site mesh; for each fault set over the simulator's control socket (KME down and
  refusing, KME down and resetting connections, link exhausted and held empty, QBER alarm) and each
  policy (on_missing fail / degrade): the outcome of every link, the message, the wall time, and
  that the links the fault does not touch were keyed.
* ``live``: the testbed (playbooks/testbed_up.yml, push mode) with 3 sites: TCP throughput through
  one tunnel (a Python socket sender and receiver in two site namespaces; the ESP is strongSwan's
  user-space libipsec through a TUN device, not kernel ESP); a mesh-wide PPK rotation
  (qsafe_rotate=true) while every pair exchanges ICMP echoes at a steady rate, counting the lost
  ones; a QBER alarm on one link during a rotation (policy fail: the run fails naming the link, the
  tunnels stay up); then testbed_down.yml and a check that nothing is left.
* ``degrade``: the testbed (push mode) with 4 sites and ``testbed_policy`` {require: [qkd, pqc],
  on_missing: degrade}; under steady ICMP echoes on every pair, a mesh-wide rotation (a) with
  KME-SITE-001 down in drop mode (accepts and resets: all of site-001's links lose QKD), (b) with a
  QBER alarm on one QKD link; each time which links were re-keyed, from which sources (key store
  records), the alarm, the echoes lost and that every tunnel is still up; then (c) a run without
  rotation once the faults are cleared, which re-keys only the degraded links, with QKD again.

Raw results: benchmarks/results/testbed_faults.json (with the machine description). Tables and
plots: benchmarks/plot_testbed.py -> docs/testbed.md, docs/img/.

    .venv/bin/python benchmarks/bench_testbed_faults.py [--sections latency,failures,live,degrade] [--sites 3,5,10,20]
"""

import argparse
import itertools
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time

from qkdsim.control import ControlClient

import common

PHASES = ('qkd_master', 'qkd_slave', 'pqc', 'classical', 'mix', 'total')
UP = os.path.join(common.REPO_ROOT, 'playbooks', 'testbed_up.yml')
DOWN = os.path.join(common.REPO_ROOT, 'playbooks', 'testbed_down.yml')
PREFIX = 'qfault'
LIVE_SITES = 3
PING_INTERVAL = 0.05        # s between echoes on each pair during the rotation (20 per second per pair)
THROUGHPUT_SECONDS = 3.0
FAILURES_SITES = 5
DEGRADE_SITES = 4
DEGRADE_POLICY = dict(require=['qkd', 'pqc'], on_missing='degrade')
HIT_LINK = 'SITE-001--SITE-002'     # the QKD link (topology) the link faults hit
FAULTS = (
    ('kme-down-refuse', 'KME-SITE-001 down, its port refuses connections',
     lambda control: control.kme_down('KME-SITE-001', mode='refuse'), lambda control: control.kme_up('KME-SITE-001')),
    ('kme-down-drop', 'KME-SITE-001 down, its port accepts and resets connections',
     lambda control: control.kme_down('KME-SITE-001', mode='drop'), lambda control: control.kme_up('KME-SITE-001')),
    ('link-exhausted', 'QKD link SITE-001--SITE-002 drained and held empty',
     lambda control: control.drain(HIT_LINK, hold=True), lambda control: control.fill(HIT_LINK)),
    ('qber-alarm', 'QKD link SITE-001--SITE-002 QBER 0.2 (threshold 0.11)',
     lambda control: control.set_qber(HIT_LINK, 0.2), lambda control: control.set_qber(HIT_LINK, 0.01)),
)


def _generator():
    import importlib.util
    spec = importlib.util.spec_from_file_location('generate_mesh_inventory',
                                                  os.path.join(common.REPO_ROOT, 'tools', 'generate_mesh_inventory.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ansible_playbook(path, extra_vars):
    """(exit code, seconds, output) of one ansible-playbook run."""
    return common.ansible_playbook(path, extra_vars, timeout=900)


def lookup_run(workdir, endpoints_file, links, **options):
    """Key ``links`` in one hybrid_key call in a play. Returns (rc, lookup seconds, public results or None, output).

    The results are written with the keys removed (as full_mesh.yml keeps them), mode 0600."""
    out = os.path.join(workdir, 'results-%d.json' % time.monotonic_ns())
    playbook = os.path.join(workdir, 'lookup.yml')
    option_text = ''.join(', %s=lookup_options.%s' % (name, name) for name in sorted(options))
    with open(playbook, 'w') as handle:
        json.dump([dict(
            hosts='localhost', connection='local', gather_facts=False,
            vars=dict(links=links, lookup_options=options),
            tasks=[
                {'ansible.builtin.set_fact': {'bench_started': '{{ now().timestamp() }}'}},
                {'ansible.builtin.set_fact': {
                    'bench_keyed': "{{ query('qsafe.keyfabric.hybrid_key', links, endpoints_file='%s'%s)"
                                   " | map('dict2items') | map('rejectattr', 'key', 'eq', 'key') | map('items2dict') | list }}"
                                   % (endpoints_file, option_text)}, 'no_log': True},
                {'ansible.builtin.set_fact': {'bench_seconds': '{{ now().timestamp() - bench_started | float }}'}},
                {'ansible.builtin.copy': {'content': "{{ {'seconds': bench_seconds | float, 'links': bench_keyed} | to_json }}",
                                          'dest': out, 'mode': '0600'}},
            ])], handle)
    started = time.perf_counter()
    rc, seconds, output = ansible_playbook(playbook, {})
    if os.path.exists(out):
        with open(out) as handle:
            data = json.load(handle)
        os.unlink(out)
        return rc, data['seconds'], data['links'], output
    return rc, time.perf_counter() - started, None, output


def mesh_links(count):
    names = ['SITE-%03d' % index for index in range(1, count + 1)]
    return [dict(master='SAE-' + a, slave='SAE-' + b, link_id='%s--%s' % (a, b)) for a, b in itertools.combinations(names, 2)]


def simulator_for(workdir, count):
    return common.start_simulator(os.path.join(workdir, 'qkdsim-%d' % count),
                                  _generator().topology(['site-%03d' % index for index in range(1, count + 1)]))


def phase_summary(results):
    summary = {}
    for phase in PHASES:
        samples = [result['timings_ms'][phase] / 1000.0 for result in results]
        summary[phase] = dict((k, round(v, 3)) for k, v in common.summarize_ms(samples).items())
    return summary


# --- latency ----------------------------------------------------------------------------------

def measure_latency(workdir, counts):
    rows = []
    for count in counts:
        simulator = simulator_for(workdir, count)
        try:
            links = mesh_links(count)
            row = dict(sites=count, links=len(links))
            for workers in (1, 4):
                common.note('latency: N=%d, %d links, workers=%d' % (count, len(links), workers))
                rc, seconds, results, output = lookup_run(workdir, str(simulator.endpoints_file), links, workers=workers)
                if rc != 0 or results is None:
                    raise SystemExit('latency: the lookup failed at N=%d:\n%s' % (count, output[-3000:]))
                row['workers_%d' % workers] = dict(
                    lookup_s=round(seconds, 3), per_link_ms=dict((r['link_id'], r['timings_ms']) for r in results),
                    summary_ms=phase_summary(results),
                    sources_ok=all(r['sources'] == ['classical', 'qkd', 'pqc'] and not r['degraded'] for r in results))
            rows.append(row)
        finally:
            simulator.stop()
    return rows


# --- failures ---------------------------------------------------------------------------------

def _failed_links(output):
    match = re.search(r'(\d+) of (\d+) links failed: (.*?)\. The (\d+) other links were keyed', output, re.S)
    if not match:
        return None
    failed = re.findall(r'link (SITE-\d{3}--SITE-\d{3}): ', match.group(3))
    return dict(failed=sorted(set(failed)), failed_count=int(match.group(1)), total=int(match.group(2)),
                others_keyed=int(match.group(4)), message=' '.join(match.group(3).split())[:600])


def measure_failures(workdir):
    simulator = simulator_for(workdir, FAILURES_SITES)
    control = ControlClient.for_state_dir(simulator.state_dir)
    rows = []
    try:
        links = mesh_links(FAILURES_SITES)
        for name, description, set_fault, clear_fault in FAULTS:
            for on_missing in ('fail', 'degrade'):
                store = os.path.join(workdir, 'store-%s-%s' % (name, on_missing))
                os.makedirs(store, mode=0o700)
                common.note('failures: %s, on_missing=%s' % (name, on_missing))
                set_fault(control)
                try:
                    rc, seconds, results, output = lookup_run(
                        workdir, str(simulator.endpoints_file), links, key_store=store,
                        policy=dict(require=['qkd', 'pqc'], on_missing=on_missing))
                finally:
                    clear_fault(control)
                stored = sorted(entry[:-5] for entry in os.listdir(store) if entry.endswith('.json'))
                row = dict(fault=name, description=description, on_missing=on_missing, rc=rc, seconds=round(seconds, 3),
                           links=len(links), stored=len(stored))
                if results is not None:
                    row.update(degraded=sorted(r['link_id'] for r in results if r['degraded']),
                               keyed_with_qkd=sum(1 for r in results if 'qkd' in r['sources']),
                               alarms=dict((r['link_id'], r['alarms']) for r in results if r['alarms']),
                               hit_timings_ms=dict((r['link_id'], r['timings_ms']) for r in results if r['degraded']))
                else:
                    row.update(_failed_links(output) or dict(message=output[-1500:]))
                rows.append(row)
                shutil.rmtree(store)
    finally:
        simulator.stop()
    return rows


# --- live -------------------------------------------------------------------------------------

def _tcp_throughput(bed, sender_site, receiver_site, seconds):
    """Bytes per second of one TCP stream from sender to receiver, tunnel address to tunnel address."""
    from testbed import netns
    sender, receiver = bed.state['sites'][sender_site], bed.state['sites'][receiver_site]
    ready, received, errors = threading.Event(), {}, []

    def receive():
        try:
            netns.in_netns(receiver['netns'])
            with socket.create_server((receiver['tunnel_ip'], 5201)) as server:
                server.settimeout(30)
                ready.set()
                connection, unused_peer = server.accept()
                with connection:
                    connection.settimeout(30)
                    total, started = 0, time.perf_counter()
                    while True:
                        chunk = connection.recv(1 << 16)
                        if not chunk:
                            break
                        total += len(chunk)
                    received.update(bytes=total, seconds=time.perf_counter() - started)
        except OSError as exc:
            errors.append('receiver: %s' % exc)
            ready.set()

    def send():
        try:
            netns.in_netns(sender['netns'])
            ready.wait(10)
            payload = b'\0' * (1 << 16)
            with socket.create_connection((receiver['tunnel_ip'], 5201), timeout=10,
                                          source_address=(sender['tunnel_ip'], 0)) as connection:
                deadline = time.perf_counter() + seconds
                while time.perf_counter() < deadline:
                    connection.sendall(payload)
        except OSError as exc:
            errors.append('sender: %s' % exc)

    threads = [threading.Thread(target=receive), threading.Thread(target=send)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors or not received:
        return dict(error='; '.join(errors) or 'no result')
    return dict(bytes=received['bytes'], seconds=round(received['seconds'], 3),
                mbit_s=round(received['bytes'] * 8 / received['seconds'] / 1e6, 1))


class SteadyPings:
    """ICMP echoes on every pair at a steady rate (one thread per pair), counting sent and lost."""

    def __init__(self, bed, interval=PING_INTERVAL, timeout=1.0):
        self.bed, self.interval, self.timeout = bed, interval, timeout
        self.stop = threading.Event()
        self.counts = {}
        self.threads = []

    def _run(self, a, b, identifier):
        from testbed import netns
        record_a, record_b = self.bed.state['sites'][a], self.bed.state['sites'][b]
        counts = self.counts['%s--%s' % (a, b)] = dict(sent=0, lost=0, lost_at=[])
        started = time.monotonic()
        while not self.stop.is_set():
            due = started + counts['sent'] * self.interval
            time.sleep(max(0.0, due - time.monotonic()))
            counts['sent'] += 1
            if netns.icmp_echo(record_a['netns'], record_a['tunnel_ip'], record_b['tunnel_ip'],
                               timeout=self.timeout, identifier=identifier) is None:
                counts['lost'] += 1
                counts['lost_at'].append(round(time.monotonic() - started, 3))

    def __enter__(self):
        for number, (a, b) in enumerate(itertools.combinations(self.bed.sites(), 2)):
            thread = threading.Thread(target=self._run, args=(a, b, 0x5100 + number), daemon=True)
            self.threads.append(thread)
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


def _ppk_ids(state_dir):
    store = os.path.join(state_dir, 'store')
    ids = {}
    for entry in sorted(os.listdir(store)):
        if entry.endswith('.json') and not entry.endswith('.previous.json'):
            with open(os.path.join(store, entry)) as handle:
                ids[entry[:-5]] = json.load(handle)['ppk_id']
    return ids


def measure_live(workdir):
    from testbed import Testbed, skip_reason
    reason = skip_reason()
    if reason:
        return dict(skipped=reason)
    state_dir = os.path.join(workdir, 'testbed')
    extra = dict(testbed_sites=LIVE_SITES, testbed_state_dir=state_dir, testbed_prefix=PREFIX, qsafe_mode='push')
    live = dict(sites=LIVE_SITES, links=LIVE_SITES * (LIVE_SITES - 1) // 2)
    try:
        common.note('live: testbed_up.yml, %d sites, push mode' % LIVE_SITES)
        rc, seconds, output = ansible_playbook(UP, extra)
        if rc != 0:
            live['error'] = 'testbed_up.yml failed (exit %d): %s' % (rc, output[-3000:])
            return live
        live['up_s'] = round(seconds, 3)
        bed = Testbed(state_dir, PREFIX)
        sites = bed.sites()

        common.note('live: throughput %s -> %s' % (sites[0], sites[1]))
        before = dict((sa['peer'], sa['packets_in']) for sa in bed.ike_sas(sites[1]))
        live['throughput'] = _tcp_throughput(bed, sites[0], sites[1], THROUGHPUT_SECONDS)
        after = dict((sa['peer'], sa['packets_in']) for sa in bed.ike_sas(sites[1]))
        # proof that the stream went through the tunnel: the receiver's CHILD_SA counted its packets
        live['throughput'].update(sender=sites[0], receiver=sites[1], esp='strongSwan 5.9 kernel-libipsec (user space, TUN)',
                                  child_sa_packets_in=after.get(sites[0], 0) - before.get(sites[0], 0))

        common.note('live: rotation under steady pings')
        before = _ppk_ids(state_dir)
        with SteadyPings(bed) as pings:
            time.sleep(1.0)
            rc, seconds, output = ansible_playbook(UP, dict(extra, qsafe_rotate=True))
            time.sleep(1.0)
        after = _ppk_ids(state_dir)
        live['rotation'] = dict(rc=rc, seconds=round(seconds, 3), interval_s=PING_INTERVAL, pairs=pings.counts,
                                sent=sum(c['sent'] for c in pings.counts.values()),
                                lost=sum(c['lost'] for c in pings.counts.values()),
                                links_rotated=sorted(link for link in after if after[link] != before.get(link)),
                                verified=bed.verify()['ok'])
        if rc != 0:
            live['rotation']['output'] = output[-2000:]

        common.note('live: QBER alarm on one link during a rotation')
        qkd_link = '%s--%s' % (sites[0].upper(), sites[1].upper())
        control = ControlClient.for_state_dir(bed.state['qkdsim']['state_dir'])
        control.set_qber(qkd_link, 0.2)
        try:
            with SteadyPings(bed) as pings:
                rc, seconds, output = ansible_playbook(UP, dict(extra, qsafe_rotate=True))
        finally:
            control.set_qber(qkd_link, 0.01)
        failed = re.search(r'(\d+ of \d+ links failed: .*?)(?:\\n|"|$)', output)
        live['alarm_during_rotation'] = dict(
            qkd_link=qkd_link, rc=rc, seconds=round(seconds, 3), message=failed.group(1)[:600] if failed else output[-1500:],
            pings_sent=sum(c['sent'] for c in pings.counts.values()), pings_lost=sum(c['lost'] for c in pings.counts.values()),
            tunnels_after=bed.verify())
    finally:
        common.note('live: testbed_down.yml')
        rc, seconds, output = ansible_playbook(DOWN, dict(testbed_state_dir=state_dir, testbed_prefix=PREFIX))
        live['down'] = dict(rc=rc, seconds=round(seconds, 3))
        live['left_after_down'] = common.left_behind(Testbed(state_dir, PREFIX).status())
    return live


def _store_records(state_dir):
    """Public fields of each link's current key record (never the key): {link: {ppk_id, sources, degraded, alarms}}."""
    store = os.path.join(state_dir, 'store')
    records = {}
    for entry in sorted(os.listdir(store)):
        if entry.endswith('.json') and not entry.endswith('.previous.json'):
            with open(os.path.join(store, entry)) as handle:
                record = json.load(handle)
            records[entry[:-5]] = dict(ppk_id=record.get('ppk_id'), sources=record.get('sources'),
                                       degraded=bool(record.get('degraded')), alarms=list(record.get('alarms') or []))
    return records


def _degrade_step(bed, extra, set_fault=None, clear_fault=None, rotate=True):
    """One testbed_up.yml run under steady echoes (with a fault set before it and cleared after it)."""
    before = _store_records(bed.state_dir)
    if set_fault:
        set_fault()
    try:
        with SteadyPings(bed) as pings:
            time.sleep(1.0)
            rc, seconds, output = ansible_playbook(UP, dict(extra, qsafe_rotate=True) if rotate else extra)
            time.sleep(1.0)
    finally:
        if clear_fault:
            clear_fault()
    after = _store_records(bed.state_dir)
    rekeyed = sorted(link for link in after if after[link]['ppk_id'] != (before.get(link) or {}).get('ppk_id'))
    step = dict(rc=rc, seconds=round(seconds, 3), rotate=rotate, keyed_now=common.keyed_now(output), rekeyed=rekeyed,
                degraded=sorted(link for link in rekeyed if after[link]['degraded']),
                rekeyed_with_qkd=sorted(link for link in rekeyed if 'qkd' in (after[link]['sources'] or [])),
                sources=dict((link, after[link]['sources']) for link in rekeyed),
                alarms=dict((link, after[link]['alarms']) for link in rekeyed if after[link]['alarms']),
                pings_sent=sum(c['sent'] for c in pings.counts.values()),
                pings_lost=sum(c['lost'] for c in pings.counts.values()),
                lost_by_pair=dict((pair, c['lost']) for pair, c in pings.counts.items() if c['lost']),
                verify=bed.verify())
    if rc != 0:
        step['output'] = output[-3000:]
    return step


def measure_degrade(workdir):
    """Live: on_missing=degrade on the testbed - rotations with a KME down (drop mode) and with a QBER alarm."""
    from testbed import Testbed, skip_reason
    reason = skip_reason()
    if reason:
        return dict(skipped=reason)
    state_dir = os.path.join(workdir, 'testbed-degrade')
    prefix = PREFIX + 'd'
    extra = dict(testbed_sites=DEGRADE_SITES, testbed_state_dir=state_dir, testbed_prefix=prefix, qsafe_mode='push',
                 testbed_policy=DEGRADE_POLICY)
    result = dict(sites=DEGRADE_SITES, links=DEGRADE_SITES * (DEGRADE_SITES - 1) // 2, policy=DEGRADE_POLICY,
                  interval_s=PING_INTERVAL)
    try:
        common.note('degrade: testbed_up.yml, %d sites, push mode, policy %s' % (DEGRADE_SITES, DEGRADE_POLICY))
        rc, seconds, output = ansible_playbook(UP, extra)
        if rc != 0:
            result['error'] = 'testbed_up.yml failed (exit %d): %s' % (rc, output[-3000:])
            return result
        result['up_s'] = round(seconds, 3)
        bed = Testbed(state_dir, prefix)
        sites = bed.sites()
        control = ControlClient.for_state_dir(bed.state['qkdsim']['state_dir'])
        kme = 'KME-' + sites[0].upper()
        qkd_link = '%s--%s' % (sites[1].upper(), sites[2].upper())

        common.note('degrade: rotation with %s down (drop mode)' % kme)
        result['kme_down_drop'] = dict(fault='%s down, its port accepts and resets connections' % kme, **_degrade_step(
            bed, extra, lambda: control.kme_down(kme, mode='drop'), lambda: control.kme_up(kme)))
        common.note('degrade: rotation with a QBER alarm on %s' % qkd_link)
        result['qber_alarm'] = dict(fault='QKD link %s QBER 0.2 (threshold 0.11)' % qkd_link, **_degrade_step(
            bed, extra, lambda: control.set_qber(qkd_link, 0.2), lambda: control.set_qber(qkd_link, 0.01)))
        common.note('degrade: faults cleared, a run without rotation')
        result['recovered'] = dict(fault='none (cleared)', **_degrade_step(bed, extra, rotate=False))
    finally:
        common.note('degrade: testbed_down.yml')
        rc, seconds, output = ansible_playbook(DOWN, dict(testbed_state_dir=state_dir, testbed_prefix=prefix))
        result['down'] = dict(rc=rc, seconds=round(seconds, 3))
        result['left_after_down'] = common.left_behind(Testbed(state_dir, prefix).status())
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--sections', default='latency,failures,live,degrade',
                        help='comma-separated: latency, failures, live, degrade')
    parser.add_argument('--sites', default='3,5,10,20', help='site counts of the latency section (default 3,5,10,20)')
    args = parser.parse_args()
    sections = set(args.sections.split(','))
    unknown = sections - {'latency', 'failures', 'live', 'degrade'}
    if unknown:
        parser.error('unknown section(s) %s (known: latency, failures, live, degrade)' % ', '.join(sorted(unknown)))
    path = os.path.join(common.RESULTS_DIR, 'testbed_faults.json')
    results = {}
    if os.path.exists(path):   # a section run alone keeps the others' latest results
        with open(path) as handle:
            results = json.load(handle)
    results['machine'] = common.machine_description()
    workdir = tempfile.mkdtemp(prefix='qsafe-bench-faults-')
    try:
        measured = results.setdefault('measured', {})   # when each section was last measured
        if 'latency' in sections:
            results['latency'] = measure_latency(workdir, [int(n) for n in args.sites.split(',')])
            measured['latency'] = results['machine']['date']
        if 'failures' in sections:
            results['failures'] = measure_failures(workdir)
            measured['failures'] = results['machine']['date']
        if 'live' in sections:
            results['live'] = measure_live(workdir)
            measured['live'] = results['machine']['date']
        if 'degrade' in sections:
            results['degrade'] = measure_degrade(workdir)
            measured['degrade'] = results['machine']['date']
    finally:
        common.note('results: ' + common.save_results('testbed_faults', results))
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
