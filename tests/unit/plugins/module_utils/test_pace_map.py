# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pacing clones in turn (module_utils/pace_map.py), asked by the real postmap over loopback."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.smarthost.postfix.plugins.module_utils import pace_map

CLONES_3_5 = "smtp_pace1\nsmtp_pace1\nsmtp_pace2\nsmtp_pace2\nsmtp_pace3\nsmtp_pace3\nsmtp_pace4\n"


@pytest.fixture
def clones_file(tmp_path):
    path = tmp_path / "pacing_clones"
    path.write_text(CLONES_3_5, encoding="ascii")
    return path


@pytest.fixture
def server(clones_file):
    """The server in this process on a free loopback port: its socketmap table name."""
    instance = pace_map.Server(
        ("127.0.0.1", 0), pace_map.handler_for(pace_map.Turns(pace_map.ClonesFile(str(clones_file))))
    )
    thread = threading.Thread(target=instance.serve_forever, daemon=True)
    thread.start()
    yield "socketmap:inet:127.0.0.1:%d:pace" % instance.server_address[1]
    instance.shutdown()
    instance.server_close()


def lookup(postfix_dir, table, keys):
    """postmap -q over one connection: {key: answer} in order; absent keys missing."""
    shown = subprocess.run(
        ["postmap", "-c", postfix_dir, "-q", "-", table],
        input="".join(key + "\n" for key in keys),
        capture_output=True,
        text=True,
        check=False,
    )
    return [tuple(line.split("\t", 1)) for line in shown.stdout.splitlines()], shown


def test_postmap_gets_every_clone_by_its_weight_in_turn(postfix_dir, server):
    answers, _shown = lookup(postfix_dir, server, ["s%d@example.test" % number for number in range(14)])
    assert [clone for _key, clone in answers] == CLONES_3_5.split() * 2


def test_a_changed_list_is_read_again_and_the_turn_goes_on(postfix_dir, server, clones_file):
    lookup(postfix_dir, server, ["a@example.test"])
    # A different size is a change even within the file system's timestamp granularity.
    clones_file.write_text("smtp_pace1\nsmtp_pace2\n", encoding="ascii")
    answers, _shown = lookup(postfix_dir, server, ["b@example.test", "c@example.test", "d@example.test"])
    assert [clone for _key, clone in answers] == ["smtp_pace2", "smtp_pace1", "smtp_pace2"]


@pytest.mark.parametrize("content", ["", "# none\n\n", "smtp pace\n", "smtp_pace1;rm\n"])
def test_no_usable_list_defers_instead_of_answering(postfix_dir, server, clones_file, content):
    clones_file.write_text(content, encoding="ascii")
    answers, shown = lookup(postfix_dir, server, ["a@example.test"])
    assert answers == []
    # postmap reports the server's TEMP reply as a lookup error, not as "not found".
    assert shown.returncode != 0
    assert "pacing_clones" in shown.stderr


def test_a_missing_list_defers(postfix_dir, server, clones_file):
    os.unlink(clones_file)
    answers, shown = lookup(postfix_dir, server, ["a@example.test"])
    assert answers == [] and shown.returncode != 0
    assert "cannot read" in shown.stderr


def test_another_map_name_is_refused(postfix_dir, server):
    answers, shown = lookup(postfix_dir, server.rsplit(":", 1)[0] + ":other", ["a@example.test"])
    assert answers == [] and shown.returncode != 0
    assert "only the map pace" in shown.stderr


@pytest.mark.parametrize("data", [b"x:abc,", b"3:abc;", b"3:ab", b":abc,", b"99999:a,", b"12"])
def test_what_is_not_a_netstring_is_refused(data):
    with pytest.raises(pace_map.ProtocolError):
        pace_map.read_netstring(io.BytesIO(data))


def test_netstrings_round_trip():
    assert pace_map.read_netstring(io.BytesIO(pace_map.netstring(b"pace a@b"))) == b"pace a@b"
    assert pace_map.read_netstring(io.BytesIO(b"")) is None


def test_a_garbled_request_closes_only_its_own_connection(server):
    port = int(server.split(":")[3])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as bad:
        bad.sendall(b"garbage")
        assert bad.recv(100) == b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as good:
        good.sendall(pace_map.netstring(b"pace a@example.test"))
        assert good.recv(100) == pace_map.netstring(b"OK smtp_pace1")


@pytest.mark.parametrize("text", ["0.0.0.0:10027", "192.0.2.1:25", "127.0.0.1:0", "127.0.0.1:x", "10027"])
def test_it_listens_on_loopback_only(text):
    with pytest.raises(Exception, match="127.0.0.1:PORT"):
        pace_map.listen_address(text)


def test_the_installed_script_serves(tmp_path, clones_file, postfix_dir):
    """As the role runs it: the file itself, an isolated interpreter, serve on a port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-I",
            pace_map.__file__,
            "serve",
            "--listen",
            "127.0.0.1:%d" % port,
            "--clones",
            str(clones_file),
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the script did not listen"
                time.sleep(0.05)
        answers, _shown = lookup(postfix_dir, "socketmap:inet:127.0.0.1:%d:pace" % port, ["a@b", "c@d"])
        assert [clone for _key, clone in answers] == ["smtp_pace1", "smtp_pace1"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_script_serves_on_the_socket_systemd_passes(clones_file, postfix_dir):
    """As smarthost-pace-map.socket starts it: the listening socket as fd 3, LISTEN_PID its own pid."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    # Connected before the server runs: systemd's socket queues the lookup meanwhile.
    early = socket.create_connection(("127.0.0.1", port), timeout=10)
    process = subprocess.Popen(
        # sh -c: $0 the interpreter, $1 the script, $2 the list; exec keeps the pid LISTEN_PID names.
        ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -I "$1" serve --clones "$2"']
        + [sys.executable, pace_map.__file__, str(clones_file)],
        pass_fds=(3,),
        preexec_fn=lambda: os.dup2(listener.fileno(), 3),
    )
    try:
        early.sendall(pace_map.netstring(b"pace a@b"))
        reply = early.makefile("rb")
        assert pace_map.read_netstring(reply) == b"OK smtp_pace1"
        answers, _shown = lookup(postfix_dir, "socketmap:inet:127.0.0.1:%d:pace" % port, ["c@d", "e@f"])
        assert [clone for _key, clone in answers] == ["smtp_pace1", "smtp_pace2"]
    finally:
        early.close()
        process.terminate()
        process.wait(timeout=10)
        listener.close()


@pytest.mark.parametrize(
    "environ",
    [{}, {"LISTEN_PID": "1", "LISTEN_FDS": "1"}, {"LISTEN_PID": "self", "LISTEN_FDS": "0"}],
)
def test_no_socket_is_taken_that_systemd_did_not_pass_to_this_process(environ):
    environ = {key: str(os.getpid()) if value == "self" else value for key, value in environ.items()}
    assert pace_map.systemd_socket(environ) is None


def test_without_a_socket_it_asks_for_listen(clones_file, capsys):
    with pytest.raises(SystemExit):
        pace_map.main(["serve", "--clones", str(clones_file)])
    assert "--listen is required" in capsys.readouterr().err
