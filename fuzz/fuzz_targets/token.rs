//! The server's join-token verifier on arbitrary tokens and on edits of
//! tokens it accepts (input format: `src/token.rs`). Besides never
//! panicking:
//!
//! - nothing verifies but the exact token the harness minted for that key
//!   (any edit of it, a base64 variant of its signature included, is
//!   refused), and that one verifies whenever the time is within its `nbf`
//!   and `exp` give or take the leeway;
//! - a refusal text never contains a JWT-shaped token (two dots).

#![no_main]

use libfuzzer_sys::fuzz_target;
use relais_fuzz::token::{case, harness, EXP, NAME, NBF, ROOM};
use relais_server::auth::LEEWAY_SECS;

fuzz_target!(|data: &[u8]| {
    let Some(case) = case(data) else {
        return;
    };
    let h = harness();
    let minted = &h.minted[case.key];
    let verdict = h.verifiers[case.key].verify(&case.token, NAME, ROOM, case.now);
    let in_time = NBF <= case.now + LEEWAY_SECS && case.now <= EXP + LEEWAY_SECS;
    match verdict {
        Ok(grant) => {
            assert_eq!(
                &case.token, minted,
                "a token the harness did not mint verified"
            );
            assert!(in_time, "verified at {} outside its time", case.now);
            assert!(!grant.read_only);
        }
        Err(e) => {
            assert!(
                !(case.token == *minted && in_time),
                "the minted token was refused in time: {e}"
            );
            let _ = e.refuse_reason();
            if case.token.matches('.').count() == 2 {
                assert!(!e.to_string().contains(&case.token), "{e}");
            }
        }
    }
});
