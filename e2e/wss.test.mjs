// TLS in a real browser: `relais serve --web --tls-cert … --tls-key …` with a
// certificate from a test CA made here with the `openssl` command; headless
// Chromium loads the demo page over https:// and joins over wss:// with
// relais.js, and a Rust client (`relais chat --ca`) in the same room relays
// messages both ways over TLS.
//
// Chromium is told to trust exactly the server's key
// (`--ignore-certificate-errors-spki-list`, the SHA-256 of its
// SubjectPublicKeyInfo), the closest to a test CA it takes without an NSS
// database; the Rust client verifies against the CA itself.
//
//   cargo build -p relais-cli && (cd e2e && npm ci) && node --test e2e/wss.test.mjs
//
// Environment: see support.mjs; needs `openssl` (Debian's openssl package).

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchChromium, PATIENCE, relais } from "./support.mjs";

/** A CA and a server certificate for localhost and 127.0.0.1, in `dir`. */
function makeCertificates(dir) {
  const openssl = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
    "-subj", "/CN=relais e2e test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
  openssl("req", ...ec, "-keyout", "key.pem", "-out", "server.csr", "-subj", "/CN=localhost");
  writeFileSync(join(dir, "server.ext"), [
    "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "basicConstraints=CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=serverAuth",
  ].join("\n"));
  openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "cert.pem", "-days", "2", "-extfile", "server.ext");
  const cert = new X509Certificate(readFileSync(join(dir, "cert.pem")));
  const spki = cert.publicKey.export({ type: "spki", format: "der" });
  return {
    ca: join(dir, "ca.pem"),
    cert: join(dir, "cert.pem"),
    key: join(dir, "key.pem"),
    spkiSha256: createHash("sha256").update(spki).digest("base64"),
  };
}

/** Runs in the page: joins over wss:// with relais.js, sends, waits for the Rust client. */
async function joinOverWss({ room, patience }) {
  const { connect } = await import("/relais.js");
  const url = `wss://${location.host}/ws`;
  const client = await connect(url, "browser", { room, echo: false });
  const members = [...client.members];
  const deadline = Date.now() + patience;
  // The Rust client answers our message (it is typed into its stdin by the
  // test once it has printed ours); keep saying it until the answer comes.
  let answer;
  while (!answer) {
    if (Date.now() > deadline) throw new Error("no answer from the Rust client");
    client.send("hello from wss");
    await new Promise((r) => setTimeout(r, 50));
    for (let m; (m = client.recv());) if (m.sender === "rusty") answer = m.text;
  }
  client.close();
  return { url, members, answer, protocol: location.protocol };
}

test("Chromium joins over wss:// and relays with a Rust client over TLS", { timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "relais-wss-"));
  const cleanups = [() => rmSync(dir, { recursive: true, force: true })];
  t.after(async () => { for (const cleanup of cleanups.reverse()) await cleanup(); });
  const pki = makeCertificates(dir);

  const server = relais(["serve", "--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0", "--web",
    "--tls-cert", pki.cert, "--tls-key", pki.key]);
  cleanups.push(async () => { server.child.kill("SIGTERM"); await server.exited; });
  const tcpPort = (await server.expectLine(/^relais listening on /)).split(":").pop();
  const webUrl = (await server.expectLine(/^relais web on https:\/\//)).split(" ").pop();
  // The certificate names localhost, not 127.0.0.1's printed form: use the name.
  const origin = `https://localhost:${new URL(webUrl).port}`;
  const room = `wss-${process.pid}`;

  // The Rust client, verifying the server against the test CA.
  const rust = relais(["chat", "--name", "rusty", "--room", room, "--server", `localhost:${tcpPort}`, "--ca", pki.ca]);
  cleanups.push(async () => { rust.child.stdin.end(); await rust.exited; });

  const browser = await launchChromium([`--ignore-certificate-errors-spki-list=${pki.spkiSha256}`]);
  cleanups.push(() => browser.close());
  const page = await browser.newPage();
  page.on("pageerror", (err) => console.error(`page error: ${err.message}`));

  // The demo page itself over https, connected over wss.
  await page.goto(`${origin}/?room=${room}&name=demo`);
  await page.waitForFunction(() => window.relaisDemo?.connected, null, { timeout: PATIENCE, polling: 50 });

  // relais.js over wss://, and the Rust client over TLS, in one room.
  const joined = page.evaluate(joinOverWss, { room, patience: PATIENCE });
  await rust.expectLine(/^browser: hello from wss$/, "the browser's message on the Rust client");
  rust.child.stdin.write("hello from rust\n");
  const r = await joined;
  assert.equal(r.protocol, "https:");
  assert.equal(r.url, `wss://localhost:${new URL(webUrl).port}/ws`);
  assert.ok(r.members.includes("rusty") && r.members.includes("demo"), `members: ${r.members}`);
  assert.equal(r.answer, "hello from rust");
});
