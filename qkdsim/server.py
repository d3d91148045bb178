"""The simulated QKD network: per KME a server for each key-delivery interface its site lists (ETSI GS QKD
014 unless the topology says otherwise; ETSI 004, Cisco SKIP), all in one process.

``Simulator(state_dir, topology).start()`` creates or reuses the PKI, starts every KME's servers on free
loopback ports and the fault control channel (qkdsim.control), then writes ``endpoints.json`` (the
readiness signal); ``stop()`` removes it and closes everything.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from .control import SimulatorControl
from .etsi004 import Etsi004Api, Etsi004Streams
from .etsi004_wire import WIRE_FORMATS
from .etsi014 import Etsi014Api, Etsi014Handler
from .files import write_atomic
from .httpd import TlsHttpServer, server_tls_context
from .keystore import KeyStore
from .pki import Pki, ensure_pki
from .skip import SkipApi, SkipHandler, ensure_psks, skip_tls_context
from .topology import Topology, load_topology

ENDPOINTS_FORMAT = "qkdsim-endpoints/1"
ENDPOINTS_FILE = "endpoints.json"
_POLL_INTERVAL = 0.1

log = logging.getLogger("qkdsim")


class SimulatorError(RuntimeError):
    """The simulator cannot start (for example its state directory is in use)."""


class Simulator:
    """A running simulated QKD network, served from background threads of this process."""

    def __init__(self, state_dir: str | Path, topology: Topology | None = None, host: str = "127.0.0.1"):
        self.state_dir = Path(state_dir).resolve()
        self.topology = topology or load_topology()
        self.host = host
        self.endpoints_path = self.state_dir / ENDPOINTS_FILE
        self.endpoints: dict | None = None
        self._servers: list[tuple[TlsHttpServer, threading.Thread]] = []
        self._etsi004_streams: tuple[KeyStore, Etsi004Streams] | None = None
        self.control: SimulatorControl | None = None   # fault controls (qkdsim.control), while running

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> dict:
        """Start all KMEs and write endpoints.json; returns its content."""
        if self._servers:
            raise SimulatorError("simulator already started")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._claim_state_dir()
        pki = ensure_pki(self.state_dir / "pki", self.topology, self.host)
        keystore = KeyStore(self.topology)
        try:
            for site in self.topology.sites:
                # A KME serves only the interfaces its site lists (default: ETSI 014 only), as in a
                # multi-vendor network; all of them draw on the same key store.
                pair = pki.kmes[site.kme_id]
                tls = server_tls_context(pair.cert, pair.key, pki.ca.cert)
                if "etsi014" in site.interfaces:
                    self._start_etsi014(site, tls, keystore)
                if "skip" in site.interfaces:
                    self._start_skip(site, pki, keystore)
                if "etsi004" in site.interfaces:
                    self._start_etsi004(site, tls, keystore)
            self.control = SimulatorControl(self, keystore)
            self.control.start()
            self.endpoints = dict(self._endpoints_document(pki), control=self.control.describe())
            write_atomic(self.endpoints_path, json.dumps(self.endpoints, indent=2).encode() + b"\n", 0o644)
        except BaseException:
            self.stop()
            raise
        log.info("qkdsim ready: %d KMEs, %d QKD links, topology %s, endpoints %s", len(self.topology.sites),
                 len(self.topology.links), self.topology.source, self.endpoints_path)
        return self.endpoints

    def stop(self) -> None:
        """Remove endpoints.json, stop every KME and close its connections. Safe to call twice."""
        if self.endpoints is not None:
            self.endpoints_path.unlink(missing_ok=True)
            self.endpoints = None
        if self.control is not None:
            self.control.stop()
            self.control = None
        # shutdown() waits up to one poll interval per server: ask every server at once, so that a
        # hundred KMEs stop in one interval rather than a hundred.
        stoppers = [threading.Thread(target=server.shutdown, name=f"qkdsim-stop-{server.name}")
                    for server, thread in self._servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for server, thread in self._servers:
            server.close_connections()
            server.server_close()
            thread.join()
        self._servers = []

    def _claim_state_dir(self) -> None:
        """Refuse a state directory served by a live simulator; drop a stale endpoints.json."""
        try:
            pid = json.loads(self.endpoints_path.read_text())["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            pid = None
        if isinstance(pid, int) and _process_alive(pid):
            raise SimulatorError(f"{self.state_dir} is in use by a running simulator (pid {pid})")
        self.endpoints_path.unlink(missing_ok=True)

    def _start_etsi014(self, site, tls, keystore: KeyStore) -> None:
        """Serve ETSI GS QKD 014 (qkdsim.etsi014, HTTPS with mutual TLS) for ``site``'s KME, named by its KME ID."""
        server = self._serve(Etsi014Handler, tls, site.kme_id, Etsi014Api(site.kme_id, self.topology, keystore))
        log.info("%s (site %s) serves ETSI GS QKD 014 at %s", site.kme_id, site.id, self._url(server))

    def _start_skip(self, site, pki: Pki, keystore: KeyStore) -> None:
        """Serve Cisco SKIP for ``site``'s KME (qkdsim.skip) on its own port, named "<KME>/skip"."""
        pair = pki.kmes[site.kme_id]
        tls = skip_tls_context(self._skip_psk_files(site), pair.cert, pair.key, pki.ca.cert)
        server = self._serve(SkipHandler, tls, f"{site.kme_id}/skip", SkipApi(site.kme_id, self.topology, keystore))
        log.info("%s (site %s) serves Cisco SKIP at %s", site.kme_id, site.id, self._url(server))

    def _start_etsi004(self, site, tls, keystore: KeyStore) -> None:
        """Serve ETSI GS QKD 004 (qkdsim.etsi004, mutual TLS) for ``site``'s KME: the JSON dialect as "<KME>/etsi004",
        the binary framing as "<KME>/etsi004-binary", each on its own port, one set of streams for both."""
        if self._etsi004_streams is None or self._etsi004_streams[0] is not keystore:
            self._etsi004_streams = (keystore, Etsi004Streams())   # one set of streams for the whole network
        api = Etsi004Api(site.kme_id, self.topology, keystore, self._etsi004_streams[1])
        for wire, handler in WIRE_FORMATS.items():
            name = f"{site.kme_id}/etsi004" + ("" if wire == "json" else f"-{wire}")
            server = self._serve(handler, tls, name, api)
            log.info("%s (site %s) serves ETSI GS QKD 004 (%s) at tls://%s:%d", site.kme_id, site.id, wire, self.host,
                     server.port)

    def _serve(self, handler, tls, name: str, api) -> TlsHttpServer:
        """Listen on a free port of ``self.host`` as server ``name`` and serve ``api`` in a daemon thread."""
        try:
            server = TlsHttpServer((self.host, 0), handler, tls, name=name, context=api)
        except OSError as exc:
            raise SimulatorError(f"cannot listen on {self.host}: {exc.strerror or exc}") from exc
        thread = threading.Thread(target=server.serve_forever, args=(_POLL_INTERVAL,),
                                  name=f"qkdsim-{name.replace('/', '-')}", daemon=True)
        self._servers.append((server, thread))
        thread.start()
        return server

    def _skip_psk_files(self, site) -> dict:
        """The SKIP PSK file (0600) of each SAE of ``site``; identities are the SAE IDs."""
        return ensure_psks(self.state_dir / "skip-psk", list(site.saes))

    def _url(self, server: TlsHttpServer) -> str:
        return f"https://{self.host}:{server.port}"

    @staticmethod
    def _interfaces_document(site, urls: dict) -> dict:
        """endpoints.json ``kmes.<id>.interfaces``: each interface the KME serves, in the topology's order."""
        served = {
            "etsi014": lambda: {"url": urls[site.kme_id]},
            "skip": lambda: {"url": urls[f"{site.kme_id}/skip"], "system_id": site.kme_id},
            "etsi004": lambda: {"url": urls[f"{site.kme_id}/etsi004"].replace("https://", "tls://"), "wire": "json",
                                "binary_url": urls[f"{site.kme_id}/etsi004-binary"].replace("https://", "tls+binary://")},
        }
        return {interface: served[interface]() for interface in site.interfaces}

    def _endpoints_document(self, pki: Pki) -> dict:
        topology = self.topology
        urls = {server.name: self._url(server) for server, thread in self._servers}
        return {
            "format": ENDPOINTS_FORMAT,
            "state_dir": str(self.state_dir),
            "pid": os.getpid(),
            "ca_cert": str(pki.ca.cert),
            "kmes": {
                site.kme_id: {"kme_id": site.kme_id, "site": site.id,
                              "interfaces": self._interfaces_document(site, urls),
                              **({"etsi014_url": urls[site.kme_id]} if "etsi014" in site.interfaces else {})}
                for site in topology.sites
            },
            "saes": {
                sae: {"sae_id": sae, "site": site.id, "kme_id": site.kme_id,
                      "client_cert": str(pki.saes[sae].cert), "client_key": str(pki.saes[sae].key),
                      **({"skip_psk_identity": sae, "skip_psk_file": str(self._skip_psk_files(site)[sae])}
                         if "skip" in site.interfaces else {})}
                for site in topology.sites for sae in site.saes
            },
            "sites": {
                site.id: {"site": site.id, "name": site.name, "location": site.location, "kme_id": site.kme_id,
                          "saes": list(site.saes)}
                for site in topology.sites
            },
            "links": [
                {"link_id": link.link_id, "sites": list(link.sites), "kmes": list(topology.link_kmes(link)),
                 "technology": link.technology, "key_rate_bps": link.key_rate_bps,
                 "pool_capacity_bits": link.pool_capacity_bits, "initial_fill": link.initial_fill,
                 "qber": link.qber, "qber_threshold": link.policy.qber_threshold,
                 "key_size": link.policy.key_size, "distance_km": link.distance_km}
                for link in topology.links
            ],
            "test_material": {
                "purpose": "negative tests only: these credentials must be refused by every KME",
                "rogue_ca_cert": str(pki.rogue_ca.cert),
                "rogue_client_cert": str(pki.rogue_client.cert),
                "rogue_client_key": str(pki.rogue_client.key),
                "expired_client_cert": str(pki.expired_client.cert),
                "expired_client_key": str(pki.expired_client.key),
                "sae_id": pki.negative_test_sae,
            },
        }


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
