#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: qkd_link_info
short_description: Status of a QKD link as its key management entity (KME) reports it
version_added: 0.1.0
description:
  - Asks the KME of this SAE for the status of the key stream towards a peer SAE
    (ETSI GS QKD 014 C(Get status)) - how many keys are stored, their default size, and the
    KME's limits per request.
  - Reads only; consumes no key material.
author:
  - qsafe.keyfabric maintainers (@qsafe-keyfabric)
options:
  peer_sae_id:
    description:
      - The ID of the SAE at the other end of the link (the slave SAE, when this SAE is the master).
    type: str
    required: true
extends_documentation_fragment:
  - qsafe.keyfabric.kme_connection
attributes:
  check_mode:
    support: full
    description: The module only reads, so it runs unchanged in check mode.
  diff_mode:
    support: none
    description: The module changes nothing, so there is nothing to diff.
notes:
  - Connection failures, certificate problems and KME errors fail the task with a message
    that names the KME and the cause; no Python traceback is shown.
'''

EXAMPLES = r'''
- name: How many keys does the MAD-1 -> MAD-2 link hold?
  qsafe.keyfabric.qkd_link_info:
    endpoints_file: /var/lib/qkdsim/endpoints.json
    sae_id: SAE-MAD-1
    peer_sae_id: SAE-MAD-2
  register: link

- name: Fail early when the link cannot deliver a batch of 10 keys
  ansible.builtin.assert:
    that: link.link_status.stored_key_count >= 10

- name: Without a manifest, name the KME and the certificates directly
  qsafe.keyfabric.qkd_link_info:
    kme_url: https://kme-a.example.net:8443
    client_cert: /etc/qkd/sae-a.pem
    client_key: /etc/qkd/sae-a.key
    ca_cert: /etc/qkd/ca.pem
    peer_sae_id: SAE-B
'''

RETURN = r'''
link_status:
  description: The link status, with the field names of ETSI GS QKD 014.
  returned: success
  type: dict
  contains:
    source_KME_ID: {description: ID of this SAE's KME., type: str, returned: always}
    target_KME_ID: {description: ID of the peer SAE's KME., type: str, returned: always}
    master_SAE_ID: {description: The master SAE (this SAE)., type: str, returned: always}
    slave_SAE_ID: {description: The slave SAE (the peer)., type: str, returned: always}
    key_size: {description: Default key size in bits., type: int, returned: always}
    stored_key_count: {description: Keys of the default size available now., type: int, returned: always}
    max_key_count: {description: Most keys of the default size the KME can store., type: int, returned: always}
    max_key_per_request: {description: Most keys one request may ask for., type: int, returned: always}
    max_key_size: {description: Largest key size in bits., type: int, returned: always}
    min_key_size: {description: Smallest key size in bits., type: int, returned: always}
    max_SAE_ID_count: {description: Most additional slave SAEs per request., type: int, returned: always}
  sample:
    source_KME_ID: KME-MAD-1
    target_KME_ID: KME-MAD-2
    master_SAE_ID: SAE-MAD-1
    slave_SAE_ID: SAE-MAD-2
    key_size: 256
    stored_key_count: 4096
    max_key_count: 4096
    max_key_per_request: 1024
    max_key_size: 4096
    min_key_size: 64
    max_SAE_ID_count: 0
kme_url:
  description: The KME that answered.
  returned: success
  type: str
  sample: https://127.0.0.1:40001
interface:
  description: The key-delivery interface used.
  returned: success
  type: str
  sample: etsi014
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import (
    connection_argument_spec,
    module_client,
    run_key_delivery,
)


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(peer_sae_id=dict(type='str', required=True))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)

    def fetch():
        with module_client(module) as client:
            return dict(changed=False, link_status=client.status(module.params['peer_sae_id']),
                        kme_url=client.kme_url, interface=client.interface)

    module.exit_json(**run_key_delivery(module, fetch))


if __name__ == '__main__':
    main()
