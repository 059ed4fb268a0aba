//! The `idle` section: CPU time of an idle stack.
//!
//! The stack opens 100 connections to a kernel server (as `memory` opens them) and leaves them
//! established and idle. After 0.5 s, the CPU time of the stack's runtime thread
//! (`connectx-runtime`: utime + stime of `/proc/self/task/TID/stat`, clock ticks turned into ms
//! with `sysconf(_SC_CLK_TCK)`) is read, and again `--idle-seconds` (default 10) later;
//! reported: the difference, the same from `/proc/self/task/TID/schedstat` (nanoseconds, finer
//! than ticks), and the thread's context switches meanwhile (each a wakeup of a thread that
//! slept).

use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::common;
use crate::hold::{open_idle, Holder, SETTLE};
use crate::netns::{start_default_stack, Netns};
use crate::proc::{new_runtime_thread, runtime_threads, ThreadCpu};
use crate::progress;
use crate::report::{json_num, Part};

/// How many connections the stack holds.
const IDLE_CONNECTIONS: usize = 100;

/// The `idle` section.
pub struct IdleCpu {
    tid: u32,
    elapsed: Duration,
    clk_tck: u64,
    utime_ticks: u64,
    stime_ticks: u64,
    /// From `schedstat`, when the kernel has it.
    runtime_ns: Option<u64>,
    /// Voluntary and involuntary context switches.
    switches: Option<(u64, u64)>,
    /// CPU time the thread had used before (starting, opening the connections), from
    /// `schedstat`: shows that the thread watched is the one that worked.
    setup_ns: Option<u64>,
}

pub fn run(opts: &Options) -> Result<IdleCpu, String> {
    progress(
        opts,
        &format!(
            "idle: {IDLE_CONNECTIONS} connections, {} s",
            opts.idle_seconds
        ),
    );
    let ns = Netns::new("bench-idle")?;
    let others = runtime_threads();
    let net = start_default_stack(&ns, opts.mtu)?;
    let tid = new_runtime_thread(&others)?;
    let holder = Holder::start(&ns, IDLE_CONNECTIONS)?;
    let conns = open_idle(&net, &holder, IDLE_CONNECTIONS)?;
    thread::sleep(SETTLE);
    let before = ThreadCpu::read(tid)?;
    let start = Instant::now();
    thread::sleep(Duration::from_secs_f64(opts.idle_seconds));
    let after = ThreadCpu::read(tid)?;
    let elapsed = start.elapsed();
    let open = conns
        .iter()
        .flatten()
        .filter(|c| net.peer_addr(c.fd).is_ok())
        .count();
    drop(conns);
    drop(holder);
    net.stop();
    if open != IDLE_CONNECTIONS {
        return Err(format!(
            "only {open} of {IDLE_CONNECTIONS} connections were still open at the end"
        ));
    }
    Ok(IdleCpu {
        tid,
        elapsed,
        clk_tck: tun_driver::kernel::clock_ticks_per_second(),
        utime_ticks: after.utime.saturating_sub(before.utime),
        stime_ticks: after.stime.saturating_sub(before.stime),
        runtime_ns: after
            .runtime_ns
            .zip(before.runtime_ns)
            .map(|(a, b)| a.saturating_sub(b)),
        switches: after
            .switches
            .zip(before.switches)
            .map(|(a, b)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))),
        setup_ns: before.runtime_ns,
    })
}

impl IdleCpu {
    fn cpu_ms(&self) -> f64 {
        (self.utime_ticks + self.stime_ticks) as f64 * 1000.0 / self.clk_tck as f64
    }
}

/// Nanoseconds in ms.
fn ms(ns: Option<u64>) -> Option<f64> {
    ns.map(|ns| ns as f64 / 1e6)
}

impl Part for IdleCpu {
    fn table(&self, _: &Options, out: &mut String) {
        let secs = self.elapsed.as_secs_f64();
        let _ = writeln!(
            out,
            "idle: CPU time of the stack's runtime thread with {IDLE_CONNECTIONS} established, \
             idle connections to a kernel server, over {secs:.1} s"
        );
        let _ = writeln!(
            out,
            "  {:.0} ms ({} + {} ticks of user + system time at {} ticks/s; {:.3}% of a CPU)",
            self.cpu_ms(),
            self.utime_ticks,
            self.stime_ticks,
            self.clk_tck,
            self.cpu_ms() / 10.0 / secs
        );
        let mut finer = Vec::new();
        if let Some(ms) = ms(self.runtime_ns) {
            finer.push(format!("{ms:.3} ms on CPU by schedstat"));
        }
        if let Some((voluntary, involuntary)) = self.switches {
            finer.push(format!(
                "{voluntary} voluntary and {involuntary} involuntary context switches"
            ));
        }
        if let Some(ms) = ms(self.setup_ns) {
            finer.push(format!(
                "before, starting and opening the connections: {ms:.3} ms (thread {})",
                self.tid
            ));
        }
        if !finer.is_empty() {
            let _ = writeln!(out, "  {}", finer.join("; "));
        }
    }

    fn json(&self, _: &Options, out: &mut String) {
        let _ = write!(
            out,
            "{{\"connections\":{IDLE_CONNECTIONS},\"elapsed_s\":{:.3},\"tid\":{},\"clk_tck\":{},\
             \"utime_ticks\":{},\"stime_ticks\":{},\"cpu_ms\":{:.1},\"schedstat_cpu_ms\":{},\
             \"voluntary_switches\":{},\"involuntary_switches\":{},\"setup_schedstat_cpu_ms\":{}}}",
            self.elapsed.as_secs_f64(),
            self.tid,
            self.clk_tck,
            self.utime_ticks,
            self.stime_ticks,
            self.cpu_ms(),
            json_num(ms(self.runtime_ns), 3),
            common::opt(&self.switches.map(|s| s.0), false),
            common::opt(&self.switches.map(|s| s.1), false),
            json_num(ms(self.setup_ns), 3)
        );
    }
}
