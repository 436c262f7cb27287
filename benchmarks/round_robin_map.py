# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A socketmap(5) server that answers every lookup with the next pacing clone in turn (issue 15, part 1).

The benchmark's comparison for randmap's random split: the same clones, chosen in turn.
It runs on the paced host (python3 is there for Ansible), listening on loopback:

    python3 round_robin_map.py PORT smtp1,smtp2,smtp1,smtp3

and main.cf points `sender_dependent_default_transport_maps` at
`socketmap:inet:127.0.0.1:PORT:pace`. The list repeats a clone as often as its weight (its speed),
so a turn through it gives every clone its share exactly. Every lookup takes a turn, so smtpd's
recipient checks get a trivial-rewrite service of their own without this map
(pacing.smtpd_rewrite_apart()); otherwise they take every other turn. Not shipped: the role would
need a daemon in the mail path (a lookup that fails defers every message).
"""

from __future__ import annotations

import itertools
import socketserver
import sys
import threading


def read_netstring(stream):
    """One netstring's payload (`5:hello,`), or None at the end of the stream."""
    digits = b""
    while True:
        char = stream.read(1)
        if not char:
            return None
        if char == b":":
            break
        if not char.isdigit() or len(digits) > 9:
            raise ValueError("not a netstring length: %r" % (digits + char))
        digits += char
    payload = stream.read(int(digits))
    if stream.read(1) != b",":
        raise ValueError("netstring without its comma")
    return payload


def netstring(payload):
    return b"%d:%s," % (len(payload), payload)


class RoundRobin:
    """The next name of a fixed list on each call, safe across the server's threads."""

    def __init__(self, names):
        self._names = itertools.cycle(names)
        self._lock = threading.Lock()

    def next(self):
        with self._lock:
            return next(self._names)


def handler_for(chooser):
    class Handler(socketserver.StreamRequestHandler):
        # Postfix keeps the connection open and asks one lookup after another.
        def handle(self):
            while read_netstring(self.rfile) is not None:
                self.wfile.write(netstring(b"OK " + chooser.next().encode("ascii")))
                self.wfile.flush()

    return Handler


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: round_robin_map.py PORT CLONE[,CLONE...]")
    names = [name for name in argv[2].split(",") if name]
    with Server(("127.0.0.1", int(argv[1])), handler_for(RoundRobin(names))) as server:
        server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
