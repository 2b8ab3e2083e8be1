/**
 * A room as the application sees it: joined once, rejoined after every reconnect (recovering
 * what it missed when the room has history), with its messages and presence as events.
 *
 * A room's state: `unsubscribed` (not wanted), `joining` (wanted; a join is on its way or
 * waits for a connection) and `joined` (the join's ack arrived on the current connection).
 * Wanted rooms are joined again whenever a connection comes up; {@link Room.leave} stops
 * that.
 *
 * Positions: in a room with history every message carries an `offset`. The room keeps the
 * last one it delivered and the stream's `epoch` from the join ack; a rejoin sends them as
 * `recover`, and the server either replays exactly the missed messages (`recovered: true`) or
 * says it cannot (`recovered: false`; the application reloads). A message whose offset is not
 * past the last one delivered is a duplicate and is dropped.
 *
 * @module
 */

import { BinaryOp, encodeBinary } from "./binary.js";
import { Emitter } from "./emitter.js";
import { ShardhubError } from "./errors.js";
import type {
  ConnectionState,
  JoinInfo,
  Member,
  PresenceEvent,
  RoomEvents,
  RoomMessage,
  ServerFrame,
} from "./types.js";

/** Where a room is: see the module docs. */
export type RoomState = "unsubscribed" | "joining" | "joined";

/** What a room needs of its client. @internal */
export interface RoomHost {
  readonly state: ConnectionState;
  readonly timeout: number;
  _request(
    frame: Record<string, unknown>,
    timeout: number,
    onReply: (frame: ServerFrame) => void,
    onError: (error: ShardhubError) => void,
  ): void;
  _requestPromise(frame: Record<string, unknown>, timeout: number | undefined): Promise<ServerFrame>;
  _sendBinary(bytes: Uint8Array, timeout: number | undefined): Promise<void>;
}

interface Waiter {
  resolve(info: JoinInfo): void;
  reject(error: ShardhubError): void;
  timer: ReturnType<typeof setTimeout>;
}

/** Options of {@link Room.publish}. */
export interface PublishOptions {
  /** Do not deliver the message to this session. Default `false`. */
  excludeSelf?: boolean;
  /** How long to wait for the ack (default: the client's `timeout`). */
  timeout?: number;
}

/** A room. Get one with {@link Client.room} or {@link Client.join}. */
export class Room extends Emitter<RoomEvents> {
  /** The room's name. */
  readonly name: string;
  #host: RoomHost;
  #state: RoomState = "unsubscribed";
  #wanted = false;
  /** Id of the join request in flight: acks of older ones are stale. */
  #joinToken = 0;
  #joinInFlight = false;
  #waiters = new Set<Waiter>();
  #lastOffset: number | undefined;
  #epoch: string | undefined;
  #info: JoinInfo | undefined;

  /** @internal Use {@link Client.room}. */
  constructor(host: RoomHost, name: string) {
    super();
    this.#host = host;
    this.name = name;
  }

  /** Where the room is: `unsubscribed`, `joining` or `joined`. */
  get state(): RoomState {
    return this.#state;
  }

  /** The offset of the last message delivered (rooms with history), the position a rejoin recovers from. */
  get offset(): number | undefined {
    return this.#lastOffset;
  }

  /** The room's stream epoch from the last join ack (rooms with history). */
  get epoch(): string | undefined {
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
  join(options: { timeout?: number } = {}): Promise<JoinInfo> {
    this.#wanted = true;
    if (this.#state === "joined" && this.#info !== undefined) return Promise.resolve(this.#info);
    const timeout = options.timeout ?? this.#host.timeout;
    const promise = new Promise<JoinInfo>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(waiter);
          reject(new ShardhubError("timeout", `join ${this.name}: no ack within ${timeout} ms`, { room: this.name }));
        }, timeout),
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
  leave(options: { timeout?: number } = {}): Promise<void> {
    const was = this.#state;
    this.#wanted = false;
    this.#state = "unsubscribed";
    this.#joinInFlight = false;
    this.#joinToken++;
    this.#lastOffset = undefined;
    this.#epoch = undefined;
    this.#info = undefined;
    this.#rejectWaiters(new ShardhubError("left", `left room ${this.name}`, { room: this.name }));
    if (was === "unsubscribed") return Promise.resolve();
    this.emit("unsubscribed", undefined);
    if (this.#host.state !== "connected") return Promise.resolve();
    return this.#host._requestPromise({ type: "leave", room: this.name }, options.timeout).then(
      () => undefined,
      (err: ShardhubError) => {
        // Not a member (any more), or the connection went: either way, out of the room.
        if (err.code === "not_member" || err.code === "disconnected") return undefined;
        throw err;
      },
    );
  }

  /**
   * Publishes `data` (any JSON value) to the room; resolves on the server's ack. Rejects with
   * `not_member` when the room is not joined, `forbidden`, `timeout`, `disconnected`.
   */
  publish(data: unknown, options: PublishOptions = {}): Promise<void> {
    const frame: Record<string, unknown> = { type: "publish", room: this.name, data };
    if (options.excludeSelf) frame.exclude_self = true;
    return this.#host._requestPromise(frame, options.timeout).then(() => undefined);
  }

  /**
   * Publishes bytes as a binary frame (ops 1 and 5). The protocol acknowledges binary
   * publications only when they fail: this resolves when the frame is handed to the socket,
   * and a failure (`not_member`, `forbidden`) arrives as the client's `error` event with
   * `op: "binary"`. Binary publications are live only: no offset, no history.
   */
  publishBinary(data: Uint8Array, options: { excludeSelf?: boolean; timeout?: number } = {}): Promise<void> {
    const op = options.excludeSelf ? BinaryOp.PublishExceptSelf : BinaryOp.Publish;
    return this.#host._sendBinary(encodeBinary(op, this.name, data), options.timeout);
  }

  /** The room's members on every shard. Rejects with `forbidden` without the presence permission. */
  members(options: { timeout?: number } = {}): Promise<Member[]> {
    return this.#host._requestPromise({ type: "members", room: this.name }, options.timeout).then((f) =>
      Array.isArray(f.members) ? (f.members as Member[]) : [],
    );
  }

  // ----- called by the client -----

  /** Whether the application wants this room joined. @internal */
  get _wanted(): boolean {
    return this.#wanted;
  }

  /** A connection came up: join again if wanted. @internal */
  _onConnected(): void {
    if (!this.#wanted) return;
    this.#state = "joining";
    this.#sendJoin();
  }

  /**
   * The connection went. A wanted room waits to be joined again; when the client stopped for
   * good (`stopped`), join() calls waiting for it fail. @internal
   */
  _onDisconnected(stopped: boolean): void {
    this.#joinInFlight = false;
    this.#joinToken++;
    if (this.#wanted) this.#state = "joining";
    if (stopped) {
      this.#rejectWaiters(new ShardhubError("disconnected", "the client is disconnected", { room: this.name }));
    }
  }

  /** A message for this room: delivers it unless unwanted or a duplicate. @internal */
  _deliver(message: RoomMessage): boolean {
    if (!this.#wanted) return false;
    if (message.offset !== undefined) {
      if (this.#lastOffset !== undefined && message.offset <= this.#lastOffset) return false;
      this.#lastOffset = message.offset;
    }
    this.emit("message", message);
    return true;
  }

  /** A presence event of this room. @internal */
  _presence(kind: "joined" | "left", event: PresenceEvent): void {
    if (this.#wanted) this.emit(kind, event);
  }

  #sendJoin(): void {
    const frame: Record<string, unknown> = { type: "join", room: this.name };
    const recovering = this.#epoch !== undefined && this.#lastOffset !== undefined;
    if (recovering) frame.recover = { offset: this.#lastOffset, epoch: this.#epoch };
    const token = ++this.#joinToken;
    this.#joinInFlight = true;
    // No timeout of its own: the reply comes or the connection goes (the client's ping
    // notices a dead one); the join() callers have their own timeouts.
    this.#host._request(
      frame,
      0,
      (ack) => this.#onJoinAck(token, ack, recovering),
      (err) => this.#onJoinError(token, err),
    );
  }

  // Called synchronously while the client handles the ack frame, so that the state and the
  // position are up to date before the replayed messages behind the ack are handled.
  #onJoinAck(token: number, ack: ServerFrame, recovering: boolean): void {
    if (token !== this.#joinToken || !this.#wanted) return;
    this.#joinInFlight = false;
    const offset = typeof ack.offset === "number" ? ack.offset : undefined;
    const epoch = typeof ack.epoch === "string" ? ack.epoch : undefined;
    const recovered = recovering && ack.recovered === true;
    if (offset !== undefined && epoch !== undefined) {
      // Recovered: the missed messages follow, from the last offset delivered on; keep it so
      // that they pass the duplicate check. Otherwise follow from the room's current position.
      if (!recovered) this.#lastOffset = offset;
      this.#epoch = epoch;
    } else {
      this.#lastOffset = undefined;
      this.#epoch = undefined;
    }
    this.#state = "joined";
    const info: JoinInfo = {
      room: this.name,
      members: typeof ack.members === "number" ? ack.members : 0,
      offset,
      epoch,
      wasRecovering: recovering,
      recovered,
    };
    this.#info = info;
    for (const waiter of this.#takeWaiters()) waiter.resolve(info);
    this.emit("subscribed", info);
  }

  #onJoinError(token: number, err: ShardhubError): void {
    if (token !== this.#joinToken) return;
    this.#joinInFlight = false;
    // A lost connection is not the room's failure: it is joined again on the next one.
    if (err.code === "disconnected") return;
    this.#wanted = false;
    this.#state = "unsubscribed";
    this.#lastOffset = undefined;
    this.#epoch = undefined;
    this.#info = undefined;
    this.#rejectWaiters(err);
    this.emit("error", err);
    this.emit("unsubscribed", err);
  }

  #takeWaiters(): Waiter[] {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) clearTimeout(w.timer);
    return waiters;
  }

  #rejectWaiters(err: ShardhubError): void {
    for (const waiter of this.#takeWaiters()) waiter.reject(err);
  }
}
