"""A live multi-site testbed on one Linux machine: each site a network namespace with a real strongSwan
charon (user-space ESP through kernel-libipsec), all joined by a bridge, keyed from the simulated QKD
network (qkdsim) by the collection's own playbooks/full_mesh.yml.

    python -m testbed up --sites 5 --state-dir /tmp/tb      # namespaces, charons, qkdsim, inventory
    python -m testbed connect --state-dir /tmp/tb           # after full_mesh.yml: load + start links
    python -m testbed verify --state-dir /tmp/tb            # ping every pair, ppk=yes on every SA
    python -m testbed down --state-dir /tmp/tb              # remove everything

playbooks/testbed_up.yml and playbooks/testbed_down.yml run these around full_mesh.yml; the Python
API is ``testbed.Testbed`` (see docs/testbed.md).
"""

from testbed.testbed import MAX_SITES, Testbed, TestbedError, skip_reason

__all__ = ['MAX_SITES', 'Testbed', 'TestbedError', 'skip_reason']
