//! `relais token`: mints a join token the way a game backend does, for
//! testing a server started with `--token-secret-file` or
//! `--token-public-key`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args};
use relais_protocol::{validate_name, validate_room};
use relais_server::auth::{unix_now, Claims, RoomScope, Signer};

/// Flags of `relais token`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("key").required(true).args(["secret_file", "private_key"])))]
#[command(group(ArgGroup::new("rooms").required(true).args(["room", "room_prefix"])))]
pub struct TokenArgs {
    /// Sign with HS256 and this shared secret (the file `relais serve
    /// --token-secret-file` reads).
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Sign with this PEM private key: Ed25519 (EdDSA) or RSA (RS256); the
    /// server gets its public half with `--token-public-key`.
    #[arg(long, value_name = "FILE")]
    private_key: Option<PathBuf>,
    /// The player name the token is for (claim `sub`).
    #[arg(long)]
    name: String,
    /// The one room the token is for (claim `room`; `lobby` is the default
    /// room).
    #[arg(long)]
    room: Option<String>,
    /// Every room whose name starts with this (claim `room_prefix`; empty:
    /// any room).
    #[arg(long)]
    room_prefix: Option<String>,
    /// How long the token is valid: `90s`, `10m`, `1h`, `2d` or plain
    /// seconds.
    #[arg(long, value_parser = parse_ttl, default_value = "1h")]
    ttl: Duration,
    /// The holder may watch the room but not send (claim `read_only`).
    #[arg(long)]
    read_only: bool,
}

/// Prints a token for `args` on stdout.
pub fn mint(args: &TokenArgs) -> anyhow::Result<()> {
    validate_name(&args.name).with_context(|| format!("invalid name {:?}", args.name))?;
    let scope = match (&args.room, &args.room_prefix) {
        (Some(room), _) => {
            validate_room(room).with_context(|| format!("invalid room {room:?}"))?;
            RoomScope::Room(room.clone())
        }
        (None, Some(prefix)) => RoomScope::Prefix(prefix.clone()),
        (None, None) => unreachable!("clap requires --room or --room-prefix"),
    };
    let signer = match (&args.secret_file, &args.private_key) {
        (Some(path), _) => Signer::from_secret_file(path),
        (None, Some(path)) => Signer::from_private_key_file(path),
        (None, None) => unreachable!("clap requires --secret-file or --private-key"),
    }
    .context("unusable signing key")?;
    let exp = unix_now()
        .checked_add(args.ttl.as_secs())
        .context("the ttl is too long")?;
    let token = signer.sign(&Claims {
        sub: args.name.clone(),
        scope,
        exp,
        nbf: None,
        read_only: args.read_only,
    })?;
    println!("{token}");
    Ok(())
}

/// A ttl: a whole number with an optional unit (`s`, `m`, `h`, `d`), at
/// least one second.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let wrong = || format!("{text:?} is not a duration like 90s, 10m, 1h, 2d or plain seconds");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| wrong())?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(wrong()),
    };
    match number.checked_mul(unit) {
        Some(0) => Err("the ttl must be at least 1 second".into()),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!("{text:?} is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_in_seconds_minutes_hours_days() {
        for (text, secs) in [
            ("90s", 90),
            ("10m", 600),
            ("1h", 3600),
            ("2d", 172_800),
            ("45", 45),
            ("1", 1),
        ] {
            assert_eq!(parse_ttl(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        for bad in [
            "", "0", "0s", "h", "1w", "1.5h", "-1", " 1h", "1h ", "1 h", "1H",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
        assert!(parse_ttl(&format!("{}d", u64::MAX / 86_400 + 1))
            .unwrap_err()
            .contains("too long"));
    }
}
