// The relais live demo (index.html): each page is a player whose dot follows
// its mouse or finger, sent 60 times a second to the room; relais relays each
// player's newest position to everyone. Served by `relais serve --web` with a
// strict Content-Security-Policy, hence this file rather than inline script.
//
// URL parameters: ?room=NAME (the share link), ?name=NAME, ?token=JWT (for a
// server that requires join tokens), ?server=ws://… (another endpoint; the
// served page's policy allows only its own host).

import { connect, RefusedError } from "./relais.js";

const params = new URLSearchParams(location.search);
const token = params.get("token") ?? undefined;
const server = params.get("server") ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const randomName = () => `player-${Math.random().toString(36).slice(2, 6)}`;

// What the page knows, exposed for tests and the curious (devtools).
// `connection` is "idle", "connecting", "connected", "reconnecting" or "closed".
const state = window.relaisDemo = {
  name: null, room: null, connected: false, connection: "idle", error: null, formError: null,
  members: [], players: {}, msgsPerSec: 0, skippedPerSec: 0, rttMs: null, sent: 0, received: 0,
  bots: [],
};

const $ = (id) => document.getElementById(id);
const canvas = $("stage");
const ctx = canvas.getContext("2d");
const panel = $("panel");
const nameInput = $("name");
const roomInput = $("room-input");

// ---- Names: checked here like the server does (PROTOCOL.md section 7) ----

const encoder = new TextEncoder();
/** Why `value` is not an acceptable name (or room), or null. The server has the last word. */
function nameProblem(value, what) {
  const s = value.normalize("NFC");
  if (s === "") return `The ${what} is empty.`;
  const bytes = encoder.encode(s).length;
  if (bytes > 64) return `The ${what} is ${bytes} bytes long (UTF-8); at most 64.`;
  if (/^[\s\u2800]|[\s\u2800]$/u.test(s)) return `The ${what} may not start or end with a space.`;
  if (!/[^\s\p{M}\u2800]/u.test(s)) return `The ${what} needs a visible character.`;
  if (/[\p{Cc}\p{Cf}\p{Co}\p{Cn}\u2028\u2029]/u.test(s)) return `The ${what} contains a control or invisible character.`;
  return null;
}

// ---- Colours and places, from the name ----

/** FNV-1a of the name. */
function hash(name) {
  let h = 0x811c9dc5;
  for (const c of name) h = Math.imul(h ^ c.codePointAt(0), 0x01000193) >>> 0;
  return h;
}
// Spread around the wheel by the golden angle, so similar names get distinct colours.
const color = (name) => `hsl(${Math.round((hash(name) % 1000) * 137.508) % 360} 80% 62%)`;
/** Where a player who has not moved yet stands: its own spot, not the centre. */
function spot(name) {
  const h = Math.imul(hash(name) ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  return { x: 0.15 + 0.7 * ((h & 0xffff) / 0xffff), y: 0.2 + 0.65 * ((h >>> 16) / 0xffff) };
}

// ---- The pointer ----

const pointer = { x: 0.5, y: 0.5, active: false };
// A finger on the panel is using the panel; a mouse over it still moves the dot.
const onPanel = (e) => e.pointerType !== "mouse" && panel.contains(e.target);
function setPointer(clientX, clientY) {
  pointer.x = Math.min(1, Math.max(0, clientX / window.innerWidth));
  pointer.y = Math.min(1, Math.max(0, clientY / window.innerHeight));
  pointer.active = true;
}
window.addEventListener("pointermove", (e) => { if (!onPanel(e)) setPointer(e.clientX, e.clientY); });
window.addEventListener("pointerdown", (e) => { if (!onPanel(e)) setPointer(e.clientX, e.clientY); });
window.addEventListener("touchmove", (e) => {
  if (onPanel(e)) return; // the panel scrolls
  const t = e.touches[0];
  if (t) setPointer(t.clientX, t.clientY);
  e.preventDefault();
}, { passive: false });

// ---- Joining ----

let client = null;
let joining = 0; // the current join; older ones' results are dropped
const rttSamples = [];
const arrivals = [];
const conflations = [];

/** Forgets what the screen shows of the last connection (no stale numbers). */
function resetNumbers() {
  arrivals.length = 0;
  rttSamples.length = 0;
  conflations.length = 0;
  state.msgsPerSec = 0;
  state.skippedPerSec = 0;
  state.rttMs = null;
}

function setConnection(connection) {
  state.connection = connection;
  state.connected = connection === "connected";
  if (!state.connected) resetNumbers();
  document.body.classList.toggle("stale", !state.connected);
}

function showFormError(message, input) {
  state.formError = message;
  for (const i of [nameInput, roomInput]) i.setAttribute("aria-invalid", String(i === input));
  if (input) { input.focus(); input.select(); }
}

function onState(e) {
  setConnection(e.state);
  if (!client) return;
  state.members = client.members;
  if (e.state === "connected") {
    state.error = null;
    for (const n of Object.keys(state.players)) if (!state.members.includes(n)) delete state.players[n];
  } else if (e.state === "closed") {
    const s = e.status;
    state.error = s.kind === "closed" ? null
      : `Disconnected (${s.reason?.name ?? s.kind}${s.text ? `: ${s.text}` : ""}). Press Join to try again.`;
  }
}

function onEvent(e) {
  if (e.type === "message") {
    const now = performance.now();
    arrivals.push(now);
    state.received++;
    if (e.sender === client.name) {
      // Our own echo: the round trip (the payload carries the send time).
      try {
        const t = JSON.parse(e.text).t;
        if (typeof t === "number") {
          rttSamples.push(now - t);
          if (rttSamples.length > 120) rttSamples.shift();
        }
      } catch { /* not ours to judge */ }
    }
  } else if (e.type !== "close") {
    state.members = client.members;
  }
}

async function join(name, room) {
  const problem = nameProblem(name, "name");
  if (problem) return showFormError(problem, nameInput);
  const roomProblem = room === "" ? null : nameProblem(room, "room");
  if (roomProblem) return showFormError(roomProblem, roomInput);
  showFormError(null, null);
  const mine = ++joining;
  stopBots();
  // Joining again under the same name: the server may not have handled the
  // old connection's goodbye yet when the new one asks for the name.
  const rejoin = client && client.name === name && client.room === (room || "lobby");
  if (client) { client.close(); client = null; }
  state.players = {};
  state.members = [];
  state.error = null;
  state.name = name;
  state.room = room || "lobby";
  if (!pointer.active) Object.assign(pointer, spot(name));
  const options = { room, echo: true, token, receive: "latest",
    onstatechange: (e) => { if (mine === joining) onState(e); } };
  try {
    let c;
    for (let attempt = 1; !c; attempt++) {
      try {
        c = await connect(server, name, options);
      } catch (err) {
        const taken = err instanceof RefusedError && err.reason.name === "name-taken";
        if (!(taken && rejoin && attempt < 10 && mine === joining)) throw err;
        await new Promise((r) => setTimeout(r, 50 * attempt));
      }
    }
    if (mine !== joining) { c.close(); return; }
    client = c;
    c.onevent = onEvent;
    state.name = c.name;
    state.room = c.room;
    state.members = c.members;
    nameInput.value = c.name;
    roomInput.value = c.room;
    setConnection(c.state);
    sessionStorage.setItem("relais-demo-name", name);
    // The address bar names the room (what to share), not the player.
    const url = new URL(location.href);
    url.searchParams.set("room", c.room);
    url.searchParams.delete("name");
    history.replaceState(null, "", url);
    $("share").value = shareLink(c.room);
  } catch (err) {
    if (mine !== joining) return;
    setConnection("closed");
    state.name = null;
    const where = room || "lobby";
    if (err instanceof RefusedError && err.reason.name === "name-taken") {
      showFormError(`The name “${name}” is already taken in room “${where}”. Pick another name and press Join.`, nameInput);
    } else if (err instanceof RefusedError && err.reason.name === "invalid-name") {
      showFormError(`The server refused this name: ${err.text}. Pick another.`, nameInput);
    } else if (err instanceof RefusedError && err.reason.name === "invalid-room") {
      showFormError(`The server refused this room: ${err.text}. Pick another.`, roomInput);
    } else {
      state.error = `Could not join: ${err.message ?? err}. Press Join to try again.`;
    }
  }
}

const shareLink = (room) => {
  const url = new URL(location.pathname, location.origin);
  url.searchParams.set("room", room);
  if (params.has("server")) url.searchParams.set("server", params.get("server"));
  return url.href;
};

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  join(nameInput.value, roomInput.value);
});
for (const input of [nameInput, roomInput]) {
  input.addEventListener("input", () => { if (state.formError) showFormError(null, null); });
}
$("copy").addEventListener("click", async () => {
  const share = $("share");
  try {
    await navigator.clipboard.writeText(share.value);
    $("copy").textContent = "Copied";
  } catch {
    share.select(); // no clipboard access (plain http): selected for copying by hand
  }
  setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
});

// ---- Bots: latest wins at work ----

const BOTS = 4;
const BOT_INTERVAL_MS = 10; // 100 updates a second each
let botTimers = [];
let botClients = [];

async function startBots() {
  if (!client || client.status) return;
  const button = $("bots");
  button.disabled = true;
  const tag = Math.random().toString(36).slice(2, 5);
  try {
    for (let i = 1; i <= BOTS; i++) {
      const c = await connect(server, `bot-${tag}${i}`, { room: client.room, token, receive: "latest", queueSize: 1 });
      botClients.push(c);
      state.bots.push(c.name);
      const phase = (i / BOTS) * Math.PI * 2, speed = 1.6 + i * 0.35;
      botTimers.push(setInterval(() => {
        const t = performance.now() / 1000;
        const x = 0.5 + 0.36 * Math.cos(speed * t + phase), y = 0.5 + 0.3 * Math.sin(2 * speed * t + phase);
        if (!c.status) c.send(JSON.stringify({ x: +x.toFixed(4), y: +y.toFixed(4) }));
        while (c.recvEvent()) { /* bots read nothing */ }
      }, BOT_INTERVAL_MS));
    }
    button.textContent = "Remove bots";
    $("bots-help").hidden = false;
  } catch (err) {
    stopBots();
    state.error = `Could not start the bots: ${err.message ?? err}`;
  } finally {
    button.disabled = false;
  }
}

function stopBots() {
  for (const t of botTimers) clearInterval(t);
  for (const c of botClients) c.close();
  botTimers = [];
  botClients = [];
  state.bots = [];
  $("bots").textContent = `Spawn ${BOTS} bots`;
  $("bots-help").hidden = true;
}

$("bots").addEventListener("click", () => (botClients.length ? stopBots() : startBots()));
window.addEventListener("pagehide", () => { stopBots(); client?.close(); });

// ---- Each frame: send, take the newest positions, draw ----

function takeEvents(now) {
  if (!client) return;
  // "latest" mode: at most one waiting message per player, its newest.
  for (let e; (e = client.recvEvent());) {
    if (e.type === "left") { delete state.players[e.name]; continue; }
    if (e.type !== "message") continue;
    let pos;
    try { pos = JSON.parse(e.text); } catch { continue; }
    if (typeof pos?.x !== "number" || typeof pos?.y !== "number") continue;
    const p = state.players[e.sender];
    if (p) { p.tx = pos.x; p.ty = pos.y; p.updates++; p.seen = now; }
    else state.players[e.sender] = { x: pos.x, y: pos.y, tx: pos.x, ty: pos.y, updates: 1, seen: now };
  }
}

let last = performance.now();
function frame(now) {
  const dt = Math.min(0.1, (now - last) / 1000);
  last = now;
  if (client && !client.status) {
    // The send time, not the frame's timestamp (which can be a few ms older).
    // While reconnecting, relais.js keeps the newest and sends it once back.
    const t = +performance.now().toFixed(2);
    client.send(JSON.stringify({ x: +pointer.x.toFixed(4), y: +pointer.y.toFixed(4), t }));
    if (state.connected) state.sent++;
  }
  takeEvents(now);
  if (state.connected) {
    while (arrivals.length && arrivals[0] < now - 1000) arrivals.shift();
    state.msgsPerSec = arrivals.length;
    conflations.push([now, client.stats.recvConflated]);
    while (conflations.length > 1 && conflations[0][0] < now - 1000) conflations.shift();
    state.skippedPerSec = conflations.at(-1)[1] - conflations[0][1];
    if (rttSamples.length) {
      const sorted = rttSamples.slice().sort((a, b) => a - b);
      state.rttMs = sorted[sorted.length >> 1];
    }
  }
  draw(dt);
  renderPanel();
  requestAnimationFrame(frame);
}

function draw(dt) {
  const dpr = window.devicePixelRatio || 1;
  const w = window.innerWidth, h = window.innerHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  // Exponential smoothing toward the latest position: frame-rate independent.
  const k = 1 - Math.exp(-dt * 18);
  const dim = state.connected ? 1 : 0.3;
  ctx.font = "13px system-ui, sans-serif";
  const label = (name, x, y) => {
    const text = name === state.name ? `${name} (you)` : name;
    const right = x + 16 + ctx.measureText(text).width < w;
    ctx.fillStyle = "#e8eaf0";
    ctx.textAlign = right ? "left" : "right";
    ctx.fillText(text, right ? x + 16 : x - 16, y + 4);
  };
  // Members without a position yet (e.g. a native client that has not sent): a ring at their spot.
  for (const name of state.members) {
    if (state.players[name] || name === state.name) continue;
    const s = spot(name), x = s.x * w, y = s.y * h;
    ctx.globalAlpha = 0.6 * dim;
    ctx.beginPath();
    ctx.arc(x, y, 10, 0, Math.PI * 2);
    ctx.strokeStyle = color(name);
    ctx.lineWidth = 2;
    ctx.stroke();
    label(name, x, y);
  }
  for (const [name, p] of Object.entries(state.players)) {
    p.x += (p.tx - p.x) * k;
    p.y += (p.ty - p.y) * k;
    const x = p.x * w, y = p.y * h, me = name === state.name;
    ctx.globalAlpha = (me ? 0.55 : 1) * dim;
    ctx.beginPath();
    ctx.arc(x, y, me ? 9 : 12, 0, Math.PI * 2);
    ctx.fillStyle = color(name);
    ctx.fill();
    ctx.globalAlpha = dim;
    label(name, x, y);
  }
  ctx.globalAlpha = 1;
  if (pointer.active) {
    ctx.beginPath();
    ctx.arc(pointer.x * w, pointer.y * h, 4, 0, Math.PI * 2);
    ctx.strokeStyle = "#e8eaf0";
    ctx.lineWidth = 1;
    ctx.stroke();
  }
  if (!state.connected && state.connection !== "idle") {
    const text = { connecting: "connecting…", reconnecting: "connection lost: reconnecting…", closed: "disconnected" }[state.connection];
    ctx.font = "600 18px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillStyle = "#e8eaf0";
    ctx.fillText(text, w / 2, h / 2);
  }
}

// ---- The panel (DOM writes only when something changed) ----

const shown = new Map();
function setText(id, text) {
  if (shown.get(id) === text) return;
  shown.set(id, text);
  $(id).textContent = text;
}
let shownMembers = "";
const connText = { idle: "not joined", connecting: "connecting…", connected: "connected", reconnecting: "reconnecting…", closed: "closed" };

function renderPanel() {
  const live = state.connected;
  if (shown.get("conn") !== state.connection) {
    shown.set("conn", state.connection);
    $("conn").setAttribute("data-state", state.connection);
  }
  setText("conn-text", connText[state.connection]);
  setText("rate", live ? String(state.msgsPerSec) : "–");
  setText("skipped", live ? String(state.skippedPerSec) : "–");
  setText("rtt", live && state.rttMs != null ? `${state.rttMs.toFixed(1)} ms` : "–");
  setText("count", live ? String(state.members.length) : "–");
  setText("form-error", state.formError ?? "");
  setText("error", state.error ?? "");
  const members = live ? state.members.join("\n") : "";
  if (members !== shownMembers) {
    shownMembers = members;
    $("players").replaceChildren(...(live ? state.members : []).map((n) => {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "sw";
      sw.style.background = color(n);
      li.append(sw, document.createTextNode(n === state.name ? `${n} (you)` : n));
      return li;
    }));
  }
}

// Phones: the panel starts collapsed (its header still shows the connection).
if (window.matchMedia("(max-width: 600px)").matches) panel.open = false;

nameInput.value = params.get("name") ?? sessionStorage.getItem("relais-demo-name") ?? randomName();
roomInput.value = params.get("room") ?? "";
$("share").value = shareLink(roomInput.value || "lobby");
requestAnimationFrame(frame);
setConnection("connecting");
join(nameInput.value, roomInput.value);
