"""Shared helpers of the benchmark scripts: the machine description and docs/benchmarks.md sections.

Every benchmark writes its raw results as JSON into benchmarks/results/ and replaces its own
section of docs/benchmarks.md (between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``), so
the page always shows the latest measured numbers next to the machine they were measured on.
"""

import datetime
import json
import os
import platform
import statistics
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, 'benchmarks', 'results')
BENCHMARKS_MD = os.path.join(REPO_ROOT, 'docs', 'benchmarks.md')


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    memory = None
    try:
        with open('/proc/meminfo') as handle:
            memory = '%.1f GiB' % (int(handle.readline().split()[1]) / 1024.0 / 1024.0)
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for name in ('cryptography', 'requests', 'ansible-core'):
        try:
            from importlib.metadata import version
            versions[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing package is just not reported
            pass
    return dict(cpu=cpu, cores=os.cpu_count(), memory=memory, kernel=platform.release(),
                python=platform.python_version(), packages=versions,
                date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))


def machine_line(machine):
    packages = ', '.join('%s %s' % item for item in sorted(machine['packages'].items()))
    return ('Measured %s on %s, %s cores, %s memory, Linux %s, Python %s (%s).'
            % (machine['date'], machine['cpu'], machine['cores'], machine['memory'], machine['kernel'],
               machine['python'], packages))


def percentile(samples, fraction):
    ordered = sorted(samples)
    if not ordered:
        return float('nan')
    index = min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))
    return ordered[index]


def summarize_ms(samples):
    return dict(p50=percentile(samples, 0.50) * 1000, p99=percentile(samples, 0.99) * 1000,
                mean=statistics.mean(samples) * 1000 if samples else float('nan'), n=len(samples))


def save_results(name, results):
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, name + '.json')
    with open(path, 'w') as handle:
        json.dump(results, handle, indent=1, sort_keys=True)
    return path


def replace_section(name, markdown):
    """Put ``markdown`` between this benchmark's markers in docs/benchmarks.md."""
    start, end = '<!-- %s:start -->' % name, '<!-- %s:end -->' % name
    try:
        with open(BENCHMARKS_MD) as handle:
            page = handle.read()
    except OSError:
        page = '# Benchmarks\n'
    block = '%s\n%s\n%s' % (start, markdown.strip(), end)
    if start in page and end in page:
        page = page[:page.index(start)] + block + page[page.index(end) + len(end):]
    else:
        page = page.rstrip('\n') + '\n\n' + block + '\n'
    with open(BENCHMARKS_MD, 'w') as handle:
        handle.write(page)


def note(message):
    sys.stderr.write(message + '\n')
    sys.stderr.flush()
