"""Server CPU per echo round trip, builds alternating (open loop, 100 clients, 20,000/s, 8 s).

    python3 echo_cpu.py ROUNDS BINARY...
"""
import subprocess, time, json, os, sys, socket
LOADGEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../target/release/shardhub-loadgen")
CLK = os.sysconf("SC_CLK_TCK")
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) / CLK, int(f[12]) / CLK
def run(name, binary, rate):
    port = free_port()
    srv = subprocess.Popen(["taskset", "-c", "0", binary, "--listen", f"127.0.0.1:{port}", "--shards", "1", "--pin-cores", "false", "--log", "warn", "--rate-messages-per-sec", "0", "--rate-bytes-per-sec", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try: socket.create_connection(("127.0.0.1", port), 0.1).close(); break
        except OSError: time.sleep(0.05)
    time.sleep(0.3)
    u0, s0 = cpu(srv.pid)
    out = subprocess.run(["taskset", "-c", "1", LOADGEN, "echo", "--url", f"ws://127.0.0.1:{port}/ws",
                          "--conns", "100", "--rate", str(rate), "--duration", "8", "--json", "--quiet"], capture_output=True, text=True)
    u1, s1 = cpu(srv.pid)
    srv.kill(); srv.wait()
    r = json.loads(out.stdout)
    n = r["traffic"]["received"]
    return n, 1e6*(u1-u0)/n, 1e6*(s1-s0)/n
res = {}
names = sys.argv[2:]
for rnd in range(int(sys.argv[1])):
    order = names[rnd % len(names):] + names[:rnd % len(names)]
    for b in order:
        n, u, s = run(b, b, 20000)
        res.setdefault(b, []).append((u + s, u, s))
        print(f"round {rnd} {os.path.basename(b)}: {n} round trips, {u+s:.2f} us each (user {u:.2f}, sys {s:.2f})", flush=True)
import statistics
for b, v in res.items():
    print(os.path.basename(b), "median", round(statistics.median(x[0] for x in v), 2), "user", round(statistics.median(x[1] for x in v), 2), "sys", round(statistics.median(x[2] for x in v), 2))
