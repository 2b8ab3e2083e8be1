// WebSocket clients of the hub protocol (docs/protocol.md), from Node with the `ws` package:
// real connections that make a page under test have something to show.

import WebSocket from "ws";

const TIMEOUT_MS = 5_000;

/**
 * A connected client: `send(obj)`, `next(type)` (the next frame of that type, bounded),
 * `join(room)`, `close()`. `welcome` is the server's greeting.
 */
export async function connect(url) {
  const ws = new WebSocket(url);
  const queue = [];
  const waiters = [];
  ws.on("message", (data, binary) => {
    if (binary) return;
    let msg;
    try { msg = JSON.parse(data.toString()); } catch { return; }
    const i = waiters.findIndex((w) => w.type === msg.type);
    if (i >= 0) waiters.splice(i, 1)[0].resolve(msg);
    else queue.push(msg);
    if (queue.length > 1000) queue.shift(); // unread deliveries: keep the newest only
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${url}: no open in ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    ws.once("open", () => { clearTimeout(timer); resolve(); });
    ws.once("error", (e) => { clearTimeout(timer); reject(e); });
  });
  const client = {
    ws,
    send: (obj) => ws.send(JSON.stringify(obj)),
    next(type) {
      const i = queue.findIndex((m) => m.type === type);
      if (i >= 0) return Promise.resolve(queue.splice(i, 1)[0]);
      return new Promise((resolve, reject) => {
        const w = { type, resolve: (m) => { clearTimeout(timer); resolve(m); } };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`no ${type} frame in ${TIMEOUT_MS} ms`));
        }, TIMEOUT_MS);
        waiters.push(w);
      });
    },
    async join(room) {
      client.send({ type: "join", room, id: room });
      const ack = await client.next("ack");
      if (ack.room !== room) throw new Error(`join ${room}: ${JSON.stringify(ack)}`);
      return ack;
    },
    close: () => new Promise((resolve) => {
      if (ws.readyState === WebSocket.CLOSED) return resolve();
      const timer = setTimeout(() => { ws.terminate(); resolve(); }, 2_000);
      ws.once("close", () => { clearTimeout(timer); resolve(); });
      ws.close(1000);
    }),
  };
  client.welcome = await client.next("welcome");
  return client;
}
