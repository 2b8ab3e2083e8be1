#!/usr/bin/env python3
"""Cluster mode over NATS and over Redis side by side, against one node without a cluster.

Configurations, each measured --rounds times with the order rotated every round (the machine
is shared and noisy), each round on fresh processes:

  nats     three shardhub nodes (one shard each) joined over a nats-server of their own
  redis    the same three nodes over a redis-server of their own
  redis-hist  the redis configuration with room history on every node (--history-size 1000
           --history-ttl 5m): the room's publications are numbered and kept in Redis by one
           Lua script each and every node, the publisher's included, delivers them from Redis
           (docs/cluster.md, "History and recovery")
  single   one shardhub node, one shard, no cluster: the reference
  single2  one node with two shards (both of this machine's cores), the fairer reference for
           throughput: the three cluster nodes share both cores too

Nothing is pinned: on 2 cores the nodes, the bus server and shardhub-loadgen share both, so
absolute numbers are below a real deployment's; the ratios (NATS vs Redis, same-node vs
cross-node, cluster vs one node) are what this measures. One room, --subs subscribers spread
round-robin over the nodes (loadgen "Several servers"), one publisher on node 1:

  lat    --subs x --rate publishes/s for --duration s: delivery latency by subscriber URL
         (latency_by_url): node 1's subscribers are same-node, nodes 2 and 3 cross-node (their
         two histograms merged). Meanwhile the script samples every 0.25 s node 1's bus
         counters, node 2's bytes to clients, the bus server's own counters (NATS /varz,
         Redis INFO) and every process's CPU time; over the steady part of the run (publishing
         under way) that gives the bus bytes per publication, with the heartbeats measured
         idle beforehand subtracted, and CPU per process
  pay    the same with --payload bytes of padding in every publication: the envelope overhead
         is the bus bytes per publication minus the frame a client receives
  sat    --subs x --sat-rate publishes/s for --duration s, offered above what a bus carries:
         deliveries/s achieved, loss and duplicates, and node 1's bus queue drops and publish
         errors (what is lost, and where)
  max    loadgen max-rate: the highest publish rate with p99 <= --p99-ms and nothing lost
         (doubling from --start-rate, then bisecting), deliveries/s; every step is kept

Writes OUT/results.json (every number), OUT/<measure>-<config>-<round>.json (the loadgen
runs, with histograms), OUT/max-<config>-<round>.txt (the max-rate steps), OUT/table.md.

    python3 bench/cluster.py --out bench/runs/DATE-cluster [--rounds 3] [--configs nats,redis,single,single2]
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from benchlib import cpu_ticks, free_port, hdr_count, hdr_decode, hdr_merge, hdr_quantile, metrics, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
CLK_TCK = os.sysconf("SC_CLK_TCK")
NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


def stats(port):
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/stats", timeout=2))


def redis_info(port):
    """Redis INFO stats + commandstats as {key: value} over a plain socket (RESP inline)."""
    with socket.create_connection(("127.0.0.1", port), 2) as s:
        s.sendall(b"INFO everything\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            head, _, rest = buf.partition(b"\r\n")
            if head.startswith(b"$") and len(rest) >= int(head[1:]):
                break
    out = {}
    for line in buf.decode().splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


class Observer:
    """A subscriber of the script's own (standard library WebSocket client) in room-0 on one
    node, recording the exact size of every frame it receives: the frame a client gets, header
    included, without the server's bytes_out (which also counts the /metrics answers the
    sampler reads)."""

    def __init__(self, port, room="room-0"):
        self.sizes, self.example, self.stop_ev = [], None, threading.Event()
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.sock.sendall(b"GET /ws?user=observer HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        self.buf = self.buf.split(b"\r\n\r\n", 1)[1]
        self.frame()  # welcome
        body = json.dumps({"type": "join", "room": room, "id": 1}).encode()
        mask = os.urandom(4)
        self.sock.sendall(bytes([0x81, 0x80 | len(body)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(body)))
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def frame(self):
        """One frame: (its size on the wire, its payload)."""
        def need(n):
            while len(self.buf) < n:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError("closed")
                self.buf += chunk
        need(2)
        n, head = self.buf[1] & 0x7F, 2
        if n == 126:
            need(4)
            n, head = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            need(10)
            n, head = int.from_bytes(self.buf[2:10], "big"), 10
        need(head + n)
        payload, self.buf = self.buf[head:head + n], self.buf[head + n:]
        return head + n, payload

    def run(self):
        while not self.stop_ev.is_set():
            try:
                size, payload = self.frame()
            except socket.timeout:
                continue
            except OSError:
                return
            if payload.startswith(b'{"type":"message"'):
                self.sizes.append(size)
                if self.example is None:
                    self.example = payload.decode(errors="replace")

    def stop(self):
        self.stop_ev.set()
        self.thread.join()
        self.sock.close()
        return self.sizes


class Bus:
    """A bus server of our own on a free port: nats-server (with its monitoring port) or
    redis-server (no persistence)."""

    def __init__(self, kind, work):
        self.kind = kind
        self.port = free_port()
        log = open(os.path.join(work, f"{kind}-server.log"), "a")
        if kind == "nats":
            self.mport = free_port()
            cmd = [NATS, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.mport)]
            self.url = f"nats://127.0.0.1:{self.port}"
        else:
            cmd = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            self.url = f"redis://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        wait_port(self.port, what=kind)

    def counters(self):
        """The bus server's own view: messages and bytes in (published) and out (delivered to
        subscribers). NATS counts payload bytes; Redis counts every byte on its sockets (RESP
        framing included) and PUBLISH calls, not messages out."""
        if self.kind == "nats":
            v = json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/varz", timeout=2))
            return {"msgs_in": v["in_msgs"], "bytes_in": v["in_bytes"], "msgs_out": v["out_msgs"],
                    "bytes_out": v["out_bytes"]}
        info = redis_info(self.port)
        calls = re.search(r"calls=(\d+)", info.get("cmdstat_publish", "calls=0"))
        return {"msgs_in": int(calls.group(1)), "bytes_in": int(info["total_net_input_bytes"]),
                "bytes_out": int(info["total_net_output_bytes"])}

    def version(self):
        exe = NATS if self.kind == "nats" else REDIS
        return subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Hub:
    """One configuration's servers: three nodes over a bus, or one node alone."""

    def __init__(self, config, work):
        self.config, self.bus, self.nodes = config, None, []
        n, shards = (1, 1) if config == "single" else (1, 2) if config == "single2" else (3, 1)
        if n == 3:
            self.bus = Bus("redis" if config.startswith("redis") else config, work)
        for i in range(n):
            port = free_port()
            cmd = [os.path.join(BIN, "shardhub"), "--listen", f"127.0.0.1:{port}", "--shards", str(shards),
                   "--pin-cores", "false", "--presence", "false", "--log", "warn",
                   "--rate-messages-per-sec", "0", "--rate-bytes-per-sec", "0"]
            if self.bus:
                cmd += ["--cluster", self.bus.url, "--node", f"n{i + 1}"]
            if config == "redis-hist":
                cmd += ["--history-size", "1000", "--history-ttl", "5m"]
            log = open(os.path.join(work, f"{config}-n{i + 1}.log"), "a")
            self.nodes.append((subprocess.Popen(cmd, stdout=log, stderr=log), port))
        for _, port in self.nodes:
            wait_port(port, what="shardhub")
        if self.bus:
            # Serving starts after the join window; wait until every node knows the other two.
            deadline = time.time() + 15
            while not all(len(stats(p)["cluster"]["nodes"]) == n - 1 for _, p in self.nodes):
                if time.time() > deadline:
                    raise SystemExit(f"{config}: the nodes did not see each other within 15 s")
                time.sleep(0.2)

    def urls(self):
        return [f"ws://127.0.0.1:{p}/ws" for _, p in self.nodes]

    def pids(self):
        return [p.pid for p, _ in self.nodes] + ([self.bus.proc.pid] if self.bus else [])

    def stop(self):
        for p, _ in self.nodes:
            p.terminate()
        for p, _ in self.nodes:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.bus:
            self.bus.stop()


def sample(hub):
    """One sample: the time, node 1's and node 2's counters, the bus server's, CPU ticks."""
    s = {"t": time.monotonic(), "cpu": [cpu_ticks(pid) for pid in hub.pids()]}
    m1 = metrics(hub.nodes[0][1])
    s["n1"] = {k: m1.get(f"shardhub_{k}", 0.0) for k in
               ("bus_published_total", "bus_published_bytes_total", "bus_received_total", "deliveries_total",
                "bytes_out_total")}
    if len(hub.nodes) > 1:
        m2 = metrics(hub.nodes[1][1])
        s["n2"] = {k: m2.get(f"shardhub_{k}", 0.0) for k in
                   ("bus_received_total", "deliveries_total", "bytes_out_total")}
    if hub.bus:
        s["bus"] = hub.bus.counters()
    return s


class Sampler:
    """Samples every `every` seconds on a thread until stopped."""

    def __init__(self, hub, every=0.25):
        self.hub, self.samples, self.stop_ev = hub, [], threading.Event()
        self.thread = threading.Thread(target=self.run, args=(every,), daemon=True)
        self.thread.start()

    def run(self, every):
        while not self.stop_ev.wait(every):
            try:
                self.samples.append(sample(self.hub))
            except (OSError, ValueError, KeyError):
                pass  # a late answer: skip this sample

    def stop(self):
        self.stop_ev.set()
        self.thread.join()
        return self.samples


def rates(a, b):
    """Per-second rates of every counter between samples a and b."""
    dt = b["t"] - a["t"]
    out = {"dt": dt}
    for part in ("n1", "n2", "bus"):
        if part in a:
            out[part] = {k: (b[part][k] - a[part][k]) / dt for k in a[part]}
    return out


def steady(samples, idle, pids):
    """Bus bytes per publication and CPU per process over the steady part of a fan-out: from
    the second sample where node 1's deliveries move to the one before they stop; the idle
    rates (heartbeats) are subtracted from the bus counters."""
    moving = [i for i in range(1, len(samples)) if samples[i]["n1"]["deliveries_total"] >
              samples[i - 1]["n1"]["deliveries_total"]]
    if len(moving) < 4:
        return None
    a, b = samples[moving[1]], samples[moving[-2]]
    r = rates(a, b)
    out = {"window_s": r["dt"],
           "cpu_pct": [100 * (b["cpu"][i] - a["cpu"][i]) / CLK_TCK / r["dt"] for i in range(len(pids))]}
    if "n2" in r:
        out["client_bytes_per_delivery"] = r["n2"]["bytes_out_total"] / r["n2"]["deliveries_total"]
    else:
        out["client_bytes_per_delivery"] = r["n1"]["bytes_out_total"] / r["n1"]["deliveries_total"]
    if idle and "bus" in r:
        pubs = r["n1"]["bus_published_total"] - idle["n1"]["bus_published_total"]
        out["publications_per_s"] = pubs
        out["bus_bytes_per_publication"] = (r["n1"]["bus_published_bytes_total"]
                                            - idle["n1"]["bus_published_bytes_total"]) / pubs
        out["envelope_overhead"] = out["bus_bytes_per_publication"] - out["client_bytes_per_delivery"]
        # The bus server's view, idle traffic of all three nodes subtracted.
        for k in r["bus"]:
            out[f"bus_server_{k}_per_publication"] = (r["bus"][k] - idle["bus"][k]) / pubs
        out["n2_received_per_publication"] = (r["n2"]["bus_received_total"] - idle["n2"]["bus_received_total"]) / pubs
        out["n1_received_per_publication"] = (r["n1"]["bus_received_total"] - idle["n1"]["bus_received_total"]) / pubs
    return out


def loadgen(args, out, timeout):
    r = subprocess.run([os.path.join(BIN, "shardhub-loadgen"), *args, "--out", out],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"loadgen {' '.join(args)} failed: {r.stderr[-2000:]}")
    with open(out) as f:
        return json.load(f), r.stdout


def url_args(hub):
    args = []
    for u in hub.urls():
        args += ["--url", u]
    return args + ["--publisher-url", hub.urls()[0]]


def latency_split(run, hub):
    """p50/p99/p99.9/max in ms for same-node (node 1) and cross-node (the other nodes merged)
    subscribers, and over all."""
    by = run.get("latency_by_url") or {hub.urls()[0]: run["latency"]}
    same = hdr_decode(by[hub.urls()[0]]["hist"])
    out = {"all": hdr_decode(run["latency"]["hist"]), "same": same}
    others = [hdr_decode(by[u]["hist"]) for u in hub.urls()[1:]]
    if others:
        out["cross"] = hdr_merge(others)
    return {k: {"n": hdr_count(h), **{f"p{q}": hdr_quantile(h, q / 100) / 1000 for q in (50, 99, 99.9, 100)}}
            for k, h in out.items()}


def fanout(hub, a, name, idle, payload, work):
    observer = Observer(hub.nodes[-1][1])
    time.sleep(0.5)  # its join settled (and announced on the bus) before the samples start
    sampler = Sampler(hub)
    losses_before = loss_counters(hub)
    try:
        run, _ = loadgen(["fanout", *url_args(hub), "--conns", str(a.subs), "--rooms", "1", "--rate", str(a.rate),
                          "--duration", str(a.duration), "--connect-rate", "5000", "--payload", str(payload),
                          "--quiet"], os.path.join(work, f"{name}.json"), a.duration + 90)
    finally:
        samples = sampler.stop()
        sizes = observer.stop()
    # Every node's loss counters over the run (Redis history errors among them).
    losses = {k: v - losses_before.get(k, 0.0) for k, v in loss_counters(hub).items()}
    t = run["traffic"]
    st = steady(samples, idle, hub.pids())
    if st and sizes:
        # The exact frame size replaces the counter estimate (see Observer).
        st["client_bytes_per_delivery_counters"] = st["client_bytes_per_delivery"]
        st["client_bytes_per_delivery"] = statistics.mean(sizes)
        if "bus_bytes_per_publication" in st:
            st["envelope_overhead"] = st["bus_bytes_per_publication"] - st["client_bytes_per_delivery"]
    return {"observer": {"frames": len(sizes), "mean_size": statistics.mean(sizes) if sizes else None,
                         "min_size": min(sizes, default=None), "max_size": max(sizes, default=None),
                         "example": observer.example},
            "steady": st,
            "latency": latency_split(run, hub), "sent": t["sent"], "received": t["received"],
            "expected": t["expected"], "lost": t["lost"], "duplicates": t["duplicates"],
            "send_lag_p99": run["send_lag"]["p99_ms"],
            "losses_all_nodes": {k: v for k, v in losses.items() if v}}


LOSS_COUNTERS = ("drops", "dropped", "slow", "overload", "error", "full", "timeout")


def loss_counters(hub):
    """Every node's counters that say something was dropped or someone was closed, summed."""
    out = {}
    for _, port in hub.nodes:
        for k, v in metrics(port).items():
            if k.endswith("_total") and any(w in k for w in LOSS_COUNTERS):
                out[k] = out.get(k, 0.0) + v
    return out


def saturate(hub, a, name, work):
    before = metrics(hub.nodes[0][1])
    losses_before = loss_counters(hub)
    run, _ = loadgen(["fanout", *url_args(hub), "--conns", str(a.subs), "--rooms", "1", "--rate", str(a.sat_rate),
                      "--duration", str(a.duration), "--connect-rate", "5000", "--quiet"],
                     os.path.join(work, f"{name}.json"), a.duration + 90)
    time.sleep(2)
    after = metrics(hub.nodes[0][1])
    losses = {k: v - losses_before.get(k, 0.0) for k, v in loss_counters(hub).items()}
    t = run["traffic"]
    bus = {k: after.get(f"shardhub_bus_{k}_total", 0) - before.get(f"shardhub_bus_{k}_total", 0)
           for k in ("published", "queue_drops", "publish_errors")}
    return {"sent_per_s": t["sent_per_s"], "received_per_s": t["received_per_s"], "sent": t["sent"],
            "expected": t["expected"], "received": t["received"], "lost": t["lost"], "duplicates": t["duplicates"],
            "latency": latency_split(run, hub), "n1_bus": bus,
            "slow_consumer_closes": after.get("shardhub_slow_consumer_closes_total", 0)
            - before.get("shardhub_slow_consumer_closes_total", 0),
            "send_lag_p99": run["send_lag"]["p99_ms"],
            "losses_all_nodes": {k: v for k, v in losses.items() if v}}


STEP = re.compile(r"^\s*([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+(\d+)\s+(\d+)\s+(pass|FAIL)")


def max_rate(hub, a, name, work):
    run, text = loadgen(["max-rate", *url_args(hub), "--conns", str(a.subs), "--rooms", "1",
                         "--p99-ms", str(a.p99_ms), "--start-rate", str(a.start_rate), "--step-duration",
                         str(a.step_duration), "--max-steps", str(a.max_steps), "--connect-rate", "5000",
                         "--quiet"], os.path.join(work, f"{name}.json"),
                        a.max_steps * (a.step_duration + 60))
    with open(os.path.join(work, f"{name}.txt"), "w") as f:
        f.write(text)
    steps = [dict(zip(("rate", "sent_per_s", "deliveries_per_s", "p99_ms", "lost", "dups", "result"),
                      [float(x) for x in m.groups()[:6]] + [m.group(7)]))
             for m in map(STEP.match, text.splitlines()) if m]
    passed = [s for s in steps if s["result"] == "pass"]
    best = max(passed, key=lambda s: s["rate"]) if passed else None
    return {"steps": steps, "rate": best["rate"] if best else 0.0,
            "deliveries_per_s": best["deliveries_per_s"] if best else 0.0}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--configs", default="nats,redis,single,single2")
    p.add_argument("--measures", default="lat,pay,max")
    p.add_argument("--subs", type=int, default=300)
    p.add_argument("--rate", type=int, default=100)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--payload", type=int, default=1024)
    p.add_argument("--idle", type=float, default=6.0, help="seconds of idle bus traffic measured first")
    p.add_argument("--sat-rate", type=int, default=20000)
    p.add_argument("--p99-ms", type=int, default=50)
    p.add_argument("--start-rate", type=int, default=1000)
    p.add_argument("--step-duration", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=10)
    p.add_argument("--no-build", action="store_true")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "shardhub", "-p", "shardhub-loadgen"],
                       cwd=ROOT, check=True)
    configs, measures = a.configs.split(","), a.measures.split(",")
    commit = subprocess.check_output(["git", "-C", ROOT, "log", "-1", "--format=%h %s"], text=True).strip()
    dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "src", "loadgen", "Cargo.toml",
                            "Cargo.lock"]).returncode != 0
    meta = {"commit": commit, "src_dirty": dirty, "args": vars(a), "date": time.strftime("%Y-%m-%d %H:%M"),
            "kernel": os.uname().release, "cpus": os.cpu_count(), "versions": {}, "results": {}}
    results = meta["results"]
    for rnd in range(a.rounds):
        order = configs[rnd % len(configs):] + configs[:rnd % len(configs)]
        for config in order:
            hub = Hub(config, a.out)
            try:
                if hub.bus and config not in meta["versions"]:
                    meta["versions"][config] = hub.bus.version()
                idle = None
                if hub.bus:
                    s0 = sample(hub)
                    time.sleep(a.idle)
                    idle = rates(s0, sample(hub))
                r = results.setdefault(config, {}).setdefault(str(rnd), {"idle": idle})
                if "lat" in measures:
                    r["lat"] = fanout(hub, a, f"lat-{config}-{rnd}", idle, 0, a.out)
                if "pay" in measures:
                    r["pay"] = fanout(hub, a, f"pay-{config}-{rnd}", idle, a.payload, a.out)
                if "sat" in measures:
                    r["sat"] = saturate(hub, a, f"sat-{config}-{rnd}", a.out)
                if "max" in measures:
                    r["max"] = max_rate(hub, a, f"max-{config}-{rnd}", a.out)
            finally:
                hub.stop()
            shown = []
            for m in ("lat", "pay"):
                if m in r:
                    lat = r[m]["latency"]
                    shown.append(f"{m}: same p50 {lat['same']['p50']:.3f} p99 {lat['same']['p99']:.3f}"
                                 + (f", cross p50 {lat['cross']['p50']:.3f} p99 {lat['cross']['p99']:.3f}"
                                    if "cross" in lat else "") + f" ms, lost {r[m]['lost']}, dups {r[m]['duplicates']}"
                                 + (f", bus {r[m]['steady']['bus_bytes_per_publication']:.1f} B/pub"
                                    if r[m]["steady"] and "bus_bytes_per_publication" in r[m]["steady"] else ""))
            if "sat" in r:
                x = r["sat"]
                shown.append(f"sat: sent {x['sent_per_s']:,.0f}/s, delivered {x['received_per_s']:,.0f}/s, "
                             f"lost {x['lost']:,}, dups {x['duplicates']:,}, n1 bus {x['n1_bus']}, all nodes {x['losses_all_nodes']}")
            if "max" in r:
                shown.append(f"max: {r['max']['rate']:,.0f} pub/s = {r['max']['deliveries_per_s']:,.0f} deliveries/s")
            print(f"round {rnd} {config:7} " + "; ".join(shown), flush=True)
            with open(os.path.join(a.out, "results.json"), "w") as f:
                json.dump(meta, f, indent=1)
    table = render(meta, configs)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table)
    print("\n" + table)


def render(meta, configs):
    """The markdown table: median (min-max) over the rounds."""
    res = meta["results"]

    def cell(config, get, fmt="{:,.2f}"):
        xs = []
        for r in res.get(config, {}).values():
            try:
                v = get(r)
            except (KeyError, TypeError, IndexError):
                continue
            if v is not None and v == v:
                xs.append(v)
        if not xs:
            return "-"
        med = statistics.median(xs)
        return f"{fmt.format(med)} ({fmt.format(min(xs))}-{fmt.format(max(xs))})" if len(xs) > 1 else fmt.format(med)

    rows = [
        ("lat: same-node p50 (ms)", lambda r: r["lat"]["latency"]["same"]["p50"], "{:.3f}"),
        ("lat: same-node p99 (ms)", lambda r: r["lat"]["latency"]["same"]["p99"], "{:.3f}"),
        ("lat: cross-node p50 (ms)", lambda r: r["lat"]["latency"]["cross"]["p50"], "{:.3f}"),
        ("lat: cross-node p99 (ms)", lambda r: r["lat"]["latency"]["cross"]["p99"], "{:.3f}"),
        ("lat: all subscribers p99.9 (ms)", lambda r: r["lat"]["latency"]["all"]["p99.9"], "{:.3f}"),
        ("lat: lost + duplicated", lambda r: r["lat"]["lost"] + r["lat"]["duplicates"], "{:,.0f}"),
        ("lat: CPU % node 1 (publisher's)", lambda r: r["lat"]["steady"]["cpu_pct"][0], "{:.1f}"),
        ("lat: CPU % node 2", lambda r: r["lat"]["steady"]["cpu_pct"][1], "{:.1f}"),
        ("lat: CPU % bus server", lambda r: r["lat"]["steady"]["cpu_pct"][3], "{:.1f}"),
        ("bytes: frame to a client, probe only (B)", lambda r: r["lat"]["steady"]["client_bytes_per_delivery"], "{:.1f}"),
        ("bytes: on the bus per publication, probe only (B)", lambda r: r["lat"]["steady"]["bus_bytes_per_publication"], "{:.1f}"),
        ("bytes: envelope overhead, probe only (B)", lambda r: r["lat"]["steady"]["envelope_overhead"], "{:.1f}"),
        ("bytes: frame to a client, +payload (B)", lambda r: r["pay"]["steady"]["client_bytes_per_delivery"], "{:.1f}"),
        ("bytes: on the bus per publication, +payload (B)", lambda r: r["pay"]["steady"]["bus_bytes_per_publication"], "{:.1f}"),
        ("bytes: envelope overhead, +payload (B)", lambda r: r["pay"]["steady"]["envelope_overhead"], "{:.1f}"),
        ("bus server: msgs in per publication", lambda r: r["lat"]["steady"]["bus_server_msgs_in_per_publication"], "{:.2f}"),
        ("bus server: bytes in per publication (B)", lambda r: r["lat"]["steady"]["bus_server_bytes_in_per_publication"], "{:.1f}"),
        ("bus server: bytes out per publication (B)", lambda r: r["lat"]["steady"]["bus_server_bytes_out_per_publication"], "{:.1f}"),
        ("node 1 envelopes received per own publication", lambda r: r["lat"]["steady"]["n1_received_per_publication"], "{:.2f}"),
        ("node 2 envelopes received per publication", lambda r: r["lat"]["steady"]["n2_received_per_publication"], "{:.2f}"),
        ("pay: lost + duplicated", lambda r: r["pay"]["lost"] + r["pay"]["duplicates"], "{:,.0f}"),
        ("sat: publishes/s sent", lambda r: r["sat"]["sent_per_s"], "{:,.0f}"),
        ("sat: deliveries/s", lambda r: r["sat"]["received_per_s"], "{:,.0f}"),
        ("sat: lost", lambda r: r["sat"]["lost"], "{:,.0f}"),
        ("sat: duplicated", lambda r: r["sat"]["duplicates"], "{:,.0f}"),
        ("sat: p50 (ms)", lambda r: r["sat"]["latency"]["all"]["p50"], "{:,.1f}"),
        ("sat: p99 (ms)", lambda r: r["sat"]["latency"]["all"]["p99"], "{:,.1f}"),
        ("sat: node 1 bus queue drops", lambda r: r["sat"]["n1_bus"]["queue_drops"], "{:,.0f}"),
        ("sat: node 1 bus publish errors", lambda r: r["sat"]["n1_bus"]["publish_errors"], "{:,.0f}"),
        ("max: publishes/s, p99 <= bound, no loss", lambda r: r["max"]["rate"], "{:,.0f}"),
        ("max: deliveries/s at that rate", lambda r: r["max"]["deliveries_per_s"], "{:,.0f}"),
    ]
    out = [f"| measure (median of {meta['args']['rounds']}, range) | {' | '.join(configs)} |",
           f"| --- |{' ---: |' * len(configs)}"]
    for label, get, fmt in rows:
        cells = [cell(c, get, fmt) for c in configs]
        if any(x != "-" for x in cells):
            out.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
