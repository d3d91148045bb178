"""playbooks/full_mesh.yml in push mode on three Linux sites, each a real charon in its own mount and
network namespace, keyed from the simulator's Madrid triangle (SAE-MAD-1/2/3, QKD on every pair):
the first push brings every link up with its PPK, a second identical push changes nothing and spends
no QKD key, a rotation re-keys every link make-before-break, and no key byte is in any -vvvv output.

Needs what test_role_strongswan_site.py's charon tests need (charon_support.PACKAGES, root); skips,
saying so, elsewhere. The IOS-XE and Junos half of push mode is test_push_network_devices.py.
"""

import itertools
import json
import os
import re

import pytest

from charon_support import Charons, join, read, wait_for
from playbook_support import REPO_ROOT, ansible_playbook, key_spellings, keyed_now
from simulator_support import enc_keys_served

PLAYBOOK = os.path.join(REPO_ROOT, 'playbooks', 'full_mesh.yml')
SITES = ('mad-1', 'mad-2', 'mad-3')
LINKS = ['%s--%s' % pair for pair in itertools.combinations(SITES, 2)]   # the master sorts first


def number(site):
    return SITES.index(site) + 1


def underlay(site):
    return '198.51.100.%d' % number(site)


def tunnel(site):
    return '100.64.0.%d' % number(site)


@pytest.fixture(scope='module')
def linux_mesh(simulator, tmp_path_factory):
    """Three charons joined pairwise by veth pairs (underlay addresses on lo, one /32 route per peer),
    an inventory whose sites push into them (ansible_connection=local, their own swanctl directory and
    VICI socket), a key store. Stops the charons afterwards."""
    tmp_path = tmp_path_factory.mktemp('push')
    charons = Charons(tmp_path)
    try:
        charon_of = dict((site, charons.start(site)) for site in SITES)
        for site, charon in charon_of.items():
            charon.netns('ip addr add %s/32 dev lo; ip addr add %s/32 dev lo' % (underlay(site), tunnel(site)))
        for a, b in itertools.combinations(SITES, 2):
            device_a, device_b = 'q%d-%d' % (number(a), number(b)), 'q%d-%d' % (number(b), number(a))
            join(charon_of[a], charon_of[b], device_a, device_b)
            for site, device, other in ((a, device_a, b), (b, device_b, a)):
                charon_of[site].netns('ip link set %s up; ip route add %s/32 dev %s src %s'
                                      % (device, underlay(other), device, underlay(site)))
        hosts = dict((site, dict(
            qsafe_site_platform='linux', qsafe_site_sae_id='SAE-' + site.upper(),
            qsafe_site_underlay_ip=underlay(site), qsafe_site_tunnel_ip=tunnel(site),
            qsafe_site_swanctl_dir=str(tmp_path / site / 'swanctl'), qsafe_site_vici_uri=charon_of[site].uri,
            ansible_connection='local')) for site in SITES)
        inventory = tmp_path / 'inventory.json'
        inventory.write_text(json.dumps({'all': {
            'children': {'qsafe_sites': {'hosts': hosts}},
            'vars': {'qsafe_mesh': {'name': 'push-test', 'links': 'full',
                                    'link_defaults': {'type': 'ipsec', 'policy': 'qkd+pqc'}}}}}))
        yield dict(charon_of=charon_of, inventory=str(inventory), store=tmp_path / 'store', simulator=simulator)
    finally:
        charons.stop()


def push(mesh, **extra):
    extra_vars = dict(qsafe_mode='push', qsafe_endpoints_file=mesh['simulator']['endpoints_file'],
                      qsafe_key_store=str(mesh['store']), **extra)
    rc, output = ansible_playbook(PLAYBOOK, '-i', mesh['inventory'], '-e', json.dumps(extra_vars), '-vvvv', '--diff')
    assert rc == 0, output
    return output


def keys_served(mesh):
    """QKD keys the simulator has handed out for each link (to its master)."""
    return dict((link, enc_keys_served(mesh['simulator'], 'SAE-' + link.split('--')[0].upper(),
                                       'SAE-' + link.split('--')[1].upper())) for link in LINKS)


def ike_sas(mesh):
    """site -> sorted [(peer, uniqueid, state, ppk)]."""
    return dict((site, sorted(charon.ike_sas())) for site, charon in mesh['charon_of'].items())


def all_up(mesh):
    """The IKE SAs when every site has exactly one ESTABLISHED IKE SA with a PPK to each other site, else None."""
    sas = ike_sas(mesh)
    wanted = dict((site, [(peer, 'ESTABLISHED', True) for peer in SITES if peer != site]) for site in SITES)
    return sas if all([sa[:1] + sa[2:] for sa in sas[site]] == wanted[site] for site in SITES) else None


def changed_per_host(output):
    return dict((host, int(changed)) for host, changed
                in re.findall(r'(?m)^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0', output))


def stored_keys(mesh):
    """The link keys in the store, current and previous: {file name: record}."""
    return dict((name, json.loads((mesh['store'] / name).read_text())) for name in sorted(os.listdir(str(mesh['store']))))


@pytest.fixture(scope='module')
def first_push(linux_mesh):
    output = push(linux_mesh)
    sas = wait_for(lambda: all_up(linux_mesh), 'an ESTABLISHED IKE SA with a PPK on every link')
    return dict(output=output, sas=sas, keys=stored_keys(linux_mesh))


@pytest.fixture(scope='module')
def second_push(linux_mesh, first_push):
    served = keys_served(linux_mesh)
    output = push(linux_mesh)
    return dict(output=output, served_before=served, served_after=keys_served(linux_mesh),
                sas=ike_sas(linux_mesh), keys=stored_keys(linux_mesh))


@pytest.fixture(scope='module')
def rotation(linux_mesh, second_push):
    served = keys_served(linux_mesh)
    output = push(linux_mesh, qsafe_rotate=True)
    sas = wait_for(lambda: all_up(linux_mesh), 'an ESTABLISHED IKE SA with a PPK on every link')
    logs = dict((site, read(charon.log)) for site, charon in linux_mesh['charon_of'].items())
    return dict(output=output, served_before=served, served_after=keys_served(linux_mesh), sas=sas,
                sas_before=second_push['sas'], logs=logs, keys=stored_keys(linux_mesh))


def test_push_brings_every_link_up_with_its_ppk(linux_mesh, first_push):
    assert keyed_now(first_push['output']) == LINKS
    # traffic between the inner addresses goes through each link's CHILD_SA
    for source, destination in itertools.permutations(SITES, 2):
        linux_mesh['charon_of'][source].send_udp(tunnel(source), tunnel(destination))
    for site, charon in linux_mesh['charon_of'].items():
        wait_for(lambda charon=charon: len(re.findall(r'packets-in=[1-9]', charon.swanctl('--list-sas', '--raw'))) == 2,
                 'ESP traffic from both peers of ' + site)
    # each link is up with the PPK of its stored key, on both ends
    from ansible_collections.qsafe.keyfabric.plugins.filter.link_secrets import link_secrets
    for link in LINKS:
        ppk_id = link_secrets(first_push['keys'][link + '.json'])['ppk_id']
        for site in link.split('--'):
            assert "using PPK for PPK_ID '%s'" % ppk_id in read(linux_mesh['charon_of'][site].log), (site, link)


def test_second_push_changes_nothing_and_spends_no_key(first_push, second_push):
    output = second_push['output']
    assert keyed_now(output) == []
    assert changed_per_host(output) == dict(localhost=0, **dict((site, 0) for site in SITES)), output
    assert second_push['served_after'] == second_push['served_before'], 'a QKD key was fetched'
    assert second_push['sas'] == first_push['sas'], 'an IKE SA was set up or closed'
    assert second_push['keys'] == first_push['keys']


def test_rotation_rekeys_every_link_make_before_break(rotation):
    from ansible_collections.qsafe.keyfabric.plugins.filter.link_secrets import link_secrets
    output = rotation['output']
    assert keyed_now(output) == LINKS
    assert all(rotation['served_after'][link] > rotation['served_before'][link] for link in LINKS)
    for site in SITES:
        assert 'rotated with the new PPK: %s' % ', '.join(peer for peer in SITES if peer != site) in output
    for link in LINKS:
        initiator, responder = link.split('--')
        old = dict((site, [sa[1] for sa in rotation['sas_before'][site] if sa[0] == peer])
                   for site, peer in ((initiator, responder), (responder, initiator)))
        new = dict((site, [sa[1] for sa in rotation['sas'][site] if sa[0] == peer])
                   for site, peer in ((initiator, responder), (responder, initiator)))
        assert all(len(old[site]) == len(new[site]) == 1 and old[site] != new[site] for site in old), (link, old, new)
        # make before break: the initiator's new IKE SA is up before it deletes the old one
        log = rotation['logs'][initiator]
        established = log.find('IKE_SA %s[%d] established' % (responder, new[initiator][0]))
        deleting = log.find('deleting IKE_SA %s[%d]' % (responder, old[initiator][0]))
        assert 0 <= established < deleting, (link, established, deleting)
        # with the new PPK, on both ends
        ppk_id = link_secrets(rotation['keys'][link + '.json'])['ppk_id']
        for site in (initiator, responder):
            assert "using PPK for PPK_ID '%s'" % ppk_id in rotation['logs'][site], (site, link)


def test_no_key_byte_in_any_verbose_output(first_push, second_push, rotation):
    from ansible_collections.qsafe.keyfabric.plugins.filter.link_secrets import link_secrets
    output = first_push['output'] + second_push['output'] + rotation['output']
    records = list(first_push['keys'].values()) + list(rotation['keys'].values())
    assert len(set(record['key'] for record in records)) >= 2 * len(LINKS)   # before and after the rotation
    for record in records:
        for spelling in key_spellings(bytes.fromhex(record['key'])):
            assert spelling not in output, record['link_id']
        derived = link_secrets(record)
        for name in ('ppk_hex', 'ike_psk_hex', 'macsec_cak_hex'):
            assert derived[name] not in output and derived[name].upper() not in output, (record['link_id'], name)
