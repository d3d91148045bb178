"""qsafe.keyfabric.pqc_kem run by ansible-playbook on localhost: key pair, encapsulation and
decapsulation on real files, idempotence, check mode, and no key byte in -vvvv output."""

import base64
import os
import re
import stat

from cryptography.hazmat.primitives.asymmetric import mlkem

from playbook_support import key_spellings, recap, run_tasks

KEM_TASKS = '''\
- name: Key pair
  qsafe.keyfabric.pqc_kem:
    operation: keypair
    private_key_path: "{{ kem_dir }}/node.key"
    public_key_path: "{{ kem_dir }}/node.pub"
  register: made

- name: Key pair again
  qsafe.keyfabric.pqc_kem:
    operation: keypair
    private_key_path: "{{ kem_dir }}/node.key"
    public_key_path: "{{ kem_dir }}/node.pub"
  register: kept

- name: Encapsulate to the public key
  qsafe.keyfabric.pqc_kem:
    operation: encapsulate
    public_key: "{{ made.public_key }}"
    shared_secret_path: "{{ kem_dir }}/sent.secret"
  register: sent

- name: Decapsulate the ciphertext
  qsafe.keyfabric.pqc_kem:
    operation: decapsulate
    private_key_path: "{{ kem_dir }}/node.key"
    ciphertext: "{{ sent.ciphertext }}"
    shared_secret_path: "{{ kem_dir }}/received.secret"
  register: received

- name: Decapsulate a tampered ciphertext
  qsafe.keyfabric.pqc_kem:
    operation: decapsulate
    private_key_path: "{{ kem_dir }}/node.key"
    ciphertext: "{{ sent.ciphertext[:20] ~ ('B' if sent.ciphertext[20] == 'A' else 'A') ~ sent.ciphertext[21:] }}"
    shared_secret_path: "{{ kem_dir }}/tampered.secret"
  register: tampered

- name: Encapsulate to the public key file, secret also returned (sensitive)
  qsafe.keyfabric.pqc_kem:
    operation: encapsulate
    public_key_src: "{{ kem_dir }}/node.pub"
    shared_secret_path: "{{ kem_dir }}/returned.secret"
    return_shared_secret: true
  register: returned
  no_log: true

- name: Both ends agree, the tampered ciphertext does not
  ansible.builtin.assert:
    that:
      - made is changed
      - kept is not changed
      - kept.public_key == made.public_key
      - received.shared_secret_kcv == sent.shared_secret_kcv
      - tampered.shared_secret_kcv != sent.shared_secret_kcv
      - returned.shared_secret | length == 44

- name: Report the key check values
  ansible.builtin.debug:
    msg: "KCV sent={{ sent.shared_secret_kcv }} received={{ received.shared_secret_kcv }} tampered={{ tampered.shared_secret_kcv }}"
'''


def read(path):
    with open(path, 'rb') as handle:
        return handle.read()


def test_key_pair_encapsulation_decapsulation_and_no_key_byte_in_output(tmp_path):
    kem_dir = tmp_path / 'kem'
    kem_dir.mkdir()
    rc, output = run_tasks(tmp_path, KEM_TASKS, '-vvvv', '--diff', '-e', 'kem_dir=%s' % kem_dir)
    assert rc == 0, output
    assert recap(output)['changed'] == 5, output

    for name in ('node.key', 'sent.secret', 'received.secret', 'tampered.secret', 'returned.secret'):
        assert stat.S_IMODE(os.stat(str(kem_dir / name)).st_mode) == 0o600
    private_key = read(str(kem_dir / 'node.key'))
    secrets = [read(str(kem_dir / name)) for name in ('sent.secret', 'received.secret', 'tampered.secret', 'returned.secret')]
    assert len(private_key) == 64 and secrets[0] == secrets[1] and secrets[2] != secrets[0]

    kcvs = re.search(r'KCV sent=(\w{6}) received=(\w{6}) tampered=(\w{6})', output)
    assert kcvs and kcvs.group(1) == kcvs.group(2) != kcvs.group(3), output
    for secret in [private_key] + secrets:
        for spelling in key_spellings(secret):
            assert spelling not in output, 'key bytes in the playbook output'
    assert 'censored' in output


def test_check_mode_writes_nothing(tmp_path):
    kem_dir = tmp_path / 'kem'
    kem_dir.mkdir()
    existing = mlkem.MLKEM768PrivateKey.generate()
    (kem_dir / 'existing.key').write_bytes(existing.private_bytes_raw())
    public_key = existing.public_key().public_bytes_raw()
    ciphertext = existing.public_key().encapsulate()[1]
    tasks = '''\
        - qsafe.keyfabric.pqc_kem:
            operation: keypair
            private_key_path: "{{ kem_dir }}/new.key"
            public_key_path: "{{ kem_dir }}/new.pub"
          register: planned
        - qsafe.keyfabric.pqc_kem:
            operation: keypair
            private_key_path: "{{ kem_dir }}/existing.key"
          register: kept
        - qsafe.keyfabric.pqc_kem:
            operation: encapsulate
            public_key: "%(public_key)s"
            shared_secret_path: "{{ kem_dir }}/sent.secret"
          register: sent
        - qsafe.keyfabric.pqc_kem:
            operation: decapsulate
            private_key_path: "{{ kem_dir }}/existing.key"
            ciphertext: "%(ciphertext)s"
            shared_secret_path: "{{ kem_dir }}/received.secret"
          register: received
        - ansible.builtin.assert:
            that:
              - planned is changed and planned.public_key is not defined
              - kept is not changed and kept.public_key == "%(public_key)s"
              - sent is changed and sent.ciphertext is not defined and sent.shared_secret_kcv is not defined
              - received is changed and received.shared_secret_kcv is not defined
        ''' % dict(public_key=base64.b64encode(public_key).decode(), ciphertext=base64.b64encode(ciphertext).decode())
    rc, output = run_tasks(tmp_path, tasks, '--check', '--diff', '-e', 'kem_dir=%s' % kem_dir)
    assert rc == 0, output
    assert sorted(os.listdir(str(kem_dir))) == ['existing.key']


def test_bad_public_key_fails_clearly_without_traceback(tmp_path):
    rc, output = run_tasks(tmp_path, '''\
        - qsafe.keyfabric.pqc_kem:
            operation: encapsulate
            public_key: AAAA
            return_shared_secret: true
        ''')
    assert rc != 0 and 'public_key: ML-KEM-768 public key must be 1184 bytes, got 3 bytes' in output, output
    assert 'Traceback' not in output and 'MODULE FAILURE' not in output
