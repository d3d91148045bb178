"""Fault controls of a running simulator (qkdsim.control), driven over its real control socket.

Each test drives a real ``python -m qkdsim`` process over ``control.sock`` and watches the ETSI
GS QKD 014 behaviour change from an SAE's side (mutual TLS, requests).
"""

from __future__ import annotations

import json
import socket
import ssl
import stat
import subprocess
import sys
import time

import pytest
import requests

from qkdsim_support import LAB_TOPOLOGY, REPO_ROOT, key_in_text, key_ids
from qkdsim.control import ControlClient, ControlError
from qkdsim.process import SimulatorProcess

KMES = ("KME-A", "KME-B", "KME-C", "KME-D", "KME-E")
LAB_QBER = {"A--B": 0.02, "A--C": 0.03, "A--D": 0.02, "A--E": 0.2}


@pytest.fixture(scope="module")
def fault_sim(tmp_path_factory, seen_keys):
    """A lab network of its own (faults must not leak into the shared simulators)."""
    simulator = SimulatorProcess(tmp_path_factory.mktemp("qkdsim-faults"), LAB_TOPOLOGY)
    yield simulator
    assert simulator.stop() == 0, "qkdsim did not exit 0 on SIGTERM"
    log = simulator.log_file.read_text()
    assert not [key for key in seen_keys if key_in_text(key, log)], "keys in the simulator log"


@pytest.fixture
def control(fault_sim):
    """The control client; every KME is up and every link at its topology QBER again afterwards."""
    client = ControlClient.for_state_dir(fault_sim.state_dir)
    yield client
    for kme in KMES:
        client.kme_up(kme)
    for link_id, qber in LAB_QBER.items():
        client.set_qber(link_id, qber)
        client.release(link_id)


def _port(simulator: SimulatorProcess, kme_id: str) -> int:
    return int(simulator.endpoints["kmes"][kme_id]["etsi014_url"].rsplit(":", 1)[1])


def _log_lines(simulator: SimulatorProcess, needle: str) -> list[str]:
    return [line for line in simulator.log_file.read_text().splitlines() if needle in line]


def _wait_for(predicate, timeout: float = 5.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass (a bounded wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def test_control_socket_is_private_and_listed_in_endpoints(fault_sim):
    control = fault_sim.endpoints["control"]
    assert control["format"] == "qkdsim-control/1"
    mode = (fault_sim.state_dir / "control.sock").stat().st_mode
    assert control["socket"] == str((fault_sim.state_dir / "control.sock").resolve())
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_kme_down_refuses_connections_cuts_open_ones_and_kme_up_serves_again(fault_sim, control, sae):
    master, other = sae(fault_sim, "SAE-A"), sae(fault_sim, "SAE-B1")
    assert master.stored("SAE-B1") > 0          # leaves a kept-alive connection open
    result = control.kme_down("KME-A")
    assert (result["state"], result["mode"], result["changed"]) == ("down", "refuse", True)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", _port(fault_sim, "KME-A")), timeout=2).close()
    with pytest.raises(requests.ConnectionError):
        master.enc_keys("SAE-B1")               # the kept-alive connection was cut; a new one is refused
    assert other.status("SAE-A").status_code == 200, "the other end's KME must stay up"
    assert control.kme_down("KME-A")["changed"] is False
    assert control.status()["kmes"]["KME-A"]["state"] == "down"

    result = control.kme_up("KME-A")
    assert (result["state"], result["changed"]) == ("up", True)
    [key_id] = key_ids(master.enc_keys("SAE-B1"))   # same URL as in endpoints.json
    assert key_ids(other.dec_keys("SAE-A", [key_id])) == [key_id]
    assert control.kme_up("KME-A")["changed"] is False


def test_kme_down_in_drop_mode_accepts_and_resets(fault_sim, control, sae):
    control.kme_down("KME-B", mode="drop")
    port = _port(fault_sim, "KME-B")
    for attempt in range(3):   # the TCP handshake completes (no refusal), then the connection is reset at once
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                raw.settimeout(2)
                assert raw.recv(1) == b"", f"attempt {attempt}: the dropped connection carried data"
        except ConnectionResetError:
            pass                # the reset may arrive before connect() returns or at the first recv()
    tls = ssl.create_default_context(cafile=fault_sim.endpoints["ca_cert"])
    with pytest.raises((ssl.SSLError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            tls.wrap_socket(raw, server_hostname="127.0.0.1").close()
    with pytest.raises(requests.ConnectionError):
        sae(fault_sim, "SAE-B1").status("SAE-A")
    assert control.status()["kmes"]["KME-B"] == {"kme_id": "KME-B", "state": "down", "mode": "drop"}
    control.kme_down("KME-B", mode="refuse")                                # switch modes while down
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    control.kme_up("KME-B")
    assert sae(fault_sim, "SAE-B1").status("SAE-A").status_code == 200


def test_drained_link_answers_503_until_it_refills_at_its_key_rate(fault_sim, control, sae):
    master = sae(fault_sim, "SAE-A")
    control.fill("A--C")
    assert master.stored("SAE-C") == 8
    result = control.drain("A--C")
    assert result["dropped_bits"] == 2048 and not result["held_empty"]
    response = master.enc_keys("SAE-C")
    assert response.status_code == 503 and "not enough key on QKD link A--C" in response.json()["message"]
    # 2560 bit/s and 256-bit keys: one key about every 0.1 s; the wait is bounded, not a timing check.
    assert _wait_for(lambda: master.enc_keys("SAE-C").status_code == 200, timeout=5)


def test_drain_with_hold_keeps_the_pool_empty_until_release(fault_sim, control, sae):
    master = sae(fault_sim, "SAE-A")
    assert master.stored("SAE-B1") > 0
    assert control.drain("A--B", hold=True)["held_empty"] is True
    time.sleep(0.3)   # at 51200 bit/s a refilling pool would hold about 60 keys by now
    assert master.stored("SAE-B1") == 0
    response = master.enc_keys("SAE-B1")
    assert response.status_code == 503 and "held empty" in response.json()["message"]
    assert control.status()["links"]["A--B"]["available_bits"] == 0
    control.release("A--B")
    assert _wait_for(lambda: master.enc_keys("SAE-B1").status_code == 200)
    assert master.enc_keys("SAE-D").status_code in (200, 503)   # other links untouched by the hold


def test_qber_set_at_run_time_raises_and_clears_the_alarm(fault_sim, control, sae):
    master = sae(fault_sim, "SAE-A")
    result = control.set_qber("A--B", 0.2)
    assert result["alarmed"] is True and result["available_bits"] == 0
    response = master.enc_keys("SAE-B1")
    assert response.status_code == 503
    assert response.json()["message"] == ("QKD link A--B is alarmed: QBER 0.2 is above the threshold 0.11; "
                                          "no key is distilled")
    assert master.stored("SAE-B1") == 0
    assert control.set_qber("A--B", 0.11)["alarmed"] is False     # at the threshold: not alarmed
    assert master.enc_keys("SAE-B1").status_code == 200
    # The topology's alarmed link A--E comes good when its QBER drops.
    assert master.enc_keys("SAE-E").status_code == 503
    control.set_qber("A--E", 0.05)
    assert master.enc_keys("SAE-E").status_code == 200


@pytest.mark.parametrize("request_fields, message", [
    ({"command": "reboot"}, "unknown command 'reboot' (known: kme-down, kme-up, drain, release, fill, qber, status)"),
    ({"command": "kme-down", "kme_id": "KME-Z"}, "kme-down: unknown KME 'KME-Z' (known: KME-A, KME-B, KME-C, KME-D, KME-E)"),
    ({"command": "kme-down", "kme_id": "KME-A", "mode": "crash"}, "kme-down: mode must be one of refuse, drop, got 'crash'"),
    ({"command": "kme-up"}, "kme-up: missing field(s) kme_id"),
    ({"command": "drain", "link_id": "C--A"}, "drain: unknown QKD link 'C--A'; did you mean A--C? (known: A--B, A--C, A--D, A--E)"),
    ({"command": "drain", "link_id": "A--B", "hold": "yes"}, "drain: field 'hold' must be true or false, got 'yes'"),
    ({"command": "qber", "link_id": "A--B", "qber": 1.5}, "qber: field 'qber' must be a number from 0 to 1, got 1.5"),
    ({"command": "qber", "link_id": "A--B", "qber": "high"}, "qber: field 'qber' must be a number from 0 to 1, got 'high'"),
    ({"command": "status", "verbose": True}, "status: unknown field(s) verbose (allowed: none)"),
])
def test_bad_commands_are_refused_naming_what_is_wrong_and_logged(fault_sim, control, request_fields, message):
    fields = dict(request_fields)
    with pytest.raises(ControlError) as err:
        control.call(fields.pop("command"), **fields)
    assert str(err.value) == message
    assert _wait_for(lambda: any(line.endswith("refused: " + message) for line in _log_lines(fault_sim, "control: ")))
    assert control.status()["kmes"]["KME-A"]["state"] == "up"


def test_a_request_that_is_not_json_is_refused(fault_sim):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(fault_sim.state_dir / "control.sock"))
        sock.sendall(b"kme-down KME-A\n")
        answer = json.loads(sock.makefile("rb").readline())
    assert answer == {"ok": False, "error": "the request is not valid JSON"}


def test_every_command_is_logged(fault_sim, control):
    control.drain("A--D", hold=True)
    control.fill("A--D")
    lines = _log_lines(fault_sim, "control: ")
    assert any("control: drain link_id=A--D hold=True from pid" in line and "held_empty=True" in line for line in lines)
    assert any("control: fill link_id=A--D from pid" in line and "held_empty=False" in line for line in lines)


def _control_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qkdsim.control", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=30, check=False)


def test_command_line(fault_sim, control, sae):
    state_dir = str(fault_sim.state_dir)
    done = _control_cli("--state-dir", state_dir, "qber", "A--B", "0.3")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["alarmed"] is True
    assert sae(fault_sim, "SAE-A").enc_keys("SAE-B1").status_code == 503
    done = _control_cli("--state-dir", state_dir, "kme-down", "KME-C", "--mode", "drop")
    assert done.returncode == 0 and json.loads(done.stdout)["mode"] == "drop"
    done = _control_cli("--state-dir", state_dir, "status")
    assert json.loads(done.stdout)["kmes"]["KME-C"]["state"] == "down"
    done = _control_cli("--state-dir", state_dir, "drain", "A--Q")
    assert done.returncode == 1 and done.stderr.startswith("qkdsim.control: drain: unknown QKD link 'A--Q'")
    done = _control_cli("--state-dir", state_dir, "qber", "A--B", "high")
    assert done.returncode == 2 and "invalid float value: 'high'" in done.stderr


def test_command_line_without_a_simulator_says_so(tmp_path):
    done = _control_cli("--state-dir", str(tmp_path), "status")
    assert done.returncode == 1
    assert done.stderr.startswith(f"qkdsim.control: no running simulator in {tmp_path}: cannot read ")


def test_stop_with_a_kme_down_exits_0_and_leaves_nothing(tmp_path, seen_keys):
    simulator = SimulatorProcess(tmp_path, LAB_TOPOLOGY)
    port = _port(simulator, "KME-A")
    ControlClient.for_state_dir(tmp_path).kme_down("KME-A", mode="drop")
    ControlClient.for_state_dir(tmp_path).kme_down("KME-D")
    assert simulator.stop() == 0
    assert not (tmp_path / "control.sock").exists() and not simulator.endpoints_file.exists()
    with pytest.raises(ConnectionRefusedError):   # the drop listener is gone too
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_kme_down_takes_every_interface_of_the_kme_down_and_up(tmp_path):
    """A KME serving more than ETSI 014 (Cisco SKIP, ETSI 004): all its ports close and reopen together."""
    topology = tmp_path / "interfaces.yml"
    topology.write_text("sites:\n"
                        "  - {id: A, interfaces: [etsi014, skip, etsi004]}\n"
                        "  - {id: B, interfaces: [etsi014, skip, etsi004]}\n"
                        "links:\n"
                        "  - {sites: [A, B], technology: DV, key_rate_bps: 51200, pool_capacity_bits: 1048576,"
                        " initial_fill: 1.0, qber: 0.02}\n")
    simulator = SimulatorProcess(tmp_path / "state", topology)
    try:
        def ports(kme_id: str) -> list[int]:
            interfaces = simulator.endpoints["kmes"][kme_id]["interfaces"]
            return sorted(int(entry["url"].rsplit(":", 1)[1]) for entry in interfaces.values())

        def listening(port: int) -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            except ConnectionRefusedError:
                return False
            return True

        assert len(ports("KME-A")) == 3, simulator.endpoints["kmes"]["KME-A"]
        control = ControlClient.for_state_dir(tmp_path / "state")
        control.kme_down("KME-A")
        assert [listening(port) for port in ports("KME-A")] == [False, False, False]
        assert [listening(port) for port in ports("KME-B")] == [True, True, True]
        control.kme_up("KME-A")
        assert [listening(port) for port in ports("KME-A")] == [True, True, True]
    finally:
        assert simulator.stop() == 0
