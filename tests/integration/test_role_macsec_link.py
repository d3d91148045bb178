"""The macsec_link role: MACsec (MKA pre-shared key) of a site's L2 links on IOS-XE, Junos and Linux.

Three sites, each at one end of two links: dc-1 (IOS-XE), dc-2 (Junos), dc-3 (Linux, wpa_supplicant).
The rendered files are read back with a parser per platform (ciscoconfparse2 for IOS-XE when it is
installed, else the indentation tree below; Junos set lines; the wpa_supplicant network block, and
wpa_supplicant itself when it is installed) and both ends of each link must hold the same key.
"""

import os
import shutil
import stat
import subprocess

import pytest
import yaml

from test_playbooks import ansible_playbook, key_spellings, recap, run_tasks

try:
    from ciscoconfparse2 import CiscoConfParse
except ImportError:  # not in every venv yet: the indentation tree below reads the same structure
    CiscoConfParse = None

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


def site_links(site, keys, leave=()):
    return [dict(link_id=link_id, peer=[end for end in interfaces if end != site][0], interface=interfaces[site],
                 ckn_hex=keys[link_id]['ckn'], cak_hex=keys[link_id]['cak'], cipher_suite=suite)
            for link_id, suite, interfaces in LINKS if site in interfaces and link_id not in leave]


def render_sites(tmp_path, keys, *args, sites=('dc-1', 'dc-2', 'dc-3'), leave=(), **site_vars):
    """Runs the role for the sites in one playbook; the inputs (SECRET) go in a vars file, never on the command line."""
    (tmp_path / 'sites.yml').write_text(yaml.safe_dump(dict(
        macsec_test_output_dir=str(tmp_path / 'out'),
        macsec_test_sites=[dict(site_vars, name=site, platform=PLATFORM[site], links=site_links(site, keys, leave))
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


# --- IOS-XE -------------------------------------------------------------------------------------

def ios_tree(text):
    """Top-level blocks of an IOS configuration as (line, [children]) trees, comment lines left out."""
    if CiscoConfParse is not None:
        def node(obj):
            return (obj.text.strip(), [node(child) for child in obj.children])
        parse = CiscoConfParse(text.splitlines(), syntax='ios')
        return [node(obj) for obj in parse.find_objects(r'^[^\s!]')]
    root = []
    stack = [(-1, root)]
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith('!'):
            continue
        indent = len(line) - len(line.lstrip(' '))
        while stack[-1][0] >= indent:
            stack.pop()
        children = []
        stack[-1][1].append((line.strip(), children))
        stack.append((indent, children))
    return root


def ios_xe_ends(text):
    """Each link's end as the device reads it: key chain, MKA policy and interface, checked for consistency."""
    assert text.startswith('!\n'), 'ansible_managed as an IOS comment first'
    blocks = dict(ios_tree(text))
    ends = {}
    for line, children in blocks.items():
        words = line.split()
        if line.startswith('key chain '):
            assert len(words) == 4 and words[2].startswith('QSAFE-') and words[3] == 'macsec', line
            assert len(children) == 1, 'one key (CKN) per key chain'
            key_line, key_children = children[0]
            assert key_line.startswith('key ')
            settings = dict(child[0].rsplit(' ', 1) for child in key_children)
            assert set(settings) == {'cryptographic-algorithm', 'key-string 0'}, settings
            cak = settings['key-string 0']
            assert settings['cryptographic-algorithm'] == {32: 'aes-128-cmac', 64: 'aes-256-cmac'}[len(cak)]
            ends.setdefault(words[2][len('QSAFE-'):], {}).update(ckn=key_line.split()[1], cak=cak)
        elif line.startswith('interface '):
            settings = sorted(child[0] for child in children)
            assert len(settings) == 3 and settings[0] == 'macsec network-link', settings
            policy, chain = settings[1].split()[-1], settings[2].split()[-1]
            assert settings[1].startswith('mka policy ') and settings[2].startswith('mka pre-shared-key key-chain ')
            suites = [child[0] for child in blocks['mka policy ' + policy]]
            assert len(suites) == 1 and suites[0].startswith('macsec-cipher-suite ')
            ends.setdefault(chain[len('QSAFE-'):], {}).update(interface=words[1], suite=suites[0].split()[1])
        else:
            assert line.startswith('mka policy QSAFE-MKA-'), 'unexpected configuration: %s' % line
    return ends


# --- Junos --------------------------------------------------------------------------------------

def junos_ends(text):
    assert text.startswith('#\n'), 'ansible_managed as a # comment first'
    ends, bound = {}, {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        words = line.split()
        assert words[:3] == ['set', 'security', 'macsec'], line
        if words[3] == 'interfaces':
            assert words[5] == 'connectivity-association' and len(words) == 7, line
            bound[words[6]] = words[4]
            continue
        assert words[3] == 'connectivity-association' and words[4].startswith('CA-'), line
        end = ends.setdefault(words[4], {})
        setting = tuple(words[5:-1])
        assert setting not in end, 'set twice: %s' % line
        end[setting] = words[-1]
    result = {}
    for name, end in ends.items():
        assert end[('security-mode',)] == 'static-cak'
        assert name in bound, 'connectivity association %s is bound to no interface' % name
        result[name[len('CA-'):]] = dict(ckn=end[('pre-shared-key', 'ckn')], cak=end[('pre-shared-key', 'cak')],
                                         suite=end[('cipher-suite',)], interface=bound[name])
    assert sorted(bound) == sorted(ends)
    return result


# --- Linux (wpa_supplicant) ---------------------------------------------------------------------

def wpa_supplicant_network(text):
    """The global settings and the single network block of a wpa_supplicant configuration."""
    assert text.startswith('#\n'), 'ansible_managed as a # comment first'
    top, network, inside, blocks = {}, {}, False, 0
    for line in (line.strip() for line in text.splitlines()):
        if not line or line.startswith('#'):
            continue
        if line == 'network={':
            inside, blocks = True, blocks + 1
        elif line == '}':
            inside = False
        else:
            name, equals, value = line.partition('=')
            assert name and equals and value and name not in (network if inside else top), line
            (network if inside else top)[name] = value
    assert blocks == 1 and not inside
    return top, network


def linux_ends(files):
    ends = {}
    for name, text in files.items():
        top, network = wpa_supplicant_network(text)
        assert top == {'ap_scan': '0', 'eapol_version': '3'}
        assert network['key_mgmt'] == 'NONE' and network['eapol_flags'] == '0'
        assert network['macsec_policy'] == '1' and network['macsec_integ_only'] == '0', 'MACsec with encryption'
        assert 0 <= int(network['mka_priority']) <= 255
        link_id = name[len('macsec-'):-len('.conf')]
        public = dict(word.split('=', 1) for word in text.split('qsafe-link ', 1)[1].splitlines()[0].split())
        ends[link_id] = dict(ckn=network['mka_ckn'], cak=network['mka_cak'], suite=public['cipher_suite'],
                             interface=public['interface'])
    return ends


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
    for key in (keys['cak256'], keys['cak128']):
        for spelling in key_spellings(bytes.fromhex(key)):
            assert spelling not in output, 'a CAK in the error output'
    assert not os.path.exists(str(tmp_path / 'out')), 'written before the inputs were checked'
