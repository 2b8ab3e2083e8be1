#!/usr/bin/env python3
"""permessage-deflate on vs off: bytes on the wire and server CPU per delivery for ~300-byte
JSON chat messages published to one room of N subscribers.

shardhub-loadgen cannot negotiate permessage-deflate, so this script is its own small client
(standard library only, `selectors`): N raw WebSocket subscribers that offer permessage-deflate
(variant `deflate`, server started with `--compression true`) or not (variant `plain`, server
with compression off, the default), join one room and drain their sockets, counting bytes; one
publisher sends distinct chat messages (words drawn from a fixed vocabulary, a user, a
timestamp: about 300 bytes of `data`) at a fixed rate. Per variant and round, a fresh server
pinned to core 0 (`--shards 1`), this client pinned to core 1; variants alternate within each
round.

Measured over the publishing phase (from the first publish until every subscriber has every
publication): server CPU (utime + stime of the process), `shardhub_deliveries_total`,
`shardhub_bytes_out_total`, the compression counters, and the bytes the subscribers read.
Every delivery to subscriber 0 is inflated if compressed and checked to be a message.

`--sizes` instead measures, in echo mode with `--compression-min-bytes 0`, the size of the
compressed reply for messages of several sizes (the basis of the `compression_min_bytes`
default).

    python3 bench/compression.py [--subs 1000] [--rate 50] [--seconds 10] [--rounds 3]
    python3 bench/compression.py --sizes
"""
import argparse
import datetime
import json
import os
import random
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import time
import zlib

from benchlib import cpu_ticks, free_port, metrics, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "target", "release", "shardhub")
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
OFFER = "permessage-deflate; client_max_window_bits"
WORDS = ("the quick brown fox jumps over lazy dog hello world meeting today tomorrow lunch "
         "coffee release deploy server client message room please thanks great idea sounds "
         "good see you soon later maybe tonight weekend project update review merge branch "
         "test build green red blue ship it done working on fixing bug issue ticket").split()


def frame(opcode, payload, rsv1=False):
    """A masked client frame."""
    b0 = 0x80 | opcode | (0x40 if rsv1 else 0)
    n = len(payload)
    if n < 126:
        h = bytes([b0, 0x80 | n])
    elif n < 65536:
        h = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        h = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    key = os.urandom(4)
    return h + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def connect(port, user, offer):
    s = socket.create_connection(("127.0.0.1", port))
    ext = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
    s.sendall((f"GET /ws?user={user} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"
               f"{ext}\r\n").encode())
    return s


class Reader:
    """Parses server frames from a byte stream; inflates compressed ones only when asked."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        self.buf += data
        out = []
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, off = struct.unpack(">H", self.buf[2:4])[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    break
                n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
            if len(self.buf) < off + n:
                break
            out.append((bool(b0 & 0x40), b0 & 0x0F, self.buf[off:off + n]))
            self.buf = self.buf[off + n:]
        return out


def inflate(payload):
    d = zlib.decompressobj(-15)
    return d.decompress(payload + b"\x00\x00\xff\xff")


def handshake(s, reader):
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    h, rest = head.split(b"\r\n\r\n", 1)
    assert h.startswith(b"HTTP/1.1 101"), h
    return h.decode(), reader.feed(rest)


def read_frames(s, reader, want, timeout=30):
    got = []
    s.settimeout(timeout)
    while len(got) < want:
        got += reader.feed(s.recv(65536))
    return got


def chat(rng, i):
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(28, 36)))
    return {"user": f"user{rng.randint(1, 5000)}", "text": text, "ts": 1764660000000 + i * 20,
            "id": f"m{i:08d}"}


def start_server(flags):
    port = free_port()
    cmd = ["taskset", "-c", "0", SERVER, "--listen", f"127.0.0.1:{port}", "--shards", "1",
           "--pin-cores", "false", "--log", "warn", "--rate-messages-per-sec", "0",
           "--presence", "false"] + flags
    proc = subprocess.Popen(cmd)
    wait_port(port)
    return proc, port


def fanout(variant, subs, rate, seconds, seed):
    flags = ["--compression", "true"] if variant == "deflate" else []
    proc, port = start_server(flags)
    try:
        offer = OFFER if variant == "deflate" else None
        socks, readers = [], []
        for i in range(subs):
            s = connect(port, f"s{i}", offer)
            r = Reader()
            head, early = handshake(s, r)
            assert ("permessage-deflate" in head) == (offer is not None), head
            frames = early or read_frames(s, r, 1)  # welcome
            s.sendall(frame(1, json.dumps({"type": "join", "room": "bench", "id": 1}).encode()))
            socks.append(s)
            readers.append(r)
        for s, r in zip(socks, readers):
            got = []
            while not any(b'"ack"' in (inflate(p) if z else p) for z, _, p in got):
                got += read_frames(s, r, 1)
        # The publisher is a member too (publishing needs it) and excludes itself.
        pub, pr = connect(port, "pub", None), Reader()
        _, early = handshake(pub, pr)
        early or read_frames(pub, pr, 1)  # welcome
        pub.sendall(frame(1, json.dumps({"type": "join", "room": "bench", "id": 1}).encode()))
        read_frames(pub, pr, 1)  # ack
        pub.setblocking(False)
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        rng = random.Random(seed)
        n_pub = rate * seconds
        msgs = [json.dumps({"type": "publish", "room": "bench", "exclude_self": True,
                            "data": chat(rng, i)},
                           separators=(",", ":")).encode() for i in range(n_pub)]
        m0 = metrics(port)
        cpu0 = cpu_ticks(proc.pid)
        t0 = time.monotonic()
        nbytes, nframes, checked = 0, [0] * subs, 0
        sent = 0
        want = n_pub * subs
        deadline = t0 + seconds + 15
        while sum(nframes) < want and time.monotonic() < deadline:
            now = time.monotonic()
            due = min(n_pub, int((now - t0) * rate) + 1)
            while sent < due:
                pub.setblocking(True)
                pub.sendall(frame(1, msgs[sent]))
                pub.setblocking(False)
                sent += 1
            try:
                pub.recv(1 << 16)  # errors, if any, would show here; normally nothing
            except BlockingIOError:
                pass
            for key, _ in sel.select(timeout=0.005):
                s, i = key.fileobj, key.data
                try:
                    data = s.recv(1 << 20)
                except BlockingIOError:
                    continue
                nbytes += len(data)
                fr = readers[i].feed(data)
                nframes[i] += len(fr)
                if i == 0:
                    for z, op, p in fr:
                        if op != 1:
                            continue  # a ping
                        if True:
                            body = inflate(p) if z else p
                            assert json.loads(body)["type"] == "message", (z, op, body[:80])
                            checked += 1
        wall = time.monotonic() - t0
        cpu = (cpu_ticks(proc.pid) - cpu0) / os.sysconf("SC_CLK_TCK")
        m1 = metrics(port)
        d = lambda k: m1.get(k, 0) - m0.get(k, 0)
        deliveries = d("shardhub_deliveries_total")
        return {
            "variant": variant, "subs": subs, "rate": rate, "seconds": seconds,
            "published": sent, "received_frames": sum(nframes), "expected_frames": want,
            "wall_s": round(wall, 3), "server_cpu_s": round(cpu, 3),
            "deliveries": deliveries,
            "cpu_us_per_delivery": round(cpu * 1e6 / max(deliveries, 1), 3),
            "client_bytes": nbytes,
            "client_bytes_per_delivery": round(nbytes / max(sum(nframes), 1), 1),
            "server_bytes_out": d("shardhub_bytes_out_total"),
            "compressed_frames": d("shardhub_compressed_frames_total"),
            "compressed_deliveries": d("shardhub_compressed_deliveries_total"),
            "compression_bytes_saved": d("shardhub_compression_bytes_saved_total"),
            "avg_publish_bytes": round(sum(map(len, msgs)) / len(msgs), 1),
            "samples_checked": checked,
        }
    finally:
        proc.terminate()
        proc.wait()


def sizes():
    proc, port = start_server(["--echo", "--compression", "true", "--compression-min-bytes", "0"])
    try:
        s = connect(port, "e", OFFER)
        r = Reader()
        handshake(s, r)
        rng = random.Random(7)
        rows = []
        for n in (16, 32, 64, 96, 128, 192, 256, 300, 512, 1024, 4096):
            plain = []
            for i in range(20):
                m = json.dumps({"type": "message", "room": "lobby", "from": "alice",
                                "data": chat(rng, i)}, separators=(",", ":"))
                plain.append(m.encode()[:n].decode("ascii", "ignore"))
            total_plain = total_z = 0
            for p in plain:
                s.sendall(frame(1, p.encode()))
                (z, op, payload), = read_frames(s, r, 1)
                hdr = 2 if len(payload) < 126 else 4
                phdr = 2 if len(p) < 126 else 4
                total_plain += phdr + len(p)
                total_z += hdr + len(payload)
                assert (inflate(payload) if z else payload) == p.encode()
            rows.append({"payload_bytes": n, "plain_frame_bytes": total_plain / 20,
                         "sent_frame_bytes": total_z / 20,
                         "ratio": round(total_z / total_plain, 3)})
        return rows
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--subs", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = a.out or os.path.join(ROOT, "bench", "runs",
                                f"{datetime.date.today()}-compression")
    os.makedirs(out, exist_ok=True)
    if a.sizes:
        rows = sizes()
        json.dump(rows, open(os.path.join(out, "results-sizes.json"), "w"), indent=1)
        for r in rows:
            print(r)
        return
    results = []
    for rnd in range(a.rounds):
        order = ["plain", "deflate"] if rnd % 2 == 0 else ["deflate", "plain"]
        for v in order:
            r = fanout(v, a.subs, a.rate, a.seconds, seed=rnd)
            r["round"] = rnd
            results.append(r)
            print(json.dumps(r), flush=True)
            json.dump(r, open(os.path.join(out, f"results-fanout-{v}-{rnd}.json"), "w"), indent=1)
    json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=1)
    for v in ("plain", "deflate"):
        rs = [r for r in results if r["variant"] == v]
        print(v, "median cpu us/delivery", statistics.median(r["cpu_us_per_delivery"] for r in rs),
              "median bytes/delivery", statistics.median(r["client_bytes_per_delivery"] for r in rs))


if __name__ == "__main__":
    sys.exit(main())
