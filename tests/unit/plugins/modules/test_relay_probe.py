# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""relay_probe as Ansible runs it: options, check mode, failing or not, secrets kept out."""

from __future__ import annotations

import json

import pytest

from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils import smtp_servers as servers
from ansible_collections.smarthost.postfix.tests.unit.plugins.module_utils.smtp_servers import (
    PASSWORD,
    RELAY_NAME,
    USERNAME,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return servers.make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def relays(pki):
    """A STARTTLS relay and an implicit-TLS relay, both with the test CA's certificate."""
    started = {}
    for tls in ("starttls", "implicit"):
        handler = servers.RelayHandler()
        controller, port = servers.start_smtp(
            handler, tls, servers.server_context(pki["server_cert"], pki["server_key"])
        )
        started[tls] = (controller, handler, port)
    yield dict((tls, (handler, port)) for tls, (_controller, handler, port) in started.items())
    for controller, _handler, _port in started.values():
        controller.stop()


def args(port, pki, **options):
    base = dict(
        host="127.0.0.1",
        port=port,
        tls="starttls",
        ca_file=pki["ca"],
        server_name=RELAY_NAME,
        timeout=3,
        helo_name="probe.test",
    )
    base.update(options)
    return base


def test_good_relay_reports_tls_and_mechanisms(run_module, relays, pki):
    handler, port = relays["starttls"]
    result = run_module("relay_probe", args(port, pki, username=USERNAME, password=PASSWORD))
    assert result.get("failed") is not True, result
    assert result["ok"] is True and result["changed"] is False
    assert result["authenticated"] is True
    assert result["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert result["certificate"]["issuer"] == "CN=Smarthost Test CA"
    assert "PLAIN" in result["auth_mechanisms"]
    assert handler.messages == []
    assert PASSWORD not in json.dumps(result)


def test_implicit_tls_option(run_module, relays, pki):
    _handler, port = relays["implicit"]
    result = run_module("relay_probe", args(port, pki, tls="implicit", username=USERNAME, password=PASSWORD))
    assert result["ok"] is True and result["tls_mode"] == "implicit"


def test_failure_fails_the_task_with_cause_and_remedy(run_module, relays, pki):
    _handler, port = relays["starttls"]
    result = run_module("relay_probe", args(port, pki, username=USERNAME, password="not-" + PASSWORD))
    assert result["failed"] is True
    assert result["ok"] is False and result["cause"] == "credentials_rejected"
    assert "credentials_rejected" in result["msg"] and "IAM" in result["msg"]
    assert PASSWORD not in json.dumps(result)


def test_fail_on_error_false_returns_the_cause(run_module, relays, pki):
    _handler, port = relays["implicit"]
    result = run_module("relay_probe", args(port, pki, tls="starttls", timeout=1, fail_on_error=False))
    assert result.get("failed") is not True
    assert result["ok"] is False and result["cause"] == "wrapper_mode_expected"


def test_runs_in_check_mode(run_module, relays, pki):
    _handler, port = relays["starttls"]
    result = run_module("relay_probe", args(port, pki), check_mode=True)
    assert result["ok"] is True and result["changed"] is False


def test_server_name_defaults_to_host(run_module, relays, pki):
    _handler, port = relays["starttls"]
    result = run_module("relay_probe", args(port, pki, host="localhost", server_name=None, fail_on_error=False))
    assert result["server_name"] == "localhost"
    assert result["ok"] is True  # DNS:localhost is on the certificate


def test_unreadable_ca_file_fails_clearly(run_module, relays, tmp_path):
    _handler, port = relays["starttls"]
    result = run_module("relay_probe", dict(host="127.0.0.1", port=port, ca_file=str(tmp_path / "nope.pem")))
    assert result["failed"] is True
    assert "cannot load the CA file" in result["msg"]
