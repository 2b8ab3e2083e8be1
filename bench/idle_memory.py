#!/usr/bin/env python3
"""Memory per idle WebSocket connection: RSS growth of a shardhub process over N connections.

Starts the server (release build) with one shard, opens N WebSocket connections from this
process (raw sockets, the upgrade only, no traffic), waits for the server to settle, and
reports (RSS after - RSS before) / N, and the same for the anonymous part of RSS alone (the
heap: RSS also counts the executable's pages that serving the first connections faults in). Standard library only; N must stay under this process's
open-file limit.

With --join ROOM every connection also joins ROOM (and reads its ack) before the measurement;
--distinct-users gives each its own user id (user=idle-<i>) instead of one shared user.
--server-cmd measures another server instead (e.g. uWebSockets' hub: raw upgrade, no welcome);
"{port}" in it is replaced by the port.

    python3 bench/idle_memory.py --conns 10000 [--read-buffer-bytes 512] [--server PATH]
        [--join lobby] [--distinct-users] [--server-cmd "taskset -c 0 uws_hub {port}"]
        [--warmup 200]

--warmup N opens N connections (kept, and joined like the rest) before the first reading: the
figure is then the marginal cost of a connection, without the pages any server faults in once.
"""
import argparse
import json
import socket
import subprocess
import sys
import time

from benchlib import free_port, rss, wait_port

def rss_anon(pid):
    """The anonymous part of a process's RSS (heap, stacks), in bytes: RSS without the pages of
    the executable and libraries, which the first connections fault in (a few MB for a large
    binary with debug info) and the page cache may evict and reload at any time."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def upgrade_request(user):
    return (f"GET /ws?user={user} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()


def masked_text(payload):
    """A client text frame (payload under 126 bytes), masked with a zero key."""
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def recv_until(sock, needle):
    """Reads until `needle` has arrived (the answers are small and come at once)."""
    got = b""
    while needle not in got:
        chunk = sock.recv(4096)
        if not chunk:
            sys.exit("server closed a connection")
        got += chunk
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--read-buffer-bytes", type=int, default=None)
    ap.add_argument("--server", default="target/release/shardhub")
    ap.add_argument("--server-args", default="", help="extra shardhub arguments")
    ap.add_argument("--server-cmd", default=None, help="another server's command; {port} is replaced")
    ap.add_argument("--join", default=None, help="room every connection joins (shardhub)")
    ap.add_argument("--distinct-users", action="store_true", help="user=idle-<i> instead of one user")
    ap.add_argument("--warmup", type=int, default=0,
                    help="connections opened (and kept) before the first RSS reading, so that the "
                         "code pages and tables every server faults in once are not spread over N")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait before the second RSS reading")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    a = ap.parse_args()

    port = free_port()
    if a.server_cmd:
        cmd = a.server_cmd.replace("{port}", str(port)).split()
    else:
        cmd = [a.server, "--listen", f"127.0.0.1:{port}", "--shards", "1", "--log", "warn"]
        cmd += a.server_args.split()
        if a.read_buffer_bytes:
            cmd += ["--read-buffer-bytes", str(a.read_buffer_bytes)]
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(0.5)
        socks = []
        # The welcome (shardhub) comes in the same write as the 101; uWebSockets sends none.
        greeting = b"\r\n\r\n" if a.server_cmd else b'"welcome"'
        join = a.join and masked_text(f'{{"type":"join","room":"{a.join}","id":1}}'.encode())

        def settle(batch):  # the 101 + welcome, then the join's ack, of a batch
            for t in batch:
                if not recv_until(t, greeting).startswith(b"HTTP/1.1 101"):
                    sys.exit("upgrade refused")
                if join:
                    t.sendall(join)
            if join:
                for t in batch:
                    recv_until(t, b'"ack"')

        def open_conns(n, first):
            batch = []
            for i in range(first, first + n):
                s = socket.create_connection(("127.0.0.1", port), 5)
                s.sendall(upgrade_request(f"idle-{i}" if a.distinct_users else "idle"))
                batch.append(s)
                if len(batch) % 500 == 0:
                    settle(batch[-500:])
            settle(batch[len(batch) // 500 * 500:])
            return batch

        if a.warmup:
            socks += open_conns(a.warmup, a.conns)
            time.sleep(0.5)
        before, before_anon = rss(srv.pid), rss_anon(srv.pid)
        t0 = time.time()
        socks += open_conns(a.conns, 0)
        took = time.time() - t0
        time.sleep(a.settle)
        after, after_anon = rss(srv.pid), rss_anon(srv.pid)
        per = (after - before) / a.conns
        per_anon = (after_anon - before_anon) / a.conns
        if a.json:
            print(json.dumps({"conns": a.conns, "rss_before": before, "rss_after": after,
                              "bytes_per_conn": round(per), "anon_bytes_per_conn": round(per_anon),
                              "server": " ".join(cmd),
                              "join": a.join, "distinct_users": a.distinct_users,
                              "warmup": a.warmup}))
        else:
            print(f"idle connections: {a.conns} in {took:.1f}s; server RSS {before/1e6:.1f} MB -> "
                  f"{after/1e6:.1f} MB; {per:.0f} bytes per idle connection ({per_anon:.0f} anonymous) "
                  f"(read_buffer_bytes={a.read_buffer_bytes or 512})")
        for s in socks:
            s.close()
    finally:
        srv.terminate()
        srv.wait(10)


if __name__ == "__main__":
    main()
