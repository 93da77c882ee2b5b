// Real-browser end-to-end test of the demo page: `relais serve --web`, two
// headless Chromium pages and a Rust client (`relais chat`) in one room.
// Each page must show the two other players, and their dots must follow
// their mice (the Rust client's "mouse" is the JSON it types).
//
//   cargo build -p relais-cli && (cd e2e && npm ci) && node --test e2e/demo.test.mjs
//
// Environment: see support.mjs. Writes e2e/screenshot.png.

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { here, launchChromium, PATIENCE, relais } from "./support.mjs";

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

  const open = async (name) => {
    const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
    page.on("pageerror", (err) => console.error(`[${name}] page error: ${err.message}`));
    await page.goto(`${webUrl}?room=${room}&name=${name}`);
    await until(page, `${name} connects`, () => window.relaisDemo?.connected);
    return page;
  };
  const a = await open("page-a");
  const b = await open("page-b");

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
