// The close-code table and rule against the server's own (src/protocol/close.rs and
// docs/protocol.md), the backoff bounds, and the binary header codec.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { backoffDelay, CLOSE_CODES, CloseCode, closeCodeInfo, decodeBinary, encodeBinary, reconnects } from "../dist/index.js";
import { REPO } from "./harness.mjs";

test("CLOSE_CODES is the table of src/protocol/close.rs: codes, names, reasons, in order", () => {
  const rust = readFileSync(path.join(REPO, "src/protocol/close.rs"), "utf8");
  const codes = [...rust.matchAll(/Close::(\w+) => (\d{4}),/g)].map((m) => [m[1], Number(m[2])]);
  const reasons = new Map([...rust.matchAll(/Close::(\w+) => "([^"]+)",/g)].map((m) => [m[1], m[2]]));
  assert.equal(codes.length, 16, "the Rust table has 16 closes");
  assert.deepEqual(
    CLOSE_CODES.map((c) => [c.name, c.code]),
    codes,
  );
  for (const c of CLOSE_CODES) {
    assert.equal(c.reason, reasons.get(c.name), `reason of ${c.name}`);
    assert.equal(c.reconnect, reconnects(c.code), `class of ${c.name}`);
    assert.equal(CloseCode[c.name], c.code);
    assert.equal(closeCodeInfo(c.code), c);
  }
  assert.equal(closeCodeInfo(3999), undefined);
});

test("the class of each code is the one docs/protocol.md gives", () => {
  const doc = readFileSync(path.join(REPO, "docs/protocol.md"), "utf8");
  const rows = [...doc.matchAll(/^\| (\d{4}) \| (reconnect|do not reconnect) \|/gm)];
  assert.ok(rows.length >= 17, `found ${rows.length} rows`);
  for (const [, code, klass] of rows) {
    assert.equal(reconnects(Number(code)), klass === "reconnect", `code ${code}`);
  }
});

test("reconnects() follows the server's rule for any code", () => {
  for (const code of [1000, 1001, 1002, 1006, 1007, 1008, 1009, 1011, 1012, 1013, 3000, 3006, 3499, 4000, 4499]) {
    assert.equal(reconnects(code), true, `${code}`);
  }
  for (const code of [3500, 3501, 3505, 3999, 4500, 4999]) {
    assert.equal(reconnects(code), false, `${code}`);
  }
});

test("backoff: full jitter between the minimum and the capped exponential", () => {
  const low = () => 0;
  const high = () => 0.999999;
  assert.equal(backoffDelay(0, 500, 20_000, low), 500);
  assert.equal(backoffDelay(0, 500, 20_000, high), 999);
  assert.equal(backoffDelay(4, 500, 20_000, high), 8499);
  assert.equal(backoffDelay(6, 500, 20_000, high), 20_000);
  assert.equal(backoffDelay(1000, 500, 20_000, high), 20_000);
  assert.equal(backoffDelay(1000, 500, 20_000, low), 500);
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(i % 40, 500, 20_000);
    assert.ok(d >= 500 && d <= 20_000, `${d}`);
  }
});

test("binary frames: the request header, and decoding the server's frames", () => {
  const req = encodeBinary(1, "lobby", new Uint8Array([7, 8]));
  assert.deepEqual([...req], [1, 5, ...new TextEncoder().encode("lobby"), 7, 8]);
  assert.throws(() => encodeBinary(2, "x".repeat(256), new Uint8Array()), RangeError);
  // kind 1, room "r", user "ü" (2 bytes of UTF-8), payload [1, 2]
  const frame = new Uint8Array([1, 1, 0x72, 2, 0xc3, 0xbc, 1, 2]);
  const d = decodeBinary(frame);
  assert.equal(d.kind, 1);
  assert.equal(d.room, "r");
  assert.equal(d.user, "ü");
  assert.deepEqual([...d.data], [1, 2]);
  assert.equal(decodeBinary(new Uint8Array([1, 5, 0])), undefined, "truncated");
  assert.equal(decodeBinary(new Uint8Array([2, 0, 1, 0xff])), undefined, "not UTF-8");
});
