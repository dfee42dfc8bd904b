"""Idle TCP connections held open, for `scripts/bench proxy` (memory per idle proxied connection).

    idle_conns.py server PORT MAX_SECONDS
        accept every connection on [::]:PORT (IPv4 too) and hold it open, reading and discarding
        whatever arrives, until MAX_SECONDS have passed or SIGTERM.
    idle_conns.py client HOST PORT N READY_FILE MAX_SECONDS
        open N connections to HOST:PORT one after another (3 s timeout each), write
        "opened=K failed=F seconds=S" to READY_FILE, then hold them idle until MAX_SECONDS have
        passed or SIGTERM.

Both raise their open-file limit to what the hard limit allows. Python standard library only.
"""
import os
import resource
import selectors
import signal
import socket
import sys
import time


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def stop_on_term():
    def handler(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)


def server(port, max_seconds):
    raise_nofile(65536)
    stop_on_term()
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    ls.bind(("::", int(port)))
    ls.listen(4096)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ)
    held = {}
    deadline = time.monotonic() + float(max_seconds)
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            if key.fileobj is ls:
                while True:
                    try:
                        c, _ = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    c.setblocking(False)
                    held[c.fileno()] = c
                    sel.register(c, selectors.EVENT_READ)
            else:
                c = key.fileobj
                try:
                    data = c.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(c)
                    held.pop(c.fileno(), None)
                    c.close()


def client(host, port, n, ready_file, max_seconds):
    n = int(n)
    raise_nofile(n + 1024)
    stop_on_term()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    held, failed, first_error = [], 0, ""
    t0 = time.monotonic()
    deadline = t0 + float(max_seconds)
    for _ in range(n):
        if time.monotonic() >= deadline:
            break
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect((host, int(port)))
            held.append(s)
        except OSError as e:
            failed += 1
            first_error = first_error or str(e)
            s.close()
    took = time.monotonic() - t0
    with open(ready_file + ".tmp", "w") as f:
        f.write("opened=%d failed=%d seconds=%.2f%s\n" % (
            len(held), failed, took, (" first_error=" + first_error.replace(" ", "_")) if first_error else ""))
    os.replace(ready_file + ".tmp", ready_file)
    while time.monotonic() < deadline:
        time.sleep(0.5)


if __name__ == "__main__":
    {"server": server, "client": client}[sys.argv[1]](*sys.argv[2:])
