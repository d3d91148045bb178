"""Fault controls of a running simulator: KMEs down and up, QKD link pools drained, QBER set.

The simulator serves a control channel on a UNIX socket in its state directory (``control.sock``,
mode 0600, named in ``endpoints.json`` under ``control``). One JSON request per connection, one
JSON answer::

    {"command": "kme-down", "kme_id": "KME-MAD-1", "mode": "refuse"}
    -> {"ok": true, "result": {...}}  or  {"ok": false, "error": "unknown KME 'KME-X' (known: ...)"}

Commands (every one is logged, refused ones with the reason):

=========  ===========================  =====================================================
command    fields                       effect
=========  ===========================  =====================================================
kme-down   kme_id, mode (refuse|drop)   every interface of the KME stops; open connections are
                                        cut. ``refuse``: its port refuses connections;
                                        ``drop``: its port accepts and resets them at once.
kme-up     kme_id                       the KME serves again on the same port(s).
drain      link_id, hold (bool)         the link's pool is emptied (503 from ETSI 014 until it
                                        refills at its key rate; with ``hold`` it stays empty).
release    link_id                      end a hold: the pool refills at its key rate from now.
fill       link_id                      the pool is full at once (ends a hold).
qber       link_id, qber (0..1)         the link's QBER from now on; above the link's
                                        threshold the link is alarmed and distils no key.
status     -                            the state of every KME and link.
=========  ===========================  =====================================================

``SimulatorControl`` (this module) holds the logic and serves the socket inside the simulator;
``ControlClient`` is the Python API and ``qkdsim-control --state-dir DIR COMMAND ...`` (or
``python -m qkdsim.control``) the command line, both in ``qkdsim.control_client`` and importable
from here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import struct
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from .control_client import CONTROL_FORMAT, CONTROL_SOCKET, DOWN_MODES, MAX_REQUEST_BYTES, ControlClient, ControlError, main

__all__ = ["CONTROL_FORMAT", "CONTROL_SOCKET", "DOWN_MODES", "ControlClient", "ControlError", "SimulatorControl", "main"]

log = logging.getLogger("qkdsim")

_SOCKET_TIMEOUT = 5.0
_POLL_INTERVAL = 0.1
_MAX_UNIX_PATH = 107
_COMMAND_FIELDS = {
    "kme-down": ({"kme_id"}, {"mode"}),
    "kme-up": ({"kme_id"}, set()),
    "drain": ({"link_id"}, {"hold"}),
    "release": ({"link_id"}, set()),
    "fill": ({"link_id"}, set()),
    "qber": ({"link_id", "qber"}, set()),
    "status": (set(), set()),
}


@dataclass
class _DownKme:
    """A KME that is down: how to bring its servers back, and the drop listeners while in ``drop`` mode."""

    mode: str
    specs: list[tuple[type, tuple, Any, Any, str, Any]]     # (class, address, handler, tls, name, context)
    droppers: list[_Dropper] = field(default_factory=list)


class _Dropper:
    """A plain TCP listener on a down KME's port that accepts every connection and resets it at once."""

    def __init__(self, address: tuple):
        self.sock = socket.create_server(address, reuse_port=False)
        self.sock.settimeout(_POLL_INTERVAL)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"qkdsim-drop-{address[1]}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                connection, unused_peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError):
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join()
        self.sock.close()


class SimulatorControl:
    """The fault controls of one running ``Simulator`` and the UNIX socket that serves them."""

    def __init__(self, simulator: Any, keystore: Any):
        self.simulator = simulator
        self.socket_path = simulator.state_dir / CONTROL_SOCKET
        self._kmes = {site.kme_id for site in simulator.topology.sites}
        self._pools = {pool.link.link_id: pool for pool in keystore.pools()}
        self._down: dict[str, _DownKme] = {}
        self._server: socketserver.UnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    # -- the channel ------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on ``control.sock`` (mode 0600) in the state directory."""
        if len(os.fsencode(self.socket_path)) > _MAX_UNIX_PATH:
            raise OSError(f"control socket path {self.socket_path} is longer than {_MAX_UNIX_PATH} bytes "
                          "(a UNIX socket limit): use a shorter state directory")
        self.socket_path.unlink(missing_ok=True)   # left by a killed run (the state dir is ours now)
        previous = os.umask(0o177)
        try:
            self._server = _ControlServer(str(self.socket_path), self)
        finally:
            os.umask(previous)
        os.chmod(self.socket_path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(_POLL_INTERVAL,),
                                        name="qkdsim-control", daemon=True)
        self._thread.start()
        log.info("qkdsim control channel at %s", self.socket_path)

    def describe(self) -> dict:
        """The ``control`` entry of endpoints.json."""
        return {"format": CONTROL_FORMAT, "socket": str(self.socket_path)}

    def stop(self) -> None:
        """Close the channel and every drop listener; down KMEs stay closed. Safe to call twice."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None
            self.socket_path.unlink(missing_ok=True)
        for down in self._down.values():
            for dropper in down.droppers:
                dropper.close()
            down.droppers = []

    # -- the commands -----------------------------------------------------------------------

    def execute(self, request: Any) -> dict:
        """Run one request (a dict); returns its result or raises ControlError naming what is wrong."""
        if not isinstance(request, dict):
            raise ControlError(f"a request is a JSON object with a 'command', got {type(request).__name__}")
        command = request.get("command")
        if command not in _COMMAND_FIELDS:
            raise ControlError(f"unknown command {command!r} (known: {', '.join(_COMMAND_FIELDS)})")
        required, optional = _COMMAND_FIELDS[command]
        unknown = sorted(set(request) - required - optional - {"command"})
        if unknown:
            allowed = ", ".join(sorted(required | optional)) or "none"
            raise ControlError(f"{command}: unknown field(s) {', '.join(unknown)} (allowed: {allowed})")
        missing = sorted(required - set(request))
        if missing:
            raise ControlError(f"{command}: missing field(s) {', '.join(missing)}")
        try:
            return self._run(command, request)
        except ControlError as exc:
            if str(exc).startswith(command + ":"):
                raise
            raise ControlError(f"{command}: {exc}") from None

    def _run(self, command: str, request: dict) -> dict:
        if command == "status":
            return self.status()
        if command in ("kme-down", "kme-up"):
            kme_id = self._kme(request["kme_id"])
            if command == "kme-up":
                return self.kme_up(kme_id)
            return self.kme_down(kme_id, request.get("mode", "refuse"))
        pool = self._pool(request["link_id"])
        if command == "drain":
            hold = request.get("hold", False)
            if not isinstance(hold, bool):
                raise ControlError(f"field 'hold' must be true or false, got {hold!r}")
            dropped = pool.drain(hold)
            return dict(self._link_state(pool), dropped_bits=dropped)
        if command == "release":
            pool.release()
        elif command == "fill":
            pool.fill()
        else:
            qber = request["qber"]
            if isinstance(qber, bool) or not isinstance(qber, (int, float)) or not 0 <= qber <= 1:
                raise ControlError(f"field 'qber' must be a number from 0 to 1, got {qber!r}")
            pool.qber = float(qber)
        return self._link_state(pool)

    def kme_down(self, kme_id: str, mode: str = "refuse") -> dict:
        """Stop every server of ``kme_id`` and cut its connections; ``drop`` mode resets new ones."""
        if mode not in DOWN_MODES:
            raise ControlError(f"kme-down: mode must be one of {', '.join(DOWN_MODES)}, got {mode!r}")
        down = self._down.get(kme_id)
        if down is None:
            entries = [entry for entry in self.simulator._servers if _serves_kme(entry[0], kme_id)]
            if not entries:
                raise ControlError(f"kme-down: {kme_id} has no running server")
            for server, thread in entries:
                self.simulator._servers.remove((server, thread))
                server.shutdown()
                server.close_connections()
                server.server_close()
                thread.join()
            down = self._down[kme_id] = _DownKme(mode, [
                (type(server), server.server_address, server.RequestHandlerClass, server.tls, server.name,
                 server.context) for server, thread in entries])
        elif down.mode == mode:
            return dict(self._kme_state(kme_id), changed=False)
        for dropper in down.droppers:
            dropper.close()
        down.mode = mode
        try:
            down.droppers = [_Dropper(spec[1]) for spec in down.specs] if mode == "drop" else []
        except OSError as exc:
            raise ControlError(f"kme-down: {kme_id} is down but its port cannot take drop mode: {exc}") from None
        return dict(self._kme_state(kme_id), changed=True)

    def kme_up(self, kme_id: str) -> dict:
        """Serve ``kme_id`` again on the port(s) it had."""
        down = self._down.get(kme_id)
        if down is None:
            return dict(self._kme_state(kme_id), changed=False)
        for dropper in down.droppers:
            dropper.close()
        down.droppers = []
        started = []
        try:
            for cls, address, handler, tls, name, context in down.specs:
                server = cls(address, handler, tls, name=name, context=context)
                thread = threading.Thread(target=server.serve_forever, args=(_POLL_INTERVAL,),
                                          name=f"qkdsim-{name}", daemon=True)
                started.append((server, thread))
                thread.start()
        except OSError as exc:
            for server, thread in started:
                server.shutdown()
                server.server_close()
                thread.join()
            raise ControlError(f"kme-up: {kme_id} cannot listen on its port again: {exc.strerror or exc}") from None
        self.simulator._servers.extend(started)
        del self._down[kme_id]
        return dict(self._kme_state(kme_id), changed=True)

    def status(self) -> dict:
        """Every KME (up, or down and how) and every QKD link (QBER, alarm, key available, hold)."""
        return {"kmes": {kme_id: self._kme_state(kme_id) for kme_id in sorted(self._kmes)},
                "links": {link_id: self._link_state(pool) for link_id, pool in self._pools.items()}}

    def _kme_state(self, kme_id: str) -> dict:
        down = self._down.get(kme_id)
        return {"kme_id": kme_id, "state": "down" if down else "up", "mode": down.mode if down else None}

    @staticmethod
    def _link_state(pool: Any) -> dict:
        link = pool.link
        return {"link_id": link.link_id, "qber": pool.qber, "qber_threshold": link.policy.qber_threshold,
                "alarmed": pool.alarmed, "available_bits": pool.available_bits(), "held_empty": pool.held_empty,
                "key_rate_bps": link.key_rate_bps, "pool_capacity_bits": link.pool_capacity_bits}

    def _kme(self, kme_id: Any) -> str:
        if kme_id not in self._kmes:
            raise ControlError(f"unknown KME {kme_id!r} (known: {_some(sorted(self._kmes))})")
        return kme_id

    def _pool(self, link_id: Any) -> Any:
        pool = self._pools.get(link_id)
        if pool is None:
            hint = ""
            if isinstance(link_id, str) and "--" in link_id:
                reverse = "--".join(reversed(link_id.split("--", 1)))
                hint = f"; did you mean {reverse}?" if reverse in self._pools else ""
            raise ControlError(f"unknown QKD link {link_id!r}{hint} (known: {_some(list(self._pools))})")
        return pool


def _serves_kme(server: Any, kme_id: str) -> bool:
    """True if ``server`` is one of ``kme_id``'s interfaces (its name is the KME ID, or starts with it and '/')."""
    name = getattr(server, "kme_id", None) or server.name
    return name == kme_id or name.startswith(kme_id + "/")


def _some(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


class _ControlServer(socketserver.UnixStreamServer):
    """Serves control requests one at a time (commands are short), one request per connection."""

    def __init__(self, path: str, control: SimulatorControl):
        self.control = control
        super().__init__(path, _ControlHandler)


class _ControlHandler(socketserver.StreamRequestHandler):
    server: _ControlServer

    def handle(self) -> None:
        self.connection.settimeout(_SOCKET_TIMEOUT)
        pid, uid, unused_gid = struct.unpack("3i", self.connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        caller = f"pid {pid} uid {uid}"
        try:
            line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
        except OSError as exc:
            log.warning("control: request from %s not read: %s", caller, exc)
            return
        summary = _summary(line)
        try:
            if uid not in (os.getuid(), 0):
                raise ControlError(f"uid {uid} may not control this simulator (it runs as uid {os.getuid()})")
            if len(line) > MAX_REQUEST_BYTES or not line.endswith(b"\n"):
                raise ControlError(f"a request is one JSON object on one line of at most {MAX_REQUEST_BYTES} bytes")
            try:
                request = json.loads(line)
            except ValueError:
                raise ControlError("the request is not valid JSON") from None
            result = self.server.control.execute(request)
        except ControlError as exc:
            log.warning("control: %s from %s refused: %s", summary, caller, exc)
            answer = {"ok": False, "error": str(exc)}
        except Exception:  # a simulator bug: log it, answer, keep serving
            log.exception("control: %s from %s failed", summary, caller)
            answer = {"ok": False, "error": "internal simulator error (see the simulator log)"}
        else:
            log.info("control: %s from %s: %s", summary, caller, _result_line(result))
            answer = {"ok": True, "result": result}
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(answer).encode() + b"\n")


def _summary(line: bytes) -> str:
    """The request as one log-safe line: its command and fields (values are IDs and numbers, never keys)."""
    try:
        request = json.loads(line)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return "malformed request"
    fields = [f"{name}={value}" for name, value in request.items() if name != "command"]
    text = " ".join([str(request.get("command"))] + fields)
    return text[:300].encode("unicode_escape").decode("ascii")


def _result_line(result: dict) -> str:
    if "kmes" in result:
        down = [kme for kme, state in result["kmes"].items() if state["state"] == "down"]
        return f"status ({len(down)} KMEs down)"
    return " ".join(f"{name}={value}" for name, value in result.items())


if __name__ == "__main__":
    sys.exit(main())
