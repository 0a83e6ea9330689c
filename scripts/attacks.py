#!/usr/bin/env python3
"""Runs the resource attacks of docs/reliability.md against a chat-demo
binary and prints the server's RSS and open descriptors under each, and
whether a well-behaved user in another room still gets its echo.

    python3 scripts/attacks.py target/release/chat-demo [history|idle|upgrades|idle_sockets|busy_sockets]...

Standard library only; every attack runs against a fresh server on
127.0.0.1 with a temporary data dir, started with a soft file limit of
1,024 (the common default). The numbers are a snapshot a few seconds
into each attack, from /proc/<pid>/status (VmRSS) and /proc/<pid>/fd.
"""

import base64
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time


def start(binary, data_dir, trust_xff, extra=()):
    args = [binary, "--listen", "127.0.0.1:0", "--data-dir", data_dir, *extra]
    if trust_xff:
        args += ["--trust-client-ip-header", "x-forwarded-for"]

    def limit_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "error"},
        preexec_fn=limit_files,
    )
    line = proc.stdout.readline().decode()
    addr = line.strip().rsplit("http://", 1)[1]
    host, port = addr.rsplit(":", 1)
    return proc, (host, int(port))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def ws_connect(addr, path, xff=None, source="127.0.0.1", key=True, timeout=10):
    s = socket.create_connection(addr, timeout=timeout, source_address=(source, 0))
    headers = [
        f"GET {path} HTTP/1.1",
        f"Host: {addr[0]}:{addr[1]}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ]
    if key:
        headers.append("Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode())
    if xff:
        headers.append(f"X-Forwarded-For: {xff}")
    s.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    status = int(head.split(b" ", 2)[1])
    if status != 101:
        raise ConnectionError(f"status {status}")
    return s


def send_text(s, text):
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(header + mask + masked)


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def recv_frame(s):
    b1, b2 = recv_exact(s, 2)
    n = b2 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", recv_exact(s, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", recv_exact(s, 8))
    return b1 & 0x0F, recv_exact(s, n)


def recv_json_until(s, done):
    while True:
        op, payload = recv_frame(s)
        if op == 8:
            raise ConnectionError("closed by the server")
        if op == 1:
            frame = json.loads(payload)
            if done(frame):
                return frame


def join_a(addr, room, name, xff=None, ext=(), source="127.0.0.1"):
    s = ws_connect(addr, f"/api/room/{room}/websocket", xff=xff, source=source)
    send_text(s, json.dumps({"name": name, "ext": list(ext)}))
    recv_json_until(s, lambda f: f.get("ready") is True)
    return s


def calm_user(addr, xff=None, source="127.0.0.2"):
    """A user in another room joins, says something and waits for its echo."""
    try:
        s = join_a(addr, "calm", "calm", xff=xff, source=source)
        send_text(s, json.dumps({"message": "still here"}))
        recv_json_until(s, lambda f: f.get("message") == "still here")
        s.close()
        return "echo"
    except (OSError, ConnectionError) as e:
        return f"no echo ({e})"


def fill_heavy_room(addr):
    """Room "big": 100 messages of 256 x U+0001 (1.5 KB of JSON each),
    each from its own IP."""
    heavy = "\u0001" * 256
    for i in range(100):
        s = join_a(addr, "big", "f", xff=f"10.1.{i}.1")
        send_text(s, json.dumps({"message": heavy}))
        recv_json_until(s, lambda f: "timestamp" in f)
        s.close()


def attack_history(binary):
    """100 messages of 256 x U+0001; one client asks for 1,000 pages of
    100 and never reads."""
    with tempfile.TemporaryDirectory() as d:
        proc, addr = start(binary, d, trust_xff=True)
        try:
            fill_heavy_room(addr)
            base = rss_kb(proc.pid)
            eve = join_a(addr, "big", "eve", xff="10.2.0.1", ext=["history"])
            request = json.dumps({"history": {"before": 2**53, "limit": 100}})
            eve.settimeout(0.5)
            sent = 0
            try:
                for _ in range(1000):
                    send_text(eve, request)
                    sent += 1
            except OSError:
                pass
            calm = calm_user(addr, xff="10.3.0.1")
            # The replies take a while to pile up: the peak of 20 s.
            under = 0
            for _ in range(20):
                time.sleep(1)
                under = max(under, rss_kb(proc.pid))
            print(f"history: RSS {base} kB before, peak {under} kB in 20 s of attack "
                  f"({sent} requests sent), {rss_kb(proc.pid)} kB at the end; "
                  f"calm user during it: {calm}")
            eve.close()
        finally:
            proc.terminate()
            proc.wait()


def attack_idle(binary):
    """1,100 TCP connections from one IP that never send a byte."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    with tempfile.TemporaryDirectory() as d:
        proc, addr = start(binary, d, trust_xff=False)
        try:
            base_rss, base_fds = rss_kb(proc.pid), fds(proc.pid)
            held = []
            for _ in range(1100):
                try:
                    held.append(socket.create_connection(addr, timeout=5))
                except OSError:
                    break
            time.sleep(2)
            # How many of ours the server still holds open: a closed one
            # reads EOF at once.
            open_ = 0
            for s in held:
                s.setblocking(False)
                try:
                    open_ += s.recv(1) != b""
                except BlockingIOError:
                    open_ += 1
                except OSError:
                    pass
            rss_, fds_ = rss_kb(proc.pid), fds(proc.pid)
            calm = calm_user(addr, source="127.0.0.2")
            print(f"idle: server fds {base_fds} -> {fds_}, RSS {base_rss} -> {rss_} kB; "
                  f"{open_} of {len(held)} connections still open after 2 s; calm user: {calm}")
            time.sleep(11)
            print(f"idle: after 13 s the server holds {fds(proc.pid)} fds")
            for s in held:
                s.close()
        finally:
            proc.terminate()
            proc.wait()


def attack_upgrades(binary):
    """20,000 requests with Upgrade: websocket and no key, each for its own
    dialect-C room, 1,000 per keep-alive connection."""
    with tempfile.TemporaryDirectory() as d:
        proc, addr = start(binary, d, trust_xff=True)
        try:
            base = rss_kb(proc.pid)
            answered = 0
            for c in range(20):
                s = socket.create_connection(addr, timeout=10)
                req = b"".join(
                    (f"GET /ws?room=flood{c}x{i}&name=x HTTP/1.1\r\nHost: x\r\n"
                     f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Version: 13\r\nX-Forwarded-For: 10.9.{c}.1\r\n\r\n").encode()
                    for i in range(1000))
                s.sendall(req)
                got = b""
                while got.count(b"HTTP/1.1 ") < 1000:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                answered += got.count(b"HTTP/1.1 ")
                s.close()
            time.sleep(1)
            under = rss_kb(proc.pid)
            calm = calm_user(addr, xff="10.3.0.1")
            print(f"upgrades: RSS {base} kB before, {under} kB after {answered} answers; "
                  f"calm user: {calm}")
        finally:
            proc.terminate()
            proc.wait()


def idle_sockets(binary):
    """Not an attack: the cost of 900 idle named dialect-A sockets (each
    from its own IP, 30 to a room), once their rooms have hibernated. 900
    keeps under the default connection cap of a 1,024-file server."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    with tempfile.TemporaryDirectory() as d:
        proc, addr = start(binary, d, trust_xff=True)
        try:
            base = rss_kb(proc.pid)
            held = [join_a(addr, f"idle{i % 30}", f"u{i}", xff=f"10.5.{i // 256}.{i % 256}")
                    for i in range(900)]
            # Drain the join notices each got, then let the room hibernate.
            time.sleep(12)
            for s in held:
                s.setblocking(False)
                try:
                    while s.recv(65536):
                        pass
                except BlockingIOError:
                    pass
            time.sleep(1)
            under = rss_kb(proc.pid)
            print(f"idle sockets: RSS {base} kB -> {under} kB with 900 sockets: "
                  f"{(under - base) * 1024 // 900} bytes each")
            for s in held:
                s.close()
        finally:
            proc.terminate()
            proc.wait()


def busy_sockets(binary, n=50, pages=3):
    """Not an attack: the most a busy user costs. n sockets (each from its
    own IP) in a room of 100 messages of 256 x U+0001 (1.5 KB of JSON
    each) each ask for `pages` history pages of 100 (about 150 KB of
    frames a page: 3 pages stay under the 512 KiB send queue, so no socket
    is cut) and never read."""
    with tempfile.TemporaryDirectory() as d:
        proc, addr = start(binary, d, trust_xff=True,
                           extra=["--history-pages-per-minute", "0"])
        try:
            fill_heavy_room(addr)
            time.sleep(1)
            base = rss_kb(proc.pid)
            request = json.dumps({"history": {"before": 2**53, "limit": 100}})
            held = []
            for i in range(n):
                s = join_a(addr, "big", f"b{i}", xff=f"10.6.{i // 256}.{i % 256}", ext=["history"])
                for _ in range(pages):
                    send_text(s, request)
                held.append(s)
            peak = base
            for _ in range(10):
                time.sleep(1)
                peak = max(peak, rss_kb(proc.pid))
            alive = 0
            for s in held:
                s.setblocking(False)
                try:
                    alive += 1 if s.recv(1) else 0
                except BlockingIOError:
                    alive += 1
                except OSError:
                    pass
            print(f"busy sockets: RSS {base} kB -> peak {peak} kB with {n} sockets that asked "
                  f"for {pages} pages each and never read: {(peak - base) * 1024 // n} bytes each; "
                  f"{alive} of {n} still open")
            for s in held:
                s.close()
        finally:
            proc.terminate()
            proc.wait()


ATTACKS = {
    "history": attack_history,
    "idle": attack_idle,
    "upgrades": attack_upgrades,
    "idle_sockets": idle_sockets,
    "busy_sockets": busy_sockets,
}

if __name__ == "__main__":
    binary = sys.argv[1]
    for name in sys.argv[2:] or ["history", "idle", "upgrades"]:
        ATTACKS[name](binary)
