#!/usr/bin/env python3
"""Memory per idle WebSocket connection past one process's open-file cap: N servers, one
shardhub-loadgen spreading the connections over them, summed RSS growth per connection.

This machine caps open files at 20,000 per process, so 100,000 connections need several
server processes (one shard each, as in bench/c100k.py) and several load generator processes.
The connections are opened at --rate, held, and the servers' RSS (and its anonymous part,
the heap) is read once every connection is up. No heartbeat traffic during the hold (the
default 30 s ping interval is longer than the run), so the reading is of idle connections.

    python3 bench/idle_memory_many.py --conns 100000 --servers 6 [--server PATH]
        [--server-cmd "/work/peers-src/out/uws_hub {port}"] [--json]
"""
import argparse
import json
import os
import subprocess
import time

from benchlib import free_port, rss, wait_port
from idle_memory import rss_anon

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", type=int, default=100_000)
    ap.add_argument("--servers", type=int, default=6)
    ap.add_argument("--rate", type=int, default=8000, help="connects per second, all processes")
    ap.add_argument("--server", default=os.path.join(ROOT, "target/release/shardhub"))
    ap.add_argument("--server-cmd", default=None, help="another server's command; {port} is replaced")
    ap.add_argument("--loadgen", default=os.path.join(ROOT, "target/release/shardhub-loadgen"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    ramp = a.conns / a.rate
    servers = []
    try:
        for _ in range(a.servers):
            port = free_port()
            if a.server_cmd:
                cmd = a.server_cmd.replace("{port}", str(port)).split()
            else:
                cmd = [a.server, "--listen", f"127.0.0.1:{port}", "--shards", "1",
                       "--pin-cores", "false", "--log", "warn"]
            servers.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL), port))
        for _, port in servers:
            wait_port(port)
        time.sleep(0.5)
        before = sum(rss(p.pid) for p, _ in servers)
        before_anon = sum(rss_anon(p.pid) for p, _ in servers)
        out = f"/tmp/idle_memory_many-{os.getpid()}.json"
        urls = ",".join(f"ws://127.0.0.1:{port}/ws" for _, port in servers)
        lg = subprocess.Popen([a.loadgen, "connect", "--url", urls,
                               "--adapter", "raw" if a.server_cmd else "hub",
                               "--conns", str(a.conns), "--rate", str(a.rate), "--procs", str(a.servers),
                               "--hold", "20", "--connect-timeout", "30", "--source", "127.0.0.1-127.0.0.20",
                               "--quiet", "--json", "--out", out], stdout=subprocess.DEVNULL)
        time.sleep(ramp + 12)
        after = sum(rss(p.pid) for p, _ in servers)
        after_anon = sum(rss_anon(p.pid) for p, _ in servers)
        lg.wait(ramp + 120)
        est = json.load(open(out))["connections"]["established"]
    finally:
        for p, _ in servers:
            p.terminate()
        for p, _ in servers:
            p.wait(20)
    r = {"conns": a.conns, "established": est, "servers": a.servers,
         "rss_before": before, "rss_after": after, "bytes_per_conn": round((after - before) / max(est, 1)),
         "anon_bytes_per_conn": round((after_anon - before_anon) / max(est, 1)),
         "server": a.server_cmd or a.server}
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{est:,} of {a.conns:,} idle connections over {a.servers} servers: "
              f"{r['bytes_per_conn']} bytes of RSS each ({r['anon_bytes_per_conn']} anonymous)")


if __name__ == "__main__":
    main()
