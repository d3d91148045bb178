"""Processes and files of the testbed: is a pid alive, what is it, stop a set of them, write a file atomically,
and the wall time of named phases.

Everything here works on pids recorded in the state file, so ``down()`` can stop processes another run
started (their ``Popen`` objects are gone).
"""

import os
import signal
import time


def write_atomic(path, text, mode=0o644):
    temporary = '%s.%d.tmp' % (path, os.getpid())
    with open(temporary, 'w') as handle:
        handle.write(text)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def alive(pid):
    """True while ``pid`` runs (a zombie is not alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().split(') ', 1)[1][0] != 'Z'
    except OSError:
        return False


def cmdline(pid):
    """The command line of ``pid`` (arguments joined by spaces), '' when it is gone."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def reap(pids, timeout):
    """Wait up to ``timeout`` seconds for ``pids`` to end, reaping those that are our children."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.02)


def terminate(pids, timeout=5.0):
    """SIGTERM to each live pid, SIGKILL to those still alive after ``timeout`` seconds; waits for them."""
    pids = [pid for pid in pids if alive(pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    reap(pids, timeout)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    reap(pids, timeout)


def wait_until(ready, process, timeout, what, not_ready, output_file, error):
    """Poll ``ready()`` until it is true; raise ``error`` ('<what> did not start (<exit code, or not_ready after
    timeout s>): <the tail of output_file>') when ``process`` exits first or ``timeout`` seconds go by."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            with open(output_file) as handle:
                output = handle.read().strip()
            raise error('%s did not start (%s): %s' % (
                what, 'exit %s' % process.returncode if process.returncode is not None else '%s after %d s' % (not_ready, timeout),
                output[-500:] or 'no output'))
        time.sleep(0.01)


class Phases:
    """Wall time of named phases, in order."""

    def __init__(self):
        self.seconds = {}

    def timed(self, name):
        phases = self

        class _Timer:
            def __enter__(self):
                self.started = time.perf_counter()

            def __exit__(self, *exc):
                phases.seconds[name] = phases.seconds.get(name, 0.0) + time.perf_counter() - self.started
        return _Timer()
