// relais.js's receive modes ("queue" and "latest") and join tokens:
//
// 1. the queue policy itself, in Node, fed frames directly (no server);
//    the HELLO with a token and the names of the token refusals, on a
//    stand-in WebSocket;
// 2. in headless Chromium against `relais serve --web`: receivers with
//    `receive: "latest"` that read nothing while others send, join and leave
//    get, when they resume, at most one message per sender (its newest) and
//    every joined/left event, in order;
// 3. in headless Chromium against `relais serve --web --token-secret-file`:
//    a token minted by `relais token` joins, none or someone else's is
//    refused by name, a read-only member that sends is dropped.
//
//   cargo build -p relais-cli && (cd e2e && npm ci) && node --test e2e/relais-js.test.mjs
//
// Environment: see support.mjs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readFileSync, writeFileSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { launchChromium, PATIENCE, relais, root, RELAIS } from "./support.mjs";

// relais.js is an ES module in a folder without package.json: import it as
// one whatever Node's module detection (Node 18 would take it for CommonJS).
const { Client, connect, RefusedError, RelaisError, MAX_TOKEN_LEN } = await import(
  `data:text/javascript,${encodeURIComponent(readFileSync(join(root, "web/relais.js"), "utf8"))}`);

// ---- 1. The queue policy, without a network ----

const enc = new TextEncoder();
const str = (s) => [enc.encode(s).length, ...enc.encode(s)];
const frames = {
  message: (sender, text) => new Uint8Array([0x83, ...str(sender), ...enc.encode(text)]),
  joined: (name) => new Uint8Array([0x84, ...str(name)]),
  left: (name) => new Uint8Array([0x85, 0, ...str(name)]),
};

/** A Client on a stand-in socket, for feeding frames to. */
function offline(receive, queueSize = 1024) {
  const ws = { readyState: 3, send() {}, close() {} };
  return new Client(ws, { name: "me", room: "r", echo: false, maxPayload: 1024, members: ["me"], queueSize, receive });
}

const plain = (e) => e.type === "message" ? `${e.sender}:${e.text}` : `${e.type}:${e.name}`;
const drain = (c) => { const out = []; let e; while ((e = c.recvEvent())) out.push(plain(e)); return out; };

test("latest mode: replace in place, presence kept and ordered, bounded", () => {
  const c = offline("latest");
  try {
    let seen = 0;
    c.onevent = () => seen++;
    for (const f of [
      frames.message("a", "1"), frames.message("b", "1"), frames.message("a", "2"),
      frames.joined("c"), frames.message("c", "1"),
      frames.message("a", "3"), frames.left("a"), frames.joined("a"), frames.message("a", "4"),
      frames.message("a", "5"), frames.message("c", "2"),
    ]) c._frame(f);
    assert.deepEqual(drain(c), ["a:3", "b:1", "joined:c", "c:2", "left:a", "joined:a", "a:5"]);
    assert.equal(seen, 11, "onevent sees every event, replaced ones too");
    assert.deepEqual({ ...c.stats }, { sent: 0, received: 8, recvDropped: 0, recvConflated: 4, sendConflated: 0, reconnects: 0 });
    // Taking a message frees its sender's slot: the next one queues at the back.
    c._frame(frames.message("a", "6"));
    c._frame(frames.message("b", "2"));
    assert.equal(c.recv().text, "6");
    c._frame(frames.message("a", "7"));
    c._frame(frames.message("b", "3"));
    assert.deepEqual(drain(c), ["b:3", "a:7"]);
  } finally {
    c._end({ kind: "closed", text: "test over" }); // no socket to close
  }
});

test("latest mode when full: the oldest message goes first, presence last, all counted", () => {
  const c = offline("latest", 3);
  try {
    for (const f of [frames.joined("a"), frames.message("a", "1"), frames.message("b", "1"),
      frames.message("c", "1"), frames.message("b", "2"), frames.left("a")]) c._frame(f);
    // a:1 made room for c:1, b:2 (which had replaced b:1) for left:a.
    assert.deepEqual(drain(c), ["joined:a", "c:1", "left:a"]);
    assert.equal(c.stats.recvDropped, 2);
    assert.equal(c.stats.recvConflated, 1);
    // Nothing but presence waiting: the oldest presence event goes.
    for (const f of [frames.joined("x"), frames.joined("y"), frames.joined("z"), frames.message("w", "1")]) c._frame(f);
    assert.deepEqual(drain(c), ["joined:y", "joined:z", "w:1"]);
    assert.equal(c.stats.recvDropped, 3);
  } finally {
    c._end({ kind: "closed", text: "test over" }); // no socket to close
  }
});

test("queue mode (the default) keeps every message and drops the oldest event when full", () => {
  const c = offline("queue", 3);
  try {
    for (const f of [frames.joined("a"), frames.message("a", "1"), frames.message("a", "2"), frames.message("a", "3")]) c._frame(f);
    assert.deepEqual(drain(c), ["a:1", "a:2", "a:3"]);
    assert.deepEqual([c.stats.recvDropped, c.stats.recvConflated], [1, 0]);
  } finally {
    c._end({ kind: "closed", text: "test over" }); // no socket to close
  }
});

test("connect() sends the token in HELLO and names the token refusals", async () => {
  const hellos = [];
  let answer;
  /** A stand-in WebSocket: records what is sent, answers with `answer`. */
  class StandIn {
    constructor() { this.readyState = 1; queueMicrotask(() => this.onopen()); }
    send(bytes) { hellos.push([...bytes]); queueMicrotask(() => this.onmessage({ data: answer.buffer })); }
    close() {}
  }
  globalThis.WebSocket = StandIn;
  try {
    const refused = (code, text) => new Uint8Array([0x82, code, ...enc.encode(text)]);
    for (const [code, name] of [[7, "token-required"], [8, "token-invalid"], [9, "token-expired"],
      [10, "not-allowed"], [11, "overloaded"], [12, "too-many-connections"], [13, "too-many-joins"],
      [14, "resume-invalid"], [15, "cluster-unavailable"]]) {
      answer = refused(code, "why");
      const err = await connect("ws://stand-in/ws", "al", { room: "r", token: "t.k" }).then(() => null, (e) => e);
      assert.ok(err instanceof RefusedError, String(err));
      assert.deepEqual(err.reason, { code, name });
      assert.equal(err.text, "why");
    }
    // HELLO: flags 0x02 (token) | 0x04 (resume), then u16 length and the
    // token after the room, then the (empty) resume token.
    assert.deepEqual(hellos.at(-1), [0x01, 0, 1, 0x06, ...str("al"), ...str("r"), 0, 3, ...enc.encode("t.k"), 0]);
    answer = refused(1, "name taken");
    await connect("ws://stand-in/ws", "al", { echo: true, token: "" }).catch(() => {});
    assert.deepEqual(hellos.at(-1), [0x01, 0, 1, 0x07, ...str("al"), 0, 0, 0, 0]);
    await connect("ws://stand-in/ws", "al", { room: "r" }).catch(() => {});
    assert.deepEqual(hellos.at(-1), [0x01, 0, 1, 0x04, ...str("al"), ...str("r"), 0], "no token: no field");
    const longest = "x".repeat(MAX_TOKEN_LEN);
    await connect("ws://stand-in/ws", "al", { token: longest }).catch(() => {});
    assert.deepEqual(hellos.at(-1).slice(-MAX_TOKEN_LEN - 3, -MAX_TOKEN_LEN - 1), [MAX_TOKEN_LEN >> 8, MAX_TOKEN_LEN & 0xff]);

    // A token that cannot be sent is refused before connecting.
    const sent = hellos.length;
    for (const bad of ["x".repeat(MAX_TOKEN_LEN + 1), "tökén", 42]) {
      const err = await connect("ws://stand-in/ws", "al", { token: bad }).then(() => null, (e) => e);
      assert.ok(err instanceof RelaisError && err.kind === "invalid-token", String(err));
    }
    assert.equal(hellos.length, sent);
  } finally {
    delete globalThis.WebSocket;
  }
});

// ---- 2. In Chromium, against the real server ----

/**
 * Runs in the page. Nothing sleeps to synchronise: each step waits (bounded)
 * for a condition proving the previous one happened: a sender's own echo, or
 * a name entering or leaving the receivers' member lists, which are updated
 * in frame order whether or not anyone takes events.
 */
async function scenario({ room, senders, perSender, patience }) {
  const { connect } = await import("/relais.js");
  const url = `${location.origin.replace(/^http/, "ws")}/ws`;
  const until = async (what, done) => {
    const deadline = Date.now() + patience;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
      await new Promise((r) => setTimeout(r, 2));
    }
  };
  const join = (name, options = {}) => connect(url, name, { room, ...options });
  /** Sends prefix:0.. one at a time, each after the previous one's echo. */
  const sendPaced = async (c, prefix) => {
    let last;
    for (let i = 0; i < perSender; i++) {
      last = `${prefix}:${i}`;
      c.send(last);
      let echoed = false;
      await until(`${c.name} gets its echo of ${last}`, () => {
        let m;
        while (!echoed && (m = c.recv())) echoed = m.sender === c.name && m.text === last;
        return echoed;
      });
    }
    return last;
  };
  const plain = (e) => e.type === "message" ? { type: e.type, sender: e.sender, text: e.text }
    : e.type === "left" ? { type: e.type, name: e.name, reason: e.reason.name } : { type: e.type, name: e.name };

  // Three receivers that read nothing until the end: two in "latest" mode
  // (one takes events, one messages only), one in the default "queue" mode.
  const events = await join("events", { receive: "latest" });
  const messages = await join("messages", { receive: "latest" });
  const queue = await join("queue");
  let eventsSeen = 0;
  events.onevent = (e) => { if (e.type === "message") eventsSeen++; };
  const receivers = [events, messages, queue];
  const allSee = (name, present) => until(`the receivers see ${name} present=${present}`,
    () => receivers.every((c) => c.members.includes(name) === present));
  await allSee("queue", true);

  const expected = [{ type: "joined", name: "messages" }, { type: "joined", name: "queue" }];
  const clients = [];
  for (let i = 0; i < senders; i++) {
    const c = await join(`s${i}`, { echo: true });
    await allSee(c.name, true);
    clients.push(c);
    expected.push({ type: "joined", name: c.name });
  }
  for (const c of clients) {
    expected.push({ type: "message", sender: c.name, text: await sendPaced(c, c.name) });
  }
  // A visit during the pause.
  const visitor = await join("visitor");
  await allSee("visitor", true);
  visitor.close();
  await allSee("visitor", false);
  expected.push({ type: "joined", name: "visitor" }, { type: "left", name: "visitor", reason: "normal" });
  // s1 leaves and comes back: its new messages queue after its left and
  // joined, its message from before stays before them.
  clients[1].close();
  await allSee("s1", false);
  const s1 = await join("s1", { echo: true });
  await allSee("s1", true);
  const again = await sendPaced(s1, "s1-again");
  expected.push({ type: "left", name: "s1", reason: "normal" }, { type: "joined", name: "s1" },
    { type: "message", sender: "s1", text: again });
  // The last frame the receivers get: once listed, everything before is queued.
  const sentinel = await join("sentinel");
  await allSee("sentinel", true);
  expected.push({ type: "joined", name: "sentinel" });

  // The pause ends.
  const got = [];
  for (let e; (e = events.recvEvent());) got.push(plain(e));
  const gotMessages = [];
  for (let m; (m = messages.recv());) gotMessages.push(plain(m));
  let queued = 0;
  while (queue.recv()) queued++;
  const stats = { events: { ...events.stats }, messages: { ...messages.stats }, queue: { ...queue.stats } };
  for (const c of [...receivers, ...clients, s1, sentinel]) c.close();
  return { expected, got, gotMessages, eventsSeen, queued, stats };
}

test("a latest-mode receiver that pauses gets each sender's newest message and every presence event (Chromium, real server)",
  { timeout: 120_000 }, async (t) => {
    const server = relais(["serve", "--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0", "--web"]);
    const cleanups = [async () => { server.child.kill("SIGTERM"); await server.exited; }];
    t.after(async () => { for (const cleanup of cleanups.reverse()) await cleanup(); });
    const webUrl = (await server.expectLine(/^relais web on http:\/\//)).split(" ").pop();

    const browser = await launchChromium();
    cleanups.push(() => browser.close());
    const page = await browser.newPage();
    page.on("pageerror", (err) => console.error(`page error: ${err.message}`));
    // Any page of the server's origin can import /relais.js; this one runs no client of its own.
    await page.goto(new URL("/relais.js", webUrl).href);

    const senders = 4, perSender = 30;
    const r = await page.evaluate(scenario, { room: `latest-${process.pid}`, senders, perSender, patience: PATIENCE });
    console.log(`receiver stats: ${JSON.stringify(r.stats)}`);

    // At most one message per sender (per stay in the room), each its newest,
    // and every joined/left event, in order.
    assert.deepEqual(r.got, r.expected);
    const expectedMessages = r.expected.filter((e) => e.type === "message");
    assert.deepEqual(r.gotMessages, expectedMessages);
    for (const name of ["events", "messages"]) {
      const s = r.stats[name];
      assert.equal(s.recvDropped, 0, name);
      // Every message received and not taken was replaced by a newer one.
      assert.equal(s.received, expectedMessages.length + s.recvConflated, name);
      assert.ok(s.recvConflated > 0, `${name} conflated something`);
    }
    assert.equal(r.eventsSeen, r.stats.events.received, "onevent saw every message");
    // The default mode kept every message it received.
    assert.equal(r.queued, r.stats.queue.received);
    assert.equal(r.stats.queue.recvConflated, 0);
    assert.ok(r.queued > expectedMessages.length);
  });

// ---- 3. Join tokens, in Chromium, against a server that requires them ----

/** `relais token ARGS`: the token it prints. */
function mintToken(args) {
  const out = spawnSync(RELAIS, ["token", ...args], { encoding: "utf8" });
  assert.equal(out.status, 0, out.stderr);
  return out.stdout.trim();
}

/** Runs in the page: joins with and without tokens; what happened. */
async function tokenScenario({ tokens }) {
  const { connect, RefusedError } = await import("/relais.js");
  const url = `${location.origin.replace(/^http/, "ws")}/ws`;
  const refusal = (name, options) => connect(url, name, options).then(
    (c) => { c.close(); return "welcomed"; },
    (e) => (e instanceof RefusedError ? e.reason.name : `${e.kind}: ${e.message}`));
  const out = {
    none: await refusal("alice", { room: "arena" }),
    someoneElses: await refusal("mallory", { room: "arena", token: tokens.alice }),
    otherRoom: await refusal("alice", { room: "vip", token: tokens.alice }),
    garbage: await refusal("alice", { room: "arena", token: "not.a.jwt" }),
  };
  const alice = await connect(url, "alice", { room: "arena", token: tokens.alice });
  out.room = alice.room;
  const seen = (type) => new Promise((resolve) => {
    alice.addEventListener(type, (e) => { if (e.detail.name === "viewer") resolve(e.detail); });
  });
  const joined = seen("joined"), left = seen("left");
  const viewer = await connect(url, "viewer", { room: "arena", token: tokens.viewer });
  await joined;
  const message = new Promise((resolve) => viewer.addEventListener("message", (e) => resolve(e.detail.text)));
  alice.send("the show");
  out.viewerGot = await message;
  viewer.send("heckle");
  const status = await viewer.closed;
  out.viewerStatus = `${status.kind}: ${status.reason?.name}`;
  out.aliceSaw = (await left).reason.name;
  alice.close();
  return out;
}

test("join tokens from relais.js: a minted one joins, others are refused by name (Chromium, real server)",
  { timeout: 120_000 }, async (t) => {
    const secret = join(tmpdir(), `relais-e2e-secret-${process.pid}`);
    writeFileSync(secret, "e2e secret, at least 32 bytes long\n");
    const server = relais(["serve", "--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0", "--web",
      "--token-secret-file", secret]);
    const cleanups = [() => rmSync(secret, { force: true }),
      async () => { server.child.kill("SIGTERM"); await server.exited; }];
    t.after(async () => { for (const cleanup of cleanups.reverse()) await cleanup(); });
    const webUrl = (await server.expectLine(/^relais web on http:\/\//)).split(" ").pop();
    const tokens = {
      alice: mintToken(["--secret-file", secret, "--name", "alice", "--room", "arena", "--ttl", "10m"]),
      viewer: mintToken(["--secret-file", secret, "--name", "viewer", "--room-prefix", "ar", "--read-only"]),
    };

    const browser = await launchChromium();
    cleanups.push(() => browser.close());
    const page = await browser.newPage();
    page.on("pageerror", (err) => console.error(`page error: ${err.message}`));
    await page.goto(new URL("/relais.js", webUrl).href);
    const out = await page.evaluate(tokenScenario, { tokens });
    assert.deepEqual(out, {
      none: "token-required",
      someoneElses: "not-allowed",
      otherRoom: "not-allowed",
      garbage: "token-invalid",
      room: "arena",
      viewerGot: "the show",
      viewerStatus: "goodbye: read-only",
      aliceSaw: "read-only",
    });
  });
