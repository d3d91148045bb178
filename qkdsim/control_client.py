"""The client side of a running simulator's fault controls (``qkdsim.control``): ``ControlClient``, the
Python API, and ``main``, the command line (``qkdsim-control``, ``python -m qkdsim.control``).

One JSON request per connection to the simulator's UNIX socket, one JSON answer; the commands and
what they do are described in ``qkdsim.control``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

CONTROL_FORMAT = "qkdsim-control/1"
CONTROL_SOCKET = "control.sock"
DOWN_MODES = ("refuse", "drop")
MAX_REQUEST_BYTES = 65536


class ControlError(Exception):
    """A control command was refused (the message says why) or the channel cannot be reached."""


# -- the Python API -------------------------------------------------------------------------

class ControlClient:
    """The control channel of a running simulator.

    ``ControlClient.for_state_dir(DIR)`` finds the socket through ``DIR/endpoints.json``. Every
    method returns the command's result (a dict) or raises ControlError with the simulator's reason.
    """

    def __init__(self, socket_path: str | Path, timeout: float = 10.0):
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    @classmethod
    def for_state_dir(cls, state_dir: str | Path, timeout: float = 10.0) -> ControlClient:
        endpoints_file = Path(state_dir) / "endpoints.json"
        try:
            endpoints = json.loads(endpoints_file.read_text())
        except (OSError, ValueError) as exc:
            raise ControlError(f"no running simulator in {state_dir}: cannot read {endpoints_file}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        control = endpoints.get("control") if isinstance(endpoints, dict) else None
        if not isinstance(control, dict) or not control.get("socket"):
            raise ControlError(f"{endpoints_file} names no control socket (a simulator without fault controls)")
        return cls(control["socket"], timeout)

    def call(self, command: str, **fields: Any) -> dict:
        """Send one command; its result, or ControlError."""
        request = json.dumps(dict(fields, command=command)).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(request)
                with sock.makefile("rb") as answer_file:
                    line = answer_file.readline(MAX_REQUEST_BYTES * 16)
        except OSError as exc:
            raise ControlError(f"cannot reach the simulator's control socket {self.socket_path}: "
                               f"{exc.strerror or exc}") from None
        try:
            answer = json.loads(line)
        except ValueError:
            raise ControlError(f"no valid answer from {self.socket_path} to {command}") from None
        if not answer.get("ok"):
            raise ControlError(answer.get("error") or f"{command} refused")
        return answer["result"]

    def kme_down(self, kme_id: str, mode: str = "refuse") -> dict:
        return self.call("kme-down", kme_id=kme_id, mode=mode)

    def kme_up(self, kme_id: str) -> dict:
        return self.call("kme-up", kme_id=kme_id)

    def drain(self, link_id: str, hold: bool = False) -> dict:
        return self.call("drain", link_id=link_id, hold=hold)

    def release(self, link_id: str) -> dict:
        return self.call("release", link_id=link_id)

    def fill(self, link_id: str) -> dict:
        return self.call("fill", link_id=link_id)

    def set_qber(self, link_id: str, qber: float) -> dict:
        return self.call("qber", link_id=link_id, qber=qber)

    def status(self) -> dict:
        return self.call("status")


# -- the command line -----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m qkdsim.control --state-dir DIR COMMAND ...``: prints the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m qkdsim.control" if sys.argv[0].endswith(".py") else None,
                                     description="Fault controls of a running qkdsim (its control socket).")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--state-dir", help="the simulator's state directory (its endpoints.json names the socket)")
    where.add_argument("--socket", help="the control socket itself")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    down = commands.add_parser("kme-down", help="take a KME down (its port refuses, or drops, connections)")
    down.add_argument("kme_id")
    down.add_argument("--mode", choices=DOWN_MODES, default="refuse",
                      help="refuse: connections are refused; drop: accepted and reset at once (default: %(default)s)")
    commands.add_parser("kme-up", help="bring a KME back on its port").add_argument("kme_id")
    drain = commands.add_parser("drain", help="empty a QKD link's pool (503 until it refills)")
    drain.add_argument("link_id")
    drain.add_argument("--hold", action="store_true", help="keep the pool empty until release or fill")
    commands.add_parser("release", help="end a hold: the pool refills at its key rate").add_argument("link_id")
    commands.add_parser("fill", help="fill a QKD link's pool at once").add_argument("link_id")
    qber = commands.add_parser("qber", help="set a QKD link's QBER (above its threshold: alarm, no key)")
    qber.add_argument("link_id")
    qber.add_argument("qber", type=float)
    commands.add_parser("status", help="the state of every KME and link")
    args = parser.parse_args(argv)

    fields = {name: value for name, value in vars(args).items()
              if name not in ("state_dir", "socket", "command") and value is not None}
    if args.command == "drain":
        fields["hold"] = args.hold
    try:
        client = ControlClient(args.socket) if args.socket else ControlClient.for_state_dir(args.state_dir)
        result = client.call(args.command, **fields)
    except ControlError as exc:
        print(f"qkdsim.control: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
