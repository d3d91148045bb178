# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Key encapsulation (KEM) primitives: ML-KEM, X25519 and liboqs KEMs behind one interface.

This is the one place of the collection that touches post-quantum or classical KEM libraries.
``select_backend(name, algorithm)`` returns a ``KemBackend`` with four operations on raw bytes:

* ``generate(algorithm)``                          -> (public_key, private_key)
* ``public_key(algorithm, private_key)``           -> public_key
* ``encapsulate(algorithm, public_key)``           -> (ciphertext, shared_secret)
* ``decapsulate(algorithm, private_key, ciphertext)`` -> shared_secret

Backends:

* ``cryptography`` (>= 48, whose wheels carry an OpenSSL with ML-KEM): ML-KEM-768, ML-KEM-1024
  and X25519. Support is checked at run time, since cryptography 47 has the API but reports
  ML-KEM unsupported.
* ``liboqs`` (the liboqs C library through liboqs-python): every KEM the library has enabled.
  liboqs-python tries to download and build liboqs when it cannot load it, printing to stdout
  and ending in SystemExit, so ``oqs`` is imported only once the shared library has been found,
  with its output captured and every exception caught (``liboqs_status()``).

Key formats, the same in every backend:

* ML-KEM private keys are the 64-byte seed ``d || z`` of FIPS 203 (section 7.1), public keys the
  encapsulation key. Via liboqs this needs seeded key generation (liboqs and liboqs-python >= 0.14).
* X25519 is used as a KEM in the DHKEM style, raw: the ciphertext is a fresh ephemeral public
  key (32 bytes) and the shared secret is the raw X25519 output; an all-zero output (a low-order
  public key) is refused. Private and public keys are the raw 32-byte values.
* Other liboqs KEMs: the private key is liboqs's seed where the KEM has seeded key generation,
  otherwise liboqs's secret key followed by the public key (so the public key can always be
  derived from the private key).

ML-KEM decapsulation never fails on a well-sized ciphertext: a tampered or foreign ciphertext
yields a different, pseudo-random secret (implicit rejection, FIPS 203 algorithm 18). That is
expected; comparing key check values of both ends (``key_material.key_check_value``) catches it.

Private key files hold the raw private key bytes; ``read_private_key(path, algorithm)`` reads one.

Every failure is a ``PqcError``. Messages name the algorithm and lengths, never key bytes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import contextlib
import ctypes
import ctypes.util
import functools
import importlib
import io
import os
import sys
import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.qsafe.keyfabric.plugins.module_utils._errors import KeyfabricError

try:
    import cryptography
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import x25519
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

try:
    from cryptography.hazmat.primitives.asymmetric import mlkem
except ImportError:  # cryptography < 47
    mlkem = None

KEM_ALGORITHMS = (
    'ML-KEM-512', 'ML-KEM-768', 'ML-KEM-1024', 'X25519',
    'HQC-128', 'HQC-192', 'HQC-256',
    'FrodoKEM-640-AES', 'FrodoKEM-976-AES', 'FrodoKEM-1344-AES',
    'Classic-McEliece-348864',
)
BACKENDS = ('auto', 'cryptography', 'liboqs')

KemSizes = collections.namedtuple('KemSizes', ['public_key', 'private_key', 'ciphertext', 'shared_secret'])

_CRYPTOGRAPHY_SIZES = {
    'ML-KEM-768': KemSizes(public_key=1184, private_key=64, ciphertext=1088, shared_secret=32),
    'ML-KEM-1024': KemSizes(public_key=1568, private_key=64, ciphertext=1568, shared_secret=32),
    'X25519': KemSizes(public_key=32, private_key=32, ciphertext=32, shared_secret=32),
}
_ML_KEM_SEED_SIZE = 64


class PqcError(KeyfabricError):
    """A KEM operation or backend choice failed.

    kind: 'unsupported' (the backend lacks the algorithm), 'missing_backend' (a library is not
      installed or cannot be loaded) or 'invalid_input' (wrong length or invalid key/ciphertext).
    exception: an import traceback, when a library failed to import.
    """

    KINDS = ('unsupported', 'missing_backend', 'invalid_input')

    def __init__(self, message, kind='invalid_input', exception=None):
        super(PqcError, self).__init__(message)
        if kind not in self.KINDS:
            raise ValueError('unknown PqcError kind %r' % (kind,))
        self.message = message
        self.kind = kind
        self.exception = exception


class KemBackend:
    """Base of the backends: checks algorithm and input lengths, then calls the ``_`` methods."""

    name = None

    def algorithms(self):
        """The KEM algorithms this backend offers."""
        raise NotImplementedError

    def sizes(self, algorithm):
        """The KemSizes (byte lengths) of ``algorithm`` in this backend."""
        raise NotImplementedError

    def check_input(self, algorithm, what, data):
        """Raise PqcError unless ``data`` has the length of a ``what`` (a KemSizes field) of ``algorithm``."""
        self._check_algorithm(algorithm)
        expected = getattr(self.sizes(algorithm), what)
        if len(data) != expected:
            raise PqcError('%s %s must be %d bytes, got %d bytes' % (algorithm, what.replace('_', ' '), expected, len(data)))

    def generate(self, algorithm):
        """A new key pair: (public_key, private_key)."""
        self._check_algorithm(algorithm)
        return self._generate(algorithm)

    def public_key(self, algorithm, private_key):
        """The public key that belongs to ``private_key``."""
        self.check_input(algorithm, 'private_key', private_key)
        return self._public_key(algorithm, private_key)

    def encapsulate(self, algorithm, public_key):
        """A fresh shared secret for the holder of ``public_key``: (ciphertext, shared_secret)."""
        self.check_input(algorithm, 'public_key', public_key)
        return self._encapsulate(algorithm, public_key)

    def decapsulate(self, algorithm, private_key, ciphertext):
        """The shared secret in ``ciphertext``. ML-KEM gives a different secret for a tampered one."""
        self.check_input(algorithm, 'private_key', private_key)
        self.check_input(algorithm, 'ciphertext', ciphertext)
        return self._decapsulate(algorithm, private_key, ciphertext)

    def _check_algorithm(self, algorithm):
        if algorithm not in self.algorithms():
            raise PqcError('backend %s does not offer %s (it offers %s)'
                           % (self.name, algorithm, ', '.join(self.algorithms())), kind='unsupported')

    def _generate(self, algorithm):
        raise NotImplementedError

    def _public_key(self, algorithm, private_key):
        raise NotImplementedError

    def _encapsulate(self, algorithm, public_key):
        raise NotImplementedError

    def _decapsulate(self, algorithm, private_key, ciphertext):
        raise NotImplementedError


class CryptographyBackend(KemBackend):
    """ML-KEM-768, ML-KEM-1024 and X25519 from the cryptography library."""

    name = 'cryptography'

    def algorithms(self):
        return tuple(algorithm for algorithm in _CRYPTOGRAPHY_SIZES if _cryptography_problem(algorithm) is None)

    def sizes(self, algorithm):
        return _CRYPTOGRAPHY_SIZES[algorithm]

    @staticmethod
    def _mlkem_classes(algorithm):
        if algorithm == 'ML-KEM-768':
            return mlkem.MLKEM768PrivateKey, mlkem.MLKEM768PublicKey
        return mlkem.MLKEM1024PrivateKey, mlkem.MLKEM1024PublicKey

    def _load_private(self, algorithm, private_key):
        if algorithm == 'X25519':
            return x25519.X25519PrivateKey.from_private_bytes(private_key)
        return self._mlkem_classes(algorithm)[0].from_seed_bytes(private_key)

    @staticmethod
    def _x25519_exchange(private, peer, what):
        """Raw X25519 of ``private`` with the public value ``peer``; refuses an all-zero result (low-order ``peer``)."""
        try:
            shared_secret = private.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
        except ValueError:  # OpenSSL itself refuses the all-zero output
            shared_secret = bytes(32)
        if not any(bytearray(shared_secret)):
            raise PqcError('the X25519 %s is a low-order point (the shared secret would be all zero); refused' % what)
        return shared_secret

    def _generate(self, algorithm):
        private_class = x25519.X25519PrivateKey if algorithm == 'X25519' else self._mlkem_classes(algorithm)[0]
        private = private_class.generate()
        return private.public_key().public_bytes_raw(), private.private_bytes_raw()

    def _public_key(self, algorithm, private_key):
        return self._load_private(algorithm, private_key).public_key().public_bytes_raw()

    def _encapsulate(self, algorithm, public_key):
        if algorithm == 'X25519':
            ephemeral = x25519.X25519PrivateKey.generate()
            return ephemeral.public_key().public_bytes_raw(), self._x25519_exchange(ephemeral, public_key, 'public key')
        try:
            peer = self._mlkem_classes(algorithm)[1].from_public_bytes(public_key)
        except ValueError:
            raise PqcError('the %s public key is not a valid encapsulation key (its encoding check failed)' % algorithm)
        shared_secret, ciphertext = peer.encapsulate()
        return ciphertext, shared_secret

    def _decapsulate(self, algorithm, private_key, ciphertext):
        private = self._load_private(algorithm, private_key)
        if algorithm == 'X25519':
            return self._x25519_exchange(private, ciphertext, 'ciphertext')
        return private.decapsulate(ciphertext)


class LiboqsBackend(KemBackend):
    """Every KEM enabled in liboqs, through liboqs-python (the ``oqs`` module)."""

    name = 'liboqs'

    def __init__(self, oqs):
        self._oqs = oqs
        self._details = {}

    def algorithms(self):
        return tuple(self._oqs.get_enabled_kem_mechanisms())

    def _kem_details(self, algorithm):
        if algorithm not in self._details:
            with self._oqs.KeyEncapsulation(algorithm) as kem:
                details = dict(kem.details)
            if algorithm.startswith('ML-KEM-') and details.get('length_keypair_seed') != _ML_KEM_SEED_SIZE:
                raise PqcError('this liboqs has no seeded %s key generation, so it cannot use %s private keys in '
                               'seed form (d || z); it needs liboqs and liboqs-python >= 0.14' % (algorithm, algorithm), kind='unsupported')
            self._details[algorithm] = details
        return self._details[algorithm]

    def _seeded(self, algorithm):
        return bool(self._kem_details(algorithm).get('length_keypair_seed'))

    def sizes(self, algorithm):
        details = self._kem_details(algorithm)
        if self._seeded(algorithm):
            private_key = details['length_keypair_seed']
        else:
            private_key = details['length_secret_key'] + details['length_public_key']
        return KemSizes(public_key=details['length_public_key'], private_key=private_key,
                        ciphertext=details['length_ciphertext'], shared_secret=details['length_shared_secret'])

    def _call(self, algorithm, operation, secret_key=None):
        """Run ``operation(kem)`` on a fresh liboqs KeyEncapsulation; liboqs failures become PqcError."""
        try:
            with self._oqs.KeyEncapsulation(algorithm, secret_key) as kem:
                return operation(kem)
        except (RuntimeError, ValueError) as exc:
            raise PqcError('liboqs refused the %s operation (%s)' % (algorithm, exc.__class__.__name__))

    def _generate(self, algorithm):
        if self._seeded(algorithm):
            seed = os.urandom(self.sizes(algorithm).private_key)
            return self._call(algorithm, lambda kem: kem.generate_keypair_seed(seed)), seed

        def generate(kem):
            public_key = kem.generate_keypair()
            return public_key, kem.export_secret_key() + public_key
        return self._call(algorithm, generate)

    def _public_key(self, algorithm, private_key):
        if self._seeded(algorithm):
            return self._call(algorithm, lambda kem: kem.generate_keypair_seed(private_key))
        return private_key[-self.sizes(algorithm).public_key:]

    def _encapsulate(self, algorithm, public_key):
        return tuple(self._call(algorithm, lambda kem: kem.encap_secret(public_key)))

    def _decapsulate(self, algorithm, private_key, ciphertext):
        if self._seeded(algorithm):
            def decapsulate(kem):
                kem.generate_keypair_seed(private_key)
                return kem.decap_secret(ciphertext)
            return self._call(algorithm, decapsulate)
        secret_key = private_key[:-self.sizes(algorithm).public_key]
        return self._call(algorithm, lambda kem: kem.decap_secret(ciphertext), secret_key=secret_key)


@functools.lru_cache(maxsize=None)
def _cryptography_problem(algorithm):
    """Why the cryptography backend cannot do ``algorithm`` here, or None when it can."""
    if not HAS_CRYPTOGRAPHY:
        return missing_required_lib('cryptography >= 48')
    if algorithm not in _CRYPTOGRAPHY_SIZES:
        return 'cryptography %s offers %s only, not %s' % (cryptography.__version__, ', '.join(_CRYPTOGRAPHY_SIZES), algorithm)
    if algorithm != 'X25519' and mlkem is None:
        return 'cryptography %s has no ML-KEM; %s needs cryptography >= 48' % (cryptography.__version__, algorithm)
    try:
        if algorithm == 'X25519':
            x25519.X25519PrivateKey.generate()
        else:
            CryptographyBackend._mlkem_classes(algorithm)[0].from_seed_bytes(bytes(_ML_KEM_SEED_SIZE))
    except UnsupportedAlgorithm:
        return ('cryptography %s reports %s unsupported by its OpenSSL; it needs cryptography >= 48 '
                'installed from its own wheels' % (cryptography.__version__, algorithm))
    return None


def _liboqs_search_dirs():
    """The directories liboqs-python loads liboqs from besides the linker's path."""
    if 'OQS_INSTALL_PATH' in os.environ:
        install_dir = os.environ['OQS_INSTALL_PATH']
    else:
        install_dir = os.path.join(os.path.expanduser('~'), '_oqs')
    return [os.path.join(install_dir, 'lib'), os.path.join(install_dir, 'lib64')]


def _find_liboqs():
    """Path of a loadable liboqs shared library, looked for where liboqs-python looks, or None."""
    suffix = '.dylib' if sys.platform == 'darwin' else '.so'
    candidates = [ctypes.util.find_library('oqs')] + [os.path.join(path, 'liboqs' + suffix) for path in _liboqs_search_dirs()]
    for candidate in candidates:
        if candidate:
            try:
                ctypes.CDLL(candidate)
            except OSError:
                continue
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def _liboqs():
    """(oqs module or None, reason). ``oqs`` is imported only when liboqs itself was found."""
    library = _find_liboqs()
    if library is None:
        return None, ('the liboqs shared library was not found (looked with ctypes.util.find_library("oqs") and in %s)'
                      % ', '.join(_liboqs_search_dirs()))
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            oqs = importlib.import_module('oqs')
            version = oqs.oqs_version()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # pylint: disable=broad-exception-caught
        # liboqs-python ends in SystemExit (after trying to build liboqs) when it cannot load it
        return None, 'liboqs-python could not be used with %s (%s: %s)' % (library, exc.__class__.__name__, exc)
    return oqs, 'liboqs %s at %s' % (version, library)


def liboqs_status():
    """(available, reason): can the liboqs backend be used here, and why (not). Cached."""
    oqs, reason = _liboqs()
    return oqs is not None, reason


def read_private_key(path, algorithm):
    """The private key for ``algorithm`` in the file ``path`` (raw bytes, as pqc_kem writes it).

    Only reading is checked here; the backend operations check the length.
    """
    try:
        with open(path, 'rb') as handle:
            return handle.read()
    except OSError as exc:
        raise PqcError('cannot read the %s private key file %s (%s)' % (algorithm, path, exc.strerror or exc.__class__.__name__))


def select_backend(name='auto', algorithm='ML-KEM-768'):
    """The KemBackend ``name`` for ``algorithm``; ``auto`` prefers cryptography, then liboqs.

    Raises PqcError (missing_backend or unsupported) saying what is missing and what to install.
    """
    if name not in BACKENDS:
        raise PqcError('unknown KEM backend %r; choose one of %s' % (name, ', '.join(BACKENDS)))
    problem = None
    if name in ('auto', 'cryptography'):
        problem = _cryptography_problem(algorithm)
        if problem is None:
            return CryptographyBackend()
        if name == 'cryptography':
            raise PqcError('backend cryptography cannot do %s: %s' % (algorithm, problem),
                           kind='missing_backend' if not HAS_CRYPTOGRAPHY else 'unsupported',
                           exception=CRYPTOGRAPHY_IMPORT_ERROR)
    oqs, reason = _liboqs()
    if oqs is None:
        if name == 'liboqs':
            raise PqcError('backend liboqs is not available: %s. Install the liboqs C library (shared, '
                           'liboqs.so) and the liboqs-python package on this host' % reason, kind='missing_backend')
        raise PqcError('no KEM backend here offers %s: %s; and liboqs is not available (%s). Install the liboqs C '
                       'library and liboqs-python for %s' % (algorithm, problem, reason, algorithm), kind='missing_backend',
                       exception=CRYPTOGRAPHY_IMPORT_ERROR)
    backend = LiboqsBackend(oqs)
    if algorithm not in backend.algorithms():
        raise PqcError('%s is not enabled in %s%s' % (algorithm, reason, '' if problem is None else '; ' + problem), kind='unsupported')
    return backend
