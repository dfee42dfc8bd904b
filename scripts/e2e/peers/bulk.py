#!/usr/bin/env python3
"""A bulk TCP peer for the end-to-end tests: one side sends a stream that both sides can
regenerate from a seed, the other receives it and checks it byte for byte.

  bulk.py serve   --bind ADDR --port P --role send|recv --bytes N --seed S [--rate BPS] [--ready FILE]
                  [--connections N] [--hold FILE] [--gate-at BYTES --gate FILE]
  bulk.py connect --host ADDR --port P --role send|recv --bytes N --seed S [--rate BPS]
                  [--gate-at BYTES --gate FILE]

Each side prints one JSON line per connection: its role, the bytes moved, whether the stream was
intact (the receiver compares every byte with the stream it regenerates), and the first offset that
differed. Exit status 0 only when every stream moved intact. `--rate` paces the sender (bytes per
second, in 16 KiB writes) or the reader (reads at most that much per second), so a transfer is slow
at its source rather than through socket buffers. The server takes `--connections` connections
(default 1), each with the same stream, served at once; with `--hold`, each holds its connection
open without moving a byte until FILE exists. A sender with `--gate-at` stops after that many
bytes until `--gate` FILE exists, then sends the rest: a test can act on a transfer that is
provably still running, however fast the path. Every operation is bounded by --timeout seconds.
"""

import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time

CHUNK = 16 * 1024


BLOCK = 64 * 1024


def stream_block(seed, index):
    """Block `index` of the stream: SHAKE-128 of the seed and the index, 64 KiB."""
    return hashlib.shake_128(b"%d:%d" % (seed, index)).digest(BLOCK)


class Stream:
    """The stream of `seed`, read sequentially in pieces of any size."""

    def __init__(self, seed):
        self.seed = seed
        self.offset = 0
        self.buf = b""

    def take(self, n):
        out = bytearray()
        while len(out) < n:
            if not self.buf:
                self.buf = stream_block(self.seed, self.offset // BLOCK)
            k = min(n - len(out), len(self.buf))
            out += self.buf[:k]
            self.buf = self.buf[k:]
            self.offset += k
        return bytes(out)


def pace(start, moved, rate):
    if rate:
        due = start + moved / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def send(sock, total, seed, rate, deadline, gate=None):
    stream = Stream(seed)
    sent = 0
    start = time.monotonic()
    while sent < total:
        if time.monotonic() > deadline:
            raise TimeoutError("send deadline passed")
        if gate and sent >= gate[0]:
            hold(gate[1], deadline)
            gate = None
        limit = total - sent if not gate else min(total, gate[0]) - sent
        data = stream.take(min(CHUNK, limit))
        sock.sendall(data)
        sent += len(data)
        pace(start, sent, rate)
    sock.shutdown(socket.SHUT_WR)
    # Wait for the receiver to close: every byte was taken.
    while sock.recv(CHUNK):
        pass
    return {"bytes": sent, "intact": True, "first_difference": None}


def recv(sock, total, seed, rate, deadline):
    stream = Stream(seed)
    got = 0
    first_difference = None
    start = time.monotonic()
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("receive deadline passed at %d bytes" % got)
        data = sock.recv(CHUNK if not rate else min(CHUNK, max(1, rate // 10)))
        if not data:
            break
        expected = stream.take(len(data))
        if first_difference is None and data != expected:
            first_difference = got + next(i for i, (a, b) in enumerate(zip(data, expected)) if a != b)
        got += len(data)
        pace(start, got, rate)
    sock.close()
    return {"bytes": got, "intact": got == total and first_difference is None,
            "first_difference": first_difference}


def hold(path, deadline):
    """Waits until `path` exists."""
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError("%s did not appear" % path)
        time.sleep(0.05)


def transfer(sock, a, deadline):
    if a.role == "recv":
        return recv(sock, a.bytes, a.seed, a.rate, deadline)
    gate = (a.gate_at, a.gate) if a.gate else None
    return send(sock, a.bytes, a.seed, a.rate, deadline, gate)


def serve_one(sock, a, deadline, results, lock):
    sock.settimeout(a.timeout)
    try:
        if a.hold:
            hold(a.hold, deadline)
        result = transfer(sock, a, deadline)
    except (OSError, TimeoutError) as e:
        result = {"bytes": None, "intact": False, "error": str(e)}
    result["role"] = a.role
    with lock:
        results.append(result)
        print(json.dumps(result), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["serve", "connect"])
    p.add_argument("--bind")
    p.add_argument("--host")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--role", choices=["send", "recv"], required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--rate", type=int, default=0)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--ready", help="file to create once listening (serve)")
    p.add_argument("--connections", type=int, default=1, help="connections to take (serve)")
    p.add_argument("--hold", help="move no byte until this file exists (serve)")
    p.add_argument("--gate-at", type=int, default=0, help="a sender stops after this many bytes...")
    p.add_argument("--gate", help="...until this file exists")
    a = p.parse_args()
    deadline = time.monotonic() + a.timeout
    if a.mode == "serve":
        family = socket.AF_INET6 if ":" in a.bind else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((a.bind, a.port))
        listener.listen(max(1, a.connections))
        listener.settimeout(a.timeout)
        if a.ready:
            open(a.ready, "w").close()
        results, lock, threads = [], threading.Lock(), []
        for _ in range(a.connections):
            try:
                sock, _ = listener.accept()
            except (OSError, TimeoutError) as e:
                with lock:
                    results.append({"bytes": None, "intact": False, "role": a.role,
                                    "error": "accept: %s" % e})
                    print(json.dumps(results[-1]), flush=True)
                break
            t = threading.Thread(target=serve_one, args=(sock, a, deadline, results, lock))
            t.start()
            threads.append(t)
        listener.close()
        for t in threads:
            t.join()
        return 0 if len(results) == a.connections and all(r["intact"] for r in results) else 1
    try:
        sock = socket.create_connection((a.host, a.port), timeout=a.timeout)
    except (OSError, TimeoutError) as e:
        # A refused connection is a result too: the tests tell a RST from a timeout by it.
        print(json.dumps({"bytes": None, "intact": False, "role": a.role,
                          "error": "connect: %s" % e}), flush=True)
        return 1
    sock.settimeout(a.timeout)
    try:
        result = transfer(sock, a, deadline)
    except (OSError, TimeoutError) as e:
        result = {"bytes": None, "intact": False, "error": str(e)}
    result["role"] = a.role
    print(json.dumps(result), flush=True)
    return 0 if result["intact"] else 1


if __name__ == "__main__":
    sys.exit(main())
