// The client against the real server: connecting, rooms, presence, direct messages,
// broadcasts, errors, timeouts, the queue of requests made while connecting, binary frames.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { Client, ShardhubError } from "../dist/index.js";
import { closeClients, connected, makeClient, nextEvent, record, Server, sleep, uniqueRoom, until } from "./harness.mjs";

let server;
before(async () => {
  server = await Server.start();
});
after(async () => {
  closeClients();
  await server?.stop();
});

describe("connecting", () => {
  test("goes connecting -> connected with the server's welcome, and disconnected on disconnect()", async () => {
    const client = makeClient(server, { user: "alice" });
    const log = record(client, ["state"]);
    const welcome = await connected(client);
    assert.equal(welcome.user, "alice");
    assert.match(welcome.session, /^\d+$/);
    assert.equal(client.state, "connected");
    assert.deepEqual(client.welcome, welcome);
    const down = nextEvent(client, "disconnected");
    client.disconnect();
    assert.deepEqual(await down, { code: 1000, reason: "client disconnect", reconnect: false });
    assert.deepEqual(
      log.map((e) => e.args),
      [
        ["connecting", "disconnected"],
        ["connected", "connecting"],
        ["disconnected", "connected"],
      ],
    );
    assert.equal(client.welcome, undefined);
  });

  test("a constructor without a WebSocket implementation (Node 20) or with a bad URL throws", () => {
    if (globalThis.WebSocket === undefined) {
      assert.throws(() => new Client(server.url), /no WebSocket implementation/);
    }
    assert.throws(() => new Client("ftp://x/ws", { WebSocket }), /not a WebSocket URL/);
    assert.throws(() => new Client("not a url", { WebSocket }), TypeError);
    // http(s) URLs are turned into ws(s).
    assert.doesNotThrow(() => new Client(server.http + "/ws", { WebSocket }));
  });

  test("ping resolves with the round-trip time", async () => {
    const client = makeClient(server);
    await connected(client);
    const rtt = await client.ping();
    assert.ok(rtt >= 0 && rtt < 2000, `rtt ${rtt}`);
  });
});

describe("rooms", () => {
  test("two clients publish and receive in a room, with presence and members", async () => {
    const name = uniqueRoom("chat");
    const alice = makeClient(server, { user: "alice" });
    const bob = makeClient(server, { user: "bob" });
    const [wa, wb] = await Promise.all([connected(alice), connected(bob)]);

    const aRoom = alice.room(name);
    assert.equal(alice.room(name), aRoom, "room() returns the same object");
    const aJoin = await aRoom.join();
    assert.equal(aJoin.members, 1);
    assert.equal(aJoin.wasRecovering, false);
    assert.equal(aRoom.state, "joined");

    const bobJoined = nextEvent(aRoom, "joined");
    const bRoom = await bob.join(name);
    assert.deepEqual(await bobJoined, { room: name, user: "bob", session: wb.session });

    const members = await bRoom.members();
    assert.deepEqual(
      members.map((m) => m.session).sort(),
      [wa.session, wb.session].sort(),
    );

    const bobGot = nextEvent(bRoom, "message");
    const aliceGotClientLevel = nextEvent(alice, "message");
    await aRoom.publish({ text: "hi all" });
    const m = await bobGot;
    assert.deepEqual(m.data, { text: "hi all" });
    assert.equal(m.user, "alice");
    assert.equal(m.session, wa.session);
    assert.equal(m.room, name);
    assert.equal(m.binary, false);
    assert.equal(m.offset, undefined, "no history on this server");
    assert.equal(m.frame.type, "message");
    // The sender gets its own publication unless excludeSelf; the client-level event too.
    assert.deepEqual((await aliceGotClientLevel).data, { text: "hi all" });

    // excludeSelf: bob gets both, alice only the second.
    const aliceLog = record(aRoom, ["message"]);
    const bobTwo = new Promise((resolve) => {
      const seen = [];
      bRoom.on("message", (msg) => {
        seen.push(msg.data);
        if (seen.length === 2) resolve(seen);
      });
    });
    await aRoom.publish("quiet", { excludeSelf: true });
    await aRoom.publish("loud");
    assert.deepEqual(await bobTwo, ["quiet", "loud"]);
    await until(() => aliceLog.length >= 1, { what: "alice's own message" });
    await sleep(50);
    assert.deepEqual(aliceLog.map((e) => e.args[0].data), ["loud"]);

    // leave: alice hears bob leave, bob hears nothing more from the room.
    const bobLeft = nextEvent(aRoom, "left");
    const bUnsub = nextEvent(bRoom, "unsubscribed");
    await bRoom.leave();
    assert.deepEqual(await bobLeft, { room: name, user: "bob", session: wb.session });
    assert.equal(await bUnsub, undefined);
    assert.equal(bRoom.state, "unsubscribed");
    assert.deepEqual(bob.rooms(), []);
    assert.deepEqual(alice.rooms(), [aRoom]);
    const bobAfter = record(bRoom, ["message"]);
    await aRoom.publish("after bob left");
    await sleep(100);
    assert.equal(bobAfter.length, 0);

    // A disconnect counts as leaving.
    await bRoom.join();
    const bobGone = nextEvent(aRoom, "left");
    bob.disconnect();
    assert.equal((await bobGone).user, "bob");
  });

  test("join and publish errors are typed", async () => {
    const client = makeClient(server);
    await connected(client);
    const name = uniqueRoom("err");
    const err = await client.room(name).publish("x").then(
      () => assert.fail("publish to a room not joined succeeded"),
      (e) => e,
    );
    assert.ok(err instanceof ShardhubError);
    assert.equal(err.code, "not_member");
    assert.equal(err.room, name);
    assert.match(err.message, /./);
    assert.equal(err.frame.type, "error");

    // An invalid room name (control character): bad_request, and the room is not wanted.
    const bad = client.room("bad\u0001name");
    const errors = record(bad, ["error", "unsubscribed"]);
    await assert.rejects(bad.join(), (e) => e instanceof ShardhubError && e.code === "bad_request");
    assert.equal(bad.state, "unsubscribed");
    assert.deepEqual(errors.map((e) => e.event), ["error", "unsubscribed"]);

    // A request type nobody handles.
    await assert.rejects(client.request({ type: "no_such_type" }), { code: "unknown_type" });
  });

  test("leave() while a join waits rejects it with left", async () => {
    const client = makeClient(server);
    const room = client.room(uniqueRoom());
    const join = room.join();
    await room.leave();
    await assert.rejects(join, { code: "left" });
    assert.equal(room.state, "unsubscribed");
  });
});

describe("direct messages and broadcasts", () => {
  test("send reaches every session of the user and resolves with the count; not_online rejects", async () => {
    const user = `dm-${process.pid}`;
    const a1 = makeClient(server, { user });
    const a2 = makeClient(server, { user });
    const bob = makeClient(server, { user: "bob" });
    await Promise.all([connected(a1), connected(a2)]);
    const wb = await connected(bob);
    const got1 = nextEvent(a1, "direct");
    const got2 = nextEvent(a2, "direct");
    assert.deepEqual(await bob.send(user, "psst"), { sessions: 2, mid: undefined, stored: false });
    for (const m of [await got1, await got2]) {
      assert.equal(m.data, "psst");
      assert.equal(m.user, "bob");
      assert.equal(m.session, wb.session);
      assert.equal(m.frame.type, "direct");
    }
    const err = await bob.send("carol-is-not-here", "hello?").catch((e) => e);
    assert.ok(err instanceof ShardhubError);
    assert.equal(err.code, "not_online");
    assert.equal(err.to, "carol-is-not-here");
  });

  test("broadcast reaches everyone, but the sender with excludeSelf", async () => {
    const a = makeClient(server);
    const b = makeClient(server);
    await Promise.all([connected(a), connected(b)]);
    const aLog = record(a, ["broadcast"]);
    const bGot = nextEvent(b, "broadcast", { filter: (m) => m.data?.n === 1 });
    await a.broadcast({ n: 1 }, { excludeSelf: true });
    assert.equal((await bGot).user, a.welcome.user);
    const aGot = nextEvent(a, "broadcast", { filter: (m) => m.data?.n === 2 });
    await a.broadcast({ n: 2 });
    await aGot;
    assert.deepEqual(
      aLog.map((e) => e.args[0].data?.n).filter((n) => n === 1 || n === 2),
      [2],
    );
  });
});

describe("requests", () => {
  test("a request without a reply times out; the server's error without an id is an error event", async () => {
    const client = makeClient(server);
    await connected(client);
    // Nested deeper than max_json_depth (64): answered with bad_request *without* the id (the
    // server refuses it before parsing), so nothing settles the request but its timeout.
    let deep = 0;
    for (let i = 0; i < 70; i++) deep = [deep];
    const errorEvent = nextEvent(client, "error");
    const started = Date.now();
    await assert.rejects(client.request({ type: "publish", room: "x", data: deep }, { timeout: 300 }), (e) => {
      assert.ok(e instanceof ShardhubError);
      assert.equal(e.code, "timeout");
      return true;
    });
    const took = Date.now() - started;
    assert.ok(took >= 290 && took < 2000, `timed out after ${took} ms`);
    assert.equal((await errorEvent).code, "bad_request");
    // The connection goes on.
    assert.ok((await client.ping()) >= 0);
  });

  test("requests made while connecting are queued and sent in order once connected", async () => {
    const name = uniqueRoom("queue");
    const aliceName = uniqueRoom("queue-alice");
    const alice = makeClient(server, { user: aliceName });
    await connected(alice);
    const bob = makeClient(server, { user: "bob" });
    const bRoom = bob.room(name);
    const got = [];
    bRoom.on("message", (m) => got.push(m.data));
    // Not connected yet: a request fails at once instead of waiting forever.
    await assert.rejects(bob.send(aliceName, "x"), { code: "disconnected" });

    bob.connect();
    assert.equal(bob.state, "connecting");
    const direct = nextEvent(alice, "direct");
    const results = await Promise.all([
      bRoom.join(),
      bRoom.publish(1),
      bRoom.publish(2),
      bob.send(aliceName, "queued"),
    ]);
    assert.equal(results[0].room, name);
    assert.equal(results[3].sessions, 1);
    assert.equal((await direct).data, "queued");
    await until(() => got.length === 2, { what: "bob's two messages" });
    assert.deepEqual(got, [1, 2]);
  });

  test("the queue is bounded", async () => {
    const client = makeClient(server, { maxQueue: 2 });
    client.connect();
    const first = [client.ping(), client.ping()];
    await assert.rejects(client.ping(), { code: "queue_full" });
    await Promise.all(first);
  });

  test("disconnect() fails the requests that wait", async () => {
    const client = makeClient(server);
    client.connect();
    const waiting = client.ping();
    client.disconnect();
    await assert.rejects(waiting, { code: "disconnected" });
  });
});

describe("binary frames", () => {
  test("room publications, direct messages and broadcasts as bytes", async () => {
    const name = uniqueRoom("bin");
    const alice = makeClient(server, { user: "alice-bin" });
    const bob = makeClient(server, { user: "bob-bin" });
    await Promise.all([connected(alice), connected(bob)]);
    await alice.join(name);
    const bRoom = await bob.join(name);

    const roomMsg = nextEvent(bRoom, "message");
    await alice.room(name).publishBinary(new Uint8Array([1, 2, 3]), { excludeSelf: true });
    const m = await roomMsg;
    assert.equal(m.binary, true);
    assert.equal(m.user, "alice-bin");
    assert.equal(m.room, name);
    assert.deepEqual([...m.data], [1, 2, 3]);

    const direct = nextEvent(bob, "direct");
    await alice.sendBinary("bob-bin", new Uint8Array([0, 255]));
    const d = await direct;
    assert.equal(d.binary, true);
    assert.equal(d.user, "alice-bin");
    assert.deepEqual([...d.data], [0, 255]);

    const bc = nextEvent(bob, "broadcast", { filter: (x) => x.binary });
    await alice.broadcastBinary(new TextEncoder().encode("all"), { excludeSelf: true });
    assert.equal(new TextDecoder().decode((await bc).data), "all");

    // Failures of binary requests arrive as error events with op "binary".
    const err = nextEvent(alice, "error");
    await alice.room(uniqueRoom("not-joined")).publishBinary(new Uint8Array([9]));
    const e = await err;
    assert.equal(e.code, "not_member");
    assert.equal(e.op, "binary");
  });
});

describe("listeners", () => {
  test("registering the same listener twice calls it once; the returned function removes it", async () => {
    const client = makeClient(server);
    await connected(client);
    let calls = 0;
    const listener = () => calls++;
    const off = client.on("broadcast", listener);
    client.on("broadcast", listener);
    assert.equal(client.listenerCount("broadcast"), 1);
    const seen = nextEvent(client, "broadcast");
    await client.broadcast("x");
    await seen;
    assert.equal(calls, 1);
    off();
    assert.equal(client.listenerCount("broadcast"), 0);
  });
});
