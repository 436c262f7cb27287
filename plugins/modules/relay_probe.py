#!/usr/bin/python
# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: relay_probe
short_description: Check that an SMTP relay will accept this host before Postfix is switched to it
version_added: 0.1.0
author: "smarthost.postfix maintainers (@smarthost)"
description:
  - Connects from the managed host to an SMTP relay (smarthost) the way Postfix's C(smtp) client will, without
    sending mail - connect, STARTTLS or implicit TLS, certificate verification against the host's CA bundle and
    the relay's name, EHLO, the AUTH mechanisms offered and, when O(username) is given, authentication with
    C(AUTH PLAIN) (or C(AUTH LOGIN) when PLAIN is not offered), then C(QUIT).
  - On failure the result names one cause from a fixed vocabulary (see RV(cause)) with a remedy sentence, so a
    playbook can refuse to switch a host to a relay that cannot work from it.
  - Uses the Python standard library only. Sends no mail and changes nothing, so it also runs in check mode.
options:
  host:
    description: Name or address of the relay, for example C(email-smtp.eu-west-1.amazonaws.com).
    type: str
    required: true
  port:
    description: TCP port of the relay.
    type: int
    default: 587
  tls:
    description:
      - V(starttls) reads the plaintext greeting and upgrades with STARTTLS (ports 587, 2525, 25).
      - V(implicit) starts TLS right after connecting (wrapper mode, Postfix C(smtp_tls_wrappermode = yes)).
      - V(auto) means V(implicit) on port 465 and V(starttls) on every other port.
    type: str
    choices: [starttls, implicit, auto]
    default: auto
  username:
    description:
      - SMTP username. When set, the probe authenticates; without it, it only reports the mechanisms offered.
    type: str
  password:
    description: SMTP password for O(username). Never returned or logged.
    type: str
  oauth2:
    description:
      - Log in with SASL XOAUTH2 as O(username) instead of a password; the probe fetches a new access token
        from the account's token endpoint first (without touching the host's token cache) and classifies a
        refusal of the endpoint (C(oauth2_invalid_client), C(oauth2_app_not_found), C(oauth2_invalid_grant),
        C(oauth2_token_endpoint_unreachable)) or of the relay (C(oauth2_mailbox_not_permitted)).
      - The account configuration as the relay role writes it for the token tool, with the keys
        C(provider) (V(microsoft) with C(tenant), or V(google) with C(refresh_token)), C(client_id),
        C(client_secret) and C(username); secret as a whole.
    type: dict
  ca_file:
    description:
      - PEM bundle of CA certificates to verify the relay's certificate against.
      - Default is the OS bundle found at run time - C(/etc/ssl/certs/ca-certificates.crt) on Debian and Ubuntu,
        C(/etc/pki/tls/certs/ca-bundle.crt) on the RHEL family - or OpenSSL's default paths when none exists.
        Pass the same file as Postfix's C(smtp_tls_CAfile) to test what Postfix will trust.
    type: path
  verify:
    description:
      - Verify the certificate chain and name. V(false) only reports what the certificate says; a relay that passes
        this way is still open to an intercepting proxy.
    type: bool
    default: true
  server_name:
    description:
      - Name the certificate must carry and the TLS SNI name. Defaults to O(host); set it when O(host) is an address
        or an alias that is not on the certificate.
    type: str
  timeout:
    description:
      - Seconds to wait for the connection and for each reply.
      - A server that stays silent is probed once more to tell implicit TLS from a tarpit, so that case takes up to
        twice as long.
    type: int
    default: 10
  helo_name:
    description: Name sent with EHLO. Defaults to the host's fully qualified name.
    type: str
  fail_on_error:
    description:
      - Fail the task when the probe does not succeed. With V(false) the task succeeds and the playbook decides
        from RV(ok) and RV(cause).
    type: bool
    default: true
notes:
  - Supports C(check_mode) fully - the probe is read-only and runs in check mode too.
  - The probe requires TLS 1.2 or newer, like a Postfix configured with C(smtp_tls_mandatory_protocols = >=TLSv1.2).
  - Port 25 is blocked for outbound traffic by most cloud providers; a V(connection_timeout) there usually means that.
attributes:
  check_mode:
    support: full
    description: The module never changes anything and runs in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  platform:
    support: N/A
    description: Any POSIX host with Python, Postfix or not; runs on the managed host.
    platforms: posix
seealso:
  - module: smarthost.postfix.mail_trace
  - name: RFC 3207 (SMTP STARTTLS)
    description: The upgrade the probe performs in V(starttls) mode.
    link: https://www.rfc-editor.org/rfc/rfc3207
  - name: RFC 8314 (implicit TLS for submission)
    description: Port 465 and wrapper mode.
    link: https://www.rfc-editor.org/rfc/rfc8314
"""

EXAMPLES = r"""
- name: Refuse to switch to a relay that does not work from this host
  smarthost.postfix.relay_probe:
    host: email-smtp.eu-west-1.amazonaws.com
    port: 587
    username: "{{ relay_username }}"
    password: "{{ relay_password }}"

- name: Probe the implicit-TLS port and verify against the file Postfix uses
  smarthost.postfix.relay_probe:
    host: smtp.example.net
    port: 465
    ca_file: /etc/ssl/certs/ca-certificates.crt

- name: Record the result instead of failing
  smarthost.postfix.relay_probe:
    host: smtp.sendgrid.net
    port: 2525
    fail_on_error: false
  register: probe

- name: Show why it failed
  ansible.builtin.debug:
    msg: "{{ probe.cause }}: {{ probe.remedy }}"
  when: not probe.ok
"""

RETURN = r"""
ok:
  description: Whether every step succeeded (including authentication when O(username) was given).
  returned: always
  type: bool
  sample: true
cause:
  description:
    - Why the probe failed, one of a fixed vocabulary; V(null) on success.
    - V(dns_failure) - the name does not resolve.
    - V(connection_refused) - nothing listens on the port (or a firewall rejects).
    - V(connection_timeout) - no answer to the connection attempt; a blocked port (cloud providers block 25).
    - V(network_unreachable) - no route to the relay.
    - V(greeting_timeout) - connected, but no SMTP greeting and no TLS either.
    - V(wrapper_mode_expected) - STARTTLS mode on a port that expects TLS first (465); it is silent or sends TLS.
    - V(starttls_expected) - implicit-TLS mode on a port that speaks plaintext SMTP first (587, 25, 2525).
    - V(starttls_not_offered) - EHLO lists no STARTTLS.
    - V(tls_handshake_failed) - TLS failed for another reason (protocol version, cipher, middlebox).
    - V(certificate_untrusted) - the chain does not verify against the CA file (also expired or not yet valid).
    - V(certificate_name_mismatch) - the certificate is not valid for RV(server_name).
    - V(auth_not_offered) - credentials given, but EHLO after TLS lists no AUTH.
    - V(auth_mechanism_unsupported) - neither PLAIN nor LOGIN is offered.
    - V(credentials_rejected) - the server answered 535 (or 534) to AUTH.
    - V(unexpected_reply) - any other reply or a broken dialogue; see RV(message).
    - When the refusal is a provider's published text, the cause is the one M(smarthost.postfix.mail_trace) reports
      for a delivery refused the same way. In a probe these can appear - V(basic_auth_disabled) (Exchange Online
      550 5.7.30 or 535 5.7.139, set relay_auth oauth2), V(smtp_auth_disabled), V(app_password_required) (Gmail
      534-5.7.9), V(too_many_connections) (Exchange Online 432 4.3.2, at the greeting, EHLO or AUTH) and
      V(throttled_454) (Gmail 421 4.7.0 to EHLO).
  returned: always
  type: str
  sample: credentials_rejected
remedy:
  description: What to do about RV(cause); V(null) on success.
  returned: always
  type: str
  sample: "The server rejected the username or password (535): regenerate the SMTP credentials; ..."
message:
  description: What happened in detail, including the server's reply; V(null) on success. Never contains the password.
  returned: always
  type: str
  sample: "AUTH PLAIN rejected: 535 Authentication Credentials Invalid"
host:
  description: The relay probed.
  returned: always
  type: str
  sample: email-smtp.eu-west-1.amazonaws.com
port:
  description: The port probed.
  returned: always
  type: int
  sample: 587
tls_mode:
  description: The TLS mode used after resolving V(auto).
  returned: always
  type: str
  sample: starttls
server_name:
  description: The name the certificate was verified against.
  returned: always
  type: str
  sample: email-smtp.eu-west-1.amazonaws.com
ca_file:
  description: The CA bundle used for verification; V(null) when O(verify=false) or OpenSSL's default paths were used.
  returned: always
  type: str
  sample: /etc/ssl/certs/ca-certificates.crt
verify:
  description: Whether the certificate was verified.
  returned: always
  type: bool
  sample: true
address:
  description: The IP address the probe connected to.
  returned: always
  type: str
  sample: 198.51.100.25
banner:
  description: The server's greeting.
  returned: always
  type: str
  sample: "220 email-smtp.amazonaws.com ESMTP SimpleEmailService-d-ABC123"
tls:
  description: The negotiated TLS session; V(null) when TLS was not established.
  returned: always
  type: dict
  contains:
    version:
      description: Protocol version.
      type: str
      sample: TLSv1.3
    cipher:
      description: Cipher suite.
      type: str
      sample: TLS_AES_256_GCM_SHA384
    bits:
      description: Secret bits of the cipher.
      type: int
      sample: 256
    verified:
      description: Whether chain and name were verified.
      type: bool
      sample: true
certificate:
  description:
    - What the relay's certificate says. Also returned when verification failed, so the issuer of an unexpected
      certificate (an intercepting proxy) is visible.
  returned: when a certificate was received
  type: dict
  contains:
    subject:
      description: Subject distinguished name.
      type: str
      sample: CN=email-smtp.eu-west-1.amazonaws.com
    issuer:
      description: Issuer distinguished name.
      type: str
      sample: "C=US, O=Amazon, CN=Amazon RSA 2048 M02"
    self_signed:
      description: Whether subject and issuer are the same.
      type: bool
      sample: false
    subject_alt_names:
      description: Subject alternative names as C(DNS:name) or C(IP:address).
      type: list
      elements: str
      sample: ["DNS:email-smtp.eu-west-1.amazonaws.com"]
    not_before:
      description: Start of validity, UTC, ISO 8601.
      type: str
      sample: "2026-01-01T00:00:00Z"
    not_after:
      description: End of validity, UTC, ISO 8601.
      type: str
      sample: "2027-01-31T23:59:59Z"
    days_left:
      description: Whole days until RV(certificate.not_after); negative when expired.
      type: int
      sample: 70
capabilities:
  description: EHLO keywords offered (after TLS when TLS was established).
  returned: always
  type: list
  elements: str
  sample: [8BITMIME, AUTH, PIPELINING, SIZE]
auth_mechanisms:
  description: SASL mechanisms offered after TLS.
  returned: always
  type: list
  elements: str
  sample: [LOGIN, PLAIN]
auth_mechanism:
  description: The mechanism used to authenticate; V(null) when no authentication was attempted.
  returned: always
  type: str
  sample: PLAIN
authenticated:
  description: V(true) after a successful login, V(false) after a failed one, V(null) without O(username).
  returned: always
  type: bool
  sample: true
timings_ms:
  description:
    - Milliseconds per phase reached - C(dns), C(connect), C(tls) (STARTTLS and handshake), C(auth) - and C(total).
  returned: always
  type: dict
  sample: {dns: 1.2, connect: 12.5, tls: 48.1, auth: 30.2, total: 121.7}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.smarthost.postfix.plugins.module_utils.smtp_probe import TLS_MODES, oauth2_bearer, probe


def main():
    module = AnsibleModule(
        argument_spec=dict(
            host=dict(type="str", required=True),
            port=dict(type="int", default=587),
            tls=dict(type="str", choices=list(TLS_MODES), default="auto"),
            username=dict(type="str"),
            password=dict(type="str", no_log=True),
            oauth2=dict(type="dict", no_log=True),
            ca_file=dict(type="path"),
            verify=dict(type="bool", default=True),
            server_name=dict(type="str"),
            timeout=dict(type="int", default=10),
            helo_name=dict(type="str"),
            fail_on_error=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("password", "oauth2")],
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = probe(
            params["host"],
            port=params["port"],
            tls=params["tls"],
            username=params["username"],
            password=params["password"],
            ca_file=params["ca_file"],
            verify=params["verify"],
            server_name=params["server_name"],
            timeout=params["timeout"],
            helo_name=params["helo_name"],
            oauth2_token=oauth2_bearer(params["oauth2"]) if params["oauth2"] else None,
        )
    except ValueError as error:
        module.fail_json(msg=str(error))
    if not result["ok"] and params["fail_on_error"]:
        summary = "relay %s port %s: %s - %s (%s)" % (
            result["host"],
            result["port"],
            result["cause"],
            result["message"],
            result["remedy"],
        )
        module.fail_json(msg=summary, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
