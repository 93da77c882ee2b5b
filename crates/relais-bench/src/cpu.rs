//! CPU time of a process, from `/proc/PID/stat` (Linux).

use std::process::Command;

/// Clock ticks per second, the unit of `utime`/`stime` in `/proc/PID/stat`:
/// `getconf CLK_TCK`, or 100 (the value on every mainstream Linux) if that
/// cannot be run.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// User + system CPU time of process `pid` so far, in clock ticks, all
/// threads included. `None` if the process does not exist.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

/// User + system CPU time of this process, in clock ticks.
pub fn own_ticks() -> Option<u64> {
    process_ticks(std::process::id())
}

/// utime + stime from the text of a `/proc/PID/stat` file. The command name
/// (field 2) is in parentheses and may hold spaces, so fields are counted
/// from the last `)`: utime and stime are fields 14 and 15.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After ")": field 3 (state) is the first; utime is field 14.
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_even_with_odd_names() {
        let stat =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(300));
    }

    #[test]
    fn reads_own_process() {
        assert!(own_ticks().is_some());
        assert!(clock_ticks_per_second() > 0);
    }
}
