#!/usr/bin/env python3
"""Hold 100,000 idle WebSocket connections with heartbeats on one machine and report memory per
connection and heartbeat timeliness. Stops by itself.

This machine caps open files at 20,000 per process, so the connections are spread over several
independent shardhub processes on separate ports (one shard each; until cluster mode exists they
do not share a directory, which idle connections do not need) and one shardhub-loadgen process
per server, with connections spread over 20 loopback source addresses against port exhaustion.

Heartbeat timeliness: every server pings its quiet clients every --ping-interval and drops a
client silent for ping_interval + pong_timeout. Reported: heartbeat timeouts (a client the
server gave up on: must be 0, the load generator answers every ping), and how late the servers'
timers fired past their deadlines (timer_lag histogram; on time is within one 100 ms tick).

    python3 bench/c100k.py [--conns 100000] [--servers 6] [--hold 40] [--ping-interval 5s]
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

from benchlib import free_port, rss, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")


def hgrm_summary(path):
    """(p50, p99, max, count) in ms from an .hgrm file."""
    text = open(path).read()
    rows = [l.split() for l in text.splitlines() if re.match(r"^\s*[0-9.]+\s+[0-9.]+\s+[0-9]+", l)]
    def at(q):
        for v, p, *_ in rows:
            if float(p) >= q:
                return float(v)
        return float(rows[-1][0]) if rows else 0.0
    mx = re.search(r"Max\s+=\s+([0-9.]+), Total count\s+=\s+([0-9]+)", text)
    return at(0.5), at(0.99), float(mx.group(1)), int(mx.group(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", type=int, default=100_000)
    ap.add_argument("--servers", type=int, default=0, help="server processes (default: conns / 18,000)")
    ap.add_argument("--rate", type=int, default=4000, help="total connects per second")
    ap.add_argument("--hold", type=int, default=40, help="seconds to hold every connection")
    ap.add_argument("--ping-interval", default="5s")
    ap.add_argument("--pong-timeout", default="10s")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    n = a.servers or math.ceil(a.conns / 18_000)
    per = math.ceil(a.conns / n)
    if per > 19_000:
        sys.exit(f"{per} connections per process is over this machine's 20,000 open-file cap: use more --servers")
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "shardhub", "-p", "shardhub-loadgen"],
                       cwd=ROOT, check=True)
    import datetime
    # A new directory per run, never over an earlier run's results.
    work = os.path.join(ROOT, "bench", "runs", f"{datetime.datetime.now():%Y-%m-%d-%H%M}-c{a.conns // 1000}k")
    os.makedirs(work, exist_ok=True)
    print(f"c100k: {a.conns:,} connections over {n} independent shardhub processes (no cluster mode yet), "
          f"{per:,} each; one loadgen process per server; sources 127.0.0.1-127.0.0.20; "
          f"ping every {a.ping_interval}, hold {a.hold}s", flush=True)
    servers, loadgens = [], []
    try:
        for i in range(n):
            port = free_port()
            d = os.path.join(work, f"server-{i}")
            p = subprocess.Popen([os.path.join(BIN, "shardhub"), "--listen", f"127.0.0.1:{port}", "--shards", "1",
                                  "--pin-cores", "false", "--presence", "false", "--log", "warn",
                                  "--ping-interval", a.ping_interval, "--pong-timeout", a.pong_timeout,
                                  "--histograms-dir", d])
            servers.append((p, port, d))
        for _, port, _ in servers:
            wait_port(port)
        time.sleep(0.5)
        before = sum(rss(p.pid) for p, _, _ in servers)
        t0 = time.time()
        for i, (_, port, _) in enumerate(servers):
            out = os.path.join(work, f"loadgen-{i}.json")
            lg = subprocess.Popen([os.path.join(BIN, "shardhub-loadgen"), "connect", "--url",
                                   f"ws://127.0.0.1:{port}/ws", "--conns", str(per), "--rate", str(a.rate // n),
                                   "--hold", str(a.hold), "--source", "127.0.0.1-127.0.0.20", "--quiet",
                                   "--json", "--out", out], stdout=subprocess.DEVNULL)
            loadgens.append((lg, out))
        peak, peak_at = before, 0.0
        deadline = time.time() + a.hold + per / max(a.rate // n, 1) + 120
        while any(lg.poll() is None for lg, _ in loadgens):
            if time.time() > deadline:
                sys.exit("c100k: load generators overran their deadline")
            time.sleep(1)
            now = sum(rss(p.pid) for p, _, _ in servers)
            if now > peak:
                peak, peak_at = now, time.time() - t0
        runs = [json.load(open(out)) for _, out in loadgens]
    finally:
        for lg, _ in loadgens:
            if lg.poll() is None:
                lg.kill()
        for p, _, _ in servers:
            p.terminate()
        for p, _, _ in servers:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    est = sum(r["connections"]["established"] for r in runs)
    failed = sum(r["connections"]["failed"] for r in runs)
    held = min(r["connections"]["open_at_end"] for r in runs) * n
    hs_p99 = max(r["handshake"]["p99_ms"] for r in runs)
    rate = sum(r["connections"]["connect_rate_per_s"] for r in runs)
    timeouts, lag = 0, []
    for _, _, d in servers:
        timeouts += json.load(open(os.path.join(d, "stats.json")))["heartbeat_timeouts"]
        lag.append(hgrm_summary(os.path.join(d, "timer_lag.hgrm")))
    per_conn = (peak - before) / max(est, 1)
    print(f"connections: {est:,} established, {failed:,} failed, all {n} loadgens held theirs to the end: "
          f"{'yes' if held >= est else 'no'}; connect rate {rate:,.0f}/s total, handshake p99 {hs_p99:.1f} ms (worst process)")
    print(f"memory: servers' RSS {before / 1e6:.1f} MB -> {peak / 1e6:.1f} MB (peak at {peak_at:.0f}s): "
          f"{per_conn:,.0f} bytes per idle connection")
    print(f"heartbeats: {timeouts} heartbeat timeouts; timer lag past deadline over "
          f"{sum(l[3] for l in lag):,} timers: p50 {max(l[0] for l in lag):.3f} ms, "
          f"p99 {max(l[1] for l in lag):.3f} ms, max {max(l[2] for l in lag):.3f} ms (worst process)")
    print(f"raw results: {work}")


if __name__ == "__main__":
    main()
