"""The testbed's QKD network: one qkdsim process (host namespace, 127.0.0.1) with a KME per site and a QKD
link per pair, started for the current sites and recorded in the state file before it is waited for.
"""

import importlib.util
import json
import os
import subprocess
import sys

import yaml

from testbed import processes

# The topology comes from tools/generate_mesh_inventory.py (one generator for benchmarks, tools and the
# testbed), loaded by path: the testbed runs from a checkout of the repository (make venv installs it editable).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 30


def _generator():
    spec = importlib.util.spec_from_file_location('generate_mesh_inventory',
                                                  os.path.join(REPO_ROOT, 'tools', 'generate_mesh_inventory.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start(directory, topology_file, sites, error):
    """Write the topology of ``sites`` to ``topology_file`` and start ``python -m qkdsim`` with its state in
    ``directory``; returns the record dict(pid, state_dir, endpoints_file, log_file) and a function that waits
    until the simulator is ready (raises ``error`` when it is not)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    processes.write_atomic(topology_file, yaml.safe_dump(_generator().topology(sites), sort_keys=False))
    endpoints_file = os.path.join(directory, 'endpoints.json')
    log_file = os.path.join(directory, 'qkdsim.log')
    output_file = os.path.join(directory, 'qkdsim.out')
    with open(output_file, 'a') as out:
        process = subprocess.Popen(
            [sys.executable, '-m', 'qkdsim', '--state-dir', directory, '--log-file', log_file, '--topology', topology_file],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)

    def ready():
        try:
            with open(endpoints_file) as handle:
                return json.load(handle).get('pid') == process.pid
        except (OSError, ValueError):
            return False

    def wait():
        processes.wait_until(ready, process, START_TIMEOUT, 'qkdsim', 'no endpoints.json', output_file, error)
    return dict(pid=process.pid, state_dir=directory, endpoints_file=endpoints_file, log_file=log_file), wait


def stop(record):
    """Stop the recorded simulator if it still runs (and is a qkdsim)."""
    if record and processes.alive(record['pid']) and 'qkdsim' in processes.cmdline(record['pid']):
        processes.terminate([record['pid']])


def strays(state_dir):
    """Pids of simulators started for ``state_dir`` (their command line names it): the record may be lost."""
    marker = '-m qkdsim --state-dir %s ' % state_dir
    return set(pid for pid in (int(entry) for entry in os.listdir('/proc') if entry.isdigit())
               if processes.cmdline(pid).find(marker) >= 0)
