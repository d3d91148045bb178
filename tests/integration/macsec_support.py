"""Readers of rendered MACsec configurations, as each platform reads them (test_role_macsec_link.py and
test_full_mesh.py): an IOS-XE key chain, MKA policy and interface (ciscoconfparse2 when it is installed, else
an indentation tree), Junos set lines, wpa_supplicant network blocks. Each returns every link's end.
"""

import calendar
import time

try:
    from ciscoconfparse2 import CiscoConfParse
except ImportError:  # not in every venv yet: the indentation tree below reads the same structure
    CiscoConfParse = None


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


MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']


def ios_time(words):
    """IOS 'hh:mm:ss Month day year' (UTC: no 'local' keyword) as a UNIX time."""
    hours, minutes, seconds = (int(part) for part in words[0].split(':'))
    assert words[1] in MONTHS and 1 <= int(words[2]) <= 31 and 2000 <= int(words[3]) <= 2035, words
    return calendar.timegm((int(words[3]), MONTHS.index(words[1]) + 1, int(words[2]), hours, minutes, seconds))


def ios_key(key_line, key_children):
    """One key of a MACsec key chain: CKN, CAK and lifetime (start, end; end None = infinite; no lifetime = None)."""
    words = key_line.split()
    assert len(words) == 2 and words[0] == 'key', key_line
    key = dict(ckn=words[1], lifetime=None)
    seen = set()
    for child in key_children:
        setting = child[0]
        name = setting.split()[0]
        assert name not in seen, 'set twice: %s' % setting
        seen.add(name)
        if setting.startswith('key-string 0 '):
            key['cak'] = setting.split()[2]
        elif setting.startswith('cryptographic-algorithm '):
            key['algorithm'] = setting.split()[1]
        elif setting.startswith('lifetime '):
            times = setting.split()[1:]
            assert len(times) in (5, 8) and times[0] != 'local', 'lifetime <start> (<end> | infinite), UTC: %s' % setting
            key['lifetime'] = (ios_time(times[:4]), None if times[4:] == ['infinite'] else ios_time(times[4:]))
        else:
            raise AssertionError('unexpected key setting: %s' % setting)
    assert seen >= {'key-string', 'cryptographic-algorithm'}, key_line
    assert key['algorithm'] == {32: 'aes-128-cmac', 64: 'aes-256-cmac'}[len(key['cak'])]
    return key


def ios_xe_ends(text):
    """Each link's end as the device reads it: key chain, MKA policy and interface, checked for consistency.
    A key chain holds one key, or during a rotation's window two: the previous one with a lifetime that ends
    (``previous``) and the new one valid from before that end, for ever (``ckn``, ``cak``, ``lifetime``)."""
    assert text.startswith('!\n'), 'ansible_managed as an IOS comment first'
    blocks = dict(ios_tree(text))
    ends = {}
    for line, children in blocks.items():
        words = line.split()
        if line.startswith('key chain '):
            assert len(words) == 4 and words[2].startswith('QSAFE-') and words[3] == 'macsec', line
            keys = [ios_key(*child) for child in children]
            assert len(keys) in (1, 2) and len(set(key['ckn'] for key in keys)) == len(keys), 'one or two keys (CKNs)'
            end = ends.setdefault(words[2][len('QSAFE-'):], {})
            if len(keys) == 2:
                previous, new = keys
                assert previous['lifetime'] and previous['lifetime'][1] is not None, 'the previous key expires'
                assert new['lifetime'] and new['lifetime'][1] is None, 'the new key is valid for ever'
                assert new['lifetime'][0] < previous['lifetime'][1], 'the lifetimes overlap: no moment without a key'
                end['previous'] = previous
            else:
                new = keys[0]
                assert new['lifetime'] is None or new['lifetime'][1] is None
            end.update(ckn=new['ckn'], cak=new['cak'], lifetime=new['lifetime'])
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

def junos_time(text):
    """Junos 'yyyy-mm-dd.hh:mm:ss' (UTC) as a UNIX time."""
    return calendar.timegm(time.strptime(text, '%Y-%m-%d.%H:%M:%S'))


def junos_ends(text):
    """Each link's end: a key chain (one key, or two during a rotation's window: the one with the latest start
    time is the new key) used by a static-CAK connectivity association bound to the link's interface."""
    assert text.startswith('#\n'), 'ansible_managed as a # comment first'
    ends, bound, chains = {}, {}, {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        words = line.split()
        if words[:3] == ['set', 'security', 'authentication-key-chains']:
            assert words[3] == 'key-chain' and words[5] == 'key' and len(words) == 9, line
            key = chains.setdefault(words[4], {}).setdefault(int(words[6]), {})
            assert words[7] in ('key-name', 'secret', 'start-time') and words[7] not in key, line
            key[words[7]] = words[8]
            continue
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
        assert ('pre-shared-key', 'ckn') not in end, 'the key chain, not a static pre-shared key'
        assert name in bound, 'connectivity association %s is bound to no interface' % name
        chain = chains[end[('pre-shared-key-chain',)]]
        assert 1 <= len(chain) <= 2 and all(sorted(key) == ['key-name', 'secret', 'start-time'] for key in chain.values())
        assert set(chain) <= {0, 1}, 'key numbers alternate between 0 and 1'
        keys = sorted(chain.values(), key=lambda key: junos_time(key['start-time']))
        assert len(set(key['start-time'] for key in keys)) == len(keys), 'start times are unique in a key chain'
        new = keys[-1]
        result[name[len('CA-'):]] = dict(ckn=new['key-name'], cak=new['secret'], start=junos_time(new['start-time']),
                                         suite=end[('cipher-suite',)], interface=bound[name], chain=chain)
        if len(keys) == 2:
            result[name[len('CA-'):]]['previous'] = dict(ckn=keys[0]['key-name'], cak=keys[0]['secret'],
                                                         start=junos_time(keys[0]['start-time']))
    assert sorted(bound) == sorted(ends)
    assert sorted(chains) == sorted(end[('pre-shared-key-chain',)] for end in ends.values())
    return result


# --- Linux (wpa_supplicant) ---------------------------------------------------------------------

def wpa_supplicant_networks(text):
    """The global settings and the network blocks of a wpa_supplicant configuration."""
    assert text.startswith('#\n'), 'ansible_managed as a # comment first'
    top, networks, inside = {}, [], False
    for line in (line.strip() for line in text.splitlines()):
        if not line or line.startswith('#'):
            continue
        if line == 'network={':
            assert not inside
            inside = True
            networks.append({})
        elif line == '}':
            inside = False
        else:
            name, equals, value = line.partition('=')
            assert name and equals and value and name not in (networks[-1] if inside else top), line
            (networks[-1] if inside else top)[name] = value
    assert networks and not inside
    return top, networks


def wpa_supplicant_network(text):
    """The global settings and the single network block of a wpa_supplicant configuration."""
    top, networks = wpa_supplicant_networks(text)
    assert len(networks) == 1
    return top, networks[0]


def linux_ends(files):
    """Each link's end: one network block, or during a rotation's window two - the previous key first (the one
    wpa_supplicant runs: the first enabled network) and the new key second, disabled until the switch."""
    ends = {}
    for name, text in files.items():
        top, networks = wpa_supplicant_networks(text)
        assert top == {'ctrl_interface': '/run/wpa_supplicant', 'ap_scan': '0', 'eapol_version': '3'}, top
        for network in networks:
            assert network['key_mgmt'] == 'NONE' and network['eapol_flags'] == '0'
            assert network['macsec_policy'] == '1' and network['macsec_integ_only'] == '0', 'MACsec with encryption'
            assert 0 <= int(network['mka_priority']) <= 255
        link_id = name[len('macsec-'):-len('.conf')]
        public = dict(word.split('=', 1) for word in text.split('qsafe-link ', 1)[1].splitlines()[0].split())
        new = networks[-1]
        ends[link_id] = dict(ckn=new['mka_ckn'], cak=new['mka_cak'], suite=public['cipher_suite'],
                             interface=public['interface'], running=[network for network in networks
                                                                     if network.get('disabled') != '1'][0]['mka_ckn'])
        if len(networks) == 2:
            assert 'disabled' not in networks[0] and new['disabled'] == '1', 'the previous key runs until the switch'
            ends[link_id]['previous'] = dict(ckn=networks[0]['mka_ckn'], cak=networks[0]['mka_cak'])
            assert 'select_network 1' in text and 'wpa_cli -p /run/wpa_supplicant -i %s' % public['interface'] in text
        else:
            assert len(networks) == 1 and 'disabled' not in new
    return ends
