/**
 * shardhub-client: a browser and Node client for the shardhub WebSocket hub.
 *
 * See README.md for a tour; `docs/protocol.md` in the server's repository for the protocol.
 *
 * @module
 */

export { Client, DEFAULTS } from "./client.js";
export { Room, type RoomState, type PublishOptions } from "./room.js";
export { ShardhubError, type ErrorCode, type ServerErrorCode, type ClientErrorCode } from "./errors.js";
export { CLOSE_CODES, CloseCode, closeCodeInfo, reconnects, type CloseCodeInfo } from "./close.js";
export { backoffDelay } from "./backoff.js";
export { BinaryKind, BinaryOp, decodeBinary, encodeBinary, type BinaryDelivery } from "./binary.js";
export { Emitter, type EventMap } from "./emitter.js";
export type {
  BroadcastMessage,
  ClientEvents,
  ClientOptions,
  ConnectionState,
  DeliveryReport,
  DirectMessage,
  DisconnectInfo,
  JoinInfo,
  Member,
  PresenceEvent,
  RoomEvents,
  RoomMessage,
  SendResult,
  ServerFrame,
  Welcome,
  WebSocketConstructor,
  WebSocketLike,
} from "./types.js";
