/**
 * The connection to a shardhub server: connecting and reconnecting, requests and their
 * replies, and the routing of what the server sends to the client's and the rooms' events.
 *
 * Life of a connection: `connect()` resolves the token (`getToken()` on every attempt), opens
 * the WebSocket and waits for the server's `welcome` (within `connectTimeout`). Then the state
 * is `connected`: wanted rooms are joined again (with `recover` where the room has history),
 * requests queued meanwhile go out in order, and a protocol `ping` goes out whenever nothing
 * was heard for `pingInterval` (no `pong` within `pongTimeout`: the connection is dead, the
 * client drops it). When the socket closes, the code decides (`reconnects`, the server's
 * close-code classes): reconnect after a backoff delay, or stop (`disconnected`).
 *
 * Every handler of a socket checks that the socket is still the current one, so events of an
 * abandoned socket (a late close, a late message) change nothing.
 *
 * @module
 */

import { backoffDelay } from "./backoff.js";
import { BinaryKind, BinaryOp, decodeBinary, encodeBinary } from "./binary.js";
import { reconnects } from "./close.js";
import { Emitter } from "./emitter.js";
import { ShardhubError } from "./errors.js";
import { Room } from "./room.js";
import type {
  ClientEvents,
  ClientOptions,
  ConnectionState,
  DeliveryReport,
  DirectMessage,
  RoomMessage,
  SendResult,
  ServerFrame,
  Welcome,
  WebSocketConstructor,
  WebSocketLike,
} from "./types.js";

/** The defaults of {@link ClientOptions}. */
export const DEFAULTS = Object.freeze({
  minReconnectDelay: 500,
  maxReconnectDelay: 20_000,
  timeout: 5_000,
  connectTimeout: 10_000,
  pingInterval: 25_000,
  pongTimeout: 10_000,
  maxQueue: 256,
  tokenTransport: "protocol" as "protocol" | "query",
  receipts: "auto" as "auto" | "manual",
});

/** Message ids of direct messages remembered for deduplication (at-least-once delivery). */
const SEEN_MIDS = 1024;

/** What a `send` ack says. */
function sendResult(ack: ServerFrame): SendResult {
  return {
    sessions: typeof ack.sessions === "number" ? ack.sessions : 0,
    mid: typeof ack.mid === "string" ? ack.mid : undefined,
    stored: ack.stored === true,
  };
}

/** An acknowledged send whose `ack` came: waiting for `delivered` / `not_delivered`. */
interface Outcome {
  resolve: (report: DeliveryReport) => void;
  reject: (error: ShardhubError) => void;
  timer: ReturnType<typeof setTimeout>;
  to: string;
}

/** A request sent or waiting for a connection. */
interface Outgoing {
  /** The request id (also used for binary frames, which do not carry it). */
  id: number;
  payload: string | Uint8Array;
  /** Whether a reply with `id` settles it; otherwise handing it to the socket does. */
  expectsReply: boolean;
  onReply(frame: ServerFrame | undefined): void;
  onError(error: ShardhubError): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

type Resolved = Required<Omit<ClientOptions, "token" | "getToken" | "user" | "WebSocket">> &
  Pick<ClientOptions, "token" | "getToken" | "user">;

/**
 * A shardhub client.
 *
 * ```ts
 * const client = new Client("ws://127.0.0.1:8080/ws", { user: "alice" });
 * const lobby = client.room("lobby");
 * lobby.on("message", (m) => console.log(m.user, m.data));
 * client.connect();
 * await lobby.join();
 * await lobby.publish({ text: "hi all" });
 * ```
 */
export class Client extends Emitter<ClientEvents> {
  /** The server's WebSocket URL as given. */
  readonly url: string;
  #url: URL;
  #WebSocket: WebSocketConstructor;
  #opts: Resolved;
  #state: ConnectionState = "disconnected";
  #ws: WebSocketLike | null = null;
  #welcome: Welcome | undefined;
  /** Bumped by every attempt and by a stop, so that a late `getToken` result is dropped. */
  #generation = 0;
  #attempts = 0;
  #nextId = 1;
  /** Sent, waiting for their replies. */
  #pending = new Map<number, Outgoing>();
  /** Waiting for a connection, in order. */
  #queue: Outgoing[] = [];
  #rooms = new Map<string, Room>();
  /** Acknowledged sends past their `ack`, by request id. */
  #outcomes = new Map<number, Outcome>();
  /** The last {@link SEEN_MIDS} message ids of direct messages, oldest first. */
  #seenMids = new Set<string>();
  #lastHeard = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #connectTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setTimeout> | undefined;
  #onlineTarget: { removeEventListener(type: string, fn: () => void): void } | undefined;

  /**
   * A client of the server at `url` (`ws://` or `wss://`; `http(s)://` and, in a browser, a
   * path like `/ws` relative to the page work too). Nothing happens until {@link connect}.
   * Throws a `TypeError` for an unusable URL or when there is no WebSocket implementation.
   */
  constructor(url: string, options: ClientOptions = {}) {
    super();
    this.url = url;
    const base = (globalThis as { location?: { href?: string } }).location?.href;
    this.#url = new URL(url, base);
    if (this.#url.protocol === "http:") this.#url.protocol = "ws:";
    else if (this.#url.protocol === "https:") this.#url.protocol = "wss:";
    if (this.#url.protocol !== "ws:" && this.#url.protocol !== "wss:") {
      throw new TypeError(`not a WebSocket URL: ${url}`);
    }
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (impl === undefined) {
      throw new TypeError(
        "no WebSocket implementation: pass one as the WebSocket option (on Node 20: `import { WebSocket } from \"ws\"`)",
      );
    }
    this.#WebSocket = impl;
    const pick = <K extends keyof typeof DEFAULTS>(key: K): (typeof DEFAULTS)[K] =>
      (options[key] as (typeof DEFAULTS)[K] | undefined) ?? DEFAULTS[key];
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
      receipts: pick("receipts"),
    };
    if (this.#opts.maxReconnectDelay < this.#opts.minReconnectDelay) {
      throw new RangeError("maxReconnectDelay is smaller than minReconnectDelay");
    }
  }

  /** The connection state. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** The current connection's `welcome` (session id, user id, shard); `undefined` while not connected. */
  get welcome(): Welcome | undefined {
    return this.#state === "connected" ? this.#welcome : undefined;
  }

  /** The default request timeout in milliseconds. */
  get timeout(): number {
    return this.#opts.timeout;
  }

  /**
   * Starts connecting (state `connecting`), and keeps the connection up until
   * {@link disconnect} or a close of the do-not-reconnect class. Does nothing unless
   * `disconnected`. Wanted rooms are joined on every connection.
   */
  connect(): void {
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
  disconnect(): void {
    if (this.#state === "disconnected") return;
    this.#stop(1000, "client disconnect");
  }

  /** The room called `name` (the same object on every call); join it with {@link Room.join}. */
  room(name: string): Room {
    let room = this.#rooms.get(name);
    if (room === undefined) {
      room = new Room(this, name);
      this.#rooms.set(name, room);
    }
    return room;
  }

  /** Joins the room `name` (see {@link Room.join}) and resolves with it. */
  join(name: string, options: { timeout?: number } = {}): Promise<Room> {
    const room = this.room(name);
    return room.join(options).then(() => room);
  }

  /** The rooms the application wants joined (see {@link Room.join}). */
  rooms(): Room[] {
    return [...this.#rooms.values()].filter((room) => room._wanted);
  }

  /**
   * Sends `data` (any JSON value) to every session of `user`; resolves with how many sessions
   * it reached and the message id. With `store`, a user who is offline everywhere gets it on
   * their next connection (`stored: true`, `sessions: 0`) instead of a `not_online`. Rejects
   * with `not_online`, `forbidden`, `store_full`, `timeout`, `disconnected`.
   */
  send(
    user: string,
    data: unknown,
    options: { timeout?: number; store?: boolean } = {},
  ): Promise<SendResult> {
    const frame: Record<string, unknown> = { type: "send", to: user, data };
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
  sendAcked(
    user: string,
    data: unknown,
    options: { timeout?: number; ackTimeout?: number } = {},
  ): Promise<DeliveryReport> {
    const frame: Record<string, unknown> = { type: "send", to: user, data, ack: true };
    if (options.ackTimeout !== undefined) frame.timeout_ms = options.ackTimeout;
    // The server's report comes at most its timeout after the ack (5 min at most); give up
    // a request timeout after that, so a lost report cannot hang the promise.
    const wait = (options.ackTimeout ?? 300_000) + (options.timeout ?? this.#opts.timeout);
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
        reject,
      );
    });
  }

  /**
   * Confirms a direct message sent with `"ack": true` (`{"type":"received","mid":…}`). With
   * the default `receipts: "auto"` the client does this itself once the `direct` listeners
   * have returned; with `"manual"` the application calls it when it has handled the message.
   */
  receipt(message: DirectMessage): void {
    if (message.mid === undefined || !message.ack) return;
    const ws = this.#ws;
    if (this.#state === "connected" && ws !== null) {
      try {
        ws.send(JSON.stringify({ type: "received", mid: message.mid }));
      } catch {
        // Closing: the sender hears nothing from this session, as if it had not confirmed.
      }
    }
  }

  /** Sends `data` to every session on the server (but this one with `excludeSelf`); resolves on the ack. */
  broadcast(data: unknown, options: { excludeSelf?: boolean; timeout?: number } = {}): Promise<void> {
    const frame: Record<string, unknown> = { type: "broadcast", data };
    if (options.excludeSelf) frame.exclude_self = true;
    return this.#requestPromise(frame, options.timeout).then(() => undefined);
  }

  /** Sends bytes to every session of `user` as a binary frame (op 2); see {@link Room.publishBinary} for what resolves and how failures arrive. */
  sendBinary(user: string, data: Uint8Array, options: { timeout?: number } = {}): Promise<void> {
    return this._sendBinary(encodeBinary(BinaryOp.Send, user, data), options.timeout);
  }

  /** Broadcasts bytes as a binary frame (ops 3 and 4); see {@link Room.publishBinary}. */
  broadcastBinary(data: Uint8Array, options: { excludeSelf?: boolean; timeout?: number } = {}): Promise<void> {
    const op = options.excludeSelf ? BinaryOp.BroadcastExceptSelf : BinaryOp.Broadcast;
    return this._sendBinary(encodeBinary(op, "", data), options.timeout);
  }

  /** A protocol ping; resolves with the round-trip time in milliseconds. */
  ping(options: { timeout?: number } = {}): Promise<number> {
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
  request(frame: { type: string; [field: string]: unknown }, options: { timeout?: number } = {}): Promise<ServerFrame> {
    return this.#requestPromise(frame, options.timeout);
  }

  // ----- requests -----

  /** @internal */
  _requestPromise(frame: Record<string, unknown>, timeout: number | undefined): Promise<ServerFrame> {
    return this.#requestPromise(frame, timeout);
  }

  #requestPromise(frame: Record<string, unknown>, timeout: number | undefined): Promise<ServerFrame> {
    return new Promise((resolve, reject) => {
      this._request(frame, timeout ?? this.#opts.timeout, (f) => resolve(f), reject);
    });
  }

  /**
   * Sends a request (adding its `id`) or queues it until connected; `onReply` or `onError`
   * is called exactly once, synchronously while the reply frame is handled (so that state
   * changes precede the frames behind the reply). `timeout` 0: no timeout. @internal
   */
  _request(
    frame: Record<string, unknown>,
    timeout: number,
    onReply: (frame: ServerFrame, id: number) => void,
    onError: (error: ShardhubError) => void,
  ): void {
    const id = this.#nextId++;
    const text = JSON.stringify({ ...frame, id });
    this.#submit({
      id,
      payload: text,
      expectsReply: true,
      onReply: (f) => onReply(f as ServerFrame, id),
      onError,
      timer: undefined,
    }, timeout, String(frame.type));
  }

  /** Sends a binary frame, or queues it until connected; resolves when handed to the socket. @internal */
  _sendBinary(bytes: Uint8Array, timeout: number | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#submit(
        { id: this.#nextId++, payload: bytes, expectsReply: false, onReply: () => resolve(), onError: reject, timer: undefined },
        timeout ?? this.#opts.timeout,
        "binary",
      );
    });
  }

  #submit(out: Outgoing, timeout: number, what: string): void {
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
        out.timer = undefined;
        if (this.#pending.get(out.id) === out) this.#pending.delete(out.id);
        const at = this.#queue.indexOf(out);
        if (at >= 0) this.#queue.splice(at, 1);
        out.onError(new ShardhubError("timeout", `${what}: no reply within ${timeout} ms`));
      }, timeout);
    }
    if (this.#state === "connected" && this.#ws !== null) this.#transmit(this.#ws, out);
    else this.#queue.push(out);
  }

  #transmit(ws: WebSocketLike, out: Outgoing): void {
    try {
      ws.send(out.payload);
    } catch (err) {
      // The socket is closing; its close event follows and starts the reconnect.
      this.#settle(out);
      out.onError(new ShardhubError("disconnected", `send failed: ${String(err)}`));
      return;
    }
    if (out.expectsReply) {
      this.#pending.set(out.id, out);
    } else {
      this.#settle(out);
      out.onReply(undefined);
    }
  }

  #settle(out: Outgoing): void {
    if (out.timer !== undefined) clearTimeout(out.timer);
    out.timer = undefined;
  }

  #failAll(queued: boolean, message: string): void {
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
    // The server forgets a session's waiting sends when it goes: no report will come.
    const outcomes = [...this.#outcomes.values()];
    this.#outcomes.clear();
    for (const o of outcomes) {
      clearTimeout(o.timer);
      o.reject(new ShardhubError("disconnected", `send to ${o.to}: ${message} before the delivery report`));
    }
  }

  // ----- connection -----

  #setState(state: ConnectionState): void {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.emit("state", state, previous);
  }

  async #open(): Promise<void> {
    const generation = ++this.#generation;
    this.#reconnectTimer = undefined;
    let token = this.#opts.token;
    if (this.#opts.getToken !== undefined) {
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
    if (this.#opts.user !== undefined) url.searchParams.set("user", this.#opts.user);
    let protocols: string[] | undefined;
    if (token) {
      if (this.#opts.tokenTransport === "query") url.searchParams.set("token", token);
      else protocols = ["bearer", token];
    }
    let ws: WebSocketLike;
    try {
      ws = protocols === undefined ? new this.#WebSocket(url.href) : new this.#WebSocket(url.href, protocols);
    } catch (err) {
      // A URL or token the WebSocket refuses (a SyntaxError): trying again would not help.
      const message = err instanceof Error ? err.message : String(err);
      this.emit("error", new ShardhubError("bad_request", `cannot open a WebSocket: ${message}`));
      this.#stop(1006, message);
      return;
    }
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event: { data: unknown }) => {
      if (this.#ws === ws) this.#onData(event.data);
    };
    ws.onclose = (event: { code?: number; reason?: string }) => {
      if (this.#ws === ws) this.#onClose(event.code ?? 1006, event.reason ?? "");
    };
    // A failed connection reports an error and then a close; the close is what counts. (With
    // `ws`, an error without a listener would be thrown.)
    ws.onerror = () => {};
    this.#connectTimer = setTimeout(() => {
      this.#connectTimer = undefined;
      this.#abandon(ws, `no welcome within ${this.#opts.connectTimeout} ms`);
    }, this.#opts.connectTimeout);
  }

  /** Gives up on a socket that went silent: drops it without waiting for its close. */
  #abandon(ws: WebSocketLike, reason: string): void {
    if (this.#ws !== ws) return;
    this.#detach(ws);
    this.#onClose(1006, reason);
  }

  #detach(ws: WebSocketLike, code?: number): void {
    ws.onmessage = null;
    ws.onclose = null;
    ws.onopen = null;
    ws.onerror = () => {};
    try {
      const terminate = (ws as { terminate?: () => void }).terminate;
      // `ws` (Node) waits up to 30 s for the peer to answer a close; a dead peer never does.
      if (code === undefined && typeof terminate === "function") terminate.call(ws);
      else ws.close(code ?? 1000);
    } catch {
      // Already closed.
    }
  }

  #onClose(code: number, reason: string): void {
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
    // A state listener may have called disconnect().
    if (this.#state === "disconnected") return;
    this.#scheduleReconnect();
    this.emit("disconnected", { code, reason, reconnect: true });
  }

  /** Stops for good: closes the socket, fails what waits, state `disconnected`. */
  #stop(code: number, reason: string): void {
    this.#generation++;
    if (this.#reconnectTimer !== undefined) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    this.#clearConnectionTimers();
    const ws = this.#ws;
    this.#ws = null;
    if (ws !== null) this.#detach(ws, 1000);
    this.#unwatchOnline();
    this.#failAll(true, `disconnected (${code}${reason ? ` ${reason}` : ""})`);
    for (const room of this.#rooms.values()) room._onDisconnected(true);
    this.#setState("disconnected");
    this.emit("disconnected", { code, reason, reconnect: false });
  }

  #clearConnectionTimers(): void {
    if (this.#connectTimer !== undefined) clearTimeout(this.#connectTimer);
    if (this.#pingTimer !== undefined) clearTimeout(this.#pingTimer);
    this.#connectTimer = undefined;
    this.#pingTimer = undefined;
  }

  #scheduleReconnect(): void {
    const delay = backoffDelay(this.#attempts++, this.#opts.minReconnectDelay, this.#opts.maxReconnectDelay);
    this.#reconnectTimer = setTimeout(() => void this.#open(), delay);
  }

  /** In a browser, the `online` event cuts the backoff short. */
  #watchOnline(): void {
    const target = (globalThis as {
      window?: { addEventListener?(t: string, fn: () => void): void; removeEventListener(t: string, fn: () => void): void };
    }).window;
    if (target === undefined || typeof target.addEventListener !== "function") return;
    target.addEventListener("online", this.#onOnline);
    this.#onlineTarget = target;
  }

  #unwatchOnline(): void {
    this.#onlineTarget?.removeEventListener("online", this.#onOnline);
    this.#onlineTarget = undefined;
  }

  #onOnline = (): void => {
    if (this.#reconnectTimer === undefined) return;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    void this.#open();
  };

  // ----- heartbeat -----

  #schedulePing(after: number): void {
    if (this.#opts.pingInterval <= 0) return;
    if (this.#pingTimer !== undefined) clearTimeout(this.#pingTimer);
    this.#pingTimer = setTimeout(this.#checkIdle, after);
  }

  #checkIdle = (): void => {
    this.#pingTimer = undefined;
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
      },
    );
  };

  // ----- what the server sends -----

  #onData(data: unknown): void {
    this.#lastHeard = Date.now();
    if (typeof data === "string") {
      let frame: unknown;
      try {
        frame = JSON.parse(data);
      } catch {
        return;
      }
      if (frame !== null && typeof frame === "object" && typeof (frame as ServerFrame).type === "string") {
        this.#onFrame(frame as ServerFrame);
      }
      return;
    }
    let bytes: Uint8Array | undefined;
    if (data instanceof ArrayBuffer || Object.prototype.toString.call(data) === "[object ArrayBuffer]") {
      bytes = new Uint8Array(data as ArrayBuffer);
    } else if (ArrayBuffer.isView(data)) {
      bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    }
    if (bytes !== undefined) this.#onBinary(bytes);
  }

  #onFrame(frame: ServerFrame): void {
    this.emit("frame", frame);
    // A reply to one of our requests (ack, error, members, pong, or anything else with its id).
    if (typeof frame.id === "number" && (frame.type === "delivered" || frame.type === "not_delivered")) {
      const o = this.#outcomes.get(frame.id);
      if (o !== undefined) {
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
              frame,
            }),
          );
        }
        return;
      }
    }
    if (typeof frame.id === "number") {
      const out = this.#pending.get(frame.id);
      if (out !== undefined) {
        this.#pending.delete(frame.id);
        this.#settle(out);
        if (frame.type === "error") out.onError(ShardhubError.fromFrame(frame));
        else out.onReply(frame);
        return;
      }
    }
    const str = (v: unknown): string => (typeof v === "string" ? v : "");
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
          offset: typeof frame.offset === "number" ? frame.offset : undefined,
          binary: false,
          frame,
        });
        return;
      case "direct":
      case "broadcast": {
        const message: DirectMessage = {
          data: frame.data,
          user: str(frame.from),
          session: str(frame.session),
          binary: false,
          frame,
          mid: typeof frame.mid === "string" ? frame.mid : undefined,
          ack: frame.ack === true,
          stored: frame.stored === true,
        };
        if (frame.type === "broadcast") {
          this.emit("broadcast", message);
          return;
        }
        // At-least-once: a message that comes twice (stored and forwarded, say) is dropped.
        if (message.mid !== undefined) {
          if (this.#seenMids.has(message.mid)) {
            this.receipt(message);
            return;
          }
          this.#seenMids.add(message.mid);
          if (this.#seenMids.size > SEEN_MIDS) {
            const oldest = this.#seenMids.values().next().value;
            if (oldest !== undefined) this.#seenMids.delete(oldest);
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
          session: str(frame.session),
        });
        return;
      case "error":
        // No request waits for it: rate_limited, bad_request without id, op "binary".
        this.emit("error", ShardhubError.fromFrame(frame));
        return;
      default:
        // Replies that came after their request timed out, and frame types this client does
        // not know: the `frame` event has them.
        return;
    }
  }

  #onBinary(bytes: Uint8Array): void {
    const d = decodeBinary(bytes);
    if (d === undefined) return;
    if (d.kind === BinaryKind.Room) {
      this.#onRoomMessage({ room: d.room, data: d.data, user: d.user, session: "", offset: undefined, binary: true, frame: undefined });
    } else if (d.kind === BinaryKind.Direct || d.kind === BinaryKind.Broadcast) {
      const message: DirectMessage = { data: d.data, user: d.user, session: "", binary: true, frame: undefined };
      this.emit(d.kind === BinaryKind.Direct ? "direct" : "broadcast", message);
    }
  }

  #onRoomMessage(message: RoomMessage): void {
    const room = this.#rooms.get(message.room);
    // A room object decides (unwanted rooms and duplicates are dropped); messages of rooms the
    // application never named (joined by the server's hooks, say) reach the client's event.
    if (room !== undefined && !room._deliver(message)) return;
    this.emit("message", message);
  }

  #onWelcome(welcome: Welcome): void {
    const ws = this.#ws;
    if (this.#state === "connected" || ws === null) return;
    if (this.#connectTimer !== undefined) clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    this.#attempts = 0;
    this.#welcome = welcome;
    this.#setState("connected");
    // A state listener may have called disconnect().
    if ((this.#state as ConnectionState) !== "connected") return;
    this.#schedulePing(this.#opts.pingInterval);
    // Joins first: a queued publish to a wanted room must find its sender in the room.
    for (const room of this.#rooms.values()) room._onConnected();
    const queued = this.#queue;
    this.#queue = [];
    for (const out of queued) this.#transmit(ws, out);
    this.emit("connected", welcome);
  }
}
