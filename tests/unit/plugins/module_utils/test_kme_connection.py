# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import threading

import pytest

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.kme_connection import (
    ClientPool,
    ConnectionOptions,
    connection_argument_spec,
    load_endpoints,
    open_client,
    resolve_connection,
)


@pytest.fixture
def manifest(tmp_path):
    for name in ('ca.pem', 'a.pem', 'a.key'):
        (tmp_path / name).write_text('placeholder')
    data = {
        'format': 'qkdsim-endpoints/1',
        'ca_cert': str(tmp_path / 'ca.pem'),
        'kmes': {'KME-A': {'kme_id': 'KME-A', 'interfaces': {'etsi014': {'url': 'https://127.0.0.1:1'}}}},
        'saes': {'SAE-A': {'sae_id': 'SAE-A', 'kme_id': 'KME-A', 'client_cert': str(tmp_path / 'a.pem'),
                           'client_key': str(tmp_path / 'a.key')},
                 'SAE-X': {'sae_id': 'SAE-X', 'kme_id': 'KME-GONE', 'client_cert': 'x', 'client_key': 'y'}},
    }
    path = tmp_path / 'endpoints.json'
    path.write_text(json.dumps(data))
    return str(path)


def options(**values):
    return ConnectionOptions.from_dict(values)


def test_manifest_fills_every_connection_setting(manifest):
    settings = resolve_connection(options(endpoints_file=manifest, sae_id='SAE-A'))
    assert settings['kme_url'] == 'https://127.0.0.1:1'
    assert settings['client_cert'].endswith('a.pem') and settings['client_key'].endswith('a.key')
    assert settings['ca_cert'].endswith('ca.pem')
    assert settings['timeout'] == 10.0 and settings['retries'] == 3 and settings['interface'] == 'etsi014'


def test_direct_options_win_over_the_manifest(manifest):
    settings = resolve_connection(options(endpoints_file=manifest, sae_id='SAE-A', kme_url='https://kme.example:8443'))
    assert settings['kme_url'] == 'https://kme.example:8443'


def test_sae_id_argument_overrides_the_option(manifest):
    with pytest.raises(KeyDeliveryError) as err:
        resolve_connection(options(endpoints_file=manifest, sae_id='SAE-A'), sae_id='SAE-NOPE')
    assert 'SAE-NOPE is not in endpoints_file' in str(err.value) and 'SAE-A' in str(err.value)


def test_manifest_naming_an_unlisted_kme_is_reported(manifest):
    with pytest.raises(KeyDeliveryError) as err:
        resolve_connection(options(endpoints_file=manifest, sae_id='SAE-X'))
    assert 'KME-GONE' in str(err.value)


def test_missing_options_are_named():
    with pytest.raises(KeyDeliveryError) as err:
        resolve_connection(options(kme_url='https://kme:1', client_cert='/c.pem'))
    assert err.value.kind == 'config'
    assert 'client_key' in str(err.value) and 'ca_cert' in str(err.value) and 'client_cert,' not in str(err.value)


def test_manifest_without_sae_id_is_refused(manifest):
    with pytest.raises(KeyDeliveryError) as err:
        resolve_connection(options(endpoints_file=manifest))
    assert 'sae_id is required' in str(err.value)


@pytest.mark.parametrize('content, problem', [
    ('not json', 'not valid JSON'),
    ('{"format": "other"}', 'is not a qkdsim-endpoints/1 manifest'),
    ('{"format": "qkdsim-endpoints/1", "kmes": {}}', 'no "saes" map'),
])
def test_bad_manifests_are_named(tmp_path, content, problem):
    path = tmp_path / 'endpoints.json'
    path.write_text(content)
    with pytest.raises(KeyDeliveryError) as err:
        load_endpoints(str(path))
    assert problem in str(err.value) and str(path) in str(err.value)


def test_unreadable_manifest_is_named(tmp_path):
    with pytest.raises(KeyDeliveryError) as err:
        load_endpoints(str(tmp_path / 'missing.json'))
    assert 'cannot read endpoints_file' in str(err.value)


def test_unknown_interface_is_refused():
    with pytest.raises(KeyDeliveryError) as err:
        resolve_connection(options(interface='carrier-pigeon'))
    assert 'interface must be one of' in str(err.value)


def test_client_refuses_missing_certificate_files(tmp_path):
    settings = resolve_connection(options(kme_url='https://kme:1', client_cert=str(tmp_path / 'c.pem'),
                                          client_key=str(tmp_path / 'c.key'), ca_cert=str(tmp_path / 'ca.pem')))
    with pytest.raises(KeyDeliveryError) as err:
        open_client(settings)
    assert 'client_cert' in str(err.value) and 'does not exist' in str(err.value)


def test_plugin_adapter_reads_get_option_and_defaults():
    class Plugin(object):
        def get_option(self, name):
            if name == 'timeout':
                return 2.5
            raise KeyError(name)
    adapter = ConnectionOptions.from_plugin(Plugin())
    assert adapter.get('timeout') == 2.5 and adapter.get('retries') == 3 and adapter.get('kme_url') is None


def test_argument_spec_is_a_fresh_copy():
    spec = connection_argument_spec()
    spec['timeout']['default'] = 99
    assert connection_argument_spec()['timeout']['default'] == 10.0
    assert spec['client_key']['no_log'] is False


def test_overrides_win_and_unknown_overrides_are_named(manifest):
    base = options(endpoints_file=manifest, sae_id='SAE-A', timeout=3.0)
    settings = resolve_connection(base.with_overrides(dict(kme_url='https://other:1', timeout=None)))
    assert settings['kme_url'] == 'https://other:1' and settings['timeout'] == 3.0
    assert base.with_overrides({}) is base
    with pytest.raises(KeyDeliveryError) as err:
        base.with_overrides(dict(kme_uri='https://typo:1'))
    assert 'unknown connection option kme_uri' in str(err.value)


class _FakeClient:
    def __init__(self, settings):
        self.settings, self.closed = settings, False

    def close(self):
        self.closed = True


def _fake_opener(opened):
    def opener(settings, warn=None):
        client = _FakeClient(settings)
        opened.append(client)
        return client
    return opener


def test_client_pool_keeps_one_client_per_thread_and_settings():
    opened = []
    pool = ClientPool(opener=_fake_opener(opened))
    a, b = dict(interface='etsi014', sae_id='SAE-A'), dict(interface='etsi014', sae_id='SAE-B')
    assert pool.get(a) is pool.get(dict(a)) and pool.get(b) is not pool.get(a)
    seen, barrier = [], threading.Barrier(4)

    def worker():
        barrier.wait()   # all four threads alive at once: four distinct thread idents
        seen.append(pool.get(a))
        assert pool.get(a) is seen[-1]
    threads = [threading.Thread(target=worker) for _ignored in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(map(id, seen))) == 4 and pool.get(a) not in seen   # no client is shared between threads
    assert len(pool) == len(opened) == 6
    pool.close()
    assert all(client.closed for client in opened) and len(pool) == 0
    with pytest.raises(KeyDeliveryError):
        pool.get(a)


def test_client_pool_as_a_context_manager_closes_its_clients():
    opened = []
    with ClientPool(opener=_fake_opener(opened)) as pool:
        pool.get(dict(interface='skip', remote_system_ids=(('SAE-B', 'KME-B'),)))
    assert opened and opened[0].closed
