# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Probe an SMTP relay the way Postfix's smtp client will use it, without sending mail.

The probe connects, does STARTTLS or implicit TLS, verifies the certificate and the
relay's name, reads the AUTH mechanisms, optionally authenticates, and quits. A
failure is reported as one cause with its remedy: from CAUSES for what the dialogue shows, or
from provider_replies.REPLY_CAUSES when the relay's reply is a provider's published text (the same
causes mail_trace and queue_info report for a delivery). A small SMTP client
is used instead of smtplib because classifying a failure needs to know exactly what
came over the wire (nothing, TLS bytes, a plaintext greeting).
"""

from __future__ import annotations

import base64
import datetime
import errno
import ipaddress
import os
import re
import socket
import ssl
import time

from ansible_collections.smarthost.postfix.plugins.module_utils.provider_replies import REPLY_CAUSES, classify_reply
from ansible_collections.smarthost.postfix.plugins.module_utils.rules import scrub

# OS CA bundles, looked for in this order when no ca_file is given.
CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Rocky, Alma, Fedora
    "/etc/ssl/ca-bundle.pem",  # SUSE
    "/etc/ssl/cert.pem",  # BSD, macOS, some minimal images
)

TLS_MODES = ("starttls", "implicit", "auto")
IMPLICIT_TLS_PORT = 465

# The fixed vocabulary of failure causes, each with the remedy shown to the operator.
CAUSES = {
    "dns_failure": "The relay's name does not resolve on this host: check the endpoint's spelling (provider domain, "
    "region) "
    "and the host's resolver configuration.",
    "connection_refused": "The relay host answered but nothing listens on that port (or a firewall rejects it): check "
    "the port "
    "number the provider documents (587, 465, 2525 or 25).",
    "connection_timeout": "Nothing answered the connection attempt: the port is most likely blocked by a firewall or "
    "by the cloud "
    "provider (AWS, Azure and Google Cloud block outbound port 25) - try port 587 or 2525, or open the port.",
    "network_unreachable": "There is no route to the relay from this host (network or host unreachable): check "
    "routing, "
    "IPv6 connectivity and firewall reject rules.",
    "greeting_timeout": "The connection opened but the server sent no SMTP greeting and does not answer TLS either: a "
    "firewall or "
    "proxy holding the port, a tarpit or an overloaded server. Retry with a longer timeout or another port.",
    "wrapper_mode_expected": "The port expects TLS from the first byte (implicit TLS, usually port 465) and stays "
    "silent for an SMTP "
    "client: probe with tls=implicit, and for Postfix use wrapper mode (the role turns it on for "
    "the preset's implicit-TLS ports; otherwise relay_tls_wrappermode: true) - or use port 587 "
    "with STARTTLS.",
    "starttls_expected": "The port speaks plaintext SMTP first (it sent a greeting instead of a TLS handshake): probe "
    "with "
    "tls=starttls and leave wrapper mode off for it (do not force relay_tls_wrappermode: true), or use "
    "the provider's implicit-TLS port (usually 465).",
    "starttls_not_offered": "The server does not offer STARTTLS, so the password would travel in clear text: use the "
    "port the "
    "provider documents for TLS (587 or 465), and check that no middlebox strips STARTTLS.",
    "tls_handshake_failed": "The TLS handshake failed: the server and this host share no protocol version (TLS 1.2 or "
    "newer is "
    "required) or cipher, or a middlebox interferes. Check the port and the OpenSSL version.",
    "certificate_untrusted": "The relay's certificate does not chain to a trusted CA: update the CA bundle "
    "(ca-certificates), point "
    "ca_file (and relay_tls_ca_file) at the right bundle, and check the host clock (an expired or "
    "not-yet-valid certificate usually means clock skew). An unexpected issuer may be an intercepting proxy.",
    "certificate_name_mismatch": "The certificate is valid but not for this name: connect with the provider's "
    "documented host name "
    "(relay_host, not an IP or CNAME), or probe with server_name set to the name on the certificate.",
    "auth_not_offered": "The server offers no AUTH after TLS: this endpoint does not take SMTP credentials (wrong port "
    "or product, "
    "for example an IP-allowlisted relay) or authentication is disabled for the account.",
    "auth_mechanism_unsupported": "The server offers no mechanism the probe and Postfix use with a password (PLAIN, "
    "LOGIN): the "
    "endpoint expects OAuth (relay_auth: oauth2 for Office 365 and Gmail) or is another "
    "product; check the provider's SMTP settings.",
    "credentials_rejected": "The server rejected the username or password (535): check relay_username and "
    "relay_password or "
    "create new SMTP credentials; for Amazon SES use SMTP credentials derived for SMTP, not IAM access "
    "keys, and the endpoint of their region (relay_ses_region).",
    "unexpected_reply": "The server answered outside the expected SMTP dialogue: see message for its reply.",
}

_TLS_RECORD_TYPES = (0x14, 0x15, 0x16, 0x17)  # change_cipher_spec, alert, handshake, application_data
_X509_HOSTNAME_MISMATCH = 62
_X509_IP_ADDRESS_MISMATCH = 64
_NO_ROUTE_ERRNOS = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL)
_MAX_LINE = 4096


def remedy_for(cause):
    """The remedy of a cause the probe reports: its own, or the provider reply's."""
    return CAUSES[cause] if cause in CAUSES else REPLY_CAUSES[cause]


def _refusal(reply, default):
    """The cause of a refusing reply: a provider's published text, or default."""
    return classify_reply(reply) or default


class ProbeFailure(Exception):
    """A classified probe failure: cause is a key of CAUSES or of provider_replies.REPLY_CAUSES."""

    def __init__(self, cause, message):
        super().__init__(message)
        self.cause = cause
        self.message = message


def effective_tls_mode(tls, port):
    """auto means implicit TLS on 465 and STARTTLS everywhere else."""
    if tls == "auto":
        return "implicit" if port == IMPLICIT_TLS_PORT else "starttls"
    return tls


def default_ca_file(candidates=CA_BUNDLES):
    """The first OS CA bundle present on this host, or None."""
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    return None


def tls_context(ca_file, verify):
    """A client context requiring TLS 1.2+ that verifies chain and name unless verify is false."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _unverified_context():
    return tls_context(None, False)


# --- certificates --------------------------------------------------------------------------

_NAME_ATTRIBUTES = {
    "2.5.4.3": "CN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "1.2.840.113549.1.9.1": "emailAddress",
}
_SUBJECT_ALT_NAME = "2.5.29.17"


def _der_children(data, start, end):
    """(tag, value_start, value_end) of each DER element between start and end."""
    children = []
    offset = start
    while offset < end:
        tag = data[offset]
        length = data[offset + 1]
        offset += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[offset : offset + count], "big")
            offset += count
        children.append((tag, offset, offset + length))
        offset += length
    return children


def _der_oid(value):
    first = value[0]
    parts = [str(min(first // 40, 2)), str(first - 40 * min(first // 40, 2))]
    number = 0
    for byte in value[1:]:
        number = (number << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(str(number))
            number = 0
    return ".".join(parts)


def _der_string(tag, value):
    if tag == 0x1E:  # BMPString
        return value.decode("utf-16-be")
    if tag == 0x1C:  # UniversalString
        return value.decode("utf-32-be")
    if tag == 0x14:  # TeletexString, treated as Latin-1 like OpenSSL does
        return value.decode("latin-1")
    return value.decode("utf-8", "replace")


def _der_name(data, start, end):
    parts = []
    for _set_tag, set_start, set_end in _der_children(data, start, end):
        for _seq_tag, seq_start, seq_end in _der_children(data, set_start, set_end):
            (_oid_tag, oid_start, oid_end), (value_tag, value_start, value_end) = _der_children(
                data, seq_start, seq_end
            )[:2]
            oid = _der_oid(data[oid_start:oid_end])
            parts.append(
                "%s=%s" % (_NAME_ATTRIBUTES.get(oid, oid), _der_string(value_tag, data[value_start:value_end]))
            )
    return ", ".join(parts)


def _der_time(tag, value):
    text = value.decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime: two-digit year, 1950-2049
        year = int(text[:2])
        text = str(1900 + year if year >= 50 else 2000 + year) + text[2:]
    return datetime.datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=datetime.timezone.utc)


def _der_subject_alt_names(data, start, end):
    names = []
    for tag, value_start, value_end in _der_children(data, start, end):
        value = data[value_start:value_end]
        if tag == 0x82:
            names.append("DNS:" + value.decode("ascii", "replace"))
        elif tag == 0x87:
            names.append("IP:" + str(ipaddress.ip_address(value)))
        elif tag == 0x81:
            names.append("email:" + value.decode("ascii", "replace"))
    return names


def describe_certificate(der, now=None):
    """Subject, issuer, SANs and validity of a DER certificate, decoded with the standard library only.

    ssl.getpeercert() returns details only for verified certificates; the probe also wants
    to show what an untrusted or wrong-name certificate says, so it decodes the DER itself.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        certificate = _der_children(der, 0, len(der))[0]
        fields = _der_children(der, certificate[1], certificate[2])[0]
        tbs = _der_children(der, fields[1], fields[2])
        if tbs[0][0] == 0xA0:  # explicit version
            tbs = tbs[1:]
        issuer, validity, subject = tbs[2], tbs[3], tbs[4]
        not_before, not_after = [
            _der_time(tag, der[start:end]) for tag, start, end in _der_children(der, validity[1], validity[2])
        ]
        alt_names = []
        for tag, start, end in tbs[5:]:
            if tag != 0xA3:
                continue
            extensions = _der_children(der, start, end)[0]
            for _tag, ext_start, ext_end in _der_children(der, extensions[1], extensions[2]):
                parts = _der_children(der, ext_start, ext_end)
                if _der_oid(der[parts[0][1] : parts[0][2]]) == _SUBJECT_ALT_NAME:
                    octets = parts[-1]
                    names = _der_children(der, octets[1], octets[2])[0]
                    alt_names = _der_subject_alt_names(der, names[1], names[2])
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
    subject_text = _der_name(der, subject[1], subject[2])
    issuer_text = _der_name(der, issuer[1], issuer[2])
    return {
        "subject": subject_text,
        "issuer": issuer_text,
        "self_signed": subject_text == issuer_text,
        "subject_alt_names": alt_names,
        "not_before": not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "days_left": int((not_after - now).total_seconds() // 86400),
    }


# --- the SMTP conversation -----------------------------------------------------------------


class _Connection:
    """One SMTP connection: reads multi-line replies and upgrades to TLS."""

    def __init__(self, sock, timeout):
        self.sock = sock
        self.timeout = timeout
        self.buffer = b""
        sock.settimeout(timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _readline(self, phase):
        while b"\n" not in self.buffer:
            if len(self.buffer) > _MAX_LINE:
                break
            data = self.sock.recv(_MAX_LINE)
            if not data:
                raise ProbeFailure("unexpected_reply", "the server closed the connection %s" % phase)
            if not self.buffer and data[0] in _TLS_RECORD_TYPES and data[1:2] == b"\x03":
                raise ProbeFailure("wrapper_mode_expected", "the server sent TLS records %s instead of SMTP" % phase)
            self.buffer += data
        line, _sep, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def read_reply(self, phase):
        """(code, [text lines]) of one reply; phase says what it answers, for messages."""
        lines = []
        while True:
            line = self._readline(phase)
            if not re.match(r"^[2-5]\d\d([ -]|$)", line):
                raise ProbeFailure("unexpected_reply", "not an SMTP reply %s: %r" % (phase, line[:200]))
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), lines

    def command(self, line, phase):
        self.sock.sendall(line.encode("utf-8") + b"\r\n")
        return self.read_reply(phase)

    def start_tls(self, context, server_name):
        self.buffer = b""  # anything pipelined before the handshake must be discarded (RFC 3207)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_name)
        self.sock.settimeout(self.timeout)


def _reply_text(code, lines):
    return "%d %s" % (code, " / ".join(lines))


def _elapsed_ms(started):
    return round((time.monotonic() - started) * 1000, 1)


def _resolve(host, port):
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ProbeFailure("dns_failure", "cannot resolve %s: %s" % (host, error.strerror or error)) from None
    addresses = []
    for family, _type, _proto, _name, sockaddr in infos:
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    return addresses


def _connect_failure(error, sockaddr):
    where = "%s port %s" % (sockaddr[0], sockaddr[1])
    if isinstance(error, socket.timeout):
        return ProbeFailure("connection_timeout", "connection to %s timed out" % where)
    if isinstance(error, (ConnectionRefusedError, ConnectionResetError)):
        return ProbeFailure("connection_refused", "connection to %s refused" % where)
    if getattr(error, "errno", None) in _NO_ROUTE_ERRNOS:
        return ProbeFailure("network_unreachable", "no route to %s: %s" % (where, error.strerror))
    return ProbeFailure("network_unreachable", "cannot connect to %s: %s" % (where, error))


def _connect(addresses, timeout):
    """Connect to the first address that answers; if none does, fail with the most telling cause."""
    failures = []
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock, sockaddr[0]
        except OSError as error:
            sock.close()
            failures.append(_connect_failure(error, sockaddr))
    # An IPv6 address without a route says less than what happened on the IPv4 one.
    telling = [failure for failure in failures if failure.cause != "network_unreachable"] or failures
    raise ProbeFailure(telling[0].cause, "; ".join(failure.message for failure in failures))


def _handshake(connection, context, server_name, phase):
    try:
        connection.start_tls(context, server_name)
    except ssl.SSLCertVerificationError as error:
        cause = (
            "certificate_name_mismatch"
            if error.verify_code in (_X509_HOSTNAME_MISMATCH, _X509_IP_ADDRESS_MISMATCH)
            else "certificate_untrusted"
        )
        raise ProbeFailure(cause, "certificate verification failed %s: %s" % (phase, error.verify_message)) from None
    except socket.timeout:
        raise ProbeFailure(
            "tls_handshake_failed", "no TLS handshake answer %s within %ss" % (phase, connection.timeout)
        ) from None
    except (ssl.SSLError, OSError) as error:
        raise ProbeFailure(
            "tls_handshake_failed", "TLS handshake failed %s: %s" % (phase, getattr(error, "reason", None) or error)
        ) from None


def _ehlo(connection, helo_name, phase):
    code, lines = connection.command("EHLO " + helo_name, "in reply to EHLO " + phase)
    if code != 250:
        reply = _reply_text(code, lines)
        raise ProbeFailure(_refusal(reply, "unexpected_reply"), "EHLO %s rejected: %s" % (phase, reply))
    capabilities = {}
    for line in lines[1:]:
        words = line.replace("=", " ", 1).split() if line.upper().startswith("AUTH=") else line.split()
        if words:
            capabilities.setdefault(words[0].upper(), []).extend(word.upper() for word in words[1:])
    return capabilities


class _Session:
    """Connect, greet, TLS and EHLO: what every probe and re-check does before AUTH."""

    def __init__(self, host, port, tls_mode, context, server_name, timeout, helo_name, result):
        self.host = host
        self.port = port
        self.tls_mode = tls_mode
        self.context = context
        self.server_name = server_name
        self.timeout = timeout
        self.helo_name = helo_name
        self.result = result
        self.timings = result["timings_ms"]
        self.connection = None
        self.addresses = None

    def open_connection(self):
        if self.addresses is None:
            started = time.monotonic()
            self.addresses = _resolve(self.host, self.port)
            self.timings["dns"] = _elapsed_ms(started)
        started = time.monotonic()
        sock, address = _connect(self.addresses, self.timeout)
        self.timings["connect"] = _elapsed_ms(started)
        self.result["address"] = address
        self.connection = _Connection(sock, self.timeout)
        return self.connection

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def quit(self):
        try:
            self.connection.sock.settimeout(min(self.timeout, 2))
            self.connection.command("QUIT", "to QUIT")
        except (ProbeFailure, OSError):
            pass  # the probe already has what it came for

    def run(self):
        """Up to an authenticated-ready session; returns EHLO capabilities after TLS."""
        connection = self.open_connection()
        started = time.monotonic()
        if self.tls_mode == "implicit":
            try:
                _handshake(connection, self.context, self.server_name, "on connect")
            except ProbeFailure as failure:
                if failure.cause == "tls_handshake_failed" and self._speaks_plaintext():
                    raise ProbeFailure(
                        "starttls_expected",
                        "port %s answered with a plaintext SMTP greeting, not TLS (%s)" % (self.port, failure.message),
                    ) from None
                raise
            self.timings["tls"] = _elapsed_ms(started)
            self._record_tls()
        try:
            code, lines = connection.read_reply("in the greeting")
        except socket.timeout:
            if self.tls_mode == "starttls" and self._answers_tls():
                raise ProbeFailure(
                    "wrapper_mode_expected",
                    "no SMTP greeting within %ss, but port %s completes a TLS handshake "
                    "on connect" % (self.timeout, self.port),
                ) from None
            raise ProbeFailure("greeting_timeout", "no SMTP greeting within %ss" % self.timeout) from None
        self.result["banner"] = _reply_text(code, lines)
        if code != 220:
            raise ProbeFailure(
                _refusal(self.result["banner"], "unexpected_reply"),
                "the server refused the session: %s" % self.result["banner"],
            )
        capabilities = _ehlo(connection, self.helo_name, "before TLS" if self.tls_mode == "starttls" else "after TLS")
        if self.tls_mode == "starttls":
            if "STARTTLS" not in capabilities:
                self.result["capabilities"] = sorted(capabilities)
                raise ProbeFailure(
                    "starttls_not_offered", "EHLO lists no STARTTLS (%s)" % ", ".join(sorted(capabilities))
                )
            started = time.monotonic()
            code, lines = connection.command("STARTTLS", "in reply to STARTTLS")
            if code != 220:
                reply = _reply_text(code, lines)
                raise ProbeFailure(_refusal(reply, "unexpected_reply"), "STARTTLS refused: %s" % reply)
            _handshake(connection, self.context, self.server_name, "after STARTTLS")
            self.timings["tls"] = _elapsed_ms(started)
            self._record_tls()
            capabilities = _ehlo(connection, self.helo_name, "after TLS")
        return capabilities

    def _record_tls(self):
        sock = self.connection.sock
        name, _protocol, bits = sock.cipher()
        self.result["tls"] = {
            "version": sock.version(),
            "cipher": name,
            "bits": bits,
            "verified": self.context.verify_mode == ssl.CERT_REQUIRED,
        }
        self.result["certificate"] = describe_certificate(sock.getpeercert(binary_form=True))

    def _speaks_plaintext(self):
        """After a failed implicit-TLS handshake: does a fresh connection get a 220 greeting?"""
        try:
            connection = _Connection(_connect(self.addresses, self.timeout)[0], self.timeout)
        except ProbeFailure:
            return False
        try:
            return connection.read_reply("in the greeting")[0] == 220
        except (ProbeFailure, OSError):
            return False
        finally:
            connection.close()

    def _answers_tls(self):
        """After a silent greeting: does a fresh connection complete a TLS handshake right away?"""
        try:
            connection = _Connection(_connect(self.addresses, self.timeout)[0], self.timeout)
        except ProbeFailure:
            return False
        try:
            connection.start_tls(_unverified_context(), self.server_name)
            return True
        except (ssl.SSLError, OSError):
            return False
        finally:
            connection.close()


def _auth_mechanisms(capabilities):
    return sorted(set(capabilities.get("AUTH", [])))


def _authenticate(connection, mechanisms, username, password):
    """AUTH PLAIN (preferred) or LOGIN; returns the mechanism used or raises ProbeFailure."""
    if not mechanisms:
        raise ProbeFailure("auth_not_offered", "EHLO after TLS lists no AUTH")
    if "PLAIN" in mechanisms:
        mechanism = "PLAIN"
        token = base64.b64encode(b"\0" + username.encode("utf-8") + b"\0" + password.encode("utf-8")).decode("ascii")
        code, lines = connection.command("AUTH PLAIN " + token, "in reply to AUTH PLAIN")
    elif "LOGIN" in mechanisms:
        mechanism = "LOGIN"
        code, lines = connection.command("AUTH LOGIN", "in reply to AUTH LOGIN")
        for secret in (username, password):
            if code != 334:
                break
            code, lines = connection.command(
                base64.b64encode(secret.encode("utf-8")).decode("ascii"), "in reply to AUTH LOGIN"
            )
    else:
        raise ProbeFailure(
            "auth_mechanism_unsupported", "the server offers AUTH %s, none of PLAIN or LOGIN" % " ".join(mechanisms)
        )
    reply = _reply_text(code, lines)
    if code == 235:
        return mechanism
    message = "AUTH %s rejected: %s" % (mechanism, reply)
    if code in (535, 534):
        raise ProbeFailure(_refusal(message, "credentials_rejected"), message)
    if code == 504:
        raise ProbeFailure(
            _refusal(message, "auth_mechanism_unsupported"), "AUTH %s not accepted: %s" % (mechanism, reply)
        )
    raise ProbeFailure(_refusal(message, "unexpected_reply"), "AUTH %s answered: %s" % (mechanism, reply))


def _xoauth2_response(username, token):
    """The SASL XOAUTH2 initial response (Google's and Microsoft's format), base64-encoded."""
    return base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (username, token)).encode("utf-8")).decode("ascii")


def _authenticate_xoauth2(connection, mechanisms, username, token):
    """AUTH XOAUTH2 with a bearer token; returns the mechanism or raises ProbeFailure.

    Exchange Online answers a refused token with 535 at once; Gmail first sends a 334 challenge
    carrying a base64 JSON error, which the client acknowledges with an empty line to get the 535.
    """
    if not mechanisms:
        raise ProbeFailure("auth_not_offered", "EHLO after TLS lists no AUTH")
    if "XOAUTH2" not in mechanisms:
        raise ProbeFailure(
            "auth_mechanism_unsupported", "the server offers AUTH %s, not XOAUTH2" % " ".join(mechanisms)
        )
    code, lines = connection.command("AUTH XOAUTH2 " + _xoauth2_response(username, token), "in reply to AUTH XOAUTH2")
    challenge = ""
    if code == 334:
        try:
            challenge = " (%s)" % base64.b64decode(lines[0].strip()).decode("utf-8", "replace")
        except (ValueError, IndexError):
            challenge = ""
        code, lines = connection.command("", "in reply to AUTH XOAUTH2")
    if code == 235:
        return "XOAUTH2"
    message = "AUTH XOAUTH2 rejected%s: %s" % (challenge, _reply_text(code, lines))
    raise ProbeFailure(_refusal(message, "credentials_rejected" if code in (535, 534) else "unexpected_reply"), message)


def _bearer_token(oauth2_token):
    """The token to log in with: given, or from a provider (a callable) that may fail with an OAuth cause.

    A provider raises ProbeFailure with one of the oauth2_* causes of provider_replies for an answer of
    the token endpoint, or OSError when the endpoint cannot be reached.
    """
    if not callable(oauth2_token):
        return oauth2_token
    try:
        return oauth2_token()
    except ProbeFailure:
        raise
    except OSError as error:
        raise ProbeFailure("oauth2_token_endpoint_unreachable", "cannot reach the token endpoint: %s" % error) from None


def oauth2_bearer(account):
    """A token provider for probe(): fetches a new token for an OAuth 2.0 account configuration (as the
    relay role writes it for the host's token tool), without touching the host's token cache.

    A failure becomes a ProbeFailure with the diagnosis cause the tool's own cause stands for.
    """
    from ansible_collections.smarthost.postfix.plugins.module_utils import oauth2_token
    from ansible_collections.smarthost.postfix.plugins.module_utils.provider_replies import TOKEN_TOOL_CAUSES

    def fetch():
        try:
            config = oauth2_token.validate_config(dict(account))
            return oauth2_token.request_token(config)["access_token"]
        except oauth2_token.ConfigError as error:
            raise ValueError("oauth2: %s" % error) from None
        except oauth2_token.TokenError as error:
            cause = TOKEN_TOOL_CAUSES.get(error.cause, "oauth2_token_endpoint_unreachable")
            secrets = oauth2_token.secret_values(account)
            raise ProbeFailure(cause, _redact("%s: %s" % (error.cause, error.detail), secrets)) from None

    return fetch


def _redact(text, secrets):
    # Longest first (rules.scrub): the PLAIN token ends with the base64 of the password when the prefix aligns.
    return scrub(text, secrets)


def _secret_forms(username, password, token=None):
    """The password and the token as they could appear in any text the probe builds: raw and base64-encoded."""
    forms = []
    if password:
        encoded = password.encode("utf-8")
        forms.extend([password, base64.b64encode(encoded).decode("ascii")])
        if username is not None:
            forms.append(base64.b64encode(b"\0" + username.encode("utf-8") + b"\0" + encoded).decode("ascii"))
    if token:
        forms.append(token)
        if username is not None:
            forms.append(_xoauth2_response(username, token))
    return forms


def probe(
    host,
    port=587,
    tls="auto",
    username=None,
    password=None,
    ca_file=None,
    verify=True,
    server_name=None,
    timeout=10,
    helo_name=None,
    oauth2_token=None,
):
    """Probe a relay; never sends mail. Returns a dict with ok and, on failure, cause/remedy/message.

    ca_file None means the OS bundle found at run time (or OpenSSL's default paths). With
    oauth2_token (a bearer token, or a callable that fetches one) and username the probe logs in
    with XOAUTH2 instead of the password. Neither the password nor the token appears in the result.
    """
    tls_mode = effective_tls_mode(tls, port)
    helo_name = helo_name or socket.getfqdn()
    server_name = server_name or host
    if ca_file is None and verify:
        ca_file = default_ca_file()
    result = {
        "ok": False,
        "host": host,
        "port": port,
        "tls_mode": tls_mode,
        "server_name": server_name,
        "ca_file": ca_file if verify else None,
        "verify": verify,
        "address": None,
        "banner": None,
        "tls": None,
        "certificate": None,
        "capabilities": [],
        "auth_mechanisms": [],
        "auth_mechanism": None,
        "authenticated": None,
        "timings_ms": {},
        "cause": None,
        "remedy": None,
        "message": None,
    }
    try:
        context = tls_context(ca_file, verify)
    except (OSError, ssl.SSLError) as error:
        raise ValueError("cannot load the CA file %s: %s" % (ca_file, error)) from None
    started = time.monotonic()
    session = _Session(host, port, tls_mode, context, server_name, timeout, helo_name, result)
    token = None
    try:
        if username and oauth2_token is not None:
            token_started = time.monotonic()
            token = _bearer_token(oauth2_token)  # before connecting: without a token there is nothing to try
            result["timings_ms"]["token"] = _elapsed_ms(token_started)
        capabilities = session.run()
        result["capabilities"] = sorted(capabilities)
        result["auth_mechanisms"] = _auth_mechanisms(capabilities)
        if username:
            auth_started = time.monotonic()
            result["authenticated"] = False
            if token is not None:
                result["auth_mechanism"] = _authenticate_xoauth2(
                    session.connection, result["auth_mechanisms"], username, token
                )
            else:
                result["auth_mechanism"] = _authenticate(
                    session.connection, result["auth_mechanisms"], username, password or ""
                )
            result["authenticated"] = True
            result["timings_ms"]["auth"] = _elapsed_ms(auth_started)
        session.quit()
        result["ok"] = True
    except ProbeFailure as failure:
        result["cause"] = failure.cause
        result["remedy"] = remedy_for(failure.cause)
        result["message"] = _redact(failure.message, _secret_forms(username, password, token))
        if failure.cause in ("certificate_untrusted", "certificate_name_mismatch"):
            result["certificate"] = _certificate_despite_failure(host, port, tls_mode, server_name, timeout, helo_name)
    except (OSError, ssl.SSLError) as error:
        result["cause"] = "unexpected_reply"
        result["remedy"] = CAUSES["unexpected_reply"]
        result["message"] = "connection failed during the SMTP dialogue: %s" % error
    finally:
        session.close()
    result["timings_ms"]["total"] = _elapsed_ms(started)
    return result


def _certificate_despite_failure(host, port, tls_mode, server_name, timeout, helo_name):
    """Reconnect without verification to show what the rejected certificate says (who issued it)."""
    scratch = {"timings_ms": {}, "capabilities": []}
    session = _Session(host, port, tls_mode, _unverified_context(), server_name, timeout, helo_name, scratch)
    try:
        session.run()
        session.quit()
    except (ProbeFailure, OSError, ssl.SSLError):
        pass
    finally:
        session.close()
    return scratch.get("certificate")
