// GENERATED FILE, DO NOT EDIT: the shardhub JavaScript client (clients/js/src) bundled into one
// ES module by `npm run bundle` in clients/js (esbuild; scripts/bundle.mjs). The shardhub binary
// serves it at /shardhub-client.js for the demo page. Edit clients/js/src and run
// `npm run bundle`; clients/js's test/bundle.test.mjs checks this file against a fresh build.


// src/backoff.ts
function backoffDelay(attempt, min, max, random = Math.random) {
  const step = Math.min(Math.max(attempt, 0), 31);
  const spread = Math.min(max, min * 2 ** step);
  return Math.min(max, min + Math.floor(random() * spread));
}

// src/binary.ts
var BinaryOp = {
  /** Publish to a room (the sender included). */
  Publish: 1,
  /** Send to every session of a user. */
  Send: 2,
  /** Broadcast to every session (the sender included). */
  Broadcast: 3,
  /** Broadcast to every session but the sender's. */
  BroadcastExceptSelf: 4,
  /** Publish to a room, the sender excluded. */
  PublishExceptSelf: 5
};
var BinaryKind = {
  /** A room message. */
  Room: 1,
  /** A direct message. */
  Direct: 2,
  /** A broadcast. */
  Broadcast: 3
};
var encoder = new TextEncoder();
var decoder = new TextDecoder("utf-8", { fatal: true });
function encodeBinary(op, target, payload) {
  const t = encoder.encode(target);
  if (t.length > 255) throw new RangeError(`binary target over 255 bytes: ${target.length} characters`);
  const out = new Uint8Array(2 + t.length + payload.length);
  out[0] = op;
  out[1] = t.length;
  out.set(t, 2);
  out.set(payload, 2 + t.length);
  return out;
}
function decodeBinary(bytes) {
  try {
    if (bytes.length < 2) return void 0;
    const kind = bytes[0];
    const roomLen = bytes[1];
    let at = 2;
    if (bytes.length < at + roomLen + 1) return void 0;
    const room = decoder.decode(bytes.subarray(at, at + roomLen));
    at += roomLen;
    const userLen = bytes[at];
    at += 1;
    if (bytes.length < at + userLen) return void 0;
    const user = decoder.decode(bytes.subarray(at, at + userLen));
    at += userLen;
    return { kind, room, user, data: bytes.slice(at) };
  } catch {
    return void 0;
  }
}

// src/close.ts
var CloseCode = {
  /** 3000: the server is shutting down or restarting. */
  Shutdown: 3e3,
  /** 3001: the server heard nothing from the client for its ping interval and timeout. */
  HeartbeatTimeout: 3001,
  /** 3002: the client did not read its messages fast enough (slow consumer). */
  SlowConsumer: 3002,
  /** 3003: queued output made no progress (write stall). */
  WriteStall: 3003,
  /** 3004: the server sheds load, or an operator moved the client off. */
  Overloaded: 3004,
  /** 3005: handling one of this session's messages failed on the server's side. */
  InternalError: 3005,
  /** 3006: the application or an operator closed the session and wants the client back. */
  ForceReconnect: 3006,
  /** 3500: missing, invalid or expired credentials (`invalid token: expired`, …). */
  Unauthorized: 3500,
  /** 3501: an `Origin` not allowed, or a refusal with 403. */
  Forbidden: 3501,
  /** 3502: the client kept exceeding its rate limit. */
  RateLimited: 3502,
  /** 3503: a connection limit (a refusal with 429). */
  ConnectionLimit: 3503,
  /** 3504: a refusal with 400. */
  BadRequest: 3504,
  /** 3505: the application or an operator closed the session for good. */
  ForceDisconnect: 3505,
  /** 1002: RFC 6455 protocol violation. */
  ProtocolError: 1002,
  /** 1007: a text message that is not valid UTF-8. */
  InvalidUtf8: 1007,
  /** 1009: a message over the server's `max_message_bytes`. */
  MessageTooBig: 1009,
  /** 1000: normal closure (what {@link Client.disconnect} sends). */
  Normal: 1e3,
  /** 1006: the connection ended without a close frame (network failure, server killed). */
  Abnormal: 1006
};
var CLOSE_CODES = Object.freeze([
  { code: 3e3, name: "Shutdown", reason: "server shutdown", reconnect: true },
  { code: 3001, name: "HeartbeatTimeout", reason: "heartbeat timeout", reconnect: true },
  { code: 3002, name: "SlowConsumer", reason: "slow consumer", reconnect: true },
  { code: 3003, name: "WriteStall", reason: "write stall", reconnect: true },
  { code: 3004, name: "Overloaded", reason: "server overloaded", reconnect: true },
  { code: 3005, name: "InternalError", reason: "internal error", reconnect: true },
  { code: 3006, name: "ForceReconnect", reason: "force reconnect", reconnect: true },
  { code: 3500, name: "Unauthorized", reason: "unauthorized", reconnect: false },
  { code: 3501, name: "Forbidden", reason: "forbidden", reconnect: false },
  { code: 3502, name: "RateLimited", reason: "rate limit exceeded", reconnect: false },
  { code: 3503, name: "ConnectionLimit", reason: "connection limit", reconnect: false },
  { code: 3504, name: "BadRequest", reason: "bad request", reconnect: false },
  { code: 3505, name: "ForceDisconnect", reason: "force disconnect", reconnect: false },
  { code: 1002, name: "ProtocolError", reason: "protocol error", reconnect: true },
  { code: 1007, name: "InvalidUtf8", reason: "invalid UTF-8 in text message", reconnect: true },
  { code: 1009, name: "MessageTooBig", reason: "message too big", reconnect: true }
].map((row) => Object.freeze(row)));
function reconnects(code) {
  return !(code >= 3500 && code <= 3999 || code >= 4500 && code <= 4999);
}
function closeCodeInfo(code) {
  return CLOSE_CODES.find((row) => row.code === code);
}

// src/emitter.ts
var Emitter = class {
  #listeners = /* @__PURE__ */ new Map();
  /**
   * Calls `listener` on every `event` until removed. Returns a function that removes it.
   * Adding a listener that is already registered does nothing.
   */
  on(event, listener) {
    let set = this.#listeners.get(event);
    if (set === void 0) {
      set = /* @__PURE__ */ new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }
  /** Calls `listener` on the next `event` only. Returns a function that removes it. */
  once(event, listener) {
    const wrapper = ((...args) => {
      this.off(event, wrapper);
      listener(...args);
    });
    return this.on(event, wrapper);
  }
  /** Removes `listener` from `event` (nothing happens if it was not registered). */
  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }
  /** Removes every listener of `event`, or of every event when called without one. */
  removeAllListeners(event) {
    if (event === void 0) this.#listeners.clear();
    else this.#listeners.delete(event);
  }
  /** How many listeners `event` has. */
  listenerCount(event) {
    return this.#listeners.get(event)?.size ?? 0;
  }
  /**
   * Calls the listeners of `event` in the order they were added. A listener that throws does
   * not stop the others nor the client: the exception is rethrown from a fresh task, where it
   * surfaces like one thrown by any DOM event listener (`window.onerror`, or Node's
   * `uncaughtException`).
   *
   * @internal
   */
  emit(event, ...args) {
    const set = this.#listeners.get(event);
    if (set === void 0 || set.size === 0) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (err) {
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
  }
};

// src/errors.ts
var ShardhubError = class _ShardhubError extends Error {
  /** What went wrong: a server code (`not_online`, `forbidden`, …) or a client one (`timeout`, …). */
  code;
  /** The room the error is about, when the server named one. */
  room;
  /** The user the error is about (`send` errors), when the server named one. */
  to;
  /** The operation, when the server named one (`"binary"` for binary requests). */
  op;
  /** The server's `error` frame as received, with any fields this client does not know. */
  frame;
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "ShardhubError";
    this.code = code;
    this.room = extra.room;
    this.to = extra.to;
    this.op = extra.op;
    this.frame = extra.frame;
  }
  /** The error an `error` frame from the server describes. @internal */
  static fromFrame(frame) {
    const str = (v) => typeof v === "string" ? v : void 0;
    return new _ShardhubError(str(frame.code) ?? "unknown", str(frame.message) ?? "server error", {
      room: str(frame.room),
      to: str(frame.to),
      op: str(frame.op),
      frame
    });
  }
};

// src/room.ts
var Room = class extends Emitter {
  /** The room's name. */
  name;
  #host;
  #state = "unsubscribed";
  #wanted = false;
  /** Id of the join request in flight: acks of older ones are stale. */
  #joinToken = 0;
  #joinInFlight = false;
  #waiters = /* @__PURE__ */ new Set();
  #lastOffset;
  #epoch;
  #info;
  /** @internal Use {@link Client.room}. */
  constructor(host, name) {
    super();
    this.#host = host;
    this.name = name;
  }
  /** Where the room is: `unsubscribed`, `joining` or `joined`. */
  get state() {
    return this.#state;
  }
  /** The offset of the last message delivered (rooms with history), the position a rejoin recovers from. */
  get offset() {
    return this.#lastOffset;
  }
  /** The room's stream epoch from the last join ack (rooms with history). */
  get epoch() {
    return this.#epoch;
  }
  /**
   * Joins the room, and keeps it joined across reconnects until {@link leave}. Resolves when
   * the server acknowledged the join (at once if it already has on this connection). May be
   * called before {@link Client.connect}: the join is sent when the connection is up.
   *
   * Rejects with a server error (`room_full`, `forbidden`, `too_many_rooms`, `bad_request`;
   * the room is then not wanted any more), `timeout` when no ack came within the client's
   * `timeout` (the room stays wanted: the join goes on, and `subscribed` tells when it is
   * done; call `leave()` to give up), `disconnected` when the client stopped, or `left` when
   * `leave()` was called first.
   */
  join(options = {}) {
    this.#wanted = true;
    if (this.#state === "joined" && this.#info !== void 0) return Promise.resolve(this.#info);
    const timeout = options.timeout ?? this.#host.timeout;
    const promise = new Promise((resolve, reject) => {
      const waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(waiter);
          reject(new ShardhubError("timeout", `join ${this.name}: no ack within ${timeout} ms`, { room: this.name }));
        }, timeout)
      };
      this.#waiters.add(waiter);
    });
    if (this.#state === "unsubscribed") this.#state = "joining";
    if (this.#host.state === "connected" && !this.#joinInFlight) this.#sendJoin();
    return promise;
  }
  /**
   * Leaves the room: no more events from it, no rejoin after reconnects, and the position is
   * forgotten (a later `join` starts from the room's current position). Resolves once the
   * server confirmed, or at once when there is no connection (the server dropped the
   * membership with it).
   */
  leave(options = {}) {
    const was = this.#state;
    this.#wanted = false;
    this.#state = "unsubscribed";
    this.#joinInFlight = false;
    this.#joinToken++;
    this.#lastOffset = void 0;
    this.#epoch = void 0;
    this.#info = void 0;
    this.#rejectWaiters(new ShardhubError("left", `left room ${this.name}`, { room: this.name }));
    if (was === "unsubscribed") return Promise.resolve();
    this.emit("unsubscribed", void 0);
    if (this.#host.state !== "connected") return Promise.resolve();
    return this.#host._requestPromise({ type: "leave", room: this.name }, options.timeout).then(
      () => void 0,
      (err) => {
        if (err.code === "not_member" || err.code === "disconnected") return void 0;
        throw err;
      }
    );
  }
  /**
   * Publishes `data` (any JSON value) to the room; resolves on the server's ack. Rejects with
   * `not_member` when the room is not joined, `forbidden`, `timeout`, `disconnected`.
   */
  publish(data, options = {}) {
    const frame = { type: "publish", room: this.name, data };
    if (options.excludeSelf) frame.exclude_self = true;
    return this.#host._requestPromise(frame, options.timeout).then(() => void 0);
  }
  /**
   * Publishes bytes as a binary frame (ops 1 and 5). The protocol acknowledges binary
   * publications only when they fail: this resolves when the frame is handed to the socket,
   * and a failure (`not_member`, `forbidden`) arrives as the client's `error` event with
   * `op: "binary"`. Binary publications are live only: no offset, no history.
   */
  publishBinary(data, options = {}) {
    const op = options.excludeSelf ? BinaryOp.PublishExceptSelf : BinaryOp.Publish;
    return this.#host._sendBinary(encodeBinary(op, this.name, data), options.timeout);
  }
  /** The room's members on every shard. Rejects with `forbidden` without the presence permission. */
  members(options = {}) {
    return this.#host._requestPromise({ type: "members", room: this.name }, options.timeout).then(
      (f) => Array.isArray(f.members) ? f.members : []
    );
  }
  // ----- called by the client -----
  /** Whether the application wants this room joined. @internal */
  get _wanted() {
    return this.#wanted;
  }
  /** A connection came up: join again if wanted. @internal */
  _onConnected() {
    if (!this.#wanted) return;
    this.#state = "joining";
    this.#sendJoin();
  }
  /**
   * The connection went. A wanted room waits to be joined again; when the client stopped for
   * good (`stopped`), join() calls waiting for it fail. @internal
   */
  _onDisconnected(stopped) {
    this.#joinInFlight = false;
    this.#joinToken++;
    if (this.#wanted) this.#state = "joining";
    if (stopped) {
      this.#rejectWaiters(new ShardhubError("disconnected", "the client is disconnected", { room: this.name }));
    }
  }
  /** A message for this room: delivers it unless unwanted or a duplicate. @internal */
  _deliver(message) {
    if (!this.#wanted) return false;
    if (message.offset !== void 0) {
      if (this.#lastOffset !== void 0 && message.offset <= this.#lastOffset) return false;
      this.#lastOffset = message.offset;
    }
    this.emit("message", message);
    return true;
  }
  /** A presence event of this room. @internal */
  _presence(kind, event) {
    if (this.#wanted) this.emit(kind, event);
  }
  #sendJoin() {
    const frame = { type: "join", room: this.name };
    const recovering = this.#epoch !== void 0 && this.#lastOffset !== void 0;
    if (recovering) frame.recover = { offset: this.#lastOffset, epoch: this.#epoch };
    const token = ++this.#joinToken;
    this.#joinInFlight = true;
    this.#host._request(
      frame,
      0,
      (ack) => this.#onJoinAck(token, ack, recovering),
      (err) => this.#onJoinError(token, err)
    );
  }
  // Called synchronously while the client handles the ack frame, so that the state and the
  // position are up to date before the replayed messages behind the ack are handled.
  #onJoinAck(token, ack, recovering) {
    if (token !== this.#joinToken || !this.#wanted) return;
    this.#joinInFlight = false;
    const offset = typeof ack.offset === "number" ? ack.offset : void 0;
    const epoch = typeof ack.epoch === "string" ? ack.epoch : void 0;
    const recovered = recovering && ack.recovered === true;
    if (offset !== void 0 && epoch !== void 0) {
      if (!recovered) this.#lastOffset = offset;
      this.#epoch = epoch;
    } else {
      this.#lastOffset = void 0;
      this.#epoch = void 0;
    }
    this.#state = "joined";
    const info = {
      room: this.name,
      members: typeof ack.members === "number" ? ack.members : 0,
      offset,
      epoch,
      wasRecovering: recovering,
      recovered
    };
    this.#info = info;
    for (const waiter of this.#takeWaiters()) waiter.resolve(info);
    this.emit("subscribed", info);
  }
  #onJoinError(token, err) {
    if (token !== this.#joinToken) return;
    this.#joinInFlight = false;
    if (err.code === "disconnected") return;
    this.#wanted = false;
    this.#state = "unsubscribed";
    this.#lastOffset = void 0;
    this.#epoch = void 0;
    this.#info = void 0;
    this.#rejectWaiters(err);
    this.emit("error", err);
    this.emit("unsubscribed", err);
  }
  #takeWaiters() {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) clearTimeout(w.timer);
    return waiters;
  }
  #rejectWaiters(err) {
    for (const waiter of this.#takeWaiters()) waiter.reject(err);
  }
};

// src/client.ts
var DEFAULTS = Object.freeze({
  minReconnectDelay: 500,
  maxReconnectDelay: 2e4,
  timeout: 5e3,
  connectTimeout: 1e4,
  pingInterval: 25e3,
  pongTimeout: 1e4,
  maxQueue: 256,
  tokenTransport: "protocol",
  receipts: "auto"
});
var SEEN_MIDS = 1024;
function sendResult(ack) {
  return {
    sessions: typeof ack.sessions === "number" ? ack.sessions : 0,
    mid: typeof ack.mid === "string" ? ack.mid : void 0,
    stored: ack.stored === true
  };
}
var Client = class extends Emitter {
  /** The server's WebSocket URL as given. */
  url;
  #url;
  #WebSocket;
  #opts;
  #state = "disconnected";
  #ws = null;
  #welcome;
  /** Bumped by every attempt and by a stop, so that a late `getToken` result is dropped. */
  #generation = 0;
  #attempts = 0;
  #nextId = 1;
  /** Sent, waiting for their replies. */
  #pending = /* @__PURE__ */ new Map();
  /** Waiting for a connection, in order. */
  #queue = [];
  #rooms = /* @__PURE__ */ new Map();
  /** Acknowledged sends past their `ack`, by request id. */
  #outcomes = /* @__PURE__ */ new Map();
  /** The last {@link SEEN_MIDS} message ids of direct messages, oldest first. */
  #seenMids = /* @__PURE__ */ new Set();
  #lastHeard = 0;
  #reconnectTimer;
  #connectTimer;
  #pingTimer;
  #onlineTarget;
  /**
   * A client of the server at `url` (`ws://` or `wss://`; `http(s)://` and, in a browser, a
   * path like `/ws` relative to the page work too). Nothing happens until {@link connect}.
   * Throws a `TypeError` for an unusable URL or when there is no WebSocket implementation.
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    const base = globalThis.location?.href;
    this.#url = new URL(url, base);
    if (this.#url.protocol === "http:") this.#url.protocol = "ws:";
    else if (this.#url.protocol === "https:") this.#url.protocol = "wss:";
    if (this.#url.protocol !== "ws:" && this.#url.protocol !== "wss:") {
      throw new TypeError(`not a WebSocket URL: ${url}`);
    }
    const impl = options.WebSocket ?? globalThis.WebSocket;
    if (impl === void 0) {
      throw new TypeError(
        'no WebSocket implementation: pass one as the WebSocket option (on Node 20: `import { WebSocket } from "ws"`)'
      );
    }
    this.#WebSocket = impl;
    const pick = (key) => options[key] ?? DEFAULTS[key];
    this.#opts = {
      token: options.token,
      getToken: options.getToken,
      user: options.user,
      tokenTransport: pick("tokenTransport"),
      minReconnectDelay: pick("minReconnectDelay"),
      maxReconnectDelay: pick("maxReconnectDelay"),
      timeout: pick("timeout"),
      connectTimeout: pick("connectTimeout"),
      pingInterval: pick("pingInterval"),
      pongTimeout: pick("pongTimeout"),
      maxQueue: pick("maxQueue"),
      receipts: pick("receipts")
    };
    if (this.#opts.maxReconnectDelay < this.#opts.minReconnectDelay) {
      throw new RangeError("maxReconnectDelay is smaller than minReconnectDelay");
    }
  }
  /** The connection state. */
  get state() {
    return this.#state;
  }
  /** The current connection's `welcome` (session id, user id, shard); `undefined` while not connected. */
  get welcome() {
    return this.#state === "connected" ? this.#welcome : void 0;
  }
  /** The default request timeout in milliseconds. */
  get timeout() {
    return this.#opts.timeout;
  }
  /**
   * Starts connecting (state `connecting`), and keeps the connection up until
   * {@link disconnect} or a close of the do-not-reconnect class. Does nothing unless
   * `disconnected`. Wanted rooms are joined on every connection.
   */
  connect() {
    if (this.#state !== "disconnected") return;
    this.#attempts = 0;
    this.#setState("connecting");
    this.#watchOnline();
    void this.#open();
  }
  /**
   * Closes the connection (code 1000) and stops reconnecting. Requests waiting for a reply or
   * a connection fail with `disconnected`. Rooms stay wanted: a later {@link connect} joins
   * them again (leave them first to forget them).
   */
  disconnect() {
    if (this.#state === "disconnected") return;
    this.#stop(1e3, "client disconnect");
  }
  /** The room called `name` (the same object on every call); join it with {@link Room.join}. */
  room(name) {
    let room = this.#rooms.get(name);
    if (room === void 0) {
      room = new Room(this, name);
      this.#rooms.set(name, room);
    }
    return room;
  }
  /** Joins the room `name` (see {@link Room.join}) and resolves with it. */
  join(name, options = {}) {
    const room = this.room(name);
    return room.join(options).then(() => room);
  }
  /** The rooms the application wants joined (see {@link Room.join}). */
  rooms() {
    return [...this.#rooms.values()].filter((room) => room._wanted);
  }
  /**
   * Sends `data` (any JSON value) to every session of `user`; resolves with how many sessions
   * it reached and the message id. With `store`, a user who is offline everywhere gets it on
   * their next connection (`stored: true`, `sessions: 0`) instead of a `not_online`. Rejects
   * with `not_online`, `forbidden`, `store_full`, `timeout`, `disconnected`.
   */
  send(user, data, options = {}) {
    const frame = { type: "send", to: user, data };
    if (options.store) frame.store = true;
    return this.#requestPromise(frame, options.timeout).then(sendResult);
  }
  /**
   * Sends `data` to every session of `user` and waits for their receipts (`"ack": true`):
   * resolves with the {@link DeliveryReport} once every session reached has confirmed, or when
   * `ackTimeout` ms (default: the server's `ack_timeout`) pass with at least one receipt; rejects
   * with `not_delivered` when none came, and with `not_online`, `too_many_pending`,
   * `timeout`, `disconnected` like {@link send}.
   */
  sendAcked(user, data, options = {}) {
    const frame = { type: "send", to: user, data, ack: true };
    if (options.ackTimeout !== void 0) frame.timeout_ms = options.ackTimeout;
    const wait = (options.ackTimeout ?? 3e5) + (options.timeout ?? this.#opts.timeout);
    return new Promise((resolve, reject) => {
      this._request(
        frame,
        options.timeout ?? this.#opts.timeout,
        (_ack, id) => {
          const timer = setTimeout(() => {
            this.#outcomes.delete(id);
            reject(new ShardhubError("timeout", `send to ${user}: no delivery report within ${wait} ms`));
          }, wait);
          this.#outcomes.set(id, { resolve, reject, timer, to: user });
        },
        reject
      );
    });
  }
  /**
   * Confirms a direct message sent with `"ack": true` (`{"type":"received","mid":…}`). With
   * the default `receipts: "auto"` the client does this itself once the `direct` listeners
   * have returned; with `"manual"` the application calls it when it has handled the message.
   */
  receipt(message) {
    if (message.mid === void 0 || !message.ack) return;
    const ws = this.#ws;
    if (this.#state === "connected" && ws !== null) {
      try {
        ws.send(JSON.stringify({ type: "received", mid: message.mid }));
      } catch {
      }
    }
  }
  /** Sends `data` to every session on the server (but this one with `excludeSelf`); resolves on the ack. */
  broadcast(data, options = {}) {
    const frame = { type: "broadcast", data };
    if (options.excludeSelf) frame.exclude_self = true;
    return this.#requestPromise(frame, options.timeout).then(() => void 0);
  }
  /** Sends bytes to every session of `user` as a binary frame (op 2); see {@link Room.publishBinary} for what resolves and how failures arrive. */
  sendBinary(user, data, options = {}) {
    return this._sendBinary(encodeBinary(BinaryOp.Send, user, data), options.timeout);
  }
  /** Broadcasts bytes as a binary frame (ops 3 and 4); see {@link Room.publishBinary}. */
  broadcastBinary(data, options = {}) {
    const op = options.excludeSelf ? BinaryOp.BroadcastExceptSelf : BinaryOp.Broadcast;
    return this._sendBinary(encodeBinary(op, "", data), options.timeout);
  }
  /** A protocol ping; resolves with the round-trip time in milliseconds. */
  ping(options = {}) {
    const start = Date.now();
    return this.#requestPromise({ type: "ping" }, options.timeout).then(() => Date.now() - start);
  }
  /**
   * Sends any request (`frame` with its `type` and fields; the client adds the `id`) and
   * resolves with the server's reply carrying that id, whatever its type; an `error` reply
   * rejects. For the application's own request types (`Hooks::handle` on the server) and
   * protocol features this client has no method for yet. Queued while connecting, like every
   * request.
   */
  request(frame, options = {}) {
    return this.#requestPromise(frame, options.timeout);
  }
  // ----- requests -----
  /** @internal */
  _requestPromise(frame, timeout) {
    return this.#requestPromise(frame, timeout);
  }
  #requestPromise(frame, timeout) {
    return new Promise((resolve, reject) => {
      this._request(frame, timeout ?? this.#opts.timeout, (f) => resolve(f), reject);
    });
  }
  /**
   * Sends a request (adding its `id`) or queues it until connected; `onReply` or `onError`
   * is called exactly once, synchronously while the reply frame is handled (so that state
   * changes precede the frames behind the reply). `timeout` 0: no timeout. @internal
   */
  _request(frame, timeout, onReply, onError) {
    const id = this.#nextId++;
    const text = JSON.stringify({ ...frame, id });
    this.#submit({
      id,
      payload: text,
      expectsReply: true,
      onReply: (f) => onReply(f, id),
      onError,
      timer: void 0
    }, timeout, String(frame.type));
  }
  /** Sends a binary frame, or queues it until connected; resolves when handed to the socket. @internal */
  _sendBinary(bytes, timeout) {
    return new Promise((resolve, reject) => {
      this.#submit(
        { id: this.#nextId++, payload: bytes, expectsReply: false, onReply: () => resolve(), onError: reject, timer: void 0 },
        timeout ?? this.#opts.timeout,
        "binary"
      );
    });
  }
  #submit(out, timeout, what) {
    if (this.#state === "disconnected") {
      out.onError(new ShardhubError("disconnected", `${what}: not connected (call connect() first)`));
      return;
    }
    if (this.#state !== "connected" && this.#queue.length >= this.#opts.maxQueue) {
      out.onError(new ShardhubError("queue_full", `${what}: ${this.#queue.length} requests already wait for a connection`));
      return;
    }
    if (timeout > 0) {
      out.timer = setTimeout(() => {
        out.timer = void 0;
        if (this.#pending.get(out.id) === out) this.#pending.delete(out.id);
        const at = this.#queue.indexOf(out);
        if (at >= 0) this.#queue.splice(at, 1);
        out.onError(new ShardhubError("timeout", `${what}: no reply within ${timeout} ms`));
      }, timeout);
    }
    if (this.#state === "connected" && this.#ws !== null) this.#transmit(this.#ws, out);
    else this.#queue.push(out);
  }
  #transmit(ws, out) {
    try {
      ws.send(out.payload);
    } catch (err) {
      this.#settle(out);
      out.onError(new ShardhubError("disconnected", `send failed: ${String(err)}`));
      return;
    }
    if (out.expectsReply) {
      this.#pending.set(out.id, out);
    } else {
      this.#settle(out);
      out.onReply(void 0);
    }
  }
  #settle(out) {
    if (out.timer !== void 0) clearTimeout(out.timer);
    out.timer = void 0;
  }
  #failAll(queued, message) {
    const failed = [...this.#pending.values()];
    this.#pending.clear();
    if (queued) {
      failed.push(...this.#queue);
      this.#queue = [];
    }
    for (const out of failed) {
      this.#settle(out);
      out.onError(new ShardhubError("disconnected", message));
    }
    const outcomes = [...this.#outcomes.values()];
    this.#outcomes.clear();
    for (const o of outcomes) {
      clearTimeout(o.timer);
      o.reject(new ShardhubError("disconnected", `send to ${o.to}: ${message} before the delivery report`));
    }
  }
  // ----- connection -----
  #setState(state) {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.emit("state", state, previous);
  }
  async #open() {
    const generation = ++this.#generation;
    this.#reconnectTimer = void 0;
    let token = this.#opts.token;
    if (this.#opts.getToken !== void 0) {
      try {
        token = await this.#opts.getToken();
      } catch (err) {
        if (generation !== this.#generation) return;
        this.emit("error", new ShardhubError("token", `getToken failed: ${err instanceof Error ? err.message : String(err)}`));
        this.#scheduleReconnect();
        return;
      }
      if (generation !== this.#generation) return;
    }
    const url = new URL(this.#url.href);
    if (this.#opts.user !== void 0) url.searchParams.set("user", this.#opts.user);
    let protocols;
    if (token) {
      if (this.#opts.tokenTransport === "query") url.searchParams.set("token", token);
      else protocols = ["bearer", token];
    }
    let ws;
    try {
      ws = protocols === void 0 ? new this.#WebSocket(url.href) : new this.#WebSocket(url.href, protocols);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.emit("error", new ShardhubError("bad_request", `cannot open a WebSocket: ${message}`));
      this.#stop(1006, message);
      return;
    }
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => {
      if (this.#ws === ws) this.#onData(event.data);
    };
    ws.onclose = (event) => {
      if (this.#ws === ws) this.#onClose(event.code ?? 1006, event.reason ?? "");
    };
    ws.onerror = () => {
    };
    this.#connectTimer = setTimeout(() => {
      this.#connectTimer = void 0;
      this.#abandon(ws, `no welcome within ${this.#opts.connectTimeout} ms`);
    }, this.#opts.connectTimeout);
  }
  /** Gives up on a socket that went silent: drops it without waiting for its close. */
  #abandon(ws, reason) {
    if (this.#ws !== ws) return;
    this.#detach(ws);
    this.#onClose(1006, reason);
  }
  #detach(ws, code) {
    ws.onmessage = null;
    ws.onclose = null;
    ws.onopen = null;
    ws.onerror = () => {
    };
    try {
      const terminate = ws.terminate;
      if (code === void 0 && typeof terminate === "function") terminate.call(ws);
      else ws.close(code ?? 1e3);
    } catch {
    }
  }
  #onClose(code, reason) {
    this.#ws = null;
    this.#clearConnectionTimers();
    this.#failAll(false, `connection closed (${code}${reason ? ` ${reason}` : ""}) before the reply`);
    for (const room of this.#rooms.values()) room._onDisconnected(false);
    if (!reconnects(code)) {
      this.#stop(code, reason);
      return;
    }
    const wasUp = this.#state === "connected" || this.#state === "reconnecting";
    this.#setState(wasUp ? "reconnecting" : "connecting");
    if (this.#state === "disconnected") return;
    this.#scheduleReconnect();
    this.emit("disconnected", { code, reason, reconnect: true });
  }
  /** Stops for good: closes the socket, fails what waits, state `disconnected`. */
  #stop(code, reason) {
    this.#generation++;
    if (this.#reconnectTimer !== void 0) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = void 0;
    this.#clearConnectionTimers();
    const ws = this.#ws;
    this.#ws = null;
    if (ws !== null) this.#detach(ws, 1e3);
    this.#unwatchOnline();
    this.#failAll(true, `disconnected (${code}${reason ? ` ${reason}` : ""})`);
    for (const room of this.#rooms.values()) room._onDisconnected(true);
    this.#setState("disconnected");
    this.emit("disconnected", { code, reason, reconnect: false });
  }
  #clearConnectionTimers() {
    if (this.#connectTimer !== void 0) clearTimeout(this.#connectTimer);
    if (this.#pingTimer !== void 0) clearTimeout(this.#pingTimer);
    this.#connectTimer = void 0;
    this.#pingTimer = void 0;
  }
  #scheduleReconnect() {
    const delay = backoffDelay(this.#attempts++, this.#opts.minReconnectDelay, this.#opts.maxReconnectDelay);
    this.#reconnectTimer = setTimeout(() => void this.#open(), delay);
  }
  /** In a browser, the `online` event cuts the backoff short. */
  #watchOnline() {
    const target = globalThis.window;
    if (target === void 0 || typeof target.addEventListener !== "function") return;
    target.addEventListener("online", this.#onOnline);
    this.#onlineTarget = target;
  }
  #unwatchOnline() {
    this.#onlineTarget?.removeEventListener("online", this.#onOnline);
    this.#onlineTarget = void 0;
  }
  #onOnline = () => {
    if (this.#reconnectTimer === void 0) return;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = void 0;
    void this.#open();
  };
  // ----- heartbeat -----
  #schedulePing(after) {
    if (this.#opts.pingInterval <= 0) return;
    if (this.#pingTimer !== void 0) clearTimeout(this.#pingTimer);
    this.#pingTimer = setTimeout(this.#checkIdle, after);
  }
  #checkIdle = () => {
    this.#pingTimer = void 0;
    const ws = this.#ws;
    if (ws === null || this.#state !== "connected") return;
    const idle = Date.now() - this.#lastHeard;
    if (idle < this.#opts.pingInterval) {
      this.#schedulePing(this.#opts.pingInterval - idle);
      return;
    }
    const timeout = this.#opts.pongTimeout;
    this._request(
      { type: "ping" },
      timeout,
      () => {
        if (this.#ws === ws) this.#schedulePing(this.#opts.pingInterval);
      },
      (err) => {
        if (err.code === "timeout") this.#abandon(ws, `no pong within ${timeout} ms`);
      }
    );
  };
  // ----- what the server sends -----
  #onData(data) {
    this.#lastHeard = Date.now();
    if (typeof data === "string") {
      let frame;
      try {
        frame = JSON.parse(data);
      } catch {
        return;
      }
      if (frame !== null && typeof frame === "object" && typeof frame.type === "string") {
        this.#onFrame(frame);
      }
      return;
    }
    let bytes;
    if (data instanceof ArrayBuffer || Object.prototype.toString.call(data) === "[object ArrayBuffer]") {
      bytes = new Uint8Array(data);
    } else if (ArrayBuffer.isView(data)) {
      bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    }
    if (bytes !== void 0) this.#onBinary(bytes);
  }
  #onFrame(frame) {
    this.emit("frame", frame);
    if (typeof frame.id === "number" && (frame.type === "delivered" || frame.type === "not_delivered")) {
      const o = this.#outcomes.get(frame.id);
      if (o !== void 0) {
        this.#outcomes.delete(frame.id);
        clearTimeout(o.timer);
        const reached = typeof frame.reached === "number" ? frame.reached : 0;
        if (frame.type === "delivered") {
          const receipts = typeof frame.sessions === "number" ? frame.sessions : 0;
          o.resolve({ mid: String(frame.mid ?? ""), reached, receipts });
        } else {
          o.reject(
            new ShardhubError("not_delivered", `${o.to}: no session confirmed the message (reached ${reached})`, {
              to: o.to,
              frame
            })
          );
        }
        return;
      }
    }
    if (typeof frame.id === "number") {
      const out = this.#pending.get(frame.id);
      if (out !== void 0) {
        this.#pending.delete(frame.id);
        this.#settle(out);
        if (frame.type === "error") out.onError(ShardhubError.fromFrame(frame));
        else out.onReply(frame);
        return;
      }
    }
    const str = (v) => typeof v === "string" ? v : "";
    switch (frame.type) {
      case "welcome":
        this.#onWelcome({ session: str(frame.session), user: str(frame.user), shard: Number(frame.shard ?? 0) });
        return;
      case "message":
        this.#onRoomMessage({
          room: str(frame.room),
          data: frame.data,
          user: str(frame.from),
          session: str(frame.session),
          offset: typeof frame.offset === "number" ? frame.offset : void 0,
          binary: false,
          frame
        });
        return;
      case "direct":
      case "broadcast": {
        const message = {
          data: frame.data,
          user: str(frame.from),
          session: str(frame.session),
          binary: false,
          frame,
          mid: typeof frame.mid === "string" ? frame.mid : void 0,
          ack: frame.ack === true,
          stored: frame.stored === true
        };
        if (frame.type === "broadcast") {
          this.emit("broadcast", message);
          return;
        }
        if (message.mid !== void 0) {
          if (this.#seenMids.has(message.mid)) {
            this.receipt(message);
            return;
          }
          this.#seenMids.add(message.mid);
          if (this.#seenMids.size > SEEN_MIDS) {
            const oldest = this.#seenMids.values().next().value;
            if (oldest !== void 0) this.#seenMids.delete(oldest);
          }
        }
        this.emit("direct", message);
        if (this.#opts.receipts === "auto") this.receipt(message);
        return;
      }
      case "joined":
      case "left":
        this.#rooms.get(str(frame.room))?._presence(frame.type, {
          room: str(frame.room),
          user: str(frame.user),
          session: str(frame.session)
        });
        return;
      case "error":
        this.emit("error", ShardhubError.fromFrame(frame));
        return;
      default:
        return;
    }
  }
  #onBinary(bytes) {
    const d = decodeBinary(bytes);
    if (d === void 0) return;
    if (d.kind === BinaryKind.Room) {
      this.#onRoomMessage({ room: d.room, data: d.data, user: d.user, session: "", offset: void 0, binary: true, frame: void 0 });
    } else if (d.kind === BinaryKind.Direct || d.kind === BinaryKind.Broadcast) {
      const message = { data: d.data, user: d.user, session: "", binary: true, frame: void 0 };
      this.emit(d.kind === BinaryKind.Direct ? "direct" : "broadcast", message);
    }
  }
  #onRoomMessage(message) {
    const room = this.#rooms.get(message.room);
    if (room !== void 0 && !room._deliver(message)) return;
    this.emit("message", message);
  }
  #onWelcome(welcome) {
    const ws = this.#ws;
    if (this.#state === "connected" || ws === null) return;
    if (this.#connectTimer !== void 0) clearTimeout(this.#connectTimer);
    this.#connectTimer = void 0;
    this.#attempts = 0;
    this.#welcome = welcome;
    this.#setState("connected");
    if (this.#state !== "connected") return;
    this.#schedulePing(this.#opts.pingInterval);
    for (const room of this.#rooms.values()) room._onConnected();
    const queued = this.#queue;
    this.#queue = [];
    for (const out of queued) this.#transmit(ws, out);
    this.emit("connected", welcome);
  }
};
export {
  BinaryKind,
  BinaryOp,
  CLOSE_CODES,
  Client,
  CloseCode,
  DEFAULTS,
  Emitter,
  Room,
  ShardhubError,
  backoffDelay,
  closeCodeInfo,
  decodeBinary,
  encodeBinary,
  reconnects
};
