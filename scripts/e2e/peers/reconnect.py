#!/usr/bin/env python3
"""Reconnections from one client port, the server closing first, for the end-to-end tests.

  reconnect.py serve   --bind ADDR --port P --count N --bytes B [--ready FILE]
  reconnect.py connect --host ADDR --port P --sport S --count N --bytes B

The client connects N times in a row from source port S, each time sends its connection's number
and reads the answer to the end; the server answers with B bytes that depend on that number and
closes first, so each of its connections ends in TIME-WAIT and the next SYN from port S meets it
there (RFC 6191: a SYN whose timestamp is newer than the last one seen is taken at once).

The client prints one JSON line: connections made, answers intact, the slowest connection and
the number that took a second or more (a SYN sent again). Exit status 0 only when every answer
was intact. A connect refused because the previous connection on port S is not yet closed is
tried again, within --timeout seconds per connection.
"""

import argparse
import errno
import hashlib
import json
import socket
import sys
import time


def answer(number, size):
    """The server's answer to connection `number`: SHAKE-128 of the number, `size` bytes."""
    return hashlib.shake_128(b"reconnect:%d" % number).digest(size)


def serve(args):
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.bind, args.port))
    listener.listen(16)
    listener.settimeout(args.timeout)
    if args.ready:
        with open(args.ready, "w") as ready:
            ready.write("ready\n")
    for _ in range(args.count):
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(args.timeout)
            request = b""
            while not request.endswith(b"\n"):
                chunk = conn.recv(64)
                if not chunk:
                    break
                request += chunk
            if not request.endswith(b"\n"):
                continue
            conn.sendall(answer(int(request), args.bytes))
        # Closed with nothing unread: a FIN, sent before the client's.
    return 0


def connect_once(args, number):
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    deadline = time.monotonic() + args.timeout
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.settimeout(args.timeout)
        try:
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", args.sport))
            sock.connect((args.host, args.port))
            break
        except OSError as err:
            sock.close()
            # The previous connection on the port has not finished closing yet.
            busy = err.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.001)
    with sock:
        sock.sendall(b"%d\n" % number)
        got = bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    return bytes(got) == answer(number, args.bytes)


def connect(args):
    intact = 0
    slowest = 0.0
    slow = 0
    errors = []
    started = time.monotonic()
    for number in range(args.count):
        t0 = time.monotonic()
        try:
            intact += connect_once(args, number)
        except OSError as err:
            errors.append("connection %d: %s" % (number, err))
            break
        took = time.monotonic() - t0
        slowest = max(slowest, took)
        slow += took >= 1.0
    report = {
        "connections": args.count,
        "intact": intact,
        "slowest_ms": round(slowest * 1000, 1),
        "over_1s": slow,
        "total_ms": round((time.monotonic() - started) * 1000),
        "errors": errors,
    }
    print(json.dumps(report), flush=True)
    return 0 if intact == args.count else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--bind", required=True)
    s.add_argument("--ready")
    c = sub.add_parser("connect")
    c.add_argument("--host", required=True)
    c.add_argument("--sport", type=int, required=True)
    for p in (s, c):
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--bytes", type=int, required=True)
        p.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    return serve(args) if args.mode == "serve" else connect(args)


if __name__ == "__main__":
    sys.exit(main())
