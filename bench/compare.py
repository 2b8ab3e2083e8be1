#!/usr/bin/env python3
"""shardhub side by side with other WebSocket servers, measured in one run on this machine.

Builds the peers from the registries (tokio-tungstenite from crates.io, a gorilla/websocket hub
from Debian's Go packages, Node's `ws` from npm), then for each server in turn: starts it pinned
to one core, drives it with shardhub-loadgen pinned to another, and records

  * idle memory per connection (server RSS growth over --idle connections),
  * connect rate and handshake latency (the same `connect` run),
  * echo round trip p50/p99 (one connection, closed loop; broadcast servers echo to a lone client),
  * fan-out: --subs subscribers of one room, one publisher at --rate/s, open loop: deliveries/s
    and end-to-end p50/p99 from the intended send time,
  * with --max-rate: the highest publish rate keeping p99 under 50 ms with no loss.

Peers are plain broadcast-to-all chat servers (text in, the same text to everyone: loadgen's
`--adapter raw`); shardhub runs its own protocol (join one room, publish to it).

Writes bench/runs/<date>-compare/{<server>-<scenario>.json, summary.md} and prints the table.

    python3 bench/compare.py [--servers shardhub,tokio-tungstenite,gorilla,node-ws]
                             [--idle 10000] [--subs 1000] [--rate 200] [--max-rate]
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

from benchlib import free_port, rss, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "bench", "peers")
LOADGEN = os.path.join(ROOT, "target", "release", "shardhub-loadgen")
SERVER_CORE, CLIENT_CORE = "0", "1"


def sh(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kw)


def build(servers):
    sh(["cargo", "build", "--release", "-q", "-p", "shardhub", "-p", "shardhub-loadgen"], cwd=ROOT)
    if "tokio-tungstenite" in servers:
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(ROOT, "target", "peers"))
        sh(["cargo", "build", "--release", "-q"], cwd=os.path.join(PEERS, "tokio-tungstenite"), env=env)
    if "gorilla" in servers:
        if not shutil.which("go"):
            sys.exit("compare: gorilla needs Debian's golang-go and golang-github-gorilla-websocket-dev")
        # GOPATH mode with Debian's packaged sources: builds offline.
        env = dict(os.environ, GOPATH="/usr/share/gocode", GO111MODULE="off",
                   GOCACHE=os.path.join(ROOT, "target", "go-cache"))
        sh(["go", "build", "-o", os.path.join(ROOT, "target", "peers", "peer-gorilla"), "."],
           cwd=os.path.join(PEERS, "gorilla"), env=env)
    if "node-ws" in servers:
        sh(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=os.path.join(PEERS, "node-ws"))


def command(server, port):
    addr = f"127.0.0.1:{port}"
    if server == "shardhub":
        return [os.path.join(ROOT, "target", "release", "shardhub"), "--listen", addr, "--shards", "1",
                "--presence", "false", "--log", "warn", "--pin-cores", "false",
                # The peers have no per-connection abuse limits; one publisher exceeds ours.
                "--rate-messages-per-sec", "0", "--rate-bytes-per-sec", "0"], {}
    if server == "tokio-tungstenite":
        return [os.path.join(ROOT, "target", "peers", "release", "peer-tokio-tungstenite"), addr], {}
    if server == "gorilla":
        return [os.path.join(ROOT, "target", "peers", "peer-gorilla"), addr], {"GOMAXPROCS": "1"}
    if server == "node-ws":
        return ["node", os.path.join(PEERS, "node-ws", "server.js"), addr], {}
    raise SystemExit(f"unknown server {server}")


class Server:
    def __init__(self, name):
        self.name, self.port = name, free_port()
        cmd, env = command(name, self.port)
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE] + cmd, env=dict(os.environ, **env),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, what=name)

    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    def rss(self):
        return rss(self.proc.pid)

    def stop(self):
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # Also on errors: a stray server would skew every later measurement.
        self.stop()


def loadgen(server, scenario, out, *args, background=False):
    adapter = "hub" if server.name == "shardhub" else "raw"
    cmd = ["taskset", "-c", CLIENT_CORE, LOADGEN, scenario, "--url", server.url(), "--adapter", adapter,
           "--quiet", "--json", "--out", out, "--label", server.name] + [str(a) for a in args]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
    if not os.path.exists(out):
        # max-rate writes no run file when no step passed; its summary is on stdout.
        with open(out, "w") as f:
            f.write(r.stdout)
    with open(out) as f:
        return json.load(f)


def measure(name, a, outdir):
    res = {}
    path = lambda s: os.path.join(outdir, f"{name}-{s}.json")

    # Idle memory, connect rate, handshake latency: one `connect` run, RSS sampled while holding.
    with Server(name) as srv:
        time.sleep(0.5)
        before = srv.rss()
        hold = 6
        bg = loadgen(srv, "connect", path("connect"), "--conns", a.idle, "--rate", 0, "--hold", hold,
                     background=True)
        peak = before
        deadline = time.time() + 60
        while bg.poll() is None and time.time() < deadline:
            time.sleep(0.5)
            peak = max(peak, srv.rss())
        bg.wait(60)
    with open(path("connect")) as f:
        c = json.load(f)
    est = c["connections"]["established"]
    res["idle_bytes"] = (peak - before) / max(est, 1)
    res["established"] = est
    res["connect_rate"] = c["connections"]["connect_rate_per_s"]
    res["hs_p50"], res["hs_p99"] = c["handshake"]["p50_ms"], c["handshake"]["p99_ms"]

    # Echo round trips, one connection, closed loop.
    with Server(name) as srv:
        e = loadgen(srv, "echo", path("echo"), "--conns", 1, "--duration", 5)
    res["echo_p50"], res["echo_p99"] = e["latency"]["p50_ms"], e["latency"]["p99_ms"]
    res["echo_rate"] = e["traffic"].get("received_per_s", 0)

    # Fan-out at a fixed rate.
    with Server(name) as srv:
        f = loadgen(srv, "fanout", path("fanout"), "--conns", a.subs, "--rooms", 1, "--publishers", 1,
                    "--rate", a.rate, "--duration", 10, "--connect-rate", 5000)
    res["fan_dps"] = f["traffic"]["received_per_s"]
    res["fan_p50"], res["fan_p99"] = f["latency"]["p50_ms"], f["latency"]["p99_ms"]
    res["fan_lost"] = f["traffic"]["lost"]

    if a.max_rate:
        with Server(name) as srv:
            m = loadgen(srv, "max-rate", path("max-rate"), "--conns", a.subs, "--rooms", 1, "--publishers", 1,
                        "--p99-ms", a.p99_ms, "--connect-rate", 5000)
        # The --out file holds the best passing step (a fanout run), or the search's summary
        # when no step passed.
        if m.get("scenario") == "fanout":
            res["max_rate"] = m["params"]["rate"]
            res["max_dps"] = m["traffic"]["received_per_s"]
            res["max_p99"] = m["latency"]["p99_ms"]
        else:
            res["max_rate"] = m.get("best_rate") or 0
            res["max_dps"] = res["max_rate"] * a.subs
    return res


def table(results, a):
    names = list(results)
    rows = [
        ("idle memory per connection (bytes)", "idle_bytes", "{:,.0f}", "lower"),
        (f"connect rate ({a.idle:,} conns, conn/s)", "connect_rate", "{:,.0f}", "higher"),
        ("handshake p99 (ms)", "hs_p99", "{:.2f}", "lower"),
        ("echo p50 (ms)", "echo_p50", "{:.3f}", "lower"),
        ("echo p99 (ms)", "echo_p99", "{:.3f}", "lower"),
        (f"fan-out {a.subs:,} subs x {a.rate}/s: deliveries/s", "fan_dps", "{:,.0f}", "higher"),
        ("fan-out p50 (ms)", "fan_p50", "{:.1f}", "lower"),
        ("fan-out p99 (ms)", "fan_p99", "{:.1f}", "lower"),
        ("fan-out lost", "fan_lost", "{:,}", "lower"),
    ]
    if a.max_rate:
        rows.append((f"max publish rate, p99 < {a.p99_ms} ms, {a.subs:,} subs (msg/s)", "max_rate", "{:,.1f}", "higher"))
        rows.append(("... as deliveries/s", "max_dps", "{:,.0f}", "higher"))
        rows.append(("... its p99 (ms)", "max_p99", "{:.1f}", "lower"))
    out = ["| metric | " + " | ".join(names) + " | shardhub vs best peer |",
           "| --- |" + " --- |" * (len(names) + 1)]
    for label, key, fmt, better in rows:
        vals = [results[n].get(key) for n in names]
        cells = [fmt.format(v) if v is not None else "n/a" for v in vals]
        ratio = ""
        peers = [results[n].get(key) for n in names if n != "shardhub" and results[n].get(key)]
        me = results.get("shardhub", {}).get(key)
        if me and peers and key != "fan_lost":
            best = max(peers) if better == "higher" else min(peers)
            r = me / best if better == "higher" else best / me
            ratio = f"{r:.2f}x {'better' if r >= 1 else 'worse'}"
        out.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default="shardhub,tokio-tungstenite,gorilla,node-ws")
    ap.add_argument("--idle", type=int, default=10000, help="connections for the memory/connect run")
    ap.add_argument("--subs", type=int, default=1000, help="fan-out subscribers")
    ap.add_argument("--rate", type=int, default=200, help="fan-out publishes per second")
    ap.add_argument("--max-rate", action="store_true", help="also search the max publish rate (slow)")
    ap.add_argument("--p99-ms", type=int, default=50, help="latency bound of the max-rate search")
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    servers = a.servers.split(",")
    if not a.no_build:
        build(servers)
    outdir = os.path.join(ROOT, "bench", "runs", f"{datetime.date.today().isoformat()}-compare-{a.subs}subs")
    os.makedirs(outdir, exist_ok=True)
    results = {}
    for s in servers:
        print(f"== {s}", file=sys.stderr)
        results[s] = measure(s, a, outdir)
        print(json.dumps(results[s]), file=sys.stderr)
    md = table(results, a)
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"],
                         capture_output=True, text=True).stdout.strip()
    header = (f"Run {datetime.datetime.now().isoformat(timespec='minutes')} on {cpu}, "
              f"{os.cpu_count()} cores, kernel {os.uname().release}. Each server pinned to core "
              f"{SERVER_CORE} (one core, one thread: shardhub --shards 1, GOMAXPROCS=1, tokio "
              f"current_thread, node), shardhub-loadgen pinned to core {CLIENT_CORE}.\n")
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(header + "\n" + md + "\n")
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(header)
    print(md)


if __name__ == "__main__":
    main()
