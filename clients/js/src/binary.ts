/**
 * The binary frames of `docs/protocol.md` ("Binary frames"): a 2-byte header, a target and an
 * untouched payload.
 *
 * @module
 */

/** Ops of binary frames a client sends. */
export const BinaryOp = {
  /** Publish to a room (the sender included). */
  Publish: 1,
  /** Send to every session of a user. */
  Send: 2,
  /** Broadcast to every session (the sender included). */
  Broadcast: 3,
  /** Broadcast to every session but the sender's. */
  BroadcastExceptSelf: 4,
  /** Publish to a room, the sender excluded. */
  PublishExceptSelf: 5,
} as const;

/** Kinds of binary frames a client receives. */
export const BinaryKind = {
  /** A room message. */
  Room: 1,
  /** A direct message. */
  Direct: 2,
  /** A broadcast. */
  Broadcast: 3,
} as const;

/** A binary frame from the server, decoded. */
export interface BinaryDelivery {
  /** 1 room message, 2 direct message, 3 broadcast ({@link BinaryKind}). */
  kind: number;
  /** The room (kind 1), else the empty string. */
  room: string;
  /** The sender's user id. */
  user: string;
  /** The payload, as sent. */
  data: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Encodes a binary request: `op`, the target (room or user; empty for broadcasts) and the
 * payload. Throws a `RangeError` when the target is over 255 bytes of UTF-8.
 */
export function encodeBinary(op: number, target: string, payload: Uint8Array): Uint8Array {
  const t = encoder.encode(target);
  if (t.length > 255) throw new RangeError(`binary target over 255 bytes: ${target.length} characters`);
  const out = new Uint8Array(2 + t.length + payload.length);
  out[0] = op;
  out[1] = t.length;
  out.set(t, 2);
  out.set(payload, 2 + t.length);
  return out;
}

/** Decodes a binary frame from the server; `undefined` when it is too short or not UTF-8. */
export function decodeBinary(bytes: Uint8Array): BinaryDelivery | undefined {
  try {
    if (bytes.length < 2) return undefined;
    const kind = bytes[0]!;
    const roomLen = bytes[1]!;
    let at = 2;
    if (bytes.length < at + roomLen + 1) return undefined;
    const room = decoder.decode(bytes.subarray(at, at + roomLen));
    at += roomLen;
    const userLen = bytes[at]!;
    at += 1;
    if (bytes.length < at + userLen) return undefined;
    const user = decoder.decode(bytes.subarray(at, at + userLen));
    at += userLen;
    return { kind, room, user, data: bytes.slice(at) };
  } catch {
    return undefined;
  }
}
