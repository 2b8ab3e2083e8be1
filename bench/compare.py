#!/usr/bin/env python3
"""shardhub side by side with the strongest WebSocket servers, measured in one run on this machine.

Every server runs on one core (`taskset -c 0`, one thread), the neutral load generator
(shardhub-loadgen) on core 1, messages are 64-byte probes. The measures (issue 12's table; pick
with --measures, default all):

  connect  user-space memory per idle connection (server RSS growth while --idle connections are
           held, sampled at the end of the hold; the peak is in results.json), connections/s
           (--idle connections opened at once) and server CPU per connection until all are open,
           with its kernel part: one `connect` run
  cpu      server CPU per delivery at unsaturated loads (--cpu-loads, default 1,000 subs x 50/s
           and 5,000 subs x 10/s): the server's utime+stime from /proc/PID/stat, sampled every
           0.1 s, over the full seconds of the publishing window (its first and last second
           dropped), divided by the deliveries the subscribers counted in that window; and
           its kernel part (stime) alone, where each loopback send's TCP work is counted
  maxdel   max deliveries/s to --maxdel-subs subscribers with p99 <= --maxdel-p99 ms and no loss
           (loadgen max-rate: doubling, then bisecting short fan-out runs)
  maxpub   max publishes/s to --maxpub-subs subscribers with p99 <= --maxpub-p99 ms, no loss
  p99      p99 delivery latency at --p99-load (default 5,000 subs x 40/s)
  echo     --echo-clients clients, closed loop (one request outstanding each): round trips/s

--rounds N repeats everything; every measurement starts a fresh server, and within a round the
servers take turns per measure (the order rotated each round), so a noisy stretch of the shared
machine hits every server alike. Reported: per-measure medians with [min-max] over the rounds,
and shardhub's ratio to the BEST peer of each row (not to the weakest).

Peers (--servers, default shardhub,uws,tokio-batched):

  uws            uWebSockets built from source, the hub of ../shared/bench-peers/uws (one
                 thread, epoll, app.publish to one topic, maxBackpressure 16 MiB). Sources are
                 fetched snapshots of github.com/uNetworking/uWebSockets and of uSockets at the
                 commit uWebSockets pins as its submodule (86097c490263ab662d62e8e7b541390bdec7d149
                 when this was written). To get the trees from fetched git directories:
                   mkdir -p UWS_TREE USOCKETS_TREE
                   git --git-dir=UWS_GIT archive HEAD | tar -x -C UWS_TREE
                   git --git-dir=USOCKETS_GIT archive 86097c490263ab662d62e8e7b541390bdec7d149 \\
                       | tar -x -C USOCKETS_TREE
                 then `--uws-tree UWS_TREE --usockets-tree USOCKETS_TREE` builds it with
                 bench-peers/uws/build.sh into target/peers/uws/; `--uws-bin` runs a prebuilt
                 uws_hub instead; without either, target/peers/uws/uws_hub from an earlier build.
  tokio-batched  bench-peers/tokio-batched (tokio + tokio-tungstenite, a broadcast channel and a
                 writer per client feeding up to 64 messages per flush), copied to
                 target/peers/tokio-batched-src and built with cargo (crates.io); run with
                 TOKIO_WORKER_THREADS=1 and its defaults otherwise (tungstenite's 128 KiB read
                 and write buffers, listen backlog 128); it takes the bare PORT as its one
                 argument (src/main.rs parses a port: the `127.0.0.1:PORT` that bench-peers'
                 README shows would not parse, and it would listen on 9002).
  gorilla        bench/peers/gorilla, the gorilla/websocket chat-hub pattern (Debian's
                 golang-go and golang-github-gorilla-websocket-dev, built offline), GOMAXPROCS=1.
                 It also stands in for Melody (github.com/olahol/melody), a thin layer over
                 gorilla/websocket: Melody is not packaged in Debian and Go modules cannot be
                 downloaded on this machine (only crates.io, PyPI, Debian and npm are reachable).
  node-ws        bench/peers/node-ws, Node's `ws` (npm).
  socketio       bench/peers/socketio, Socket.IO (npm `socket.io`, io.emit to everyone), driven
                 over Engine.IO v4 WebSocket by the load generator's `socketio` adapter.
  tokio-tungstenite  bench/peers/tokio-tungstenite, the naive peer (one frame per system call)
                 of the 2026-11-22 runs; not a default, kept to reproduce those.

bench-peers is found at ../shared/bench-peers relative to the repository root; --bench-peers or
SHARDHUB_BENCH_PEERS overrides it. Peers are broadcast-to-all chat servers (loadgen --adapter
raw: every message goes to every client, the sender included); shardhub runs its own protocol
(one room, publishers with exclude_self). So in `echo` a broadcast peer sends every request to
all --echo-clients clients (each client counts only its own answers): that row measures what
each server does with 100 chatting clients, not a like-for-like echo.

Writes bench/runs/<date>-compare-<name>/ (--name, default the measures): every raw loadgen JSON
(<server>-<measure>-r<round>.json), results.json (every sample and setting) and summary.md (the
exact command, the machine, load average before and after, every peer's settings, and the
table, paste-ready for the README).

    python3 bench/compare.py [--servers shardhub,uws,tokio-batched] [--rounds 1]
        [--measures connect,cpu,maxdel,maxpub,p99,echo] [--uws-tree T --usockets-tree T | --uws-bin B]

A small smoke run: --idle 500 --cpu-loads 100x50 --maxdel-subs 100 --maxpub-subs 200
--p99-load 200x40 --echo-clients 10 --duration 3 --step-duration 1 --max-steps 3 --out /tmp/smoke
(4 minutes for all six servers; not a measurement)
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

from benchlib import cpu_ticks, free_port, rss, sys_ticks, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "bench", "peers")
TARGET_PEERS = os.path.join(ROOT, "target", "peers")
LOADGEN = os.path.join(ROOT, "target", "release", "shardhub-loadgen")
SERVER_CORE, CLIENT_CORE = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MEASURES = ["connect", "cpu", "maxdel", "maxpub", "p99", "echo"]
ALL_SERVERS = ["shardhub", "uws", "tokio-batched", "gorilla", "node-ws", "socketio", "tokio-tungstenite"]


def sh(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kw)


def nice(cmd):
    # Two cores shared by everyone on this machine: builds yield to the rest.
    return ["nice", "-n", "10"] + cmd


def bench_peers_dir(a):
    return os.path.abspath(a.bench_peers or os.environ.get("SHARDHUB_BENCH_PEERS")
                           or os.path.join(ROOT, "..", "shared", "bench-peers"))


def uws_binary(a):
    if a.uws_bin:
        return os.path.abspath(a.uws_bin)
    return os.path.join(TARGET_PEERS, "uws", "uws_hub")


def build(servers, a):
    """Builds shardhub, the load generator and every peer in `servers`; returns the settings and
    versions to record per peer."""
    notes = {}
    sh(nice(["cargo", "build", "--release", "-q", "-p", "shardhub", "-p", "shardhub-loadgen"]), cwd=ROOT)
    bp = bench_peers_dir(a)
    if "uws" in servers:
        if a.uws_tree or a.usockets_tree:
            if not (a.uws_tree and a.usockets_tree):
                sys.exit("compare: --uws-tree and --usockets-tree go together")
            sh(nice([os.path.join(bp, "uws", "build.sh"), a.uws_tree, a.usockets_tree,
                     os.path.join(TARGET_PEERS, "uws")]))
        if not os.access(uws_binary(a), os.X_OK):
            sys.exit(f"compare: no {uws_binary(a)}: give --uws-tree and --usockets-tree (see the "
                     "docstring for fetching them) or --uws-bin")
    if "tokio-batched" in servers:
        # A copy, so neither Cargo.lock nor target/ is written into the shared folder.
        src = os.path.join(TARGET_PEERS, "tokio-batched-src")
        shutil.copytree(os.path.join(bp, "tokio-batched"), src, dirs_exist_ok=True)
        manifest = os.path.join(src, "Cargo.toml")
        with open(manifest) as f:
            text = f.read()
        if "[workspace]" not in text:
            # The copy lies inside this repository: its own workspace, not a stray member of ours.
            with open(manifest, "a") as f:
                f.write("\n[workspace]\n")
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(TARGET_PEERS, "cargo"))
        sh(nice(["cargo", "build", "--release", "-q"]), cwd=src, env=env)
        notes["tokio-batched"] = "crates: " + locked_versions(os.path.join(src, "Cargo.lock"),
                                                             ["tokio", "tokio-tungstenite", "tungstenite"])
    if "tokio-tungstenite" in servers:
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(TARGET_PEERS, "cargo"))
        sh(nice(["cargo", "build", "--release", "-q"]), cwd=os.path.join(PEERS, "tokio-tungstenite"), env=env)
    if "gorilla" in servers:
        if not shutil.which("go") or not os.path.isdir("/usr/share/gocode/src/github.com/gorilla/websocket"):
            sys.exit("compare: gorilla needs Debian's golang-go and golang-github-gorilla-websocket-dev")
        # GOPATH mode with Debian's packaged sources: builds offline.
        env = dict(os.environ, GOPATH="/usr/share/gocode", GO111MODULE="off",
                   GOCACHE=os.path.join(ROOT, "target", "go-cache"))
        sh(nice(["go", "build", "-o", os.path.join(TARGET_PEERS, "peer-gorilla"), "."]),
           cwd=os.path.join(PEERS, "gorilla"), env=env)
        notes["gorilla"] = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    for peer, pkg in (("node-ws", "ws"), ("socketio", "socket.io")):
        if peer in servers:
            d = os.path.join(PEERS, peer)
            sh(nice(["npm", "ci", "--silent", "--no-audit", "--no-fund"]), cwd=d)
            with open(os.path.join(d, "node_modules", pkg, "package.json")) as f:
                version = json.load(f)["version"]
            node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
            notes[peer] = f"{pkg} {version}, node {node}"
    return notes


def locked_versions(lock, names):
    """`name version` of each of `names` in a Cargo.lock (what the peer was built with)."""
    out, name = [], None
    with open(lock) as f:
        for line in f:
            if line.startswith("name = "):
                name = line.split('"')[1]
            elif line.startswith("version = ") and name in names:
                out.append(f"{name} {line.split(chr(34))[1]}")
    return ", ".join(out)


class Peer:
    """How to start one server and speak to it."""

    def __init__(self, name, cmd, env, path, adapter, settings):
        self.name, self.cmd, self.env, self.path = name, cmd, env, path
        self.adapter, self.settings = adapter, settings


def peer(name, a):
    """The Peer called `name`; its `cmd` is a function of the port."""
    if name == "shardhub" or name.startswith("shardhub@"):
        # `shardhub@PATH`: another build (an earlier commit's), measured like this tree's.
        binary = name.partition("@")[2] or os.path.join(ROOT, "target", "release", "shardhub")
        flags = ["--shards", "1", "--presence", "false", "--log", "warn", "--pin-cores", "false",
                 # The peers have no per-connection abuse limits; one publisher exceeds ours.
                 "--rate-messages-per-sec", "0", "--rate-bytes-per-sec", "0"]
        return Peer(name, lambda p: [binary, "--listen", f"127.0.0.1:{p}"] + flags, {}, "/ws", "hub",
                    ("this tree's release build" if binary.startswith(ROOT) else binary)
                    + ", `" + " ".join(flags) + "` (defaults otherwise)")
    if name == "uws":
        return Peer(name, lambda p: [uws_binary(a), str(p)], {}, "/", "raw",
                    f"{uws_binary(a)} (bench-peers/uws/uws_hub.cpp, -O3 -march=native LTO, no SSL, no zlib)")
    if name == "tokio-batched":
        return Peer(name, lambda p: [os.path.join(TARGET_PEERS, "cargo", "release", "tokio-batched-hub"), str(p)],
                    {"TOKIO_WORKER_THREADS": "1"}, "/", "raw",
                    "TOKIO_WORKER_THREADS=1; WS_READ_BUF, WS_WRITE_BUF, LISTEN_BACKLOG unset "
                    "(tungstenite's 128 KiB buffers, backlog 128); MAX_BATCH 64, channel 4096")
    if name == "tokio-tungstenite":
        return Peer(name, lambda p: [os.path.join(TARGET_PEERS, "cargo", "release", "peer-tokio-tungstenite"),
                                     f"127.0.0.1:{p}"], {}, "/", "raw",
                    "bench/peers/tokio-tungstenite (current_thread, one frame per write)")
    if name == "gorilla":
        return Peer(name, lambda p: [os.path.join(TARGET_PEERS, "peer-gorilla"), f"127.0.0.1:{p}"],
                    {"GOMAXPROCS": "1"}, "/", "raw", "GOMAXPROCS=1")
    if name == "node-ws":
        return Peer(name, lambda p: ["node", os.path.join(PEERS, "node-ws", "server.js"), f"127.0.0.1:{p}"],
                    {}, "/", "raw", "one Node process")
    if name == "socketio":
        return Peer(name, lambda p: ["node", os.path.join(PEERS, "socketio", "server.js"), f"127.0.0.1:{p}"],
                    {}, "/socket.io/?EIO=4&transport=websocket", "socketio",
                    "one Node process, WebSocket transport only, io.emit to every socket")
    raise SystemExit(f"compare: unknown server {name} (known: {', '.join(ALL_SERVERS)})")


class Server:
    """One fresh server process pinned to the server core; stopped on leaving the `with`, also
    on errors (a stray server would skew every later measurement)."""

    def __init__(self, p):
        self.peer, self.port = p, free_port()
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE] + p.cmd(self.port),
                                     env=dict(os.environ, **p.env),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port, what=p.name)
        except BaseException:
            self.stop()
            raise
        time.sleep(0.3)  # let it settle before the RSS/CPU baseline

    def url(self):
        return f"ws://127.0.0.1:{self.port}{self.peer.path}"

    def stop(self):
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Sampler:
    """Samples (wall time, server CPU ticks, server RSS) every `every` s in a thread, and the
    kernel's part of the CPU ticks (stime) beside them in `sys`."""

    def __init__(self, pid, every=0.1):
        self.pid, self.every, self.samples, self.sys = pid, every, [], []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            self.samples.append((time.time(), cpu_ticks(self.pid), rss(self.pid)))
            self.sys.append(sys_ticks(self.pid))
            if self._stop.wait(self.every):
                return

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def ticks_at(self, t, kernel=False):
        """CPU ticks (with `kernel`, stime alone) at wall time t, interpolated between samples."""
        s = [(w, k if kernel else c) for (w, c, _), k in zip(self.samples, self.sys)]
        for (t0, c0), (t1, c1) in zip(s, s[1:]):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / max(t1 - t0, 1e-9)
        return s[0][1] if t < s[0][0] else s[-1][1]


def loadgen(srv, scenario, out, args, timeout):
    """Runs one loadgen scenario against `srv` on the client core; returns its JSON summary
    (--out for runs; for max-rate the search with its steps, from stdout)."""
    cmd = ["taskset", "-c", CLIENT_CORE, LOADGEN, scenario, "--url", srv.url(), "--adapter", srv.peer.adapter,
           "--quiet", "--json", "--label", srv.peer.name] + [str(x) for x in args]
    if scenario != "max-rate":
        cmd += ["--out", out]
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"compare: {srv.peer.name} {scenario} exceeded {timeout:.0f} s", file=sys.stderr)
        return None
    if r.returncode != 0:
        print(f"compare: {srv.peer.name} {scenario} exited {r.returncode}: {r.stderr.strip()[-500:]}",
              file=sys.stderr)
    if scenario == "max-rate":
        with open(out, "w") as f:
            f.write(r.stdout)
    try:
        with open(out) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def window(summary):
    """The publishing window of a fan-out run as (start, end) wall times and the deliveries in it:
    the full seconds of the timeline with publishes, without the first and the last."""
    tl = summary["timeline"]
    secs = [s for s in tl if s["sent"] > 0][1:-1]
    if len(secs) < 2:
        return None
    origin = summary["started_unix_ms"] / 1000
    return origin + secs[0]["t_s"], origin + secs[-1]["t_s"] + 1, sum(s["received"] for s in secs)


def load(spec):
    subs, rate = spec.lower().split("x")
    return int(subs), float(rate)


def fmt_rate(r):
    return f"{r:g}"


def fanout_args(subs, rate, duration):
    return ["--conns", subs, "--rooms", 1, "--publishers", 1, "--rate", rate, "--duration", duration,
            "--connect-rate", 5000]


def measure(m, p, a, outdir, rnd):
    """Runs measure `m` on a fresh server of peer `p`; returns {key: value}."""
    out = lambda tag, ext="json": os.path.join(outdir, f"{p.name.replace('/', '_')}-{tag}-r{rnd}.{ext}")
    res = {}
    d = a.duration
    if m == "connect":
        with Server(p) as srv, Sampler(srv.proc.pid, 0.25) as smp:
            c = loadgen(srv, "connect", out("connect"), ["--conns", a.idle, "--rate", 0, "--hold", a.hold],
                        timeout=a.hold + 120)
        if not c:
            return res
        est = c["connections"]["established"]
        res["established"] = est
        res["connect_rate"] = c["connections"]["connect_rate_per_s"]
        base = smp.samples[0][2]
        # Held: the seconds whose timeline sample (and the one before) had every connection open.
        origin = c["started_unix_ms"] / 1000
        tl = c["timeline"]
        full = [s["t_s"] for prev, s in zip(tl, tl[1:]) if prev["conns"] >= est and s["conns"] >= est]
        held = [r for t, _, r in smp.samples if full and origin + full[0] <= t < origin + full[-1] + 1]
        if est and held:
            res["idle_bytes"] = (held[-1] - base) / est
        if est and full:
            # Server CPU from before the first connect to the first second all were open (the
            # hold after it is idle): accept, handshake, greeting, and the kernel's TCP work.
            done = origin + full[0]
            res["connect_cpu"] = (smp.ticks_at(done) - smp.samples[0][1]) / CLK_TCK / est * 1e6
            res["connect_cpu_sys"] = (smp.ticks_at(done, True) - smp.sys[0]) / CLK_TCK / est * 1e6
        res["idle_bytes_peak"] = (max(r for _, _, r in smp.samples) - base) / max(est, 1)
    elif m == "cpu":
        for spec in a.cpu_loads.split(","):
            subs, rate = load(spec)
            key = f"cpu_{subs}x{fmt_rate(rate)}"
            with Server(p) as srv, Sampler(srv.proc.pid) as smp:
                f = loadgen(srv, "fanout", out(key), fanout_args(subs, rate, d), timeout=d + 90)
            w = f and window(f)
            if not w or not w[2]:
                continue
            t0, t1, deliveries = w
            res[key] = (smp.ticks_at(t1) - smp.ticks_at(t0)) / CLK_TCK / deliveries * 1e6
            # The kernel's part (stime): a loopback send's TCP work, the same in every server.
            res[key + "_sys"] = (smp.ticks_at(t1, True) - smp.ticks_at(t0, True)) / CLK_TCK / deliveries * 1e6
            res[key + "_dps"] = deliveries / (t1 - t0)
            res[key + "_p99"] = f["latency"]["p99_ms"]
            res[key + "_lost"] = f["traffic"]["lost"]
    elif m in ("maxdel", "maxpub"):
        subs, p99 = (a.maxdel_subs, a.maxdel_p99) if m == "maxdel" else (a.maxpub_subs, a.maxpub_p99)
        start = a.maxdel_start if m == "maxdel" else a.maxpub_start
        with Server(p) as srv:
            # A search's summary (its steps, the best run inside), not a run: `.search.json`.
            s = loadgen(srv, "max-rate", out(m, "search.json"), ["--conns", subs, "--rooms", 1, "--publishers", 1,
                                                  "--p99-ms", p99, "--start-rate", start,
                                                  "--step-duration", a.step_duration, "--max-steps", a.max_steps,
                                                  "--connect-rate", 5000],
                        timeout=a.max_steps * (a.step_duration + 30) + 60)
        if s is None:
            return res
        best = s.get("best_run")
        res[m + "_steps"] = len(s.get("steps", []))
        if best:
            res[m + "_rate"] = s["best_rate"]
            res[m + "_dps"] = best["traffic"]["received_per_s"]
            res[m + "_p99"] = best["latency"]["p99_ms"]
        elif s.get("steps"):
            # No step passed: no rate to report, only how low the search went.
            res[m + "_failed_down_to"] = min(st["rate"] for st in s["steps"])
    elif m == "p99":
        subs, rate = load(a.p99_load)
        with Server(p) as srv:
            f = loadgen(srv, "fanout", out("p99"), fanout_args(subs, rate, d), timeout=d + 90)
        if f:
            res["p99_ms"] = f["latency"]["p99_ms"]
            res["p99_p50_ms"] = f["latency"]["p50_ms"]
            res["p99_lost"] = f["traffic"]["lost"]
    elif m == "echo":
        with Server(p) as srv:
            e = loadgen(srv, "echo", out("echo"), ["--conns", a.echo_clients, "--rate", 0, "--duration", d,
                                                   "--connect-rate", 0], timeout=d + 60)
        if e:
            res["echo_rate"] = e["traffic"]["received_per_s"]
            res["echo_p99"] = e["latency"]["p99_ms"]
    return res


def rows(a):
    """(label, key, format, better) of the table, in the issue's order, for the chosen measures."""
    r = []
    ms = a.measures
    if "connect" in ms:
        r.append((f"user-space memory per idle connection ({a.idle:,})", "idle_bytes", "{:,.0f} B", "lower"))
        r.append((f"connections/s ({a.idle:,} at once)", "connect_rate", "{:,.0f}", "higher"))
        r.append(("server CPU per connection (accept to greeting)", "connect_cpu", "{:.1f} us", "lower"))
        r.append(("of which in the kernel (stime)", "connect_cpu_sys", "{:.1f} us", "lower"))
    if "cpu" in ms:
        for spec in a.cpu_loads.split(","):
            subs, rate = load(spec)
            r.append((f"server CPU per delivery, {subs:,} subs x {fmt_rate(rate)}/s (unsaturated)",
                      f"cpu_{subs}x{fmt_rate(rate)}", "{:.1f} us", "lower"))
            r.append((f"of which in the kernel (stime), {subs:,} x {fmt_rate(rate)}/s",
                      f"cpu_{subs}x{fmt_rate(rate)}_sys", "{:.1f} us", "lower"))
    if "maxdel" in ms:
        r.append((f"max deliveries/s, {a.maxdel_subs:,} subs, p99 <= {a.maxdel_p99:g} ms", "maxdel_dps",
                  "{:,.0f}", "higher"))
    if "maxpub" in ms:
        r.append((f"max publishes/s, {a.maxpub_subs:,} subs, p99 <= {a.maxpub_p99:g} ms", "maxpub_rate",
                  "{:,.1f}", "higher"))
    if "p99" in ms:
        subs, rate = load(a.p99_load)
        r.append((f"p99 at {subs:,} subs x {fmt_rate(rate)}/s", "p99_ms", "{:,.1f} ms", "lower"))
    if "echo" in ms:
        r.append((f"echo, {a.echo_clients:,} clients, closed loop: round trips/s", "echo_rate", "{:,.0f}", "higher"))
    return r


def table(results, servers, a):
    """The paste-ready markdown table: median [min-max] per server, shardhub / best peer."""
    n = a.rounds
    head = f"| measure ({n} round{'s' if n > 1 else ''}, each a fresh server) | " + " | ".join(servers)
    lines = [head + (" | shardhub vs best peer |" if "shardhub" in servers else " |"),
             "| --- |" + " ---: |" * len(servers) + (" ---: |" if "shardhub" in servers else "")]
    for label, key, fmt, better in rows(a):
        cells, med = [], {}
        for s in servers:
            vals = [r[key] for r in results[s] if r.get(key) is not None]
            if not vals:
                floor = [r[key.split("_")[0] + "_failed_down_to"] for r in results[s]
                         if key.split("_")[0] + "_failed_down_to" in r]
                cells.append(f"none passed (tried down to {min(floor):.3g} publishes/s)" if floor else "n/a")
                continue
            med[s] = statistics.median(vals)
            c = fmt.format(med[s])
            if len(vals) > 1:
                c += f" [{fmt.format(min(vals))}-{fmt.format(max(vals))}]"
            cells.append(c)
        line = f"| {label} | " + " | ".join(cells) + " |"
        if "shardhub" in servers:
            peers = {s: v for s, v in med.items() if not s.startswith("shardhub")}
            ratio = ""
            me = med.get("shardhub")
            if me is not None and peers:
                best = (max if better == "higher" else min)(peers, key=peers.get)
                b = peers[best]
                # Ratio > 1: shardhub better, whichever direction the measure goes.
                if me and b:
                    r = me / b if better == "higher" else b / me
                    ratio = f"{r:.2f}x ({best})"
            line += f" {ratio} |"
        lines.append(line)
    return "\n".join(lines)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="shardhub,uws,tokio-batched",
                    help=f"comma list of {', '.join(ALL_SERVERS)}; shardhub@PATH runs another shardhub build")
    ap.add_argument("--measures", default=",".join(MEASURES), help=f"comma list of {', '.join(MEASURES)}")
    ap.add_argument("--rounds", type=int, default=1, help="repeats, each measurement on a fresh server")
    ap.add_argument("--name", help="run directory suffix (default: the measures)")
    ap.add_argument("--out", help="run directory (default bench/runs/<date>-compare-<name>)")
    ap.add_argument("--bench-peers", help="bench-peers folder (default $SHARDHUB_BENCH_PEERS or "
                                          "../shared/bench-peers from the repository root)")
    ap.add_argument("--uws-tree", help="uWebSockets source tree to build the uws peer from")
    ap.add_argument("--usockets-tree", help="uSockets source tree (the commit uWebSockets pins)")
    ap.add_argument("--uws-bin", help="a prebuilt uws_hub (bench-peers/uws/build.sh)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--idle", type=int, default=10000, help="connections of the connect measure")
    ap.add_argument("--hold", type=float, default=5, help="seconds the idle connections are held")
    ap.add_argument("--cpu-loads", default="1000x50,5000x10", help="SUBSxRATE,... for cpu")
    ap.add_argument("--maxdel-subs", type=int, default=1000)
    ap.add_argument("--maxdel-p99", type=float, default=50)
    ap.add_argument("--maxdel-start", type=float, default=100, help="first publish rate of the search")
    ap.add_argument("--maxpub-subs", type=int, default=5000)
    ap.add_argument("--maxpub-p99", type=float, default=100)
    ap.add_argument("--maxpub-start", type=float, default=5, help="first publish rate of the search")
    ap.add_argument("--p99-load", default="5000x40", help="SUBSxRATE for p99")
    ap.add_argument("--echo-clients", type=int, default=100)
    ap.add_argument("--duration", type=float, default=10, help="seconds of each cpu, p99 and echo run")
    ap.add_argument("--step-duration", type=float, default=4, help="seconds per max-rate step")
    ap.add_argument("--max-steps", type=int, default=10, help="max-rate steps per search")
    a = ap.parse_args()
    servers = a.servers.split(",")
    a.measures = a.measures.split(",")
    for m in a.measures:
        if m not in MEASURES:
            sys.exit(f"compare: unknown measure {m} (known: {', '.join(MEASURES)})")
    peers = {s: peer(s, a) for s in servers}
    load_before = loadavg()
    notes = {} if a.no_build else build(servers, a)
    name = a.name or "-".join(a.measures)
    outdir = a.out or os.path.join(ROOT, "bench", "runs", f"{datetime.date.today().isoformat()}-compare-{name}")
    os.makedirs(outdir, exist_ok=True)
    results = {s: [] for s in servers}
    began = time.time()
    for rnd in range(1, a.rounds + 1):
        for s in servers:
            results[s].append({})
        # Rotate the order each round so no server always runs first (or last) after a build.
        k = (rnd - 1) % len(servers)
        order = servers[k:] + servers[:k]
        for m in a.measures:
            for s in order:
                print(f"== round {rnd} {m} {s}", file=sys.stderr)
                try:
                    r = measure(m, peers[s], a, outdir, rnd)
                except (Exception, SystemExit) as e:
                    # One server failing to start or to answer costs its cell, not the run.
                    print(f"compare: {s} {m} round {rnd} failed: {e}", file=sys.stderr)
                    r = {}
                print(json.dumps(r), file=sys.stderr)
                results[s][-1].update(r)
    took = time.time() - began
    load_after = loadavg()
    md = table(results, servers, a)
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"],
                         capture_output=True, text=True).stdout.strip()
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    settings = "\n".join(f"* **{s}**: {peers[s].settings}" + (f"; {notes[s]}" if s in notes else "")
                         for s in servers)
    summary = (
        f"# compare: {', '.join(servers)}\n\n"
        f"    python3 bench/compare.py {' '.join(sys.argv[1:])}\n\n"
        f"Run {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')} at shardhub "
        f"{rev}, {took / 60:.1f} min, on {cpu}, {os.cpu_count()} cores, kernel {os.uname().release}; "
        f"load average (1/5/15 min) {load_before} before, {load_after} after. Each server pinned to "
        f"core {SERVER_CORE} with one thread, shardhub-loadgen pinned to core {CLIENT_CORE}; 64-byte "
        f"probe messages; every measurement on a fresh server; cells are median [min-max] over the "
        f"rounds; the last column is shardhub's ratio to the best peer of the row (above 1: "
        f"shardhub better).\n\n{md}\n\nSettings:\n\n{settings}\n\n"
        f"Load generator: fan-out runs {a.duration:g} s (cpu, p99) with subscribers connecting at "
        f"5,000/s, one publisher; max-rate searches from {a.maxdel_start:g} (deliveries) and "
        f"{a.maxpub_start:g} (publishes) publishes/s, {a.step_duration:g} s per step, at most "
        f"{a.max_steps} steps, a step passing with p99 under the bound, nothing lost and no "
        f"failed connection; echo {a.duration:g} s; {a.idle:,} idle connections held "
        f"{a.hold:g} s. At the highest rates the one-core load generator itself can be the "
        f"bound: its send lag is in each raw JSON (`send_lag`).\n\n"
        "Peers are broadcast-to-all servers (loadgen `--adapter raw`/`socketio`), shardhub runs "
        "its protocol (one room, the publisher excluded). In the echo row a broadcast peer sends "
        "each request to every client (each counts only its own answers). CPU per delivery: "
        "server utime+stime over the full seconds of publishing (first and last dropped) divided "
        "by the deliveries counted at the subscribers in those seconds. Memory: RSS growth "
        "at the end of the hold of all idle connections; raw numbers, peaks and p99s in "
        "results.json.\n")
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(summary)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump({"command": sys.argv, "settings": {s: peers[s].settings for s in servers},
                   "versions": notes, "load_before": load_before, "load_after": load_after,
                   "args": {k: v for k, v in vars(a).items()}, "results": results}, f, indent=1)
    print(summary)
    print(f"wrote {outdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
