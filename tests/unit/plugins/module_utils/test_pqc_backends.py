# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pqc_backends: NIST ML-KEM known answers, interoperability with kyber-py, X25519 as a KEM,
backend selection, and liboqs detection that never lets liboqs-python loose."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import os
import sys
import types

import pytest
import cryptography_vectors
from cryptography.exceptions import UnsupportedAlgorithm
from kyber_py.ml_kem import ML_KEM_512, ML_KEM_768, ML_KEM_1024

from ansible_collections.qsafe.keyfabric.plugins.module_utils import pqc_backends
from ansible_collections.qsafe.keyfabric.plugins.module_utils.pqc_backends import (
    PqcError,
    liboqs_status,
    read_private_key,
    select_backend,
)

KYBER_PY = {'ML-KEM-512': ML_KEM_512, 'ML-KEM-768': ML_KEM_768, 'ML-KEM-1024': ML_KEM_1024}
CRYPTOGRAPHY_KEMS = ('ML-KEM-768', 'ML-KEM-1024', 'X25519')


def kat_entries(algorithm, limit=None):
    """The entries of the NIST ML-KEM KAT file shipped by cryptography-vectors, as dicts of bytes.

    Each entry has d, z (the key generation seed), pk, ct, ss (a valid encapsulation) and ct_n, ss_n
    (an invalid ciphertext and the implicit-rejection secret decapsulation must give for it).
    """
    name = os.path.join('asymmetric', 'MLKEM', 'kat_MLKEM_%s.rsp' % algorithm.rsplit('-', 1)[1])
    entries, entry = [], {}
    with cryptography_vectors.open_vector_file(name, 'r') as handle:
        for line in handle:
            field, sep, value = line.partition(' = ')
            if not sep:
                continue
            if field == 'count':
                if limit is not None and len(entries) == limit:
                    break
                entry = {}
                entries.append(entry)
            else:
                entry[field] = bytes.fromhex(value.strip())
    return entries


def secret_spellings(data):
    return (data.hex(), data.hex().upper(), base64.b64encode(data).decode(), repr(data)[2:-1])


@pytest.fixture
def cryptography_backend():
    backend = select_backend('cryptography', 'ML-KEM-768')
    assert backend.name == 'cryptography'
    return backend


# ---------------------------------------------------------------------------------------------
# ML-KEM through the cryptography backend


@pytest.mark.parametrize('algorithm', ['ML-KEM-768', 'ML-KEM-1024'])
def test_nist_kat_keygen_from_seed_and_decapsulation(cryptography_backend, algorithm):
    """All 1000 NIST entries: the seed d||z gives pk, and decapsulating ct gives ss.

    Encapsulation with the KAT's fixed message m cannot go through the public API (it draws m at
    random, as it must); the round-trip and kyber-py tests cover encapsulation instead.
    """
    entries = kat_entries(algorithm)
    assert len(entries) == 1000
    for entry in entries:
        private_key = entry['d'] + entry['z']
        assert cryptography_backend.public_key(algorithm, private_key) == entry['pk']
        assert cryptography_backend.decapsulate(algorithm, private_key, entry['ct']) == entry['ss']
        # implicit rejection: an invalid ciphertext gives the deterministic pseudo-random secret, no error
        assert cryptography_backend.decapsulate(algorithm, private_key, entry['ct_n']) == entry['ss_n']


@pytest.mark.parametrize('algorithm', CRYPTOGRAPHY_KEMS)
def test_round_trip_and_key_sizes(cryptography_backend, algorithm):
    sizes = cryptography_backend.sizes(algorithm)
    public_key, private_key = cryptography_backend.generate(algorithm)
    assert (len(public_key), len(private_key)) == (sizes.public_key, sizes.private_key)
    assert cryptography_backend.public_key(algorithm, private_key) == public_key
    ciphertext, shared_secret = cryptography_backend.encapsulate(algorithm, public_key)
    assert (len(ciphertext), len(shared_secret)) == (sizes.ciphertext, sizes.shared_secret)
    assert cryptography_backend.decapsulate(algorithm, private_key, ciphertext) == shared_secret
    assert cryptography_backend.encapsulate(algorithm, public_key)[1] != shared_secret


def test_mlkem_private_key_is_the_64_byte_seed(cryptography_backend):
    public_key, private_key = cryptography_backend.generate('ML-KEM-768')
    assert len(private_key) == 64
    assert ML_KEM_768.key_derive(private_key)[0] == public_key


@pytest.mark.parametrize('algorithm', ['ML-KEM-768', 'ML-KEM-1024'])
def test_tampered_ciphertext_gives_a_different_secret_without_error(cryptography_backend, algorithm):
    public_key, private_key = cryptography_backend.generate(algorithm)
    ciphertext, shared_secret = cryptography_backend.encapsulate(algorithm, public_key)
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    other = cryptography_backend.decapsulate(algorithm, private_key, tampered)
    assert len(other) == 32 and other != shared_secret
    assert cryptography_backend.decapsulate(algorithm, private_key, tampered) == other


@pytest.mark.parametrize('algorithm', ['ML-KEM-768', 'ML-KEM-1024'])
def test_interoperates_with_kyber_py(cryptography_backend, algorithm):
    kyber = KYBER_PY[algorithm]
    # cryptography encapsulates to a kyber-py key pair (kyber-py's decapsulation key is the expanded form)
    encapsulation_key, decapsulation_key = kyber.keygen()
    ciphertext, shared_secret = cryptography_backend.encapsulate(algorithm, encapsulation_key)
    assert kyber.decaps(decapsulation_key, ciphertext) == shared_secret
    # kyber-py encapsulates to a cryptography key pair, whose seed kyber-py expands to the same keys
    public_key, private_key = cryptography_backend.generate(algorithm)
    assert kyber.key_derive(private_key)[0] == public_key
    shared_secret, ciphertext = kyber.encaps(public_key)
    assert cryptography_backend.decapsulate(algorithm, private_key, ciphertext) == shared_secret


def test_invalid_mlkem_public_key_is_refused(cryptography_backend):
    with pytest.raises(PqcError) as caught:
        cryptography_backend.encapsulate('ML-KEM-768', b'\xff' * 1184)
    assert caught.value.kind == 'invalid_input' and 'ML-KEM-768 public key is not a valid' in caught.value.message


# ---------------------------------------------------------------------------------------------
# X25519 as a KEM

RFC7748_ALICE_PRIVATE = bytes.fromhex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a')
RFC7748_BOB_PUBLIC = bytes.fromhex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f')
RFC7748_SHARED = bytes.fromhex('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742')
LOW_ORDER_POINTS = [bytes(32), b'\x01' + bytes(31),
                    bytes.fromhex('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800')]


def test_x25519_decapsulation_is_the_raw_exchange_rfc7748(cryptography_backend):
    assert cryptography_backend.decapsulate('X25519', RFC7748_ALICE_PRIVATE, RFC7748_BOB_PUBLIC) == RFC7748_SHARED


def test_x25519_ciphertext_is_the_ephemeral_public_key(cryptography_backend):
    public_key, private_key = cryptography_backend.generate('X25519')
    ciphertext, shared_secret = cryptography_backend.encapsulate('X25519', public_key)
    # the peer computes the same raw exchange from its side: exchange(ephemeral private, public) == exchange(private, ciphertext)
    assert cryptography_backend.decapsulate('X25519', private_key, ciphertext) == shared_secret
    assert ciphertext != public_key and len(ciphertext) == 32


@pytest.mark.parametrize('point', LOW_ORDER_POINTS, ids=['zero', 'one', 'order-8'])
def test_x25519_low_order_points_are_refused(cryptography_backend, point):
    with pytest.raises(PqcError) as caught:
        cryptography_backend.encapsulate('X25519', point)
    assert caught.value.kind == 'invalid_input' and 'low-order' in caught.value.message
    with pytest.raises(PqcError) as caught:
        cryptography_backend.decapsulate('X25519', RFC7748_ALICE_PRIVATE, point)
    assert caught.value.kind == 'invalid_input' and 'ciphertext is a low-order point' in caught.value.message


# ---------------------------------------------------------------------------------------------
# input lengths

SECRETISH = bytes(range(200, 231))  # 31 distinctive bytes: must never show up in a message


@pytest.mark.parametrize('algorithm, operation, args, expected', [
    ('X25519', 'encapsulate', (SECRETISH,), 'X25519 public key must be 32 bytes, got 31 bytes'),
    ('X25519', 'decapsulate', (SECRETISH, bytes(32)), 'X25519 private key must be 32 bytes, got 31 bytes'),
    ('X25519', 'decapsulate', (bytes(32), SECRETISH), 'X25519 ciphertext must be 32 bytes, got 31 bytes'),
    ('X25519', 'public_key', (SECRETISH,), 'X25519 private key must be 32 bytes, got 31 bytes'),
    ('ML-KEM-768', 'encapsulate', (SECRETISH * 38,), 'ML-KEM-768 public key must be 1184 bytes, got 1178 bytes'),
    ('ML-KEM-768', 'decapsulate', (SECRETISH * 2, bytes(1088)), 'ML-KEM-768 private key must be 64 bytes, got 62 bytes'),
    ('ML-KEM-1024', 'decapsulate', (bytes(64), SECRETISH), 'ML-KEM-1024 ciphertext must be 1568 bytes, got 31 bytes'),
    ('ML-KEM-1024', 'public_key', (SECRETISH * 3,), 'ML-KEM-1024 private key must be 64 bytes, got 93 bytes'),
])
def test_wrong_lengths_name_algorithm_and_lengths_never_the_bytes(cryptography_backend, algorithm, operation, args, expected):
    with pytest.raises(PqcError) as caught:
        getattr(cryptography_backend, operation)(algorithm, *args)
    assert caught.value.kind == 'invalid_input' and expected in caught.value.message
    for spelling in secret_spellings(SECRETISH):
        assert spelling not in caught.value.message


def test_read_private_key(tmp_path):
    path = tmp_path / 'node.key'
    path.write_bytes(SECRETISH)
    assert read_private_key(str(path), 'X25519') == SECRETISH
    with pytest.raises(PqcError) as caught:
        read_private_key(str(tmp_path / 'absent.key'), 'ML-KEM-768')
    assert caught.value.kind == 'invalid_input'
    assert 'cannot read the ML-KEM-768 private key file %s (No such file or directory)' % (tmp_path / 'absent.key') in caught.value.message


def test_an_algorithm_the_backend_lacks_is_unsupported(cryptography_backend):
    with pytest.raises(PqcError) as caught:
        cryptography_backend.generate('ML-KEM-512')
    assert caught.value.kind == 'unsupported' and 'does not offer ML-KEM-512' in caught.value.message


# ---------------------------------------------------------------------------------------------
# select_backend


@pytest.fixture
def fresh_caches():
    """Forget what was found out about liboqs and cryptography, before and after the test."""
    for cache in (pqc_backends._liboqs, pqc_backends._cryptography_problem):
        cache.cache_clear()
    yield
    for cache in (pqc_backends._liboqs, pqc_backends._cryptography_problem):
        cache.cache_clear()
    sys.modules.pop('oqs', None)


@pytest.fixture
def no_liboqs(monkeypatch, tmp_path, fresh_caches):
    """No liboqs anywhere: the linker does not know it and OQS_INSTALL_PATH is an empty directory."""
    monkeypatch.setattr(pqc_backends.ctypes.util, 'find_library', lambda name: None)
    monkeypatch.setenv('OQS_INSTALL_PATH', str(tmp_path / 'oqs-install'))
    return tmp_path / 'oqs-install'


def test_auto_picks_cryptography_for_ml_kem_768():
    assert select_backend('auto', 'ML-KEM-768').name == 'cryptography'
    assert select_backend().name == 'cryptography'


def test_auto_ml_kem_512_without_liboqs_names_the_algorithm_and_liboqs(no_liboqs):
    with pytest.raises(PqcError) as caught:
        select_backend('auto', 'ML-KEM-512')
    message = caught.value.message
    assert caught.value.kind == 'missing_backend'
    assert 'ML-KEM-512' in message and 'liboqs' in message and 'Install the liboqs C library' in message


def test_explicit_liboqs_when_absent_is_a_missing_backend(no_liboqs):
    with pytest.raises(PqcError) as caught:
        select_backend('liboqs', 'ML-KEM-768')
    assert caught.value.kind == 'missing_backend'
    assert 'backend liboqs is not available' in caught.value.message and str(no_liboqs) in caught.value.message


def test_explicit_cryptography_for_ml_kem_512_is_unsupported():
    with pytest.raises(PqcError) as caught:
        select_backend('cryptography', 'ML-KEM-512')
    assert caught.value.kind == 'unsupported' and 'ML-KEM-512' in caught.value.message


def test_unknown_backend_name():
    with pytest.raises(PqcError) as caught:
        select_backend('openssl', 'ML-KEM-768')
    assert caught.value.kind == 'invalid_input' and "'openssl'" in caught.value.message


def test_cryptography_that_reports_ml_kem_unsupported_is_not_used(monkeypatch, no_liboqs):
    """cryptography 47 has the ML-KEM API but its OpenSSL does not do ML-KEM: check at run time."""
    def unsupported(data):
        raise UnsupportedAlgorithm('ML-KEM-768 is not supported by this backend.')
    fake_mlkem = types.SimpleNamespace(MLKEM768PrivateKey=types.SimpleNamespace(from_seed_bytes=unsupported), MLKEM768PublicKey=None)
    monkeypatch.setattr(pqc_backends, 'mlkem', fake_mlkem)
    with pytest.raises(PqcError) as caught:
        select_backend('cryptography', 'ML-KEM-768')
    assert caught.value.kind == 'unsupported' and 'reports ML-KEM-768 unsupported' in caught.value.message
    with pytest.raises(PqcError) as caught:
        select_backend('auto', 'ML-KEM-768')
    assert caught.value.kind == 'missing_backend' and 'cryptography >= 48' in caught.value.message
    assert select_backend('auto', 'X25519').name == 'cryptography'


def test_missing_cryptography_is_reported_like_missing_required_lib(monkeypatch, fresh_caches):
    monkeypatch.setattr(pqc_backends, 'HAS_CRYPTOGRAPHY', False)
    monkeypatch.setattr(pqc_backends, 'CRYPTOGRAPHY_IMPORT_ERROR', 'Traceback: ImportError: cryptography')
    with pytest.raises(PqcError) as caught:
        select_backend('cryptography', 'X25519')
    assert caught.value.kind == 'missing_backend'
    assert 'Failed to import the required Python library (cryptography >= 48)' in caught.value.message
    assert caught.value.exception == 'Traceback: ImportError: cryptography'


# ---------------------------------------------------------------------------------------------
# liboqs detection: liboqs-python is imported only once the shared library is there

HOSTILE_OQS = '''
print("liboqs not found, installing it in ~/_oqs")
raise SystemExit("Could not load liboqs shared library")
'''

FAKE_OQS = '''
"""A stand-in for liboqs-python backed by kyber-py, for tests only."""
from kyber_py.ml_kem import ML_KEM_512, ML_KEM_768

print("liboqs-python faulthandler is disabled")  # the real one logs to stdout at import
SEEDED = True
# name: (kyber-py KEM, public key, secret key, ciphertext length)
KEMS = {"ML-KEM-512": (ML_KEM_512, 800, 1632, 768), "ML-KEM-768": (ML_KEM_768, 1184, 2400, 1088),
        "Unseeded-KEM": (ML_KEM_512, 800, 1632, 768)}


def oqs_version():
    return "0.14.0-fake"


def get_enabled_kem_mechanisms():
    return tuple(KEMS)


class KeyEncapsulation:
    def __init__(self, alg_name, secret_key=None):
        self.kem, public, secret, ciphertext = KEMS[alg_name]
        seed = 64 if SEEDED and alg_name.startswith("ML-KEM") else 0
        self.details = dict(length_public_key=public, length_secret_key=secret, length_ciphertext=ciphertext,
                            length_shared_secret=32, length_keypair_seed=seed)
        self.secret_key = secret_key

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.secret_key = None

    def generate_keypair_seed(self, seed):
        public_key, self.secret_key = self.kem.key_derive(seed)
        return public_key

    def generate_keypair(self):
        public_key, self.secret_key = self.kem.keygen()
        return public_key

    def export_secret_key(self):
        return self.secret_key

    def encap_secret(self, public_key):
        shared_secret, ciphertext = self.kem.encaps(public_key)
        return ciphertext, shared_secret

    def decap_secret(self, ciphertext):
        return self.kem.decaps(self.secret_key, ciphertext)
'''


@pytest.fixture
def oqs_on_path(monkeypatch, tmp_path):
    """Factory: put a module ``oqs`` with the given source first on sys.path."""
    def place(source):
        directory = tmp_path / 'fake-oqs'
        directory.mkdir()
        (directory / 'oqs.py').write_text(source)
        monkeypatch.syspath_prepend(str(directory))
    sys.modules.pop('oqs', None)
    return place


@pytest.mark.parametrize('install_dir_holds', ['nothing', 'an unloadable liboqs.so'])
def test_liboqs_python_is_never_imported_without_the_shared_library(no_liboqs, oqs_on_path, capfd, install_dir_holds):
    oqs_on_path(HOSTILE_OQS)
    if install_dir_holds != 'nothing':
        (no_liboqs / 'lib').mkdir(parents=True)
        (no_liboqs / 'lib' / 'liboqs.so').write_bytes(b'not an ELF file')
    available, reason = liboqs_status()
    assert available is False and 'shared library was not found' in reason and str(no_liboqs) in reason
    assert 'oqs' not in sys.modules
    with pytest.raises(PqcError):
        select_backend('liboqs')
    assert 'oqs' not in sys.modules
    assert capfd.readouterr() == ('', '')


def test_liboqs_python_failing_at_import_is_contained(monkeypatch, fresh_caches, oqs_on_path, capfd):
    """The library is found, but importing liboqs-python prints and raises SystemExit."""
    monkeypatch.setattr(pqc_backends, '_find_liboqs', lambda: '/opt/liboqs/lib/liboqs.so')
    oqs_on_path(HOSTILE_OQS)
    available, reason = liboqs_status()
    assert available is False
    assert 'SystemExit' in reason and 'Could not load liboqs shared library' in reason and '/opt/liboqs/lib/liboqs.so' in reason
    assert capfd.readouterr() == ('', '')
    with pytest.raises(PqcError) as caught:
        select_backend('liboqs', 'ML-KEM-768')
    assert caught.value.kind == 'missing_backend' and 'SystemExit' in caught.value.message


@pytest.fixture
def fake_liboqs(monkeypatch, fresh_caches, oqs_on_path, capfd):
    monkeypatch.setattr(pqc_backends, '_find_liboqs', lambda: '/opt/liboqs/lib/liboqs.so')
    oqs_on_path(FAKE_OQS)
    assert liboqs_status() == (True, 'liboqs 0.14.0-fake at /opt/liboqs/lib/liboqs.so')
    assert capfd.readouterr() == ('', '')
    return sys.modules['oqs']


def test_auto_falls_back_to_liboqs_for_what_cryptography_lacks(fake_liboqs):
    assert select_backend('auto', 'ML-KEM-512').name == 'liboqs'
    assert select_backend('auto', 'ML-KEM-768').name == 'cryptography'
    assert select_backend('liboqs', 'ML-KEM-768').name == 'liboqs'
    with pytest.raises(PqcError) as caught:
        select_backend('auto', 'HQC-128')
    assert caught.value.kind == 'unsupported' and 'HQC-128 is not enabled in liboqs 0.14.0-fake' in caught.value.message


def test_liboqs_backend_keeps_ml_kem_keys_in_seed_form(fake_liboqs):
    liboqs = select_backend('liboqs', 'ML-KEM-768')
    cryptography_backend = select_backend('cryptography', 'ML-KEM-768')
    public_key, private_key = liboqs.generate('ML-KEM-768')
    assert len(private_key) == 64 and cryptography_backend.public_key('ML-KEM-768', private_key) == public_key
    ciphertext, shared_secret = cryptography_backend.encapsulate('ML-KEM-768', public_key)
    assert liboqs.decapsulate('ML-KEM-768', private_key, ciphertext) == shared_secret
    ciphertext, shared_secret = liboqs.encapsulate('ML-KEM-768', public_key)
    assert cryptography_backend.decapsulate('ML-KEM-768', private_key, ciphertext) == shared_secret


def test_liboqs_backend_ml_kem_512_known_answers(fake_liboqs):
    liboqs = select_backend('liboqs', 'ML-KEM-512')
    for entry in kat_entries('ML-KEM-512', limit=5):
        private_key = entry['d'] + entry['z']
        assert liboqs.public_key('ML-KEM-512', private_key) == entry['pk']
        assert liboqs.decapsulate('ML-KEM-512', private_key, entry['ct']) == entry['ss']
        assert liboqs.decapsulate('ML-KEM-512', private_key, entry['ct_n']) == entry['ss_n']


def test_liboqs_kem_without_seeded_keygen_keeps_secret_key_and_public_key(fake_liboqs):
    liboqs = select_backend('liboqs', 'Unseeded-KEM')
    public_key, private_key = liboqs.generate('Unseeded-KEM')
    assert liboqs.sizes('Unseeded-KEM').private_key == 1632 + 800 == len(private_key)
    assert liboqs.public_key('Unseeded-KEM', private_key) == public_key
    ciphertext, shared_secret = liboqs.encapsulate('Unseeded-KEM', public_key)
    assert liboqs.decapsulate('Unseeded-KEM', private_key, ciphertext) == shared_secret


def test_liboqs_without_seeded_ml_kem_keygen_is_refused_for_ml_kem(fake_liboqs):
    fake_liboqs.SEEDED = False
    with pytest.raises(PqcError) as caught:
        select_backend('liboqs', 'ML-KEM-768').generate('ML-KEM-768')
    assert caught.value.kind == 'unsupported' and 'seed form' in caught.value.message


def test_liboqs_refusal_becomes_invalid_input(fake_liboqs):
    with pytest.raises(PqcError) as caught:
        select_backend('liboqs', 'ML-KEM-512').encapsulate('ML-KEM-512', b'\xff' * 800)
    assert caught.value.kind == 'invalid_input' and 'liboqs refused the ML-KEM-512 operation' in caught.value.message
