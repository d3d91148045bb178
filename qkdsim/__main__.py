"""Command line: ``python -m qkdsim --state-dir DIR [--topology FILE] [--host H] [--log-file F]``.

Serves until SIGTERM or SIGINT, then stops cleanly and exits 0. Invalid input (topology, log
file) exits 2 with a one-line message; a failure to start exits 1.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from .server import Simulator, SimulatorError
from .topology import TopologyError, load_topology

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
log = logging.getLogger("qkdsim")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qkdsim" if sys.argv[0].endswith(".py") else None,
        description="Simulated QKD network: one ETSI GS QKD 014 KME (HTTPS, mutual TLS) per site.")
    parser.add_argument("--state-dir", required=True, help="directory for the PKI and endpoints.json")
    parser.add_argument("--topology", help="topology YAML file (default: the built-in five-site network)")
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address or name to listen on (default: %(default)s)")
    parser.add_argument("--log-file", help="append the log here instead of stderr")
    args = parser.parse_args(argv)

    try:
        topology = load_topology(args.topology)
        handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler()
    except (TopologyError, OSError) as exc:
        return _fail(str(exc) if isinstance(exc, TopologyError) else f"cannot open log file: {exc}", 2)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    # Block the stop signals before any thread starts (threads inherit the mask); sigwait takes them.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    simulator = Simulator(args.state_dir, topology, args.host)
    try:
        simulator.start()
    except (SimulatorError, OSError) as exc:
        return _fail(f"cannot start: {exc}", 1)
    try:
        received = signal.sigwait(_STOP_SIGNALS)
        log.info("qkdsim stopping on %s", signal.Signals(received).name)
    finally:
        simulator.stop()
    log.info("qkdsim stopped")
    return 0


def _fail(message: str, code: int) -> int:
    print(f"qkdsim: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
