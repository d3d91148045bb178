"""The macsec_link role: MACsec (MKA pre-shared key) of a site's L2 links on IOS-XE, Junos and Linux.

Three sites, each at one end of two links: dc-1 (IOS-XE), dc-2 (Junos), dc-3 (Linux, wpa_supplicant).
The rendered files are read back with a parser per platform (ciscoconfparse2 for IOS-XE when it is
installed, else an indentation tree; Junos set lines; the wpa_supplicant network blocks, and
wpa_supplicant itself when it is installed) and both ends of each link must hold the same key - during
a rotation's overlap window the same two keys, with the same rollover time.
"""

import calendar
import os
import shutil
import stat
import subprocess

import pytest
import yaml

from macsec_support import CiscoConfParse, ios_xe_ends, junos_ends, linux_ends, wpa_supplicant_network
from playbook_support import ansible_playbook, key_spellings, recap, run_tasks

ROLE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        'roles', 'macsec_link')
CAK_DIGITS = {'gcm-aes-128': 32, 'gcm-aes-xpn-128': 32, 'gcm-aes-256': 64, 'gcm-aes-xpn-256': 64}
PLATFORM = {'dc-1': 'ios_xe', 'dc-2': 'junos', 'dc-3': 'linux'}
# Each link with its cipher suite and its interface at each end. Linux (wpa_supplicant) has no XPN
# suite, so the links with a Linux end use the non-XPN suites.
LINKS = [('DC-1--DC-2', 'gcm-aes-xpn-256', {'dc-1': 'TenGigabitEthernet0/0/1', 'dc-2': 'xe-0/0/1'}),
         ('DC-1--DC-3', 'gcm-aes-256', {'dc-1': 'TenGigabitEthernet0/0/2', 'dc-3': 'eth1'}),
         ('DC-2--DC-3', 'gcm-aes-128', {'dc-2': 'xe-0/0/2', 'dc-3': 'eth2'})]

SITES_PLAY = '''\
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [sites.yml]
  tasks:
    - name: One site after the other
      ansible.builtin.include_role:
        name: qsafe.keyfabric.macsec_link
      vars:
        macsec_link_site_name: "{{ macsec_test_site.name }}"
        macsec_link_platform: "{{ macsec_test_site.platform }}"
        macsec_link_links: "{{ macsec_test_site.links }}"
        macsec_link_mode: "{{ macsec_test_site.mode | default('render') }}"
        macsec_link_output_dir: "{{ macsec_test_site.output_dir | default(macsec_test_output_dir) }}"
        macsec_link_linux_config_dir: "{{ macsec_test_site.linux_config_dir | default('/etc/wpa_supplicant') }}"
      loop: "{{ macsec_test_sites }}"
      loop_control:
        loop_var: macsec_test_site
        label: "{{ macsec_test_site.name }}"
'''


def new_keys():
    """Random CKN and CAK per link, as the link_secrets filter would give them."""
    return dict((link_id, dict(ckn=os.urandom(32).hex(), cak=os.urandom(CAK_DIGITS[suite] // 2).hex()))
                for link_id, suite, interfaces in LINKS)


def site_links(site, keys, leave=(), previous=None, active_from=None, generation=None):
    """A site's links (SECRET); with ``previous`` (old keys) and ``active_from``, in a rotation's overlap window."""
    links = []
    for link_id, suite, interfaces in LINKS:
        if site not in interfaces or link_id in leave:
            continue
        link = dict(link_id=link_id, peer=[end for end in interfaces if end != site][0], interface=interfaces[site],
                    ckn_hex=keys[link_id]['ckn'], cak_hex=keys[link_id]['cak'], cipher_suite=suite)
        if generation is not None:
            link['generation'] = generation
        if active_from is not None:
            link['active_from'] = active_from
        if previous is not None:
            link['previous'] = dict(ckn_hex=previous[link_id]['ckn'], cak_hex=previous[link_id]['cak'])
        links.append(link)
    return links


def render_sites(tmp_path, keys, *args, sites=('dc-1', 'dc-2', 'dc-3'), leave=(), rollover=None, **site_vars):
    """Runs the role for the sites in one playbook; the inputs (SECRET) go in a vars file, never on the command line.
    ``rollover``: site_links() arguments of a rotation (previous, active_from, generation)."""
    (tmp_path / 'sites.yml').write_text(yaml.safe_dump(dict(
        macsec_test_output_dir=str(tmp_path / 'out'),
        macsec_test_sites=[dict(site_vars, name=site, platform=PLATFORM[site],
                                links=site_links(site, keys, leave, **(rollover or {})))
                           for site in sites])))
    (tmp_path / 'sites_play.yml').write_text(SITES_PLAY)
    return ansible_playbook(str(tmp_path / 'sites_play.yml'), *args)


def read_files(directory):
    files = {}
    if os.path.isdir(str(directory)):
        for name in sorted(os.listdir(str(directory))):
            path = os.path.join(str(directory), name)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, '%s holds a CAK: mode 0600' % path
            with open(path) as handle:
                files[name] = handle.read()
    return files


def all_keys(keys):
    return [bytes.fromhex(entry['cak']) for entry in keys.values()]


def site_ends(tmp_path, site):
    files = read_files(tmp_path / 'out' / site)
    platform = PLATFORM[site]
    if platform == 'linux':
        return linux_ends(files)
    assert list(files) == ['macsec-%s.cfg' % platform]
    return (ios_xe_ends if platform == 'ios_xe' else junos_ends)(files['macsec-%s.cfg' % platform])


# --- tests --------------------------------------------------------------------------------------

def test_three_platforms_render_both_ends_of_each_link_alike_and_show_no_key(tmp_path):
    keys = new_keys()
    rc, output = render_sites(tmp_path, keys, '-vvvv', '--diff')
    assert rc == 0, output
    for key in all_keys(keys):
        for spelling in key_spellings(key):
            assert spelling not in output, 'a CAK in the playbook output'
    ends = dict((site, site_ends(tmp_path, site)) for site in PLATFORM)
    for link_id, suite, interfaces in LINKS:
        first, second = sorted(interfaces)
        a, b = ends[first][link_id], ends[second][link_id]
        assert a['ckn'] == b['ckn'] == keys[link_id]['ckn'], link_id
        assert a['cak'] == b['cak'] == keys[link_id]['cak'], link_id
        assert a['suite'] == b['suite'] == suite and len(a['cak']) == CAK_DIGITS[suite], link_id
        assert (a['interface'], b['interface']) == (interfaces[first], interfaces[second]), link_id
    assert sorted(ends['dc-1']) == ['DC-1--DC-2', 'DC-1--DC-3']
    assert sorted(ends['dc-3']) == ['DC-1--DC-3', 'DC-2--DC-3']
    # The report names links and CKNs (public), for each site.
    for link_id in keys:
        assert output.count('%s ckn=%s' % (link_id, keys[link_id]['ckn'])) >= 2, link_id


@pytest.mark.skipif(shutil.which('wpa_supplicant') is None, reason='wpa_supplicant (Debian wpasupplicant) not installed')
def test_wpa_supplicant_reads_the_linux_files(tmp_path):
    """wpa_supplicant parses its whole configuration (unknown or out-of-range fields fail) before it opens the
    driver; this kernel has no MACsec, so a run on a missing interface stops right after that parse."""
    keys = new_keys()
    rc, output = render_sites(tmp_path, keys, sites=('dc-3',))
    assert rc == 0, output

    def read_by_wpa_supplicant(path):
        done = subprocess.run([shutil.which('wpa_supplicant'), '-dd', '-D', 'macsec_linux', '-i', 'qsafe-none0', '-c',
                               str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30, check=False)
        return done.stdout.decode('utf-8', 'replace')

    directory = tmp_path / 'out' / 'dc-3'
    for name, text in read_files(directory).items():
        log = read_by_wpa_supplicant(directory / name)
        assert 'Failed to read or parse configuration' not in log, log
        cak = wpa_supplicant_network(text)[1]['mka_cak']
        assert 'MKA-CAK - hexdump(len=%d): [REMOVED]' % (len(cak) // 2) in log, log
        assert 'MKA-CKN - hexdump(len=32): [REMOVED]' in log, log
    # The check is real: a CAK of the wrong length, or an unknown field, is refused.
    bad = tmp_path / 'bad.conf'
    bad.write_text(text.replace('mka_cak=' + cak, 'mka_cak=' + cak[:-2]))
    assert 'Failed to read or parse configuration' in read_by_wpa_supplicant(bad)
    bad.write_text(text.replace('macsec_port=1', 'macsec_csindex=1'))
    assert 'Failed to read or parse configuration' in read_by_wpa_supplicant(bad)


def test_check_mode_writes_nothing_then_apply_then_nothing_changes_then_keys_and_links_change(tmp_path):
    keys = new_keys()
    rc, output = render_sites(tmp_path, keys, '--check', '--diff')
    assert rc == 0, output
    assert recap(output)['changed'] >= 3
    assert not os.path.exists(str(tmp_path / 'out')), 'check mode wrote something'

    rc, output = render_sites(tmp_path, keys)
    assert rc == 0 and recap(output)['changed'] >= 3, output
    before = dict((site, read_files(tmp_path / 'out' / site)) for site in PLATFORM)

    rc, output = render_sites(tmp_path, keys, '--diff')
    assert rc == 0 and recap(output)['changed'] == 0, output
    assert dict((site, read_files(tmp_path / 'out' / site)) for site in PLATFORM) == before

    # New key for DC-1--DC-2, and DC-2--DC-3 leaves the mesh (check mode first: it changes nothing).
    rekeyed = dict(keys, **{'DC-1--DC-2': dict(ckn=os.urandom(32).hex(), cak=os.urandom(32).hex())})
    rc, output = render_sites(tmp_path, rekeyed, '--check', leave=('DC-2--DC-3',))
    assert rc == 0 and recap(output)['changed'] >= 2, output
    assert dict((site, read_files(tmp_path / 'out' / site)) for site in PLATFORM) == before

    rc, output = render_sites(tmp_path, rekeyed, '-vvvv', '--diff', leave=('DC-2--DC-3',))
    assert rc == 0, output
    for key in all_keys(keys) + all_keys(rekeyed):
        for spelling in key_spellings(key):
            assert spelling not in output, 'a CAK in the playbook output'
    assert '"DC-1--DC-2 ckn=%s"' % rekeyed['DC-1--DC-2']['ckn'] in output
    assert output.count('"DC-2--DC-3"') >= 2, 'removed, reported by dc-2 and dc-3'
    ends = dict((site, site_ends(tmp_path, site)) for site in PLATFORM)
    assert sorted(ends['dc-2']) == ['DC-1--DC-2'] and sorted(ends['dc-3']) == ['DC-1--DC-3']
    assert ends['dc-1']['DC-1--DC-2']['cak'] == ends['dc-2']['DC-1--DC-2']['cak'] == rekeyed['DC-1--DC-2']['cak']
    assert not any(keys['DC-1--DC-2']['cak'] in text or keys['DC-2--DC-3']['cak'] in text
                   for site in PLATFORM for text in read_files(tmp_path / 'out' / site).values()), 'an old CAK is left'

    rc, output = render_sites(tmp_path, rekeyed, leave=('DC-2--DC-3',))
    assert rc == 0 and recap(output)['changed'] == 0, output


ROLLOVER_AT = 1893456000  # 2030-01-01T00:00:00Z: when the new keys take over (in the data, so renders are repeatable)


def read_by_wpa_supplicant(path):
    done = subprocess.run([shutil.which('wpa_supplicant'), '-dd', '-D', 'macsec_linux', '-i', 'qsafe-none0', '-c',
                           str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30, check=False)
    return done.stdout.decode('utf-8', 'replace')


def test_rotation_window_carries_both_keys_on_every_platform_then_the_new_key_alone(tmp_path):
    """Make-before-break: while a rotation's window is open both ends of each link hold the previous and the new
    key with the same rollover time (IOS-XE key-chain lifetimes, Junos key-chain start times, Linux: the previous
    key running and the new one ready); afterwards the new key alone, keeping its rollover time."""
    assert CiscoConfParse is not None, 'ciscoconfparse2 (requirements.txt) reads the IOS-XE configuration'
    old = new_keys()
    rc, output = render_sites(tmp_path, old)
    assert rc == 0, output

    new = new_keys()
    window = dict(previous=old, active_from=ROLLOVER_AT, generation=2)
    rc, output = render_sites(tmp_path, new, '-vvvv', '--diff', rollover=window)
    assert rc == 0 and recap(output)['changed'] >= 3, output
    for key in all_keys(old) + all_keys(new):
        for spelling in key_spellings(key):
            assert spelling not in output, 'a CAK in the playbook output'
    for link_id in new:  # the report names the rollover by CKN (public)
        assert '%s ckn=%s previous_ckn=%s active_from=2030-01-01T00:00:00Z' % (
            link_id, new[link_id]['ckn'], old[link_id]['ckn']) in output, link_id

    ends = dict((site, site_ends(tmp_path, site)) for site in PLATFORM)
    for link_id, suite, interfaces in LINKS:
        for site in interfaces:
            end = ends[site][link_id]
            assert (end['ckn'], end['cak']) == (new[link_id]['ckn'], new[link_id]['cak']), (site, link_id)
            assert (end['previous']['ckn'], end['previous']['cak']) == (old[link_id]['ckn'], old[link_id]['cak'])
            assert len(end['cak']) == len(end['previous']['cak']) == CAK_DIGITS[suite], (site, link_id)
            platform = PLATFORM[site]
            if platform == 'ios_xe':
                # The previous key expires at the rollover time; the new key is valid from 60 s before, for ever.
                assert end['previous']['lifetime'] == (calendar.timegm((2000, 1, 1, 0, 0, 0)), ROLLOVER_AT)
                assert end['lifetime'] == (ROLLOVER_AT - 60, None)
            elif platform == 'junos':
                # The new key takes over at its start time; generation 2 is key 1, its predecessor key 0.
                assert end['start'] == ROLLOVER_AT and end['previous']['start'] < ROLLOVER_AT
                assert end['chain'][1]['key-name'] == new[link_id]['ckn'] and end['chain'][0]['key-name'] == old[link_id]['ckn']
            else:
                assert end['running'] == old[link_id]['ckn'], 'wpa_supplicant runs the previous key until the switch'

    if shutil.which('wpa_supplicant'):  # the two-network files are still what wpa_supplicant 2.10 accepts
        for name in read_files(tmp_path / 'out' / 'dc-3'):
            log = read_by_wpa_supplicant(tmp_path / 'out' / 'dc-3' / name)
            assert 'Failed to read or parse configuration' not in log, log
            assert log.count('MKA-CAK - hexdump(len=') == 2 and log.count('MKA-CKN - hexdump(len=32): [REMOVED]') == 2, log
            assert 'ctrl_interface=\'/run/wpa_supplicant\'' in log, log

    before = dict((site, read_files(tmp_path / 'out' / site)) for site in PLATFORM)
    rc, output = render_sites(tmp_path, new, rollover=window)
    assert rc == 0 and recap(output)['changed'] == 0, 'a rerun inside the window changes nothing: %s' % output
    assert dict((site, read_files(tmp_path / 'out' / site)) for site in PLATFORM) == before

    # The window has closed: the new key alone, with its rollover time kept (a device's key does not change).
    after = dict(active_from=ROLLOVER_AT, generation=2)
    rc, output = render_sites(tmp_path, new, '-vvvv', rollover=after)
    assert rc == 0 and recap(output)['changed'] >= 3, output
    for key in all_keys(old) + all_keys(new):
        for spelling in key_spellings(key):
            assert spelling not in output, 'a CAK in the playbook output'
    ends = dict((site, site_ends(tmp_path, site)) for site in PLATFORM)
    for link_id, suite, interfaces in LINKS:
        for site in interfaces:
            end = ends[site][link_id]
            assert 'previous' not in end and (end['ckn'], end['cak']) == (new[link_id]['ckn'], new[link_id]['cak'])
            if PLATFORM[site] == 'ios_xe':
                assert end['lifetime'] == (ROLLOVER_AT - 60, None)
            elif PLATFORM[site] == 'junos':
                assert end['start'] == ROLLOVER_AT and list(end['chain']) == [1]
            else:
                assert end['running'] == new[link_id]['ckn']
    assert not any(old[link_id][part] in text for link_id in old for part in ('ckn', 'cak')
                   for site in PLATFORM for text in read_files(tmp_path / 'out' / site).values()), 'an old key is left'
    rc, output = render_sites(tmp_path, new, rollover=after)
    assert rc == 0 and recap(output)['changed'] == 0, output


def test_linux_push_writes_the_host_files(tmp_path):
    keys = new_keys()
    host_dir = tmp_path / 'etc-wpa_supplicant'
    for expected_changes in (2, 0):
        rc, output = render_sites(tmp_path, keys, sites=('dc-3',), mode='push', linux_config_dir=str(host_dir),
                                  output_dir='')
        assert rc == 0 and recap(output)['changed'] == expected_changes, output
    files = read_files(host_dir)
    assert sorted(files) == ['macsec-DC-1--DC-3.conf', 'macsec-DC-2--DC-3.conf']
    assert '-c %s/macsec-DC-1--DC-3.conf' % host_dir in files['macsec-DC-1--DC-3.conf']
    assert not os.path.exists(str(tmp_path / 'out'))


def test_push_tasks_for_devices_load_the_file_without_showing_it():
    """Push to IOS-XE and Junos is not run here (no device): its task files must be valid and secret-safe."""
    for platform, module in (('ios_xe', 'cisco.ios.ios_config'), ('junos', 'junipernetworks.junos.junos_config')):
        with open(os.path.join(ROLE_DIR, 'tasks', 'push_%s.yml' % platform)) as handle:
            tasks = yaml.safe_load(handle)
        assert len(tasks) == 1 and module in tasks[0], tasks
        assert tasks[0]['no_log'] is True and tasks[0]['diff'] is False
        assert 'macsec-%s.cfg' % platform in str(tasks[0][module])
    with open(os.path.join(ROLE_DIR, 'tasks', 'push.yml')) as handle:
        block = yaml.safe_load(handle)[0]
    assert block['always'][0]['ansible.builtin.file']['state'] == 'absent', 'the temporary copy is always removed'


def bad(site='dc-1', platform=None, links=None, **role_vars):
    keys = dict(ckn=os.urandom(32).hex(), cak256=os.urandom(32).hex(), cak128=os.urandom(16).hex())
    default_links = [dict(link_id='DC-1--DC-2', peer='dc-2', interface='xe-0/0/1', ckn_hex=keys['ckn'],
                          cak_hex=keys['cak256']),
                     dict(link_id='DC-1--DC-3', peer='dc-3', interface='xe-0/0/2', ckn_hex=keys['ckn'][::-1],
                          cak_hex=keys['cak128'], cipher_suite='gcm-aes-128')]
    return keys, dict(role_vars, macsec_link_site_name=site, macsec_link_platform=platform or 'junos',
                      macsec_link_links=links(default_links) if links else default_links)


def replace(index, **fields):
    def change(links):
        links[index].update(fields)
        return links
    return change


def rotating(index, at=ROLLOVER_AT, **previous):
    """Link ``index`` in a rotation's window (new key from ``at``); ``previous`` overrides fields of its previous
    key (None: leave the field out)."""
    def change(links):
        links[index].update(active_from=at, previous=dict(
            dict(ckn_hex=links[index]['ckn_hex'][:-2] + 'ff', cak_hex=links[index]['cak_hex'][::-1]), **previous))
        if at is None:
            del links[index]['active_from']
        for name, value in previous.items():
            if value is None:
                del links[index]['previous'][name]
        return links
    return change


BAD_INPUTS = [
    ('CAK of 128 bits for a 256-bit suite', dict(links=lambda links: replace(0, cak_hex=links[1]['cak_hex'])(links)),
     'macsec_link_links[0] (link DC-1--DC-2): cak_hex must be 64 hex digits (a 256-bit CAK) for cipher_suite '
     'gcm-aes-xpn-256, got 32'),
    ('CAK of 256 bits for a 128-bit suite', dict(links=replace(1, cipher_suite='gcm-aes-xpn-128', cak_hex='ab' * 32)),
     'macsec_link_links[1] (link DC-1--DC-3): cak_hex must be 32 hex digits (a 128-bit CAK) for cipher_suite '
     'gcm-aes-xpn-128, got 64'),
    ('odd CKN', dict(links=lambda links: replace(0, ckn_hex=links[0]['ckn_hex'][:-1])(links)),
     'macsec_link_links[0] (link DC-1--DC-2): ckn_hex must be an even number of hex digits from 2 to 64 '
     '(1 to 32 bytes), got 63'),
    ('CKN over 32 bytes', dict(links=replace(1, ckn_hex='ab' * 33)),
     'macsec_link_links[1] (link DC-1--DC-3): ckn_hex must be an even number of hex digits from 2 to 64'),
    ('CAK not hex', dict(links=lambda links: replace(0, cak_hex='zz' + links[0]['cak_hex'][2:])(links)),
     'macsec_link_links[0] (link DC-1--DC-2): cak_hex must be hex digits only'),
    ('same link twice', dict(links=replace(1, link_id='dc-1--dc-2')),
     'macsec_link_links[1] (link dc-1--dc-2): link_id is given twice'),
    ('same interface twice', dict(links=replace(1, interface='xe-0/0/1')),
     'macsec_link_links[1] (link DC-1--DC-3): interface xe-0/0/1 already carries link DC-1--DC-2'),
    ('link ID that is no file name', dict(links=replace(1, link_id='../DC-1')),
     'macsec_link_links[1] (link ../DC-1): link_id may hold letters, digits'),
    ('XPN on Linux', dict(platform='linux'),
     'macsec_link_links[0] (link DC-1--DC-2): cipher_suite gcm-aes-xpn-256 is not available on platform linux'),
    ('unknown platform', dict(platform='eos'), 'macsec_link_platform must be one of: ios_xe, junos, linux, got: eos'),
    ('unknown cipher suite', dict(links=replace(1, cipher_suite='gcm-aes-512')),
     'value of cipher_suite must be one of: gcm-aes-128, gcm-aes-256, gcm-aes-xpn-128, gcm-aes-xpn-256, got: gcm-aes-512'),
    ('no CAK', dict(links=lambda links: [dict((k, v) for k, v in links[0].items() if k != 'cak_hex')] + links[1:]),
     'missing required arguments: cak_hex'),
    ('key server priority out of range', dict(macsec_link_key_server_priority=256),
     'macsec_link_key_server_priority must be from 0 to 255'),
    ('render mode without an output directory', dict(with_output_dir=False),
     'macsec_link_output_dir is required in render mode'),
    ('previous key without a rollover time', dict(links=rotating(0, at=None)),
     'macsec_link_links[0] (link DC-1--DC-2): previous needs active_from (when the new key takes over from it)'),
    ('previous key with the same CKN', dict(links=lambda links: rotating(0, ckn_hex=links[0]['ckn_hex'])(links)),
     'macsec_link_links[0] (link DC-1--DC-2): previous.ckn_hex is the same as ckn_hex'),
    ('previous CAK of 128 bits for a 256-bit suite', dict(links=lambda links: rotating(0, cak_hex=links[1]['cak_hex'])(links)),
     'macsec_link_links[0] (link DC-1--DC-2): previous.cak_hex must be 64 hex digits (a 256-bit CAK) for cipher_suite '
     'gcm-aes-xpn-256, got 32'),
    ('previous key without a CAK', dict(links=rotating(1, cak_hex=None)), 'missing required arguments: cak_hex'),
    ('rollover time out of range', dict(links=rotating(1, at=86400)),
     'macsec_link_links[1] (link DC-1--DC-3): active_from must be a UNIX time from 2000 to 2035'),
    ('previous key that took over after its successor', dict(links=rotating(0, active_from=ROLLOVER_AT + 1)),
     'macsec_link_links[0] (link DC-1--DC-2): previous.active_from must come before active_from'),
    ('IOS-XE overlap out of range', dict(macsec_link_ios_xe_rollover_overlap=86401),
     'macsec_link_ios_xe_rollover_overlap must be from 0 to 86400 seconds'),
]


@pytest.mark.parametrize('case, change, message', BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_fails_before_anything_is_written_naming_the_field(tmp_path, case, change, message):
    change = dict(change)
    with_output_dir = change.pop('with_output_dir', True)
    keys, role_vars = bad(**change)
    if with_output_dir:
        role_vars['macsec_link_output_dir'] = str(tmp_path / 'out')
    (tmp_path / 'role-vars.yml').write_text(yaml.safe_dump(role_vars))
    rc, output = run_tasks(tmp_path, '''\
        - ansible.builtin.include_role:
            name: qsafe.keyfabric.macsec_link
        ''', '-e', '@%s' % (tmp_path / 'role-vars.yml'), '-vvvv')
    assert rc != 0 and message in output, output
    assert 'Traceback' not in output and 'MODULE FAILURE' not in output
    previous_caks = [link['previous']['cak_hex'] for link in role_vars['macsec_link_links']
                     if link.get('previous', {}).get('cak_hex')]
    for key in [keys['cak256'], keys['cak128']] + previous_caks:
        for spelling in key_spellings(bytes.fromhex(key)):
            assert spelling not in output, 'a CAK in the error output'
    assert not os.path.exists(str(tmp_path / 'out')), 'written before the inputs were checked'
