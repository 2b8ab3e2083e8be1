"""Helpers the bench/ scripts share: free ports, waiting for a listener, a process's RSS."""
import socket
import time


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, tries=200, what="server"):
    """Waits until 127.0.0.1:port accepts connections; exits the script if it never does."""
    for _ in range(tries):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start listening on port {port}")


def rss(pid):
    """Resident set size of a process in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_ticks(pid):
    """A process's CPU time so far, utime + stime, in clock ticks (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0


def sys_ticks(pid):
    """A process's CPU time in the kernel so far (stime), in clock ticks (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[12])
    except OSError:
        return 0


def metrics(port, timeout=2):
    """A server's /metrics as {name: value}, labelled series summed (e.g. over shards)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, v = line.rsplit(" ", 1)
        name = name.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(v)
    return out


# --- HdrHistogram V2 (the loadgen JSON's "hist" fields), enough to merge and read percentiles ---

def hdr_decode(b64):
    """Decodes one base64 HdrHistogram V2 serialization (uncompressed, cookie 0x1c849313) into
    {"sig", "low", "counts": {index: count}}; indexes of histograms with the same settings
    (every loadgen histogram) can be merged by adding counts."""
    import base64
    import struct
    b = base64.b64decode(b64)
    cookie, length, _, sig, low, _, _ = struct.unpack(">IIIIqqd", b[:40])
    if cookie != 0x1C849313:
        raise ValueError(f"not an uncompressed V2 histogram (cookie {cookie:#x})")
    counts, i, pos, end = {}, 0, 40, 40 + length
    while pos < end:
        v, shift = 0, 0
        while True:  # LEB128, at most 9 bytes
            byte = b[pos]
            pos += 1
            v |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        v = (v >> 1) ^ -(v & 1)  # ZigZag; negative: a run of empty slots
        if v < 0:
            i -= v
        else:
            if v:
                counts[i] = counts.get(i, 0) + v
            i += 1
    return {"sig": sig, "low": low, "counts": counts}


def hdr_merge(hists):
    """The sum of decoded histograms with the same settings (Histogram::add)."""
    out = {"sig": hists[0]["sig"], "low": hists[0]["low"], "counts": {}}
    for h in hists:
        if (h["sig"], h["low"]) != (out["sig"], out["low"]):
            raise ValueError("histograms with different settings")
        for i, c in h["counts"].items():
            out["counts"][i] = out["counts"].get(i, 0) + c
    return out


def hdr_quantile(h, q):
    """The value at quantile q (0..1] as HdrHistogram reports it (the highest value equivalent
    to the bucket's), in the histogram's unit (µs for the loadgen)."""
    import math
    sub_buckets = 2 ** math.ceil(math.log2(2 * 10 ** h["sig"]))
    half, half_mag = sub_buckets // 2, int(math.log2(sub_buckets)) - 1
    unit = int(math.floor(math.log2(h["low"])))
    total = sum(h["counts"].values())
    want = total if q >= 1 else max(1, math.ceil(q * total))
    seen = 0
    for i in sorted(h["counts"]):
        seen += h["counts"][i]
        if seen >= want:
            bucket, sub = (i >> half_mag) - 1, (i & (half - 1)) + half
            if bucket < 0:
                sub, bucket = sub - half, 0
            return (sub << (bucket + unit)) + (1 << (unit + bucket)) - 1
    return 0


def hdr_count(h):
    return sum(h["counts"].values())
