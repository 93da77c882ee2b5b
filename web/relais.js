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
// It speaks the relais binary protocol (PROTOCOL.md) over WebSocket: one
// binary WebSocket message carries one frame body (type byte + fields, no
// length prefix). Types are in relais.d.ts.

/** The protocol version this client speaks. */
export const VERSION = 1;

const HELLO = 0x01, DATA = 0x02, PING = 0x10, PONG = 0x11, GOODBYE = 0x12;
const WELCOME = 0x81, REFUSED = 0x82, MESSAGE = 0x83, JOINED = 0x84, LEFT = 0x85;
const FLAG_ECHO = 0x01, FLAG_TOKEN = 0x02;
/** Longest join token a HELLO may carry, in bytes of ASCII. */
export const MAX_TOKEN_LEN = 2048;

/** Refusal codes (REFUSED frame) by name. */
export const RefuseReason = Object.freeze({
  "name-taken": 1, "invalid-name": 2, "invalid-room": 3,
  "unsupported-version": 4, "server-full": 5, "room-full": 6,
  "token-required": 7, "token-invalid": 8, "token-expired": 9, "not-allowed": 10,
  "overloaded": 11, "too-many-connections": 12, "too-many-joins": 13,
});
/** Close/leave codes (GOODBYE and LEFT frames) by name. */
export const CloseReason = Object.freeze({
  "normal": 0, "server-shutdown": 1, "slow-consumer": 2, "timeout": 3,
  "rate-limit": 4, "protocol-error": 5, "connection-lost": 6, "read-only": 7,
});
const nameOf = (table, code) =>
  Object.keys(table).find((k) => table[k] === code) ?? `unknown-${code}`;

/** A reason code with its name, e.g. `{ code: 1, name: "name-taken" }`. */
const refuseReason = (code) => ({ code, name: nameOf(RefuseReason, code) });
const closeReason = (code) => ({ code, name: nameOf(CloseReason, code) });

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
  const len = encoder.encode(s).length;
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
  rest() { const r = this.b.subarray(this.i); this.i = this.b.length; return r; }
  restStr() { return decoder.decode(this.rest()); }
  short() { return new RelaisError("protocol", `truncated frame 0x${this.b[0].toString(16)}`); }
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
 */
export function connect(url, name, options = {}) {
  const { room = "", echo = false, queueSize = 1024, timeoutMs = 10000, receive = "queue", token } = options;
  return new Promise((resolve, reject) => {
    if (receive !== "queue" && receive !== "latest") {
      throw new TypeError(`receive must be "queue" or "latest", not ${JSON.stringify(receive)}`);
    }
    checkName("name", name);
    if (room !== "") checkName("room", room);
    const tokenBytes = token == null ? [] : tokenField(token);
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    let done = false;
    const fail = (err) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try { ws.close(); } catch { /* already closed */ }
      reject(err);
    };
    const timer = setTimeout(() => fail(new RelaisError("timeout", "no answer to the handshake")), timeoutMs);
    ws.onerror = () => fail(new RelaisError("connection", `cannot connect to ${url}`));
    ws.onclose = (e) => fail(new RelaisError("connection", `connection closed during handshake (code ${e.code})`));
    ws.onopen = () => {
      const flags = (echo ? FLAG_ECHO : 0) | (token == null ? 0 : FLAG_TOKEN);
      ws.send(new Uint8Array([HELLO, VERSION >> 8, VERSION & 0xff, flags,
        ...shortString(name), ...shortString(room), ...tokenBytes]));
    };
    ws.onmessage = (e) => {
      if (done) return;
      try {
        const b = new Uint8Array(e.data);
        const f = new Fields(b);
        if (b[0] === WELCOME) {
          const version = f.u16(), maxPayload = f.u32(), joined = f.str();
          const members = Array.from({ length: f.u16() }, () => f.str());
          done = true;
          clearTimeout(timer);
          resolve(new Client(ws, { name, room: joined, echo, version, maxPayload, members, queueSize, receive }));
        } else if (b[0] === REFUSED) {
          fail(new RefusedError(f.u8(), f.restStr()));
        } else if (b[0] === GOODBYE) {
          const reason = closeReason(f.u8());
          fail(new RelaisError("protocol", `server closed the handshake: ${reason.name} ${f.restStr()}`));
        } else {
          fail(new RelaisError("protocol", `expected WELCOME, got frame 0x${b[0].toString(16)}`));
        }
      } catch (err) {
        fail(err instanceof RelaisError ? err : new RelaisError("protocol", String(err)));
      }
    };
  });
}

/**
 * A connected client. Events also arrive as DOM events on the client
 * (`addEventListener("message" | "joined" | "left" | "close", ...)`) and
 * through `onevent`.
 */
export class Client extends EventTarget {
  constructor(ws, w) {
    super();
    this.name = w.name;
    this.room = w.room;
    this.echo = w.echo;
    this.maxPayload = w.maxPayload;
    /** What the receive queue keeps: "queue" or "latest" (see connect). */
    this.receive = w.receive;
    /** Callback for every event (message, joined, left, close); optional. */
    this.onevent = null;
    /** Undefined while connected, then why it ended (see relais.d.ts). */
    this.status = undefined;
    this.stats = { sent: 0, received: 0, recvDropped: 0, recvConflated: 0, sendConflated: 0 };
    this._ws = ws;
    this._members = w.members.slice();
    // The receive queue holds boxes `{ event }`, so that in "latest" mode a
    // newer message replaces a waiting one in place: `_slots` maps each
    // sender to the box of its waiting message, until that box is taken or
    // dropped, or a joined/left event about the sender is queued.
    this._queue = [];
    this._slots = new Map();
    this._latest = w.receive === "latest";
    this._queueSize = Math.max(1, w.queueSize);
    this._held = null;
    this._lastHeard = Date.now();
    this._pinged = false;
    this.closed = new Promise((r) => { this._resolveClosed = r; });
    ws.onmessage = (e) => this._frame(new Uint8Array(e.data));
    ws.onerror = () => {};
    ws.onclose = (e) => this._end({ kind: "connection-lost", text: `websocket closed (code ${e.code}${e.reason ? `: ${e.reason}` : ""})` });
    // Keepalive: ping a silent server, give up after three silent periods.
    this._keepalive = setInterval(() => {
      const silent = Date.now() - this._lastHeard;
      if (silent > 30000) this._end({ kind: "timeout", text: "server silent for 30 s" }, true);
      else if (silent > 10000 && !this._pinged) { this._pinged = true; this._raw(new Uint8Array([PING])); }
    }, 1000);
  }

  /** Everyone in the room, this client included, kept current. */
  get members() { return this._members.slice(); }

  /**
   * Sends a payload (bytes, or a string sent as UTF-8) to the room. Returns
   * at once. If the socket's buffer is backed up (more than 64 KiB unsent),
   * only the newest payload is held and sent when it drains: older held ones
   * are dropped (`stats.sendConflated`), like the server's latest-wins rule.
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
    if (this._held || this._ws.bufferedAmount > 64 * 1024) {
      if (this._held) this.stats.sendConflated++;
      this._held = frame;
      this._drainHeld();
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

  /** Says goodbye and closes the connection. Idempotent. */
  close() {
    if (this.status) return;
    if (this._held) { this._raw(this._held); this._held = null; }
    this._raw(new Uint8Array([GOODBYE, CloseReason.normal]));
    this._end({ kind: "closed", text: "closed by this client" }, true);
  }

  _raw(bytes) {
    if (this._ws.readyState === WebSocket.OPEN) this._ws.send(bytes);
  }

  _drainHeld() {
    if (this._drainTimer) return;
    const tick = () => {
      this._drainTimer = null;
      if (!this._held || this.status) return;
      if (this._ws.bufferedAmount > 64 * 1024) { this._drainTimer = setTimeout(tick, 4); return; }
      this._raw(this._held);
      this._held = null;
      this.stats.sent++;
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
    const e = new Event(event.type);
    e.detail = event;
    this.dispatchEvent(e);
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
          this._end({ kind: "goodbye", reason, text: f.restStr() }, true);
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
    if (closeSocket) { try { this._ws.close(1000); } catch { /* already closed */ } }
    this._emit({ type: "close", status });
    this._resolveClosed(status);
  }
}
