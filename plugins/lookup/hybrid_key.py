# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Longer than 450 lines because of its documentation (DOCUMENTATION, EXAMPLES, RETURN: about 270 lines); the
# key store decisions live in module_utils/link_key_store.py, keying a link in module_utils/link_keying.py.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: hybrid_key
short_description: Hybrid quantum-safe keys for one link or a whole mesh, in one call
version_added: 0.1.0
author:
  - qsafe.keyfabric maintainers (@qsafe-keyfabric)
description:
  - For each link given, mixes a QKD key (the master SAE gets it new from its KME, the slave SAE
    gets the same key by key_ID from its own KME), an ML-KEM shared secret and an X25519 shared
    secret into one key with the ETSI TS 103 744 CatKDF combiner, bound to the link, both SAE
    IDs, the QKD key_IDs and the algorithms.
  - Both ends' derivations are computed and their key check values compared before a key is
    returned (key confirmation).
  - The link's policy says which sources it requires and what happens when one is missing
    (fail, or degrade with an alarm). Every result records the sources that went into it.
  - Runs on the controller. The returned keys are secret - use them only in tasks with
    C(no_log), templates written with mode 0600, and never print them.
  - For sites where key material must not leave the site, use the node-local flow instead
    (module M(qsafe.keyfabric.hybrid_link_key)).
options:
  _terms:
    description:
      - The links. Each is a dict with C(master) and C(slave) (an SAE ID, or a dict with
        C(sae_id) and any connection option to override for that SAE, such as C(interface) (each end may
        fetch its QKD key over its own interface), C(kme_url) or C(client_cert)), and optionally C(link_id) (default C(<master>--<slave>)), C(policy),
        C(kem_algorithm) and C(qkd) (C(false) when the pair has no QKD link).
      - A list of such dicts counts as its members.
    required: true
    type: list
    elements: raw
  policy:
    description:
      - The default key policy of a link - C(qkd+pqc), C(qkd), C(pqc), C(any), or a dict with
        C(require) (a list of C(classical), C(qkd), C(pqc)) and C(on_missing) (C(fail) or C(degrade)).
      - C(any) needs at least one quantum-safe source (QKD or PQC). A key from classical
        secrets alone is never made with C(on_missing=fail), and is flagged as degraded otherwise.
    type: raw
    default: qkd+pqc
    env:
      - name: QSAFE_POLICY
    ini:
      - section: qsafe_keyfabric
        key: policy
    vars:
      - name: qsafe_policy
  kem_algorithm:
    description: The post-quantum KEM for the C(pqc) source.
    type: str
    default: ML-KEM-768
    vars:
      - name: qsafe_kem_algorithm
  pqc_backend:
    description: Which library provides the KEMs - C(auto), C(cryptography) or C(liboqs).
    type: str
    default: auto
    choices: [auto, cryptography, liboqs]
    vars:
      - name: qsafe_pqc_backend
  hash_algorithm:
    description: The hash of the CatKDF combiner.
    type: str
    default: sha256
    choices: [sha256, sha384, sha512, sha3-256, sha3-384, sha3-512]
    vars:
      - name: qsafe_hash_algorithm
  key_length:
    description: Length of each link key in bytes (at least 32, as RFC 8784 PPKs need 256 bits).
    type: int
    default: 32
    vars:
      - name: qsafe_key_length
  qkd_key_size:
    description: Size in bits of the QKD key asked for each link.
    type: int
    default: 256
    vars:
      - name: qsafe_qkd_key_size
  workers:
    description:
      - How many links are keyed at the same time. Against remote KMEs this overlaps network
        latency; on one small machine running the simulator too, 1 is as fast (see docs/benchmarks.md).
    type: int
    default: 4
  key_store:
    description:
      - A directory on the controller holding one key file per link (C(<link_id>.json), mode 0600).
      - A link whose stored key still fits (same ends, policy, algorithms, length; not degraded;
        not due for rotation) gets that key again, so running the same inventory twice consumes no
        QKD key and changes nothing. A new or changed link is keyed and stored.
      - A replaced key is kept as C(<link_id>.previous.json), and results carry its C(previous_ppk_id),
        for make-before-break rotation.
      - Every key read from it is checked against the key check value and size its file records; a
        key that does not match fails the call with an error naming the file and the link, and is
        never reused or returned.
      - Runs that share a key store do not key a link twice (see I(lock_timeout)).
      - Protect it like any secret store (mode 0700, on encrypted storage).
    type: path
    vars:
      - name: qsafe_key_store
  rotate:
    description:
      - Re-key links even if their stored key fits - C(true) for all, or a list of link IDs.
    type: raw
    default: false
    vars:
      - name: qsafe_rotate
  max_age:
    description: Re-key stored keys older than this many seconds (C(0) - never by age).
    type: int
    default: 0
    vars:
      - name: qsafe_key_max_age
  dry_run:
    description:
      - Derive nothing and spend no QKD key; links without a usable stored key come back as
        a dict with C(link_id), C(master), C(slave) and C(would_key=true), and no key. For check mode.
    type: bool
    default: false
  store_only:
    description:
      - Only read keys from I(key_store), never derive one; a link without a usable stored key fails.
        I(rotate) and I(max_age) do not apply, and a degraded key (C(on_missing=degrade)) is read like any
        other (it is the key in force until a keying call replaces it).
      - For plays that render configurations after the keys were made in an earlier play.
      - A rotated link's results carry C(active_from), and while its overlap window is open (see
        I(previous_key_lifetime)) the key it replaced as C(previous_key) (SECRET), so that
        configurations can hold both keys (make-before-break MACsec key rollover).
    type: bool
    default: false
  return_keys:
    description:
      - Whether results carry key bytes (C(key), and C(previous_key) with I(store_only)).
      - C(false) - only the public fields; the keys stay in I(key_store) for a later step to read
        (C(store_only), or the C(qsafe.keyfabric.mesh_render) action). A play that only keys links
        then never holds a key in a variable, and needs no filter to strip it (which costs seconds
        for thousands of links).
    type: bool
    default: true
  previous_key_lifetime:
    description:
      - The overlap window of a rotation, in seconds. A key that replaced another takes over at its
        creation time plus this window (C(active_from)); until then I(store_only) results also carry
        the replaced key (C(previous_key), C(previous_ppk_id)), so configurations hold both and the
        devices switch at C(active_from). From then on the new key comes alone, and a call that keys
        (not I(store_only), not I(dry_run)) removes the replaced key's file from I(key_store).
      - Give every call of a roll-out the same value (it is a play variable). C(0) - no overlap, the new
        key is in force at once (break-before-make; for an emergency re-key).
      - Rotate a link again only after its C(active_from); a second rotation inside the window leaves
        devices that are still on the oldest key without it.
    type: int
    default: 3600
    vars:
      - name: qsafe_previous_key_lifetime
  lock_timeout:
    description:
      - With I(key_store), how long to wait, in seconds, for a link that another run (another
        playbook, or another lookup call) is keying in the same I(key_store). Each link's
        check-key-store step is done under an exclusive lock (C(.<link_id>.lock) in I(key_store)),
        so two runs never key a link twice - the second waits, then reuses the key the first stored.
      - After this long, the link fails with an error naming it and its lock file.
    type: int
    default: 300
    vars:
      - name: qsafe_key_store_lock_timeout
extends_documentation_fragment:
  - qsafe.keyfabric.kme_connection
  - qsafe.keyfabric.kme_connection.plugins
notes:
  - With I(endpoints_file), SAEs without a QKD link between their KMEs (per the manifest's
    C(links)) are not asked for QKD keys; the policy decides whether the link may do without.
  - Every link is checked (options, policy, SAEs, key store) before any QKD key is spent. When
    keying fails for some links, the others are still keyed (and stored in I(key_store), so a
    re-run spends no new key for them); the lookup then fails with every failed link named.
  - Only a KME that cannot deliver now (503, unreachable, timeout) makes QKD a missing source
    for the policy; a refused certificate, a bad request or a broken answer is an error.
seealso:
  - module: qsafe.keyfabric.qkd_key
  - module: qsafe.keyfabric.hybrid_link_key
'''

EXAMPLES = r'''
- name: Key three links of the Madrid campus in one call (secret - no_log)
  ansible.builtin.set_fact:
    link_keys: "{{ query('qsafe.keyfabric.hybrid_key', links, endpoints_file='/var/lib/qkdsim/endpoints.json') }}"
  vars:
    links:
      - {master: SAE-MAD-1, slave: SAE-MAD-2}
      - {master: SAE-MAD-1, slave: SAE-MAD-3}
      - {master: SAE-MAD-2, slave: SAE-MAD-3, policy: qkd}
  no_log: true

- name: Show what is public about them
  ansible.builtin.debug:
    msg: "{{ link_keys | map('dict2items') | map('rejectattr', 'key', 'eq', 'key') | map('items2dict') }}"

- name: Key a whole mesh into a key store, holding no key in any variable
  ansible.builtin.set_fact:
    mesh_keyed: "{{ query('qsafe.keyfabric.hybrid_key', links, key_store='/var/lib/qsafe/keys', return_keys=false) }}"

- name: A link to a site without QKD may do with ML-KEM and X25519, with an alarm
  ansible.builtin.set_fact:
    mex_key: "{{ lookup('qsafe.keyfabric.hybrid_key', {'master': 'SAE-MAD-1', 'slave': 'SAE-MEX-1'},
                 policy={'require': ['qkd', 'pqc'], 'on_missing': 'degrade'}) }}"
  no_log: true
'''

RETURN = r'''
_raw:
  description: One dict per link, in the order given.
  type: list
  elements: dict
  contains:
    link_id: {description: "The link.", type: str}
    master: {description: "Master SAE ID.", type: str}
    slave: {description: "Slave SAE ID.", type: str}
    key:
      description: The link key, hex. SECRET. Not with I(return_keys=false).
      type: str
    kcv: {description: "Key check value of the key, 6 hex digits.", type: str}
    ppk_id: {description: "A public identifier of this key (for example the RFC 8784 PPK ID).", type: str}
    sources: {description: "The sources mixed into the key (classical, qkd, pqc).", type: list, elements: str}
    algorithms: {description: "Algorithm per source.", type: dict}
    qkd_key_ids: {description: "The QKD key_IDs used.", type: list, elements: str}
    policy: {description: "The policy applied.", type: str}
    degraded:
      description: Whether a required source is missing, or no quantum-safe source is in the key (possible only with on_missing=degrade).
      type: bool
    alarms: {description: "Why the key is degraded or a source was unavailable.", type: list, elements: str}
    reused: {description: "Whether the key came from I(key_store) unchanged (no key was consumed).", type: bool}
    generation: {description: "How many times the link has been keyed in I(key_store) (1 for its first key).", type: int}
    previous_ppk_id: {description: "PPK ID of the key this one replaced (rotation), if any.", type: str}
    active_from:
      description:
        - With I(store_only), for a key that replaced another - when it takes over (UNIX time, its creation
          time plus I(previous_key_lifetime)).
      type: int
    previous_key:
      description:
        - With I(store_only), while the overlap window is open - the key this one replaced, hex. SECRET.
          Not with I(return_keys=false).
      type: str
    previous_active_from:
      description: With I(previous_key), when that key had taken over from its own predecessor (UNIX time), if it had one.
      type: int
    would_key: {description: "With I(dry_run), the link has no usable stored key and would be keyed.", type: bool}
    timings_ms:
      description:
        - Where the time of keying this link went, in milliseconds (public; no key material). Only for links
          keyed in this call, not for keys reused from I(key_store) or I(dry_run) results.
        - C(qkd_master) - the master SAE's C(enc_keys) call to its KME (also when it failed, for example
          503 or a KME that is down); C(qkd_slave) - the slave SAE's C(dec_keys) call to its own KME.
        - C(pqc) and C(classical) - the KEM source (the slave's key pair, encapsulation, decapsulation).
        - C(mix) - the CatKDF combiner at both ends and the key confirmation; C(total) - the whole link,
          from its first step to the confirmed key; C(store) - writing the key file, with I(key_store).
        - A phase that did not run (no QKD link between the SAEs) is C(0.0). Delivery of the key to the
          devices is not included (it is the configuration push that follows).
        - With I(workers) above 1, links are keyed side by side, so their totals overlap and do not add up.
      type: dict
      sample: {qkd_master: 4.1, qkd_slave: 3.8, pqc: 0.4, classical: 0.3, mix: 0.1, total: 8.9, store: 0.6}
'''

import os
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.errors import AnsibleLookupError
from ansible.module_utils.six import string_types
from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display

from ansible_collections.qsafe.keyfabric.plugins.module_utils.hybrid_combiner import CombinerError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import (
    ClientPool,
    ConnectionOptions,
    load_endpoints,
    resolve_connection,
)
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_keying import (
    CLASSICAL_ALGORITHM,
    LinkKeyingError,
    key_controller_link,
)
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_key_store import (
    LinkKeyStore,
    LinkKeyStoreError,
    public_record,
    wanted_key,
)
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_policy import LinkPolicy, PolicyViolation
from ansible_collections.qsafe.keyfabric.plugins.module_utils.pqc_backends import PqcError, select_backend

display = Display()

LINK_FIELDS = ('link_id', 'master', 'slave', 'policy', 'kem_algorithm', 'qkd')


def normalize_links(terms):
    """The links of the terms, each as a dict with link_id, master, slave (SAE IDs) and the rest."""
    flat = []
    for term in terms:
        flat.extend(term if isinstance(term, list) else [term])
    links, seen = [], set()
    for index, term in enumerate(flat):
        if not isinstance(term, dict):
            raise AnsibleLookupError('link #%d must be a dict with master and slave, got %s' % (index + 1, type(term).__name__))
        unknown = sorted(set(term) - set(LINK_FIELDS))
        if unknown:
            raise AnsibleLookupError('link #%d has unknown field%s %s (known: %s)' % (
                index + 1, 's' if len(unknown) > 1 else '', ', '.join(unknown), ', '.join(LINK_FIELDS)))
        link = dict(term)
        for end in ('master', 'slave'):
            value = term.get(end)
            overrides = dict(value) if isinstance(value, dict) else {}
            sae_id = overrides.pop('sae_id', None) if isinstance(value, dict) else value
            if not isinstance(sae_id, string_types) or not sae_id:
                raise AnsibleLookupError('link #%d: %s must be an SAE ID or a dict with sae_id' % (index + 1, end))
            link[end], link[end + '_overrides'] = sae_id, overrides
        if link['master'] == link['slave']:
            raise AnsibleLookupError('link #%d: master and slave are both %s' % (index + 1, link['master']))
        link['link_id'] = term.get('link_id') or '%s--%s' % (link['master'], link['slave'])
        if link['link_id'] in seen:
            raise AnsibleLookupError('link %s is given twice' % link['link_id'])
        seen.add(link['link_id'])
        links.append(link)
    return links


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        links = normalize_links(terms)
        if not links:
            return []
        options = ConnectionOptions.from_plugin(self)
        self._check_options(options, links)
        self._store = LinkKeyStore(self.get_option('key_store'), self.get_option('previous_key_lifetime'),
                                   self.get_option('lock_timeout')) if self.get_option('key_store') else None
        try:
            manifest = load_endpoints(options.get('endpoints_file')) if options.get('endpoints_file') else None
            classical_backend = select_backend('auto', CLASSICAL_ALGORITHM)
            default_policy = LinkPolicy.from_spec(self.get_option('policy'))
        except (KeyDeliveryError, PqcError, ValueError) as exc:
            raise AnsibleLookupError(str(exc))

        # Everything that can be checked without a KME is checked for every link before any
        # QKD key is spent, so one bad link does not waste the keys of the others.
        qkd_pairs = self._qkd_pairs(manifest)
        plans, problems = [], []
        for link in links:
            try:
                plans.append(self._plan(link, options, manifest, qkd_pairs, default_policy))
            except (KeyDeliveryError, PqcError, LinkKeyingError, LinkKeyStoreError, ValueError) as exc:
                problems.append('link %s: %s' % (link['link_id'], getattr(exc, 'message', None) or exc))
        if problems:
            raise AnsibleLookupError('no link was keyed: ' + '; '.join(problems))

        clients = ClientPool(warn=display.warning)  # one kept-alive client per SAE and worker thread

        def key_one(plan):
            try:
                return self._key(plan, options, manifest, clients, classical_backend), None
            except PolicyViolation as exc:
                return None, str(exc)  # it names the link already
            except (KeyDeliveryError, PqcError, LinkKeyingError, LinkKeyStoreError, CombinerError, ValueError,
                    OSError) as exc:
                return None, 'link %s: %s' % (plan['link']['link_id'], getattr(exc, 'message', None) or exc)

        workers = max(1, min(self.get_option('workers'), len(plans)))
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                outcomes = list(pool.map(key_one, plans))
        finally:
            clients.close()
        failures = [error for result, error in outcomes if error]
        if failures:
            kept = ('they are stored in key_store, so a re-run reuses them and spends no new key'
                    if self.get_option('key_store') else 'without key_store their keys are discarded')
            raise AnsibleLookupError('%d of %d links failed: %s. The %d other links were keyed; %s.' % (
                len(failures), len(plans), '; '.join(failures), len(plans) - len(failures), kept))
        results = [result for result, error in outcomes]
        if not self.get_option('return_keys'):
            for result in results:
                result.pop('key', None)
                result.pop('previous_key', None)
        return results

    def _check_options(self, options, links):
        if self.get_option('key_length') < 32:
            raise AnsibleLookupError('key_length must be at least 32 bytes (RFC 8784 PPKs need 256 bits), got %d'
                                     % self.get_option('key_length'))
        size = self.get_option('qkd_key_size')
        if size < 128 or size % 8:
            raise AnsibleLookupError('qkd_key_size must be a multiple of 8 and at least 128 bits, got %d' % size)
        key_store = self.get_option('key_store')
        if key_store and not os.path.isdir(key_store):
            raise AnsibleLookupError('key_store %s is not a directory' % key_store)
        if key_store and not self.get_option('dry_run') and not os.access(key_store, os.W_OK | os.X_OK):
            raise AnsibleLookupError('key_store %s is not writable, so no new key could be stored; nothing was keyed' % key_store)
        if self.get_option('lock_timeout') < 0:
            raise AnsibleLookupError('lock_timeout must be 0 or more seconds, got %d' % self.get_option('lock_timeout'))
        if self.get_option('previous_key_lifetime') < 0:
            raise AnsibleLookupError('previous_key_lifetime must be 0 or more seconds, got %d' % self.get_option('previous_key_lifetime'))
        saes = set(link[end] for link in links for end in ('master', 'slave'))
        shared = [name for name in ('kme_url', 'client_cert', 'client_key') if options.get(name)]
        if shared and len(saes) > 1:
            raise AnsibleLookupError(
                '%s would apply to every SAE of these links (%s); give them per SAE in a link\'s master or slave '
                'dict, or use endpoints_file' % (', '.join(shared), ', '.join(sorted(saes))))

    @staticmethod
    def _qkd_pairs(manifest):
        """KME pairs joined by a QKD link, per the manifest (None: unknown, try every pair)."""
        if not manifest or not isinstance(manifest.get('links'), list):
            return None
        return set(frozenset(link.get('kmes', ())) for link in manifest['links'])

    def _rotating(self, link_id):
        rotate = self.get_option('rotate')
        if isinstance(rotate, (list, tuple)):
            return link_id in rotate
        return rotate in (True, 'true', 'yes', 'all')

    def _plan(self, link, options, manifest, qkd_pairs, default_policy):
        """What keying ``link`` takes, checked without any KME call (the key store is read and checked too)."""
        policy = LinkPolicy.from_spec(link['policy']) if link.get('policy') else default_policy
        kem_algorithm = link.get('kem_algorithm') or self.get_option('kem_algorithm')
        plan = dict(link=link, policy=policy, kem_algorithm=kem_algorithm,
                    kem_backend=select_backend(self.get_option('pqc_backend'), kem_algorithm),
                    wanted=wanted_key(link['link_id'], link['master'], link['slave'], policy, kem_algorithm,
                                      self.get_option('hash_algorithm'), self.get_option('key_length')),
                    stored=None, rotate=self._rotating(link['link_id']))
        if self.get_option('store_only'):
            # The keys an earlier call made, as configurations carry them: rotation and age do not apply.
            if self._store is None:
                raise LinkKeyingError('no usable key in key_store %s (store_only is set)' % self.get_option('key_store'))
            plan['in_force'] = self._store.in_force(plan['wanted'], link['master'], link['slave'], warn=display.warning)
            return plan
        if self._store is not None:
            plan['stored'] = self._store.read(link['link_id'])
        # A first guess, for dry_run and to resolve connections now; keying decides again under the link's lock.
        plan['reuse'] = self._store is not None and \
            self._store.fits(plan['stored'], plan['wanted'], plan['rotate'], self.get_option('max_age'))
        plan['dry'] = not plan['reuse'] and self.get_option('dry_run')
        use_qkd = link.get('qkd', True)
        if use_qkd and qkd_pairs is not None:
            kmes = frozenset(manifest['saes'].get(link[end], {}).get('kme_id') for end in ('master', 'slave'))
            use_qkd = kmes in qkd_pairs
        plan['use_qkd'] = use_qkd
        if not plan['reuse']:
            # Resolving both ends also checks that both SAEs are known, QKD or not.
            self._resolve(plan, options, manifest)
        return plan

    @staticmethod
    def _resolve(plan, options, manifest):
        link = plan['link']
        for end in ('master', 'slave'):
            if end + '_settings' not in plan:
                plan[end + '_settings'] = resolve_connection(options.with_overrides(link[end + '_overrides']),
                                                             sae_id=link[end], manifest=manifest)

    def _key(self, plan, options, manifest, clients, classical_backend):
        link = plan['link']
        if self.get_option('store_only'):
            return dict(plan['in_force'])
        if plan['dry']:
            return dict(link_id=link['link_id'], master=link['master'], slave=link['slave'], would_key=True, reused=False)
        if plan['reuse'] and self.get_option('dry_run'):
            return dict(public_record(plan['stored']), master=link['master'], slave=link['slave'],
                        key=plan['stored']['key'], reused=True)
        timings = {}

        def make_record():
            self._resolve(plan, options, manifest)
            master, slave = [clients.get(plan[end + '_settings']) for end in ('master', 'slave')]
            link_key, alarms = key_controller_link(
                link, plan['policy'], master, slave, plan['kem_backend'], classical_backend, plan['kem_algorithm'],
                qkd_key_size=self.get_option('qkd_key_size'), hash_algorithm=self.get_option('hash_algorithm'),
                length=self.get_option('key_length'), use_qkd=plan['use_qkd'], timings=timings)
            record = link_key.public_facts()
            record.update(kem_algorithm=plan['kem_algorithm'], key=link_key.key.hex(), created=int(time.time()),
                          generation=1, alarms=list(record.get('alarms', ())) + alarms)
            return record

        if self._store is None:
            record = make_record()
        else:
            # Re-read, decide and write under the link's lock: a run that keyed it meanwhile is reused, not repeated.
            record, reused = self._store.key_link(plan['wanted'], make_record, rotate=plan['rotate'],
                                                  max_age=self.get_option('max_age'), planned=plan['stored'],
                                                  timings=timings)
            if reused:
                return dict(public_record(record), master=link['master'], slave=link['slave'], key=record['key'], reused=True)
        for alarm in record['alarms']:
            display.warning('hybrid_key: link %s: %s' % (link['link_id'], alarm))
        return dict(record, master=link['master'], slave=link['slave'], reused=False, timings_ms=timings)
