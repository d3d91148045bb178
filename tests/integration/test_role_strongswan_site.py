"""The strongswan_site role: rendered swanctl files, secrets, idempotence and input checks; then the
files loaded into real charons, each in its own mount and network namespace, where a two-site mesh
comes up with its PPKs and rotates them.

The charon tests need the Debian packages strongswan-charon, strongswan-swanctl,
libcharon-extra-plugins (kernel-libipsec) and libstrongswan-standard-plugins (openssl, gcm), and
root for unshare; they are skipped, saying so, where these are missing.
"""

import json
import os
import re
import secrets
import shutil
import stat
import textwrap

import pytest

from charon_support import Charons, join, read, wait_for
from playbook_support import ansible_playbook, key_spellings, recap, run_tasks

CONNS = os.path.join('swanctl', 'conf.d', 'qsafe-mesh.conf')
SECRETS = os.path.join('swanctl', 'conf.d', 'qsafe-mesh.secrets.conf')


def link(link_id):
    """Fresh public and secret values of one link, as the link_secrets filter gives them."""
    return dict(link_id=link_id, ppk_id='qkf-%016x' % secrets.randbits(64), ppk_hex=secrets.token_hex(32),
                ike_psk_hex=secrets.token_hex(32))


def site_vars(name, number, peers, **extra):
    return dict(strongswan_site_name=name, strongswan_site_underlay_ip='198.51.100.%d' % number,
                strongswan_site_tunnel_ip='100.64.0.%d' % number, strongswan_site_peers=peers, **extra)


def peer(name, number, values, **extra):
    return dict(values, name=name, underlay_ip='198.51.100.%d' % number, tunnel_ip='100.64.0.%d' % number, **extra)


def role_task(role_vars, check_mode=False):
    return textwrap.dedent('''\
        - ansible.builtin.include_role:
            name: qsafe.keyfabric.strongswan_site
            apply:
              check_mode: %s
          vars: %s
        ''') % (json.dumps(check_mode), json.dumps(role_vars))


def secret_values(peers):
    return [bytes.fromhex(p[field]) for p in peers for field in ('ppk_hex', 'ike_psk_hex')]


def assert_no_key_bytes(output, peers):
    for value in secret_values(peers):
        for spelling in key_spellings(value):
            assert spelling not in output, 'key bytes in the output'


def sections(text):
    """Top-level entries of the connections or secrets section of a swanctl file."""
    return set(re.findall(r'(?m)^    (\S+) \{$', text))


THREE_PEERS = [peer('mad-2', 2, link('MAD-1--MAD-2')), peer('mad-3', 3, link('MAD-1--MAD-3')),
               peer('bcn-1', 4, link('BCN-1--MAD-1'))]


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
    """One site with three peers rendered once with -vvvv --diff: its directory, input and output."""
    tmp_path = tmp_path_factory.mktemp('strongswan-site')
    out = tmp_path / 'out'
    role_vars = site_vars('mad-1', 1, THREE_PEERS, strongswan_site_output_dir=str(out))
    rc, output = run_tasks(tmp_path, role_task(role_vars), '-vvvv', '--diff')
    assert rc == 0 and recap(output)['changed'] == 4, output   # directory, swanctl.conf, the two files
    return dict(dir=out / 'mad-1', out=out, vars=role_vars, output=output, tmp_path=tmp_path)


def test_render_writes_both_files_with_ppk_on_every_peer_and_no_key_in_the_output(rendered):
    site = rendered['dir']
    assert stat.S_IMODE(os.stat(str(site / SECRETS)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(str(site / CONNS)).st_mode) == 0o644
    conns, keys = read(site / CONNS), read(site / SECRETS)
    for text in (conns, keys, read(site / 'swanctl' / 'swanctl.conf')):
        assert text.startswith('#\n# Ansible managed')
    assert sections(conns) == {'bcn-1', 'mad-2', 'mad-3'}
    assert sections(keys) == {'ike-bcn-1', 'ppk-bcn-1', 'ike-mad-2', 'ppk-mad-2', 'ike-mad-3', 'ppk-mad-3'}
    blocks = re.split(r'(?m)^    (?=\S+ \{$)', conns.split('connections {', 1)[1])[1:]
    assert len(blocks) == 3
    for p in THREE_PEERS:
        block = next(b for b in blocks if b.startswith(p['name'] + ' {'))
        assert 'ppk_id = %s\n' % p['ppk_id'] in block and 'ppk_required = yes\n' in block
        assert 'remote_addrs = %s\n' % p['underlay_ip'] in block and 'local_addrs = 198.51.100.1\n' in block
        assert 'local_ts = 100.64.0.1/32\n' in block and 'remote_ts = %s/32\n' % p['tunnel_ip'] in block
        # mad-1 sorts before mad-2 and mad-3 (it starts those links) and after bcn-1 (which starts that one)
        assert ('dpd_action = restart' in block) == (p['name'] != 'bcn-1')
        assert 'id = %s\n        secret = 0x%s\n' % (p['ppk_id'], p['ppk_hex']) in keys
        assert 'id-remote = %s\n        secret = 0x%s\n' % (p['name'], p['ike_psk_hex']) in keys
        assert p['ppk_hex'] not in conns and p['ike_psk_hex'] not in conns
    output = rendered['output']
    assert_no_key_bytes(output, THREE_PEERS)
    assert 'ppk_id = %s' % THREE_PEERS[0]['ppk_id'] in output, 'the connections diff is shown'
    assert 'added mad-2: ppk_id %s' % THREE_PEERS[0]['ppk_id'] in output


ROTATED = dict(THREE_PEERS[0], **{k: v for k, v in link('MAD-1--MAD-2').items() if k != 'link_id'})
TWO_PEERS = [ROTATED, THREE_PEERS[2]]   # mad-2 with a new key, mad-3 removed

BAD_INPUTS = {   # the role's own check reports every problem of an input at once, each naming its field
    'missing ppk_hex (argument spec)': (
        {'strongswan_site_peers': [{k: v for k, v in THREE_PEERS[0].items() if k != 'ppk_hex'}]},
        ['missing required arguments: ppk_hex found in strongswan_site_peers']),
    'short ppk, same name twice, invalid IPs, no output_dir': (
        {'strongswan_site_peers': [dict(THREE_PEERS[0], ppk_hex='ab' * 31),
                                   dict(THREE_PEERS[1], name='mad-2', underlay_ip='198.51.100.300'),
                                   dict(THREE_PEERS[2], tunnel_ip='fd00::4')],
         'strongswan_site_tunnel_ip': '100.64.0', 'strongswan_site_output_dir': ''},
        ['strongswan_site_peers[0] (mad-2): ppk_hex must be an even number of hex digits, at least 64 (256 bits)',
         'strongswan_site_peers: two peers have the name mad-2',
         'strongswan_site_peers[1] (mad-2): underlay_ip is not an IPv4 or IPv6 address (got 198.51.100.300)',
         'strongswan_site_tunnel_ip is not an IPv4 or IPv6 address (got 100.64.0)',
         'strongswan_site_output_dir is required in render mode']),
    'mixed address families': (
        {'strongswan_site_peers': [dict(THREE_PEERS[0], tunnel_ip='fd00::2')]},
        ['strongswan_site_peers[0] (mad-2): tunnel_ip is not of the address family of strongswan_site_tunnel_ip']),
}


def marker(name):
    return '- ansible.builtin.debug:\n    msg: "SECTION %s"\n' % name


@pytest.fixture(scope='module')
def followup(rendered):
    """One more playbook run over copies of the rendered site, in sections (one run keeps the suite
    fast): the same input again; check mode with a changed input (mad-2 rotated, mad-3 removed); the
    same change for real; one rescued block per bad input, each printing its failure message."""
    tmp_path = rendered['tmp_path'] / 'followup'
    tmp_path.mkdir()
    for copy in ('check', 'removal'):
        shutil.copytree(str(rendered['out']), str(tmp_path / copy))
    change = dict(rendered['vars'], strongswan_site_peers=TWO_PEERS)
    tasks = (marker('again') + role_task(rendered['vars'])
             + marker('check') + role_task(dict(change, strongswan_site_output_dir=str(tmp_path / 'check')), True)
             + marker('removal') + role_task(dict(change, strongswan_site_output_dir=str(tmp_path / 'removal')))
             + marker('bad'))
    for number, (bad, words) in enumerate(BAD_INPUTS.values()):
        role_vars = dict(site_vars('mad-1', 1, THREE_PEERS[:1], strongswan_site_output_dir=str(tmp_path / 'bad')),
                         **bad)
        tasks += textwrap.dedent('''\
            - block:
                - ansible.builtin.include_role:
                    name: qsafe.keyfabric.strongswan_site
                  vars: %s
                - ansible.builtin.fail:
                    msg: "CASE %d PASSED"
              rescue:
                - ansible.builtin.debug:
                    msg: "CASE %d: {{ ansible_failed_result.msg }}"
            ''') % (json.dumps(role_vars), number, number)
    rc, output = run_tasks(tmp_path, tasks, '-vvvv', '--diff')
    assert rc == 0, output
    parts = re.split(r'"msg": "SECTION (\w+)"', output)
    return dict(tmp_path=tmp_path, output=output, **dict(zip(parts[1::2], parts[2::2])))


def changed_tasks(section):
    return re.findall(r'(?m)^changed: \[localhost\]', section)


def test_second_run_changes_nothing(followup):
    assert changed_tasks(followup['again']) == [], followup['again']
    assert 'ok: [localhost]' in followup['again']


def test_check_mode_writes_nothing(rendered, followup):
    assert len(changed_tasks(followup['check'])) == 2, followup['check']
    for name in (CONNS, SECRETS):
        assert read(followup['tmp_path'] / 'check' / 'mad-1' / name) == read(rendered['dir'] / name)
    assert 'rotated mad-2: ppk_id %s -> %s' % (THREE_PEERS[0]['ppk_id'], ROTATED['ppk_id']) in followup['check']
    assert_no_key_bytes(followup['output'], THREE_PEERS + [ROTATED])


def test_removing_a_peer_removes_its_sections(followup):
    section = followup['removal']
    assert len(changed_tasks(section)) == 2, section
    site = followup['tmp_path'] / 'removal' / 'mad-1'
    conns, keys = read(site / CONNS), read(site / SECRETS)
    assert sections(conns) == {'bcn-1', 'mad-2'} and 'mad-3' not in conns and 'MAD-1--MAD-3' not in conns
    assert sections(keys) == {'ike-bcn-1', 'ppk-bcn-1', 'ike-mad-2', 'ppk-mad-2'}
    assert THREE_PEERS[1]['ppk_hex'] not in keys and ROTATED['ppk_hex'] in keys
    assert 'ppk_id = %s' % ROTATED['ppk_id'] in conns
    assert 'rotated mad-2: ppk_id %s -> %s' % (THREE_PEERS[0]['ppk_id'], ROTATED['ppk_id']) in section
    assert 'removed mad-3: ppk_id %s' % THREE_PEERS[1]['ppk_id'] in section


def test_bad_input_fails_before_writing_with_a_message_naming_the_field(followup):
    for number, (case, (bad, words)) in enumerate(BAD_INPUTS.items()):
        message = re.search(r'"msg": "CASE %d: (.*)"' % number, followup['bad'])
        assert message, (case, followup['bad'])
        for word in words:
            assert word in message.group(1), (case, message.group(1))
    assert not (followup['tmp_path'] / 'bad').exists()
    assert 'Traceback' not in followup['bad']


# ---------------------------------------------------------------------------------------------
# real charons

@pytest.fixture
def charons(tmp_path):
    """Factory: Charon(name). Skips when strongSwan or unshare is not available."""
    started = Charons(tmp_path)
    yield started.start
    started.stop()


def test_rendered_files_load_into_a_real_charon(rendered, charons):
    charon = charons('render')
    # the trap policies need this site's inner address on the host (for the source of their routes)
    charon.netns('ip addr add 198.51.100.1/32 dev lo; ip addr add 100.64.0.1/32 dev lo')
    swanctl_dir = rendered['dir'] / 'swanctl'
    output = charon.swanctl('--load-all', '--noprompt', '--file', str(swanctl_dir / 'swanctl.conf'),
                            swanctl_dir=swanctl_dir)
    for p in THREE_PEERS:
        assert "loaded ike secret 'ike-%s'" % p['name'] in output
        assert "loaded ppk secret 'ppk-%s'" % p['name'] in output
    assert 'successfully loaded 3 connections, 0 unloaded' in output, output
    conns = charon.swanctl('--list-conns')
    for p in THREE_PEERS:
        assert re.search(r'(?m)^%s: IKEv2.*\n  ppk: %s, required\n' % (p['name'], p['ppk_id']), conns), conns
    policies = charon.swanctl('--list-pols')
    assert policies.count(', TUNNEL') == 3, policies
    log = read(charon.log)
    for p in THREE_PEERS:
        assert "loaded PPK shared key with id 'ppk-%s' for: '%s'" % (p['name'], p['ppk_id']) in log
    assert_no_key_bytes(output + conns + log, THREE_PEERS)


def mesh_inventory(tmp_path, links, charon_of):
    """Two sites in one play, each applying to its own swanctl directory and charon."""
    hosts = {}
    for name, number, other, other_number in (('mad-1', 1, 'mad-2', 2), ('mad-2', 2, 'mad-1', 1)):
        hosts[name] = dict(site_vars(name, number, [peer(other, other_number, links['MAD-1--MAD-2'])],
                                     strongswan_site_mode='apply',
                                     strongswan_site_swanctl_dir=str(tmp_path / name / 'swanctl'),
                                     strongswan_site_vici_uri=charon_of[name].uri,
                                     strongswan_site_swanctl_timeout=10),
                           ansible_connection='local')
    path = tmp_path / 'inventory.json'
    path.write_text(json.dumps({'all': {'children': {'mesh': {'hosts': hosts}}}}))
    return str(path)


MESH_PLAY = '''\
- hosts: mesh
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: qsafe.keyfabric.strongswan_site
'''


def send_through_tunnel(charon):
    """One UDP datagram from mad-1's inner address to mad-2's (counted by mad-2's CHILD_SA)."""
    charon.send_udp('100.64.0.1', '100.64.0.2')


def test_apply_brings_the_link_up_with_its_ppk_and_rotation_replaces_it(charons, tmp_path):
    """Two sites in one play, each with its own charon, joined by a veth pair. (A second run with the
    same input changing nothing is the render-mode test's: apply mode adds only handlers and the
    rotation, which run only on a change.)"""
    charon_of = {'mad-1': charons('mad-1'), 'mad-2': charons('mad-2')}
    join(charon_of['mad-1'], charon_of['mad-2'], 'qsafe-a', 'qsafe-b')
    for name, number, device in (('mad-1', 1, 'qsafe-a'), ('mad-2', 2, 'qsafe-b')):
        charon_of[name].netns('ip addr add 198.51.100.%d/24 dev %s; ip link set %s up; ip addr add 100.64.0.%d/32 dev lo'
                              % (number, device, device, number))
    playbook = tmp_path / 'mesh.yml'
    playbook.write_text(MESH_PLAY)
    first = {'MAD-1--MAD-2': link('MAD-1--MAD-2')}
    for name in charon_of:
        (tmp_path / name / 'swanctl').mkdir(parents=True)

    rc, output = ansible_playbook(str(playbook), '-i', mesh_inventory(tmp_path, first, charon_of))
    assert rc == 0, output
    initiator, responder = charon_of['mad-1'], charon_of['mad-2']
    sas = wait_for(lambda: [sa for sa in responder.ike_sas() if sa[2] == 'ESTABLISHED'], 'the link to come up')
    assert [sa[0] for sa in sas] == ['mad-1'] and sas[0][3], sas
    assert [(sa[0], sa[2], sa[3]) for sa in initiator.ike_sas()] == [('mad-2', 'ESTABLISHED', True)]
    old_id = initiator.ike_sas()[0][1]
    send_through_tunnel(initiator)
    wait_for(lambda: re.search(r'packets-in=[1-9]', responder.swanctl('--list-sas', '--raw')), 'ESP traffic')

    second = {'MAD-1--MAD-2': link('MAD-1--MAD-2')}
    rc, output = ansible_playbook(str(playbook), '-i', mesh_inventory(tmp_path, second, charon_of), '-vvvv', '--diff')
    assert rc == 0, output
    change = 'ppk_id %s -> %s' % (first['MAD-1--MAD-2']['ppk_id'], second['MAD-1--MAD-2']['ppk_id'])
    assert 'rotated mad-2: ' + change in output and 'rotated mad-1: ' + change in output
    assert 'rotated with the new PPK: mad-2' in output and 'rotated with the new PPK: mad-1' in output
    for charon, conn in ((initiator, 'mad-2'), (responder, 'mad-1')):
        sas = charon.ike_sas()
        assert [(sa[0], sa[2], sa[3]) for sa in sas] == [(conn, 'ESTABLISHED', True)], sas
    assert initiator.ike_sas()[0][1] != old_id
    assert "using PPK for PPK_ID '%s'" % second['MAD-1--MAD-2']['ppk_id'] in read(responder.log)
    assert_no_key_bytes(output, [first['MAD-1--MAD-2'], second['MAD-1--MAD-2']])
    send_through_tunnel(initiator)
    wait_for(lambda: re.search(r'packets-in=[1-9]', responder.swanctl('--list-sas', '--raw')), 'ESP traffic')
