#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: pqc_kem
short_description: ML-KEM and X25519 key encapsulation on a node, with the key material kept on the node
version_added: 0.1.0
description:
  - C(keypair) makes a KEM key pair. The private key is written to I(private_key_path) (mode 0600,
    atomically) and never leaves the node; the public key is returned (base64) and optionally written
    to I(public_key_path). Idempotent - an existing valid private key is kept.
  - C(encapsulate) makes a fresh shared secret for the holder of a public key (I(public_key) or
    I(public_key_src)) and returns the ciphertext to send to that holder.
  - C(decapsulate) recovers the shared secret from a I(ciphertext) with the private key at
    I(private_key_path).
  - The shared secret is written to I(shared_secret_path) (mode 0600, atomically) and identified in the
    result by its key check value only; it is returned only with I(return_shared_secret=true).
  - X25519 is used as a KEM (DHKEM style, raw) - the ciphertext is a fresh ephemeral public key and the
    shared secret the raw X25519 output; a low-order public key (all-zero output) is refused.
author:
  - qsafe.keyfabric maintainers (@qsafe-keyfabric)
options:
  operation:
    description:
      - C(keypair) makes (or keeps) a key pair, C(encapsulate) makes a shared secret for a public key,
        C(decapsulate) recovers a shared secret from a ciphertext.
    type: str
    required: true
    choices: [keypair, encapsulate, decapsulate]
  algorithm:
    description:
      - The KEM. ML-KEM-768, ML-KEM-1024 and X25519 come with the C(cryptography) backend; the others
        need the C(liboqs) backend.
    type: str
    default: ML-KEM-768
    choices: [ML-KEM-512, ML-KEM-768, ML-KEM-1024, X25519, HQC-128, HQC-192, HQC-256, FrodoKEM-640-AES,
              FrodoKEM-976-AES, FrodoKEM-1344-AES, Classic-McEliece-348864]
  backend:
    description:
      - The library that does the KEM. C(auto) takes C(cryptography) when it offers I(algorithm), else
        C(liboqs) when it is installed.
      - C(liboqs) needs the liboqs C library (shared) and the liboqs-python package on the node; the module
        checks for the library before it imports liboqs-python, which would otherwise try to build it.
    type: str
    default: auto
    choices: [auto, cryptography, liboqs]
  private_key_path:
    description:
      - The private key file, raw bytes - for ML-KEM the 64-byte seed (d || z), for X25519 the 32-byte key.
      - For C(keypair), where the new private key is written (mode 0600, atomically; the directory must
        exist). An existing file that holds a valid private key for I(algorithm) is kept; one that does not
        makes the task fail unless I(force=true).
      - Required for C(keypair) and C(decapsulate).
    type: path
  public_key_path:
    description:
      - For C(keypair), also write the public key (raw bytes, mode 0600) to this file.
    type: path
  force:
    description:
      - For C(keypair), make a new key pair even when I(private_key_path) holds a valid one.
    type: bool
    default: false
  public_key:
    description:
      - For C(encapsulate), the peer's public key, base64 (as returned by C(keypair)).
      - Exactly one of I(public_key) and I(public_key_src) is required for C(encapsulate).
    type: str
  public_key_src:
    description:
      - For C(encapsulate), a file on the node with the peer's public key, raw bytes (as written to
        I(public_key_path)).
    type: path
  ciphertext:
    description:
      - For C(decapsulate), the ciphertext, base64 (as returned by C(encapsulate)). Required then.
    type: str
  shared_secret_path:
    description:
      - For C(encapsulate) and C(decapsulate), write the shared secret (raw bytes) to this file, mode 0600,
        atomically. Its directory must exist.
      - One of I(shared_secret_path) and I(return_shared_secret) is required for these operations, so that
        no shared secret is dropped.
    type: path
  return_shared_secret:
    description:
      - Also return the shared secret (base64) in C(shared_secret). The result is then SENSITIVE - set
        C(no_log=true) on the task and never print the registered result.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description:
      - C(keypair) reports whether it would make a key pair or write the public key file, and writes nothing.
      - C(encapsulate) and C(decapsulate) check their inputs, then compute nothing and write nothing.
  diff_mode:
    support: full
    description:
      - For C(keypair), the diff shows the paths, whether the private key exists and the SHA-256 fingerprint
        of the public key; never key bytes.
requirements:
  - cryptography >= 48 for ML-KEM-768, ML-KEM-1024 and X25519
  - liboqs (C library) and liboqs-python >= 0.14 for the other KEMs
notes:
  - A tampered or foreign ML-KEM ciphertext does not make C(decapsulate) fail - ML-KEM then yields a
    different, pseudo-random secret (implicit rejection). Compare the C(shared_secret_kcv) of both ends.
  - The key check value (KCV) is the first 3 bytes of HMAC-SHA256(secret, "qsafe.keyfabric KCV v1").
  - C(encapsulate) makes a new secret on every run, so it always reports a change. C(decapsulate) reports a
    change only when it (re)writes I(shared_secret_path).
  - For liboqs KEMs without seeded key generation, the private key file holds liboqs's secret key followed
    by the public key.
seealso:
  - module: qsafe.keyfabric.qkd_key
'''

EXAMPLES = r'''
- name: Site B makes its ML-KEM-768 key pair (the private key stays on site B)
  qsafe.keyfabric.pqc_kem:
    operation: keypair
    private_key_path: /etc/qsafe/pqc/site-b.mlkem768.key
  register: site_b

- name: Site A makes a shared secret for site B
  qsafe.keyfabric.pqc_kem:
    operation: encapsulate
    public_key: "{{ site_b.public_key }}"
    shared_secret_path: /etc/qsafe/pqc/a--b.mlkem.secret
  register: site_a
  delegate_to: site-a

- name: Site B recovers it from the ciphertext
  qsafe.keyfabric.pqc_kem:
    operation: decapsulate
    private_key_path: /etc/qsafe/pqc/site-b.mlkem768.key
    ciphertext: "{{ site_a.ciphertext }}"
    shared_secret_path: /etc/qsafe/pqc/a--b.mlkem.secret
  register: site_b_secret

- name: Both ends hold the same secret
  ansible.builtin.assert:
    that: site_a.shared_secret_kcv == site_b_secret.shared_secret_kcv

- name: An X25519 shared secret handed to the next task (sensitive)
  qsafe.keyfabric.pqc_kem:
    operation: encapsulate
    algorithm: X25519
    public_key_src: /etc/qsafe/pqc/peer.x25519.pub
    return_shared_secret: true
  register: classical
  no_log: true
'''

RETURN = r'''
algorithm:
  description: The KEM used.
  returned: always
  type: str
  sample: ML-KEM-768
backend:
  description: The backend used, C(cryptography) or C(liboqs).
  returned: always
  type: str
  sample: cryptography
public_key:
  description: The public key, base64.
  returned: for C(keypair), unless in check mode a new key pair would be made
  type: str
public_key_fingerprint:
  description: SHA-256 of the public key, hex.
  returned: for C(keypair), unless in check mode a new key pair would be made
  type: str
  sample: 3b7d4c1e9f0a8b2c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4
ciphertext:
  description: The ciphertext to send to the holder of the private key, base64. Not secret.
  returned: for C(encapsulate), not in check mode
  type: str
shared_secret_kcv:
  description: Key check value of the shared secret, 6 hex digits; equal at both ends when they agree.
  returned: for C(encapsulate) and C(decapsulate), not in check mode
  type: str
  sample: 3FA2C1
shared_secret:
  description: The shared secret, base64. SENSITIVE.
  returned: with I(return_shared_secret=true), not in check mode
  type: str
'''

import base64
import binascii
import hashlib
import itertools
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value, write_secret_file
from ansible_collections.qsafe.keyfabric.plugins.module_utils.pqc_backends import (
    BACKENDS,
    KEM_ALGORITHMS,
    PqcError,
    read_private_key,
    select_backend,
)

OPERATION_OPTIONS = dict(
    keypair=('private_key_path', 'public_key_path', 'force'),
    encapsulate=('public_key', 'public_key_src', 'shared_secret_path', 'return_shared_secret'),
    decapsulate=('private_key_path', 'ciphertext', 'shared_secret_path', 'return_shared_secret'),
)


def guarded(module, option, call):
    """``call()``, with a PqcError turned into a failure naming ``option``."""
    try:
        return call()
    except PqcError as exc:
        module.fail_json(msg='%s: %s' % (option, exc.message), error_kind=exc.kind)


def read_file(module, option):
    path = module.params[option]
    try:
        with open(path, 'rb') as handle:
            return handle.read()
    except OSError as exc:
        module.fail_json(msg='%s: cannot read %s (%s)' % (option, path, exc.strerror or exc))


def current_content(path):
    """The bytes in ``path``, or None when it does not exist or cannot be read."""
    try:
        with open(path, 'rb') as handle:
            return handle.read()
    except OSError:
        return None


def write_file(module, option, data):
    path = module.params[option]
    try:
        write_secret_file(path, data)
    except (OSError, KeyDeliveryError) as exc:
        module.fail_json(msg='%s: could not write %s (%s)' % (option, path, exc))


def decode_base64(module, option):
    try:
        return base64.b64decode(''.join(module.params[option].split()), validate=True)
    except (binascii.Error, ValueError):
        module.fail_json(msg='%s is not valid base64' % option)


def b64(data):
    return base64.b64encode(data).decode('ascii')


def fingerprint(public_key):
    return hashlib.sha256(public_key).hexdigest() if public_key is not None else None


def keypair(module, backend, result):
    params = module.params
    algorithm = params['algorithm']
    path = params['private_key_path']
    public_key = None
    exists = os.path.exists(path)
    if exists:
        private_key = guarded(module, 'private_key_path', lambda: read_private_key(path, algorithm))
        try:
            public_key = backend.public_key(algorithm, private_key)
        except PqcError as exc:
            if not params['force']:
                module.fail_json(msg='private_key_path %s exists but is not a private key for %s (%s); set force=true to replace it'
                                 % (path, algorithm, exc.message), error_kind=exc.kind)
    before = dict(private_key_path=path, private_key='present' if exists else 'absent',
                  public_key_path=params['public_key_path'], public_key_fingerprint=fingerprint(public_key))

    if public_key is None or params['force']:
        result['changed'] = True
        public_key = None
        if not module.check_mode:
            public_key, private_key = backend.generate(algorithm)
            write_file(module, 'private_key_path', private_key)
    if params['public_key_path'] and (public_key is None or current_content(params['public_key_path']) != public_key):
        result['changed'] = True
        if public_key is not None and not module.check_mode:
            write_file(module, 'public_key_path', public_key)

    if public_key is not None:
        result.update(public_key=b64(public_key), public_key_fingerprint=fingerprint(public_key))
    if module._diff:
        after = dict(before, private_key='present', public_key_fingerprint=fingerprint(public_key) or '(new key pair)')
        result['diff'] = dict(before=before, after=after)


def deliver_secret(module, result, shared_secret):
    """Write and/or return the shared secret; always report its KCV."""
    params = module.params
    if params['shared_secret_path'] and current_content(params['shared_secret_path']) != shared_secret:
        write_file(module, 'shared_secret_path', shared_secret)
        result['changed'] = True
    result['shared_secret_kcv'] = key_check_value(shared_secret)
    if params['return_shared_secret']:
        result['shared_secret'] = b64(shared_secret)


def encapsulate(module, backend, result):
    algorithm = module.params['algorithm']
    if module.params['public_key'] is not None:
        option, public_key = 'public_key', decode_base64(module, 'public_key')
    else:
        option, public_key = 'public_key_src', read_file(module, 'public_key_src')
    guarded(module, option, lambda: backend.check_input(algorithm, 'public_key', public_key))
    result['changed'] = True
    if module.check_mode:
        return
    ciphertext, shared_secret = guarded(module, option, lambda: backend.encapsulate(algorithm, public_key))
    result['ciphertext'] = b64(ciphertext)
    deliver_secret(module, result, shared_secret)


def decapsulate(module, backend, result):
    algorithm = module.params['algorithm']
    private_key = guarded(module, 'private_key_path', lambda: read_private_key(module.params['private_key_path'], algorithm))
    guarded(module, 'private_key_path', lambda: backend.check_input(algorithm, 'private_key', private_key))
    ciphertext = decode_base64(module, 'ciphertext')
    guarded(module, 'ciphertext', lambda: backend.check_input(algorithm, 'ciphertext', ciphertext))
    if module.check_mode:
        result['changed'] = bool(module.params['shared_secret_path'])
        return
    deliver_secret(module, result, guarded(module, 'ciphertext', lambda: backend.decapsulate(algorithm, private_key, ciphertext)))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            operation=dict(type='str', required=True, choices=list(OPERATION_OPTIONS)),
            algorithm=dict(type='str', default='ML-KEM-768', choices=list(KEM_ALGORITHMS)),
            backend=dict(type='str', default='auto', choices=list(BACKENDS)),
            private_key_path=dict(type='path', no_log=False),
            public_key_path=dict(type='path', no_log=False),
            force=dict(type='bool', default=False),
            public_key=dict(type='str', no_log=False),
            public_key_src=dict(type='path', no_log=False),
            ciphertext=dict(type='str', no_log=False),
            shared_secret_path=dict(type='path', no_log=False),
            return_shared_secret=dict(type='bool', default=False, no_log=False),
        ),
        supports_check_mode=True,
        required_if=[
            ('operation', 'keypair', ['private_key_path']),
            ('operation', 'encapsulate', ['public_key', 'public_key_src'], True),
            ('operation', 'decapsulate', ['private_key_path', 'ciphertext']),
        ],
        mutually_exclusive=[('public_key', 'public_key_src')],
    )
    params = module.params
    operation = params['operation']
    for option in sorted(set(itertools.chain(*OPERATION_OPTIONS.values())) - set(OPERATION_OPTIONS[operation])):
        if params[option] not in (None, False):
            module.fail_json(msg='%s does not apply to operation=%s' % (option, operation))
    if operation != 'keypair' and not params['shared_secret_path'] and not params['return_shared_secret']:
        module.fail_json(msg='give shared_secret_path (or return_shared_secret=true): otherwise the shared secret would be lost')

    try:
        backend = select_backend(params['backend'], params['algorithm'])
    except PqcError as exc:
        module.fail_json(msg=exc.message, error_kind=exc.kind, **(dict(exception=exc.exception) if exc.exception else {}))

    result = dict(changed=False, algorithm=params['algorithm'], backend=backend.name)
    try:
        dict(keypair=keypair, encapsulate=encapsulate, decapsulate=decapsulate)[operation](module, backend, result)
    except PqcError as exc:  # a backend failure the operation did not expect: no traceback
        module.fail_json(msg=exc.message, error_kind=exc.kind)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
