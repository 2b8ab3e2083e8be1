/**
 * Close codes: what the server means by each close, and whether the client comes back.
 *
 * The same table as `docs/protocol.md` ("Close codes") and `src/protocol/close.rs` in the
 * server; `test/close.test.mjs` reads the Rust file and fails when the two disagree.
 *
 * Two classes, after Centrifugo: **3000-3499 reconnect** (with backoff; nothing is wrong with
 * the client) and **3500-3999 do not reconnect** (a bad token, a forbidden origin, abuse, a
 * kick: connecting again as before would be refused again). The rule for any code is
 * {@link reconnects}.
 *
 * @module
 */

/** One row of the server's close-code table. */
export interface CloseCodeInfo {
  /** The code on the wire. */
  readonly code: number;
  /** The name of the close in the server's `shardhub::Close` enum. */
  readonly name: string;
  /** The reason the server sends when the cause has no more specific one. */
  readonly reason: string;
  /** Whether a client should reconnect (with backoff) after it: its class. */
  readonly reconnect: boolean;
}

/** The codes by name, for comparisons: `event.code === CloseCode.ForceDisconnect`. */
export const CloseCode = {
  /** 3000: the server is shutting down or restarting. */
  Shutdown: 3000,
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
  Normal: 1000,
  /** 1006: the connection ended without a close frame (network failure, server killed). */
  Abnormal: 1006,
} as const;

/**
 * Every close the server starts, in the order of the table in `docs/protocol.md`. 1000 and
 * 1006 are not in it: the server never sends 1006 (clients report it when a connection drops),
 * and 1000 is the client's own choice.
 */
export const CLOSE_CODES: readonly CloseCodeInfo[] = Object.freeze([
  { code: 3000, name: "Shutdown", reason: "server shutdown", reconnect: true },
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
  { code: 1009, name: "MessageTooBig", reason: "message too big", reconnect: true },
].map((row) => Object.freeze(row)));

/**
 * Whether a client should reconnect (with backoff) after a close with `code`, any code.
 *
 * The server's rule (`shardhub::protocol::close::reconnects`): 3500-3999 and the
 * application's 4500-4999 say no; every other code says yes, including 1006 (no close frame:
 * the network failed or the server was killed), 1001/1011/1012/1013, and RFC 6455's protocol
 * errors 1002, 1007 and 1009 (browsers never break the protocol, so a client that does has a
 * bug or a broken intermediary, and reconnecting with backoff costs little).
 */
export function reconnects(code: number): boolean {
  return !((code >= 3500 && code <= 3999) || (code >= 4500 && code <= 4999));
}

/** The table's row for `code`, if it is one of the server's closes. */
export function closeCodeInfo(code: number): CloseCodeInfo | undefined {
  return CLOSE_CODES.find((row) => row.code === code);
}
