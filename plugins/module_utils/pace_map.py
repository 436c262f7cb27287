# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pacing clones in turn: a socketmap(5) server for sender_dependent_default_transport_maps.

A relay paced at N messages a second delivers through clones of the smtp transport, each paced by
a whole-second rate delay (plugins/plugin_utils/relay_plan/limits.py). randmap: picks a clone at
random per message, and a burst lasts as long as the clone that drew the most (7-25 % above an
even share, measured). This server answers every lookup with the next clone of a list in which
each clone appears as often as its weight, so a burst splits exactly.

Run on the relay host (the role installs it as ``/usr/libexec/smarthost-postfix/pace-map``):

  ``serve --clones FILE [--listen 127.0.0.1:PORT]``
      answer lookups of the map named ``pace`` (``socketmap:inet:127.0.0.1:PORT:pace``) with the
      clones FILE lists, one name a line, re-read when the file changes. Without --listen, on the
      socket systemd passes (smarthost-pace-map.socket): systemd holds it while the server restarts,
      so a lookup then waits instead of failing.

A lookup it cannot answer gets ``TEMP``: Postfix then defers the message instead of bouncing it,
and delivers it once the server answers again.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import socketserver
import threading

MAP_NAME = "pace"
# Postfix's socketmap client sends a key far shorter than this (socketmap_max_reply_size is the
# reply's limit: 100000); anything longer is not Postfix.
MAX_REQUEST = 4096
CLONE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ProtocolError(ValueError):
    """A request that is not a socketmap netstring."""


def read_netstring(stream, limit=MAX_REQUEST):
    """The payload of one netstring (``5:hello,``) from a binary stream, or None at its end."""
    digits = b""
    while True:
        char = stream.read(1)
        if not char:
            if digits:
                raise ProtocolError("the stream ended inside a netstring length")
            return None
        if char == b":":
            break
        if not char.isdigit():
            raise ProtocolError("not a netstring length: %r" % (digits + char))
        digits += char
        if int(digits) > limit:
            raise ProtocolError("a request longer than %d bytes" % limit)
    if not digits:
        raise ProtocolError("a netstring without its length")
    payload = stream.read(int(digits))
    if len(payload) != int(digits) or stream.read(1) != b",":
        raise ProtocolError("a netstring cut short or without its comma")
    return payload


def netstring(payload):
    return b"%d:%s," % (len(payload), payload)


def parse_clones(text):
    """Clone names, one a line, in the order given (blank lines and # comments skipped).

    Raises ValueError for a name Postfix could not have as a master.cf service.
    """
    names = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not CLONE_NAME.match(name):
            raise ValueError("line %d: %r is not a transport name" % (number, name))
        names.append(name)
    return names


class ClonesFile:
    """The clones a file lists, read again whenever its size or modification time changes."""

    def __init__(self, path):
        self.path = path
        self._seen = None
        self._names = []
        self._error = None

    def names(self):
        """(names, error): the current list, or the reason there is none."""
        try:
            info = os.stat(self.path)
        except OSError as error:
            return [], "cannot read %s: %s" % (self.path, error.strerror)
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp != self._seen:
            try:
                with open(self.path, encoding="ascii") as handle:
                    self._names, self._error = parse_clones(handle.read()), None
            except (OSError, UnicodeDecodeError, ValueError) as error:
                self._names, self._error = [], "%s: %s" % (self.path, error)
            self._seen = stamp
        if not self._error and not self._names:
            return [], "%s lists no clone" % self.path
        return self._names, self._error


class Turns:
    """The next clone on each call, across threads; the turn goes on where it was when the list changes."""

    def __init__(self, source):
        self._source = source
        self._lock = threading.Lock()
        self._count = 0

    def answer(self, request):
        """The socketmap reply (bytes, without the netstring) to one request."""
        name, _space, key = request.partition(b" ")
        if name.decode("ascii", "replace") != MAP_NAME:
            return b"PERM this server answers only the map " + MAP_NAME.encode("ascii")
        if not key:
            return b"NOTFOUND "
        with self._lock:
            names, error = self._source.names()
            if error:
                return b"TEMP " + error.encode("ascii", "replace")
            clone = names[self._count % len(names)]
            self._count += 1
        return b"OK " + clone.encode("ascii")


def handler_for(turns):
    class Handler(socketserver.StreamRequestHandler):
        # Postfix keeps its connection and sends one lookup after another.
        def handle(self):
            while True:
                try:
                    request = read_netstring(self.rfile)
                except ProtocolError:
                    return
                if request is None:
                    return
                self.wfile.write(netstring(turns.answer(request)))
                self.wfile.flush()

    return Handler


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class Server6(Server):
    address_family = socket.AF_INET6


def listen_address(text):
    """'127.0.0.1:10027' -> ('127.0.0.1', 10027); loopback only: the clones are no one else's business."""
    host, _colon, port = text.rpartition(":")
    if host not in ("127.0.0.1", "::1", "[::1]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("expected 127.0.0.1:PORT or [::1]:PORT, got %r" % text)
    return host.strip("[]"), int(port)


# sd_listen_fds(3): the first socket systemd passes.
SYSTEMD_FIRST_FD = 3


def systemd_socket(environ):
    """The listening socket systemd passed this process (LISTEN_PID, LISTEN_FDS), or None."""
    if environ.get("LISTEN_PID") != str(os.getpid()) or not environ.get("LISTEN_FDS", "0").isdigit():
        return None
    if int(environ["LISTEN_FDS"]) < 1:
        return None
    return socket.socket(fileno=SYSTEMD_FIRST_FD)


def make_server(handler, listen=None, inherited=None):
    """A server on listen ((host, port)) or on the inherited listening socket."""
    if inherited is None:
        server_class = Server6 if ":" in listen[0] else Server
        return server_class(listen, handler)
    server_class = Server6 if inherited.family == socket.AF_INET6 else Server
    server = server_class(inherited.getsockname()[:2], handler, bind_and_activate=False)
    server.socket.close()
    server.socket = inherited
    return server


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pace-map", description=__doc__.split("\n\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="answer socketmap lookups with the clones in turn")
    serve.add_argument("--listen", type=listen_address, help="default: the socket systemd passes")
    serve.add_argument("--clones", required=True, help="file listing the clones, one name a line")
    args = parser.parse_args(argv)
    inherited = None if args.listen else systemd_socket(os.environ)
    if args.listen is None and inherited is None:
        parser.error("--listen is required unless systemd passes the socket")
    handler = handler_for(Turns(ClonesFile(args.clones)))
    with make_server(handler, args.listen, inherited) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
