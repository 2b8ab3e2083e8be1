/**
 * The one error type of the client: server `error` replies and the client's own failures
 * (timeouts, lost connections, a full queue) alike, told apart by `code`.
 *
 * @module
 */

/** The error codes the server sends (`docs/protocol.md`, "Errors"). */
export type ServerErrorCode =
  | "bad_request"
  | "unknown_type"
  | "not_member"
  | "room_full"
  | "too_many_rooms"
  | "not_online"
  | "forbidden"
  | "rate_limited"
  | "overloaded"
  | "too_many_pending"
  | "store_full"
  | "not_delivered";

/**
 * The codes of failures the client detects itself:
 *
 * * `timeout`: no reply within the request's `timeout`;
 * * `disconnected`: the connection ended before the reply came, or the client is (or went)
 *   `disconnected` for good: the request may or may not have reached the server;
 * * `queue_full`: more than `maxQueue` requests were waiting for a connection;
 * * `token`: the `getToken` callback failed (the client retries with backoff);
 * * `left`: {@link Room.leave} was called while a {@link Room.join} was waiting.
 */
export type ClientErrorCode = "timeout" | "disconnected" | "queue_full" | "token" | "left";

/** Every code a {@link ShardhubError} may carry (a newer server may send others). */
export type ErrorCode = ServerErrorCode | ClientErrorCode | (string & {});

/** A server `error` reply, or a failure detected by the client. */
export class ShardhubError extends Error {
  /** What went wrong: a server code (`not_online`, `forbidden`, …) or a client one (`timeout`, …). */
  readonly code: ErrorCode;
  /** The room the error is about, when the server named one. */
  readonly room: string | undefined;
  /** The user the error is about (`send` errors), when the server named one. */
  readonly to: string | undefined;
  /** The operation, when the server named one (`"binary"` for binary requests). */
  readonly op: string | undefined;
  /** The server's `error` frame as received, with any fields this client does not know. */
  readonly frame: Readonly<Record<string, unknown>> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    extra: { room?: string; to?: string; op?: string; frame?: Record<string, unknown> } = {},
  ) {
    super(message);
    this.name = "ShardhubError";
    this.code = code;
    this.room = extra.room;
    this.to = extra.to;
    this.op = extra.op;
    this.frame = extra.frame;
  }

  /** The error an `error` frame from the server describes. @internal */
  static fromFrame(frame: Record<string, unknown>): ShardhubError {
    const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
    return new ShardhubError(str(frame.code) ?? "unknown", str(frame.message) ?? "server error", {
      room: str(frame.room),
      to: str(frame.to),
      op: str(frame.op),
      frame,
    });
  }
}
