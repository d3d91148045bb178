#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: hybrid_link_key
short_description: Derive a hybrid link key on the node itself (node-local flow)
version_added: 0.1.0
description:
  - Keys one link without any key byte passing through the controller. Run it on the master
    node, then on the slave node; only public values travel between them through the
    controller (QKD key_IDs, KEM ciphertexts, the key check value).
  - As C(master) - gets a new QKD key from this node's KME for the slave SAE, encapsulates to
    the slave's ML-KEM and X25519 public keys, mixes the three secrets with the ETSI TS 103 744
    CatKDF combiner and writes the key to I(dest). Returns the public values for the slave.
  - As C(slave) - gets the QKD key by key_ID from this node's KME, decapsulates the
    ciphertexts with its private keys (from M(qsafe.keyfabric.pqc_kem)), mixes, and compares
    its key check value with the master's before it writes I(dest). A mismatch (tampered
    ciphertext, wrong key_ID, other context, swapped roles) fails the task and writes nothing.
  - The link's policy decides which sources are required and what happens when one is missing.
author:
  - qsafe.keyfabric maintainers (@qsafe-keyfabric)
options:
  role:
    description: Which end of the link this node is.
    type: str
    required: true
    choices: [master, slave]
  link_id:
    description: The link's name; both ends must use the same.
    type: str
    required: true
  peer_sae_id:
    description: The SAE at the other end (the slave for C(master), the master for C(slave)).
    type: str
    required: true
  policy:
    description:
      - Key policy - C(qkd+pqc), C(qkd), C(pqc), C(any), or a dict with C(require) (a list of
        C(qkd), C(pqc)) and C(on_missing) (C(fail) or C(degrade)). Both ends must use the same.
    type: raw
    default: qkd+pqc
  qkd:
    description: Whether this link has a QKD source (C(false) for a site pair without QKD).
    type: bool
    default: true
  qkd_key_size:
    description: Size in bits of the QKD key (C(master)).
    type: int
    default: 256
  kem_algorithm:
    description: The post-quantum KEM.
    type: str
    default: ML-KEM-768
  pqc_backend:
    description: Which library provides the KEMs.
    type: str
    default: auto
    choices: [auto, cryptography, liboqs]
  hash_algorithm:
    description: The hash of the CatKDF combiner. Both ends must use the same.
    type: str
    default: sha256
    choices: [sha256, sha384, sha512, sha3-256, sha3-384, sha3-512]
  key_length:
    description: Length of the link key in bytes (at least 32).
    type: int
    default: 32
  peer_kem_public_key:
    description: The slave's KEM public key, base64 (C(master)).
    type: str
  peer_classical_public_key:
    description: The slave's X25519 public key, base64 (C(master)).
    type: str
  kem_private_key_path:
    description: This node's KEM private key file, as written by M(qsafe.keyfabric.pqc_kem) (C(slave)).
    type: path
  classical_private_key_path:
    description: This node's X25519 private key file, as written by M(qsafe.keyfabric.pqc_kem) (C(slave)).
    type: path
  qkd_key_ids:
    description: The QKD key_IDs the master used (C(slave)).
    type: list
    elements: str
  kem_ciphertext:
    description: The master's KEM ciphertext, base64 (C(slave)).
    type: str
  classical_ciphertext:
    description: The master's X25519 ephemeral public key, base64 (C(slave)).
    type: str
  expected_kcv:
    description:
      - The master's key check value (6 hex digits); the slave's must be equal, or the task fails
        and writes nothing (C(slave), required then).
    type: str
  dest:
    description:
      - Where the link key goes - a JSON file with mode 0600, written atomically, holding the key
        (hex) and its public facts. Its directory must exist.
      - When it already holds this link's key (same link, and for a slave the master's key
        check value), nothing is done and no key is consumed, unless I(force).
    type: path
    required: true
  force:
    description: Key the link anew even when I(dest) holds its key (C(master)), to rotate it.
    type: bool
    default: false
extends_documentation_fragment:
  - qsafe.keyfabric.kme_connection
attributes:
  check_mode:
    support: full
    description: Consumes no QKD key and writes nothing; reports whether the link would be keyed.
  diff_mode:
    support: full
    description: Shows the PPK ID and key check value before and after, never the key.
notes:
  - The slave's KEM key pairs are made with M(qsafe.keyfabric.pqc_kem) (C(operation=keypair)); only
    their public keys leave the slave node.
seealso:
  - module: qsafe.keyfabric.pqc_kem
  - plugin: qsafe.keyfabric.hybrid_key
    plugin_type: lookup
'''

EXAMPLES = r'''
- name: Master end of MAD-1 -> MAD-2, on the MAD-1 node
  qsafe.keyfabric.hybrid_link_key:
    role: master
    link_id: MAD-1--MAD-2
    endpoints_file: /var/lib/qkdsim/endpoints.json
    sae_id: SAE-MAD-1
    peer_sae_id: SAE-MAD-2
    peer_kem_public_key: "{{ hostvars['mad-2'].kem.public_key }}"
    peer_classical_public_key: "{{ hostvars['mad-2'].x25519.public_key }}"
    dest: /etc/qsafe/links/MAD-1--MAD-2.json
  register: master_half

- name: Slave end, on the MAD-2 node
  qsafe.keyfabric.hybrid_link_key:
    role: slave
    link_id: MAD-1--MAD-2
    endpoints_file: /var/lib/qkdsim/endpoints.json
    sae_id: SAE-MAD-2
    peer_sae_id: SAE-MAD-1
    kem_private_key_path: /etc/qsafe/kem.key
    classical_private_key_path: /etc/qsafe/x25519.key
    qkd_key_ids: "{{ hostvars['mad-1'].master_half.qkd_key_ids }}"
    kem_ciphertext: "{{ hostvars['mad-1'].master_half.kem_ciphertext }}"
    classical_ciphertext: "{{ hostvars['mad-1'].master_half.classical_ciphertext }}"
    expected_kcv: "{{ hostvars['mad-1'].master_half.kcv }}"
    dest: /etc/qsafe/links/MAD-1--MAD-2.json
'''

RETURN = r'''
link_id: {description: "The link.", returned: always, type: str}
ppk_id: {description: "Public identifier of the key (for example the RFC 8784 PPK ID).", returned: unless check mode, type: str}
kcv: {description: "Key check value, 6 hex digits.", returned: unless check mode, type: str}
sources: {description: "The sources mixed into the key.", returned: unless check mode, type: list, elements: str}
algorithms: {description: "Algorithm per source.", returned: unless check mode, type: dict}
qkd_key_ids: {description: "QKD key_IDs used (public; the slave needs them).", returned: unless check mode, type: list, elements: str}
kem_ciphertext: {description: "KEM ciphertext for the slave, base64 (public).", returned: role=master, type: str}
classical_ciphertext: {description: "X25519 ephemeral public key for the slave, base64 (public).", returned: role=master, type: str}
degraded: {description: "Whether a source the policy requires is missing (on_missing=degrade).", returned: unless check mode, type: bool}
alarms: {description: "Why the key is degraded.", returned: unless check mode, type: list, elements: str}
dest: {description: "The key file.", returned: always, type: str}
'''

import base64
import binascii
import hashlib
import json
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qsafe.keyfabric.plugins.module_utils.hybrid_combiner import HASH_ALGORITHMS, CombinerError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import check_writable
from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import (
    connection_argument_spec,
    module_client,
)
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_keying import (
    CLASSICAL_ALGORITHM,
    derive,
    kem_master_contribution,
    kem_slave_contribution,
    qkd_master_contribution,
    qkd_slave_contribution,
)
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_key_store import (
    LinkKeyStoreError,
    public_record,
    read_link_key,
    write_link_key,
)
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_policy import LinkPolicy, PolicyViolation
from ansible_collections.qsafe.keyfabric.plugins.module_utils.pqc_backends import PqcError, read_private_key, select_backend

MASTER_OPTIONS = ('peer_kem_public_key', 'peer_classical_public_key')
SLAVE_OPTIONS = ('kem_private_key_path', 'classical_private_key_path', 'qkd_key_ids', 'kem_ciphertext',
                 'classical_ciphertext', 'expected_kcv')


class ModuleInputError(Exception):
    pass


def b64_option(params, name):
    value = params[name]
    if value is None:
        return None
    try:
        return base64.b64decode(''.join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ModuleInputError('%s is not valid base64' % name)


def master_inputs_fingerprint(params):
    """A digest of everything the master's key depends on besides fresh randomness: a stored key
    is reused only for the same inputs (another peer public key, policy or size re-keys)."""
    fields = [params[name] for name in ('sae_id', 'peer_sae_id', 'peer_kem_public_key', 'peer_classical_public_key',
                                        'kem_algorithm', 'hash_algorithm', 'key_length', 'qkd', 'qkd_key_size')]
    fields.append(LinkPolicy.from_spec(params['policy']).name)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode('utf-8')).hexdigest()[:32]


def master_half(module, kem_backend, classical_backend):
    params = module.params
    contributions, alarms, public = [], [], {}
    for source, backend, algorithm, option in (
            ('classical', classical_backend, CLASSICAL_ALGORITHM, 'peer_classical_public_key'),
            ('pqc', kem_backend, params['kem_algorithm'], 'peer_kem_public_key')):
        peer_public = b64_option(params, option)
        if peer_public is None:
            continue
        contribution, ciphertext = kem_master_contribution(source, backend, algorithm, peer_public)
        contributions.append(contribution)
        public['%s_ciphertext' % ('kem' if source == 'pqc' else source)] = base64.b64encode(ciphertext).decode('ascii')
    if params['qkd']:
        with module_client(module) as client:
            contribution, alarm = qkd_master_contribution(client, params['peer_sae_id'], params['qkd_key_size'])
        if contribution is None:
            alarms.append(alarm)
        else:
            contributions.append(contribution)
    return contributions, alarms, public


def slave_half(module, kem_backend, classical_backend):
    params = module.params
    contributions = []
    for source, backend, algorithm, key_option, ciphertext_option in (
            ('classical', classical_backend, CLASSICAL_ALGORITHM, 'classical_private_key_path', 'classical_ciphertext'),
            ('pqc', kem_backend, params['kem_algorithm'], 'kem_private_key_path', 'kem_ciphertext')):
        ciphertext = b64_option(params, ciphertext_option)
        if ciphertext is None:
            continue
        if not params[key_option]:
            raise ModuleInputError('%s is given, so %s is required' % (ciphertext_option, key_option))
        private_key = read_private_key(params[key_option], algorithm)
        contributions.append(kem_slave_contribution(source, backend, algorithm, private_key,
                                                    backend.public_key(algorithm, private_key), ciphertext))
    if params['qkd'] and params['qkd_key_ids']:
        with module_client(module) as client:
            contributions.append(qkd_slave_contribution(client, params['peer_sae_id'], params['qkd_key_ids']))
    return contributions


def check_inputs(params):
    """Everything that can be checked before a QKD key is spent."""
    if params['key_length'] < 32:
        raise ModuleInputError('key_length must be at least 32 bytes (RFC 8784 PPKs need 256 bits), got %d' % params['key_length'])
    if params['qkd_key_size'] < 128 or params['qkd_key_size'] % 8:
        raise ModuleInputError('qkd_key_size must be a multiple of 8 and at least 128 bits, got %d' % params['qkd_key_size'])
    if params['expected_kcv'] is not None and not KCV_SHAPE.match(params['expected_kcv']):
        raise ModuleInputError('expected_kcv must be 6 hex digits, got %r' % params['expected_kcv'])
    check_writable(params['dest'])


def stored_key_fits(params, stored):
    if not stored or stored.get('link_id') != params['link_id'] or stored.get('role') != params['role']:
        return False
    if params['role'] == 'master':
        return not params['force'] and stored.get('inputs') == master_inputs_fingerprint(params)
    return stored.get('kcv') == params['expected_kcv'].upper() and \
        sorted(stored.get('qkd_key_ids') or []) == sorted(params['qkd_key_ids'] or [])


def key_link(module):
    params = module.params
    if params['role'] == 'master':
        link = dict(link_id=params['link_id'], master=params['sae_id'], slave=params['peer_sae_id'])
    else:
        link = dict(link_id=params['link_id'], master=params['peer_sae_id'], slave=params['sae_id'])
    if not link['master'] or not link['slave']:
        raise ModuleInputError('sae_id is required: it names this end of the link')
    check_inputs(params)
    stored = read_link_key(params['dest'])
    before = public_record(stored) if stored else None
    result = dict(changed=False, link_id=params['link_id'], dest=params['dest'])
    if stored_key_fits(params, stored):
        result.update((name, value) for name, value in before.items() if name in RESULT_FIELDS)
        return result
    result['changed'] = True
    if module.check_mode:
        return result

    policy = LinkPolicy.from_spec(params['policy'])
    kem_backend = select_backend(params['pqc_backend'], params['kem_algorithm'])
    classical_backend = select_backend('auto', CLASSICAL_ALGORITHM)
    if params['role'] == 'master':
        contributions, alarms, public = master_half(module, kem_backend, classical_backend)
    else:
        contributions, alarms, public = slave_half(module, kem_backend, classical_backend), [], {}
    link_key = derive(link, contributions, policy, params['hash_algorithm'], params['key_length'], alarms)
    if params['role'] == 'slave' and link_key.kcv != params['expected_kcv'].upper():
        raise ModuleInputError(
            'key confirmation failed for link %s: the master has KCV %s, this slave derived %s. Nothing was '
            'written; the QKD key is spent, so re-run the master with force=true before the slave. Causes: a '
            'tampered or wrong ciphertext, other key_IDs, another policy or algorithm on one end, or swapped roles.'
            % (params['link_id'], params['expected_kcv'].upper(), link_key.kcv))
    facts = link_key.public_facts()
    facts.update(public, link_id=params['link_id'], role=params['role'], alarms=list(facts.get('alarms', ())) + alarms)
    if params['role'] == 'master':
        facts['inputs'] = master_inputs_fingerprint(params)
    try:
        write_link_key(params['dest'], dict(facts, key=link_key.key.hex()))
    except (OSError, KeyDeliveryError) as exc:
        raise ModuleInputError('keyed the link (QKD key_IDs %s) but could not write dest %s: %s; the key is lost, '
                               'key the link again' % (', '.join(facts.get('qkd_key_ids') or []) or 'none',
                                                       params['dest'], getattr(exc, 'strerror', None) or exc))
    result.update((name, value) for name, value in facts.items() if name in RESULT_FIELDS)
    for alarm in result.get('alarms', ()):
        module.warn('link %s: %s' % (params['link_id'], alarm))
    if module._diff:
        result['diff'] = dict(before=dict((k, (before or {}).get(k)) for k in ('ppk_id', 'kcv')),
                              after=dict(ppk_id=result.get('ppk_id'), kcv=result.get('kcv')))
    return result


KCV_SHAPE = re.compile(r'^[0-9A-Fa-f]{6}$')
RESULT_FIELDS = ('ppk_id', 'kcv', 'sources', 'algorithms', 'qkd_key_ids', 'kem_ciphertext', 'classical_ciphertext',
                 'degraded', 'alarms')


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        role=dict(type='str', required=True, choices=['master', 'slave']),
        link_id=dict(type='str', required=True),
        peer_sae_id=dict(type='str', required=True),
        policy=dict(type='raw', default='qkd+pqc'),
        qkd=dict(type='bool', default=True),
        qkd_key_size=dict(type='int', default=256),
        kem_algorithm=dict(type='str', default='ML-KEM-768'),
        pqc_backend=dict(type='str', default='auto', choices=['auto', 'cryptography', 'liboqs']),
        hash_algorithm=dict(type='str', default='sha256', choices=list(HASH_ALGORITHMS)),
        key_length=dict(type='int', default=32, no_log=False),
        peer_kem_public_key=dict(type='str', no_log=False),
        peer_classical_public_key=dict(type='str', no_log=False),
        kem_private_key_path=dict(type='path', no_log=False),
        classical_private_key_path=dict(type='path', no_log=False),
        qkd_key_ids=dict(type='list', elements='str', no_log=False),
        kem_ciphertext=dict(type='str'),
        classical_ciphertext=dict(type='str'),
        expected_kcv=dict(type='str'),
        dest=dict(type='path', required=True),
        force=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[('role', 'slave', ['expected_kcv'])])
    wrong = [name for name in (SLAVE_OPTIONS if module.params['role'] == 'master' else MASTER_OPTIONS)
             if module.params[name] is not None]
    if wrong:
        module.fail_json(msg='%s do%s not apply to role=%s' % (', '.join(wrong), 'es' if len(wrong) == 1 else '', module.params['role']))
    try:
        module.exit_json(**key_link(module))
    except KeyDeliveryError as exc:
        module.fail_json(**exc.to_result())
    except (ModuleInputError, LinkKeyStoreError, PolicyViolation, PqcError, CombinerError, ValueError) as exc:
        module.fail_json(msg='link %s: %s' % (module.params['link_id'], getattr(exc, 'message', None) or exc))


if __name__ == '__main__':
    main()
