// Compiled (not run) by `npm run typecheck` against the published declarations in dist/: the
// WebSocket implementations fit the option, and the event maps type the listeners. Each
// `@ts-expect-error` fails the check if the line below it compiles.

import { WebSocket as NodeWebSocket } from "ws";
import { Client, ShardhubError, type ConnectionState, type JoinInfo, type RoomMessage } from "../dist/index.js";

// The browser's WebSocket (DOM lib) and the ws package's both fit the WebSocket option.
const browser = new Client("wss://example.com/ws", { WebSocket: globalThis.WebSocket });
const node = new Client("ws://127.0.0.1:8080/ws", { WebSocket: NodeWebSocket, user: "alice" });

node.on("state", (state: ConnectionState, previous: ConnectionState) => void [state, previous]);
node.on("disconnected", (info) => {
  const code: number = info.code;
  const again: boolean = info.reconnect;
  void [code, again];
});
node.on("direct", (m) => {
  const from: string = m.user;
  void from;
});
node.on("error", (e: ShardhubError) => void e.code);
// @ts-expect-error: no such event
node.on("no-such-event", () => {});
// @ts-expect-error: a state listener gets states, not numbers
node.on("state", (state: number) => void state);

const room = node.room("lobby");
room.on("message", (m: RoomMessage) => {
  const offset: number | undefined = m.offset;
  void offset;
});
room.on("subscribed", (info: JoinInfo) => {
  const recovered: boolean = info.recovered;
  const was: boolean = info.wasRecovering;
  void [recovered, was];
});
// @ts-expect-error: presence events carry a PresenceEvent
room.on("joined", (e: JoinInfo) => void e);

async function flows(): Promise<void> {
  const info: JoinInfo = await room.join();
  const r = await node.join("other");
  await r.publish({ text: "hi" }, { excludeSelf: true });
  const { sessions }: { sessions: number } = await node.send("bob", "psst");
  await node.broadcast({ alert: 1 }, { excludeSelf: true });
  const members = await room.members();
  const first: string | undefined = members[0]?.session;
  // @ts-expect-error: send needs a user and data
  await node.send("bob");
  void [info, sessions, first, browser];
}
void flows;
