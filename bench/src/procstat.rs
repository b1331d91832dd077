//! What a process costs, read from `/proc`: CPU time (user + system, from
//! `/proc/PID/stat`), peak resident memory (`VmHWM` in `/proc/PID/status`) and its child
//! processes (nginx's workers). The feed load test reads these for the server under test
//! over its measured window.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// CPU time (user + system) `pid` has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks =
        parse_stat_ticks(&stat).ok_or_else(|| anyhow!("/proc/{pid}/stat: no utime/stime"))?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    // After the name: field 3 (state) is the first; utime is field 14, stime 15.
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size of `pid` (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status_kb(&status, "VmHWM:")
        .map(|kb| kb * 1024)
        .ok_or_else(|| anyhow!("/proc/{pid}/status: no VmHWM"))
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The direct children of `pid` (every thread's list, e.g. nginx's workers).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `pid` and its direct children.
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    all.extend(children(pid));
    all
}

/// CPU time of several processes together; a process that is gone counts nothing.
pub fn cpu_time_all(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|&p| cpu_time(p).ok()).sum()
}

/// Peak resident set sizes of several processes, added up (nginx: master and workers).
pub fn peak_rss_all(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| peak_rss(p).ok()).sum()
}

/// The load averages (1, 5 and 15 minutes) as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_after_a_name_with_spaces_and_parens() {
        let line = "42 (certgate (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 700 35 0 0 20 0 3 0";
        assert_eq!(parse_stat_ticks(line), Some(735));
        assert_eq!(parse_stat_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(peak_rss(me).unwrap() > 0);
        // Burn a little CPU so the figure cannot be zero by rounding alone.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_time(me).unwrap() > Duration::ZERO);
        assert_eq!(status_kb("VmHWM:\t  1234 kB\n", "VmHWM:"), Some(1234));
    }
}
