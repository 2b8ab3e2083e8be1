#!/usr/bin/env python3
"""Server revisions side by side in one run: what a change costs on the hot path.

Builds each git revision given (release, in its own worktree under target/bench-revs/), then
measures every revision in turn, --rounds times with the order rotated each round (the machine
is shared and noisy), the server pinned to core 0 with one shard and shardhub-loadgen (built
from the current tree, the same neutral client for all) pinned to core 1:

  echo   hub-protocol echo: --echo-conns clients, closed loop, round trips/s and server CPU per
         round trip
  fanmax fan-out to --subs subscribers in one room: the highest delivered rate with p99 under
         --p99-ms and no loss (loadgen max-rate), deliveries/s; coarse (the search's steps)
  fansat fan-out to --subs subscribers offered more than the server delivers (--sat-rate
         publishes/s): deliveries/s at saturation, a finer measure of the same ceiling
  cpu    server CPU per delivery at --subs subscribers x --rate publishes/s

Server CPU is the server's utime+stime over its own counter (messages in, deliveries; from
/metrics), both sampled every 0.5 s over the steady part of the run: steadier than the rates,
which the shared machine and the client also move.

Prints the medians per revision and each revision's ratio to the first, and writes the raw
numbers to OUT/results.json.

    python3 bench/engine_cost.py --out bench/runs/DATE-engine-cost REV_BEFORE REV_AFTER ...

One revision under several configurations instead (--variants, `LABEL:FLAGS;LABEL:FLAGS`, the
baseline first): the same binary, started with each set of extra server flags in turn. The
revision `WORKTREE` is this tree's own release build (no worktree, no second build):

    python3 bench/engine_cost.py --out bench/runs/DATE-history-cost WORKTREE \
        --variants 'off:;on:--history-size 1000 --history-ttl 5m'
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from benchlib import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(ROOT, "target", "release", "shardhub-loadgen")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def build(rev):
    """Builds `rev` in its own worktree; returns (short sha, path of its shardhub binary).
    `WORKTREE`: this tree as it is, built in place."""
    if rev == "WORKTREE":
        sh("cargo", "build", "--release", "-q", "-p", "shardhub", cwd=ROOT)
        return "worktree", os.path.join(ROOT, "target", "release", "shardhub")
    sha = subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", rev], text=True).strip()
    tree = os.path.join(ROOT, "target", "bench-revs", sha)
    if not os.path.isdir(tree):
        sh("git", "-C", ROOT, "worktree", "add", "--detach", tree, sha, stdout=subprocess.DEVNULL)
    sh("cargo", "build", "--release", "-q", "-p", "shardhub", cwd=tree)
    return sha, os.path.join(tree, "target", "release", "shardhub")


def server(binary):
    """Starts `binary`, a (path, extra flags) pair, on core 0."""
    binary, extra = binary
    port = free_port()
    srv = subprocess.Popen(["taskset", "-c", "0", binary, *extra, "--listen", f"127.0.0.1:{port}", "--shards", "1",
                            "--pin-cores", "false", "--presence", "false", "--log", "warn",
                            "--rate-messages-per-sec", "0", "--rate-bytes-per-sec", "0"],
                           stdout=subprocess.DEVNULL)
    wait_port(port)
    return srv, port


def loadgen(args, out):
    r = subprocess.run(["taskset", "-c", "1", LOADGEN, *args, "--quiet", "--json", "--out", out],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"loadgen {' '.join(args)} failed: {r.stderr[-2000:]}")
    with open(out) as f:
        return json.load(f)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def counter(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(f"shardhub_{name}{{"))


def sampled(binary, args, unit, out):
    """Runs one loadgen scenario against a fresh server while sampling the server's CPU time and
    its `unit` counter every 0.5 s; returns the loadgen summary and the server's µs of CPU per
    unit over the steady part of the run (from the second sample where the counter moves to
    the one before it stops)."""
    srv, port = server(binary)
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            try:
                samples.append((cpu_ticks(srv.pid), counter(port, unit)))
            except OSError:
                pass
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        summary = loadgen([*args, "--url", f"ws://127.0.0.1:{port}/ws"], out)
    finally:
        stop.set()
        t.join()
        srv.terminate()
        srv.wait()
    moving = [i for i in range(1, len(samples)) if samples[i][1] > samples[i - 1][1]]
    if len(moving) < 4:
        # An overloaded server answers /metrics late: too few samples to say.
        return summary, float("nan")
    first, last = samples[moving[1]], samples[moving[-2]]
    cpu = (last[0] - first[0]) / CLK_TCK / (last[1] - first[1]) * 1e6
    return summary, cpu


def fanout_args(a, rate):
    return ["fanout", "--conns", str(a.subs), "--rooms", "1", "--publishers", "1", "--rate", str(rate),
            "--duration", str(a.duration), "--connect-rate", "5000"]


def echo(binary, a, out):
    s, cpu = sampled(binary, ["echo", "--conns", str(a.echo_conns), "--rate", "0", "--duration",
                              str(a.duration), "--connect-rate", "0"], "messages_in_total", out)
    return {"rate": s["traffic"]["received_per_s"], "cpu_us": cpu}


def p99_ms(s):
    """The delivery latency p99 of a loadgen summary, in ms."""
    return s["latency"]["p99_ms"]


def fansat(binary, a, out):
    s, cpu = sampled(binary, fanout_args(a, a.sat_rate), "deliveries_total", out)
    return {"rate": s["traffic"]["received_per_s"], "cpu_us": cpu, "p99_ms": p99_ms(s)}


def cpu_per_delivery(binary, a, out):
    s, cpu = sampled(binary, fanout_args(a, a.rate), "deliveries_total", out)
    return {"rate": s["traffic"]["received_per_s"], "cpu_us": cpu, "p99_ms": p99_ms(s)}


def fanmax(binary, a, out):
    srv, port = server(binary)
    try:
        s = loadgen(["max-rate", "--url", f"ws://127.0.0.1:{port}/ws", "--conns", str(a.subs), "--rooms", "1",
                     "--publishers", "1", "--p99-ms", str(a.p99_ms), "--start-rate", "500",
                     "--step-duration", "3", "--max-steps", "10", "--connect-rate", "5000"], out)
        return {"rate": s["traffic"]["received_per_s"]}
    finally:
        srv.terminate()
        srv.wait()


def median(xs):
    """The median, NaN when no sample was usable."""
    return statistics.median(xs) if xs else float("nan")


MEASURES = {"echo": echo, "fanmax": fanmax, "fansat": fansat, "cpu": cpu_per_delivery}
# What each measure reports: (key, unit) pairs, rate first.
UNITS = {"echo": [("rate", "round trips/s"), ("cpu_us", "µs of server CPU per round trip")],
         "fanmax": [("rate", "deliveries/s under the p99 bound")],
         "fansat": [("rate", "deliveries/s at saturation"), ("cpu_us", "µs of server CPU per delivery"),
                    ("p99_ms", "p99 delivery latency at saturation, ms")],
         "cpu": [("cpu_us", "µs of server CPU per delivery at --rate"), ("rate", "deliveries/s at --rate"),
                 ("p99_ms", "p99 delivery latency at --rate, ms")]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("revs", nargs="+", help="git revisions, the baseline first")
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--measures", default="echo,fanmax,cpu")
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--echo-conns", type=int, default=100)
    p.add_argument("--subs", type=int, default=1000)
    p.add_argument("--rate", type=int, default=200)
    p.add_argument("--p99-ms", type=int, default=50)
    p.add_argument("--sat-rate", type=int, default=10000)
    p.add_argument("--variants", help="LABEL:FLAGS;LABEL:FLAGS: one revision with each set of extra "
                                      "server flags, the baseline first")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    sh("cargo", "build", "--release", "-q", "-p", "shardhub-loadgen", cwd=ROOT)
    if a.variants:
        if len(a.revs) != 1:
            raise SystemExit("--variants takes exactly one revision")
        sha, path = build(a.revs[0])
        bins = []
        for v in a.variants.split(";"):
            label, _, flags = v.partition(":")
            bins.append((f"{sha}-{label}", (path, flags.split())))
    else:
        bins = [(sha, (path, [])) for sha, path in (build(r) for r in a.revs)]
    measures = a.measures.split(",")
    results = {m: {sha: [] for sha, _ in bins} for m in measures}
    for rnd in range(a.rounds):
        order = bins[rnd % len(bins):] + bins[:rnd % len(bins)]
        for m in measures:
            for sha, binary in order:
                v = MEASURES[m](binary, a, os.path.join(a.out, f"{m}-{sha}-{rnd}.json"))
                results[m][sha].append(v)
                shown = ", ".join(f"{k} {x:,.2f}" for k, x in v.items())
                print(f"round {rnd} {m:6} {sha}: {shown}", flush=True)
    meta = {"revs": [sha for sha, _ in bins], "flags": {sha: b[1] for sha, b in bins}, "args": vars(a), "date": time.strftime("%Y-%m-%d %H:%M"),
            "kernel": os.uname().release, "results": results}
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(meta, f, indent=1)
    base = bins[0][0]
    print(f"\n| measure | {' | '.join(sha for sha, _ in bins)} |")
    print(f"| --- |{' ---: |' * len(bins)}")
    for m in measures:
        for key, unit in UNITS[m]:
            med = {sha: median([r[key] for r in v if r[key] == r[key]])
                   for sha, v in results[m].items()}
            cells = [f"{med[sha]:,.2f} ({med[sha] / med[base]:.3f}x)" for sha, _ in bins]
            print(f"| {m}: {unit} | {' | '.join(cells)} |")


if __name__ == "__main__":
    sys.exit(main())
