//! The browser end-to-end tests (`e2e/*.test.mjs`: the demo page, relais.js
//! in Node and in headless Chromium, its reconnection across a server
//! restart, `wss://` with a test CA), run against
//! this build's `relais` binary, so that `cargo test --workspace` is the
//! whole test suite.
//!
//! They need Node.js with npm, Chromium at /usr/bin/chromium (or `CHROMIUM`)
//! and openssl; `.ci/run` installs them from Debian's packages. Missing
//! tools fail this test with what to install: it never passes without
//! having run the browser tests.

use std::path::Path;
use std::process::Command;

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn browser_end_to_end_tests_pass() {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<&str> = [
        ("node", have("node")),
        ("npm", have("npm")),
        (
            "openssl",
            have("openssl") || Path::new("/usr/bin/openssl").exists(),
        ),
        ("chromium", Path::new(&chromium).exists()),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(name, _)| name)
    .collect();
    assert!(
        missing.is_empty(),
        "the browser tests need {missing:?}: `apt-get install chromium nodejs npm openssl` \
         (.ci/run does it)"
    );
    if !e2e.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&e2e)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci in e2e/ failed");
    }
    let status = Command::new("node")
        .args([
            "--test",
            "demo.test.mjs",
            "relais-js.test.mjs",
            "reconnect.test.mjs",
            "wss.test.mjs",
        ])
        .current_dir(&e2e)
        .env("RELAIS_BIN", env!("CARGO_BIN_EXE_relais"))
        .status()
        .expect("node runs");
    assert!(
        status.success(),
        "browser end-to-end tests failed (output above)"
    );
}
