/**
 * The public types: options, events and the messages they carry.
 *
 * The WebSocket types are structural (what this client uses of a WebSocket), so that the
 * declarations need neither the DOM library nor `@types/ws`: the browser's `WebSocket`,
 * Node 22's global one and the `ws` package all fit.
 *
 * @module
 */

import type { ShardhubError } from "./errors.js";

/** What this client needs of a WebSocket object. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

/** A WebSocket constructor: `globalThis.WebSocket`, or `WebSocket` from the `ws` package. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/**
 * The connection's state:
 *
 * * `disconnected`: not connected and not trying (before {@link Client.connect}, after
 *   {@link Client.disconnect}, or after a close of the do-not-reconnect class);
 * * `connecting`: the first connection after `connect()` is being made (its retries too);
 * * `connected`: the server's `welcome` arrived;
 * * `reconnecting`: a connection that was up was lost; the client is waiting out its backoff
 *   or making the next attempt.
 */
export type ConnectionState = "disconnected" | "connecting" | "connected" | "reconnecting";

/** Any JSON frame from the server, with every field it carried. */
export interface ServerFrame {
  type: string;
  [field: string]: unknown;
}

/** Options of {@link Client}. Durations are in milliseconds. */
export interface ClientOptions {
  /** A bearer token (JWT) presented on every connection. */
  token?: string;
  /**
   * Called before every connection attempt (the first one and every reconnect) for a fresh
   * token; may be async. Takes precedence over `token`. A failure (a thrown error or a
   * rejected promise) is reported as an `error` event with code `token` and retried with
   * backoff. A token the server refuses (close 3500) stops the client: it goes
   * `disconnected`, and the `disconnected` event says why.
   */
  getToken?: () => string | Promise<string>;
  /**
   * How the token travels: `"protocol"` (default) in the `Sec-WebSocket-Protocol` header
   * (`bearer, TOKEN`; the way browsers can send it), `"query"` as `?token=` (ends up in proxy
   * logs; prefer the header).
   */
  tokenTransport?: "protocol" | "query";
  /** The user id (`?user=`), for servers without authentication. Ignored by servers with it. */
  user?: string;
  /**
   * The WebSocket implementation. Defaults to `globalThis.WebSocket` (browsers, Node 22+);
   * on Node 20 pass `WebSocket` from the `ws` package.
   */
  WebSocket?: WebSocketConstructor;
  /** The least delay before a reconnect attempt. Default 500. */
  minReconnectDelay?: number;
  /** The largest delay before a reconnect attempt. Default 20000. */
  maxReconnectDelay?: number;
  /** How long a request waits for its reply (and a `join` for its room). Default 5000. */
  timeout?: number;
  /**
   * How long an attempt may take from opening the socket to the server's `welcome` before it
   * is abandoned (and retried). Default 10000.
   */
  connectTimeout?: number;
  /**
   * After this long without hearing anything from the server, the client sends a protocol
   * `ping` (browsers cannot see WebSocket pings). Default 25000; 0 turns it off.
   */
  pingInterval?: number;
  /** How long the client waits for the `pong` before it calls the connection dead and reconnects. Default 10000. */
  pongTimeout?: number;
  /** How many requests may wait for a connection (made while connecting or reconnecting). Default 256. */
  maxQueue?: number;
  /**
   * Receipts for direct messages sent with `"ack": true`: `"auto"` (default) confirms each
   * once the `direct` listeners have returned; `"manual"` leaves it to `client.receipt(m)`.
   */
  receipts?: "auto" | "manual";
}

/** The server's greeting: who this connection is. */
export interface Welcome {
  /** The session id (a decimal string: it does not fit a JavaScript number). */
  session: string;
  /** The user id. */
  user: string;
  /** The server shard that holds the connection. */
  shard: number;
}

/** How a connection (or an attempt) ended. */
export interface DisconnectInfo {
  /**
   * The close code: the server's (`CLOSE_CODES`), 1006 when the connection dropped without a
   * close frame (and when the client gave up on a silent connection: no `pong`, no `welcome`),
   * 1000 after {@link Client.disconnect}.
   */
  code: number;
  /** The close reason. */
  reason: string;
  /** Whether the client will try again (after its backoff). */
  reconnect: boolean;
}

/** A room message. */
export interface RoomMessage {
  /** The room. */
  room: string;
  /** The payload: any JSON value, or a `Uint8Array` for binary publications. */
  data: unknown;
  /** The sender's user id (`"server"` for the HTTP API and the application). */
  user: string;
  /** The sender's session id (`"0"` for the HTTP API and the application; `""` for binary frames, which do not carry it). */
  session: string;
  /** The publication's position in a room with history (absent for binary publications and rooms without history). */
  offset: number | undefined;
  /** Whether it came as a binary frame. */
  binary: boolean;
  /** The frame as received (JSON messages only), with any fields this client does not know. */
  frame: ServerFrame | undefined;
}

/** A direct message (`send`) to this user. */
export interface DirectMessage {
  /** The payload: any JSON value, or a `Uint8Array` when sent as a binary frame. */
  data: unknown;
  /** The sender's user id. */
  user: string;
  /** The sender's session id (`""` for binary frames). */
  session: string;
  /** Whether it came as a binary frame. */
  binary: boolean;
  /** The frame as received (JSON messages only), with any fields this client does not know. */
  frame: ServerFrame | undefined;
  /** The message id (`"<session>-<n>"`): the same for every copy of one message. */
  mid?: string;
  /** The sender asked for a receipt (see {@link ClientOptions.receipts}). */
  ack?: boolean;
  /** It was kept while this user was offline and comes on connecting. */
  stored?: boolean;
}

/** What a `send` achieved. */
export interface SendResult {
  /** The sessions it reached now (0 when stored). */
  sessions: number;
  /** Its message id, if the server gave one. */
  mid: string | undefined;
  /** It was kept for an offline user (`store`). */
  stored: boolean;
}

/** The outcome of an acknowledged send: how many sessions it reached and how many confirmed. */
export interface DeliveryReport {
  mid: string;
  reached: number;
  receipts: number;
}

/** A broadcast to every session. */
export type BroadcastMessage = DirectMessage;

/** A session in a room. */
export interface Member {
  user: string;
  session: string;
}

/** A presence event: `user`'s `session` joined or left `room`. */
export interface PresenceEvent extends Member {
  room: string;
}

/** The outcome of a join (and of every rejoin after a reconnect). */
export interface JoinInfo {
  /** The room. */
  room: string;
  /** The room's member count after the join. */
  members: number;
  /** The room's position the member starts from (rooms with history). */
  offset: number | undefined;
  /** The room's stream (rooms with history); it changes when the server restarts. */
  epoch: string | undefined;
  /** Whether this join asked the server to recover missed publications (a rejoin of a room with history). */
  wasRecovering: boolean;
  /**
   * Whether every missed publication follows (they arrive as `message` events before any live
   * one). `false` when recovery was asked for and was not possible (history overflowed or
   * expired, the server restarted): the application reloads its state, then follows live
   * messages. `false` as well when nothing was asked (`wasRecovering` false).
   */
  recovered: boolean;
}

/** Events of {@link Client}. */
export interface ClientEvents {
  /** The connection state changed. */
  state: (state: ConnectionState, previous: ConnectionState) => void;
  /** A connection is up (the server's `welcome` arrived); rooms are being rejoined. */
  connected: (welcome: Welcome) => void;
  /** A connection, or an attempt, ended. `info.reconnect` says whether the client tries again. */
  disconnected: (info: DisconnectInfo) => void;
  /** A room message, of any room (also delivered to the room's own `message` listeners). */
  message: (message: RoomMessage) => void;
  /** A direct message to this user. */
  direct: (message: DirectMessage) => void;
  /** A broadcast. */
  broadcast: (message: BroadcastMessage) => void;
  /**
   * An error that no request waits for: a server `error` without a request id (`rate_limited`,
   * `bad_request` for an unparseable message, failures of binary requests with `op: "binary"`),
   * or a failed `getToken`.
   */
  error: (error: ShardhubError) => void;
  /** Every JSON frame from the server, as received, before the client handles it. */
  frame: (frame: ServerFrame) => void;
}

/** Events of {@link Room}. */
export interface RoomEvents {
  /** A message in this room (duplicates, by offset, are dropped). */
  message: (message: RoomMessage) => void;
  /** Another session joined the room. */
  joined: (event: PresenceEvent) => void;
  /** A session left the room (or disconnected). */
  left: (event: PresenceEvent) => void;
  /** The room was joined: the first time, and again after every reconnect. */
  subscribed: (info: JoinInfo) => void;
  /** The room was left ({@link Room.leave}), or a rejoin failed (`error` says why). */
  unsubscribed: (error: ShardhubError | undefined) => void;
  /** The server refused a join or a rejoin after a reconnect (the room is then unsubscribed; `join()` callers get the same error). */
  error: (error: ShardhubError) => void;
}
