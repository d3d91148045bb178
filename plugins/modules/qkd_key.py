#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: qkd_key
short_description: Get QKD keys from a key management entity (KME), as master or as slave
version_added: 0.1.0
description:
  - As C(master), asks this SAE's KME for I(number) new keys shared with the peer (slave) SAE
    (ETSI GS QKD 014 C(Get key)). The KME returns the keys with their key_IDs.
  - As C(slave), asks this SAE's KME for the keys with the given I(key_ids), which the master
    obtained for this SAE (ETSI GS QKD 014 C(Get key with key IDs)). Each key is delivered to
    the slave once only.
  - Key bytes are written to I(dest), a key bundle file with mode 0600 written atomically.
    They are put into the result, as C(key_material), only with I(return_keys=true).
  - Idempotent with I(dest) - when I(dest) already holds the keys asked for (same role, peer,
    number and size; for a slave the same key_IDs), nothing is fetched and no key is consumed.
author:
  - qsafe.keyfabric maintainers (@qsafe-keyfabric)
options:
  role:
    description:
      - C(master) gets new keys for I(peer_sae_id); C(slave) gets keys by ID from I(peer_sae_id).
    type: str
    required: true
    choices: [master, slave]
  peer_sae_id:
    description:
      - The SAE at the other end. For C(master), the slave SAE the keys are for; for C(slave),
        the master SAE that obtained the keys.
    type: str
    required: true
  number:
    description:
      - How many new keys to get in one request (C(master) only).
    type: int
    default: 1
  size:
    description:
      - Key size in bits, a multiple of 8 (C(master) only). Defaults to the KME's key size.
    type: int
  key_ids:
    description:
      - The key_IDs to get (C(slave) only, required then).
    type: list
    elements: str
  dest:
    description:
      - Path of the key bundle file to write (JSON with the key_IDs, base64 keys and their
        check values), mode 0600, written atomically. Its directory must exist.
      - One of I(dest) and I(return_keys) is required, so fetched keys are never dropped.
    type: path
  force:
    description:
      - Get new keys even when I(dest) already holds matching ones (C(master)), to re-key.
    type: bool
    default: false
  return_keys:
    description:
      - Also return the key bytes (base64) in C(key_material). The result is then sensitive - register
        it only with C(no_log) on the task, and never print it.
    type: bool
    default: false
extends_documentation_fragment:
  - qsafe.keyfabric.kme_connection
attributes:
  check_mode:
    support: full
    description:
      - Never consumes a key. Reports whether keys would be fetched; as C(master) it also reads
        the link status and warns when the KME cannot deliver I(number) keys now.
  diff_mode:
    support: full
    description: The diff shows key_IDs and key check values, never key bytes.
notes:
  - A key request whose answer is lost (timeout, dropped connection) is never repeated; the
    task fails and says that the keys are gone, so that no key is ever consumed twice.
  - The key check value (KCV) is the first 3 bytes of HMAC-SHA256(key, "qsafe.keyfabric KCV v1"),
    so master and slave can compare keys without revealing them.
seealso:
  - module: qsafe.keyfabric.qkd_link_info
'''

EXAMPLES = r'''
- name: Master MAD-1 gets a key for the MAD-1 <-> MAD-2 link
  qsafe.keyfabric.qkd_key:
    endpoints_file: /var/lib/qkdsim/endpoints.json
    sae_id: SAE-MAD-1
    role: master
    peer_sae_id: SAE-MAD-2
    dest: /etc/qsafe/keys/mad-1--mad-2.json
  register: master

- name: Slave MAD-2 gets the same key by its key_ID
  qsafe.keyfabric.qkd_key:
    endpoints_file: /var/lib/qkdsim/endpoints.json
    sae_id: SAE-MAD-2
    role: slave
    peer_sae_id: SAE-MAD-1
    key_ids: "{{ master.key_ids }}"
    dest: /etc/qsafe/keys/mad-1--mad-2.json

- name: Both ends hold the same key
  ansible.builtin.assert:
    that: master.keys_info | map(attribute='kcv') | list == slave.keys_info | map(attribute='kcv') | list

- name: A batch of 32 keys of 512 bits, handed to the next task (sensitive)
  qsafe.keyfabric.qkd_key:
    kme_url: https://kme-a.example.net:8443
    client_cert: /etc/qkd/sae-a.pem
    client_key: /etc/qkd/sae-a.key
    ca_cert: /etc/qkd/ca.pem
    role: master
    peer_sae_id: SAE-B
    number: 32
    size: 512
    return_keys: true
  register: batch
  no_log: true
'''

RETURN = r'''
key_ids:
  description: The key_IDs, in order. In check mode as C(master), empty when keys would be fetched.
  returned: always
  type: list
  elements: str
  sample: [0b5c6c8e-5a43-4c0e-9a3e-0f1d1c2b3a49]
keys_info:
  description: Public facts about each key - never the key itself.
  returned: always
  type: list
  elements: dict
  contains:
    key_id:
      description: The key_ID.
      type: str
      returned: always
    size:
      description: Key size in bits.
      type: int
      returned: always
    kcv:
      description: Key check value, 6 hex digits.
      type: str
      returned: always
  sample: [{key_id: 0b5c6c8e-5a43-4c0e-9a3e-0f1d1c2b3a49, size: 256, kcv: 3FA2C1}]
dest:
  description: The key bundle file.
  returned: when I(dest) is given
  type: str
  sample: /etc/qsafe/keys/mad-1--mad-2.json
key_material:
  description:
    - The keys, each with C(key_ID) and C(key) (base64). SENSITIVE.
  returned: when I(return_keys=true) and not in check mode
  type: list
  elements: dict
kme_url:
  description: The KME that was asked (or would be asked).
  returned: always
  type: str
'''

import base64

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import (
    check_writable,
    describe_keys,
    read_key_bundle,
    write_key_bundle,
)
from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import (
    connection_argument_spec,
    module_client,
    run_key_delivery,
)


def bundle_matches(params, metadata, keys):
    """Does the existing key bundle already hold what the task asks for?"""
    if metadata is None or metadata.get('role') != params['role'] or metadata.get('peer_sae_id') != params['peer_sae_id']:
        return False
    if params['role'] == 'slave':
        return sorted(key.key_id for key in keys) == sorted(params['key_ids'])
    if params['force'] or len(keys) != params['number']:
        return False
    return params['size'] is None or all(key.size == params['size'] for key in keys)


def get_keys(module):
    params = module.params
    dest = params['dest']
    metadata, old_keys = read_key_bundle(dest) if dest else (None, None)
    before = dict(dest=dest, keys=describe_keys(old_keys) if old_keys else [])

    with module_client(module) as client:
        result = dict(changed=False, kme_url=client.kme_url, dest=dest)
        if bundle_matches(params, metadata, old_keys):
            keys = old_keys
        elif module.check_mode:
            result['changed'] = True
            if params['role'] == 'master':
                status = client.status(params['peer_sae_id'])
                if 0 <= status['stored_key_count'] < params['number']:  # -1: the interface reports no count (SKIP)
                    module.warn('the KME holds %d keys for %s now; %d would be asked for'
                                % (status['stored_key_count'], params['peer_sae_id'], params['number']))
            keys = None
        else:
            if dest:
                check_writable(dest)
            if params['role'] == 'master':
                keys = client.get_new_keys(params['peer_sae_id'], params['number'], params['size'])
            else:
                keys = client.get_keys_by_id(params['peer_sae_id'], params['key_ids'])
            result['changed'] = True
            if dest:
                try:
                    write_key_bundle(dest, keys, interface=client.interface, kme_url=client.kme_url,
                                     role=params['role'], sae_id=params['sae_id'], peer_sae_id=params['peer_sae_id'])
                except (OSError, KeyDeliveryError) as exc:
                    raise KeyDeliveryError('got keys %s but could not write dest %s: %s; these keys are lost'
                                           % (', '.join(key.key_id for key in keys), dest, exc), kind='config',
                                           consumed=True)

    if keys is None:
        result['key_ids'] = list(params['key_ids'] or []) if params['role'] == 'slave' else []
        result['keys_info'] = []
    else:
        result['key_ids'] = [key.key_id for key in keys]
        result['keys_info'] = describe_keys(keys)
        if params['return_keys']:
            result['key_material'] = [dict(key_ID=key.key_id, key=base64.b64encode(key.key).decode('ascii')) for key in keys]
    if module._diff and dest:
        result['diff'] = dict(before=before, after=dict(dest=dest, keys=result['keys_info']))
    return result


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(
        role=dict(type='str', required=True, choices=['master', 'slave']),
        peer_sae_id=dict(type='str', required=True),
        number=dict(type='int', default=1),
        size=dict(type='int'),
        key_ids=dict(type='list', elements='str', no_log=False),
        dest=dict(type='path'),
        force=dict(type='bool', default=False),
        return_keys=dict(type='bool', default=False, no_log=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[('role', 'slave', ['key_ids'])],
    )
    params = module.params
    if params['role'] == 'slave' and (params['number'] != 1 or params['size'] is not None or params['force']):
        module.fail_json(msg='number, size and force apply to role=master only; a slave gets keys by key_ids')
    if params['role'] == 'master' and params['key_ids']:
        module.fail_json(msg='key_ids applies to role=slave only; a master gets new keys')
    if params['number'] < 1:
        module.fail_json(msg='number must be at least 1, got %d' % params['number'])
    if params['size'] is not None and (params['size'] <= 0 or params['size'] % 8):
        module.fail_json(msg='size must be a positive multiple of 8 bits, got %d' % params['size'])
    if not params['return_keys'] and not params['dest']:
        module.fail_json(msg='give dest (or return_keys=true): otherwise the fetched keys would be lost')

    module.exit_json(**run_key_delivery(module, lambda: get_keys(module)))


if __name__ == '__main__':
    main()
