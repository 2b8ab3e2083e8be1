#!/usr/bin/env python3
"""A join storm: N clients connect at once and join one room, with presence off, on with the
default `presence_limit` (counts above 100 members), and on without a limit (every join
announced to every member: N²/2 frames). Per variant and round, a fresh server pinned to core 0
(`--shards 1`), the load generator pinned to core 1:

  * connect+join rate: loadgen's `connections.connect_rate_per_s` (connect, upgrade, welcome
    and join ack of every client, first start to last ready),
  * the storm's cost: server CPU seconds (utime + stime) and wall time from the start until
    every client is in and the server has been idle for a second, and the frames it delivered
    by then (`shardhub_deliveries_total`: presence events and counts),
  * the latency of the publications (one every 10 s) that follow: a storm's queued frames
    delay them.

Writes bench/runs/<date>-join-storm/{results.json, summary.md, <variant>-<round>.json}.

    python3 bench/join_storm.py [--conns 10000] [--rounds 2]
        [--duration 60] [--variants 'off:--presence false;limit:;unlimited:--presence-limit 0']
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

from benchlib import cpu_ticks, free_port, metrics, rss, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "target", "release", "shardhub")
LOADGEN = os.path.join(ROOT, "target", "release", "shardhub-loadgen")


def cpu_seconds(pid):
    return cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")


def deliveries(port):
    return metrics(port, timeout=60).get("shardhub_deliveries_total", 0)


def sessions(port):
    return metrics(port, timeout=60).get("shardhub_sessions", 0)


def one(label, flags, conns, duration, out_dir, rnd):
    port = free_port()
    cmd = ["taskset", "-c", "0", SERVER, "--listen", f"127.0.0.1:{port}", "--shards", "1",
           "--pin-cores", "false", "--log", "warn", "--rate-messages-per-sec", "0"] + flags.split()
    server = subprocess.Popen(cmd)
    try:
        wait_port(port)
        cpu0 = cpu_seconds(server.pid)
        t0 = time.monotonic()
        out = os.path.join(out_dir, f"{label}-{rnd}.json")
        # A publication every 10 s to the room once everyone has joined (fanout needs a rate):
        # its latency shows how long the storm's presence frames held the room's queues, and it
        # adds next to nothing to the storm's CPU.
        gen = subprocess.Popen(["taskset", "-c", "1", LOADGEN, "fanout",
                                "--url", f"ws://127.0.0.1:{port}/ws",
                                "--conns", str(conns), "--rooms", "1", "--connect-rate", "0",
                                "--rate", "0.1", "--duration", str(duration), "--grace", "5",
                                "--connect-timeout", "60", "--quiet", "--json", "--out", out],
                               stdout=subprocess.DEVNULL)
        # The storm is over when every client is in and the server has been idle (under 20% of
        # its core) for a second: its CPU and deliveries until then are the storm's cost.
        last, quiet_since, storm_cpu, storm_s = cpu_seconds(server.pid), None, None, None
        while gen.poll() is None:
            time.sleep(0.5)
            now_cpu = cpu_seconds(server.pid)
            busy = (now_cpu - last) / 0.5
            last = now_cpu
            if busy < 0.2:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 1 and sessions(port) >= conns + 1:
                    storm_s = quiet_since - t0
                    storm_cpu = now_cpu - cpu0
                    break
            else:
                quiet_since = None
        d = deliveries(port)
        mem = rss(server.pid)
        gen.wait()
    finally:
        server.terminate()
        server.wait()
    r = json.load(open(out))
    c = r["connections"]
    return {
        "variant": label, "flags": flags, "round": rnd,
        "established": c["established"], "failed": c["failed"],
        "connect_join_per_s": c["connect_rate_per_s"],
        "storm_s": storm_s and round(storm_s, 2),
        "storm_cpu_s": storm_cpu and round(storm_cpu, 2),
        "storm_deliveries": int(d),
        "rss_bytes": mem,
        "publish_max_ms": r["latency"]["max_ms"],
        "lost": r["traffic"]["lost"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=60,
                    help="seconds of publications after the storm (the unlimited storm needs them)")
    ap.add_argument("--variants", default="off:--presence false;limit:;unlimited:--presence-limit 0")
    ap.add_argument("--out")
    a = ap.parse_args()
    variants = [v.split(":", 1) for v in a.variants.split(";")]
    out_dir = a.out or os.path.join(ROOT, "bench", "runs", f"{datetime.date.today()}-join-storm")
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for rnd in range(a.rounds):
        for label, flags in variants:  # alternating, so drift hits every variant alike
            r = one(label, flags, a.conns, a.duration, out_dir, rnd)
            print(json.dumps(r), file=sys.stderr)
            results.append(r)
            time.sleep(1)
    json.dump(results, open(os.path.join(out_dir, "results.json"), "w"), indent=1)
    lines = ["| variant | flags | connect+join/s (rounds) | median | storm: server CPU s | storm: until idle s | deliveries | publication after it, max ms | failed |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base = None
    med = lambda rs, k: statistics.median(r[k] for r in rs if r[k] is not None) if any(r[k] is not None for r in rs) else float("nan")
    for label, flags in variants:
        rs = [r for r in results if r["variant"] == label]
        rates = [r["connect_join_per_s"] for r in rs]
        m = statistics.median(rates)
        base = base or m
        lines.append(f"| {label} | `{flags}` | {', '.join(f'{x:,.0f}' for x in rates)} | "
                     f"{m:,.0f} ({m / base:.2f}x) | {med(rs, 'storm_cpu_s'):.2f} | "
                     f"{med(rs, 'storm_s'):.1f} | {med(rs, 'storm_deliveries'):,.0f} | "
                     f"{med(rs, 'publish_max_ms'):,.1f} | {sum(r['failed'] for r in rs)} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(f"# Join storm: {a.conns:,} clients joining one room\n\n"
                f"`python3 bench/join_storm.py --conns {a.conns} --rounds {a.rounds}`\n\n{table}\n")


if __name__ == "__main__":
    main()
