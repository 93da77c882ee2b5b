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

/// User + system CPU time of the whole machine so far (every process, all
/// cores), in clock ticks: user + nice + system of the `cpu` line of
/// `/proc/stat` (interrupts, idle, I/O wait and steal left out). `None`
/// where there is no `/proc/stat`.
pub fn machine_ticks() -> Option<u64> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// user + nice + system from the text of `/proc/stat`.
fn parse_machine_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let mut fields = line.split_whitespace().skip(1);
    let mut sum = 0;
    for _ in 0..3 {
        sum += fields.next()?.parse::<u64>().ok()?;
    }
    Some(sum)
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
    fn sums_user_nice_and_system_of_all_cores() {
        let stat = "cpu  100 5 20 9000 7 3 2 1 0 0\ncpu0 50 5 10 4500 3 1 1 0 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some(125));
        assert_eq!(parse_machine_ticks("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_machine_ticks("cpu  1 2\n"), None);
    }

    #[test]
    fn reads_own_process() {
        assert!(own_ticks().is_some());
        assert!(clock_ticks_per_second() > 0);
        assert!(machine_ticks().is_some());
    }
}
