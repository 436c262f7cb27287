# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the providers' published refusal texts mean: one table for every tool that classifies them.

A provider's reply means the same whether relay_probe reads it on the wire, Postfix logs it for a
delivery (mail_trace, verify.yml) or postqueue shows it as a delay reason (queue_info), so those three
share these causes and remedies. What only one side can see stays in that side's own vocabulary:
the probe knows exactly where a dialogue broke (smtp_probe.CAUSES), the log knows what Postfix itself
reported (maillog.REMEDIES).

The patterns match the texts as the providers publish them and as Postfix logs them: Postfix joins a
multi-line reply into one line with the codes kept ("550-5.4.5 ... 550 5.4.5 ..."), writes a line
break inside a SASL reply as "?", and pipe(8) logs a command's output lines joined by spaces after
"Command output:" (tests/unit/fixtures/postfix-logs/providers, captured from a real Postfix).
"""

from __future__ import annotations

import re

# Remedies name role variables where the role owns the setting (roles/relay/meta/argument_specs.yml).
REPLY_CAUSES = {
    "too_many_connections": "The relay refused one more simultaneous connection (Exchange Online allows three per "
    "mailbox for SMTP AUTH submission: 432 4.3.2). The mail is deferred and retried. Lower "
    "relay_destination_concurrency_limit (the office365 preset sets 3), and count every "
    "host and device that sends as the same mailbox: together they must stay within the "
    "limit.",
    "throttled_454": "The relay asks this host to slow down (a per-second rate such as Amazon SES's maximum sending "
    'rate, or Gmail\'s 421 4.7.0 "Try again later"). The mail is deferred and retried by itself. '
    "Set relay_max_send_rate to this host's share of the account's rate (the rate divided by the "
    "hosts that share the account), lower relay_destination_concurrency_limit if the provider "
    "limits connections, or raise the rate with the provider.",
    "daily_quota_exceeded": "The account's daily quota is used up (Gmail and Workspace count recipients over a "
    "rolling 24 hours; Amazon SES messages against the 24-hour quota; Exchange Online "
    "10,000 recipients a day). It clears by itself: Postfix defers the mail (the role turns "
    "Gmail's 550 5.4.5 into a deferral with smtp_delivery_status_filter) and it leaves when "
    "the window frees up. Wait, spread the load over the day or over more accounts, or "
    "raise the quota (SES: a sending quota increase for the region).",
    "basic_auth_disabled": "Exchange Online no longer takes a password for SMTP AUTH (Basic authentication for "
    "client submission is disabled for the tenant). Set relay_auth: oauth2 with "
    "relay_oauth2_tenant, relay_oauth2_client_id and relay_oauth2_client_secret "
    "(docs/providers/office365.md). The mail is deferred, not lost, and leaves once the host "
    "logs in with OAuth.",
    "smtp_auth_disabled": "SMTP AUTH client submission is switched off for the tenant or the mailbox, and OAuth "
    "needs it too: in Exchange Online PowerShell, Set-CASMailbox -Identity <mailbox> "
    "-SmtpClientAuthenticationDisabled $false for the mailbox in relay_username.",
    "app_password_required": "Gmail refused the account password because the account uses 2-Step Verification: put "
    "an app password (Google Account, Security, App passwords, where the Workspace admin "
    "allows them) in relay_password, or set relay_auth: oauth2 with "
    "relay_oauth2_client_id, relay_oauth2_client_secret and relay_oauth2_refresh_token.",
    "send_as_denied": "Exchange Online refused the sender: the From address is neither the mailbox that logged in "
    "(relay_username) nor one it may send as. Send from the mailbox's address "
    "(relay_sender_rewrites or relay_sender_rewrite_map map local senders to it) or grant Send As "
    "on that address (Add-RecipientPermission <address> -AccessRights SendAs -Trustee <mailbox>). "
    "The message bounced: send it again afterwards.",
    "ses_sandbox_554": "Amazon SES refused an unverified address (554 Email address is not verified): verify the "
    "sender identity (relay_sender_domain) in this SES region, and while the account is in the "
    "SES sandbox verify recipients too (relay_ses_sandbox_recipients) or request production "
    "access.",
    "sender_identity_not_verified": "SendGrid refused the From address because it is not a verified Sender "
    "Identity: verify the address (Single Sender Verification) or authenticate its "
    "domain in SendGrid, and send from it (relay_sender_domain, "
    "relay_sender_rewrites). The message bounced: send it again afterwards.",
    "message_too_large": "The relay refused the message for its size (Gmail 25 MB, Amazon SES 40 MB, counted after "
    "base64, which adds a third to attachments). relay_message_size_limit (the preset's "
    "provider limit) makes the host refuse such a message when it is submitted, so the sender "
    "learns at once; send large files as links.",
    "oauth2_token_endpoint_unreachable": "The host could not get a token from the OAuth token endpoint "
    "(login.microsoftonline.com, oauth2.googleapis.com or "
    "relay_oauth2_token_url): DNS, a firewall or proxy on outbound HTTPS, no "
    "answer in time, an outage (HTTP 5xx), or a certificate that did not "
    "verify (CA bundle, intercepting proxy). The mail is deferred and leaves "
    "once a token can be fetched.",
    "oauth2_invalid_client": "The token endpoint refused the client credentials (Entra ID AADSTS7000215: not the "
    "secret's value - the secret ID was given, or a typo; AADSTS7000222: the secret "
    "expired; Google invalid_client). Create a new client secret for the app and set "
    "relay_oauth2_client_secret (and check relay_oauth2_client_id).",
    "oauth2_app_not_found": "Entra ID knows no such app in this tenant (AADSTS700016), or no such tenant "
    "(AADSTS90002): relay_oauth2_client_id is not the app's Application (client) ID, "
    "relay_oauth2_tenant names another tenant, or the app has no admin consent there. Copy "
    "both from the app registration's overview page.",
    "oauth2_invalid_grant": "Google refused the refresh token (invalid_grant: expired or revoked): access was "
    "revoked, the account's password changed, the token went unused for six months, or the "
    "OAuth consent screen is in Testing status (its refresh tokens expire after 7 days). "
    "Create a new refresh token for the same client and set relay_oauth2_refresh_token.",
    "oauth2_mailbox_not_permitted": "The SMTP server took the token but refused the login (535 after XOAUTH2). "
    "Exchange Online (535 5.7.3): the app's service principal is not registered in "
    "Exchange Online or has no permission on the mailbox in relay_username - in "
    "Exchange Online PowerShell New-ServicePrincipal -AppId <client id> -ObjectId "
    "<enterprise app object id>, then Add-MailboxPermission -Identity <mailbox> "
    "-User <service principal> -AccessRights FullAccess; the app needs "
    "SMTP.SendAsApp with admin consent (docs/providers/office365.md). Gmail: the "
    "refresh token must be granted https://mail.google.com/ for the account in "
    "relay_username.",
}

# A reply code where a reply starts: the text's start, after "said: ", "to me: " or a joined line.
_CODE = r"(?:^|[\s:(?])"
_OAUTH = r"(?:XOAUTH2|OAUTHBEARER|oauth2)"

# First match wins: the specific texts before the generic rate rule.
REPLY_RULES = (
    (
        "oauth2_token_endpoint_unreachable",
        re.compile(
            r"cannot reach (?:the )?(?:token endpoint|https?://\S+/token)\b|token endpoint (?:is )?unreachable", re.I
        ),
    ),
    ("oauth2_invalid_client", re.compile(r"\bAADSTS7000215\b|\bAADSTS7000222\b|\binvalid_client\b")),
    ("oauth2_app_not_found", re.compile(r"\bAADSTS700016\b|\bAADSTS90002\b")),
    ("oauth2_invalid_grant", re.compile(r"\binvalid_grant\b")),
    (
        "oauth2_mailbox_not_permitted",
        re.compile(r"%s.*%s535[ -?]5\.7\.3\b|%s535[ -?]5\.7\.3\b.*%s" % (_OAUTH, _CODE, _CODE, _OAUTH), re.I),
    ),
    (
        "basic_auth_disabled",
        re.compile(
            r"Basic authentication is not supported for Client Submission|basic authentication is disabled"
            r"|%s550[ -?]5\.7\.30\b" % _CODE,
            re.I,
        ),
    ),
    ("smtp_auth_disabled", re.compile(r"SmtpClientAuthentication is disabled", re.I)),
    ("app_password_required", re.compile(r"Application-specific password required|p=InvalidSecondFactor", re.I)),
    (
        "daily_quota_exceeded",
        re.compile(
            r"Daily user sending (?:limit|quota) exceeded|Daily message quota exceeded"
            r"|reached your daily limit for message recipients",
            re.I,
        ),
    ),
    (
        "too_many_connections",
        re.compile(
            r"concurrent connections? limit exceeded|sender thread limit exceeded"
            r"|maximum number of concurrent connections",
            re.I,
        ),
    ),
    ("send_as_denied", re.compile(r"\bSendAsDenied", re.I)),
    ("ses_sandbox_554", re.compile(r"Email address is not verified", re.I)),
    ("sender_identity_not_verified", re.compile(r"does not match a verified Sender Identity", re.I)),
    (
        "message_too_large",
        re.compile(
            r"%s552[ -?]5\.[23]\.[34]\b|message size exceeds (?:fixed )?(?:maximum |limit)|exceeded Google.s message "
            r"size" % _CODE,
            re.I,
        ),
    ),
    (
        "throttled_454",
        re.compile(
            r"%s4[25]\d[ -?].*(?:throttl|rate\b|too many|exceed|quota|limit)"
            r"|Try again later, closing connection" % _CODE,
            re.I,
        ),
    ),
)

# The on-host OAuth token tool (oauth2_token.py) delivers through pipe(8) and reports a failure as
# "<enhanced status code> smarthost-oauth2 <its cause>: <what happened>"; pipe(8) takes the code as the
# DSN and logs the rest as the reason. Its causes that mean one of the diagnosis's (here or in
# maillog.REMEDIES); the others fall through to the provider's text the line quotes.
TOKEN_TOOL_CAUSES = {
    "token_endpoint_unreachable": "oauth2_token_endpoint_unreachable",
    "token_endpoint_timeout": "oauth2_token_endpoint_unreachable",
    "token_endpoint_error": "oauth2_token_endpoint_unreachable",
    "token_endpoint_certificate_untrusted": "oauth2_token_endpoint_unreachable",
    "invalid_client_secret": "oauth2_invalid_client",
    "client_secret_expired": "oauth2_invalid_client",
    "invalid_client": "oauth2_invalid_client",
    "application_not_found": "oauth2_app_not_found",
    "tenant_not_found": "oauth2_app_not_found",
    "invalid_grant": "oauth2_invalid_grant",
    "xoauth2_rejected": "oauth2_mailbox_not_permitted",
    "basic_auth_disabled": "basic_auth_disabled",
    "sending_quota_exceeded": "daily_quota_exceeded",
    "smtp_certificate_untrusted": "certificate_verify_failed",
    "smtp_tls_failed": "tls_handshake_failed",
    "smtp_dns_failure": "dns_failure",
    "smtp_unreachable": "connection_refused",
    "smtp_timeout": "connection_timeout",
}
_TOOL_LINE = re.compile(r"\bsmarthost-oauth2:? ([a-z][a-z0-9_]*):")
# Any tool in the mail path may name one of these causes itself ("...: oauth2_invalid_grant: ...").
_NAMED_CAUSE = re.compile(r"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+):")


def tool_cause(text):
    """The diagnosis cause the token tool's line names, mapped from the tool's own word, or None."""
    match = _TOOL_LINE.search(text or "")
    return TOKEN_TOOL_CAUSES.get(match.group(1)) if match else None


def classify_reply(text):
    """The cause (a key of REPLY_CAUSES) of a provider's reply or of a text quoting it, or None."""
    text = text or ""
    for named in _NAMED_CAUSE.findall(text):
        if named in REPLY_CAUSES:
            return named
    if tool_cause(text) in REPLY_CAUSES:
        return tool_cause(text)
    for cause, pattern in REPLY_RULES:
        if pattern.search(text):
            return cause
    return None
