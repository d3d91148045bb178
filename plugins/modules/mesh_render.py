#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the mesh_render action (plugins/action/mesh_render.py); it has no module code."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mesh_render
short_description: Render every site's configuration of a mesh in one task, on the controller
version_added: 0.1.0
author:
  - qsafe.keyfabric maintainers (@qsafe-keyfabric)
description:
  - Writes the configuration files of every site of a mesh into O(output_dir), as
    C(playbooks/full_mesh.yml) in render mode does - the same files, byte for byte, as running the
    M(qsafe.keyfabric.mesh_site) role on every site, at a fraction of the cost. The per-site path pays
    Ansible's per-host, per-task overhead for every site; this renders in-process.
  - It carries no templates of its own. For each site it evaluates what M(qsafe.keyfabric.mesh_site)
    hands to its platform roles (the C(include_role) tasks of C(roles/mesh_site/tasks/main.yml)), checks
    those values against each role's C(meta/argument_specs.yml) and the role's own input checks, and
    renders the role's C(templates/) with its C(defaults/) and C(vars/), in Ansible's precedence order,
    into the files the role declares in C(_<role>_outputs) of its C(vars/main.yml) (template, file, mode) -
    the declaration the role's own tasks loop over.
  - The keys come from O(key_store), read as the P(qsafe.keyfabric.hybrid_key#lookup) lookup with C(store_only)
    reads them (the same code; each key checked against the KCV and size its file records). The store settings
    a link's key must match come from the link's plan entry (its C(policy) and C(kem_algorithm)), else from
    the play variables C(qsafe_policy), C(qsafe_kem_algorithm), C(qsafe_hash_algorithm), C(qsafe_key_length),
    C(qsafe_previous_key_lifetime) and the environment variable E(QSAFE_POLICY); unlike the lookup, the
    action does not read C(ansible.cfg) (the mesh plan gives every link its policy, so a plan never needs it).
  - The keys are turned into per-purpose secrets as P(qsafe.keyfabric.link_secrets#filter) does (the same code),
    and exist only in memory and in the files that hold them (mode 0600, written atomically and durably). The result names files, never content.
  - Every site is rendered and checked before the first file is written, so bad inventory data leaves
    the output directory as it was.
  - Linux MACsec files of links that left the mesh are removed, as the M(qsafe.keyfabric.macsec_link)
    role does.
options:
  plan:
    description: The mesh, from the P(qsafe.keyfabric.mesh_plan#filter) filter.
    type: dict
    required: true
  key_store:
    description:
      - Directory of the link keys (the P(qsafe.keyfabric.hybrid_key#lookup) lookup's C(key_store)).
        Every link of the rendered sites must have its key there, except O(pending_links).
    type: path
    required: true
  output_dir:
    description: Where each site's files go, in C(<output_dir>/<site>/).
    type: path
    required: true
  sites:
    description: Render only these sites of the plan (default all).
    type: list
    elements: str
  pending_links:
    description:
      - Links without a key yet (check mode before their first run). Sites with such a link are left
        out and listed in RV(skipped_sites).
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    description: Reports what would be written and removed, writes nothing.
  diff_mode:
    support: none
    description: The files hold keys; the result lists the changed files instead of a diff.
  platform:
    support: full
    platforms: posix
    description: Runs on the controller.
notes:
  - Variables the roles see from inventory are the site's host variables named C(qsafe_*),
    C(mesh_site_*), C(dmvpn_ios_xe_*), C(strongswan_site_*), C(macsec_link_*) and C(ansible_managed).
  - C(tests/integration/test_mesh_render.py) checks that this and the per-site path write the same files.
seealso:
  - module: qsafe.keyfabric.hybrid_link_key
  - plugin: qsafe.keyfabric.hybrid_key
    plugin_type: lookup
  - plugin: qsafe.keyfabric.mesh_plan
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Render every site (after the hybrid_key lookup has keyed the links into the key store)
  qsafe.keyfabric.mesh_render:
    plan: "{{ qsafe_mesh_plan }}"
    key_store: /srv/qsafe/keystore
    output_dir: /srv/qsafe/rendered
"""

RETURN = r"""
output_dir:
  description: The absolute output directory.
  returned: always
  type: str
sites:
  description: How many sites were rendered.
  returned: always
  type: int
  sample: 5
links:
  description: How many links the plan has.
  returned: always
  type: int
  sample: 10
files_written:
  description: How many files were (or in check mode would be) written.
  returned: always
  type: int
files_removed:
  description: How many files were (or would be) removed.
  returned: always
  type: int
changes:
  description: Per site with a change, the files written and removed (paths relative to RV(output_dir)).
  returned: always
  type: dict
  sample: {"mad-1": {"written": ["mad-1/ios_xe.cfg"], "removed": []}}
skipped_sites:
  description: Sites left out because a link of theirs is in O(pending_links), with those links.
  returned: always
  type: dict
"""
