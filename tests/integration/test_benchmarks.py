"""The benchmark scripts: the key-delivery harness's table and timing loop, and the testbed plots.

The scripts run as `make bench` runs them: a subprocess with PYTHONPATH set to the collection copy and
the repository root. The plot test feeds benchmarks/plot_testbed.py made-up results of the shape the
testbed benchmarks write (not measurements) and renders into a temporary directory.
"""

import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS_PATH = os.environ.get('ANSIBLE_COLLECTIONS_PATH', os.path.join(REPO_ROOT, '.build')).split(os.pathsep)[0]
BENCHMARKS = os.path.join(REPO_ROOT, 'benchmarks')
PHASES = ('qkd_master', 'qkd_slave', 'pqc', 'classical', 'mix', 'total')
UP_PHASES = ('namespaces', 'charons', 'qkdsim', 'keying', 'render', 'load', 'initiate', 'verify', 'ansible_and_rest')
SVGS = ('testbed-key-latency.svg', 'testbed-lookup-wall.svg', 'testbed-up-phases.svg', 'testbed-setup-spread.svg',
        'testbed-node-addition.svg')


def run(*args, extra_path=()):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(list(extra_path) + [COLLECTIONS_PATH, REPO_ROOT]))
    return subprocess.run([sys.executable] + list(args), capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=300, check=False)


def key_delivery(*args):
    return run(os.path.join(BENCHMARKS, 'bench_key_delivery.py'), *args)


def test_key_delivery_selects_cases_by_interface():
    done = key_delivery('--list', '--interface', 'skip')
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == ['skip', 'skip-mtls', 'etsi014-skip', 'skip-etsi014', 'skip-fresh']


def test_key_delivery_refuses_an_unknown_case():
    done = key_delivery('--case', 'etsi015', '--quick')
    assert done.returncode == 2
    assert 'unknown case(s): etsi015' in done.stderr


def test_key_delivery_quick_run_times_every_batch_of_the_cases_and_writes_nothing():
    page = os.path.join(REPO_ROOT, 'docs', 'benchmarks.md')
    with open(page) as handle:
        before = handle.read()
    done = key_delivery('--quick', '--pairs', '100', '--case', 'etsi004-binary', '--case', 'skip-fresh')
    assert done.returncode == 0, done.stderr
    timed = [line.split(' batch ')[0].strip() + ' / ' + line.split(' batch ')[1].split(':')[0].strip()
             for line in done.stderr.splitlines() if ' batch ' in line]
    assert timed == ['ETSI 004 (binary framing) -> ETSI 004 (binary framing) / %d' % batch for batch in (1, 10, 100)] + [
        'SKIP (TLS-PSK) -> SKIP (TLS-PSK), new connection per request / 1']
    with open(page) as handle:
        assert handle.read() == before


def test_key_delivery_partial_run_keeps_the_other_cases_rows():
    snippet = (
        'import json, bench_key_delivery as b\n'
        'row = lambda case, batch, p50: dict(case=case, batch=batch, p50=p50, keys_per_s=1.0, fresh_connections=False, label=case)\n'
        'old = [row("etsi014", 1, 1.0), row("skip", 1, 9.0), row("gone", 1, 1.0)]\n'
        'new = [row("skip", 1, 2.0), row("etsi004", 1, 1.5)]\n'
        'merged = b.merge_rows(new, old)\n'
        'print(json.dumps(dict(merged=[(r["case"], r["p50"]) for r in merged], targets=b.targets(merged))))\n')
    done = run('-c', snippet, extra_path=[BENCHMARKS])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # the table's order; the new skip row replaces the old one; a case no longer in the table is dropped
    assert result['merged'] == [['etsi014', 1.0], ['etsi004', 1.5], ['skip', 2.0]]
    assert result['targets'][0].startswith('- Single-key pair p50 <= 3 ms for every case with kept connections: **met**')


def _machine():
    return dict(cpu='test CPU', cores=2, memory='1.0 GiB', kernel='6.0', python='3.11.7', packages={}, date='2026-01-01 00:00 UTC')


def _summary(p50):
    return dict(p50=p50, p99=p50 * 3, mean=p50 * 1.2, n=10)


def _fixture(directory):
    """Results of the shape bench_testbed_faults.py and bench_testbed.py write (made-up numbers)."""
    latency = []
    for sites in (3, 5, 10):
        links = sites * (sites - 1) // 2
        summary = dict((phase, _summary(1.0 + index)) for index, phase in enumerate(PHASES))
        latency.append(dict(sites=sites, links=links, workers_1=dict(lookup_s=0.1 * links, summary_ms=summary),
                            workers_4=dict(lookup_s=0.08 * links, summary_ms=summary)))
    runs = []
    for sites in (3, 5):
        links = sites * (sites - 1) // 2
        names = ['site-%03d--site-%03d' % (a, b) for a in range(1, sites + 1) for b in range(a + 1, sites + 1)]
        phases = dict((phase, 0.5 + index * 0.1) for index, phase in enumerate(UP_PHASES))
        runs.append(dict(sites=sites, links=links, verified=True, up_s=sum(phases.values()), load_before=1.5,
                         phases_s=phases, setup_charon_ms=dict((name, 10.0 + i) for i, name in enumerate(names)),
                         setup_swanctl_ms=dict((name, 40.0 + 3 * i) for i, name in enumerate(names)),
                         addition=dict(seconds=5.0, phases_s=phases, keyed_now=names[:sites], only_new_links_keyed=True,
                                       existing_sas_kept=True)))
    faults, testbed = os.path.join(directory, 'faults.json'), os.path.join(directory, 'testbed.json')
    with open(faults, 'w') as handle:
        json.dump(dict(machine=_machine(), latency=latency), handle)
    with open(testbed, 'w') as handle:
        json.dump(dict(machine=_machine(), runs=runs), handle)
    return faults, testbed


def _plot(directory, faults, testbed, page):
    return run(os.path.join(BENCHMARKS, 'plot_testbed.py'), '--results', faults, '--testbed-results', testbed,
               '--img-dir', directory, '--page', page)


def test_plot_testbed_draws_every_plot_and_a_rerun_writes_the_same_bytes(tmp_path):
    faults, testbed = _fixture(str(tmp_path))
    page = tmp_path / 'testbed.md'
    page.write_text('# Page\n\n<!-- testbed-orchestration:start -->\nold\n<!-- testbed-orchestration:end -->\n\nkept\n\n'
                    '<!-- testbed-faults:start -->\nold\n<!-- testbed-faults:end -->\n')
    first, second = tmp_path / 'first', tmp_path / 'second'
    for directory in (first, second):
        done = _plot(str(directory), faults, testbed, str(page))
        assert done.returncode == 0, done.stderr
    for name in SVGS:
        drawn = (first / name).read_bytes()
        assert drawn == (second / name).read_bytes(), '%s differs between two runs on the same data' % name
        assert drawn.startswith(b'<?xml') and b'<svg' in drawn
        assert b'<dc:date>' not in drawn
    # text stays text (svg.fonttype none): titles and labels are searchable
    assert b'Key distribution per link against N' in (first / 'testbed-key-latency.svg').read_bytes()
    assert b'target: p50 &lt;= 50 ms' in (first / 'testbed-setup-spread.svg').read_bytes()
    text = page.read_text()
    assert '\nold\n' not in text and '\nkept\n' in text
    assert '| 10 | 45 | 1.00 | 2.00 | 3.00 | 4.00 | 5.00 | 6.0 / 18.0 | 4.50 / 3.60 | 80.0 |' in text
    assert '![Testbed up time by phase against N](img/testbed-up-phases.svg)' in text


def test_plot_testbed_leaves_page_and_plots_alone_without_results(tmp_path):
    page = tmp_path / 'testbed.md'
    page.write_text('<!-- testbed-faults:start -->\nold\n<!-- testbed-faults:end -->\n')
    done = _plot(str(tmp_path / 'img'), str(tmp_path / 'none.json'), str(tmp_path / 'none-either.json'), str(page))
    assert done.returncode == 0, done.stderr
    assert 'left as they are' in done.stderr
    assert page.read_text() == '<!-- testbed-faults:start -->\nold\n<!-- testbed-faults:end -->\n'
    assert not (tmp_path / 'img').exists()
