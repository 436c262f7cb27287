# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A throwaway Postfix instance on this machine for queue_info and mail_trace tests.

Its own config, queue and data directories under a temporary directory, no inet listener,
logging to its own file (maillog_file), relaying per recipient domain to test SMTP servers
on 127.0.0.1 over verified TLS with SASL. It never reads or writes /etc/postfix. Needs root
(the master runs as root) and the Postfix daemons; tests skip otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils import maillog
from ansible_collections.smarthost.postfix.plugins.module_utils.postfix import find_binary

# The daemons a relay-only instance needs; chroot off so nothing must be copied into the spool.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def require_postfix_root():
    if os.geteuid() != 0:
        pytest.skip("a throwaway Postfix instance needs root")
    if find_binary("postfix") is None or find_binary("sendmail") is None:
        pytest.skip("needs the Postfix binaries")


class PostfixInstance:
    """routes maps a recipient domain to a 127.0.0.1 port; every route uses TLS (secure) and SASL."""

    def __init__(self, routes, ca_file, username, password):
        # Not under pytest's 0700 tmp tree: the postfix user must be able to reach its directories.
        self.root = tempfile.mkdtemp(prefix="smarthost-postfix-test-")
        os.chmod(self.root, 0o755)
        self.config_dir = os.path.join(self.root, "etc")
        self.log_path = os.path.join(self.root, "postfix.log")
        self.routes = routes
        self.ca_file = ca_file
        self.username = username
        self.password = password

    def _postfix(self, *args, check=True):
        return subprocess.run(
            [find_binary("postfix"), "-c", self.config_dir] + list(args), capture_output=True, text=True, check=check
        )

    def start(self):
        for name in ("etc", "spool", "data"):
            os.makedirs(os.path.join(self.root, name), exist_ok=True)
        shutil.chown(os.path.join(self.root, "data"), user="postfix")
        transport, sasl, policy = [], [], []
        for domain, port in sorted(self.routes.items()):
            nexthop = "[127.0.0.1]:%d" % port
            transport.append("%s smtp:%s" % (domain, nexthop))
            sasl.append("%s %s:%s" % (nexthop, self.username, self.password))
            policy.append("%s secure match=relay.test" % nexthop)
        files = {
            "transport": transport,
            "sasl_passwd": sasl,
            "tls_policy": policy,
            "main.cf": [
                "compatibility_level = 3.6",
                "queue_directory = %s/spool" % self.root,
                "data_directory = %s/data" % self.root,
                "myhostname = trace-test.example.net",
                "mydestination =",
                "inet_interfaces = loopback-only",
                "inet_protocols = ipv4",
                "maillog_file = %s" % self.log_path,
                "maillog_file_prefixes = %s" % self.root,
                "transport_maps = texthash:%s/transport" % self.config_dir,
                "smtp_sasl_auth_enable = yes",
                "smtp_sasl_password_maps = texthash:%s/sasl_passwd" % self.config_dir,
                "smtp_sasl_security_options = noanonymous",
                "smtp_sasl_tls_security_options = noanonymous",
                "smtp_tls_policy_maps = texthash:%s/tls_policy" % self.config_dir,
                "smtp_tls_CAfile = %s" % self.ca_file,
                "smtp_tls_loglevel = 1",
                "smtp_connect_timeout = 3s",
                # Undeliverable bounces to the test sender must not hang around trying DNS.
                "bounce_notice_recipient = postmaster",
                "notify_classes =",
            ],
            "master.cf": [MASTER_CF],
        }
        for name, lines in files.items():
            with open(os.path.join(self.config_dir, name), "w") as handle:
                handle.write("\n".join(lines) + "\n")
        os.chmod(os.path.join(self.config_dir, "sasl_passwd"), 0o600)
        self._postfix("start")
        deadline = time.monotonic() + 20
        while self._postfix("status", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("throwaway Postfix did not start; see %s" % self.log_path)
            time.sleep(0.2)
        return self

    def stop(self, remove=True):
        self._postfix("stop", check=False)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def wait_for_attempt(self, message_id, timeout=30):
        """Block until the message's first delivery attempt is logged; returns the trace result."""
        source = maillog.LogSource("file", path=self.log_path)
        return maillog.trace(source, message_id=message_id, timeout=timeout, poll_interval=0.2)

    def send(self, recipient, message_id, sender="sender@example.net"):
        message = "From: %s\nTo: %s\nSubject: trace test\nMessage-ID: <%s>\n\nbody\n" % (sender, recipient, message_id)
        subprocess.run(
            [find_binary("sendmail"), "-C", self.config_dir, "-i", "-f", sender, recipient],
            input=message,
            text=True,
            check=True,
        )
