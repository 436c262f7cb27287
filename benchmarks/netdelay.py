# Copyright (c) smarthost.postfix maintainers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A TCP proxy that delays every byte by a fixed one-way time in each direction (issue 15, part 2).

This kernel has no netem, so the benchmark puts this between the relay and the emulator:

    python3 netdelay.py --upstream HOST --ports 587,465 --delay-ms 10     # 20 ms round trip

Each chunk read from one side is written to the other `delay` later, in the order read (one FIFO
per direction, no reordering, no bandwidth limit). A new connection reaches the upstream only
3 x delay after the client connected, so the server's greeting arrives 4 x delay (two round trips)
after the client's connect() began, as the TCP handshake and the greeting do over a real network
(SYN, SYN-ACK, ACK, greeting).

Threads and time.sleep rather than asyncio: asyncio's timers round every wait up to whole
milliseconds, twice (selectors and epoll each take the ceiling), which made a 10 ms wait last
10-11 ms; nanosleep is within about 0.2 ms here. Standard library only.
"""

import argparse
import collections
import socket
import sys
import threading
import time

CHUNK = 65536


class Direction:
    """Chunks read from `source`, written to `sink` once their time has come."""

    def __init__(self, source, sink, delay, label=None):
        self.source, self.sink, self.delay, self.label = source, sink, delay, label
        self.chunks = collections.deque()
        self.ready = threading.Condition()

    def read(self):
        try:
            while True:
                data = self.source.recv(CHUNK)
                self._put(data)
                if not data:
                    return
        except OSError:
            self._put(b"")

    def _put(self, data):
        now = time.monotonic()
        if self.label:
            print("%.4f %s %d" % (now, self.label, len(data)), file=sys.stderr, flush=True)
        with self.ready:
            self.chunks.append((now + self.delay, data))
            self.ready.notify()

    def write(self):
        try:
            while True:
                with self.ready:
                    while not self.chunks:
                        self.ready.wait()
                    due, data = self.chunks.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    self.sink.shutdown(socket.SHUT_WR)
                    return
                self.sink.sendall(data)
        except OSError:
            return


def start(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def serve(client, upstream, port, delay, label):
    nodelay(client)
    server = None
    try:
        # SYN, SYN-ACK and ACK cross the network before the server sees the connection; what the
        # client sends meanwhile waits in its own direction's queue.
        time.sleep(3 * delay)
        server = socket.create_connection((upstream, port))
        nodelay(server)
        to_server = Direction(client, server, delay, label and label + " >")
        to_client = Direction(server, client, delay, label and label + " <")
        threads = [start(to_server.read), start(to_server.write), start(to_client.read), start(to_client.write)]
        for thread in threads:
            thread.join()
    except OSError as error:
        print("netdelay: %s:%d: %s" % (upstream, port, error), file=sys.stderr, flush=True)
    finally:
        for sock in (client, server):
            if sock is not None:
                sock.close()


def accept(listener, port, upstream, delay, trace):
    number = 0
    while True:
        client, _address = listener.accept()
        number += 1
        start(serve, client, upstream, port, delay, "c%d:%d" % (number, port) if trace else None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="host to forward to (the same port)")
    parser.add_argument("--ports", required=True, help="comma-separated ports to listen on")
    parser.add_argument("--listen", default="0.0.0.0", help="address to listen on (default: all)")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay in milliseconds")
    parser.add_argument("--trace", action="store_true", help="log the time and size of every chunk (stderr)")
    args = parser.parse_args(argv)
    delay = args.delay_ms / 1000.0
    ports = [int(port) for port in args.ports.split(",") if port]
    listeners = [socket.create_server((args.listen, port), backlog=512) for port in ports]
    threads = [
        start(accept, listener, port, args.upstream, delay, args.trace) for listener, port in zip(listeners, ports)
    ]
    print("netdelay: listening on %s, %.1f ms each way to %s" % (args.ports, args.delay_ms, args.upstream), flush=True)
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
