// Type declarations for relais.js, the browser client of relais.

/** The protocol version this client speaks. */
export const VERSION: 1;
/** Longest join token a HELLO may carry, in bytes of ASCII. */
export const MAX_TOKEN_LEN: 2048;
/** Longest resume token, in bytes of ASCII. */
export const MAX_RESUME_TOKEN_LEN: 64;

export type RefuseReasonName =
  | "name-taken" | "invalid-name" | "invalid-room"
  | "unsupported-version" | "server-full" | "room-full"
  | "token-required" | "token-invalid" | "token-expired" | "not-allowed"
  | "overloaded" | "too-many-connections" | "too-many-joins" | "resume-invalid"
  | "cluster-unavailable";
export type CloseReasonName =
  | "normal" | "server-shutdown" | "slow-consumer" | "timeout"
  | "rate-limit" | "protocol-error" | "connection-lost" | "read-only"
  /** Not on the wire: a member that left while this client was reconnecting (code 255). */
  | "unknown";

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
  | "refused" | "invalid-name" | "invalid-token" | "timeout" | "connection"
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

/**
 * A client's connection state. `connecting`: the first handshake (only seen
 * by `ConnectOptions.onstatechange`); `connected`; `reconnecting`: the
 * connection was lost and the client is trying again by itself; `closed`:
 * for good (`status` says why).
 */
export type ConnectionState = "connecting" | "connected" | "reconnecting" | "closed";
/** What `onstatechange` and the "statechange" DOM event carry. */
export interface StateChangeEvent {
  type: "statechange";
  state: ConnectionState;
  /** The state before; null for the first "connecting". */
  previous: ConnectionState | null;
  /** With "connected": whether the server gave this client its old seat back. */
  resumed?: boolean;
  /** With "reconnecting": why the connection was lost. */
  reason?: Status;
  /** With "closed": how the client ended (also `client.status`). */
  status?: Status;
}

/** How a client ended. */
export type Status =
  | { kind: "closed"; text: string }
  | { kind: "goodbye"; reason: Reason<CloseReasonName>; text: string }
  | { kind: "timeout"; text: string }
  | { kind: "connection-lost"; text: string }
  | { kind: "protocol"; text: string }
  /** A reconnection was refused for good (or for as long as the reconnect window lasted). */
  | { kind: "refused"; reason: Reason<RefuseReasonName>; text: string };

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
  /**
   * A join token from the game's backend (a JWT, at most `MAX_TOKEN_LEN`
   * ASCII bytes), for servers that require one; a server without a token key
   * ignores it. Refusals: "token-required", "token-invalid", "token-expired",
   * "not-allowed". A token that is not ASCII or too long rejects with a
   * RelaisError of kind "invalid-token" before connecting. A function is
   * called before every connection, reconnections included (a fresh join
   * after a server restart checks the token again).
   */
  token?: string | (() => string | Promise<string>);
  /**
   * How long a client that lost its connection keeps reconnecting, in ms,
   * counted from the loss. Default 60 000; 0 never reconnects (a lost
   * connection ends the client, as a GOODBYE does).
   */
  reconnectWindowMs?: number;
  /**
   * Most payloads `send()` keeps while the socket is backed up or the client
   * is reconnecting; past it the oldest is dropped (`stats.sendConflated`).
   * Default 1: only the newest state waits, as latest-wins game state wants.
   */
  sendQueueSize?: number;
  /** Called on every state change, from "connecting" (before the first handshake) on. */
  onstatechange?: ((event: StateChangeEvent) => void) | null;
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
  /** Payloads dropped for newer ones while the socket was backed up or the client reconnecting. */
  sendConflated: number;
  /** Reconnections that succeeded (resumed or not). */
  reconnects: number;
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
  /** "connected", "reconnecting" or "closed". */
  readonly state: ConnectionState;
  /** Whether the last WELCOME gave this client its old seat back (resume). */
  readonly resumed: boolean;
  /** Undefined until the client has ended (closed, refused, or out of reconnect window), then how. */
  readonly status: Status | undefined;
  readonly stats: Stats;
  /** Resolves with the status once the client has ended. */
  readonly closed: Promise<Status>;
  /** Called for every event as it arrives (events are queued for recv too). */
  onevent: ((event: AnyEvent) => void) | null;
  /** Called on every change of `state` (also a "statechange" DOM event). */
  onstatechange: ((event: StateChangeEvent) => void) | null;
  /**
   * Queues a payload (a string is sent as UTF-8) and returns at once, also
   * while reconnecting (it waits, see `sendQueueSize`). Throws RelaisError
   * once the client has ended.
   */
  send(data: Uint8Array | ArrayBuffer | ArrayBufferView | string): void;
  /** The oldest received message, or undefined; never blocks. Skips presence events. */
  recv(): Message | undefined;
  /** The oldest received event, or undefined; never blocks. */
  recvEvent(): Event | undefined;
  /** Says goodbye and closes (or stops reconnecting). Idempotent. */
  close(): void;
}

/**
 * Connects to `url` (e.g. `ws://127.0.0.1:7778/ws`) and joins a room as
 * `name`. Rejects if this first connection fails; once connected, the client
 * reconnects by itself (see `ConnectOptions.reconnectWindowMs`).
 */
export function connect(url: string, name: string, options?: ConnectOptions): Promise<Client>;
