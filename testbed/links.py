"""Running things in the testbed's sites, connecting the links and verifying them (the ``Testbed`` methods
``run``, ``swanctl``, ``ike_sas``, ``ping``, ``load``, ``initiate``, ``connect``, ``setup_times``, ``verify``).

``Links`` is a base class of ``testbed.Testbed``: it uses the sites, namespaces and paths the testbed keeps
(``sites()``, ``netns(site)``, ``path(...)``, ``swanctl_dir(site)``, ``vici_uri(site)``, ``state``, ``phases``).
"""

import concurrent.futures
import itertools
import os
import re
import threading
import time

from testbed import charon, netns
from testbed.errors import TestbedError

SWANCTL_TIMEOUT = 10
# A VICI initiate holds one of charon's worker threads until its SA is up; too many at once into
# one charon leave none to process the IKE messages themselves (seen at 20 sites: 10 s stalls).
INITIATES_PER_SITE = 4


class Links:
    """What the testbed does in and between its sites once they are up (see ``testbed.Testbed``)."""

    # --- running things in sites ------------------------------------------------------------

    def run(self, site, argv, timeout=30):
        """``argv`` inside the site's network namespace; the CompletedProcess (stdout and stderr together)."""
        return netns.run(self.netns(site), argv, timeout=timeout)

    def swanctl(self, site, *args, timeout=SWANCTL_TIMEOUT + 20, check=True):
        """``swanctl ARGS --uri <site's VICI socket>`` with the site's swanctl directory; its output."""
        done = charon.swanctl(self.vici_uri(site), self.path('charons', site, 'strongswan.conf'), *args,
                              swanctl_dir=self.swanctl_dir(site), timeout=timeout)
        if check and done.returncode != 0:
            raise TestbedError('%s: swanctl %s failed (exit %d): %s'
                               % (site, ' '.join(args), done.returncode, done.stdout.strip()[-400:]))
        return done

    def ike_sas(self, site):
        """[dict(peer, uniqueid, state, ppk, child_installed, packets_in, packets_out)] of the site's IKE SAs."""
        sas = charon.ike_sas(self.swanctl(site, '--list-sas', '--raw').stdout)
        return sorted(sas, key=lambda sa: (sa['peer'], sa['uniqueid']))

    def charon_log(self, site):
        with open(self.path('charons', site, 'charon.log')) as handle:
            return handle.read()

    def pairs(self):
        return list(itertools.combinations(self.sites(), 2))

    def ping(self, pairs=None, timeout=2.0, workers=32):
        """{(a, b): round-trip seconds or None}: one ICMP echo from a's tunnel address to b's, in a's namespace."""
        pairs = list(pairs if pairs is not None else self.pairs())
        records = self.state['sites']

        def one(numbered):
            number, (a, b) = numbered
            return netns.icmp_echo(self.netns(a), records[a]['tunnel_ip'], records[b]['tunnel_ip'],
                                   timeout=timeout, identifier=(os.getpid() + number) & 0xffff)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(pairs)))) as pool:
            return dict(zip(pairs, pool.map(one, enumerate(pairs))))

    # --- connect and verify -----------------------------------------------------------------

    def load(self, sites=None):
        """``swanctl --load-all`` of each site's swanctl files into its charon, all sites in parallel."""
        sites = list(sites or self.sites())
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(sites))) as pool:
            list(pool.map(lambda site: self.swanctl(
                site, '--load-all', '--noprompt', '--file', os.path.join(self.swanctl_dir(site), 'swanctl.conf')), sites))

    def initiate(self, workers=16, per_site=INITIATES_PER_SITE):
        """Start every link that has no IKE SA at its initiator (the site whose name sorts first), in
        parallel (at most ``per_site`` at a time into one charon, sites taken in turn);
        {link_id: dict(seconds swanctl --initiate took, ok, error)} for the links started."""
        queues = []
        for site in self.sites():
            have = set(sa['peer'] for sa in self.ike_sas(site))
            queues.append([(site, peer) for peer in self.sites() if peer > site and peer not in have])
        # round robin over the initiators, so that the first site's links do not all go first
        to_start = [pair for column in itertools.zip_longest(*queues) for pair in column if pair]
        slots = dict((site, threading.BoundedSemaphore(per_site)) for site in self.sites())

        def one(pair):
            site, peer = pair
            with slots[site]:
                started = time.perf_counter()
                done = self.swanctl(site, '--initiate', '--child', peer, '--timeout', str(SWANCTL_TIMEOUT), check=False)
                return '%s--%s' % pair, time.perf_counter() - started, done.returncode, done.stdout
        results = {}
        if to_start:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(to_start))) as pool:
                for link, seconds, returncode, output in pool.map(one, to_start):
                    results[link] = dict(seconds=seconds, ok=returncode == 0,
                                         error=None if returncode == 0 else output.strip().splitlines()[-1:])
        return results

    def connect(self):
        """Load and start (render mode's fast path); returns dict(initiate=..., setup=per-link log times)."""
        with self.phases.timed('load'):
            self.load()
        with self.phases.timed('initiate'):
            initiated = self.initiate()
        return dict(initiate=initiated, setup=self.setup_times())

    def setup_times(self):
        """{link_id: seconds from 'initiating IKE_SA' to 'CHILD_SA ... established' in the initiator's
        charon log} for the latest set-up of each link (charon's own clock, millisecond resolution)."""
        times = {}
        for site in self.sites():
            log = self.charon_log(site)
            for peer in self.sites():
                if peer <= site:
                    continue
                starts = re.findall(charon.LOG_TIME_RE + r'\[IKE\] initiating IKE_SA %s\[' % re.escape(peer), log, re.M)
                if not starts:
                    continue
                done = [float(t) for t in re.findall(charon.LOG_TIME_RE + r'\[IKE\] CHILD_SA %s\{\d+\} established' % re.escape(peer),
                                                     log, re.M) if float(t) >= float(starts[-1])]
                if done:
                    times['%s--%s' % (site, peer)] = round(done[0] - float(starts[-1]), 3)
        return times

    def verify(self, timeout=10.0):
        """Every pair: exactly one ESTABLISHED IKE SA with ppk=yes at both ends, and an ICMP echo between the
        tunnel addresses that the CHILD_SAs carried. Waits up to ``timeout`` s for SAs being set up.
        Returns dict(ok, pairs, problems, rtt_ms); never raises on a failed pair."""
        sites = self.sites()
        deadline = time.monotonic() + timeout
        while True:
            problems = self._sa_problems(sites)
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        before = dict((site, dict((sa['peer'], sa['packets_in']) for sa in self.ike_sas(site))) for site in sites)
        replies = self.ping()
        after = dict((site, dict((sa['peer'], sa['packets_in']) for sa in self.ike_sas(site))) for site in sites)
        rtt = {}
        for (a, b), seconds in sorted(replies.items()):
            link = '%s--%s' % (a, b)
            if seconds is None:
                problems.append('%s: no ICMP echo reply through the tunnel' % link)
                continue
            rtt[link] = round(seconds * 1000, 3)
            for site, peer in ((a, b), (b, a)):
                if after[site].get(peer, 0) <= before[site].get(peer, 0):
                    problems.append('%s: the echo did not go through the CHILD_SA at %s' % (link, site))
        return dict(ok=not problems, pairs=len(replies), problems=problems, rtt_ms=rtt)

    def _sa_problems(self, sites):
        problems = []
        for site in sites:
            sas = self.ike_sas(site)
            for peer in sites:
                if peer == site:
                    continue
                mine = [sa for sa in sas if sa['peer'] == peer]
                good = [sa for sa in mine if sa['state'] == 'ESTABLISHED' and sa['ppk'] and sa['child_installed']]
                if len(mine) != 1 or not good:
                    problems.append('%s -> %s: %s' % (site, peer, ', '.join(
                        '%s%s%s' % (sa['state'], ' ppk=yes' if sa['ppk'] else ' no PPK',
                                    '' if sa['child_installed'] else ' no CHILD_SA') for sa in mine) or 'no IKE SA'))
        return problems
