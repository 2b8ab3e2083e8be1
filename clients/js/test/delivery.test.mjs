// Acknowledged and stored direct messages against the real server: receipts sent by the
// recipient's client resolve the sender's promise; a recipient that does not confirm makes it
// reject with not_delivered; a message stored for an offline user arrives on its connection,
// marked stored, once.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ShardhubError } from "../dist/index.js";
import { closeClients, connected, makeClient, nextEvent, Server } from "./harness.mjs";

let server;
before(async () => {
  server = await Server.start();
});
after(async () => {
  closeClients();
  await server?.stop();
});

describe("acknowledged sends", () => {
  test("resolve with the receipts of every session reached (the recipients' clients confirm by themselves)", async () => {
    const alice = makeClient(server, { user: "ack-alice" });
    const bob1 = makeClient(server, { user: "ack-bob" });
    const bob2 = makeClient(server, { user: "ack-bob" });
    await Promise.all([connected(alice), connected(bob1), connected(bob2)]);
    const got = nextEvent(bob1, "direct");
    const report = await alice.sendAcked("ack-bob", { text: "hi" }, { ackTimeout: 3000 });
    assert.deepEqual({ reached: report.reached, receipts: report.receipts }, { reached: 2, receipts: 2 });
    assert.match(report.mid, /^\d+-\d+$/);
    const m = await got;
    assert.deepEqual(m.data, { text: "hi" });
    assert.equal(m.mid, report.mid);
    assert.equal(m.ack, true);
  });

  test("reject with not_delivered when no session confirms in time (manual receipts never sent)", async () => {
    const alice = makeClient(server, { user: "ack-alice2" });
    const carol = makeClient(server, { user: "ack-carol", receipts: "manual" });
    await Promise.all([connected(alice), connected(carol)]);
    const err = await alice.sendAcked("ack-carol", "are you there?", { ackTimeout: 300 }).catch((e) => e);
    assert.ok(err instanceof ShardhubError, String(err));
    assert.equal(err.code, "not_delivered");
    assert.equal(err.frame?.reached, 1);
  });

  test("a manual receipt resolves it", async () => {
    const alice = makeClient(server, { user: "ack-alice3" });
    const dave = makeClient(server, { user: "ack-dave", receipts: "manual" });
    await Promise.all([connected(alice), connected(dave)]);
    dave.on("direct", (m) => setTimeout(() => dave.receipt(m), 50));
    const report = await alice.sendAcked("ack-dave", "confirm later", { ackTimeout: 3000 });
    assert.deepEqual({ reached: report.reached, receipts: report.receipts }, { reached: 1, receipts: 1 });
  });

  test("to a user who is not online, reject with not_online", async () => {
    const alice = makeClient(server, { user: "ack-alice4" });
    await connected(alice);
    const err = await alice.sendAcked("ack-nobody", "x").catch((e) => e);
    assert.equal(err.code, "not_online");
  });
});

describe("stored sends", () => {
  test("a message to an offline user is kept and arrives, marked stored, when the user connects", async () => {
    const alice = makeClient(server, { user: "store-alice" });
    await connected(alice);
    const first = await alice.send("store-erin", { n: 1 }, { store: true });
    const second = await alice.send("store-erin", { n: 2 }, { store: true });
    assert.deepEqual([first.stored, first.sessions, second.stored], [true, 0, true]);
    const erin = makeClient(server, { user: "store-erin" });
    const got = [];
    erin.on("direct", (m) => got.push(m));
    await connected(erin);
    const deadline = Date.now() + 3000;
    while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(got.map((m) => [m.data, m.stored, m.user]), [
      [{ n: 1 }, true, "store-alice"],
      [{ n: 2 }, true, "store-alice"],
    ]);
    assert.equal(got[0].mid, first.mid);
    // Online now: a send is not stored.
    const live = await alice.send("store-erin", { n: 3 }, { store: true });
    assert.deepEqual([live.stored, live.sessions], [false, 1]);
  });
});
