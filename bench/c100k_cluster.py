#!/usr/bin/env python3
"""100,000 connections held by one shardhub cluster on this machine, and a message reaching
all of them. Stops by itself.

This machine caps open files at 20,000 per process, so the cluster has --nodes nodes (default
conns / 18,000 rounded up: 6), one shard each, over a bus server of its own (nats-server or
redis-server), and shardhub-loadgen runs as --procs worker processes (default one per node),
over 20 loopback source addresses against port exhaustion. Presence is off: with it, 100,000
joins of one room would announce every join to every member.

For each --bus, up to three phases (--phases), each on a fresh cluster:

  room    loadgen fanout: the --conns subscribers in ONE room, round-robin over the nodes, one
          publisher on node 1 publishing --rate times a second for --duration s. A publication
          reaches node 1's members directly and crosses the bus once to each other node, which
          fans it out to its own members: the path a broadcast takes too (one envelope per
          node, local fan-out), measured at the clients: delivery latency from the intended
          send time for every one of the --conns deliveries of every publication, split by
          node (node 1 same-node, the others cross-node), with loss and duplicates. At one
          publication a second, each second of the loadgen's timeline holds the slowest
          delivery of one publication: the time that message took to reach every subscriber.
          Also: RSS of every node and of the bus server before the connections, when all are
          connected, and at the peak; the kernel's slab (/proc/meminfo) and TCP pages
          (/proc/net/sockstat) before and with all connected (both ends of every connection
          are on this machine: two sockets per connection).
  wsbcast the same cluster and connections as `room`, but the publisher sends `broadcast`
          (every session but its own) --bcast-rate times a second instead of publishing to the
          room (loadgen fanout --broadcast): the delivery latency histogram of broadcasts
          reaching all --conns subscribers, by node, with loss and duplicates.
  bcast   loadgen connect holds --conns idle connections (connection i on node i mod n); the
          script sends --broadcasts POST /api/v1/broadcast to node 1, one every 2 s, and
          after each polls every node's deliveries_total until it has grown by that node's
          connection count: that every connection was handed the broadcast, counted by the
          servers (the loadgen does not read broadcasts), with the time until the last node's
          counter got there (polling resolution, also recorded; a counter moves when a frame
          is queued for a connection, not when the client reads it).

Writes OUT/<bus>-room/ and OUT/<bus>-bcast/ (loadgen JSON and stdout, each node's histograms
and counters from --histograms-dir, the samples) and OUT/results.json; prints the tables.

    python3 bench/c100k_cluster.py --out bench/runs/DATE-cluster-c100k [--bus nats,redis] [--conns 100000]
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from benchlib import free_port, hdr_count, hdr_decode, hdr_merge, hdr_quantile, rss, wait_port
from cluster import Bus, metrics, stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
SOURCES = "127.0.0.1-127.0.0.20"


def kernel_memory():
    """System-wide kernel memory that sockets use: slab (kB) and TCP pages in use."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            if k in ("Slab", "SUnreclaim", "SReclaimable", "MemAvailable"):
                out[k + "_kB"] = int(v.split()[0])
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()[1:]
                tcp = dict(zip(parts[::2], map(int, parts[1::2])))
                out["tcp_inuse"], out["tcp_mem_pages"] = tcp["inuse"], tcp["mem"]
    return out


class Cluster:
    """A bus server and `n` one-shard nodes joined over it."""

    def __init__(self, bus, n, work, ping_interval):
        self.bus = Bus(bus, work)
        self.nodes = []
        for i in range(n):
            port = free_port()
            hist = os.path.join(work, f"node-{i + 1}")
            cmd = [os.path.join(BIN, "shardhub"), "--listen", f"127.0.0.1:{port}", "--shards", "1",
                   "--pin-cores", "false", "--presence", "false", "--log", "warn",
                   "--rate-messages-per-sec", "0", "--rate-bytes-per-sec", "0",
                   "--ping-interval", ping_interval, "--histograms-dir", hist,
                   "--cluster", self.bus.url, "--node", f"n{i + 1}"]
            log = open(os.path.join(work, f"node-{i + 1}.log"), "a")
            self.nodes.append((subprocess.Popen(cmd, stdout=log, stderr=log), port))
        for _, port in self.nodes:
            wait_port(port, what="shardhub")
        deadline = time.time() + 20
        while not all(len(stats(p)["cluster"]["nodes"]) == n - 1 for _, p in self.nodes):
            if time.time() > deadline:
                raise SystemExit("the nodes did not see each other within 20 s")
            time.sleep(0.2)

    def urls(self):
        return [f"ws://127.0.0.1:{p}/ws" for _, p in self.nodes]

    def rss(self):
        return [rss(p.pid) for p, _ in self.nodes]

    def counter(self, name):
        return [metrics(port).get(f"shardhub_{name}", 0.0) for _, port in self.nodes]

    def stop(self):
        for p, _ in self.nodes:
            p.terminate()
        for p, _ in self.nodes:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.bus.stop()


class Watch:
    """Samples the nodes' RSS and connection counts (and the bus server's RSS) every second;
    keeps the first sample with every connection up and the peak."""

    def __init__(self, cl, conns):
        self.cl, self.conns, self.samples = cl, conns, []
        self.full, self.stop_ev = None, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        t0 = time.monotonic()
        while not self.stop_ev.wait(1.0):
            try:
                conns = self.cl.counter("connections")
            except OSError:
                continue
            s = {"t": time.monotonic() - t0, "rss": self.cl.rss(), "bus_rss": rss(self.cl.bus.proc.pid),
                 "conns": conns, "kernel": kernel_memory()}
            self.samples.append(s)
            if self.full is None and sum(conns) >= self.conns:
                self.full = s

    def wait_full(self, timeout):
        deadline = time.time() + timeout
        while self.full is None and time.time() < deadline:
            time.sleep(0.5)
        return self.full

    def stop(self):
        self.stop_ev.set()
        self.thread.join()
        return self.samples


def loadgen(args, work, name, timeout):
    out = os.path.join(work, f"{name}.json")
    with open(os.path.join(work, f"{name}.txt"), "w") as txt:
        p = subprocess.Popen([os.path.join(BIN, "shardhub-loadgen"), *args, "--out", out],
                             stdout=txt, stderr=subprocess.STDOUT)
    return p, out, timeout


def finish(p, out, timeout):
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise SystemExit(f"loadgen overran its {timeout} s bound")
    if p.returncode != 0:
        raise SystemExit(f"loadgen failed ({p.returncode}); see {out[:-5]}.txt")
    with open(out) as f:
        return json.load(f)


def ms(h, q):
    return hdr_quantile(h, q) / 1000


def memory(before, full, peak_rss, conns_per_node):
    """Memory per connection: RSS growth per node, the kernel's slab growth per connection."""
    kb, kf = before["kernel"], full["kernel"]
    per_node = [(f - b) / max(c, 1) for b, f, c in zip(before["rss"], full["rss"], conns_per_node)]
    total = sum(full["conns"])
    return {"rss_before": before["rss"], "rss_full": full["rss"], "rss_peak": peak_rss,
            "bus_rss_before": before["bus_rss"], "bus_rss_full": full["bus_rss"],
            "rss_per_conn": per_node, "kernel_before": kb, "kernel_full": kf,
            "slab_per_conn": (kf["Slab_kB"] - kb["Slab_kB"]) * 1024 / max(total, 1),
            "tcp_pages_per_conn": (kf["tcp_mem_pages"] - kb["tcp_mem_pages"]) / max(total, 1)}


def room_phase(bus, a, work, broadcast=False):
    os.makedirs(work, exist_ok=True)
    cl = Cluster(bus, a.nodes, work, a.ping_interval)
    try:
        time.sleep(1)
        before = {"rss": cl.rss(), "bus_rss": rss(cl.bus.proc.pid), "kernel": kernel_memory()}
        n1_before = metrics(cl.nodes[0][1])
        watch = Watch(cl, a.conns + 1)
        args = ["fanout"] + [x for u in cl.urls() for x in ("--url", u)] + [
            "--publisher-url", cl.urls()[0], "--conns", str(a.conns), "--rooms", "1", "--publishers", "1",
            "--rate", str(a.bcast_rate if broadcast else a.rate), "--duration", str(a.duration),
            "--connect-rate", str(a.connect_rate),
            "--connect-timeout", "30", "--grace", "5", "--procs", str(a.procs), "--source", SOURCES, "--quiet"]
        if broadcast:
            args.append("--broadcast")
        ramp = a.conns / a.connect_rate
        run = finish(*loadgen(args, work, "loadgen", ramp + a.duration + 180))
        samples = watch.stop()
        n1_after = metrics(cl.nodes[0][1])
        views = [stats(p)["cluster"] for _, p in cl.nodes]
    finally:
        cl.stop()
    full = watch.full or max(samples, key=lambda s: sum(s["conns"]))
    peak = [max(s["rss"][i] for s in samples) for i in range(a.nodes)]
    res = {"memory": memory(before, full, peak, full["conns"]), "conns_per_node": full["conns"],
           "views_after": views}
    urls = run["urls"][:a.nodes]
    by = {u: hdr_decode(run["latency_by_url"][u]["hist"]) for u in urls}
    lat = {"all": hdr_decode(run["latency"]["hist"]), "same": by[urls[0]], "cross": hdr_merge([by[u] for u in urls[1:]])}
    res["latency"] = {k: {"n": hdr_count(h), "p50": ms(h, .5), "p90": ms(h, .9), "p99": ms(h, .99),
                          "p99.9": ms(h, .999), "max": ms(h, 1)} for k, h in lat.items()}
    res["latency_by_node"] = {f"n{i + 1}": {"n": hdr_count(by[u]), "p50": ms(by[u], .5), "p99": ms(by[u], .99),
                                            "max": ms(by[u], 1)} for i, u in enumerate(urls)}
    # One publication a second: the max of each second's deliveries is the slowest delivery of
    # one publication (see the module doc); seconds with deliveries only.
    per_sec = [(e["t_s"], e["received"], ms(hdr_decode(e["hist"]), 1)) for e in run["timeline"] if e["received"]]
    res["per_second"] = per_sec
    if per_sec:
        worst = sorted(x[2] for x in per_sec)
        res["reach_all_ms"] = {"seconds": len(worst), "p50": statistics.median(worst), "max": worst[-1],
                               "min": worst[0]}
    t = run["traffic"]
    res["traffic"] = {k: t[k] for k in ("sent", "received", "expected", "unique", "lost", "duplicates")}
    res["connections"] = run["connections"]
    res["handshake_p99_ms"] = run["handshake"]["p99_ms"]
    res["send_lag_p99_ms"] = run["send_lag"]["p99_ms"]
    res["n1_bus"] = {k: n1_after.get(f"shardhub_bus_{k}_total", 0) - n1_before.get(f"shardhub_bus_{k}_total", 0)
                     for k in ("published", "published_bytes", "received", "queue_drops", "publish_errors")}
    res["server_counters"] = [json.load(open(os.path.join(work, f"node-{i + 1}", "stats.json")))
                              for i in range(a.nodes)]
    return res


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    return urllib.request.urlopen(req, timeout=5).read().decode()


def bcast_phase(bus, a, work):
    os.makedirs(work, exist_ok=True)
    cl = Cluster(bus, a.nodes, work, a.ping_interval)
    try:
        time.sleep(1)
        before = {"rss": cl.rss(), "bus_rss": rss(cl.bus.proc.pid), "kernel": kernel_memory()}
        watch = Watch(cl, a.conns)
        ramp = a.conns / a.connect_rate
        hold = int(ramp + 15 + 3 * a.broadcasts)
        args = ["connect"] + [x for u in cl.urls() for x in ("--url", u)] + [
            "--conns", str(a.conns), "--rate", str(a.connect_rate), "--hold", str(hold), "--connect-timeout", "30",
            "--procs", str(a.procs), "--source", SOURCES, "--quiet"]
        lg = loadgen(args, work, "loadgen", hold + ramp + 180)
        full = watch.wait_full(ramp + 60)
        casts = []
        if full is None:
            print("bcast: not every connection came up; no broadcasts sent", flush=True)
        else:
            time.sleep(3)
            for k in range(a.broadcasts):
                conns = cl.counter("connections")
                base = cl.counter("deliveries_total")
                t0 = time.monotonic()
                answer = post(cl.nodes[0][1], "/api/v1/broadcast", {"data": {"bench": k}})
                t_post = time.monotonic() - t0
                reached, polls = [None] * a.nodes, 0
                while None in reached and time.monotonic() - t0 < 10:
                    polls += 1
                    for i, (_, port) in enumerate(cl.nodes):
                        if reached[i] is None:
                            got = metrics(port).get("shardhub_deliveries_total", 0.0)
                            if got - base[i] >= conns[i]:
                                reached[i] = (time.monotonic() - t0) * 1000
                time.sleep(1.0)  # anything late (a duplicate) would show now
                final = cl.counter("deliveries_total")
                casts.append({"answer": answer, "post_ms": t_post * 1000, "conns": conns,
                              "delivered": [f - b for f, b in zip(final, base)], "reached_ms": reached,
                              "polls": polls, "poll_interval_ms": (max(r or 0 for r in reached) / max(polls, 1))})
                print(f"bcast {bus} #{k}: delivered {sum(casts[-1]['delivered']):,.0f} of {sum(conns):,.0f} "
                      f"connections; every node's counter there after "
                      f"{max(r if r is not None else float('inf') for r in reached):.1f} ms ({polls} polls)", flush=True)
                time.sleep(1.0)
        run = finish(*lg)
        samples = watch.stop()
    finally:
        cl.stop()
    full = full or max(samples, key=lambda s: sum(s["conns"]))
    peak = [max(s["rss"][i] for s in samples) for i in range(a.nodes)]
    return {"memory": memory(before, full, peak, full["conns"]), "conns_per_node": full["conns"],
            "broadcasts": casts, "connections": run["connections"], "handshake_p99_ms": run["handshake"]["p99_ms"],
            "server_counters": [json.load(open(os.path.join(work, f"node-{i + 1}", "stats.json")))
                                for i in range(a.nodes)]}


def report(bus, r):
    lines = [f"### {bus}"]
    for phase in ("room", "wsbcast"):
        if phase not in r:
            continue
        x = r[phase]
        t, m, lat = x["traffic"], x["memory"], x["latency"]
        what = "room" if phase == "room" else "wsbcast"
        if phase != "room":
            lines.append("")
        lines += [f"{what}: {x['connections']['established']:,} connections established "
                  f"({x['connections']['failed']:,} failed), per node {', '.join(f'{c:,.0f}' for c in x['conns_per_node'])}; "
                  f"handshake p99 {x['handshake_p99_ms']:.1f} ms",
                  f"{what}: published {t['sent']}, delivered {t['received']:,} of {t['expected']:,} expected, "
                  f"lost {t['lost']:,}, duplicates {t['duplicates']:,}; generator send lag p99 {x['send_lag_p99_ms']:.3f} ms",
                  "",
                  "| deliveries | n | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for k, label in (("all", "all subscribers"), ("same", "node 1 (publisher's, same-node)"),
                         ("cross", "nodes 2.. (cross-node)")):
            h = lat[k]
            lines.append(f"| {label} | {h['n']:,} | {h['p50']:.1f} | {h['p90']:.1f} | {h['p99']:.1f} | "
                         f"{h['p99.9']:.1f} | {h['max']:.1f} |")
        if "reach_all_ms" in x:
            ra = x["reach_all_ms"]
            lines += ["", f"{what}: time for one publication to reach every subscriber (the slowest delivery of "
                          f"each of {ra['seconds']} seconds): median {ra['p50']:.1f} ms, min {ra['min']:.1f}, "
                          f"max {ra['max']:.1f}"]
        lines += ["", "| node | connections | RSS before MB | RSS all connected MB | RSS peak MB | bytes per connection |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for i, c in enumerate(x["conns_per_node"]):
            lines.append(f"| n{i + 1} | {c:,.0f} | {m['rss_before'][i] / 1e6:.1f} | {m['rss_full'][i] / 1e6:.1f} | "
                         f"{m['rss_peak'][i] / 1e6:.1f} | {m['rss_per_conn'][i]:,.0f} |")
        lines += ["", f"bus server RSS {m['bus_rss_before'] / 1e6:.1f} -> {m['bus_rss_full'] / 1e6:.1f} MB; "
                      f"kernel slab +{(m['kernel_full']['Slab_kB'] - m['kernel_before']['Slab_kB']) / 1024:.0f} MB = "
                      f"{m['slab_per_conn']:,.0f} bytes per connection (both ends on this machine), "
                      f"TCP pages +{m['tcp_pages_per_conn']:.2f} per connection"]
    if "bcast" in r:
        x = r["bcast"]
        lines += ["", f"bcast: {x['connections']['established']:,} connections established "
                      f"({x['connections']['failed']:,} failed), per node {', '.join(f'{c:,.0f}' for c in x['conns_per_node'])}"]
        for k, c in enumerate(x["broadcasts"]):
            done = [r for r in c["reached_ms"] if r is not None]
            lines.append(f"bcast #{k}: handed to {sum(c['delivered']):,.0f} of {sum(c['conns']):,.0f} connections "
                         f"(per node {', '.join(f'{d:,.0f}' for d in c['delivered'])}); all nodes' counters there after "
                         + (f"{max(done):.1f} ms" if len(done) == len(c["reached_ms"]) else "NEVER (10 s)")
                         + f" (polled every ~{c['poll_interval_ms']:.1f} ms; the POST took {c['post_ms']:.1f} ms)")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--bus", default="nats", help="nats, redis or both (comma list), in that order")
    p.add_argument("--phases", default="room,wsbcast,bcast")
    p.add_argument("--conns", type=int, default=100_000)
    p.add_argument("--nodes", type=int, default=0, help="cluster nodes (default: conns / 18,000)")
    p.add_argument("--procs", type=int, default=0, help="loadgen worker processes (default: one per node)")
    p.add_argument("--connect-rate", type=int, default=4000, help="total connects per second")
    p.add_argument("--rate", type=float, default=1.0, help="publications per second (room phase)")
    p.add_argument("--duration", type=int, default=30, help="seconds of publishing (room phase)")
    p.add_argument("--broadcasts", type=int, default=5, help="HTTP broadcasts (bcast phase)")
    p.add_argument("--bcast-rate", type=float, default=0.5,
                   help="WebSocket broadcasts per second for --duration s (wsbcast phase)")
    p.add_argument("--ping-interval", default="25s")
    p.add_argument("--no-build", action="store_true")
    a = p.parse_args()
    a.nodes = a.nodes or math.ceil(a.conns / 18_000)
    a.procs = a.procs or a.nodes
    if a.conns / a.nodes > 19_000 or a.conns / a.procs > 19_000:
        sys.exit("over this machine's 20,000 open files per process: use more --nodes / --procs")
    os.makedirs(a.out, exist_ok=True)
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "shardhub", "-p", "shardhub-loadgen"],
                       cwd=ROOT, check=True)
    commit = subprocess.check_output(["git", "-C", ROOT, "log", "-1", "--format=%h %s"], text=True).strip()
    dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "src", "loadgen"]).returncode != 0
    meta = {"commit": commit, "src_dirty": dirty, "args": vars(a), "date": time.strftime("%Y-%m-%d %H:%M"),
            "kernel": os.uname().release, "results": {}}
    print(f"c100k-cluster: {a.conns:,} connections over {a.nodes} nodes (one shard each), {a.procs} loadgen "
          f"processes, sources {SOURCES}; bus {a.bus}; commit {commit}{' (src modified)' if dirty else ''}", flush=True)
    text = []
    for bus in a.bus.split(","):
        r = meta["results"].setdefault(bus, {})
        for phase in a.phases.split(","):
            work = os.path.join(a.out, f"{bus}-{phase}")
            if phase == "bcast":
                r[phase] = bcast_phase(bus, a, work)
            else:
                r[phase] = room_phase(bus, a, work, broadcast=phase == "wsbcast")
            with open(os.path.join(a.out, "results.json"), "w") as f:
                json.dump(meta, f, indent=1)
        text.append(report(bus, r))
        print(text[-1], flush=True)
    with open(os.path.join(a.out, "tables.md"), "w") as f:
        f.write("\n".join(text))


if __name__ == "__main__":
    sys.exit(main())
