// relais.js reconnects (resume, PROTOCOL.md and the resume spec):
//
// 1. the state machine in Node, against a scripted stand-in server (a fake
//    WebSocket): HELLO always with FLAG_RESUME and the kept token, WELCOME
//    with and without the resume fields, resume after a lost connection,
//    REFUSED 14 after a restart then a fresh join at once, the member-list
//    diff (joined, left with reason 255), name taken by the old seat's ghost
//    retried, which GOODBYEs and refusals end the client, the reconnect
//    window, close() while reconnecting, send() while reconnecting;
// 2. against the real server: two clients ride out a restart of `relais
//    serve` and talk again: in Node (SIGKILL: the connections just die; Node's
//    own WebSocket, behind --experimental-websocket before Node 22), and in
//    headless Chromium (SIGTERM: GOODBYE server-shutdown); each time a new
//    process on the same port; and in Chromium through a TCP proxy that cuts
//    the browser's side of a connection while the server's side stays open,
//    silent: the server still holds the seat (a ghost) when the client comes
//    back: a resuming server hands the seat over, one without resume refuses
//    the name until its keepalive drops the ghost (the client retries).
//
//   cargo build -p relais-cli && (cd e2e && npm ci) && node --test e2e/reconnect.test.mjs
//
// Environment: see support.mjs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { createServer, connect as tcpConnect } from "node:net";
import { createInterface } from "node:readline";
import { launchChromium, PATIENCE, relais, root } from "./support.mjs";

const { connect, CloseReason, RefuseReason } = await import(
  `data:text/javascript,${encodeURIComponent(readFileSync(join(root, "web/relais.js"), "utf8"))}`);

// ---- 1. The state machine, against a stand-in server ----

const enc = new TextEncoder();
const dec = new TextDecoder();
const str = (s) => [enc.encode(s).length, ...enc.encode(s)];
const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ");

/** Polls `fn` every 5 ms until truthy; fails with `what` after `ms`. */
async function until(what, fn, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A HELLO body, decoded. */
function parseHello(b) {
  assert.equal(b[0], 0x01);
  const flags = b[3];
  let i = 4;
  const short = () => { const n = b[i++]; const s = dec.decode(b.subarray(i, i + n)); i += n; return s; };
  const name = short(), room = short();
  let token = null;
  if (flags & 0x02) { const n = (b[i] << 8) | b[i + 1]; i += 2; token = dec.decode(b.subarray(i, i + n)); i += n; }
  const resume = flags & 0x04 ? short() : null;
  assert.equal(i, b.length, "nothing after the resume token");
  return { flags, name, room, token, resume };
}

/**
 * A relais stand-in: `up` or not, a generation (a restart forgets every
 * token), seats by name. `resume: false` plays a server from before resume
 * (no resume fields in WELCOME, a lost member's seat is a ghost until
 * `forget`). `others` are members that are not fake sockets.
 */
class Stand {
  constructor({ resume = true, others = [] } = {}) {
    this.resume = resume;
    this.up = true;
    this.tokens = new Set();
    this.issued = 0;
    this.others = others.slice();
    this.seats = new Map();
    this.hellos = [];
    this.data = [];
    this.refusals = [];
    const stand = this;
    globalThis.WebSocket = class FakeSocket {
      static OPEN = 1;
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.bufferedAmount = 0;
        setTimeout(() => {
          if (this.readyState !== 0) return;
          if (!stand.up) { this.readyState = 3; this.onerror?.({}); this.onclose?.({ code: 1006, reason: "" }); return; }
          this.readyState = 1;
          this.onopen?.();
        }, 1);
      }
      send(bytes) { if (this.readyState === 1) stand.receive(this, new Uint8Array(bytes)); }
      close(code = 1005) {
        if (this.readyState === 3) return;
        this.readyState = 3;
        stand.closed(this);
        setTimeout(() => this.onclose?.({ code, reason: "" }), 0);
      }
      /** Server to client. */
      deliver(b) { setTimeout(() => { if (this.readyState === 1) this.onmessage?.({ data: Uint8Array.from(b).buffer }); }, 0); }
      /** The connection dies (no close handshake). */
      cut() { if (this.readyState === 3) return; this.readyState = 3; setTimeout(() => this.onclose?.({ code: 1006, reason: "" }), 0); }
    };
  }

  members() { return [...this.others, ...this.seats.keys()]; }

  welcome(ws, seat, resumed) {
    const m = this.members();
    ws.deliver([0x81, 0, 1, 0, 1, 0, 0, ...str("r"), m.length >> 8, m.length & 0xff, ...m.flatMap(str),
      ...(this.resume ? [resumed ? 1 : 0, ...str(seat.token)] : [])]);
  }

  receive(ws, b) {
    if (b[0] === 0x01) {
      const h = parseHello(b);
      this.hellos.push(h);
      const refuse = (code) => ws.deliver([0x82, code, ...enc.encode(`code ${code}`)]);
      if (this.refusals.length) return refuse(this.refusals.shift());
      const seat = this.seats.get(h.name);
      if (this.resume && h.resume) {
        if (!this.tokens.has(h.resume)) return refuse(14);
        if (seat?.token === h.resume) {
          seat.ws?.cut();
          seat.ws = ws;
          return this.welcome(ws, seat, true);
        }
      }
      if (seat) return refuse(1);
      const fresh = { token: this.nextToken ?? `T${++this.issued}`, ws };
      this.nextToken = undefined;
      this.tokens.add(fresh.token);
      this.seats.set(h.name, fresh);
      return this.welcome(ws, fresh, false);
    }
    const seat = [...this.seats.entries()].find(([, s]) => s.ws === ws);
    if (b[0] === 0x02) this.data.push({ from: seat?.[0], text: dec.decode(b.subarray(1)) });
    if (b[0] === 0x12 && seat) this.seats.delete(seat[0]);
  }

  closed(ws) {
    // A socket the client closed is, to a resuming server, a parked seat.
    if (!this.resume) return;
    for (const s of this.seats.values()) if (s.ws === ws) s.ws = null;
  }

  /** The seat's connection dies; a server without resume keeps its ghost. */
  drop(name) { this.seats.get(name).ws.cut(); }
  forget(name) { this.seats.delete(name); }
  socket(name) { return this.seats.get(name).ws; }
  goodbye(name, code) { this.socket(name).deliver([0x12, code, ...enc.encode("bye")]); }
  /** Goes down (every connection cut) and forgets everything. */
  crash() {
    this.up = false;
    for (const s of this.seats.values()) s.ws?.cut();
    this.seats.clear();
    this.tokens.clear();
  }
}

/** A client of `stand` recording its state changes and events. */
async function client(stand, options = {}) {
  const states = [];
  const events = [];
  const c = await connect("ws://stand-in/ws", "me", {
    room: "r", onstatechange: (e) => states.push(e.resumed === undefined ? e.state : `${e.state} resumed=${e.resumed}`), ...options,
  });
  c.onevent = (e) => events.push(e.type === "left" ? `left ${e.name} ${e.reason.code} ${e.reason.name}`
    : e.type === "joined" ? `joined ${e.name}` : e.type === "close" ? `close ${e.status.kind}` : `${e.type}`);
  return { c, states, events };
}

const done = (c) => { if (!c.status) c.close(); };

test("the HELLO and WELCOME resume fields are those of the spec's examples", async () => {
  const stand = new Stand();
  // name "al", room "r", echo, resume, empty token: 01 00 01 05 02 61 6c 01 72 00
  const sent = [];
  const receive = stand.receive.bind(stand);
  stand.receive = (ws, b) => { sent.push(b); receive(ws, b); };
  const c = await connect("ws://stand-in/ws", "al", { room: "r", echo: true });
  assert.equal(hex(sent[0]), "01 00 01 05 02 61 6c 01 72 00");
  assert.equal(c.state, "connected");
  assert.equal(c.resumed, false);
  done(c);
  // With join token "t.k" and resume token "RT", echo off (the token after a loss).
  stand.seats.clear();
  stand.nextToken = "RT";
  const d = await connect("ws://stand-in/ws", "al", { room: "r", token: "t.k" });
  assert.equal(hex(sent.at(-1)), "01 00 01 06 02 61 6c 01 72 00 03 74 2e 6b 00");
  stand.drop("al");
  await until("the client resumes", () => d.state === "connected" && d.resumed);
  assert.equal(hex(sent.at(-1)), "01 00 01 06 02 61 6c 01 72 00 03 74 2e 6b 02 52 54");
  done(d);
});

test("a lost connection: reconnecting, send() keeps the newest, the seat comes back with the kept token", async () => {
  const stand = new Stand({ others: ["a"] });
  const { c, states, events } = await client(stand, { echo: true });
  try {
    assert.deepEqual(states, ["connecting", "connected resumed=false"]);
    assert.deepEqual(stand.hellos[0], { flags: 0x05, name: "me", room: "r", token: null, resume: "" });
    const token = stand.seats.get("me").token;
    stand.up = false;
    stand.drop("me");
    await until("reconnecting", () => c.state === "reconnecting");
    c.send("old");
    c.send("newest");
    assert.equal(c.stats.sendConflated, 1);
    stand.up = true;
    await until("connected again", () => c.state === "connected");
    assert.deepEqual(states, ["connecting", "connected resumed=false", "reconnecting", "connected resumed=true"]);
    assert.equal(stand.hellos.at(-1).resume, token, "the HELLO presents the kept token");
    assert.equal(c.resumed, true);
    await until("the waiting payload is sent", () => stand.data.length === 1);
    assert.deepEqual(stand.data, [{ from: "me", text: "newest" }]);
    assert.deepEqual(events, [], "a resumed seat sees no presence change");
    assert.deepEqual(c.members, ["a", "me"]);
    assert.equal(c.stats.reconnects, 1);
    c.send("live");
    await until("live traffic flows", () => stand.data.length === 2);
  } finally { done(c); }
});

test("a restarted server: REFUSED 14, a fresh join at once, the member list diffed (left 255, joined)", async () => {
  const stand = new Stand({ others: ["a", "b"] });
  const { c, states, events } = await client(stand, { receive: "latest" });
  try {
    stand.crash();
    await until("reconnecting", () => c.state === "reconnecting");
    stand.others = ["a", "c"];
    stand.up = true;
    await until("connected again", () => c.state === "connected");
    const [refused, fresh] = stand.hellos.slice(-2);
    assert.equal(refused.resume, "T1", "first with the old token");
    assert.equal(fresh.resume, "", "then at once without it");
    assert.equal(stand.hellos.length, 3);
    assert.deepEqual(states.slice(-2), ["reconnecting", "connected resumed=false"]);
    assert.equal(c.resumed, false);
    assert.deepEqual(events, ["left b 255 unknown", "joined c"]);
    // The diff is queued for recvEvent too, in order.
    assert.deepEqual([c.recvEvent(), c.recvEvent(), c.recvEvent()].map((e) => e && `${e.type} ${e.name}`),
      ["left b", "joined c", undefined]);
    assert.deepEqual(c.members, ["a", "c", "me"]);
    assert.equal(CloseReason.unknown, 255);
    assert.equal(RefuseReason["resume-invalid"], 14);
    // The new token is the one presented next time.
    const token = stand.seats.get("me").token;
    stand.drop("me");
    await until("resumed on the restarted server", () => c.state === "connected" && c.resumed);
    assert.equal(stand.hellos.at(-1).resume, token);
  } finally { done(c); }
});

test("a server without resume: WELCOME without the fields; the ghost's name taken is retried until freed", async () => {
  const stand = new Stand({ resume: false });
  const { c, states, events } = await client(stand);
  try {
    assert.equal(c.resumed, false);
    stand.drop("me"); // the server has not noticed: "me" lingers
    await until("two refusals", () => stand.hellos.length >= 3);
    assert.equal(c.state, "reconnecting");
    assert.ok(stand.hellos.slice(1).every((h) => h.resume === "" && h.flags & 0x04), "no token to present, FLAG_RESUME still set");
    stand.forget("me");
    await until("connected again", () => c.state === "connected");
    assert.deepEqual(states, ["connecting", "connected resumed=false", "reconnecting", "connected resumed=false"]);
    assert.deepEqual(events, []);
  } finally { done(c); }
});

test("GOODBYE server-shutdown, slow-consumer and timeout reconnect; rate-limit, protocol-error, read-only and normal end it", async () => {
  for (const code of [1, 2, 3]) {
    const stand = new Stand();
    const { c, states } = await client(stand);
    stand.goodbye("me", code);
    await until(`GOODBYE ${code}: back`, () => c.stats.reconnects === 1 && c.state === "connected");
    assert.equal(states[2], "reconnecting", `GOODBYE ${code}`);
    done(c);
  }
  for (const code of [0, 4, 5, 7]) {
    const stand = new Stand();
    const { c, states, events } = await client(stand);
    stand.goodbye("me", code);
    const status = await c.closed;
    assert.equal(status.kind, "goodbye");
    assert.equal(status.reason.code, code);
    assert.deepEqual(states.slice(-1), ["closed"], `GOODBYE ${code}`);
    assert.deepEqual(events, ["close goodbye"]);
  }
});

test("final refusals end it, retryable ones are retried; the window gives up; close() stops reconnecting", async () => {
  for (const code of [2, 3, 4, 7, 8, 9, 10]) {
    const stand = new Stand();
    const { c } = await client(stand);
    stand.refusals.push(code);
    stand.drop("me");
    const status = await c.closed;
    assert.deepEqual([status.kind, status.reason.code], ["refused", code]);
    assert.equal(c.state, "closed");
  }
  for (const code of [1, 5, 6, 11, 12, 13, 15]) {
    const stand = new Stand();
    const { c } = await client(stand);
    stand.refusals.push(code, code);
    stand.drop("me");
    await until(`refused ${code} twice, then back`, () => c.state === "connected" && c.stats.reconnects === 1);
    done(c);
  }
  // Out of window: closed with the last error.
  const stand = new Stand();
  const { c, states } = await client(stand, { reconnectWindowMs: 400 });
  stand.up = false;
  stand.drop("me");
  const started = Date.now();
  const status = await c.closed;
  const took = Date.now() - started;
  assert.ok(took >= 350 && took < 2000, `gave up after ${took} ms`);
  assert.equal(status.kind, "connection-lost");
  assert.match(status.text, /gave up reconnecting after 0.4 s/);
  assert.deepEqual(states, ["connecting", "connected resumed=false", "reconnecting", "closed"]);
  assert.throws(() => c.send("x"), { kind: "closed" });
  // close() while reconnecting.
  const other = new Stand();
  const d = (await client(other)).c;
  other.up = false;
  other.drop("me");
  await until("reconnecting", () => d.state === "reconnecting");
  d.close();
  assert.deepEqual(await d.closed, { kind: "closed", text: "closed by this client" });
  const tries = other.hellos.length;
  other.up = true;
  await new Promise((r) => setTimeout(r, 300)); // not a synchronisation: proving nothing happens
  assert.equal(other.hellos.length, tries, "no attempt after close()");
});

test("reconnectWindowMs 0: a lost connection ends the client, as before resume", async () => {
  const stand = new Stand();
  const { c, states } = await client(stand, { reconnectWindowMs: 0 });
  stand.drop("me");
  const status = await c.closed;
  assert.equal(status.kind, "connection-lost");
  assert.deepEqual(states, ["connecting", "connected resumed=false", "closed"]);
  assert.equal(stand.hellos.length, 1);
});

test("backoff: jittered, doubling from ~100 ms, capped at 5 s", async () => {
  const stand = new Stand();
  const { c } = await client(stand);
  const waits = [];
  const realSetTimeout = globalThis.setTimeout;
  stand.up = false;
  try {
    // Record the delays of the client's retry timers (the only ones over 20 ms here).
    // (The handshake's 10 s timer passes through.)
    globalThis.setTimeout = (fn, ms, ...rest) => {
      const retry = ms > 20 && ms <= 5000;
      if (retry) waits.push(ms);
      return realSetTimeout(fn, retry ? 0 : ms, ...rest);
    };
    stand.drop("me");
    await until("eight attempts", () => waits.length >= 8);
  } finally {
    globalThis.setTimeout = realSetTimeout;
    done(c);
  }
  const caps = [100, 200, 400, 800, 1600, 3200, 5000, 5000];
  waits.slice(0, 8).forEach((w, i) => assert.ok(w >= caps[i] / 2 && w <= caps[i], `attempt ${i}: ${w} ms not in [${caps[i] / 2}, ${caps[i]}]`));
});

// ---- 2. Across a real server restart ----

/** Runs in a child Node process: two clients, their states and what a receives on stdout; stdin says what b sends. */
const nodeScenario = `
  const { readFileSync } = await import("node:fs");
  const { createInterface } = await import("node:readline");
  const { connect } = await import("data:text/javascript," + encodeURIComponent(readFileSync(process.env.RELAIS_JS, "utf8")));
  const url = process.env.WS_URL, room = process.env.ROOM;
  const join = (name) => connect(url, name, { room, onstatechange: (e) => console.log(name + " " + e.state) });
  const a = await join("a"), b = await join("b");
  a.onevent = (e) => { if (e.type === "message") console.log("a got " + e.sender + ": " + e.text); };
  createInterface({ input: process.stdin }).on("line", (line) => {
    if (line === "close") { a.close(); b.close(); } else b.send(line);
  });
`;

test("relais.js in Node rides out a server restart (SIGKILL, same port) and talks again (real server)",
  { timeout: 120_000 }, async (t) => {
    const args = (ws) => ["serve", "--listen", "127.0.0.1:0", "--ws-listen", ws];
    let server = relais(args("127.0.0.1:0"));
    const cleanups = [async () => { server.child.kill("SIGTERM"); await server.exited; }];
    t.after(async () => { for (const cleanup of cleanups.reverse()) await cleanup(); });
    const wsUrl = (await server.expectLine(/^relais websocket on /)).split(" ").pop();
    const wsAddr = new URL(wsUrl).host;

    const flags = Number(process.versions.node.split(".")[0]) >= 22 ? [] : ["--experimental-websocket"];
    const child = spawn(process.execPath, [...flags, "--no-warnings", "--input-type=module", "-e", nodeScenario], {
      stdio: ["pipe", "pipe", "inherit"],
      env: { ...process.env, RELAIS_JS: join(root, "web/relais.js"), WS_URL: wsUrl, ROOM: `node-${process.pid}` },
    });
    const exited = new Promise((resolve) => child.on("exit", resolve));
    cleanups.push(async () => { child.stdin.end("close\n"); await exited; });
    const lines = [];
    let wake = () => {};
    createInterface({ input: child.stdout }).on("line", (line) => { lines.push(line); wake(); });
    /** Waits for the lines in `wanted`, in any order, after line `from`; returns the index past them. */
    const expect = async (wanted, from) => {
      const deadline = Date.now() + PATIENCE;
      for (;;) {
        const at = wanted.map((w) => lines.indexOf(w, from));
        if (at.every((i) => i >= 0)) return Math.max(...at) + 1;
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no ${JSON.stringify(wanted)} after line ${from}; saw:\n${lines.join("\n")}`);
        await new Promise((r) => { wake = r; setTimeout(r, left); });
      }
    };
    let seen = await expect(["a connecting", "a connected", "b connecting", "b connected"], 0);

    server.child.kill("SIGKILL");
    await server.exited;
    seen = await expect(["a reconnecting", "b reconnecting"], seen);
    server = relais(args(wsAddr));
    await server.expectLine(/^relais websocket on /);
    seen = await expect(["a connected", "b connected"], seen);
    child.stdin.write("after the restart\n");
    await expect(["a got b: after the restart"], seen);
    assert.ok(!lines.includes("a closed") && !lines.includes("b closed"), lines.join("\n"));
  });

test("relais.js rides out a server restart (SIGTERM, same port) and talks again (Chromium, real server)",
  { timeout: 120_000 }, async (t) => {
    const args = (ws) => ["serve", "--listen", "127.0.0.1:0", "--ws-listen", ws, "--web"];
    let server = relais(args("127.0.0.1:0"));
    const cleanups = [async () => { server.child.kill("SIGTERM"); await server.exited; }];
    t.after(async () => { for (const cleanup of cleanups.reverse()) await cleanup(); });
    const webUrl = (await server.expectLine(/^relais web on http:\/\//)).split(" ").pop();
    const port = new URL(webUrl).port;

    const browser = await launchChromium();
    cleanups.push(() => browser.close());
    const page = await browser.newPage();
    page.on("pageerror", (err) => console.error(`page error: ${err.message}`));
    await page.goto(new URL("/relais.js", webUrl).href);
    await page.evaluate(async (room) => {
      const { connect } = await import("/relais.js");
      const url = `${location.origin.replace(/^http/, "ws")}/ws`;
      const log = window.log = { a: [], b: [] };
      const join = (name) => connect(url, name, { room, receive: "latest",
        onstatechange: (e) => log[name].push(e.state) });
      window.a = await join("a");
      window.b = await join("b");
      window.got = [];
      window.a.onevent = (e) => { if (e.type === "message") window.got.push(e.text); };
    }, `restart-${process.pid}`);
    const until = (what, fn, arg) => page.waitForFunction(fn, arg, { timeout: PATIENCE, polling: 20 })
      .catch(async (err) => {
        const state = await page.evaluate(() => JSON.stringify({ log: window.log, a: [window.a?.state, window.a?.status],
          b: [window.b?.state, window.b?.status] })).catch((e) => String(e));
        throw new Error(`${what}: not within ${PATIENCE} ms; ${state}`, { cause: err });
      });
    await until("a lists b", () => window.a.members.includes("b"));

    // The restart: GOODBYE server-shutdown to both, a new process on the same port.
    server.child.kill("SIGTERM");
    await until("both reconnecting", () => window.a.state === "reconnecting" && window.b.state === "reconnecting");
    assert.deepEqual(await server.exited, { code: 0, signal: null });
    // Meanwhile b's state waits (only the newest).
    await page.evaluate(() => { window.b.send("while down 1"); window.b.send("while down 2"); });
    server = relais(args(`127.0.0.1:${port}`));
    await server.expectLine(/^relais web on http:\/\//);
    await until("both connected again", () => window.a.state === "connected" && window.b.state === "connected");
    await until("a lists b again", () => window.a.members.includes("b"));
    // The payload b queued while down reaches a (unless b reconnected before a
    // and the server relayed it before a was in: then a gets it as the snapshot).
    await until("a gets b's newest", () => window.got.includes("while down 2"));
    const r = await page.evaluate(() => {
      window.b.send("after");
      return { log: window.log, got: window.got.slice(), stats: window.b.stats };
    });
    await until("live traffic flows", () => window.got.includes("after"));
    assert.ok(!r.got.includes("while down 1"), "only the newest waited");
    assert.deepEqual(r.log.a, ["connecting", "connected", "reconnecting", "connected"]);
    assert.deepEqual(r.log.b, ["connecting", "connected", "reconnecting", "connected"]);
    assert.equal(r.stats.reconnects, 1);
    await page.evaluate(() => { window.a.close(); window.b.close(); });
  });

/**
 * A TCP proxy to `port` on 127.0.0.1. `cut()` closes the client side of every
 * connection through it and leaves the server side open and silent (nothing
 * forwarded either way), as a vanished network path looks to the server;
 * `cut({ both: true })` closes both sides at once, no WebSocket close
 * handshake (a reset path, a killed browser).
 */
async function cuttingProxy(port) {
  const pairs = new Set();
  const ghosts = [];
  const server = createServer((client) => {
    const upstream = tcpConnect(port, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => { pairs.delete(pair); client.destroy(); upstream.destroy(); };
    for (const s of [client, upstream]) { s.on("error", end); s.on("close", end); }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    cut({ both = false } = {}) {
      for (const pair of pairs) {
        const { client, upstream } = pair;
        pairs.delete(pair);
        if (both) { client.destroy(); upstream.destroy(); continue; }
        client.unpipe(upstream);
        upstream.unpipe(client);
        for (const s of [client, upstream]) { s.removeAllListeners("close"); s.removeAllListeners("error"); }
        upstream.on("error", () => {});
        upstream.on("data", () => {}); // read and drop: the server's writes succeed, it hears nothing back
        ghosts.push(upstream);
        client.destroy();
      }
    },
    async close() {
      for (const g of ghosts) g.destroy();
      for (const { client, upstream } of pairs) { client.destroy(); upstream.destroy(); }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

test("relais.js comes back after its connection dies unseen by the server (Chromium, real server, a cut proxy)",
  { timeout: 120_000 }, async (t) => {
    // A short keepalive, so that a server without resume drops the ghost in a few seconds.
    const server = relais(["serve", "--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0", "--web", "--keepalive", "1"]);
    const cleanups = [async () => { server.child.kill("SIGTERM"); await server.exited; }];
    t.after(async () => { for (const cleanup of cleanups.reverse()) await cleanup(); });
    const webUrl = (await server.expectLine(/^relais web on http:\/\//)).split(" ").pop();
    const proxy = await cuttingProxy(Number(new URL(webUrl).port));
    cleanups.push(() => proxy.close());

    const browser = await launchChromium();
    cleanups.push(() => browser.close());
    const page = await browser.newPage();
    page.on("pageerror", (err) => console.error(`page error: ${err.message}`));
    // relais.js is served without the demo page's policy: it may connect to the proxy's port.
    await page.goto(new URL("/relais.js", webUrl).href);
    await page.evaluate(async ({ room, proxyPort }) => {
      const { connect } = await import("/relais.js");
      const direct = `${location.origin.replace(/^http/, "ws")}/ws`;
      window.log = [];
      window.seen = [];
      window.got = [];
      // a goes through the proxy; b, directly, watches what the room sees.
      window.a = await connect(`ws://127.0.0.1:${proxyPort}/ws`, "a", { room,
        onstatechange: (e) => window.log.push(e.state + (e.resumed === undefined ? "" : ` resumed=${e.resumed}`)) });
      window.b = await connect(direct, "b", { room });
      window.b.onevent = (e) => {
        if (e.type === "joined" || e.type === "left") window.seen.push(`${e.type} ${e.name}${e.reason ? ` ${e.reason.name}` : ""}`);
      };
      window.a.onevent = (e) => { if (e.type === "message") window.got.push(e.text); };
    }, { room: `ghost-${process.pid}`, proxyPort: proxy.port });
    const until = (what, fn, arg) => page.waitForFunction(fn, arg, { timeout: PATIENCE, polling: 20 })
      .catch(async (err) => {
        const state = await page.evaluate(() => JSON.stringify({ log: window.log, seen: window.seen, a: window.a?.status }));
        throw new Error(`${what}: not within ${PATIENCE} ms; ${state}`, { cause: err });
      });
    await until("a lists b", () => window.a.members.includes("b"));

    proxy.cut();
    await until("a reconnecting", () => window.a.state === "reconnecting");
    await until("a connected again", () => window.a.state === "connected" && window.a.members.includes("b"));
    await page.evaluate(() => window.b.send("after"));
    await until("a hears b", () => window.got.includes("after"));
    await until("b lists a", () => window.b.members.includes("a"));
    const r = await page.evaluate(() => ({ log: window.log, seen: window.seen, resumed: window.a.resumed }));
    console.log(`after the cut: ${JSON.stringify(r)}`);
    assert.deepEqual(r.log.slice(0, 4), ["connecting", "connected resumed=false", "reconnecting", `connected resumed=${r.resumed}`]);
    // A server that resumes hands the seat over at once; one that does not
    // (no resume token in its WELCOME) refuses the name until its keepalive
    // drops the ghost.
    const resumes = await page.evaluate(() => window.a._resumeToken !== "");
    assert.equal(r.resumed, resumes);
    if (resumes) assert.deepEqual(r.seen, [], "a resumed seat: the room saw nothing");
    else assert.deepEqual(r.seen, ["left a timeout", "joined a"], "without resume: the ghost times out, a joins afresh");

    // Both sides cut, no close handshake: the server sees the connection end.
    await page.evaluate(() => { window.log.length = 0; window.seen.length = 0; });
    proxy.cut({ both: true });
    await until("a connected again after the hard cut", () => window.log.at(-1)?.startsWith("connected"));
    await page.evaluate(() => window.b.send("after the hard cut"));
    await until("a hears b again", () => window.got.includes("after the hard cut"));
    await until("b lists a again", () => window.b.members.includes("a"));
    const h = await page.evaluate(() => ({ log: window.log, seen: window.seen, resumed: window.a.resumed }));
    console.log(`after the hard cut: ${JSON.stringify(h)}`);
    assert.equal(h.resumed, resumes, "a lost connection is parked (connection lost), not ended as a protocol error");
    if (resumes) assert.deepEqual(h.seen, []);
    else assert.deepEqual(h.seen.map((e) => e.split(" ").slice(0, 2).join(" ")), ["left a", "joined a"]);
    await page.evaluate(() => { window.a.close(); window.b.close(); });
  });
