// Frames of protocol features this server version does not have yet (acknowledged and stored
// direct messages, being added on another branch) must pass through the client untouched and
// break nothing. The real server cannot send them, so this one test talks to a scripted peer
// (a `ws` server that sends exactly these frames); everything else runs against shardhub.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocketServer } from "ws";
import { closeClients, connected, makeClient, nextEvent, record } from "./harness.mjs";

let peer;
let port;
before(async () => {
  peer = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => peer.once("listening", resolve));
  port = peer.address().port;
  peer.on("connection", (socket) => {
    socket.send(JSON.stringify({ type: "welcome", session: "7", user: "alice", shard: 0, node: "n1" }));
    socket.on("message", (raw) => {
      const req = JSON.parse(String(raw));
      if (req.type === "send" && req.ack === true) {
        socket.send(JSON.stringify({ type: "ack", id: req.id, op: "send", to: req.to, sessions: 1, mid: "m1" }));
        socket.send(JSON.stringify({ type: "delivered", id: req.id, mid: "m1" }));
        socket.send(JSON.stringify({ type: "direct", from: "bob", session: "8", data: "while you were away", stored: true, mid: "m0" }));
      } else if (req.type === "received") {
        socket.send(JSON.stringify({ type: "noted", mid: req.mid }));
      }
    });
  });
});
after(async () => {
  closeClients();
  for (const socket of peer.clients) socket.terminate();
  await new Promise((resolve) => peer.close(resolve));
});

test("unknown fields and frame types pass through, and request() carries new request fields", async () => {
  const client = makeClient({ url: `ws://127.0.0.1:${port}/ws` });
  const frames = record(client, ["frame"]);
  const errors = record(client, ["error"]);
  const welcome = await connected(client);
  assert.equal(welcome.user, "alice");

  const direct = nextEvent(client, "direct");
  const delivered = nextEvent(client, "frame", { filter: (f) => f.type === "delivered" });
  const ack = await client.request({ type: "send", to: "bob", data: "hi", ack: true });
  assert.equal(ack.mid, "m1", "the ack's unknown field is kept");
  assert.equal(ack.sessions, 1);
  // A second reply with the same id, after the request settled: the frame event has it.
  assert.equal((await delivered).mid, "m1");
  const stored = await direct;
  assert.equal(stored.data, "while you were away");
  assert.equal(stored.frame.stored, true);
  assert.equal(stored.frame.mid, "m0");

  // The recipient's confirmation, and a reply type nobody knows.
  const noted = nextEvent(client, "frame", { filter: (f) => f.type === "noted" });
  // The peer answers it without the id, so the request itself times out.
  await assert.rejects(client.request({ type: "received", mid: stored.frame.mid }, { timeout: 200 }), { code: "timeout" });
  assert.equal((await noted).mid, "m0");
  assert.equal(frames[0].args[0].node, "n1", "the welcome's unknown field is kept");
  assert.deepEqual(errors, []);
  assert.equal(client.state, "connected");
});
