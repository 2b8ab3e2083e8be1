#!/usr/bin/env python3
"""Memory per idle WebSocket connection: RSS growth of a shardhub process over N connections.

Starts the server (release build) with one shard, opens N WebSocket connections from this
process (raw sockets, the upgrade only, no traffic), waits for the server to settle, and
reports (RSS after - RSS before) / N. Standard library only; N must stay under this process's
open-file limit.

    python3 bench/idle_memory.py --conns 10000 [--read-buffer-bytes 512] [--server PATH]
"""
import argparse
import socket
import subprocess
import sys
import time

from benchlib import free_port, rss, wait_port

REQ = (b"GET /ws?user=idle HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
       b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--read-buffer-bytes", type=int, default=None)
    ap.add_argument("--server", default="target/release/shardhub")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    a = ap.parse_args()

    port = free_port()
    cmd = [a.server, "--listen", f"127.0.0.1:{port}", "--shards", "1", "--log", "warn"]
    if a.read_buffer_bytes:
        cmd += ["--read-buffer-bytes", str(a.read_buffer_bytes)]
    srv = subprocess.Popen(cmd)
    try:
        wait_port(port)
        time.sleep(0.5)
        before = rss(srv.pid)
        socks = []
        t0 = time.time()
        for i in range(a.conns):
            s = socket.create_connection(("127.0.0.1", port), 5)
            s.sendall(REQ)
            socks.append(s)
            if len(socks) % 500 == 0:  # read the 101 + welcome of the last batch
                for t in socks[-500:]:
                    if not t.recv(4096).startswith(b"HTTP/1.1 101"):
                        sys.exit("upgrade refused")
        for t in socks[len(socks) // 500 * 500:]:
            t.recv(4096)
        took = time.time() - t0
        time.sleep(2)
        after = rss(srv.pid)
        per = (after - before) / a.conns
        if a.json:
            print(f'{{"conns":{a.conns},"rss_before":{before},"rss_after":{after},"bytes_per_conn":{per:.0f},'
                  f'"read_buffer_bytes":{a.read_buffer_bytes or 512}}}')
        else:
            print(f"idle connections: {a.conns} in {took:.1f}s; server RSS {before/1e6:.1f} MB -> "
                  f"{after/1e6:.1f} MB; {per:.0f} bytes per idle connection "
                  f"(read_buffer_bytes={a.read_buffer_bytes or 512})")
        for s in socks:
            s.close()
    finally:
        srv.terminate()
        srv.wait(10)


if __name__ == "__main__":
    main()
