//! What the tool reads from the machine it runs on: the machine itself ([`Machine`],
//! [`today`]), the memory, CPU time and open files of a process (this tool, a proxy
//! worker or the server child), the kernel's `ListenOverflows` counter, and the
//! open-files limit, which a large run must raise.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// Where the numbers were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Self {
        use procfs::Current as _;
        let mem_bytes = procfs::Meminfo::current().map_or(0, |m| m.mem_total);
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (mem_bytes as f64 / (1u64 << 30) as f64 * 10.0).round() / 10.0,
            os,
            // As the kernel spells it (`6.1.0-18-amd64`): procfs's `KernelVersion`
            // keeps only the numbers.
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let mut stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    // `YYYY-MM-DDTHH:MM:SSZ`: the date is what comes before the `T`.
    stamp.truncate(stamp.find('T').unwrap_or(stamp.len()));
    stamp
}

/// Raises the open-files limit to at least `want` (the hard limit too, when allowed).
/// Returns the soft limit in force afterwards.
pub fn raise_nofile_limit(want: u64) -> u64 {
    #[cfg(unix)]
    {
        use rlimit::Resource;
        let Ok((soft, hard)) = Resource::NOFILE.get() else {
            return 0;
        };
        // Only a privileged process may raise the hard limit.
        if hard < want && Resource::NOFILE.set(want, want).is_ok() {
            return want;
        }
        let cur = hard.min(want.max(soft));
        if Resource::NOFILE.set(cur, hard).is_ok() {
            return cur;
        }
        soft
    }
    #[cfg(not(unix))]
    {
        want
    }
}

/// File descriptors a run of `sessions` needs: a client socket and two proxy sockets
/// per session in this process, twice over while half-open links linger, plus slack.
pub fn fds_needed(sessions: usize) -> u64 {
    (sessions as u64) * 6 + 1_024
}

/// A process whose figures are read from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// This process (the clients, and the proxy unless it runs in workers).
    ThisTool,
    /// Another process on this machine: the server child or a proxy worker.
    Process(u32),
}

fn process(who: Who) -> Option<procfs::process::Process> {
    match who {
        Who::ThisTool => procfs::process::Process::myself().ok(),
        Who::Process(pid) => procfs::process::Process::new(i32::try_from(pid).ok()?).ok(),
    }
}

/// Resident memory (VmRSS), in bytes.
pub fn rss_bytes(who: Who) -> Option<u64> {
    let kib = process(who)?.status().ok()?.vmrss?;
    Some(kib * 1024)
}

/// CPU time (user + system) used so far.
pub fn cpu_time(who: Who) -> Option<Duration> {
    let stat = process(who)?.stat().ok()?;
    let ticks = procfs::ticks_per_second().max(1);
    Some(Duration::from_micros(
        (stat.utime + stat.stime) * 1_000_000 / ticks,
    ))
}

/// Open file descriptors (for the server child: its sockets, plus a few files).
pub fn fd_count(who: Who) -> Option<usize> {
    process(who)?.fd_count().ok()
}

/// This process's memory before its first fleet (or whenever first asked), so that
/// later runs (which reuse memory the allocator kept) still measure what a session
/// costs.
pub fn tool_rss_baseline() -> Option<u64> {
    static BASE: OnceLock<Option<u64>> = OnceLock::new();
    *BASE.get_or_init(|| rss_bytes(Who::ThisTool))
}

/// The kernel's `ListenOverflows` (SYNs dropped because an accept queue was full, all
/// sockets together), or None where it cannot be read.
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    tcp_ext_counters(&text).get("ListenOverflows").copied()
}

/// The `TcpExt` counters of `/proc/net/netstat` text: a line of names, then a line of
/// values. procfs (0.18) reads `/proc/net/snmp` but not this file.
fn tcp_ext_counters(netstat: &str) -> HashMap<&str, u64> {
    let mut lines = netstat.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if names.starts_with("TcpExt:") {
            return names
                .split_whitespace()
                .zip(values.split_whitespace())
                .skip(1)
                .filter_map(|(n, v)| Some((n, v.parse().ok()?)))
                .collect();
        }
    }
    HashMap::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
        let parts: Vec<u32> = d.split('-').map(|p| p.parse().unwrap()).collect();
        assert!(matches!(parts[..], [_, 1..=12, 1..=31]), "{d}");
    }

    #[test]
    fn listen_overflows_come_from_the_tcp_ext_lines() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                    TcpExt: 0 17 19\n\
                    IpExt: InNoRoutes ListenOverflows\n\
                    IpExt: 5 99\n";
        let c = tcp_ext_counters(text);
        assert_eq!(c.get("ListenOverflows"), Some(&17));
        assert_eq!(c.get("ListenDrops"), Some(&19));
        assert!(tcp_ext_counters("Ip: a\nIp: 1\n").is_empty());
    }

    #[test]
    fn this_process_is_measured() {
        assert!(rss_bytes(Who::ThisTool).is_some_and(|b| b > 1024 * 1024));
        assert!(cpu_time(Who::ThisTool).is_some());
        assert!(fd_count(Who::ThisTool).is_some_and(|n| n > 0));
        assert!(Machine::this().memory_gib > 0.0);
    }
}
