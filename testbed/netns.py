"""Network namespaces by name: create and delete them, run a command in one, and reach into one from a thread.

Linux gives each thread its own network namespace: ``in_netns(name)`` moves the calling thread
into a named namespace (``setns``), so one process can open sockets in every site of the testbed
at once (``icmp_echo``) without a process per probe.
"""

import ctypes
import errno
import os
import socket
import struct
import subprocess
import time

NETNS_DIR = '/run/netns'
CLONE_NEWNET = 0x40000000

_LIBC = ctypes.CDLL(None, use_errno=True)


def names():
    """The named network namespaces (``ip netns list``), sorted."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def ip(*args, netns=None, check=True):
    """``ip [-n netns] ARGS``; raises CalledProcessError naming the command and its message when it fails."""
    command = ['ip'] + (['-n', netns] if netns else []) + list(args)
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if check and done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)
    return done


def batch(lines, netns=None, check=True):
    """Many ``ip`` commands in one process (``ip [-n netns] -batch -``), one line each, e.g. ``link set lo up``."""
    command = ['ip'] + (['-n', netns] if netns else []) + ['-batch', '-']
    done = subprocess.run(command, input='\n'.join(lines) + '\n', stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False)
    if check and done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)
    return done


def pids(name):
    """Process IDs whose network namespace is ``name`` (``ip netns pids``)."""
    done = ip('netns', 'pids', name, check=False)
    return [int(pid) for pid in done.stdout.split() if pid.isdigit()]


def run(name, command, timeout=30, env=None):
    """``command`` (argv list) inside network namespace ``name``; the CompletedProcess (text, never raises on exit code)."""
    return subprocess.run(['ip', 'netns', 'exec', name] + list(command), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env, check=False)


def in_netns(name):
    """Move the calling thread into network namespace ``name`` (for sockets opened afterwards)."""
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        if _LIBC.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, 'setns into network namespace %s: %s' % (name, os.strerror(err)))
    finally:
        os.close(fd)


def _checksum(data):
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xffff)
    total += total >> 16
    return ~total & 0xffff


def icmp_echo(name, source, destination, timeout=2.0, identifier=None):
    """Round-trip time in seconds of one ICMP echo from ``source`` to ``destination`` inside namespace
    ``name``, or None when no reply came within ``timeout``. Runs in the calling thread, which it
    moves into the namespace: call it from a thread of its own (testbed.Testbed.ping does)."""
    in_netns(name)
    identifier = (identifier if identifier is not None else os.getpid() ^ id(object())) & 0xffff
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.bind((source, 0))
        header = struct.pack('!BBHHH', 8, 0, 0, identifier, 1)
        payload = b'qsafe-testbed'
        packet = struct.pack('!BBHHH', 8, 0, _checksum(header + payload), identifier, 1) + payload
        started = time.monotonic()
        deadline = started + timeout
        sock.sendto(packet, (destination, 0))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            try:
                data, sender = sock.recvfrom(2048)
            except socket.timeout:
                return None
            except OSError as error:
                if error.errno == errno.EINTR:
                    continue
                raise
            header_length = (data[0] & 0x0f) * 4
            kind, code, _checksum_field, reply_id, sequence = struct.unpack('!BBHHH', data[header_length:header_length + 8])
            if sender[0] == destination and kind == 0 and code == 0 and reply_id == identifier and sequence == 1:
                return time.monotonic() - started
