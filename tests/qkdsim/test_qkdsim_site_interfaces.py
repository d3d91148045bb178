"""A KME serves the key-delivery interfaces its site lists, and only those (default: ETSI 014 only).

As in a multi-vendor QKD network, a KME that speaks ETSI 004 or Cisco SKIP alone has no ETSI 014 service:
the simulator opens no port for it, endpoints.json does not list it, and the fault controls still take every
server of such a KME down and up (they match a KME's servers by name).
"""

from __future__ import annotations

import os
import socket

import pytest
import requests

from qkdsim.control import ControlClient
from qkdsim.process import SimulatorProcess

TOPOLOGY = """\
sites:
  - {id: A}                                   # no interfaces: ETSI 014 only
  - {id: B, interfaces: [etsi004]}
  - {id: C, interfaces: [skip]}
  - {id: D, interfaces: [skip, etsi004]}
links:
  - {sites: [A, B], technology: DV, key_rate_bps: 51200, pool_capacity_bits: 1048576, initial_fill: 1.0, qber: 0.02}
  - {sites: [B, C], technology: DV, key_rate_bps: 51200, pool_capacity_bits: 1048576, initial_fill: 1.0, qber: 0.02}
  - {sites: [C, D], technology: DV, key_rate_bps: 51200, pool_capacity_bits: 1048576, initial_fill: 1.0, qber: 0.02}
"""
# Ports each KME listens on: ETSI 014 one, Cisco SKIP one, ETSI 004 two (JSON dialect and binary framing).
PORTS = {"etsi014": 1, "skip": 1, "etsi004": 2}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    state = tmp_path_factory.mktemp("qkdsim-site-interfaces")
    topology = state / "topology.yml"
    topology.write_text(TOPOLOGY)
    simulator = SimulatorProcess(state / "state", topology)
    yield simulator
    assert simulator.stop() == 0


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its socket inodes matched against /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:   # state 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def endpoint_ports(kme: dict) -> set[int]:
    ports = set()
    for entry in kme["interfaces"].values():
        for field in ("url", "binary_url"):
            if field in entry:
                ports.add(int(entry[field].rsplit(":", 1)[1]))
    return ports


def test_each_kme_lists_exactly_the_interfaces_of_its_site(sim):
    kmes = sim.endpoints["kmes"]
    assert {kme_id: list(kme["interfaces"]) for kme_id, kme in kmes.items()} == {
        "KME-A": ["etsi014"], "KME-B": ["etsi004"], "KME-C": ["skip"], "KME-D": ["skip", "etsi004"]}
    # the flat etsi014_url only where ETSI 014 is served
    assert [kme_id for kme_id, kme in sorted(kmes.items()) if "etsi014_url" in kme] == ["KME-A"]
    assert kmes["KME-A"]["etsi014_url"] == kmes["KME-A"]["interfaces"]["etsi014"]["url"]
    saes = sim.endpoints["saes"]
    assert sorted(sae for sae, entry in saes.items() if "skip_psk_file" in entry) == ["SAE-C", "SAE-D"]


def test_the_simulator_listens_on_exactly_the_listed_ports(sim):
    kmes = sim.endpoints["kmes"]
    for kme_id, kme in kmes.items():
        assert len(endpoint_ports(kme)) == sum(PORTS[interface] for interface in kme["interfaces"]), kme_id
    listed = set().union(*(endpoint_ports(kme) for kme in kmes.values()))
    assert listening_ports(sim.process.pid) == listed   # no ETSI 014 server behind an 004- or SKIP-only KME
    log = sim.log_file.read_text()
    assert [line.split()[3] for line in log.splitlines() if " serves ETSI GS QKD 014 at " in line] == ["KME-A"]
    assert " qkdsim ready: 4 KMEs, 3 QKD links, " in log


def test_kme_down_and_up_work_for_kmes_without_etsi014(sim):
    control = ControlClient.for_state_dir(sim.state_dir)

    def listening(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except ConnectionRefusedError:
            return False
        return True

    for kme_id in ("KME-B", "KME-C", "KME-D"):
        ports = sorted(endpoint_ports(sim.endpoints["kmes"][kme_id]))
        try:
            assert control.kme_down(kme_id)["state"] == "down"
            assert [listening(port) for port in ports] == [False] * len(ports), kme_id
            assert all(listening(port) for port in endpoint_ports(sim.endpoints["kmes"]["KME-A"]))
        finally:
            control.kme_up(kme_id)
        assert [listening(port) for port in ports] == [True] * len(ports), kme_id


def test_the_default_kme_still_serves_etsi014(sim):
    """Site A lists no interfaces: its KME answers ETSI 014 status calls as before."""
    sae = sim.endpoints["saes"]["SAE-A"]
    response = requests.get(sim.endpoints["kmes"]["KME-A"]["etsi014_url"] + "/api/v1/keys/SAE-B/status",
                            cert=(sae["client_cert"], sae["client_key"]), verify=sim.endpoints["ca_cert"], timeout=10)
    assert response.status_code == 200 and response.json()["slave_SAE_ID"] == "SAE-B"
