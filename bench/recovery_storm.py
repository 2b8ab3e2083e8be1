#!/usr/bin/env python3
"""Recovery storm: N clients reconnecting at once, each --missed publications behind.

Every run starts a fresh server with room history on (`--history-size`, `--history-ttl`), then
`shardhub-loadgen recover`: N members join the room `storm`, all close at the common start, the
publisher publishes --missed messages while they are away, and after --offline seconds they all
reconnect at once and join with `recover` from the last offset they saw (mode `recover`), or
with a plain join (mode `plain`: the same reconnect storm without a replay, the baseline that
shows what the recovery itself costs). The loadgen checks every offset (gaps, duplicates) and
reports per client the time from its intended reconnect to the join ack and to the last replayed
message, and the time from the storm's start until each client was done (its max: until all
had recovered).

The script samples the server every 0.1 s from /proc (utime+stime, VmRSS) and, on another
thread, its connection count (/metrics); the storm window starts at the end of the server's idle
stretch after the members left and runs until all clients were done plus 0.5 s (details in
`storm_metrics`). `--rescan` recomputes the windows of a results.json from its raw samples. It also
reads the recovery counters from /metrics after each run, and the server's peak RSS (VmHWM).

Single node (default): server pinned to core 0 with --shards 1, or on both cores with
--shards 2; the loadgen on core 1 either way (2 cores: with 2 shards they share core 1).

Cluster (`--cluster redis`): three nodes over a redis-server of their own, the members spread
over the nodes and each reconnecting to the NEXT node (not the one it left); the history lives
in Redis (docs/cluster.md). A server that refuses history with --cluster (NATS, or a build
before cluster history) stops the script with that message (exit status 2).

    python3 bench/recovery_storm.py --out bench/runs/2026-12-02-recovery-storm \
        --conns 1000,10000 --rounds 2 --shards 1,2 --modes recover,plain
    python3 bench/recovery_storm.py --cluster redis --conns 10000 --rounds 2 \
        --out bench/runs/2026-12-02-recovery-storm-redis
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

from benchlib import cpu_ticks, free_port, metrics, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
CLK_TCK = os.sysconf("SC_CLK_TCK")
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


def proc_status(pid, key):
    """A /proc/PID/status field in bytes (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Servers:
    """One configuration's servers: one node, or three nodes over a redis-server."""

    def __init__(self, a, shards, work, tag):
        self.bus, self.nodes, self.logs = None, [], []
        history = ["--history-size", str(a.history_size), "--history-ttl", a.history_ttl]
        n = 3 if a.cluster == "redis" else 1
        if n == 3:
            port = free_port()
            log = open(os.path.join(work, f"redis-{tag}.log"), "a")
            self.bus = (subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no"], stdout=log, stderr=log), port)
            wait_port(port, what="redis-server")
        for i in range(n):
            port = free_port()
            cmd = [os.path.join(BIN, "shardhub"), "--listen", f"127.0.0.1:{port}", "--shards", str(shards),
                   "--pin-cores", "false", "--presence", "false", "--log", "warn",
                   "--rate-messages-per-sec", "0", "--rate-bytes-per-sec", "0", *history]
            if self.bus:
                cmd += ["--cluster", f"redis://127.0.0.1:{self.bus[1]}", "--node", f"n{i + 1}"]
            if n == 1 and shards == 1:
                cmd = ["taskset", "-c", "0", *cmd]
            path = os.path.join(work, f"shardhub-{tag}-n{i + 1}.log")
            self.logs.append(path)
            log = open(path, "w")
            self.nodes.append((subprocess.Popen(cmd, stdout=log, stderr=log), port))
        for i, (p, port) in enumerate(self.nodes):
            deadline = time.time() + 10
            while True:
                if p.poll() is not None:
                    self.refused(i)
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
                    break
                except OSError:
                    if time.time() > deadline:
                        self.stop()
                        raise SystemExit(f"shardhub node {i + 1} did not start within 10 s")
                    time.sleep(0.1)
        if self.bus:
            deadline = time.time() + 15
            while not all(len(json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/stats",
                                                               timeout=2))["cluster"]["nodes"]) == n - 1
                          for _, port in self.nodes):
                if time.time() > deadline:
                    self.stop()
                    raise SystemExit("the nodes did not see each other within 15 s")
                time.sleep(0.2)

    def refused(self, i):
        """Node i exited at startup: say why, plainly, and stop."""
        with open(self.logs[i]) as f:
            log = f.read().strip()
        self.stop()
        if "not supported in cluster mode" in log:
            print("recovery storm, cluster mode: this shardhub refuses room history with --cluster, so "
                  "there is nothing to measure yet. The server said:\n  " + log.replace("\n", "\n  "),
                  file=sys.stderr)
            raise SystemExit(2)
        raise SystemExit(f"shardhub node {i + 1} exited at startup:\n{log}")

    def urls(self):
        return [f"ws://127.0.0.1:{port}/ws" for _, port in self.nodes]

    def pids(self):
        """The shardhub processes (through taskset, which execs: the same pid)."""
        return [p.pid for p, _ in self.nodes]

    def stop(self):
        for p, _ in self.nodes:
            if p.poll() is None:
                p.terminate()
        for p, _ in self.nodes:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.bus:
            self.bus[0].terminate()
            self.bus[0].wait(10)


class Sampler:
    """Every `every` s: the time, CPU ticks and RSS of every node (from /proc, never late), and
    on a thread of its own the connections open (from /metrics, which a busy server answers
    late); each /proc sample carries the last connection count seen."""

    def __init__(self, servers, every=0.1):
        self.servers, self.samples, self.stop_ev = servers, [], threading.Event()
        self.conns = None
        self.threads = [threading.Thread(target=self.run, args=(every,), daemon=True),
                        threading.Thread(target=self.count, args=(every,), daemon=True)]
        for t in self.threads:
            t.start()

    def run(self, every):
        while not self.stop_ev.wait(every):
            self.samples.append({"t": time.monotonic(),
                                 "cpu": [cpu_ticks(pid) for pid in self.servers.pids()],
                                 "rss": [proc_status(pid, "VmRSS") for pid in self.servers.pids()],
                                 "conns": self.conns})

    def count(self, every):
        while not self.stop_ev.wait(every):
            try:
                self.conns = sum(metrics(port).get("shardhub_connections", 0.0) for _, port in self.servers.nodes)
            except (OSError, ValueError):
                pass  # a late answer: keep the last count

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join()
        return self.samples


def storm_metrics(samples, conns, all_done_ms):
    """Server CPU and RSS over the storm, from the samples (`t` s, `cpu` ticks and `rss` bytes
    per node, `conns` open): None if the samples do not show the members leaving.

    The /metrics connection count lags on this busy machine (by up to a second), so it only
    says that the members have left (`gone`: the first sample after the room was 90% full that
    sees fewer than 10% connected). The storm's start is read from the server's CPU instead:
    after the members left, it is idle (at most 1 tick per 0.1 s sample) until the reconnects
    come; `i0` is the last idle sample of the first idle stretch of at least 0.5 s. The window
    runs until all clients were done (the loadgen's max) plus 0.5 s of margin, which stays
    before the loadgen closes its connections (it holds them for --grace, 2 s). CPU % is the
    window's CPU seconds over the storm's own length (all done). Ticks are 10 ms, so the storms
    of a few hundred ms (1,000 members) are measured coarsely."""
    if all_done_ms is None:
        return None
    full = next((i for i, s in enumerate(samples) if s["conns"] is not None and s["conns"] >= conns * 0.9), None)
    if full is None:
        return None
    gone = next((i for i in range(full, len(samples))
                 if samples[i]["conns"] is not None and samples[i]["conns"] < conns * 0.1), None)
    if gone is None:
        return None
    cpu = [sum(s["cpu"]) for s in samples]
    idle = [i > 0 and cpu[i] - cpu[i - 1] <= 1 for i in range(len(samples))]
    i0 = next((i for i in range(gone, len(samples) - 5) if all(idle[i:i + 5])), None)
    if i0 is None:
        return None
    while i0 + 1 < len(samples) and idle[i0 + 1]:
        i0 += 1
    t_all = samples[i0]["t"] + all_done_ms / 1000 + 0.5
    i1 = next((i for i in range(i0, len(samples)) if samples[i]["t"] >= t_all), len(samples) - 1)
    s0, s1 = samples[i0], samples[i1]
    cpu_s = (cpu[i1] - cpu[i0]) / CLK_TCK
    return {"window_s": s1["t"] - s0["t"], "window_samples": [i0, i1], "server_cpu_s": cpu_s,
            "server_cpu_pct": 100 * cpu_s / (all_done_ms / 1000) if all_done_ms else None,
            "rss_before_mb": sum(samples[gone - 1]["rss"]) / 2**20,
            "rss_storm_start_mb": sum(s0["rss"]) / 2**20,
            "rss_peak_mb": max(sum(s["rss"]) for s in samples[i0:i1 + 1]) / 2**20,
            "rss_after_mb": sum(s1["rss"]) / 2**20}


def run_one(a, conns, shards, mode, rnd, work):
    tag = f"{mode}-s{shards}-{conns}-{rnd}"
    servers = Servers(a, shards, work, tag)
    out = os.path.join(work, f"storm-{tag}.json")
    try:
        before = [metrics(port) for _, port in servers.nodes]
        sampler = Sampler(servers)
        args = ["recover", "--conns", str(conns), "--missed", str(a.missed), "--offline", str(a.offline),
                "--duration", str(a.max_wait), "--connect-rate", str(a.connect_rate),
                "--source", a.source, "--rate", str(a.live_rate), "--quiet", "--out", out]
        for u in servers.urls():
            args += ["--url", u]
        if mode == "plain":
            args.append("--no-recover")
        t_start = time.monotonic()
        r = subprocess.run(["taskset", "-c", "1", os.path.join(BIN, "shardhub-loadgen"), *args],
                           capture_output=True, text=True, timeout=a.max_wait + 120)
        t_end = time.monotonic()
        samples = sampler.stop()
        after = [metrics(port) for _, port in servers.nodes]
        hwm = [proc_status(pid, "VmHWM") for pid in servers.pids()]
    finally:
        servers.stop()
    if r.returncode != 0:
        raise SystemExit(f"loadgen failed ({tag}): {r.stderr[-2000:]}")
    with open(out) as f:
        run = json.load(f)
    with open(os.path.join(work, f"storm-{tag}.txt"), "w") as f:
        f.write(r.stdout)
    ph = run.get("phases", {})
    counters = run.get("traffic", {}).get("counters", {})
    done = ph.get("done_since_storm", {})
    # The storm's start on the monotonic clock is not in the JSON; every client's done time is
    # at most t_end, so the window ends at the first sample after the loadgen's last activity
    # that is the storm: from the members leaving (connections down) to max(done) after it.
    res = {"tag": tag, "mode": mode, "shards": shards, "conns": conns, "round": rnd,
           "loadgen_s": t_end - t_start,
           "counters": counters,
           "phases_ms": {k: {q: v.get(q) for q in ("count", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms")}
                         for k, v in ph.items()},
           "all_done_ms": done.get("max_ms"),
           "connections": {k: run["connections"][k] for k in ("established", "failed", "failures")},
           "server_metrics": {k: sum(m.get(f"shardhub_{k}", 0.0) for m in after)
                              - sum(m.get(f"shardhub_{k}", 0.0) for m in before)
                              for k in ("recoveries_total", "recoveries_failed_total",
                                        "recovered_messages_total")},
           "rss_peak_vmhwm_mb": sum(hwm) / 2**20}
    storm = storm_metrics(samples, conns, done.get("max_ms"))
    if storm:
        res["storm"] = storm
    res["rss_end_mb"] = sum(samples[-1]["rss"]) / 2**20 if samples else None
    # The raw samples (time from the loadgen's start, CPU ticks, RSS bytes, connections), so the
    # window can be checked or recomputed.
    res["samples"] = [{"t": round(x["t"] - t_start, 3), "cpu": x["cpu"], "rss": x["rss"], "conns": x["conns"]}
                      for x in samples]
    return res


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def fmt(v, f="{:,.1f}"):
    return "-" if v is None else f.format(v)


def table(results, modes):
    rows = ["| members | shards | mode | rounds | ack p50 / p99 (ms) | last missed msg p50 / p99 (ms) | "
            "all done (ms) | storm CPU (s) | server CPU % | RSS before / peak / after (MB) | "
            "recovered / failed | server recoveries / msgs | gaps / dups / not done |",
            "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    keys = sorted({(r["conns"], r["shards"]) for r in results})
    for conns, shards in keys:
        for mode in modes:
            rs = [r for r in results if (r["conns"], r["shards"], r["mode"]) == (conns, shards, mode)]
            if not rs:
                continue

            def m(get):
                return median([get(r) for r in rs])

            def ph(name, q):
                return m(lambda r: r["phases_ms"].get(name, {}).get(q))

            def st(k):
                return m(lambda r: r.get("storm", {}).get(k))

            def c(k):
                return sum(r["counters"].get(k, 0) for r in rs)

            ok = c("recovered_true") if mode == "recover" else c("rejoined")
            bad = c("recovered_false") + c("reconnect_failed")
            rows.append(
                f"| {conns:,} | {shards} | {mode} | {len(rs)} | {fmt(ph('ack', 'p50_ms'))} / {fmt(ph('ack', 'p99_ms'))} | "
                f"{fmt(ph('replayed', 'p50_ms'))} / {fmt(ph('replayed', 'p99_ms'))} | "
                f"{fmt(m(lambda r: r['all_done_ms']), '{:,.0f}')} | {fmt(st('server_cpu_s'), '{:.2f}')} | "
                f"{fmt(st('server_cpu_pct'), '{:.0f}')} | "
                f"{fmt(st('rss_before_mb'))} / {fmt(st('rss_peak_mb'))} / {fmt(st('rss_after_mb'))} | "
                f"{ok:,} / {bad:,} | "
                f"{sum(r['server_metrics']['recoveries_total'] for r in rs):,.0f} / "
                f"{sum(r['server_metrics']['recovered_messages_total'] for r in rs):,.0f} | "
                f"{c('gaps')} / {c('duplicates')} / {c('not_done')} |")
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "runs", "2026-12-02-recovery-storm"))
    p.add_argument("--conns", default="10000", help="comma list of member counts")
    p.add_argument("--shards", default="1,2", help="comma list (single node)")
    p.add_argument("--modes", default="recover,plain", help="recover and/or plain (baseline)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--missed", type=int, default=100)
    p.add_argument("--offline", type=float, default=2.0)
    p.add_argument("--max-wait", type=float, default=60.0, help="loadgen --duration bound (s)")
    p.add_argument("--connect-rate", type=float, default=2000.0, help="setup ramp (connections/s)")
    p.add_argument("--live-rate", type=float, default=0.0, help="live publishes/s during the storm")
    p.add_argument("--history-size", type=int, default=1000)
    p.add_argument("--history-ttl", default="5m")
    p.add_argument("--source", default="127.0.0.1-127.0.0.4")
    p.add_argument("--cluster", choices=["none", "redis"], default="none")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--rescan", action="store_true",
                   help="recompute the storm windows of OUT/results.json from its samples, run nothing")
    a = p.parse_args()
    if a.rescan:
        path = os.path.join(a.out, "results.json")
        with open(path) as f:
            d = json.load(f)
        for r in d["results"]:
            r.pop("storm", None)
            storm = storm_metrics(r["samples"], r["conns"], r["all_done_ms"])
            if storm:
                r["storm"] = storm
        with open(path, "w") as f:
            json.dump(d, f, indent=1)
        print(table(d["results"], d["meta"]["args"]["modes"].split(",")))
        return
    if a.history_size < a.missed + 10:
        raise SystemExit("--history-size must exceed --missed (with some slack)")
    if not a.no_build:
        subprocess.run(["nice", "-n", "10", "cargo", "build", "--release", "-q", "-p", "shardhub", "-p",
                        "shardhub-loadgen"], cwd=ROOT, check=True)
    os.makedirs(a.out, exist_ok=True)
    conns = [int(c) for c in a.conns.split(",")]
    shards = [1] if a.cluster == "redis" else [int(s) for s in a.shards.split(",")]
    modes = a.modes.split(",")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    results = []
    for rnd in range(a.rounds):
        for n in conns:
            for s in shards:
                # Rotate the order each round: the machine is shared and noisy.
                order = modes[rnd % len(modes):] + modes[:rnd % len(modes)]
                for mode in order:
                    r = run_one(a, n, s, mode, rnd, a.out)
                    results.append(r)
                    print(f"{r['tag']}: all done {fmt(r['all_done_ms'], '{:,.0f}')} ms, "
                          f"storm CPU {fmt(r.get('storm', {}).get('server_cpu_s'), '{:.2f}')} s, "
                          f"counters {r['counters']}", flush=True)
    meta = {"commit": commit, "args": vars(a), "load_before": open("/proc/loadavg").read().strip()}
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(table(results, modes))


if __name__ == "__main__":
    main()
