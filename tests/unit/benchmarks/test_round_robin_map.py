# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The benchmark's round-robin clone chooser (benchmarks/round_robin_map.py), asked by the real postmap."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks"))
import pacing  # noqa: E402  pylint: disable=wrong-import-position
import round_robin_map  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def server():
    """The server on a free loopback port, taking the clones of the 3.5/s design in turn."""
    chooser = round_robin_map.RoundRobin(pacing.clone_names(pacing.design(3.5)))
    instance = round_robin_map.Server(("127.0.0.1", 0), round_robin_map.handler_for(chooser))
    thread = threading.Thread(target=instance.serve_forever, daemon=True)
    thread.start()
    yield "socketmap:inet:127.0.0.1:%d:pace" % instance.server_address[1]
    instance.shutdown()
    instance.server_close()


def test_clone_names_repeat_each_clone_by_its_weight():
    assert pacing.clone_names([1, 1, 1, 2]) == ["smtp1", "smtp1", "smtp2", "smtp2", "smtp3", "smtp3", "smtp4"]


def test_postmap_gets_the_clones_in_turn_over_one_connection(postfix_dir, server):
    keys = ["sender%d@example.test" % number for number in range(10)]
    shown = subprocess.run(
        ["postmap", "-c", postfix_dir, "-q", "-", server],
        input="\n".join(keys) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    answers = [line.split("\t")[1] for line in shown.stdout.splitlines()]
    names = pacing.clone_names([1, 1, 1, 2])
    assert answers == (names * 2)[:10]


def test_settings_take_the_chooser_instead_of_randmap():
    main_cf, _master_cf = pacing.settings([1, 1], chooser="socketmap:inet:127.0.0.1:1:pace")
    assert main_cf["sender_dependent_default_transport_maps"] == "socketmap:inet:127.0.0.1:1:pace"


@pytest.mark.parametrize("data", [b"x:abc,", b"3:abc;", b"12345678901:a,"])
def test_a_request_that_is_not_a_netstring_is_refused(data):
    with pytest.raises(ValueError):
        round_robin_map.read_netstring(io.BytesIO(data))


def test_netstrings_round_trip():
    assert round_robin_map.read_netstring(io.BytesIO(round_robin_map.netstring(b"pace a@b"))) == b"pace a@b"
    assert round_robin_map.read_netstring(io.BytesIO(b"")) is None
