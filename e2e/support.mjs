// What the browser tests share: the `relais` binary as a child process, and
// headless Chromium.
//
// Environment: RELAIS_BIN (default: debug/relais under CARGO_TARGET_DIR, or
// under target/), CHROMIUM (default /usr/bin/chromium).

import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, "..");
export const RELAIS = process.env.RELAIS_BIN
  ?? join(process.env.CARGO_TARGET_DIR ?? join(root, "target"), "debug/relais");
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** Upper bound on any single wait: a guard against hangs, not a way to wait. */
export const PATIENCE = 20_000;

/** Spawns `relais ARGS`; `expectLine` waits for a stdout line. */
export function relais(args) {
  const child = spawn(RELAIS, args, { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
  const seen = [];
  const waiters = [];
  createInterface({ input: child.stdout }).on("line", (line) => {
    seen.push(line);
    for (const w of waiters.slice()) if (w.test(line)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(line); }
  });
  /** Resolves with the first stdout line (past or future) matching `re`. */
  const expectLine = (re, what = String(re)) => new Promise((resolve, reject) => {
    const old = seen.find((l) => re.test(l));
    if (old) return resolve(old);
    const timer = setTimeout(() => reject(new Error(`no stdout line matching ${what}; saw:\n${seen.slice(-20).join("\n")}`)), PATIENCE);
    waiters.push({ test: (l) => re.test(l), resolve: (l) => { clearTimeout(timer); resolve(l); } });
  });
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  return { child, expectLine, exited, seen };
}

/**
 * Headless Chromium with a fresh temporary profile (Playwright's launch()
 * makes one and removes it on close); `args` are added to the usual flags.
 */
export function launchChromium(args = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
      ...args,
    ],
  });
}
