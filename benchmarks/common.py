"""Shared helpers of the benchmark scripts: the machine, the simulator, ansible-playbook runs, results, docs.

Every benchmark writes its raw results as JSON into benchmarks/results/ (committed, so every number the
docs cite can be traced to its run) and replaces its own section of docs/benchmarks.md (between
``<!-- NAME:start -->`` and ``<!-- NAME:end -->``), so the page always shows the latest measured numbers
next to the machine they were measured on.

The scripts import ``qkdsim``, ``testbed`` and ``ansible_collections.qsafe.keyfabric`` as installed
packages or from PYTHONPATH (``make bench`` sets it to the collection copy in .build and the repository
root); they edit no sys.path.
"""

import contextlib
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, 'benchmarks', 'results')
BENCHMARKS_MD = os.path.join(REPO_ROOT, 'docs', 'benchmarks.md')


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')


def load_average():
    """The 1-minute load average now: the machine is shared, so every row records how busy it was."""
    return round(os.getloadavg()[0], 2)


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
                python=platform.python_version(), packages=versions, date=utc_now(), load_average=load_average())


def machine_line(machine):
    packages = ', '.join('%s %s' % item for item in sorted(machine['packages'].items()))
    load = ('; 1-minute load average %.1f' % machine['load_average']) if machine.get('load_average') is not None else ''
    return ('Measured %s on %s, %s cores, %s memory, Linux %s, Python %s (%s)%s.'
            % (machine['date'], machine['cpu'], machine['cores'], machine['memory'], machine['kernel'],
               machine['python'], packages, load))


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


def load_results(name):
    """The last results file of benchmark ``name`` ({} when there is none or it does not parse)."""
    try:
        with open(os.path.join(RESULTS_DIR, name + '.json')) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def replace_section(name, markdown, path=BENCHMARKS_MD):
    """Put ``markdown`` between the markers ``name`` in ``path`` (docs/benchmarks.md unless told)."""
    start, end = '<!-- %s:start -->' % name, '<!-- %s:end -->' % name
    try:
        with open(path) as handle:
            page = handle.read()
    except OSError:
        page = '# Benchmarks\n'
    block = '%s\n%s\n%s' % (start, markdown.strip(), end)
    if start in page and end in page:
        page = page[:page.index(start)] + block + page[page.index(end) + len(end):]
    else:
        page = page.rstrip('\n') + '\n\n' + block + '\n'
    with open(path, 'w') as handle:
        handle.write(page)


def note(message):
    sys.stderr.write(message + '\n')
    sys.stderr.flush()


# --- the simulator -------------------------------------------------------------------------------

def start_simulator(directory, topology, timeout=20.0):
    """qkdsim on ``topology`` (YAML text or a dict), written to DIRECTORY/topology.yml; state in DIRECTORY/state."""
    from qkdsim.process import SimulatorProcess
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'topology.yml')
    with open(path, 'w') as handle:
        if isinstance(topology, str):
            handle.write(topology)
        else:
            import yaml
            yaml.safe_dump(topology, handle, sort_keys=False)
    return SimulatorProcess(os.path.join(directory, 'state'), topology=path, timeout=timeout)


@contextlib.contextmanager
def simulator(topology, prefix, timeout=20.0):
    """A simulator on ``topology`` in a temporary directory, stopped (and the directory removed) on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        process = start_simulator(directory, topology, timeout)
        try:
            yield process
        finally:
            process.stop()


# --- ansible-playbook --------------------------------------------------------------------------

def ansible_env(**extra):
    """The environment of an ansible-playbook run: the collection copy and this interpreter unless set."""
    env = dict(os.environ)
    env.setdefault('ANSIBLE_COLLECTIONS_PATH', os.path.join(REPO_ROOT, '.build'))
    env.setdefault('ANSIBLE_PYTHON_INTERPRETER', sys.executable)
    env.update(ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False', ANSIBLE_NOCOLOR='1')
    env.update(extra)
    return env


def ansible_playbook(playbook, extra_vars, inventory='localhost,', env=None, timeout=None):
    """(exit code, seconds, output) of one ansible-playbook run (stdout and stderr together)."""
    command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inventory, playbook,
               '-e', json.dumps(extra_vars)]
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env or ansible_env(), cwd=REPO_ROOT, check=False, timeout=timeout)
    return done.returncode, time.perf_counter() - started, done.stdout


def keyed_now(output):
    """full_mesh.yml's "Keyed links" debug in an ansible-playbook output: the links this run keyed (None: none shown)."""
    match = re.search(r'"keyed_now": \[(.*?)\]', output, re.S)
    return sorted(re.findall(r'"([^"]+)"', match.group(1))) if match else None


def left_behind(status):
    """What a torn-down testbed left (from ``Testbed.status()``): {} when nothing."""
    return dict((key, status[key]) for key in ('namespaces', 'charons', 'qkdsim', 'state_dir') if status[key])
