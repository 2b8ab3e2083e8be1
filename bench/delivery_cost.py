#!/usr/bin/env python3
"""Server CPU, system calls and latency per delivery: shardhub builds and peers side by side.

Each server runs pinned to core 0 (shardhub with one shard), shardhub-loadgen (built from this
tree, the same neutral client for all) pinned to core 1; servers are measured in turn, --rounds
times with the order rotated each round (the machine is shared and noisy). Servers:

  NAME=shardhub:BINARY[:FLAGS]   a shardhub binary, hub protocol (`--adapter hub`), extra flags
  NAME=raw:COMMAND               a broadcast-to-all peer (`--adapter raw`), e.g.
                                 uws=raw:/work/peers-src/out/uws_hub

Measures:

  cpu    fan-out to --subs subscribers x --rate publishes/s (unsaturated): server µs of CPU
         (utime+stime from /proc/PID/stat) per delivery, write-type system calls per delivery
         (`syscw` from /proc/PID/io: write, writev; no tracing overhead), context switches per
         delivery, p50/p99 delivery latency. Sampled every 0.25 s over the publishing window
         only (from the load generator's ready time + 0.5 s to its end), so connecting is not
         counted; deliveries in the window are the received rate times its length.
  rates  fan-out to --rates-subs subscribers at each of --rates publishes/s: p50/p99, losses;
         the highest rate with p99 <= --p99-ms and no loss is the sustainable rate.
  strace `strace -c -f` attached over the window of a cpu run at --strace-rate (ptrace slows
         every system call, so a low rate): system calls per delivery by name.

    python3 bench/delivery_cost.py --out bench/runs/DATE-delivery-cost \\
        main=shardhub:target/bench-bin/shardhub-main branch=shardhub:target/release/shardhub \\
        uws=raw:/work/peers-src/out/uws_hub --measures cpu --subs 1000 --rate 50
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from benchlib import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(ROOT, "target", "release", "shardhub-loadgen")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_server(spec):
    name, _, rest = spec.partition("=")
    kind, _, rest = rest.partition(":")
    if kind == "shardhub":
        binary, _, flags = rest.partition(":")
        return {"name": name, "kind": kind, "binary": binary, "flags": flags.split()}
    if kind == "raw":
        return {"name": name, "kind": kind, "command": rest.split()}
    raise SystemExit(f"bad server {spec!r}: NAME=shardhub:BINARY[:FLAGS] or NAME=raw:COMMAND")


def start(server):
    port = free_port()
    if server["kind"] == "shardhub":
        cmd = [server["binary"], *server["flags"], "--listen", f"127.0.0.1:{port}", "--shards", "1",
               "--pin-cores", "false", "--presence", "false", "--log", "warn",
               "--rate-messages-per-sec", "0", "--rate-bytes-per-sec", "0"]
    else:
        cmd = [*server["command"], str(port)]
    env = dict(os.environ, TOKIO_WORKER_THREADS="1")
    srv = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=env)
    wait_port(port)
    return srv, port


def proc_sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = int(fields[11]) + int(fields[12])
    io = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            io[k] = int(v)
    ctx = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            for line in f:
                if "ctxt_switches" in line:
                    ctx += int(line.split()[1])
    return {"t": time.monotonic_ns(), "cpu": cpu, "syscw": io["syscw"], "syscr": io["syscr"], "ctx": ctx}


def fanout(server, port, subs, rate, duration, out):
    adapter = "hub" if server["kind"] == "shardhub" else "raw"
    args = ["fanout", "--url", f"ws://127.0.0.1:{port}/ws", "--adapter", adapter, "--conns", str(subs),
            "--rooms", "1", "--publishers", "1", "--rate", str(rate), "--duration", str(duration),
            "--connect-rate", "5000", "--quiet", "--json", "--out", out, "--label", server["name"]]
    r = subprocess.run(["taskset", "-c", "1", LOADGEN, *args], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"loadgen {' '.join(args)} failed: {r.stderr[-2000:]}")
    with open(out) as f:
        return json.load(f)


def window(s):
    """The publishing window on CLOCK_MONOTONIC (ns): the load generator's ready time + 0.5 s
    to its end - 0.25 s."""
    ready = s["connections"]["last_ready_ns"]
    return ready + 500_000_000, ready + int(s["measured_s"] * 1e9) - 250_000_000


def cpu_run(server, a, subs, rate, out, trace=False):
    srv, port = start(server)
    samples, stop = [], threading.Event()
    strace = {}

    def sample():
        while not stop.wait(0.25):
            try:
                samples.append(proc_sample(srv.pid))
            except OSError:
                pass

    def tracer():
        # Attach once publishing runs, detach before it ends.
        while not stop.is_set() and not os.path.exists(out + ".ready"):
            time.sleep(0.05)
        time.sleep(1.5)
        p = subprocess.Popen(["strace", "-c", "-f", "-q", "-o", out + ".strace", "-p", str(srv.pid)],
                             stderr=subprocess.DEVNULL)
        strace["t0"] = time.monotonic_ns()
        time.sleep(max(1.0, a.duration - 3.5))
        p.send_signal(2)
        p.wait()
        strace["t1"] = time.monotonic_ns()

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    tt = None
    if trace:
        # The loadgen connects for a while; start tracing after connect: poll the server's
        # connection count through /proc is complex, so wait the connect time out.
        def mark():
            time.sleep(subs / 5000 + 2.0)
            open(out + ".ready", "w").close()
        threading.Thread(target=mark, daemon=True).start()
        tt = threading.Thread(target=tracer, daemon=True)
        tt.start()
    try:
        s = fanout(server, port, subs, rate, a.duration, out)
    finally:
        stop.set()
        t.join()
        if tt:
            tt.join()
        srv.terminate()
        srv.wait()
    lo, hi = window(s)
    inside = [x for x in samples if lo <= x["t"] <= hi]
    lat = s["latency"]
    res = {"p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"], "lost": s["traffic"]["lost"],
           "received_per_s": s["traffic"]["received_per_s"]}
    if len(inside) >= 2:
        first, last = inside[0], inside[-1]
        secs = (last["t"] - first["t"]) / 1e9
        deliveries = s["traffic"]["received_per_s"] * secs
        res["cpu_us"] = (last["cpu"] - first["cpu"]) / CLK_TCK / deliveries * 1e6
        res["writes_per_delivery"] = (last["syscw"] - first["syscw"]) / deliveries
        res["reads_per_delivery"] = (last["syscr"] - first["syscr"]) / deliveries
        res["ctx_per_delivery"] = (last["ctx"] - first["ctx"]) / deliveries
    if trace and os.path.exists(out + ".strace"):
        secs = (strace["t1"] - strace["t0"]) / 1e9
        deliveries = s["traffic"]["received_per_s"] * secs
        calls = {}
        with open(out + ".strace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 5 and parts[-1] not in ("syscall", "total") and parts[3].isdigit():
                    calls[parts[-1]] = int(parts[3])
        res["syscalls_per_delivery"] = {k: v / deliveries for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
        os.remove(out + ".ready") if os.path.exists(out + ".ready") else None
    return res


def median(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("servers", nargs="+", help="NAME=shardhub:BINARY[:FLAGS] or NAME=raw:COMMAND, baseline first")
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--measures", default="cpu")
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--subs", type=int, default=1000)
    p.add_argument("--rate", type=int, default=50)
    p.add_argument("--rates-subs", type=int, default=5000)
    p.add_argument("--rates", default="15,30,60,120,200")
    p.add_argument("--p99-ms", type=float, default=100)
    p.add_argument("--strace-rate", type=int, default=10)
    p.add_argument("--tag", default="", help="prefix of the raw file names")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    servers = [parse_server(s) for s in a.servers]
    measures = a.measures.split(",")
    results = {}
    for rnd in range(a.rounds):
        order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
        for m in measures:
            for srv in order:
                name = srv["name"]
                base = os.path.join(a.out, f"{a.tag}{m}-{name}-{rnd}")
                if m == "cpu":
                    v = cpu_run(srv, a, a.subs, a.rate, base + ".json")
                    results.setdefault(m, {}).setdefault(name, []).append(v)
                    print(f"round {rnd} cpu {name}: " + ", ".join(f"{k} {x:.3f}" for k, x in v.items()), flush=True)
                elif m == "strace":
                    v = cpu_run(srv, a, a.subs, a.strace_rate, base + ".json", trace=True)
                    results.setdefault(m, {}).setdefault(name, []).append(v)
                    top = ", ".join(f"{k} {x:.3f}" for k, x in list(v.get("syscalls_per_delivery", {}).items())[:8])
                    print(f"round {rnd} strace {name}: {top}", flush=True)
                elif m == "rates":
                    for rate in [int(r) for r in a.rates.split(",")]:
                        srvp, port = start(srv)
                        try:
                            s = fanout(srv, port, a.rates_subs, rate, a.duration, f"{base}-{rate}.json")
                        finally:
                            srvp.terminate()
                            srvp.wait()
                        v = {"rate": rate, "p50_ms": s["latency"]["p50_ms"], "p99_ms": s["latency"]["p99_ms"],
                             "lost": s["traffic"]["lost"], "received_per_s": s["traffic"]["received_per_s"]}
                        results.setdefault(m, {}).setdefault(name, []).append(v)
                        print(f"round {rnd} rates {name} {rate}/s: p50 {v['p50_ms']:.1f} p99 {v['p99_ms']:.1f} "
                              f"lost {v['lost']}", flush=True)
    meta = {"servers": servers, "args": vars(a), "date": time.strftime("%Y-%m-%d %H:%M"),
            "kernel": os.uname().release, "results": results}
    # results*.json: the name that marks a directory summary, not a loadgen run.
    name = f"results-{a.tag.rstrip('-')}.json" if a.tag else "results.json"
    with open(os.path.join(a.out, name), "w") as f:
        json.dump(meta, f, indent=1)
    names = [s["name"] for s in servers]
    if "cpu" in results:
        print(f"\n{a.subs} subscribers x {a.rate}/s, medians of {a.rounds} (ratio to {names[0]}):")
        print(f"| measure | {' | '.join(names)} |\n| --- |{' ---: |' * len(names)}")
        for key in ["cpu_us", "writes_per_delivery", "ctx_per_delivery", "p50_ms", "p99_ms"]:
            med = {n: median([r.get(key, float('nan')) for r in results['cpu'][n]]) for n in names}
            print(f"| {key} | " + " | ".join(f"{med[n]:.3f} ({med[n] / med[names[0]]:.2f}x)" for n in names) + " |")
    if "rates" in results:
        print(f"\nsustainable publishes/s at {a.rates_subs} subscribers (p99 <= {a.p99_ms} ms, no loss), per round:")
        for n in names:
            best = {}
            for rnd_i in range(a.rounds):
                runs = results["rates"][n][rnd_i * len(a.rates.split(",")):(rnd_i + 1) * len(a.rates.split(","))]
                ok = [r["rate"] for r in runs if r["p99_ms"] <= a.p99_ms and r["lost"] == 0]
                best[rnd_i] = max(ok) if ok else 0
            print(f"  {n}: {list(best.values())}")


if __name__ == "__main__":
    sys.exit(main())
