# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json

import pytest

from ansible_collections.qsafe.keyfabric.plugins.module_utils.hybrid_combiner import (
    HASH_ALGORITHMS,
    CombinerError,
    Contribution,
    LinkKey,
    catkdf,
    derive_link_key,
    link_context,
)
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value
from ansible_collections.qsafe.keyfabric.plugins.module_utils.link_policy import LinkPolicy, PolicyViolation

# ETSI TS 103 744 V1.1.1 Annex C.2.1: CatKDF test vector (SHA-256, no psk, 16-byte output).
# label = LA || LB, MA = LA || PA1 || PA2, MB = LB || PB1 || PB2, secrets k1, k2.
C21 = dict(
    context=b'CONCATENATION TEST VECTOR 1',
    LA='0102030405060708090A0B0C0D0E0F10',
    PA1='119F2F047902782AB0C9E27A54AFF5EB9B964829CA99C06B02DDBA95B0A3F6D08F52B726664CAC366FC98AC7A012B2682CBD962E5ACB544671D41B9445704D1D',
    PA2=('4484D7AADB44B40CC180DC568B2C142A60E6E2863F5988614A6215254B2F5F6F79B48F329AD1A2DED20B7ABAB10F7DBF59C3E20B59A700093060D2A44ACDC008'
         '3A53CF0808E0B3A827C45176BEE0DC6EC7CC16461E38461C12451BB95191407C1E942BB50D4C7B25A49C644B630159E6C403653838E689FBF4A7ADEA693ED065'
         '7BA4A724786AF7953F7BA6E15F9BBF9F5007FB711569E72ACAB05D3463A458536CAB647F00C205D27D5311B2A5113D4B26548000DB237515931A040804E76936'
         '1F94FF0167C78353D2630A1E6F595A1F80E87F6A5BCD679D7A64C5006F6191D4ADEFA1EA67F6388B7017D453F4FE2DFE80CCC709000B52175BFC3ADE52ECCB0C'
         'EBE1654F89D39131C357EACB61E5F13C80AB0165B7714D6BE6DF65F8DE73FF47B7F3304639F0903653ECCFA252F6E2104C4ABAD3C33AF24FD0E56F58DB92CC66'
         '859766035419AB2DF600'),
    LB='0202030405060708090A0B0C0D0E0F10',
    PB1='809F04289C64348C01515EB03D5CE7AC1A8CB9498F5CAA50197E58D43A86A7AEB29D84E811197F25EBA8F5194092CB6FF440E26D4421011372461F579271CDA3',
    PB2=('0FDEB26DBD96E0CD272283CA5BDD1435BC9A7F9AB7FC24F83CA926DEED038AE4E47F39F9886E0BD7EEBEAACD12AB435CC92AA3383B2C01E6B9E02BC3BEF9C6C2'
         '719014562A96A0F3E784E3FA44E5C62ED8CEA79E1108B6FECD5BF8836BF2DAE9FEB1863C4C8B3429220E2797F601FB4B8EBAFDD4F17355508D259CA60721D167'
         'F6E5480B5133E824F76D3240E97F31325DBB9A53E9A3EEE2E0712734825615A027857E2000D4D00E11988499A738452C93DA895BFA0E10294895CCF25E3C261C'
         'BE38F5D7E19ABE4E322094CB8DEC5BF7484902BABDE33CC69595F6013B20AABA9698C1DEA2BC6F65D57519294E6FEEA3B549599D480948374D2D21B643573C27'
         '6E1A5B0745301F648D7982AB46A3065639960182BF365819EFC0D4E61E87D2820DBC0E849E99E875B21501D1CA7588A1D458CD70C7DF793D4993B9B1679886CA'
         'E8013A8DD854F010A100C9933FA642DC0AEA9985786ED36B98D3'),
    k1='057D636096CB80B67A8C038C890E887D1ADFA4195E9B3CE241C8A778C59CDA67',
    k2='35F7F8FF388714DEDC41F139078CEDC9',
    expected='5C366F23281D33EB85CAB026D3D9A35A',
)


def _c21(name):
    return bytes.fromhex(C21[name])


def _c21_inputs():
    return dict(secrets=[_c21('k1'), _c21('k2')], context=C21['context'], ma=_c21('LA') + _c21('PA1') + _c21('PA2'),
                mb=_c21('LB') + _c21('PB1') + _c21('PB2'), label=_c21('LA') + _c21('LB'))


def _pattern(seed, size=32):
    """Deterministic, recognisable, non-zero test bytes."""
    return hashlib.sha512(seed.encode('ascii')).digest()[:size]


def test_catkdf_reproduces_etsi_ts_103_744_annex_c21():
    assert [len(_c21(name)) for name in ('LA', 'PA1', 'PA2', 'LB', 'PB1', 'PB2', 'k1', 'k2')] == [16, 64, 330, 16, 64, 346, 32, 16]
    assert catkdf(length=16, **_c21_inputs()).hex().upper() == C21['expected']


@pytest.mark.parametrize('hash_algorithm', HASH_ALGORITHMS)
def test_catkdf_agrees_with_an_independent_hkdf(hash_algorithm):
    crypto_hashes = pytest.importorskip('cryptography.hazmat.primitives.hashes')
    hkdf = pytest.importorskip('cryptography.hazmat.primitives.kdf.hkdf')
    inputs = _c21_inputs()
    algorithm = getattr(crypto_hashes, hash_algorithm.upper().replace('-', '_'))()
    lengths = [len(field).to_bytes(4, 'big') + field for field in (inputs['context'], inputs['ma'], inputs['mb'])]
    f_context = hashlib.new(hash_algorithm.replace('-', '_'), b''.join(lengths)).digest()
    psk = _pattern('psk')
    expected = hkdf.HKDF(algorithm, 100, inputs['label'], f_context).derive(psk + b''.join(inputs['secrets']))
    assert catkdf(length=100, hash_algorithm=hash_algorithm, psk=psk, **inputs) == expected


def test_each_hash_gives_another_key():
    keys = set(catkdf(length=32, hash_algorithm=name, **_c21_inputs()) for name in HASH_ALGORITHMS)
    assert len(keys) == len(HASH_ALGORITHMS)


def test_psk_is_prepended_to_the_secrets():
    inputs = _c21_inputs()
    psk = _pattern('psk', 16)
    with_psk = catkdf(length=32, psk=psk, **inputs)
    assert with_psk != catkdf(length=32, **inputs)
    inputs['secrets'] = [psk] + inputs['secrets']
    assert with_psk == catkdf(length=32, **inputs)


def test_secret_order_matters():
    inputs = _c21_inputs()
    forward = catkdf(length=32, **inputs)
    inputs['secrets'].reverse()
    assert catkdf(length=32, **inputs) != forward


@pytest.mark.parametrize('length', [1, 16, 32, 33, 64, 255 * 32])
def test_catkdf_length_is_honoured(length):
    assert len(catkdf(length=length, **_c21_inputs())) == length


@pytest.mark.parametrize('change, message', [
    (dict(length=0), 'length must be 1..8160 bytes for sha256, got 0'),
    (dict(length=255 * 32 + 1), 'length must be 1..8160 bytes'),
    (dict(length=True), 'length must be'),
    (dict(hash_algorithm='md5'), "unknown hash algorithm 'md5'; known: sha256, sha384"),
    (dict(hash_algorithm='SHA256'), "unknown hash algorithm 'SHA256'"),
    (dict(secrets=[]), 'secrets must be a non-empty list'),
    (dict(secrets=b'k1k2'), 'secrets must be a non-empty list'),
    (dict(secrets=[b'k1', b'']), 'secret k2 is empty'),
    (dict(secrets=[b'k1', 'k2']), 'secret k2 must be bytes, got str'),
    (dict(context='text'), 'context must be bytes'),
    (dict(psk=None), 'psk must be bytes'),
])
def test_catkdf_rejects_bad_input(change, message):
    inputs = dict(_c21_inputs(), length=32)
    inputs.update(change)
    with pytest.raises(CombinerError, match=message):
        catkdf(**inputs)


# ---------------------------------------------------------------------------------------------
# link keys

REMOVED = object()


def _contributions(**changes):
    """The three contributions of a test link; ``changes`` = {'<source>_<field>': value, '<source>': REMOVED}."""
    fields = dict(
        classical=dict(source='classical', algorithm='X25519', secret=_pattern('x25519 ss'),
                       master_public=_pattern('x25519 eph'), slave_public=_pattern('x25519 pub')),
        qkd=dict(source='qkd', algorithm='QKD-ETSI014', secret=_pattern('qkd key'),
                 key_ids=['8844ee01-6e2f-4d2a-9d7e-2d1f3b0c9a11']),
        pqc=dict(source='pqc', algorithm='ML-KEM-768', secret=_pattern('mlkem ss'),
                 master_public=_pattern('mlkem ct', 64) * 17, slave_public=_pattern('mlkem ek', 64) * 18 + b'\x01' * 32),
    )
    for name, value in changes.items():
        source, dummy, field = name.partition('_')
        if value is REMOVED:
            del fields[source]
        else:
            fields[source][field] = value
    return [Contribution(**fields[source]) for source in ('pqc', 'qkd', 'classical') if source in fields]


def _link_key(contributions=None, **changes):
    args = dict(link_id='madrid-north', master_id='site-a/sae-1', slave_id='site-b/sae-2',
                policy='qkd+pqc', length=32, hash_algorithm='sha256')
    args.update(changes)
    return derive_link_key(contributions=_contributions() if contributions is None else contributions, **args)


def test_both_ends_derive_the_same_key():
    master_end, slave_end = _link_key(), _link_key(list(reversed(_contributions())))
    assert master_end.key == slave_end.key and len(master_end.key) == 32
    assert master_end.kcv == slave_end.kcv == key_check_value(master_end.key)
    assert master_end.ppk_id == slave_end.ppk_id and master_end.ppk_id.startswith('qkf-') and len(master_end.ppk_id) == 20
    assert master_end.sources == ('classical', 'qkd', 'pqc') and not master_end.degraded and master_end.alarms == ()


def test_link_key_is_catkdf_over_the_documented_composition():
    contributions = _contributions()
    ordered = sorted(contributions, key=lambda item: ('classical', 'qkd', 'pqc').index(item.source))

    def length_prefixed(fields):
        return b''.join(len(field).to_bytes(4, 'big') + field for field in fields)

    context = link_context('madrid-north', 'site-a/sae-1', 'site-b/sae-2', contributions, 'qkd+pqc')
    expected = catkdf([item.secret for item in ordered], context, length_prefixed([item.master_public for item in ordered]),
                      length_prefixed([item.slave_public for item in ordered]),
                      length_prefixed([b'site-a/sae-1', b'site-b/sae-2']), 32)
    assert _link_key().key == expected
    assert context.startswith(length_prefixed([b'qsafe.keyfabric link key v1', b'madrid-north']))


# Each entry changes one input of the reference derivation; every one must give another key.
PUBLIC_CHANGES = [
    ('link_id', {}, dict(link_id='madrid-south')),
    ('roles swapped', {}, dict(master_id='site-b/sae-2', slave_id='site-a/sae-1')),
    ('master_id', {}, dict(master_id='site-c/sae-1')),
    ('slave_id', {}, dict(slave_id='site-b/sae-3')),
    ('policy', {}, dict(policy='any')),
    ('hash', {}, dict(hash_algorithm='sha3-256')),
    ('length', {}, dict(length=48)),
    ('pqc algorithm', dict(pqc_algorithm='ML-KEM-1024'), {}),
    ('classical algorithm', dict(classical_algorithm='X448'), {}),
    ('qkd key_ID', dict(qkd_key_ids=['8844ee01-6e2f-4d2a-9d7e-2d1f3b0c9a12']), {}),
    ('extra qkd key_ID', dict(qkd_key_ids=['8844ee01-6e2f-4d2a-9d7e-2d1f3b0c9a11', 'k2']), {}),
    ('classical master_public', dict(classical_master_public=_pattern('other eph')), {}),
    ('classical slave_public', dict(classical_slave_public=_pattern('other pub')), {}),
    ('pqc master_public', dict(pqc_master_public=_pattern('other ct')), {}),
    ('pqc slave_public', dict(pqc_slave_public=_pattern('other ek')), {}),
    ('qkd public value', dict(qkd_master_public=b'\x00'), {}),
    ('without classical', dict(classical=REMOVED), {}),
]
SECRET_CHANGES = [
    ('classical secret', dict(classical_secret=_pattern('other x25519 ss'))),
    ('qkd secret', dict(qkd_secret=_pattern('other qkd key'))),
    ('pqc secret', dict(pqc_secret=_pattern('other mlkem ss'))),
    ('one bit of the qkd secret', dict(qkd_secret=bytes([_pattern('qkd key')[0] ^ 1]) + _pattern('qkd key')[1:])),
]


@pytest.mark.parametrize('what, contribution_changes, argument_changes', PUBLIC_CHANGES, ids=[row[0] for row in PUBLIC_CHANGES])
def test_any_public_change_gives_another_key_kcv_and_ppk_id(what, contribution_changes, argument_changes):
    reference = _link_key()
    changed = _link_key(_contributions(**contribution_changes), **argument_changes)
    assert changed.key[:32] != reference.key, what
    assert changed.kcv != reference.kcv and changed.ppk_id != reference.ppk_id


@pytest.mark.parametrize('what, contribution_changes', SECRET_CHANGES, ids=[row[0] for row in SECRET_CHANGES])
def test_any_secret_change_gives_another_key_but_the_same_public_ppk_id(what, contribution_changes):
    reference = _link_key()
    changed = _link_key(_contributions(**contribution_changes))
    assert changed.key != reference.key and changed.kcv != reference.kcv, what
    assert changed.ppk_id == reference.ppk_id


def test_link_context_length_prefixes_make_fields_unambiguous():
    contributions = _contributions()

    def context(link_id='ab', master_id='c', slave_id='d', policy_name='qkd', changes=None):
        return link_context(link_id, master_id, slave_id, _contributions(**changes) if changes else contributions, policy_name)

    assert context() != context(link_id='a', master_id='bc')
    assert context() != context(master_id='cd', slave_id='x') != context(master_id='c', slave_id='dx')
    assert context(changes=dict(qkd_key_ids=['a', 'b'])) != context(changes=dict(qkd_key_ids=['ab']))
    assert context(changes=dict(qkd_key_ids=['k'], qkd_algorithm='Q')) != context(changes=dict(qkd_key_ids=['Qk'], qkd_algorithm='x'))


def test_hash_and_length_variants_of_a_link_key():
    keys = dict((name, _link_key(hash_algorithm=name).key) for name in HASH_ALGORITHMS)
    assert len(set(keys.values())) == len(HASH_ALGORITHMS) and all(len(key) == 32 for key in keys.values())
    longer = _link_key(length=64)
    assert len(longer.key) == 64 and longer.public_facts()['size'] == 512
    # plain HKDF output of 64 bytes would start with the 32-byte one: the length is in the context
    assert longer.key[:32] != _link_key().key


def test_degraded_link_key_carries_the_alarm():
    link_key = _link_key(_contributions(qkd=REMOVED), policy={'require': ['qkd', 'pqc'], 'on_missing': 'degrade'})
    assert link_key.degraded and link_key.sources == ('classical', 'pqc') and link_key.qkd_key_ids == ()
    assert link_key.alarms == ('link madrid-north: DEGRADED key under policy qkd+pqc: required source(s) missing: qkd; '
                               'key made from classical+pqc only',)
    assert link_key.public_facts()['alarms'] == list(link_key.alarms)


def test_policy_violation_stops_the_derivation():
    with pytest.raises(PolicyViolation, match='link madrid-north: policy qkd\\+pqc .* missing: qkd'):
        _link_key(_contributions(qkd=REMOVED))
    with pytest.raises(PolicyViolation, match='NOT quantum-safe'):
        _link_key(_contributions(qkd=REMOVED, pqc=REMOVED), policy='any')


def test_policy_may_be_a_link_policy_object():
    assert _link_key(policy=LinkPolicy(['qkd', 'pqc'])).key == _link_key().key


@pytest.mark.parametrize('changes, message', [
    (dict(length=31), 'link key length must be an integer of at least 32 bytes .256 bits., got 31'),
    (dict(length=32.0), 'got 32.0'),
    (dict(hash_algorithm='sha1'), "unknown hash algorithm 'sha1'"),
    (dict(link_id=''), "link_id must be a non-empty string, got ''"),
    (dict(master_id=None), 'master_id must be a non-empty string, got None'),
    (dict(slave_id='site-a/sae-1'), "link madrid-north: master_id and slave_id are both 'site-a/sae-1'"),
    (dict(contributions=[]), 'contributions must be a non-empty list of Contribution'),
    (dict(contributions=[{'source': 'qkd'}]), 'contributions must be Contribution objects, got dict'),
    (dict(contributions=_contributions() + _contributions(classical=REMOVED, pqc=REMOVED)),
     'duplicate qkd contribution: each source contributes once per link key'),
])
def test_derive_rejects_bad_input(changes, message):
    changes = dict(changes)
    contributions = changes.pop('contributions', None)
    with pytest.raises(CombinerError, match=message):
        _link_key(contributions, **changes)


@pytest.mark.parametrize('changes, message', [
    (dict(classical_source='ecdh'), "unknown contribution source 'ecdh'; known: classical, qkd, pqc"),
    (dict(pqc_algorithm=''), 'pqc contribution: algorithm must be a non-empty string'),
    (dict(qkd_secret=b''), 'qkd contribution: secret is 0 bytes; at least 16 are needed'),
    (dict(qkd_secret=b'\x5a' * 15), 'qkd contribution: secret is 15 bytes; at least 16 are needed'),
    (dict(classical_secret=bytes(32)), 'classical contribution: secret is all zero bytes'),
    (dict(pqc_secret='text'), 'pqc contribution: secret must be bytes, got str'),
    (dict(pqc_master_public=None), 'pqc contribution: master_public must be bytes, got NoneType'),
    (dict(pqc_slave_public=b''), 'pqc contribution: master_public and slave_public are both needed'),
    (dict(qkd_key_ids=[]), 'qkd contribution: key_ids is empty'),
    (dict(qkd_key_ids='k1'), 'qkd contribution: key_ids must be a list of key_ID strings'),
    (dict(qkd_key_ids=['k1', 'k1']), 'qkd contribution: duplicate key_ID'),
    (dict(qkd_key_ids=['k1', '']), 'qkd contribution: each key_ID must be a non-empty string'),
    (dict(classical_key_ids=['k1']), 'classical contribution: key_ids are for qkd contributions only'),
])
def test_contribution_rejects_bad_input(changes, message):
    with pytest.raises(CombinerError, match=message) as err:
        _contributions(**changes)
    assert isinstance(err.value, ValueError)
    assert _pattern('qkd key').hex() not in str(err.value)


def test_contribution_and_link_key_are_immutable():
    contribution = _contributions()[0]
    link_key = _link_key()
    for obj, name in ((contribution, 'secret'), (link_key, 'key'), (link_key, 'degraded')):
        with pytest.raises(AttributeError, match='immutable'):
            setattr(obj, name, b'x')
        with pytest.raises(AttributeError, match='immutable'):
            delattr(obj, name)
    assert isinstance(link_key, LinkKey)


def test_no_secret_bytes_in_reprs_public_facts_or_errors():
    contributions = _contributions()
    link_key = _link_key(contributions)
    secrets = [item.secret for item in contributions] + [link_key.key]
    facts = link_key.public_facts()
    assert 'key' not in facts and facts['kcv'] == link_key.kcv
    assert facts == dict(link_id='madrid-north', master_id='site-a/sae-1', slave_id='site-b/sae-2', ppk_id=link_key.ppk_id,
                         kcv=link_key.kcv, size=256, hash_algorithm='sha256', policy='qkd+pqc',
                         sources=['classical', 'qkd', 'pqc'], algorithms=dict(classical='X25519', qkd='QKD-ETSI014', pqc='ML-KEM-768'),
                         qkd_key_ids=['8844ee01-6e2f-4d2a-9d7e-2d1f3b0c9a11'], degraded=False, alarms=[])
    shown = ' '.join([repr(link_key), str(link_key), json.dumps(facts)] + [repr(item) for item in contributions])
    for secret in secrets:
        for rendering in (secret.hex(), secret.hex().upper(), repr(secret)[2:-1], repr(secret[:8])[2:-1]):
            assert rendering not in shown
    assert 'kcv=%r' % link_key.kcv in repr(link_key) and 'secret=<32 bytes>' in repr(contributions[0])
