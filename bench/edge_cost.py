#!/usr/bin/env python3
"""The cost of the edge on the hot path: fan-out with authentication, permissions, rate limits
and Prometheus scraping on, against all of it off, side by side in one run.

  off: anonymous clients, no per-connection rate limits, nobody scrapes /metrics.
  on:  every client presents an HS256 JWT whose claims restrict it to rooms `room-*` (so each
       join and publish runs the permission patterns), per-connection rate limits on (set high
       enough that nothing is dropped), and /metrics scraped every 100 ms during the run.

Runs alternate off/on --runs times (the machine is shared and noisy) with the server pinned to
one core and shardhub-loadgen to the other, and report medians and the on/off ratio.

    python3 bench/edge_cost.py [--subs 5000] [--rate 100] [--runs 3]
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from benchlib import free_port, wait_port
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
SECRET = "edge-cost-bench-secret-at-least-32-bytes"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(claims):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def run(edge, a, outdir, i):
    port = free_port()
    cmd = ["taskset", "-c", "0", os.path.join(BIN, "shardhub"), "--listen", f"127.0.0.1:{port}", "--shards", "1",
           "--presence", "false", "--log", "warn", "--pin-cores", "false"]
    url = f"ws://127.0.0.1:{port}/ws"
    if edge:
        cmd += ["--jwt-secret", SECRET, "--allow-anonymous", "false",
                "--rate-messages-per-sec", "100000", "--rate-bytes-per-sec", "100000000"]
        token = jwt({"sub": "bench", "exp": int(time.time()) + 3600,
                     "rooms": {"join": ["room-*"], "publish": ["room-*"], "presence": ["room-*"]},
                     "broadcast": False, "send": False})
        url += f"?token={token}"
    else:
        cmd += ["--rate-messages-per-sec", "0", "--rate-bytes-per-sec", "0"]
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    stop = threading.Event()
    scrapes = [0]

    def scrape():
        while not stop.wait(0.1):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
                scrapes[0] += 1
            except OSError:
                pass
    try:
        wait_port(port)
        scraper = threading.Thread(target=scrape, daemon=True)
        if edge:
            scraper.start()
        out = os.path.join(outdir, f"{'on' if edge else 'off'}-{i}.json")
        r = subprocess.run(["taskset", "-c", "1", os.path.join(BIN, "shardhub-loadgen"), "fanout", "--url", url,
                            "--conns", str(a.subs), "--rooms", "1", "--publishers", "1", "--rate", str(a.rate),
                            "--duration", str(a.duration), "--connect-rate", "5000", "--quiet", "--json",
                            "--out", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stop.set()
        if r.returncode != 0:
            sys.exit(f"loadgen failed: {r.stderr}")
        d = json.load(open(out))
        if d["connections"]["failed"]:
            sys.exit(f"{d['connections']['failed']} connections failed: {d['connections']['failures']}")
        return {"dps": d["traffic"]["received_per_s"], "p50": d["latency"]["p50_ms"],
                "p99": d["latency"]["p99_ms"], "lost": d["traffic"]["lost"], "scrapes": scrapes[0]}
    finally:
        stop.set()
        srv.terminate()
        srv.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subs", type=int, default=5000)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "shardhub", "-p", "shardhub-loadgen"],
                   cwd=ROOT, check=True)
    import datetime
    outdir = os.path.join(ROOT, "bench", "runs", f"{datetime.date.today().isoformat()}-edge-cost")
    os.makedirs(outdir, exist_ok=True)
    res = {False: [], True: []}
    for i in range(a.runs):
        for edge in (False, True):
            r = run(edge, a, outdir, i)
            res[edge].append(r)
            print(f"run {i + 1} edge {'on ' if edge else 'off'}: {json.dumps(r)}", file=sys.stderr)
    med = {e: {k: statistics.median(r[k] for r in res[e]) for k in ("dps", "p50", "p99", "lost")} for e in res}
    lines = [
        f"Fan-out to {a.subs:,} members at {a.rate}/s for {a.duration}s, {a.runs} alternating runs each, medians "
        f"(server on core 0, loadgen on core 1):",
        "",
        "| | deliveries/s | p50 ms | p99 ms | lost |",
        "| --- | --- | --- | --- | --- |",
        f"| edge off | {med[False]['dps']:,.0f} | {med[False]['p50']:.1f} | {med[False]['p99']:.1f} | {med[False]['lost']:,.0f} |",
        f"| edge on (JWT + permissions + rate limits + /metrics every 100 ms) | {med[True]['dps']:,.0f} | "
        f"{med[True]['p50']:.1f} | {med[True]['p99']:.1f} | {med[True]['lost']:,.0f} |",
        f"| on / off | {med[True]['dps'] / med[False]['dps']:.3f} | {med[True]['p50'] / med[False]['p50']:.2f} | "
        f"{med[True]['p99'] / med[False]['p99']:.2f} | |",
    ]
    text = "\n".join(lines)
    open(os.path.join(outdir, "summary.md"), "w").write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
