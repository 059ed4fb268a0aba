//! What `/proc` says of this process and its threads.

use std::thread;
use std::time::{Duration, Instant};

/// The runtime thread's name as `/proc` shows it (`comm` keeps 15 bytes).
const RUNTIME_COMM: &str = "connectx-runtim";

/// CPU time the whole machine has spent busy since boot (`/proc/stat`: user, nice, system,
/// irq, softirq and steal, all CPUs): both ends of a transfer on this machine, the kernel's
/// work for each, and the stack's.
pub fn machine_busy() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    Some(ticks(busy))
}

/// `n` clock ticks (the unit of `/proc`'s CPU times) as a duration.
fn ticks(n: u64) -> Duration {
    let hz = tun_driver::kernel::clock_ticks_per_second().max(1);
    Duration::from_micros(n * 1_000_000 / hz)
}

/// CPU time this process has spent, all its threads, user and system (`/proc/self/stat`, in
/// clock ticks: 10 ms each on most machines).
pub fn process_cpu() -> Option<(Duration, Duration)> {
    let cpu = ThreadCpu::process().ok()?;
    Some((ticks(cpu.utime), ticks(cpu.stime)))
}

/// Kernel thread ids of the process's stack runtime threads.
pub fn runtime_threads() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .is_ok_and(|c| c.trim_end() == RUNTIME_COMM)
        })
        .collect()
}

/// The runtime thread of a stack just started: the one not in `others`. It names itself once
/// running, so give it a moment.
pub fn new_runtime_thread(others: &[u32]) -> Result<u32, String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let found: Vec<u32> = runtime_threads()
            .into_iter()
            .filter(|t| !others.contains(t))
            .collect();
        match found[..] {
            [tid] => return Ok(tid),
            [] if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                return Err(format!(
                    "expected one new {RUNTIME_COMM} thread in /proc/self/task, found {found:?}"
                ))
            }
        }
    }
}

/// What `/proc` says of one thread's CPU use.
pub struct ThreadCpu {
    /// User and system time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Time on a CPU by `schedstat`, when the kernel has it.
    pub runtime_ns: Option<u64>,
    /// Voluntary and involuntary context switches.
    pub switches: Option<(u64, u64)>,
}

impl ThreadCpu {
    pub fn read(tid: u32) -> Result<ThreadCpu, String> {
        ThreadCpu::read_dir(&format!("/proc/self/task/{tid}"))
    }

    /// The whole process's, all its threads together.
    pub fn process() -> Result<ThreadCpu, String> {
        ThreadCpu::read_dir("/proc/self")
    }

    fn read_dir(dir: &str) -> Result<ThreadCpu, String> {
        let stat = std::fs::read_to_string(format!("{dir}/stat"))
            .map_err(|e| format!("{dir}/stat: {e}"))?;
        // The fields after the command name, which is in parentheses and may hold anything:
        // field 3 (state) first, so utime (14) and stime (15) are at 11 and 12.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| -> Result<u64, String> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| format!("{dir}/stat: cannot read field {}", i + 3))
        };
        let runtime_ns = std::fs::read_to_string(format!("{dir}/schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
        let count = |name| status_field(&status, name);
        let switches = count("voluntary_ctxt_switches:").zip(count("nonvoluntary_ctxt_switches:"));
        Ok(ThreadCpu {
            utime: field(11)?,
            stime: field(12)?,
            runtime_ns,
            switches,
        })
    }
}

/// `VmRSS` and `VmSize` of `/proc/self/status`, in KiB.
pub fn vm_kib() -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    let field =
        |name| status_field(&status, name).ok_or_else(|| format!("/proc/self/status: no {name}"));
    Ok((field("VmRSS:")?, field("VmSize:")?))
}

/// The number after `name` (`VmRSS:`, with its colon) in a `status` file, its unit dropped.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
