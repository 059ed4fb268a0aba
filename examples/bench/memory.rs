//! The `memory` section: resident memory per connection.
//!
//! `VmRSS` of `/proc/self/status` before the stack opens `--connections` (default 10000)
//! connections to a kernel server in the same namespace, and 0.5 s after all are established
//! (and accepted by the server) and idle; reported: the increase, total and per connection, and
//! the increase of `VmSize` (address space, touched or not). The connections are opened with
//! non-blocking `connectx`, 64 at a time, a batch once the server has accepted the one before
//! (so that its accept queue never overflows), after one first connection that is not counted.
//! The kernel's sockets live in kernel memory, outside the process's RSS, so the increase is
//! the stack's (and its descriptor table's) cost. `RLIMIT_NOFILE` is raised if the kernel
//! side's descriptors need it (the hard limit too, where the process may). This section runs
//! first, so that memory freed by the others cannot hide growth.

use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::conn::stack_connect;
use crate::hold::{open_idle, Holder, OPEN_BATCH, SETTLE};
use crate::netns::{start_default_stack, Netns};
use crate::proc::vm_kib;
use crate::progress;
use crate::report::Part;

/// The `memory` section.
pub struct Memory {
    connections: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// The increase of `VmSize`: address space, touched or not.
    size_increase_kib: i64,
    open_time: Duration,
    /// `RLIMIT_NOFILE` raised (from, to), if it had to be.
    nofile_raised: Option<(usize, usize)>,
}

pub fn run(opts: &Options) -> Result<Memory, String> {
    let count = opts.connections;
    progress(opts, &format!("memory: {count} idle connections"));
    // The kernel server holds one descriptor per connection.
    let nofile_raised = tun_driver::kernel::raise_fd_limit(count as u64 + 1024)
        .map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?
        .map(|old| (old as usize, count + 1024));
    let ns = Netns::new("bench-memory")?;
    let net = start_default_stack(&ns, opts.mtu)?;
    // One more for a first connection, before the first reading, so that state made on first
    // use is not counted.
    let holder = Holder::start(&ns, count + 1)?;
    let first = stack_connect(&net, holder.to)?;
    let (rss_before_kib, size_before_kib) = vm_kib()?;
    let start = Instant::now();
    let conns = open_idle(&net, &holder, count)?;
    let open_time = start.elapsed();
    thread::sleep(SETTLE);
    let (rss_after_kib, size_after_kib) = vm_kib()?;
    drop(first);
    drop(conns);
    drop(holder);
    net.stop();
    Ok(Memory {
        connections: count,
        rss_before_kib,
        rss_after_kib,
        size_increase_kib: size_after_kib as i64 - size_before_kib as i64,
        open_time,
        nofile_raised,
    })
}

impl Memory {
    fn increase_kib(&self) -> i64 {
        self.rss_after_kib as i64 - self.rss_before_kib as i64
    }

    fn per_connection_bytes(&self) -> f64 {
        self.increase_kib() as f64 * 1024.0 / self.connections as f64
    }
}

impl Part for Memory {
    fn table(&self, _: &Options, out: &mut String) {
        let _ = writeln!(
            out,
            "memory: VmRSS of the process with {} established, idle connections from the stack \
             to a kernel server",
            self.connections
        );
        let _ = writeln!(
            out,
            "  {} KiB -> {} KiB: {:+} KiB in all, {:.0} bytes per connection",
            self.rss_before_kib,
            self.rss_after_kib,
            self.increase_kib(),
            self.per_connection_bytes(),
        );
        let _ = writeln!(
            out,
            "  address space (VmSize) {:+} KiB, {:.0} KiB per connection, mostly buffers not \
             touched yet; opened {OPEN_BATCH} at a time in {:.2} s",
            self.size_increase_kib,
            self.size_increase_kib as f64 / self.connections as f64,
            self.open_time.as_secs_f64()
        );
        if let Some((from, to)) = self.nofile_raised {
            let _ = writeln!(out, "  RLIMIT_NOFILE raised from {from} to {to}");
        }
    }

    fn json(&self, _: &Options, out: &mut String) {
        let _ = write!(
            out,
            "{{\"connections\":{},\"rss_before_kib\":{},\"rss_after_kib\":{},\
             \"increase_kib\":{},\"per_connection_bytes\":{:.1},\"vm_size_increase_kib\":{},\
             \"open_s\":{:.3}}}",
            self.connections,
            self.rss_before_kib,
            self.rss_after_kib,
            self.increase_kib(),
            self.per_connection_bytes(),
            self.size_increase_kib,
            self.open_time.as_secs_f64()
        );
    }
}
