# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one connection layer between the collection and key management entities (KMEs).

Modules and lookups name the same connection options (documented once in the
``qsafe.keyfabric.kme_connection`` doc fragment). Each caller wraps its option source in a
``ConnectionOptions`` adapter: a module's ``params``, or a plugin's ``get_option`` (which
already merged direct options, variables, environment and ansible.cfg). ``resolve_connection``
fills what is missing from an endpoints manifest (the simulator's ``endpoints.json`` has this
format) and checks the result; ``open_client`` returns the key-delivery client for the
interface; ``ClientPool`` keeps open clients for callers that key many links (the lookup).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import threading

from ansible_collections.qsafe.keyfabric.plugins.module_utils.key_delivery import KeyDeliveryError
from ansible_collections.qsafe.keyfabric.plugins.module_utils.etsi004_client import Etsi004Client
from ansible_collections.qsafe.keyfabric.plugins.module_utils.etsi014_client import Etsi014Client
from ansible_collections.qsafe.keyfabric.plugins.module_utils.skip_client import AUTH_MODES as SKIP_AUTH_MODES
from ansible_collections.qsafe.keyfabric.plugins.module_utils.skip_client import SkipClient, read_psk

INTERFACES = ('etsi014', 'etsi004', 'skip')
ENDPOINTS_FORMAT = 'qkdsim-endpoints/1'

# name -> (argument spec for modules); defaults live here and in the doc fragment only.
CONNECTION_ARGSPEC = dict(
    interface=dict(type='str', default='etsi014', choices=list(INTERFACES)),
    kme_url=dict(type='str'),
    sae_id=dict(type='str'),
    client_cert=dict(type='path'),
    client_key=dict(type='path', no_log=False),
    ca_cert=dict(type='path'),
    endpoints_file=dict(type='path'),
    timeout=dict(type='float', default=10.0),
    retries=dict(type='int', default=3),
    retry_backoff=dict(type='float', default=0.5),
    skip_auth=dict(type='str', default='psk', choices=list(SKIP_AUTH_MODES)),
    skip_psk_identity=dict(type='str'),
    skip_psk_file=dict(type='path', no_log=False),
    skip_psk=dict(type='str', no_log=True),
)
SKIP_OPTIONS = ('skip_auth', 'skip_psk_identity', 'skip_psk_file', 'skip_psk')


def connection_argument_spec():
    """A fresh copy of the connection options' argument spec, for AnsibleModule."""
    return dict((name, dict(spec)) for name, spec in CONNECTION_ARGSPEC.items())


class ConnectionOptions:
    """Reads connection options from a dict (module params) or a plugin's get_option."""

    def __init__(self, getter):
        self._get = getter

    @classmethod
    def from_dict(cls, options):
        return cls(options.get)

    @classmethod
    def from_plugin(cls, plugin):
        def getter(name):
            try:
                return plugin.get_option(name)
            except KeyError:
                return None
        return cls(getter)

    def get(self, name):
        value = self._get(name)
        if value is None and name in CONNECTION_ARGSPEC:
            return CONNECTION_ARGSPEC[name].get('default')
        return value

    def with_overrides(self, overrides):
        """These options, with the non-None values of ``overrides`` (a dict) taking precedence.

        The lookup uses this for per-site settings (one site's KME URL or certificate) on top
        of the options shared by a whole mesh.
        """
        if not overrides:
            return self
        unknown = sorted(set(overrides) - set(CONNECTION_ARGSPEC))
        if unknown:
            raise KeyDeliveryError('unknown connection option%s %s (known: %s)' % (
                's' if len(unknown) > 1 else '', ', '.join(unknown), ', '.join(sorted(CONNECTION_ARGSPEC))),
                kind='config')

        def getter(name):
            value = overrides.get(name)
            return self._get(name) if value is None else value
        return ConnectionOptions(getter)


def load_endpoints(path):
    """Read an endpoints manifest (qkdsim-endpoints/1). Errors name the file and the problem."""
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except (OSError, IOError) as exc:
        raise KeyDeliveryError('cannot read endpoints_file %s: %s' % (path, exc.strerror or exc), kind='config')
    except ValueError as exc:
        raise KeyDeliveryError('endpoints_file %s is not valid JSON: %s' % (path, exc), kind='config')
    if not isinstance(manifest, dict) or manifest.get('format') != ENDPOINTS_FORMAT:
        raise KeyDeliveryError('endpoints_file %s is not a %s manifest' % (path, ENDPOINTS_FORMAT), kind='config')
    for section in ('kmes', 'saes'):
        if not isinstance(manifest.get(section), dict):
            raise KeyDeliveryError('endpoints_file %s has no "%s" map' % (path, section), kind='config')
    return manifest


def resolve_connection(options, sae_id=None, manifest=None):
    """The complete connection settings for one SAE, as a dict.

    ``sae_id`` overrides the ``sae_id`` option (the lookup resolves many SAEs with one set of
    options). Values given directly win over the endpoints manifest.
    """
    sae_id = sae_id or options.get('sae_id')
    interface = options.get('interface')
    if interface not in INTERFACES:
        raise KeyDeliveryError('interface must be one of %s, got %r' % (', '.join(INTERFACES), interface),
                               kind='config')
    settings = dict(interface=interface, sae_id=sae_id)
    for name in ('kme_url', 'client_cert', 'client_key', 'ca_cert'):
        settings[name] = options.get(name)
    for name in ('timeout', 'retries', 'retry_backoff'):
        settings[name] = options.get(name)
    if interface == 'skip':
        return _resolve_skip(options, settings, manifest)

    endpoints_file = options.get('endpoints_file')
    if endpoints_file and any(settings[name] is None for name in ('kme_url', 'client_cert', 'client_key', 'ca_cert')):
        manifest = manifest or load_endpoints(endpoints_file)
        if not sae_id:
            raise KeyDeliveryError('sae_id is required to find this SAE in endpoints_file %s' % endpoints_file,
                                   kind='config')
        sae = manifest['saes'].get(sae_id)
        if not isinstance(sae, dict):
            raise KeyDeliveryError('SAE %s is not in endpoints_file %s (known: %s)' % (
                sae_id, endpoints_file, ', '.join(sorted(manifest['saes'])) or 'none'), kind='config')
        kme = manifest['kmes'].get(sae.get('kme_id'))
        if not isinstance(kme, dict):
            raise KeyDeliveryError('endpoints_file %s names KME %s for SAE %s but does not list it'
                                   % (endpoints_file, sae.get('kme_id'), sae_id), kind='config')
        url = (kme.get('interfaces') or {}).get(interface, {}).get('url')
        if settings['kme_url'] is None and not url:
            raise KeyDeliveryError('KME %s in endpoints_file %s does not serve interface %s'
                                   % (sae.get('kme_id'), endpoints_file, interface), kind='config')
        fill = dict(kme_url=url, client_cert=sae.get('client_cert'), client_key=sae.get('client_key'),
                    ca_cert=manifest.get('ca_cert'))
        for name, value in fill.items():
            if settings[name] is None:
                settings[name] = value

    missing = [name for name in ('kme_url', 'client_cert', 'client_key', 'ca_cert') if not settings[name]]
    if missing:
        raise KeyDeliveryError('missing connection option%s %s: give %s, or endpoints_file and sae_id' % (
            's' if len(missing) > 1 else '', ', '.join(missing), ' and '.join(missing)), kind='config')
    for name in ('client_cert', 'client_key', 'ca_cert'):
        settings[name] = os.path.expanduser(settings[name])
    return settings


def _resolve_skip(options, settings, manifest=None):
    """resolve_connection for Cisco SKIP: a PSK (identity and key) or mutual TLS; peers' system IDs."""
    for name in SKIP_OPTIONS:
        settings[name] = options.get(name)
    system_ids = {}
    sae_id, endpoints_file = settings['sae_id'], options.get('endpoints_file')
    if endpoints_file:
        manifest = manifest or load_endpoints(endpoints_file)
        sae = manifest['saes'].get(sae_id) if sae_id else None
        if not isinstance(sae, dict):
            raise KeyDeliveryError('SAE %s is not in endpoints_file %s (known: %s)' % (
                sae_id, endpoints_file, ', '.join(sorted(manifest['saes'])) or 'none'), kind='config')
        kmes = manifest['kmes']
        skip = ((kmes.get(sae.get('kme_id')) or {}).get('interfaces') or {}).get('skip') or {}
        if settings['kme_url'] is None and not skip.get('url'):
            raise KeyDeliveryError('KME %s in endpoints_file %s does not serve interface skip'
                                   % (sae.get('kme_id'), endpoints_file), kind='config')
        fill = dict(kme_url=skip.get('url'), client_cert=sae.get('client_cert'), client_key=sae.get('client_key'),
                    ca_cert=manifest.get('ca_cert'), skip_psk_identity=sae.get('skip_psk_identity'),
                    skip_psk_file=sae.get('skip_psk_file'))
        for name, value in fill.items():
            if settings[name] is None:
                settings[name] = value
        for peer, entry in manifest['saes'].items():
            interfaces = (kmes.get(entry.get('kme_id')) or {}).get('interfaces') or {}
            system_ids[peer] = (interfaces.get('skip') or {}).get('system_id') or entry.get('kme_id')
    settings['remote_system_ids'] = tuple(sorted(system_ids.items()))  # hashable: callers key clients by settings
    if settings['skip_psk_identity'] is None:
        settings['skip_psk_identity'] = sae_id
    if settings['skip_auth'] == 'mtls':
        required = ('kme_url', 'client_cert', 'client_key', 'ca_cert')
    else:
        required = ('kme_url', 'skip_psk_identity')
        if not settings['skip_psk'] and not settings['skip_psk_file']:
            required += ('skip_psk_file',)
    missing = [name for name in required if not settings.get(name)]
    if missing:
        raise KeyDeliveryError('missing connection option%s %s for SKIP (skip_auth %s): give %s, or endpoints_file '
                               'and sae_id' % ('s' if len(missing) > 1 else '', ', '.join(missing),
                                               settings['skip_auth'], ' and '.join(missing)), kind='config')
    for name in ('client_cert', 'client_key', 'ca_cert', 'skip_psk_file'):
        if settings.get(name):
            settings[name] = os.path.expanduser(settings[name])
    return settings


def open_client(settings, warn=None):
    """The key-delivery client for resolved ``settings`` (see resolve_connection)."""
    if settings['interface'] == 'skip':
        psk = None
        if settings['skip_auth'] == 'psk':
            psk = read_psk(settings['skip_psk_file'], settings['skip_psk'])
        return SkipClient(settings['kme_url'], auth=settings['skip_auth'], psk_identity=settings['skip_psk_identity'],
                          psk=psk, client_cert=settings['client_cert'], client_key=settings['client_key'],
                          ca_cert=settings['ca_cert'], remote_system_ids=dict(settings['remote_system_ids']),
                          timeout=settings['timeout'], retries=settings['retries'],
                          retry_backoff=settings['retry_backoff'], warn=warn)
    if settings['interface'] == 'etsi014':
        return Etsi014Client(settings['kme_url'], settings['client_cert'], settings['client_key'],
                             settings['ca_cert'], timeout=settings['timeout'], retries=settings['retries'],
                             retry_backoff=settings['retry_backoff'], warn=warn)
    if settings['interface'] == 'etsi004':
        return Etsi004Client(settings['kme_url'], settings['sae_id'], settings['client_cert'], settings['client_key'],
                             settings['ca_cert'], timeout=settings['timeout'], retries=settings['retries'],
                             retry_backoff=settings['retry_backoff'], warn=warn)
    raise KeyDeliveryError('interface %s has no client' % settings['interface'], kind='config')


class ClientPool:
    """Open key-delivery clients, kept by settings, safe to use from several threads.

    A client holds one kept-alive connection and serves one request at a time, so each thread gets
    its own client per settings (the lookup's worker threads key links in parallel); a thread that
    asks again for the same settings gets the same client back, connection still open. ``close()``
    closes them all; the pool can be used as a context manager.
    """

    def __init__(self, warn=None, opener=None):
        self._warn = warn
        self._open = opener or open_client
        self._lock = threading.Lock()
        self._clients = {}
        self._closed = False

    def get(self, settings):
        """The client of this thread for resolved ``settings`` (see resolve_connection), opened on first use."""
        key = (threading.current_thread().ident, tuple(sorted(settings.items())))
        with self._lock:
            if self._closed:
                raise KeyDeliveryError('the KME client pool is closed', kind='internal')
            client = self._clients.get(key)
        if client is None:
            client = self._open(settings, warn=self._warn)  # outside the lock: reads certificate and PSK files
            with self._lock:
                self._clients[key] = client  # only this thread uses this key
        return client

    def __len__(self):
        with self._lock:
            return len(self._clients)

    def close(self):
        """Close every client (their connections); the pool cannot be used afterwards."""
        with self._lock:
            clients, self._clients, self._closed = list(self._clients.values()), {}, True
        for client in clients:
            client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def module_client(module):
    """The key-delivery client for an AnsibleModule's connection options (warnings go to the module)."""
    return open_client(resolve_connection(ConnectionOptions.from_dict(module.params)), warn=module.warn)


def run_key_delivery(module, operation):
    """Run ``operation()`` and turn a KeyDeliveryError into a clean ``fail_json`` (no traceback)."""
    try:
        return operation()
    except KeyDeliveryError as exc:
        module.fail_json(**exc.to_result())
