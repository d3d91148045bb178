# -*- coding: utf-8 -*-
# Copyright: qsafe.keyfabric contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Connection options shared by every module and plugin that talks to a KME.
    DOCUMENTATION = r'''
options:
  interface:
    description:
      - The key-delivery interface the KME speaks.
      - C(etsi014) is ETSI GS QKD 014 v1.1.1 (REST over HTTPS with mutual TLS).
      - C(etsi004) is ETSI GS QKD 004 v2.1.1 (OPEN_CONNECT, GET_KEY, CLOSE) in the JSON dialect over
        TLS with mutual certificates, or in the binary framing; I(kme_url) is C(tls://<host>:<port>) for the
        JSON dialect or C(tls+binary://<host>:<port>) for the binary framing, and I(sae_id) is required
        (it names this SAE in OPEN_CONNECT). A key's ID is the key_ID the KMEs gave it; the slave opens
        a stream with that ID as key_stream_ID and reads index 0, so an C(etsi004) end and an
        C(etsi014) end share keys.
      - C(skip) is Cisco SKIP (Secure Key Integration Protocol) - GET C(/key) and C(/key/{keyId}) over
        TLS 1.2 with a pre-shared key (I(skip_psk_identity) and I(skip_psk_file) or I(skip_psk)), as IOS-XE
        routers use it, or over mutual TLS (I(skip_auth=mtls)); I(kme_url) is C(https://<host>:<port>).
        SKIP names systems (KMEs) rather than SAEs; with I(endpoints_file) a peer SAE is mapped to the
        system ID of its KME; without it, give the peer's system ID where a peer SAE ID is asked for.
        SKIP reports no key counts (C(stored_key_count) is -1). Key IDs are hex; an ETSI 014 key_ID (a
        UUID) is asked for without its dashes, so a C(skip) end and an C(etsi014) end share keys.
      - In a mesh each site may use its own interface (C(qsafe_site_key_interface)); the two ends of a
        link need not use the same one.
    type: str
    default: etsi014
    choices: [etsi014, etsi004, skip]
  sae_id:
    description:
      - The ID of the secure application entity (SAE) this connection acts as.
      - With I(endpoints_file), selects which SAE's KME, certificate and key to use.
      - The KME identifies the caller by its client certificate, so this must match the
        certificate's subject.
    type: str
  kme_url:
    description:
      - Base URL of the KME, for example C(https://kme-a.example.net:8443). The ETSI 014
        path C(/api/v1/keys/) is appended by the client. For C(etsi004), C(tls://<host>:<port>).
      - Taken from I(endpoints_file) when not given.
    type: str
  client_cert:
    description:
      - Path to the SAE's client certificate (PEM) for mutual TLS.
      - Taken from I(endpoints_file) when not given.
    type: path
  client_key:
    description:
      - Path to the private key (PEM) of I(client_cert). Only the path is passed around;
        the key itself never leaves the file.
      - Taken from I(endpoints_file) when not given.
    type: path
  ca_cert:
    description:
      - Path to the CA certificate (PEM) that the KME's server certificate must chain to.
        Environment variables such as C(REQUESTS_CA_BUNDLE) are ignored on purpose.
      - Taken from I(endpoints_file) when not given.
    type: path
  skip_auth:
    description:
      - How a C(skip) connection authenticates. C(psk) is TLS 1.2 with the PSK cipher suites IOS-XE uses
        (PSK and DHE-PSK with AES-256 and SHA-384); C(mtls) is mutual TLS with I(client_cert),
        I(client_key) and I(ca_cert).
      - Only for I(interface=skip).
    type: str
    default: psk
    choices: [psk, mtls]
  skip_psk_identity:
    description:
      - The TLS-PSK identity of this SAE at its SKIP KME. Defaults to I(sae_id); taken from
        I(endpoints_file) when not given.
      - Only for I(interface=skip) with I(skip_auth=psk).
    type: str
  skip_psk_file:
    description:
      - Path to a file that holds the TLS-PSK as hex (at least 16 bytes). Only the path is passed around;
        keep the file mode 0600. Taken from I(endpoints_file) when not given.
      - Only for I(interface=skip) with I(skip_auth=psk).
    type: path
  skip_psk:
    description:
      - The TLS-PSK itself, as hex. A secret (never logged); prefer I(skip_psk_file).
      - Only for I(interface=skip) with I(skip_auth=psk); takes precedence over I(skip_psk_file).
    type: str
  endpoints_file:
    description:
      - Path to an endpoints manifest (format C(qkdsim-endpoints/1)), as written by the
        simulated QKD network (C(python -m qkdsim)) into its state directory. It supplies
        I(kme_url), I(client_cert), I(client_key) and I(ca_cert) for I(sae_id).
      - Options given directly take precedence over the manifest.
    type: path
  timeout:
    description:
      - The most seconds one request to the KME may take in all - connecting, the TLS
        handshake, sending the request and receiving the whole answer. A KME that sends its
        answer slowly (even one byte at a time) fails the request after I(timeout) seconds.
      - Each attempt (see I(retries)) has its own I(timeout). For I(interface=etsi004) a
        C(GET_KEY) may also take the QoS C(timeout) the KME granted for the stream.
    type: float
    default: 10.0
  retries:
    description:
      - How many times a failed request is retried, with exponential backoff (see
        I(retry_backoff)) and a warning per retry.
      - Only requests that cannot have consumed key material are retried (connection not
        made, or the KME answered 503). A key request whose answer was lost is never
        repeated, so no key is ever consumed twice; the task fails and says so.
      - A request takes at most (I(retries) + 1) x I(timeout) plus the retry sleeps
        (see I(retry_backoff)).
    type: int
    default: 3
  retry_backoff:
    description:
      - Delay before the first retry, in seconds; it doubles for each further retry, up to
        at most 30 seconds per sleep.
      - So the sleeps of one request add up to at most I(retries) x 30 seconds (with the
        defaults 0.5 + 1 + 2 = 3.5 seconds; with I(retries=20), 451.5 seconds).
    type: float
    default: 0.5
requirements:
  - requests (on the host that talks to the KME)
  - sslpsk3 (for I(interface=skip) with I(skip_auth=psk); Python 3.11's ssl has no TLS-PSK callbacks)
'''

    # Where plugins (the hybrid_key lookup) also read these options from.
    PLUGINS = r'''
options:
  interface:
    env:
      - name: QSAFE_INTERFACE
    ini:
      - section: qsafe_keyfabric
        key: interface
    vars:
      - name: qsafe_interface
  sae_id:
    env:
      - name: QSAFE_SAE_ID
    ini:
      - section: qsafe_keyfabric
        key: sae_id
    vars:
      - name: qsafe_sae_id
  kme_url:
    env:
      - name: QSAFE_KME_URL
    ini:
      - section: qsafe_keyfabric
        key: kme_url
    vars:
      - name: qsafe_kme_url
  client_cert:
    env:
      - name: QSAFE_CLIENT_CERT
    ini:
      - section: qsafe_keyfabric
        key: client_cert
    vars:
      - name: qsafe_client_cert
  client_key:
    env:
      - name: QSAFE_CLIENT_KEY
    ini:
      - section: qsafe_keyfabric
        key: client_key
    vars:
      - name: qsafe_client_key
  ca_cert:
    env:
      - name: QSAFE_CA_CERT
    ini:
      - section: qsafe_keyfabric
        key: ca_cert
    vars:
      - name: qsafe_ca_cert
  endpoints_file:
    env:
      - name: QSAFE_ENDPOINTS_FILE
    ini:
      - section: qsafe_keyfabric
        key: endpoints_file
    vars:
      - name: qsafe_endpoints_file
  timeout:
    env:
      - name: QSAFE_TIMEOUT
    ini:
      - section: qsafe_keyfabric
        key: timeout
    vars:
      - name: qsafe_timeout
  retries:
    env:
      - name: QSAFE_RETRIES
    ini:
      - section: qsafe_keyfabric
        key: retries
    vars:
      - name: qsafe_retries
  retry_backoff:
    env:
      - name: QSAFE_RETRY_BACKOFF
    ini:
      - section: qsafe_keyfabric
        key: retry_backoff
    vars:
      - name: qsafe_retry_backoff
  skip_auth:
    env:
      - name: QSAFE_SKIP_AUTH
    ini:
      - section: qsafe_keyfabric
        key: skip_auth
    vars:
      - name: qsafe_skip_auth
  skip_psk_identity:
    env:
      - name: QSAFE_SKIP_PSK_IDENTITY
    vars:
      - name: qsafe_skip_psk_identity
  skip_psk_file:
    env:
      - name: QSAFE_SKIP_PSK_FILE
    vars:
      - name: qsafe_skip_psk_file
  skip_psk:
    env:
      - name: QSAFE_SKIP_PSK
    vars:
      - name: qsafe_skip_psk
'''
