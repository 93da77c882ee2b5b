// Type declarations for relais.js, the browser client of relais.

/** The protocol version this client speaks. */
export const VERSION: 1;

export type RefuseReasonName =
  | "name-taken" | "invalid-name" | "invalid-room"
  | "unsupported-version" | "server-full" | "room-full"
  | "token-required" | "invalid-token" | "token-expired" | "not-allowed"
  | "overloaded" | "too-many-connections" | "too-many-joins";
export type CloseReasonName =
  | "normal" | "server-shutdown" | "slow-consumer" | "timeout"
  | "rate-limit" | "protocol-error" | "connection-lost" | "read-only";

/** Refusal codes by name. */
export const RefuseReason: Readonly<Record<RefuseReasonName, number>>;
/** Close/leave codes by name. */
export const CloseReason: Readonly<Record<CloseReasonName, number>>;

/** A wire code with its name; unknown codes are named `unknown-N`. */
export interface Reason<N extends string> {
  code: number;
  name: N | `unknown-${number}`;
}

export type ErrorKind =
  | "refused" | "invalid-name" | "timeout" | "connection"
  | "protocol" | "closed" | "too-large";

/** Why connecting failed, or why a client is unusable. */
export class RelaisError extends Error {
  readonly kind: ErrorKind;
}

/** The server refused the handshake. */
export class RefusedError extends RelaisError {
  readonly kind: "refused";
  readonly reason: Reason<RefuseReasonName>;
  /** The server's human-readable explanation. */
  readonly text: string;
}

/** A relayed message. */
export class Message {
  readonly type: "message";
  /** The sender's registered name, stamped by the server. */
  readonly sender: string;
  readonly payload: Uint8Array;
  /** The payload decoded as UTF-8. */
  readonly text: string;
}

export interface JoinedEvent { type: "joined"; name: string }
export interface LeftEvent { type: "left"; name: string; reason: Reason<CloseReasonName> }
/** What `recvEvent()` returns. */
export type Event = Message | JoinedEvent | LeftEvent;
export interface CloseEvent { type: "close"; status: Status }
/** What `onevent` and the DOM events carry (`event.detail`). */
export type AnyEvent = Event | CloseEvent;

/** How a client ended. */
export type Status =
  | { kind: "closed"; text: string }
  | { kind: "goodbye"; reason: Reason<CloseReasonName>; text: string }
  | { kind: "timeout"; text: string }
  | { kind: "connection-lost"; text: string }
  | { kind: "protocol"; text: string };

export interface ConnectOptions {
  /** The room to join; the server's default room (`lobby`) if empty. */
  room?: string;
  /** Receive this client's own messages back (to measure the round trip). Default false. */
  echo?: boolean;
  /**
   * What the receive queue keeps; `"latest"` is the choice for game state.
   * - `"queue"` (default): every event in order; past `queueSize` the oldest
   *   event is dropped (`stats.recvDropped`). For chat-like uses.
   * - `"latest"`: at most one waiting message per sender, its newest: a newer
   *   message replaces the waiting one in place (`stats.recvConflated`).
   *   Joined/left events are never replaced and keep their order (one about X
   *   ends X's slot: X's later messages queue after it). Past `queueSize` the
   *   oldest message is dropped, or the oldest event if only joined/left
   *   events wait (`stats.recvDropped`).
   * `onevent` and the DOM events see every message either way.
   */
  receive?: ReceiveMode;
  /** Most events waiting for `recv`/`recvEvent` (see `receive` for what is dropped past it). Default 1024. */
  queueSize?: number;
  /** How long the handshake may take. Default 10 000 ms. */
  timeoutMs?: number;
}

/** What the receive queue keeps (see `ConnectOptions.receive`). */
export type ReceiveMode = "queue" | "latest";

export interface Stats {
  sent: number;
  /** Messages received, including any later replaced or dropped in the receive queue. */
  received: number;
  /** Events dropped because the receive queue was full. */
  recvDropped: number;
  /** Waiting messages replaced by a newer one from the same sender ("latest" mode only). */
  recvConflated: number;
  /** Payloads replaced by a newer one while the socket was backed up. */
  sendConflated: number;
}

/** A connected client. */
export class Client extends EventTarget {
  readonly name: string;
  /** The room actually joined. */
  readonly room: string;
  readonly echo: boolean;
  /** The largest payload the server relays. */
  readonly maxPayload: number;
  /** What the receive queue keeps. */
  readonly receive: ReceiveMode;
  /** Everyone in the room, this client included, kept current. */
  readonly members: string[];
  /** Undefined while connected, then how it ended. */
  readonly status: Status | undefined;
  readonly stats: Stats;
  /** Resolves with the status once the client has ended. */
  readonly closed: Promise<Status>;
  /** Called for every event as it arrives (events are queued for recv too). */
  onevent: ((event: AnyEvent) => void) | null;
  /** Queues a payload (a string is sent as UTF-8) and returns at once. Throws RelaisError. */
  send(data: Uint8Array | ArrayBuffer | ArrayBufferView | string): void;
  /** The oldest received message, or undefined; never blocks. Skips presence events. */
  recv(): Message | undefined;
  /** The oldest received event, or undefined; never blocks. */
  recvEvent(): Event | undefined;
  /** Says goodbye and closes. Idempotent. */
  close(): void;
}

/** Connects to `url` (e.g. `ws://127.0.0.1:7778/ws`) and joins a room as `name`. */
export function connect(url: string, name: string, options?: ConnectOptions): Promise<Client>;
