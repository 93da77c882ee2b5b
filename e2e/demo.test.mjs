// Real-browser end-to-end tests of the demo page (`relais serve --web`, headless
// Chromium):
// - two pages and a Rust client (`relais chat`) in one room: each page shows
//   the two other players, and their dots follow their mice (the Rust
//   client's "mouse" is the JSON it types);
// - the server is killed and started again on the same port: the pages say
//   they are reconnecting (no stale numbers), reconnect by themselves, say so,
//   and movement flows again;
// - a taken name gets a clear message and the user picks another; a name of
//   one space is refused before connecting;
// - the page loads with no console error and no failed request (its
//   Content-Security-Policy holds, the icon is served); on a phone the panel
//   starts collapsed and small; the bots make latest-wins visible.
//
//   cargo build -p relais-cli && (cd e2e && npm ci) && node --test e2e/demo.test.mjs
//
// Environment: see support.mjs. Writes e2e/screenshot.png.

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { here, launchChromium, PATIENCE, relais } from "./support.mjs";

/** `relais serve --web` on ephemeral ports (or the WebSocket port `wsPort`). */
async function serve(wsPort = 0) {
  const server = relais(["serve", "--listen", "127.0.0.1:0", "--ws-listen", `127.0.0.1:${wsPort}`, "--web"]);
  const webUrl = (await server.expectLine(/^relais web on http:\/\//)).split(" ").pop();
  return { server, webUrl };
}

/** Opens the demo as `name` in `room` and waits until it is connected. */
async function openDemo(browser, webUrl, room, name, viewport = { width: 900, height: 600 }) {
  const page = await browser.newPage({ viewport });
  page.on("pageerror", (err) => console.error(`[${name}] page error: ${err.message}`));
  await page.goto(`${webUrl}?room=${room}&name=${name}`);
  await until(page, `${name} connects`, () => window.relaisDemo?.connected);
  return page;
}

/** Waits until `fn(arg)` is truthy in the page; fails with `what`. */
async function until(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: PATIENCE, polling: 50 });
  } catch (err) {
    const state = await page.evaluate(() => JSON.stringify(window.relaisDemo));
    throw new Error(`${what}: not within ${PATIENCE} ms; page state: ${state}`, { cause: err });
  }
}

const position = (page, name) => page.evaluate((n) => {
  const p = window.relaisDemo.players[n];
  return p && { x: p.tx, y: p.ty, updates: p.updates };
}, name);

test("two browser pages and a Rust client see each other move", { timeout: 120_000 }, async (t) => {
  const server = relais(["serve", "--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0", "--web"]);
  // Cleanups, run in this order whatever happens: pages, Rust client, server.
  const cleanups = [];
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });
  cleanups.push(async () => {
    server.child.kill("SIGTERM");
    await server.exited;
  });
  const tcpAddr = (await server.expectLine(/^relais listening on /)).split(" ").pop();
  const webUrl = (await server.expectLine(/^relais web on http:\/\//)).split(" ").pop();
  const room = `e2e-${process.pid}`;

  const browser = await launchChromium();
  cleanups.push(() => browser.close());

  const a = await openDemo(browser, webUrl, room, "page-a");
  const b = await openDemo(browser, webUrl, room, "page-b");

  // The Rust participant: a chat client whose typed lines are positions.
  const rust = relais(["chat", "--name", "rusty", "--room", room, "--server", tcpAddr]);
  cleanups.push(async () => {
    rust.child.stdin.end();
    await rust.exited;
  });
  let angle = 0;
  const typeRust = () => {
    angle += 0.3;
    const x = 0.5 + 0.3 * Math.cos(angle), y = 0.5 + 0.3 * Math.sin(angle);
    rust.child.stdin.write(`${JSON.stringify({ x: +x.toFixed(4), y: +y.toFixed(4) })}\n`);
  };
  // Bounded: at most PATIENCE worth of typing at 20 lines a second.
  let typed = 0;
  const typing = setInterval(() => { if (++typed < PATIENCE / 50) typeRust(); }, 50);
  cleanups.push(() => clearInterval(typing));

  // Each page moves its mouse.
  await a.mouse.move(200, 150, { steps: 5 });
  await b.mouse.move(700, 450, { steps: 5 });

  // Every page sees the other page and the Rust client, as members and as dots.
  for (const [page, me, other] of [[a, "page-a", "page-b"], [b, "page-b", "page-a"]]) {
    await until(page, `${me} lists ${other} and rusty`,
      (names) => names.every((n) => window.relaisDemo.members.includes(n)), [other, "rusty"]);
    await until(page, `${me} draws ${other} and rusty`,
      (names) => names.every((n) => window.relaisDemo.players[n]), [other, "rusty"]);
  }
  // The Rust client sees both pages' positions.
  await rust.expectLine(/^page-a: \{"x":/, "page-a's position on the Rust client");
  await rust.expectLine(/^page-b: \{"x":/, "page-b's position on the Rust client");

  // Positions move: move each mouse somewhere else and watch the other page.
  const before = await position(a, "page-b");
  await b.mouse.move(120, 500, { steps: 8 });
  await until(a, "page-a sees page-b move to the left",
    () => window.relaisDemo.players["page-b"].tx < 0.2);
  await a.mouse.move(800, 80, { steps: 8 });
  await until(b, "page-b sees page-a move to the top right",
    () => window.relaisDemo.players["page-a"].tx > 0.8 && window.relaisDemo.players["page-a"].ty < 0.2);
  const after = await position(a, "page-b");
  assert.notDeepEqual({ x: after.x, y: after.y }, { x: before.x, y: before.y });
  // And the Rust client's dot moves on both pages.
  for (const page of [a, b]) {
    const r0 = await position(page, "rusty");
    await until(page, "rusty's dot moves",
      (p0) => { const p = window.relaisDemo.players.rusty; return p.tx !== p0.x || p.ty !== p0.y; }, r0);
  }

  // Once the page has measured its round trip, record what a person would see.
  await until(a, "page-a measures its round trip", () => window.relaisDemo.rttMs != null);
  const stats = await a.evaluate(() => ({ rttMs: window.relaisDemo.rttMs, msgsPerSec: window.relaisDemo.msgsPerSec }));
  console.log(`page-a: round trip ${stats.rttMs?.toFixed(2)} ms (median of its echoes), ${stats.msgsPerSec} messages/s received`);
  assert.ok(stats.rttMs != null && stats.rttMs >= 0, "the page measures its round trip");
  await a.screenshot({ path: join(here, "screenshot.png") });
});

test("the demo reconnects by itself after the server is killed and restarted on its port", { timeout: 120_000 }, async (t) => {
  let { server, webUrl } = await serve();
  const cleanups = [async () => { server.child.kill("SIGTERM"); await server.exited; }];
  t.after(async () => { for (const cleanup of cleanups.reverse()) await cleanup(); });
  const port = new URL(webUrl).port;
  const room = `restart-${process.pid}`;
  const browser = await launchChromium();
  cleanups.push(() => browser.close());
  const a = await openDemo(browser, webUrl, room, "page-a");
  const b = await openDemo(browser, webUrl, room, "page-b");
  await b.mouse.move(700, 150, { steps: 4 });
  await until(a, "page-a sees page-b at the top right", () => window.relaisDemo.players["page-b"]?.tx > 0.7);
  await until(a, "page-a shows numbers", () => document.getElementById("rate").textContent !== "–");

  // The server dies (no goodbye): the page says so and shows no stale numbers.
  server.child.kill("SIGKILL");
  await server.exited;
  for (const [page, me] of [[a, "page-a"], [b, "page-b"]]) {
    await until(page, `${me} shows it is reconnecting`, () => window.relaisDemo.connection === "reconnecting"
      && document.getElementById("conn").getAttribute("data-state") === "reconnecting"
      && document.getElementById("conn-text").textContent === "reconnecting…"
      && ["rate", "skipped", "rtt", "count"].every((id) => document.getElementById(id).textContent === "–"));
  }

  // A new server on the same port: both pages come back by themselves.
  ({ server } = await serve(port));
  for (const [page, me] of [[a, "page-a"], [b, "page-b"]]) {
    await until(page, `${me} shows it is connected again`, () => window.relaisDemo.connected
      && document.getElementById("conn-text").textContent === "connected"
      && window.relaisDemo.members.includes("page-a") && window.relaisDemo.members.includes("page-b"));
  }
  await b.mouse.move(150, 500, { steps: 6 });
  await until(a, "page-a sees page-b move to the bottom left after the restart",
    () => window.relaisDemo.players["page-b"]?.tx < 0.2 && window.relaisDemo.players["page-b"]?.ty > 0.8);
  await a.mouse.move(800, 500, { steps: 6 });
  await until(b, "page-b sees page-a move after the restart", () => window.relaisDemo.players["page-a"]?.tx > 0.85);
  await until(a, "page-a shows live numbers again", () => /^\d+$/.test(document.getElementById("rate").textContent)
    && document.getElementById("count").textContent === "2");
});

test("the demo: a taken name, a blank name, no console error, a phone, players apart, the bots", { timeout: 120_000 }, async (t) => {
  const { server, webUrl } = await serve();
  const cleanups = [async () => { server.child.kill("SIGTERM"); await server.exited; }];
  t.after(async () => { for (const cleanup of cleanups.reverse()) await cleanup(); });
  const room = `form-${process.pid}`;
  const browser = await launchChromium();
  cleanups.push(() => browser.close());
  const a = await openDemo(browser, webUrl, room, "dup");

  await t.test("a taken name: a clear message, the user picks another", async () => {
    const b = await browser.newPage({ viewport: { width: 900, height: 600 } });
    await b.goto(`${webUrl}?room=${room}&name=dup`);
    await until(b, "page b says the name is taken", () => window.relaisDemo.connection === "closed"
      && /name “dup” is already taken in room “form-\d+”. Pick another name/.test(document.getElementById("form-error").textContent));
    assert.equal(await b.inputValue("#name"), "dup", "not silently replaced");
    assert.equal(await b.getAttribute("#name", "aria-invalid"), "true");
    assert.equal(await b.evaluate(() => window.relaisDemo.name), null);

    // One space: refused by the page, no connection tried.
    await b.fill("#name", " ");
    await b.click("#join-button");
    await until(b, "page b refuses a blank name",
      () => document.getElementById("form-error").textContent === "The name may not start or end with a space.");
    for (const [name, problem] of [["", "The name is empty."], [" dup", "The name may not start or end with a space."],
      ["x".repeat(65), "The name is 65 bytes long (UTF-8); at most 64."], ["\u0301", "The name needs a visible character."]]) {
      await b.fill("#name", name);
      await b.click("#join-button");
      await until(b, `page b refuses ${JSON.stringify(name)}`, (p) => document.getElementById("form-error").textContent === p, problem);
    }
    assert.equal(await b.evaluate(() => window.relaisDemo.connection), "closed");

    await b.fill("#name", "dup-2");
    await b.click("#join-button");
    await until(b, "page b joins as dup-2", () => window.relaisDemo.connected && window.relaisDemo.name === "dup-2"
      && document.getElementById("form-error").textContent === "");
    await until(a, "page a lists dup-2", () => window.relaisDemo.members.includes("dup-2"));
    // The address bar names the room, not the player; the share link the room only.
    const url = new URL(b.url());
    assert.deepEqual([...url.searchParams], [["room", room]]);
    assert.equal(await b.inputValue("#share"), `${new URL(webUrl).origin}/?room=${room}`);
    await b.close();
  });

  await t.test("no console error, no failed request, the policy served", async () => {
    const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
    const problems = [];
    page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`); });
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    page.on("requestfailed", (r) => problems.push(`failed: ${r.url()} ${r.failure()?.errorText}`));
    page.on("response", (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
    const response = await page.goto(`${webUrl}?room=${room}&name=clean`);
    assert.match(response.headers()["content-security-policy"], /script-src 'self'; style-src 'self';.*connect-src 'self' ws:\/\/127\.0\.0\.1:\d+/);
    await until(page, "the clean page connects", () => window.relaisDemo.connected);
    await until(page, "the page draws others", () => window.relaisDemo.players.dup);
    // The icon was asked for and served (not a 404).
    assert.equal(await page.evaluate(async () => (await fetch(document.querySelector("link[rel=icon]").href)).status), 200);
    assert.deepEqual(problems, []);
    // And the policy is in force: an inline script does not run (and is reported).
    const blocked = page.waitForEvent("console", { predicate: (m) => /Content Security Policy/.test(m.text()), timeout: PATIENCE });
    assert.equal(await page.evaluate(() => {
      const script = document.createElement("script");
      script.textContent = "window.inlineRan = true";
      document.head.append(script);
      return window.inlineRan ?? false;
    }), false);
    await blocked;
    await page.close();
  });

  await t.test("a phone: the panel starts collapsed and small, and opens", async () => {
    const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true });
    await phone.goto(`${webUrl}?room=${room}&name=phone`);
    await until(phone, "the phone connects", () => window.relaisDemo.connected);
    const area = () => phone.evaluate(() => {
      const r = document.getElementById("panel").getBoundingClientRect();
      return (r.width * r.height) / (window.innerWidth * window.innerHeight);
    });
    assert.equal(await phone.evaluate(() => document.getElementById("panel").open), false);
    const collapsed = await area();
    assert.ok(collapsed < 0.04, `collapsed, the panel covers ${(collapsed * 100).toFixed(1)} % of the screen`);
    assert.equal(await phone.textContent("#conn-text"), "connected", "the state shows when collapsed");
    await phone.tap("#panel summary");
    await until(phone, "the panel opens", () => document.getElementById("panel").open);
    const open = await area();
    assert.ok(open < 0.6, `open, the panel covers ${(open * 100).toFixed(1)} % of the screen`);
    await phone.tap("#panel summary");
    await until(phone, "the panel closes", () => !document.getElementById("panel").open);
    await phone.close();
  });

  await t.test("players who have not moved yet stand apart, not at the centre", async () => {
    const still = [await openDemo(browser, webUrl, room, "still-1"), await openDemo(browser, webUrl, room, "still-2")];
    await until(a, "page a draws both", () => window.relaisDemo.players["still-1"] && window.relaisDemo.players["still-2"]);
    const [p, q] = await a.evaluate(() => ["still-1", "still-2"].map((n) => window.relaisDemo.players[n]));
    assert.ok(Math.hypot(p.tx - q.tx, p.ty - q.ty) > 0.05, `apart: ${JSON.stringify([p, q])}`);
    for (const r of [p, q]) assert.ok(Math.hypot(r.tx - 0.5, r.ty - 0.5) > 0.01, `not at the centre: ${JSON.stringify(r)}`);
    for (const page of still) await page.close();
  });

  await t.test("bots: four connections moving fast; the page skips stale positions", async () => {
    await a.click("#bots");
    await until(a, "four bots in the room, drawn", () => window.relaisDemo.bots.length === 4
      && window.relaisDemo.bots.every((n) => window.relaisDemo.members.includes(n) && window.relaisDemo.players[n]));
    assert.equal(await a.isVisible("#bots-help"), true, "says what to watch");
    await until(a, "skipped/s shows latest-wins at work", () => Number(document.getElementById("skipped").textContent) > 0);
    const bots = await a.evaluate(() => window.relaisDemo.bots.slice());
    await a.click("#bots");
    await until(a, "the bots are gone", (names) => names.every((n) => !window.relaisDemo.members.includes(n)), bots);
    assert.equal(await a.isVisible("#bots-help"), false);
  });
});
