# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qkd_key argument checks, driven through AnsibleModule with patch_module_args."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import QKDKey
from ansible_collections.qsafe.keyfabric.plugins.modules import qkd_key


def run_module(capsys, **args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            qkd_key.main()
    return json.loads(capsys.readouterr().out)


BASE = dict(kme_url='https://127.0.0.1:9', client_cert='/nonexistent/c.pem', client_key='/nonexistent/c.key',
            ca_cert='/nonexistent/ca.pem', peer_sae_id='SAE-B')


@pytest.mark.parametrize('args, problem', [
    (dict(role='slave', dest='/tmp/x.json'), 'role is slave but all of the following are missing: key_ids'),
    (dict(role='master'), 'give dest (or return_keys=true)'),
    (dict(role='master', dest='/tmp/x.json', size=12), 'multiple of 8'),
    (dict(role='master', dest='/tmp/x.json', number=0), 'number must be at least 1'),
    (dict(role='master', dest='/tmp/x.json', key_ids=['a']), 'key_ids applies to role=slave only'),
    (dict(role='slave', dest='/tmp/x.json', key_ids=['a'], number=3), 'apply to role=master only'),
    (dict(role='boss', dest='/tmp/x.json'), 'value of role must be one of'),
])
def test_bad_arguments_fail_with_a_clear_message(capsys, args, problem):
    result = run_module(capsys, **dict(BASE, **args))
    assert result['failed'] is True and problem in result['msg']


def test_missing_certificate_fails_cleanly_without_traceback(capsys, tmp_path):
    result = run_module(capsys, **dict(BASE, role='master', dest=str(tmp_path / 'k.json')))
    assert result['failed'] and 'client_cert /nonexistent/c.pem does not exist' in result['msg']
    assert result['error_kind'] == 'config' and 'Traceback' not in json.dumps(result)


def _params(**overrides):
    params = dict(role='master', peer_sae_id='SAE-B', number=1, size=None, key_ids=None, force=False)
    params.update(overrides)
    return params


KEYS = [QKDKey('k1', b'\x01' * 32)]


@pytest.mark.parametrize('params, metadata, matches', [
    (_params(), dict(role='master', peer_sae_id='SAE-B'), True),
    (_params(size=256), dict(role='master', peer_sae_id='SAE-B'), True),
    (_params(size=512), dict(role='master', peer_sae_id='SAE-B'), False),
    (_params(number=2), dict(role='master', peer_sae_id='SAE-B'), False),
    (_params(force=True), dict(role='master', peer_sae_id='SAE-B'), False),
    (_params(peer_sae_id='SAE-C'), dict(role='master', peer_sae_id='SAE-B'), False),
    (_params(role='slave', key_ids=['k1']), dict(role='slave', peer_sae_id='SAE-B'), True),
    (_params(role='slave', key_ids=['k2']), dict(role='slave', peer_sae_id='SAE-B'), False),
    (_params(role='slave', key_ids=['k1']), dict(role='master', peer_sae_id='SAE-B'), False),
    (_params(), None, False),
])
def test_existing_bundle_is_reused_only_when_it_holds_what_is_asked(params, metadata, matches):
    assert qkd_key.bundle_matches(params, metadata, KEYS if metadata else None) is matches
