# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pqc_kem driven through AnsibleModule with patch_module_args: argument errors, and the three
operations on files in a temporary directory."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import stat

import pytest
import yaml

from ansible.module_utils.testing import patch_module_args

from ansible_collections.qsafe.keyfabric.plugins.module_utils import pqc_backends
from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_material import key_check_value
from ansible_collections.qsafe.keyfabric.plugins.modules import pqc_kem


def run_module(capsys, check_mode=False, diff=False, **args):
    if check_mode:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            pqc_kem.main()
    return json.loads(capsys.readouterr().out)


def b64(data):
    return base64.b64encode(data).decode()


PUBLIC_768 = b64(pqc_backends.select_backend('cryptography', 'ML-KEM-768').generate('ML-KEM-768')[0])


@pytest.mark.parametrize('args, problem', [
    (dict(operation='keypair'), 'operation is keypair but all of the following are missing: private_key_path'),
    (dict(operation='encapsulate', shared_secret_path='/tmp/s'),
     'operation is encapsulate but any of the following are missing: public_key, public_key_src'),
    (dict(operation='decapsulate', private_key_path='/tmp/k', shared_secret_path='/tmp/s'),
     'operation is decapsulate but all of the following are missing: ciphertext'),
    (dict(operation='encapsulate', public_key=PUBLIC_768), 'give shared_secret_path (or return_shared_secret=true)'),
    (dict(operation='encapsulate', public_key=PUBLIC_768, public_key_src='/tmp/p', shared_secret_path='/tmp/s'),
     'mutually exclusive: public_key|public_key_src'),
    (dict(operation='keypair', private_key_path='/tmp/k', ciphertext='AAAA'), 'ciphertext does not apply to operation=keypair'),
    (dict(operation='decapsulate', private_key_path='/tmp/k', ciphertext='AAAA', shared_secret_path='/tmp/s', force=True),
     'force does not apply to operation=decapsulate'),
    (dict(operation='encapsulate', public_key='not base64!', shared_secret_path='/tmp/s'), 'public_key is not valid base64'),
    (dict(operation='encapsulate', public_key=b64(b'0123456789'), shared_secret_path='/tmp/s'),
     'public_key: ML-KEM-768 public key must be 1184 bytes, got 10 bytes'),
    (dict(operation='encapsulate', algorithm='X25519', public_key=b64(bytes(32)), return_shared_secret=True),
     'public_key: the X25519 public key is a low-order point'),
    (dict(operation='encapsulate', public_key_src='/nonexistent/peer.pub', shared_secret_path='/tmp/s'),
     'public_key_src: cannot read /nonexistent/peer.pub'),
    (dict(operation='decapsulate', private_key_path='/nonexistent/k', ciphertext='AAAA', shared_secret_path='/tmp/s'),
     'private_key_path: cannot read the ML-KEM-768 private key file /nonexistent/k (No such file or directory)'),
    (dict(operation='keypair', private_key_path='/tmp/k', algorithm='ML-KEM-512', backend='cryptography'),
     'backend cryptography cannot do ML-KEM-512'),
    (dict(operation='keypair', private_key_path='/tmp/k', algorithm='Kyber768'), 'value of algorithm must be one of'),
    (dict(operation='keypair', private_key_path='/nonexistent/dir/k'), 'private_key_path: could not write /nonexistent/dir/k'),
])
def test_bad_arguments_fail_with_a_clear_message(capsys, args, problem):
    result = run_module(capsys, **args)
    assert result['failed'] is True and problem in result['msg'], result['msg']


def test_liboqs_asked_for_and_missing(capsys, monkeypatch):
    monkeypatch.setattr(pqc_backends, '_liboqs', lambda: (None, 'the liboqs shared library was not found'))
    result = run_module(capsys, operation='keypair', private_key_path='/tmp/k', backend='liboqs')
    assert result['failed'] is True and result['error_kind'] == 'missing_backend'
    assert 'backend liboqs is not available: the liboqs shared library was not found' in result['msg']


def test_documented_choices_are_the_backend_lists():
    options = yaml.safe_load(pqc_kem.DOCUMENTATION)['options']
    assert options['algorithm']['choices'] == list(pqc_backends.KEM_ALGORITHMS)
    assert options['backend']['choices'] == list(pqc_backends.BACKENDS)
    assert options['operation']['choices'] == list(pqc_kem.OPERATION_OPTIONS)


def test_keypair_encapsulate_decapsulate(capsys, tmp_path):
    key, pub = str(tmp_path / 'node.key'), str(tmp_path / 'node.pub')
    first = run_module(capsys, operation='keypair', private_key_path=key, public_key_path=pub)
    assert first['changed'] is True and first['backend'] == 'cryptography' and first['algorithm'] == 'ML-KEM-768'
    for path in (key, pub):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(key, 'rb') as handle:
        private_key = handle.read()
    assert len(private_key) == 64 and b64(private_key) not in json.dumps(first)
    again = run_module(capsys, operation='keypair', private_key_path=key, public_key_path=pub)
    assert again['changed'] is False and again['public_key'] == first['public_key']

    sent = run_module(capsys, operation='encapsulate', public_key_src=pub, shared_secret_path=str(tmp_path / 'a.secret'))
    assert sent['changed'] is True and 'shared_secret' not in sent
    received = run_module(capsys, operation='decapsulate', private_key_path=key, ciphertext=sent['ciphertext'],
                          shared_secret_path=str(tmp_path / 'b.secret'), return_shared_secret=True)
    assert received['changed'] is True and received['shared_secret_kcv'] == sent['shared_secret_kcv']
    with open(str(tmp_path / 'a.secret'), 'rb') as handle:
        secret = handle.read()
    assert base64.b64decode(received['shared_secret']) == secret and key_check_value(secret) == sent['shared_secret_kcv']
    assert stat.S_IMODE(os.stat(str(tmp_path / 'b.secret')).st_mode) == 0o600
    repeated = run_module(capsys, operation='decapsulate', private_key_path=key, ciphertext=sent['ciphertext'],
                          shared_secret_path=str(tmp_path / 'b.secret'))
    assert repeated['changed'] is False


def test_check_mode_writes_nothing_and_computes_nothing(capsys, tmp_path):
    key = str(tmp_path / 'node.key')
    planned = run_module(capsys, check_mode=True, diff=True, operation='keypair', private_key_path=key)
    assert planned['changed'] is True and 'public_key' not in planned and not os.listdir(str(tmp_path))
    assert planned['diff']['before']['private_key'] == 'absent' and planned['diff']['after']['public_key_fingerprint'] == '(new key pair)'
    sent = run_module(capsys, check_mode=True, operation='encapsulate', public_key=PUBLIC_768, shared_secret_path=str(tmp_path / 's'))
    assert sent['changed'] is True and 'ciphertext' not in sent and 'shared_secret_kcv' not in sent
    assert not os.listdir(str(tmp_path))


def test_existing_key_of_another_kind_is_kept_unless_forced(capsys, tmp_path):
    key = tmp_path / 'node.key'
    key.write_bytes(b'x' * 32)
    refused = run_module(capsys, operation='keypair', private_key_path=str(key))
    assert refused['failed'] is True and 'is not a private key for ML-KEM-768' in refused['msg'] and 'force=true' in refused['msg']
    assert key.read_bytes() == b'x' * 32
    forced = run_module(capsys, diff=True, operation='keypair', private_key_path=str(key), force=True)
    assert forced['changed'] is True and len(key.read_bytes()) == 64
    assert forced['diff']['before']['public_key_fingerprint'] is None
    assert forced['diff']['after']['public_key_fingerprint'] == forced['public_key_fingerprint']
    assert forced['public_key'] not in json.dumps(forced['diff'])


def test_tampered_ciphertext_yields_another_kcv(capsys, tmp_path):
    key = str(tmp_path / 'node.key')
    public_key = run_module(capsys, operation='keypair', private_key_path=key)['public_key']
    sent = run_module(capsys, operation='encapsulate', public_key=public_key, return_shared_secret=True)
    ciphertext = bytearray(base64.b64decode(sent['ciphertext']))
    ciphertext[100] ^= 0x80
    received = run_module(capsys, operation='decapsulate', private_key_path=key, ciphertext=b64(bytes(ciphertext)),
                          return_shared_secret=True)
    assert received['changed'] is False and received['shared_secret_kcv'] != sent['shared_secret_kcv']
