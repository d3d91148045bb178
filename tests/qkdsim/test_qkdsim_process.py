"""The simulator as a process (CLI, signals, restart) and in-process (``Simulator``)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from qkdsim_support import LAB_TOPOLOGY, REPO_ROOT, SaeClient
from qkdsim.process import SimulatorProcess

from qkdsim.server import Simulator, SimulatorError
from qkdsim.topology import load_topology


def _ca_fingerprint(endpoints: dict) -> str:
    with open(endpoints["ca_cert"], "rb") as handle:
        return x509.load_pem_x509_certificate(handle.read()).fingerprint(hashes.SHA256()).hex()


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qkdsim", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_0_quickly_and_removes_endpoints(tmp_path, signum, seen_keys):
    simulator = SimulatorProcess(tmp_path)
    client = SaeClient(simulator.endpoints, "SAE-MAD-1", seen_keys)
    assert client.status("SAE-MAD-2").status_code == 200  # leaves a keep-alive connection open
    # "Quickly": stop() waits 5 s, then kills the process, which fails this test (TimeoutExpired).
    assert simulator.stop(signum) == 0
    assert not simulator.endpoints_file.exists()
    assert "Traceback" not in simulator.log_file.read_text()
    client.session.close()


def test_restart_reuses_the_pki(tmp_path):
    first = SimulatorProcess(tmp_path, LAB_TOPOLOGY)
    fingerprint = _ca_fingerprint(first.endpoints)
    sae_cert = Path(first.endpoints["saes"]["SAE-B2"]["client_cert"])
    sae_pem = sae_cert.read_bytes()
    assert first.stop() == 0
    second = SimulatorProcess(tmp_path, LAB_TOPOLOGY)
    try:
        assert _ca_fingerprint(second.endpoints) == fingerprint
        assert sae_cert.read_bytes() == sae_pem
        assert second.endpoints["pid"] != first.endpoints["pid"]
    finally:
        assert second.stop() == 0


def test_endpoints_document(default_sim):
    endpoints = json.loads(default_sim.endpoints_file.read_text())
    assert endpoints["format"] == "qkdsim-endpoints/1"
    assert endpoints["state_dir"] == str(default_sim.state_dir.resolve())
    assert endpoints["pid"] == default_sim.process.pid
    assert sorted(endpoints["sites"]) == ["MAD-1", "MAD-2", "MAD-3", "MEX-1", "NSP-1"]
    for kme_id, kme in endpoints["kmes"].items():
        assert kme["kme_id"] == kme_id and kme["interfaces"]["etsi014"]["url"] == kme["etsi014_url"]
        assert kme["etsi014_url"].startswith("https://127.0.0.1:")
    assert endpoints["saes"]["SAE-MEX-1"] == {
        "sae_id": "SAE-MEX-1", "site": "MEX-1", "kme_id": "KME-MEX-1",
        "client_cert": f"{endpoints['state_dir']}/pki/sae/SAE-MEX-1.pem",
        "client_key": f"{endpoints['state_dir']}/pki/sae/SAE-MEX-1.key"}
    assert endpoints["links"][0] == {
        "link_id": "MAD-1--MAD-2", "sites": ["MAD-1", "MAD-2"], "kmes": ["KME-MAD-1", "KME-MAD-2"],
        "technology": "DV", "key_rate_bps": 51200, "pool_capacity_bits": 1048576, "initial_fill": 1.0,
        "qber": 0.02, "qber_threshold": 0.11, "key_size": 256, "distance_km": 8}
    material = endpoints["test_material"]
    assert set(material) == {"purpose", "rogue_ca_cert", "rogue_client_cert", "rogue_client_key",
                             "expired_client_cert", "expired_client_key", "sae_id"}
    assert all(material[name].startswith("/") for name in material if name not in ("purpose", "sae_id"))


def test_state_dir_in_use_is_refused(default_sim):
    result = _run_cli("--state-dir", str(default_sim.state_dir))
    assert result.returncode == 1
    assert result.stderr == f"qkdsim: cannot start: {default_sim.state_dir.resolve()} is in use by a running " \
                            f"simulator (pid {default_sim.process.pid})\n"


@pytest.mark.parametrize("topology, fragment", [
    ("sites:\n  - id: A\nlinks:\n  - sites: [A, Z]\n    technology: DV\n",
     "links[0] (A--Z): field 'sites': unknown site 'Z'"),
    ("sites: [", "invalid YAML: line 1"),
])
def test_bad_topology_exits_2_with_one_line(tmp_path, topology, fragment):
    path = tmp_path / "bad.yml"
    path.write_text(topology)
    result = _run_cli("--state-dir", str(tmp_path / "state"), "--topology", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"qkdsim: {path}: ") and fragment in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_missing_topology_and_log_file_exit_2(tmp_path):
    result = _run_cli("--state-dir", str(tmp_path), "--topology", str(tmp_path / "none.yml"))
    assert (result.returncode, result.stderr) == (2, f"qkdsim: {tmp_path}/none.yml: cannot read topology file: "
                                                     "No such file or directory\n")
    result = _run_cli("--state-dir", str(tmp_path), "--log-file", str(tmp_path / "no" / "such" / "dir.log"))
    assert result.returncode == 2 and result.stderr.startswith("qkdsim: cannot open log file:")


def test_in_process_simulator(tmp_path, seen_keys):
    simulator = Simulator(tmp_path, load_topology(LAB_TOPOLOGY))
    with simulator:
        endpoints = json.loads((tmp_path / "endpoints.json").read_text())
        assert endpoints == simulator.endpoints
        client = SaeClient(endpoints, "SAE-A", seen_keys)
        assert client.status("SAE-B1").json()["target_KME_ID"] == "KME-B"
        with pytest.raises(SimulatorError, match="in use"):
            Simulator(tmp_path, load_topology(LAB_TOPOLOGY)).start()
    assert not (tmp_path / "endpoints.json").exists()
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("qkdsim-")]
    with pytest.raises(requests.exceptions.ConnectionError):
        client.status("SAE-B1")  # the keep-alive connection was closed, the port no longer listens
    port = int(endpoints["kmes"]["KME-A"]["etsi014_url"].rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
