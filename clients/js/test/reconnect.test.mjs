// Reconnecting against the real server: a restarted server, a connection cut by the server
// (recovery of the publications missed meanwhile), a server that stops answering (the
// client's ping), and duplicate suppression.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Client } from "../dist/index.js";
import { WebSocket } from "ws";
import { closeClients, connected, freePort, makeClient, nextEvent, record, Server, sleep, uniqueRoom, until } from "./harness.mjs";

let server;
before(async () => {
  server = await Server.start(["--history-size", "100"]);
});
after(async () => {
  closeClients();
  await server?.stop();
});

describe("a restarted server", () => {
  test("clients reconnect, rejoin their rooms (recovered: false, a new epoch) and get each message once", async () => {
    const name = uniqueRoom("restart");
    const alice = makeClient(server, { user: "alice" });
    const bob = makeClient(server, { user: "bob" });
    await Promise.all([connected(alice), connected(bob)]);
    const aRoom = alice.room(name);
    const bRoom = bob.room(name);
    const aliceMessages = [];
    const onMessage = (m) => aliceMessages.push(m.data);
    aRoom.on("message", onMessage);
    aRoom.on("message", onMessage); // registered twice: still one call per message
    const aStates = record(alice, ["state"]);
    const aSubs = record(aRoom, ["subscribed"]);
    const first = await aRoom.join();
    await bRoom.join();
    assert.equal(first.offset, 0);
    assert.match(first.epoch, /^[0-9a-f]+$/);
    await bRoom.publish("before");
    await until(() => aliceMessages.length === 1, { what: "the first message" });
    assert.equal(aRoom.offset, 1);

    const aDown = nextEvent(alice, "disconnected");
    await server.stop(); // SIGKILL: no close frame, the clients see 1006
    const down = await aDown;
    assert.equal(down.code, 1006);
    assert.equal(down.reconnect, true);
    assert.equal(alice.state, "reconnecting");
    // Attempts fail while the server is down; the client keeps trying.
    await sleep(400);
    assert.equal(alice.state, "reconnecting");

    const aBack = nextEvent(aRoom, "subscribed", { timeout: 10_000 });
    const bBack = nextEvent(bRoom, "subscribed", { timeout: 10_000 });
    await server.start();
    const info = await aBack;
    await bBack;
    assert.equal(alice.state, "connected");
    // A new process, a new epoch: nothing to recover, the application reloads.
    assert.equal(info.wasRecovering, true);
    assert.equal(info.recovered, false);
    assert.notEqual(info.epoch, first.epoch);
    assert.equal(info.offset, 0);
    assert.equal(aRoom.offset, 0);

    await bRoom.publish("after");
    await until(() => aliceMessages.length === 2, { what: "the message after the restart" });
    await sleep(100);
    assert.deepEqual(aliceMessages, ["before", "after"]);

    // The states since the kill: reconnecting (once, however many attempts failed), connected.
    const states = aStates.map((e) => e.args);
    assert.deepEqual(states, [
      ["reconnecting", "connected"],
      ["connected", "reconnecting"],
    ]);
    assert.deepEqual(
      aSubs.map((e) => e.args[0].wasRecovering),
      [false, true],
    );
  });
});

describe("recovery", () => {
  test("a client cut off by the server gets exactly the publications it missed, in order", async () => {
    const name = uniqueRoom("recover");
    // Alice waits a whole second before reconnecting, while bob publishes.
    const alice = makeClient(server, { user: "alice", minReconnectDelay: 1000, maxReconnectDelay: 1000 });
    const bob = makeClient(server, { user: "bob" });
    const wa = await connected(alice);
    await connected(bob);
    const aRoom = alice.room(name);
    const seen = [];
    aRoom.on("message", (m) => seen.push([m.offset, m.data]));
    await aRoom.join();
    const bRoom = await bob.join(name);
    await bRoom.publish("one");
    await until(() => seen.length === 1, { what: "the first message" });

    const down = nextEvent(alice, "disconnected");
    const res = await server.api("DELETE", `/api/v1/sessions/${wa.session}?reconnect=true`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(await down, { code: 3006, reason: "force reconnect", reconnect: true });
    assert.equal(alice.state, "reconnecting");
    for (const text of ["two", "three", "four"]) await bRoom.publish(text);
    // Through the HTTP API too: the same stream.
    const api = await server.api("POST", `/api/v1/rooms/${encodeURIComponent(name)}/publish`, { data: "five" });
    assert.equal(api.status, 200);
    assert.equal(api.body.offset, 5);

    const back = await nextEvent(aRoom, "subscribed", { timeout: 5000 });
    assert.equal(back.wasRecovering, true);
    assert.equal(back.recovered, true);
    assert.equal(back.offset, 5);
    await until(() => seen.length === 5, { what: "the missed messages" });
    await bRoom.publish("six");
    await until(() => seen.length === 6, { what: "the live message" });
    await sleep(100);
    assert.deepEqual(seen, [
      [1, "one"],
      [2, "two"],
      [3, "three"],
      [4, "four"],
      [5, "five"],
      [6, "six"],
    ]);
    assert.equal(aRoom.offset, 6);
  });

  test("a message whose offset is not past the last one is a duplicate and is dropped", () => {
    // Room._deliver is what the client calls for each room message (the server never sends
    // duplicates by itself, so this is checked on the room directly).
    const client = new Client("ws://127.0.0.1:1/ws", { WebSocket });
    const room = client.room("dups");
    room.join().catch(() => {}); // wanted, never connected
    const got = [];
    room.on("message", (m) => got.push(m.offset));
    for (const offset of [1, 2, 2, 1, 3, undefined, 3, 4]) {
      room._deliver({ room: "dups", data: null, user: "u", session: "1", offset, binary: false, frame: undefined });
    }
    assert.deepEqual(got, [1, 2, 3, undefined, 4]);
    room.leave();
  });
});

describe("a server that is not up yet", () => {
  test("the first connection is retried (state connecting) until the server answers", async () => {
    const late = new Server();
    late.port = await freePort();
    try {
      const client = makeClient(late);
      const states = record(client, ["state"]);
      const downs = record(client, ["disconnected"]);
      const up = nextEvent(client, "connected", { timeout: 10_000 });
      client.connect();
      await until(() => downs.length >= 2, { what: "two failed attempts" });
      assert.ok(downs.every((d) => d.args[0].code === 1006 && d.args[0].reconnect));
      assert.equal(client.state, "connecting");
      await late.start();
      await up;
      assert.deepEqual(
        states.map((e) => e.args[0]),
        ["connecting", "connected"],
      );
    } finally {
      await late.stop();
    }
  });
});

describe("the browser's online event", () => {
  test("cuts the reconnect delay short", async () => {
    // What a browser has: a window that fires `online` when the network comes back.
    const window = new EventTarget();
    globalThis.window = window;
    const flaky = await Server.start();
    try {
      // Without the event, the next attempt would come 20-30 s later.
      const client = makeClient(flaky, { minReconnectDelay: 20_000, maxReconnectDelay: 30_000 });
      await connected(client);
      const down = nextEvent(client, "disconnected");
      await flaky.stop();
      await down;
      await flaky.start();
      await sleep(200);
      assert.equal(client.state, "reconnecting", "waits out its delay");
      const started = Date.now();
      const back = nextEvent(client, "connected", { timeout: 5000 });
      window.dispatchEvent(new Event("online"));
      await back;
      assert.ok(Date.now() - started < 5000);
      // disconnect() stops listening: a later online event does nothing.
      client.disconnect();
      window.dispatchEvent(new Event("online"));
      await sleep(100);
      assert.equal(client.state, "disconnected");
    } finally {
      delete globalThis.window;
      await flaky.stop();
    }
  });
});

describe("a dead connection", () => {
  test("no pong within pongTimeout: the client drops the connection and reconnects when the server answers again", async () => {
    const dead = await Server.start();
    try {
      const client = makeClient(dead, { pingInterval: 300, pongTimeout: 300, connectTimeout: 500 });
      await connected(client);
      const room = await client.join(uniqueRoom("dead"));
      const down = nextEvent(client, "disconnected", { timeout: 3000 });
      await dead.pause();
      // A request to a server that does not answer times out.
      await assert.rejects(client.ping({ timeout: 200 }), { code: "timeout" });
      const info = await down;
      assert.equal(info.code, 1006);
      assert.match(info.reason, /no pong within 300 ms/);
      assert.equal(info.reconnect, true);
      assert.equal(client.state, "reconnecting");
      // Attempts meanwhile reach the stopped server's socket but get no welcome: each is
      // abandoned after connectTimeout and retried.
      const downs = record(client, ["disconnected"]);
      await until(() => downs.some((d) => /no welcome within 500 ms/.test(d.args[0].reason)), {
        timeout: 5000,
        what: "an attempt abandoned for want of a welcome",
      });
      assert.equal(client.state, "reconnecting");
      const back = nextEvent(room, "subscribed", { timeout: 8000 });
      dead.resume();
      await back;
      assert.equal(client.state, "connected");
    } finally {
      dead.resume();
      await dead.stop();
    }
  });
});
