// relais.js: the browser client of relais, one dependency-free ES module.
//
//   import { connect } from "./relais.js";
//   const client = await connect("ws://127.0.0.1:7778/ws", "alice", { room: "arena-7" });
//   client.send(JSON.stringify({ x: 10, y: 20 }));   // returns at once
//   let m; while ((m = client.recv())) console.log(m.sender, m.text);  // never blocks
//
// For game state, pass `receive: "latest"`: the receive queue then keeps at
// most one waiting message per sender, its newest (see connect()).
//
// A client that loses its connection reconnects by itself (for up to
// `reconnectWindowMs`, 60 s by default) and takes its seat back when the
// server still holds it (resume): see connect() and `client.state`.
//
// It speaks the relais binary protocol (PROTOCOL.md) over WebSocket: one
// binary WebSocket message carries one frame body (type byte + fields, no
// length prefix). Types are in relais.d.ts.

/** The protocol version this client speaks. */
export const VERSION = 1;

const HELLO = 0x01, DATA = 0x02, PING = 0x10, PONG = 0x11, GOODBYE = 0x12;
const WELCOME = 0x81, REFUSED = 0x82, MESSAGE = 0x83, JOINED = 0x84, LEFT = 0x85;
const FLAG_ECHO = 0x01, FLAG_TOKEN = 0x02, FLAG_RESUME = 0x04;
/** WELCOME resume flag: this connection took back the seat its token named. */
const FLAG_RESUMED = 0x01;
/** Longest join token a HELLO may carry, in bytes of ASCII. */
export const MAX_TOKEN_LEN = 2048;
/** Longest resume token, in bytes of ASCII. */
export const MAX_RESUME_TOKEN_LEN = 64;

/** Refusal codes (REFUSED frame) by name. */
export const RefuseReason = Object.freeze({
  "name-taken": 1, "invalid-name": 2, "invalid-room": 3,
  "unsupported-version": 4, "server-full": 5, "room-full": 6,
  "token-required": 7, "token-invalid": 8, "token-expired": 9, "not-allowed": 10,
  "overloaded": 11, "too-many-connections": 12, "too-many-joins": 13,
  "resume-invalid": 14, "cluster-unavailable": 15,
});
/**
 * Close/leave codes (GOODBYE and LEFT frames) by name. "unknown" (255) is
 * never on the wire: it is the reason of the `left` events this client makes
 * up after a reconnection, for members that left while it was away.
 */
export const CloseReason = Object.freeze({
  "normal": 0, "server-shutdown": 1, "slow-consumer": 2, "timeout": 3,
  "rate-limit": 4, "protocol-error": 5, "connection-lost": 6, "read-only": 7,
  "unknown": 255,
});
const nameOf = (table, code) =>
  Object.keys(table).find((k) => table[k] === code) ?? `unknown-${code}`;

/** A reason code with its name, e.g. `{ code: 1, name: "name-taken" }`. */
const refuseReason = (code) => ({ code, name: nameOf(RefuseReason, code) });
const closeReason = (code) => ({ code, name: nameOf(CloseReason, code) });

/**
 * While reconnecting, refusals worth another try: the name is taken (by this
 * client's own ghost, on a server that has not yet seen the old connection
 * die), the server's or this address's momentary limits, and a cluster node
 * cut off from NATS (cluster unavailable).
 */
const RETRY_REFUSALS = new Set([1, 5, 6, 11, 12, 13, 15]);
/** GOODBYEs after which a client reconnects: shutdown (a restart), slow consumer, timeout, connection lost. */
const RETRY_GOODBYES = new Set([1, 2, 3, 6]);
/** Reconnection backoff: the first delay, and the cap of the doubling. */
const FIRST_DELAY_MS = 100, MAX_DELAY_MS = 5000;

/**
 * Why connecting failed, or why a client is unusable. `kind` is one of
 * "refused", "invalid-name", "invalid-token", "timeout", "connection",
 * "protocol", "closed", "too-large".
 */
export class RelaisError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = "RelaisError";
    this.kind = kind;
  }
}

/** The server refused the handshake; `reason` says why (e.g. name taken). */
export class RefusedError extends RelaisError {
  constructor(code, text) {
    const reason = refuseReason(code);
    super("refused", `refused: ${reason.name}${text ? ` (${text})` : ""}`);
    this.name = "RefusedError";
    this.reason = reason;
    this.text = text;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function shortString(s) {
  const b = encoder.encode(s);
  if (b.length > 255) throw new RelaisError("invalid-name", "string longer than 255 bytes");
  return [b.length, ...b];
}

/**
 * A rough pre-check of names: 1–64 bytes of UTF-8 as given, no control
 * characters. The server applies the whole rule (NFC, invisible and bidi
 * characters, look-alikes; PROTOCOL.md section 7) and refuses the rest.
 */
function checkName(what, s) {
  const len = typeof s === "string" ? encoder.encode(s).length : 0;
  if (len < 1 || len > 64 || /[\u0000-\u001f\u007f-\u009f]/.test(s)) {
    throw new RelaisError("invalid-name", `invalid ${what} ${JSON.stringify(s)}: 1-64 bytes, no control characters`);
  }
}

/** A join token as HELLO carries it: u16 length, then its ASCII bytes. */
function tokenField(token) {
  if (typeof token !== "string" || !/^[\x00-\x7f]*$/.test(token)) {
    throw new RelaisError("invalid-token", "the join token must be an ASCII string (a JWT)");
  }
  if (token.length > MAX_TOKEN_LEN) {
    throw new RelaisError("invalid-token", `join token of ${token.length} bytes exceeds the maximum of ${MAX_TOKEN_LEN}`);
  }
  return [token.length >> 8, token.length & 0xff, ...encoder.encode(token)];
}

/** A HELLO body; always with FLAG_RESUME and the resume token ("" on a first join). */
function helloFrame({ name, room, echo, token, resumeToken }) {
  const flags = (echo ? FLAG_ECHO : 0) | (token == null ? 0 : FLAG_TOKEN) | FLAG_RESUME;
  return new Uint8Array([HELLO, VERSION >> 8, VERSION & 0xff, flags,
    ...shortString(name), ...shortString(room), ...(token == null ? [] : tokenField(token)),
    resumeToken.length, ...encoder.encode(resumeToken)]);
}

/** A cursor over one frame body. */
class Fields {
  constructor(bytes) { this.b = bytes; this.i = 1; }
  u8() { if (this.i + 1 > this.b.length) throw this.short(); return this.b[this.i++]; }
  u16() { return (this.u8() << 8) | this.u8(); }
  u32() { return ((this.u16() << 16) >>> 0) + this.u16(); }
  str() {
    const n = this.u8();
    if (this.i + n > this.b.length) throw this.short();
    const s = decoder.decode(this.b.subarray(this.i, this.i + n));
    this.i += n;
    return s;
  }
  more() { return this.i < this.b.length; }
  rest() { const r = this.b.subarray(this.i); this.i = this.b.length; return r; }
  restStr() { return decoder.decode(this.rest()); }
  short() { return new RelaisError("protocol", `truncated frame 0x${this.b[0].toString(16)}`); }
}

/**
 * A WELCOME body. The resume fields (flags, token) follow the member list
 * when the HELLO set FLAG_RESUME and the server knows about resuming; a
 * server that does not sends none (`resume` is then null).
 */
function parseWelcome(b) {
  const f = new Fields(b);
  const version = f.u16(), maxPayload = f.u32(), room = f.str();
  const members = Array.from({ length: f.u16() }, () => f.str());
  let resume = null;
  if (f.more()) {
    const flags = f.u8();
    const token = f.str();
    if (token.length > MAX_RESUME_TOKEN_LEN || !/^[\x21-\x7e]*$/.test(token)) {
      throw new RelaisError("protocol", "WELCOME carries a malformed resume token");
    }
    resume = { resumed: (flags & FLAG_RESUMED) !== 0, token };
  }
  return { version, maxPayload, room, members, resume };
}

/**
 * One handshake: opens `url`, sends `hello`, resolves with the open socket
 * and the parsed WELCOME, or rejects with a RefusedError or a RelaisError
 * (a GOODBYE during the handshake rejects with kind "protocol" and
 * `goodbye`, its reason). `onSocket` gets the socket at once (to close it).
 */
function handshake(url, hello, timeoutMs, onSocket) {
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      reject(new RelaisError("connection", `cannot connect to ${url}: ${err.message ?? err}`));
      return;
    }
    ws.binaryType = "arraybuffer";
    onSocket?.(ws);
    let done = false;
    const fail = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try { ws.close(); } catch { /* already closed */ }
      reject(err);
    };
    const timer = setTimeout(() => fail(new RelaisError("timeout", "no answer to the handshake")), timeoutMs);
    ws.onerror = () => fail(new RelaisError("connection", `cannot connect to ${url}`));
    ws.onclose = (e) => fail(new RelaisError("connection", `connection closed during handshake (code ${e.code})`));
    ws.onopen = () => ws.send(hello);
    ws.onmessage = (e) => {
      if (done) return;
      try {
        const b = new Uint8Array(e.data);
        const f = new Fields(b);
        if (b[0] === WELCOME) {
          const welcome = parseWelcome(b);
          done = true;
          clearTimeout(timer);
          ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
          resolve({ ws, welcome });
        } else if (b[0] === REFUSED) {
          fail(new RefusedError(f.u8(), f.restStr()));
        } else if (b[0] === GOODBYE) {
          const reason = closeReason(f.u8());
          const err = new RelaisError("protocol", `server closed the handshake: ${reason.name} ${f.restStr()}`);
          err.goodbye = reason;
          fail(err);
        } else {
          fail(new RelaisError("protocol", `expected WELCOME, got frame 0x${b[0].toString(16)}`));
        }
      } catch (err) {
        fail(err instanceof RelaisError ? err : new RelaisError("protocol", String(err)));
      }
    };
  });
}

/** The join token to send now: the option itself, or what its function returns. */
async function currentToken(token) {
  const t = typeof token === "function" ? await token() : token;
  if (t != null) tokenField(t); // throws if it cannot be sent
  return t;
}

/** A relayed message: `sender` (its registered name) and `payload` (bytes). */
export class Message {
  constructor(sender, payload) {
    this.type = "message";
    this.sender = sender;
    this.payload = payload;
  }
  /** The payload decoded as UTF-8 (replacement characters if it is not). */
  get text() { return new TextDecoder().decode(this.payload); }
}

/**
 * Connects to a relais server's WebSocket endpoint and joins a room.
 * Resolves to a {@link Client} once the server welcomed it; rejects with a
 * {@link RefusedError} (name taken, room full, ...) or a {@link RelaisError}.
 * This first connection is not retried: the caller decides.
 *
 * `options.receive` says what the receive queue keeps (at most `queueSize`
 * events either way; `members` is always current):
 * - `"queue"` (the default): every event in order; when full, the oldest
 *   event of any kind is dropped (`stats.recvDropped`). For chat-like uses.
 * - `"latest"`, **the choice for game state**: at most one waiting message
 *   per sender, its newest. A newer message replaces the sender's waiting one
 *   in place (same queue position; `stats.recvConflated`). Joined/left events
 *   are never replaced and keep their order: one about X ends X's slot, so
 *   X's later messages queue after it. When full, the oldest *message* is
 *   dropped, or the oldest event if only joined/left events wait
 *   (`stats.recvDropped`).
 * `onevent` and the DOM events still see every message as it arrives.
 *
 * `options.token` is a join token from the game's backend, for servers that
 * require one (PROTOCOL.md, "Join tokens"); a server without a token key
 * ignores it. Without a valid one the server refuses with "token-required",
 * "token-invalid", "token-expired" or "not-allowed" (`RefusedError.reason`).
 * It may be a function returning the token (or a promise of it), called
 * before every connection, reconnections included.
 *
 * Once connected, a lost connection (or the server's GOODBYE "server-shutdown",
 * "slow-consumer" or "timeout") is not the end: the client goes to state
 * "reconnecting" and reconnects by itself, with jittered exponential backoff
 * (~100 ms, doubling up to 5 s), for up to `options.reconnectWindowMs`
 * (default 60 000; 0 never reconnects). It presents its resume token: a
 * server that still holds its seat gives it back (the others see nothing);
 * otherwise it joins afresh under the same name. Either way the member list
 * becomes the server's, and what changed while away comes as `joined` and
 * `left` (reason "unknown", 255) events. `send()` keeps working meanwhile:
 * the newest `sendQueueSize` payloads wait and go out once back.
 */
export async function connect(url, name, options = {}) {
  const {
    room = "", echo = false, queueSize = 1024, timeoutMs = 10000, receive = "queue", token,
    reconnectWindowMs = 60000, sendQueueSize = 1, onstatechange = null,
  } = options;
  if (receive !== "queue" && receive !== "latest") {
    throw new TypeError(`receive must be "queue" or "latest", not ${JSON.stringify(receive)}`);
  }
  if (!(reconnectWindowMs >= 0)) throw new TypeError("reconnectWindowMs must be a number >= 0");
  checkName("name", name);
  if (room !== "") checkName("room", room);
  if (onstatechange) {
    try { onstatechange({ type: "statechange", state: "connecting", previous: null }); } catch (err) { setTimeout(() => { throw err; }); }
  }
  const hello = helloFrame({ name, room, echo, token: await currentToken(token), resumeToken: "" });
  const { ws, welcome } = await handshake(url, hello, timeoutMs);
  const client = new Client(ws, {
    name, room: welcome.room, echo, maxPayload: welcome.maxPayload,
    members: welcome.members, queueSize, receive, resume: welcome.resume, onstatechange, sendQueueSize,
    link: { url, token, timeoutMs, reconnectWindowMs },
  });
  return client;
}

/**
 * A connected client. Events also arrive as DOM events on the client
 * (`addEventListener("message" | "joined" | "left" | "close" | "statechange", ...)`)
 * and through `onevent` (all but "statechange", which goes to `onstatechange`).
 */
export class Client extends EventTarget {
  constructor(ws, w) {
    super();
    this.name = w.name;
    this.echo = w.echo;
    /** What the receive queue keeps: "queue" or "latest" (see connect). */
    this.receive = w.receive;
    /** Callback for every event (message, joined, left, close); optional. */
    this.onevent = null;
    /** Callback for every change of `state`; optional. */
    this.onstatechange = w.onstatechange ?? null;
    /** "connected", "reconnecting" or "closed" ("connecting" is only seen by connect's onstatechange). */
    this.state = "connecting";
    /** Undefined until the client has ended, then why it ended (see relais.d.ts). */
    this.status = undefined;
    this.stats = { sent: 0, received: 0, recvDropped: 0, recvConflated: 0, sendConflated: 0, reconnects: 0 };
    this._link = w.link ?? null;
    this._self = w.name.normalize("NFC");
    // The receive queue holds boxes `{ event }`, so that in "latest" mode a
    // newer message replaces a waiting one in place: `_slots` maps each
    // sender to the box of its waiting message, until that box is taken or
    // dropped, or a joined/left event about the sender is queued.
    this._queue = [];
    this._slots = new Map();
    this._latest = w.receive === "latest";
    this._queueSize = Math.max(1, w.queueSize);
    // Payloads waiting for the socket (backed up, or reconnecting): the newest `_sendQueueSize`.
    this._pending = [];
    this._sendQueueSize = Math.max(1, w.sendQueueSize ?? 1);
    this.closed = new Promise((r) => { this._resolveClosed = r; });
    this._adopt(ws, w); // sets room, maxPayload, resumed and the members; state "connected"
  }

  /** Everyone in the room, this client included, kept current. */
  get members() { return this._members.slice(); }

  /**
   * Sends a payload (bytes, or a string sent as UTF-8) to the room. Returns
   * at once. If the socket's buffer is backed up (more than 64 KiB unsent)
   * or the client is reconnecting, the payload waits; at most
   * `sendQueueSize` (default 1) wait, older ones are dropped
   * (`stats.sendConflated`), like the server's latest-wins rule.
   * Throws a RelaisError ("closed" or "too-large").
   */
  send(data) {
    if (this.status) throw new RelaisError("closed", `client is closed: ${this.status.kind}`);
    const payload = typeof data === "string" ? encoder.encode(data)
      : data instanceof ArrayBuffer ? new Uint8Array(data)
      : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (payload.length > this.maxPayload) {
      throw new RelaisError("too-large", `payload of ${payload.length} bytes exceeds ${this.maxPayload}`);
    }
    const frame = new Uint8Array(1 + payload.length);
    frame[0] = DATA;
    frame.set(payload, 1);
    if (this.state !== "connected" || this._pending.length || this._ws.bufferedAmount > 64 * 1024) {
      this._pending.push(frame);
      if (this._pending.length > this._sendQueueSize) { this._pending.shift(); this.stats.sendConflated++; }
      this._drainPending();
      return;
    }
    this._raw(frame);
    this.stats.sent++;
  }

  /** The oldest received message, or undefined. Never blocks. Presence events queued before it are skipped (use recvEvent to see them). */
  recv() {
    let e;
    while ((e = this.recvEvent())) if (e.type === "message") return e;
    return undefined;
  }

  /** The oldest received event (message, joined or left), or undefined. Never blocks. */
  recvEvent() {
    return this._queue.length ? this._take(0) : undefined;
  }

  /** Removes the queue entry at `i`, ending its sender's slot if it held it. */
  _take(i) {
    const [box] = this._queue.splice(i, 1);
    const e = box.event;
    if (e.type === "message" && this._slots.get(e.sender) === box) this._slots.delete(e.sender);
    return e;
  }

  /** Says goodbye and closes the connection (or stops reconnecting). Idempotent. */
  close() {
    if (this.status) return;
    if (this.state === "connected") {
      for (const frame of this._pending) this._raw(frame);
      this._pending = [];
      this._raw(new Uint8Array([GOODBYE, CloseReason.normal]));
    }
    this._end({ kind: "closed", text: "closed by this client" }, true);
  }

  _raw(bytes) {
    if (this._ws.readyState === WebSocket.OPEN) this._ws.send(bytes);
  }

  /** Sends waiting payloads as the socket drains; nothing while reconnecting. */
  _drainPending() {
    if (this._drainTimer || this.state !== "connected") return;
    const tick = () => {
      this._drainTimer = null;
      if (this.status || this.state !== "connected") return;
      while (this._pending.length && this._ws.bufferedAmount <= 64 * 1024) {
        this._raw(this._pending.shift());
        this.stats.sent++;
      }
      if (this._pending.length) this._drainTimer = setTimeout(tick, 4);
    };
    this._drainTimer = setTimeout(tick, 0);
  }

  _push(event) {
    this._enqueue(event);
    this._emit(event);
  }

  _enqueue(event) {
    if (this._latest) {
      if (event.type === "message") {
        const waiting = this._slots.get(event.sender);
        if (waiting) { waiting.event = event; this.stats.recvConflated++; return; }
      } else {
        this._slots.delete(event.name);
      }
    }
    if (this._queue.length >= this._queueSize) {
      // "latest" drops the oldest message first; joined/left only if nothing else waits.
      const m = this._latest ? this._queue.findIndex((b) => b.event.type === "message") : -1;
      this._take(Math.max(m, 0));
      this.stats.recvDropped++;
    }
    const box = { event };
    this._queue.push(box);
    if (this._latest && event.type === "message") this._slots.set(event.sender, box);
  }

  _emit(event) {
    if (this.onevent) { try { this.onevent(event); } catch (err) { setTimeout(() => { throw err; }); } }
    this._dispatch(event);
  }

  _dispatch(detail) {
    const e = new Event(detail.type);
    e.detail = detail;
    this.dispatchEvent(e);
  }

  _setState(state, extra = {}) {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    const detail = { type: "statechange", state, previous, ...extra };
    if (this.onstatechange) { try { this.onstatechange(detail); } catch (err) { setTimeout(() => { throw err; }); } }
    this._dispatch(detail);
  }

  /** Takes `ws` (welcomed) as this client's connection, with its keepalive. */
  _attach(ws) {
    this._ws = ws;
    this._lastHeard = Date.now();
    this._pinged = false;
    ws.onmessage = (e) => this._frame(new Uint8Array(e.data));
    ws.onerror = () => {};
    ws.onclose = (e) => this._lost({ kind: "connection-lost", text: `websocket closed (code ${e.code}${e.reason ? `: ${e.reason}` : ""})` });
    // Keepalive: ping a silent server, give up after three silent periods.
    this._keepalive = setInterval(() => {
      const silent = Date.now() - this._lastHeard;
      if (silent > 30000) this._lost({ kind: "timeout", text: "server silent for 30 s" });
      else if (silent > 10000 && !this._pinged) { this._pinged = true; this._raw(new Uint8Array([PING])); }
    }, 1000);
  }

  /** Lets go of the current socket: its late frames and its close are ignored. */
  _detach() {
    clearInterval(this._keepalive);
    clearTimeout(this._drainTimer);
    this._drainTimer = null;
    const ws = this._ws;
    ws.onmessage = ws.onerror = ws.onclose = null;
    try { ws.close(1000); } catch { /* already closed */ }
  }

  /** The connection is gone for `status`: reconnect, or end if this client may not. */
  _lost(status) {
    if (this.status || this.state !== "connected") return;
    const windowMs = this._link?.reconnectWindowMs ?? 0;
    if (!(windowMs > 0)) { this._end(status, true); return; }
    this._detach();
    this._lostAt = Date.now();
    this._delay = FIRST_DELAY_MS;
    this._lastError = status;
    this._setState("reconnecting", { reason: status });
    this._schedule();
  }

  /** The next attempt, after a jittered delay, or giving up past the window. */
  _schedule() {
    const left = this._lostAt + this._link.reconnectWindowMs - Date.now();
    if (left <= 0) {
      const e = this._lastError;
      const seconds = Math.round(this._link.reconnectWindowMs / 100) / 10;
      this._end({ ...e, text: `${e.text}; gave up reconnecting after ${seconds} s` });
      return;
    }
    const d = this._delay;
    this._delay = Math.min(MAX_DELAY_MS, d * 2);
    const wait = Math.min(left, d / 2 + Math.random() * (d / 2));
    this._retryTimer = setTimeout(() => this._attempt(), wait);
  }

  async _attempt() {
    this._retryTimer = null;
    if (this.status) return;
    const { url, timeoutMs, token } = this._link;
    let hello;
    try {
      hello = helloFrame({ name: this.name, room: this.room, echo: this.echo,
        token: await currentToken(token), resumeToken: this._resumeToken });
    } catch (err) {
      // The token function failed (its backend unreachable?) or gave no usable token: try again later.
      if (this.status) return;
      this._lastError = { kind: "connection-lost", text: `no join token: ${err.message ?? err}` };
      this._schedule();
      return;
    }
    if (this.status) return;
    let r;
    try {
      r = await handshake(url, hello, timeoutMs, (ws) => { this._connecting = ws; });
    } catch (err) {
      this._connecting = null;
      if (this.status) return;
      if (err instanceof RefusedError) {
        const status = { kind: "refused", reason: err.reason, text: err.text };
        if (err.reason.code === RefuseReason["resume-invalid"] && this._resumeToken) {
          // The server does not know the token (it restarted): join afresh, at once.
          this._resumeToken = "";
          this._lastError = status;
          this._attempt();
          return;
        }
        if (!RETRY_REFUSALS.has(err.reason.code)) { this._end(status); return; }
        this._lastError = status;
      } else if (err.goodbye) {
        const status = { kind: "goodbye", reason: err.goodbye, text: err.message };
        if (!RETRY_GOODBYES.has(err.goodbye.code)) { this._end(status); return; }
        this._lastError = status;
      } else if (err.kind === "connection" || err.kind === "timeout") {
        this._lastError = { kind: err.kind === "timeout" ? "timeout" : "connection-lost", text: err.message };
      } else {
        this._end({ kind: "protocol", text: err.message });
        return;
      }
      this._schedule();
      return;
    }
    this._connecting = null;
    if (this.status) { try { r.ws.close(1000); } catch { /* already closed */ } return; }
    this._welcomed(r.ws, r.welcome);
  }

  /** In the room (`w`: the WELCOME's room, maxPayload, members and resume) on `ws`: state "connected". */
  _adopt(ws, w) {
    this._members = w.members.slice();
    this.room = w.room;
    this.maxPayload = w.maxPayload;
    /** Whether the last WELCOME gave this client its old seat back. */
    this.resumed = Boolean(w.resume?.resumed);
    // A server without resume sends no token: the next reconnection joins afresh.
    this._resumeToken = w.resume?.token ?? "";
    this._attach(ws);
    this._setState("connected", { resumed: this.resumed });
  }

  /** Back in the room after a reconnection: new socket, members diffed, waiting sends out. */
  _welcomed(ws, welcome) {
    const before = new Set(this._members);
    const now = welcome.members;
    this.stats.reconnects++;
    this._adopt(ws, welcome);
    const after = new Set(now);
    for (const name of before) {
      if (name !== this._self && !after.has(name)) this._push({ type: "left", name, reason: closeReason(CloseReason.unknown) });
    }
    for (const name of now) {
      if (name !== this._self && !before.has(name)) this._push({ type: "joined", name });
    }
    this._drainPending();
  }

  _frame(b) {
    this._lastHeard = Date.now();
    this._pinged = false;
    try {
      const f = new Fields(b);
      switch (b[0]) {
        case MESSAGE: {
          const sender = f.str();
          this.stats.received++;
          this._push(new Message(sender, f.rest()));
          break;
        }
        case JOINED: {
          const name = f.str();
          if (!this._members.includes(name)) this._members.push(name);
          this._push({ type: "joined", name });
          break;
        }
        case LEFT: {
          const reason = closeReason(f.u8());
          const name = f.str();
          this._members = this._members.filter((m) => m !== name);
          this._push({ type: "left", name, reason });
          break;
        }
        case PING: this._raw(new Uint8Array([PONG])); break;
        case PONG: break;
        case GOODBYE: {
          const reason = closeReason(f.u8());
          const status = { kind: "goodbye", reason, text: f.restStr() };
          if (RETRY_GOODBYES.has(reason.code)) this._lost(status);
          else this._end(status, true);
          break;
        }
        default: throw new RelaisError("protocol", `unexpected frame 0x${b[0].toString(16)}`);
      }
    } catch (err) {
      this._end({ kind: "protocol", text: String(err.message ?? err) }, true);
    }
  }

  _end(status, closeSocket = false) {
    if (this.status) return;
    this.status = status;
    clearInterval(this._keepalive);
    clearTimeout(this._drainTimer);
    clearTimeout(this._retryTimer);
    this._pending = [];
    if (this._connecting) { try { this._connecting.close(); } catch { /* already closed */ } this._connecting = null; }
    if (closeSocket) { try { this._ws.close(1000); } catch { /* already closed */ } }
    this._setState("closed", { status });
    this._emit({ type: "close", status });
    this._resolveClosed(status);
  }
}
