//! What the connectx stack costs next to the Linux kernel, measured over TUN devices, with
//! kernel-to-kernel figures from the same run for comparison.
//!
//! ```text
//! sudo cargo run --release --example bench -- [--only LIST] [--mtu N] [--seconds S]
//!     [--idle-seconds S] [--connections N] [--json]
//! ```
//!
//! Everything happens in network namespaces of the benchmark's own, made with
//! `unshare(CLONE_NEWNET)` on dedicated threads: they vanish with those threads (or with the
//! process), and nothing on the host changes. Each section makes its own. In each, the stack is
//! 192.0.2.2 on TUN device `cxb0` and the kernel 192.0.2.1 (the second stack of `fastopen`:
//! 203.0.113.2 on `cxb1`, the kernel 203.0.113.1); veth pairs join 198.51.100.1 and .2. The
//! TUN devices and the veth pairs have the MTU of `--mtu` (default 1500).
//!
//! `--only LIST` runs some sections only (a comma list of the names below; all by default).
//! They are reported in this order.
//!
//! # `throughput`: bulk TCP throughput
//!
//! - `stack -> kernel`: the stack's `TcpStream` writes 256 KiB chunks as fast as it can to a
//!   kernel `std::net::TcpListener` over TUN device `cxb0`; the kernel side reads and discards.
//! - `kernel -> stack`: a kernel `std::net::TcpStream` writes to the stack's `TcpListener`.
//! - `kernel -> kernel` over a veth pair whose ends live in two more private namespaces (so that
//!   packets really cross the pair), at the same MTU, with the kernel's offloads on (its
//!   default: TSO/GSO hand 64 KiB segments across the pair) and off (one skb per packet, as
//!   over TUN). Offloads are turned off with `ethtool -K … tso off gso off gro off` when
//!   `ethtool` is installed, else TSO/GSO are capped at one segment with
//!   `ip link set … gso_max_segs 1` (veth does no GRO unless asked to).
//! - `kernel -> kernel` over loopback in the TUN test's namespace, for scale.
//!
//! Each run lasts `--seconds` (default 3) from the receiver's first byte; the figure is the
//! payload the receiver read after that first read, over the time it took, in Gbit/s (10^9
//! bit/s). The ratios are against the reference: veth with offloads off when it could be
//! measured, else veth with offloads on, else loopback.
//!
//! # `fastopen`: what the TCP Fast Open layer costs on bulk throughput
//!
//! Two stacks side by side in one namespace, alike but for `StackConfig::fast_open_layer`: one
//! runs the layer, the other (`fast_open_layer: false`) bypasses it. Both are driven through the
//! same calls, which without the layer make plain connections; the namespace's
//! `net.ipv4.tcp_fastopen` is 1027 (client, server, and server on every listener). Runs are
//! timed as in `throughput`.
//!
//! - `stack -> kernel`: the stack writes to a kernel listener. Each measured connection is made
//!   with `connectx(CONNECT_DATA_IDEMPOTENT)` and its first 1000 bytes as data. With the layer,
//!   a first connection has fetched the kernel's cookie, so that data (as much as the SYN takes:
//!   all of it at MTU 1500) rides in the SYN, and the layer translates the sequence and
//!   acknowledgement numbers of every later segment of the connection; a run counts only if
//!   `fast_open_info` says the SYN carried data and the SYN-ACK acknowledged all of it.
//! - `kernel -> stack`: a kernel client (`TCP_FASTOPEN_CONNECT`) writes to a stack listener with
//!   Fast Open on (`set_fast_open`). With the layer, a first connection has fetched the stack's
//!   cookie, so the kernel's first write rides in the SYN; a run counts only if
//!   `server_fast_open_info` says its SYN carried a valid cookie and data.
//!
//! Each of the four (direction, variant) runs 3 times, interleaved (active then off, then off
//! then active, …); the figures are medians, and the ratio is the median with the layer active
//! over the median with it off.
//!
//! # `rate`: connection rate
//!
//! One connection at a time, each: the client connects (a blocking connect, which returns once
//! established), writes 1 byte, reads the server's 1-byte reply and closes (so TIME-WAIT stays
//! with the client); the server accepts, reads the byte, answers, reads up to the client's FIN
//! and closes. Timed on the client, from the first connect to the last close, over 2 s or 5000
//! connections, whichever comes first, after 20 untimed ones: stack client to kernel server and
//! kernel client to stack server over TUN, and kernel to kernel over a veth pair (the reference;
//! offloads on, which make no difference to 1-byte segments). Figure: connections per second.
//!
//! (A section on the time to first byte over a path with 20 ms of one-way delay is planned; it
//! will be reported between `rate` and `idle`.)
//!
//! # `idle`: CPU time of an idle stack
//!
//! The stack opens 100 connections to a kernel server (as `memory` opens them) and leaves them
//! established and idle. After 0.5 s, the CPU time of the stack's runtime thread (`connectx-runtime`: utime + stime of
//! `/proc/self/task/TID/stat`, clock ticks turned into ms with `sysconf(_SC_CLK_TCK)`) is read,
//! and again `--idle-seconds` (default 10) later; reported: the difference, the same from
//! `/proc/self/task/TID/schedstat` (nanoseconds, finer than ticks), and the thread's context
//! switches meanwhile (each a wakeup of a thread that slept).
//!
//! # `memory`: resident memory per connection
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
//!
//! Bad arguments exit with status 2; a section that fails is reported, and the others still
//! run, with exit status 1.

mod common;

use std::fmt::Write as _;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use connectx_api::{
    CookieKey, Errno, Family, FastOpenInfo, FastOpenServerConfig, Fd, Net, PollFd, SaEndpoints,
    SocketType, StackConfig, TcpListener, TcpStream, CONNECT_DATA_IDEMPOTENT, POLLOUT,
    SAE_ASSOCID_ANY,
};
use tun_driver::Link;

const USAGE: &str = "usage: bench [--only throughput,fastopen,rate,idle,memory] [--mtu N] \
                     [--seconds S] [--idle-seconds S] [--connections N] [--json]";
/// What the senders write per call, and the receivers' buffer.
const CHUNK: usize = 256 << 10;
/// How long a single blocking call may wait before the run is declared stuck.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const TUN: &str = "cxb0";
const STACK_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const KERNEL_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VETH_A: &str = "cxbvA";
const VETH_B: &str = "cxbvB";
const VETH_A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const VETH_B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// The second stack of the `fastopen` section, the one without the layer.
const OFF_TUN: &str = "cxb1";
const OFF_STACK_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const OFF_KERNEL_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Runs per (direction, variant) in the `fastopen` section.
const FAST_OPEN_ROUNDS: usize = 3;
/// What a Fast Open client connection gives `connectx` as data (the SYN carries what fits).
const SYN_DATA: usize = 1000;
/// The key of the stacks' Fast Open listeners.
const FAST_OPEN_KEY: &str = "a0bf63f7-ed803d81-cd641d30-cebc4a90";
const LISTEN_PORT: u16 = 5201;

/// The `rate` section: how long, how many at most, and how many untimed first.
const RATE_WINDOW: Duration = Duration::from_secs(2);
const RATE_MAX: u64 = 5000;
const RATE_WARMUP: u64 = 20;
/// The request byte that tells a `rate` server to stop.
const QUIT: u8 = b'q';

/// The `idle` section's connections, and how long they settle before the clock starts.
const IDLE_CONNECTIONS: usize = 100;
const SETTLE: Duration = Duration::from_millis(500);
/// How many connection attempts the `idle` and `memory` sections keep under way at once.
const OPEN_BATCH: usize = 64;
/// The runtime thread's name as `/proc` shows it (`comm` keeps 15 bytes).
const RUNTIME_COMM: &str = "connectx-runtim";
/// Most `--connections`: the stack has 28232 ephemeral ports.
const MAX_CONNECTIONS: usize = 25_000;

// ---------------------------------------------------------------------------------------------
// Command line

/// The parts of the benchmark, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Throughput,
    FastOpen,
    Rate,
    // Time to first byte with 20 ms of one-way delay goes here.
    Idle,
    Memory,
}

impl Section {
    const ALL: [Section; 5] = [
        Section::Throughput,
        Section::FastOpen,
        Section::Rate,
        Section::Idle,
        Section::Memory,
    ];

    fn name(self) -> &'static str {
        match self {
            Section::Throughput => "throughput",
            Section::FastOpen => "fastopen",
            Section::Rate => "rate",
            Section::Idle => "idle",
            Section::Memory => "memory",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

#[derive(Debug, Clone, Copy)]
struct Options {
    mtu: u32,
    seconds: f64,
    idle_seconds: f64,
    connections: usize,
    /// The sections to run, one bit each ([`Section::bit`]).
    only: u8,
    json: bool,
}

impl Options {
    fn runs(&self, section: Section) -> bool {
        self.only & section.bit() != 0
    }

    fn sections(&self) -> impl Iterator<Item = Section> + '_ {
        Section::ALL.into_iter().filter(|s| self.runs(*s))
    }
}

enum Parsed {
    Run(Options),
    Help,
}

fn seconds_arg(flag: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!(
            "{flag} {v}: expected a number of seconds above 0, at most 3600"
        )),
    }
}

fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut opts = Options {
        mtu: 1500,
        seconds: 3.0,
        idle_seconds: 10.0,
        connections: 10_000,
        only: Section::ALL.iter().fold(0, |bits, s| bits | s.bit()),
        json: false,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "--mtu" => {
                let v = value("--mtu")?;
                opts.mtu = match v.parse::<u32>() {
                    Ok(m) if (68..=65535).contains(&m) => m,
                    _ => return Err(format!("--mtu {v}: expected an integer from 68 to 65535")),
                };
            }
            "--seconds" => opts.seconds = seconds_arg("--seconds", &value("--seconds")?)?,
            "--idle-seconds" => {
                opts.idle_seconds = seconds_arg("--idle-seconds", &value("--idle-seconds")?)?
            }
            "--connections" => {
                let v = value("--connections")?;
                opts.connections = match v.parse::<usize>() {
                    Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "--connections {v}: expected an integer from 1 to {MAX_CONNECTIONS}"
                        ))
                    }
                };
            }
            "--only" => {
                let v = value("--only")?;
                let mut only = 0;
                for name in v.split(',') {
                    let section = Section::ALL
                        .into_iter()
                        .find(|s| s.name() == name.trim())
                        .ok_or_else(|| {
                            format!(
                                "--only: unknown section {name:?} (expected a comma list of \
                                 throughput, fastopen, rate, idle, memory)"
                            )
                        })?;
                    only |= section.bit();
                }
                opts.only = only;
            }
            "--json" if inline.is_none() => opts.json = true,
            "-h" | "--help" if inline.is_none() => return Ok(Parsed::Help),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
        i += 1;
    }
    Ok(Parsed::Run(opts))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e} ({USAGE})");
            return ExitCode::from(2);
        }
    };
    if !tun_driver::is_root() {
        eprintln!(
            "bench: needs root: it creates private network namespaces (CAP_SYS_ADMIN), \
             TUN devices and veth pairs inside them (CAP_NET_ADMIN)"
        );
        return ExitCode::from(1);
    }
    let report = run(&opts);
    if opts.json {
        println!("{}", report.json(&opts));
    } else {
        print!("{}", report.table(&opts));
    }
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces

type Job = Box<dyn FnOnce() + Send>;

/// A thread living in a private network namespace of its own, running the jobs it is given.
/// Sockets and devices made by a job belong to that namespace wherever they are used later;
/// threads and processes a job starts are born in it too. The namespace goes away once the
/// thread ends (when this is dropped) and the last socket or device in it is closed.
struct Netns {
    name: &'static str,
    jobs: mpsc::Sender<Job>,
}

impl Netns {
    fn new(name: &'static str) -> Result<Netns, String> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::channel();
        thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let entered = tun_driver::netns::unshare_net().map_err(|e| e.to_string());
                let ok = entered.is_ok();
                let _ = ready.send(entered);
                if ok {
                    for job in queue {
                        job();
                    }
                }
            })
            .map_err(|e| format!("cannot start thread {name}: {e}"))?;
        started
            .recv()
            .map_err(|_| format!("thread {name} died"))?
            .map_err(|e| format!("private network namespace: {e}"))?;
        Ok(Netns { name, jobs })
    }

    /// Run `f` on the namespace's thread and wait for its result.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let (tx, rx) = mpsc::channel();
        let died = || format!("thread {} died", self.name);
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| died())?;
        rx.recv().map_err(|_| died())
    }

    /// `/proc/<pid>/task/<tid>/ns/net` of the namespace's thread: valid while it lives.
    fn path(&self) -> Result<String, String> {
        let link = self
            .run(|| std::fs::read_link("/proc/thread-self"))?
            .map_err(|e| format!("/proc/thread-self: {e}"))?;
        Ok(format!("/proc/{}/ns/net", link.display()))
    }

    /// Set a sysctl of the namespace (only ever one of ours).
    fn set_sysctl(&self, path: &'static str, value: &'static str) -> Result<(), String> {
        self.run(move || tun_driver::netns::set_sysctl(path, value))?
            .map_err(|e| e.to_string())
    }
}

/// Run a command (in the calling thread's namespace) and fail with its stderr.
fn command(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn configure(dev: &str, addr: Ipv4Addr, mtu: u32) -> Result<(), String> {
    let link = Link::by_name(dev).map_err(|e| e.to_string())?;
    link.set_mtu(mtu).map_err(|e| e.to_string())?;
    link.add_address(IpAddr::V4(addr), 24)
        .map_err(|e| e.to_string())?;
    link.set_up(true).map_err(|e| e.to_string())
}

/// Two namespaces joined by a veth pair: `VETH_A_ADDR` in the first, `VETH_B_ADDR` in the
/// second.
fn veth_pair(mtu: u32) -> Result<(Netns, Netns), String> {
    let a = Netns::new("bench-veth-a")?;
    let b = Netns::new("bench-veth-b")?;
    let b_path = b.path()?;
    a.run(move || -> Result<(), String> {
        command(
            "ip",
            &[
                "link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B,
            ],
        )?;
        command("ip", &["link", "set", VETH_B, "netns", &b_path])?;
        configure(VETH_A, VETH_A_ADDR, mtu)
    })??;
    b.run(move || configure(VETH_B, VETH_B_ADDR, mtu))??;
    Ok((a, b))
}

/// Turn a device's TSO, GSO and GRO off, with ethtool if there is one. Returns how.
fn offloads_off(dev: &str) -> Result<&'static str, String> {
    let ethtool = command(
        "ethtool",
        &["-K", dev, "tso", "off", "gso", "off", "gro", "off"],
    );
    match ethtool {
        Ok(()) => Ok("ethtool -K tso off gso off gro off"),
        Err(ethtool) => command("ip", &["link", "set", "dev", dev, "gso_max_segs", "1"])
            .map(|()| "ip link set gso_max_segs 1 (no usable ethtool; veth GRO is off by default)")
            .map_err(|ip| format!("{ethtool}; {ip}")),
    }
}

/// `(tx_packets, tx_dropped)` of the kernel side of a device, from `/proc/thread-self/net/dev`
/// (the calling thread's namespace).
fn kernel_tx_stats(dev: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{dev}:")))?;
    let fields: Vec<u64> = line
        .split_once(':')?
        .1
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop …
    Some((*fields.get(9)?, *fields.get(11)?))
}

/// A stack on TUN device `tun` of `ns`: the stack at `stack`, the kernel at `kernel`.
fn start_stack(
    ns: &Netns,
    tun: &'static str,
    (stack, kernel): (Ipv4Addr, Ipv4Addr),
    mtu: u32,
    config: StackConfig,
) -> Result<Net, String> {
    ns.run(move || {
        Net::builder()
            .stack_config(config)
            .tun(tun)
            .address(&format!("{stack}/24"))
            .peer(&format!("{kernel}/24"))
            .mtu(mtu)
            .start()
    })?
    .map_err(|e| format!("starting the stack on {tun}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Measuring throughput

#[derive(Debug, Clone, Copy)]
struct Sample {
    bytes: u64,
    elapsed: Duration,
}

impl Sample {
    fn gbps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.bytes as f64 * 8.0 / secs / 1e9
        } else {
            0.0
        }
    }
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Read and discard: the window starts when the first read returns and ends with the first
/// read that returns `window` later. Then tell the sender to stop, and drain up to its FIN.
fn receive(r: &mut impl Read, window: Duration, stop: &AtomicBool) -> Result<Sample, String> {
    let mut buf = vec![0u8; CHUNK];
    let first = read_some(r, &mut buf).map_err(|e| format!("receiving: {e}"))?;
    if first == 0 {
        return Err("the sender closed before sending anything".into());
    }
    let start = Instant::now();
    let mut bytes = 0u64;
    let elapsed = loop {
        let n = read_some(r, &mut buf).map_err(|e| format!("receiving: {e}"))?;
        if n == 0 {
            return Err("the sender closed before the end of the window".into());
        }
        bytes += n as u64;
        let elapsed = start.elapsed();
        if elapsed >= window {
            break elapsed;
        }
    };
    stop.store(true, Ordering::Relaxed);
    loop {
        match read_some(r, &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("draining after the window: {e}")),
        }
    }
    Ok(Sample { bytes, elapsed })
}

/// One run: `accept` gives the receiving end (on a thread of its own), `connect` the sending
/// end (on the calling thread), which writes until the receiver's window is over.
fn measure<R, W>(
    window: Duration,
    accept: impl FnOnce() -> Result<R, String> + Send + 'static,
    connect: impl FnOnce() -> Result<W, String>,
) -> Result<Sample, String>
where
    R: Read,
    W: Write,
{
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = Arc::clone(&stop);
        thread::Builder::new()
            .name("bench-receiver".into())
            .spawn(move || {
                let result = accept().and_then(|mut r| receive(&mut r, window, &stop));
                stop.store(true, Ordering::Relaxed);
                result
            })
            .map_err(|e| format!("cannot start the receiver thread: {e}"))?
    };
    // On failure here the receiver may be blocked in accept: leave it (the process ends).
    let mut w = connect()?;
    let chunk = vec![0x5au8; CHUNK];
    let mut send_error = None;
    while !stop.load(Ordering::Relaxed) {
        match w.write(&chunk) {
            Ok(0) => {
                send_error = Some("sending: the connection took no more bytes".to_owned());
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                send_error = Some(format!("sending: {e}"));
                break;
            }
        }
    }
    // Closing sends a FIN after what is queued; the receiver drains up to it.
    drop(w);
    let received = receiver
        .join()
        .map_err(|_| "the receiver thread panicked".to_owned())?;
    match (received, send_error) {
        (Ok(sample), _) => Ok(sample),
        (Err(e), Some(s)) => Err(format!("{e} ({s})")),
        (Err(e), None) => Err(e),
    }
}

fn kernel_listener(ns: &Netns, addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    ns.run(move || std::net::TcpListener::bind(addr))?
        .map_err(|e| format!("kernel listener on {addr}: {e}"))
}

fn kernel_accept(l: std::net::TcpListener) -> Result<std::net::TcpStream, String> {
    let (s, _) = l.accept().map_err(|e| format!("kernel accept: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn kernel_connect(ns: &Netns, to: SocketAddr) -> Result<std::net::TcpStream, String> {
    let s = ns
        .run(move || std::net::TcpStream::connect(to))?
        .map_err(|e| format!("kernel connect to {to}: {e}"))?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// A kernel client socket with `TCP_FASTOPEN_CONNECT`: with a cookie cached, `connect`
/// returns at once and the first write goes out in the SYN.
fn kernel_fast_open_connect(ns: &Netns, to: SocketAddrV4) -> Result<std::net::TcpStream, String> {
    let s = ns
        .run(move || tun_driver::kernel::fast_open_connect(to.into()))?
        .map_err(|e| format!("kernel Fast Open connect to {to}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn stack_connect(net: &Net, to: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect(net, to).map_err(|e| format!("stack connect to {to}: {e}"))?;
    s.set_timeouts(Some(IO_TIMEOUT), Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn stack_listener(net: &Net, at: SocketAddr) -> Result<TcpListener, String> {
    let listener =
        TcpListener::bind(net, at).map_err(|e| format!("stack listener on {at}: {e}"))?;
    net.set_timeouts(listener.fd(), Some(IO_TIMEOUT), None)
        .map_err(|e| e.to_string())?;
    Ok(listener)
}

fn stack_accept(listener: &TcpListener) -> Result<TcpStream, String> {
    let (s, _) = listener
        .accept()
        .map_err(|e| format!("stack accept: {e}"))?;
    s.set_timeouts(Some(IO_TIMEOUT), Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// A stack connection made with `Net::connectx` and data (which `TcpStream::connectx` does not
/// take), closed when dropped.
struct StackConn {
    net: Net,
    fd: Fd,
}

impl StackConn {
    /// A blocking `connectx(flags)` to `to` with `data` as its iov.
    fn connectx(net: &Net, to: SocketAddr, flags: u32, data: &[u8]) -> Result<StackConn, String> {
        let family = if to.is_ipv4() { Family::V4 } else { Family::V6 };
        let fd = net
            .socket(family, SocketType::Stream)
            .map_err(|e| format!("socket: {e}"))?;
        let conn = StackConn {
            net: net.clone(),
            fd,
        };
        net.set_timeouts(fd, Some(IO_TIMEOUT), Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut queued = 0;
        net.connectx(
            fd,
            &SaEndpoints::to(to),
            SAE_ASSOCID_ANY,
            flags,
            &[IoSlice::new(data)],
            Some(&mut queued),
            None,
        )
        .map_err(|e| format!("connectx to {to}: {e}"))?;
        if queued != data.len() {
            return Err(format!(
                "connectx to {to} queued {queued} of {} bytes",
                data.len()
            ));
        }
        Ok(conn)
    }
}

impl StackConn {
    /// A non-blocking `connectx` to `to`, under way: the descriptor becomes writable once the
    /// attempt is over, and `so_error` tells how it went.
    fn connect_nonblocking(net: &Net, to: SocketAddr) -> Result<StackConn, String> {
        let family = if to.is_ipv4() { Family::V4 } else { Family::V6 };
        let fd = net
            .socket(family, SocketType::Stream)
            .map_err(|e| format!("socket: {e}"))?;
        let conn = StackConn {
            net: net.clone(),
            fd,
        };
        net.set_nonblocking(fd, true).map_err(|e| e.to_string())?;
        match net.connectx(
            fd,
            &SaEndpoints::to(to),
            SAE_ASSOCID_ANY,
            0,
            &[],
            None,
            None,
        ) {
            Err(e) if Errno::of(&e) == Some(Errno::EINPROGRESS) => Ok(conn),
            Err(e) => Err(format!("connectx to {to}: {e}")),
            Ok(()) => Err(format!(
                "connectx to {to}: no EINPROGRESS from a non-blocking call"
            )),
        }
    }
}

impl Read for StackConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.net.recv(self.fd, buf)
    }
}

impl Write for StackConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.net.send(self.fd, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StackConn {
    fn drop(&mut self) {
        let _ = self.net.close(self.fd);
    }
}

// ---------------------------------------------------------------------------------------------
// The report

struct Row {
    key: &'static str,
    label: String,
    sample: Sample,
    /// Packets the stack sent and received during the run (TUN runs only).
    stack_packets: Option<(u64, u64)>,
    /// Packets the kernel sent into the TUN device and dropped (its queue full) during the run.
    kernel_tun_tx: Option<(u64, u64)>,
}

/// The `throughput` section.
#[derive(Default)]
struct Throughput {
    rows: Vec<Row>,
    reference: Option<usize>,
    offloads_off: Option<&'static str>,
}

/// The `fastopen` section.
struct FastOpenCost {
    stack_to_kernel: LayerRuns,
    kernel_to_stack: LayerRuns,
}

/// One direction of the `fastopen` section.
#[derive(Default)]
struct LayerRuns {
    active: Vec<Sample>,
    off: Vec<Sample>,
    /// Bytes the SYN of each run with the layer active carried (and had acknowledged).
    syn_data: Vec<usize>,
}

/// The `rate` section.
struct Rates {
    stack_to_kernel: RateSample,
    kernel_to_stack: RateSample,
    kernel_to_kernel: RateSample,
}

#[derive(Debug, Clone, Copy)]
struct RateSample {
    connections: u64,
    elapsed: Duration,
}

/// The `idle` section.
struct IdleCpu {
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

/// The `memory` section.
struct Memory {
    connections: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// The increase of `VmSize`: address space, touched or not.
    size_increase_kib: i64,
    open_time: Duration,
    /// `RLIMIT_NOFILE` raised (from, to), if it had to be.
    nofile_raised: Option<(usize, usize)>,
}

#[derive(Default)]
struct Report {
    throughput: Option<Throughput>,
    fast_open: Option<FastOpenCost>,
    rate: Option<Rates>,
    idle: Option<IdleCpu>,
    memory: Option<Memory>,
    notes: Vec<String>,
    /// Sections that failed.
    failed: Vec<Section>,
}

fn progress(opts: &Options, what: &str) {
    if !opts.json {
        eprintln!("bench: {what}…");
    }
}

fn run(opts: &Options) -> Report {
    let mut report = Report::default();
    // Memory first, while the heap holds nothing freed by the other sections.
    let order = [
        Section::Memory,
        Section::Throughput,
        Section::FastOpen,
        Section::Rate,
        Section::Idle,
    ];
    for section in order.into_iter().filter(|s| opts.runs(*s)) {
        let result = match section {
            Section::Throughput => {
                throughput(opts, &mut report.notes).map(|t| report.throughput = Some(t))
            }
            Section::FastOpen => fast_open_cost(opts).map(|f| report.fast_open = Some(f)),
            Section::Rate => rates(opts).map(|r| report.rate = Some(r)),
            Section::Idle => idle_cpu(opts).map(|i| report.idle = Some(i)),
            Section::Memory => memory(opts).map(|m| report.memory = Some(m)),
        };
        if let Err(e) = result {
            eprintln!("bench: {}: {e}", section.name());
            report.notes.push(format!("{} failed: {e}", section.name()));
            report.failed.push(section);
        }
    }
    report
}

fn packets(net: &Net) -> (u64, u64) {
    net.interfaces()
        .iter()
        .fold((0, 0), |(tx, rx), i| (tx + i.tx_packets, rx + i.rx_packets))
}

// ---------------------------------------------------------------------------------------------
// Section: throughput

fn throughput(opts: &Options, notes: &mut Vec<String>) -> Result<Throughput, String> {
    let window = Duration::from_secs_f64(opts.seconds);
    let mut rows = Vec::new();

    // The stack on a TUN device, and the kernel on its other side.
    let ns = Netns::new("bench-tun")?;
    let mtu = opts.mtu;
    let net = start_stack(
        &ns,
        TUN,
        (STACK_ADDR, KERNEL_ADDR),
        mtu,
        StackConfig::default(),
    )?;
    let tun_stats = |ns: &Netns| ns.run(|| kernel_tx_stats(TUN)).ok().flatten();
    let delta = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| match (a, b) {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
        _ => None,
    };

    progress(opts, "stack -> kernel over TUN");
    let listener = kernel_listener(&ns, SocketAddr::from((KERNEL_ADDR, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let (p0, k0) = (packets(&net), tun_stats(&ns));
    let sample = measure(
        window,
        move || kernel_accept(listener),
        || stack_connect(&net, to),
    )
    .map_err(|e| format!("stack -> kernel: {e}"))?;
    let (p1, k1) = (packets(&net), tun_stats(&ns));
    rows.push(Row {
        key: "stack_to_kernel",
        label: format!("stack -> kernel (TUN, MTU {mtu})"),
        sample,
        stack_packets: Some((p1.0 - p0.0, p1.1 - p0.1)),
        kernel_tun_tx: delta(k0, k1),
    });

    progress(opts, "kernel -> stack over TUN");
    let at = SocketAddr::from((STACK_ADDR, LISTEN_PORT));
    let listener = stack_listener(&net, at)?;
    let (p0, k0) = (packets(&net), tun_stats(&ns));
    let sample = measure(
        window,
        move || stack_accept(&listener),
        || kernel_connect(&ns, at),
    )
    .map_err(|e| format!("kernel -> stack: {e}"))?;
    let (p1, k1) = (packets(&net), tun_stats(&ns));
    rows.push(Row {
        key: "kernel_to_stack",
        label: format!("kernel -> stack (TUN, MTU {mtu})"),
        sample,
        stack_packets: Some((p1.0 - p0.0, p1.1 - p0.1)),
        kernel_tun_tx: delta(k0, k1),
    });
    net.stop();
    drop(net);

    // Kernel to kernel over a veth pair, each end in a namespace of its own.
    let mut offloads = None;
    if let Err(e) = veth_runs(opts, window, &mut rows, &mut offloads) {
        notes.push(format!("veth comparison incomplete: {e}"));
    }

    progress(opts, "kernel -> kernel over loopback");
    let lo_mtu = ns
        .run(|| Link::by_name("lo").and_then(|l| l.mtu()))?
        .map_err(|e| e.to_string())?;
    let listener = kernel_listener(&ns, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let sample = measure(
        window,
        move || kernel_accept(listener),
        || kernel_connect(&ns, to),
    )
    .map_err(|e| format!("kernel -> kernel over loopback: {e}"))?;
    rows.push(Row {
        key: "kernel_to_kernel_loopback",
        label: format!("kernel -> kernel (loopback, MTU {lo_mtu})"),
        sample,
        stack_packets: None,
        kernel_tun_tx: None,
    });

    let reference = [
        "kernel_to_kernel_veth_offloads_off",
        "kernel_to_kernel_veth_offloads_on",
    ]
    .iter()
    .find_map(|key| rows.iter().position(|r| r.key == *key))
    .or_else(|| {
        rows.iter()
            .position(|r| r.key == "kernel_to_kernel_loopback")
    });
    Ok(Throughput {
        rows,
        reference,
        offloads_off: offloads,
    })
}

fn veth_runs(
    opts: &Options,
    window: Duration,
    rows: &mut Vec<Row>,
    offloads: &mut Option<&'static str>,
) -> Result<(), String> {
    let mtu = opts.mtu;
    let (a, b) = veth_pair(mtu)?;
    let one = |what: &str| -> Result<Sample, String> {
        let listener = kernel_listener(&b, SocketAddr::from((VETH_B_ADDR, 0)))?;
        let to = listener.local_addr().map_err(|e| e.to_string())?;
        measure(
            window,
            move || kernel_accept(listener),
            || kernel_connect(&a, to),
        )
        .map_err(|e| format!("kernel -> kernel over veth, {what}: {e}"))
    };

    progress(opts, "kernel -> kernel over veth, offloads on");
    let on = one("offloads on")?;
    progress(opts, "kernel -> kernel over veth, offloads off");
    let off = (|| {
        let how = a.run(|| offloads_off(VETH_A))??;
        b.run(|| offloads_off(VETH_B))??;
        Ok::<_, String>((how, one("offloads off")?))
    })();
    let on = Row {
        key: "kernel_to_kernel_veth_offloads_on",
        label: format!("kernel -> kernel (veth, MTU {mtu}, offloads on)"),
        sample: on,
        stack_packets: None,
        kernel_tun_tx: None,
    };
    match off {
        Ok((how, sample)) => {
            *offloads = Some(how);
            rows.push(Row {
                key: "kernel_to_kernel_veth_offloads_off",
                label: format!("kernel -> kernel (veth, MTU {mtu}, offloads off)"),
                sample,
                stack_packets: None,
                kernel_tun_tx: None,
            });
            rows.push(on);
            Ok(())
        }
        Err(e) => {
            // Keep what was measured; the reference falls back to offloads on.
            rows.push(on);
            Err(format!("no offloads-off figure: {e}"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Section: fastopen

/// One of the two stacks of the `fastopen` section.
struct Variant {
    layer: bool,
    net: Net,
    kernel: Ipv4Addr,
    listener: Arc<TcpListener>,
    at: SocketAddrV4,
}

impl Variant {
    fn name(&self) -> &'static str {
        if self.layer {
            "layer active"
        } else {
            "layer off"
        }
    }

    fn start(
        ns: &Netns,
        layer: bool,
        tun: &'static str,
        (stack, kernel): (Ipv4Addr, Ipv4Addr),
        mtu: u32,
    ) -> Result<Variant, String> {
        let mut config = StackConfig::default();
        config.fast_open_layer = layer;
        let net = start_stack(ns, tun, (stack, kernel), mtu, config)?;
        let at = SocketAddrV4::new(stack, LISTEN_PORT);
        let listener = stack_listener(&net, at.into())?;
        let key: CookieKey = FAST_OPEN_KEY.parse().map_err(|e| format!("{e}"))?;
        // Without the layer this is accepted and does nothing.
        net.set_fast_open(listener.fd(), Some(FastOpenServerConfig::new(key)))
            .map_err(|e| format!("set_fast_open: {e}"))?;
        Ok(Variant {
            layer,
            net,
            kernel,
            listener: Arc::new(listener),
            at,
        })
    }

    /// One connection each way, so that each side caches the other's cookie.
    fn fetch_cookies(&self, ns: &Netns) -> Result<(), String> {
        // The stack's client asks the kernel's server.
        let listener = kernel_listener(ns, SocketAddr::from((self.kernel, 0)))?;
        let to = listener.local_addr().map_err(|e| e.to_string())?;
        let server = thread::spawn(move || -> Result<(), String> {
            let mut s = kernel_accept(listener)?;
            let mut sink = Vec::new();
            s.read_to_end(&mut sink).map_err(|e| e.to_string())?;
            Ok(())
        });
        let conn = StackConn::connectx(&self.net, to, CONNECT_DATA_IDEMPOTENT, b"cookie")?;
        drop(conn);
        server
            .join()
            .map_err(|_| "the kernel server panicked".to_owned())?
            .map_err(|e| format!("fetching the kernel's cookie: {e}"))?;
        if self.layer
            && !self
                .net
                .cookie_cache()
                .iter()
                .any(|e| e.server == IpAddr::V4(self.kernel) && e.cookie.is_some())
        {
            return Err("the kernel's server gave the stack no Fast Open cookie".into());
        }

        // The kernel's client asks the stack's server.
        let listener = Arc::clone(&self.listener);
        let server = thread::spawn(move || -> Result<(), String> {
            let mut s = stack_accept(&listener)?;
            let mut sink = Vec::new();
            s.read_to_end(&mut sink).map_err(|e| e.to_string())?;
            Ok(())
        });
        let mut client = kernel_fast_open_connect(ns, self.at)?;
        client
            .write_all(b"cookie")
            .map_err(|e| format!("kernel client: {e}"))?;
        drop(client);
        server
            .join()
            .map_err(|_| "the stack server panicked".to_owned())?
            .map_err(|e| format!("giving the kernel a cookie: {e}"))
    }

    /// Stack to kernel, on a connection made with `CONNECT_DATA_IDEMPOTENT`.
    fn stack_to_kernel(&self, ns: &Netns, window: Duration) -> Result<(Sample, usize), String> {
        let listener = kernel_listener(ns, SocketAddr::from((self.kernel, 0)))?;
        let to = listener.local_addr().map_err(|e| e.to_string())?;
        let mut syn_data = 0;
        let sample = measure(
            window,
            move || kernel_accept(listener),
            || {
                let first = vec![0x5au8; SYN_DATA];
                let conn = StackConn::connectx(&self.net, to, CONNECT_DATA_IDEMPOTENT, &first)?;
                let info = self
                    .net
                    .fast_open_info(conn.fd)
                    .map_err(|e| format!("fast_open_info: {e}"))?;
                if self.layer {
                    syn_data = fast_open_client_check(info)?;
                }
                Ok(conn)
            },
        )?;
        Ok((sample, syn_data))
    }

    /// Kernel to stack, from a kernel client with `TCP_FASTOPEN_CONNECT`.
    fn kernel_to_stack(&self, ns: &Netns, window: Duration) -> Result<(Sample, usize), String> {
        let listener = Arc::clone(&self.listener);
        let net = self.net.clone();
        let layer = self.layer;
        let syn_data = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&syn_data);
        let sample = measure(
            window,
            move || {
                let s = stack_accept(&listener)?;
                let info = net
                    .server_fast_open_info(s.fd())
                    .map_err(|e| format!("server_fast_open_info: {e}"))?;
                if layer {
                    match info {
                        Some(i) if i.cookie_valid == Some(true) && i.syn_data > 0 => {
                            seen.store(i.syn_data, Ordering::Relaxed);
                        }
                        other => {
                            return Err(format!(
                                "the kernel's connection was no Fast Open one: {other:?}"
                            ))
                        }
                    }
                }
                Ok(s)
            },
            || kernel_fast_open_connect(ns, self.at),
        )?;
        Ok((sample, syn_data.load(Ordering::Relaxed)))
    }
}

/// The SYN data of a client connection, if Fast Open carried all of it.
fn fast_open_client_check(info: Option<FastOpenInfo>) -> Result<usize, String> {
    match info {
        Some(i) if i.syn_data_sent > 0 && i.syn_data_acked == i.syn_data_sent => {
            if i.fallback.is_none() {
                return Ok(i.syn_data_acked);
            }
            Err(format!("the connection fell back: {i:?}"))
        }
        other => Err(format!("the connection was no Fast Open one: {other:?}")),
    }
}

fn fast_open_cost(opts: &Options) -> Result<FastOpenCost, String> {
    let window = Duration::from_secs_f64(opts.seconds);
    let ns = Netns::new("bench-fastopen")?;
    // 0x1 client, 0x2 server, 0x400 server on every listener without the socket option.
    ns.set_sysctl("net/ipv4/tcp_fastopen", "1027")?;
    let variants = [
        Variant::start(&ns, true, TUN, (STACK_ADDR, KERNEL_ADDR), opts.mtu)?,
        Variant::start(
            &ns,
            false,
            OFF_TUN,
            (OFF_STACK_ADDR, OFF_KERNEL_ADDR),
            opts.mtu,
        )?,
    ];
    progress(opts, "Fast Open layer: fetching cookies");
    for v in &variants {
        v.fetch_cookies(&ns)
            .map_err(|e| format!("{}: {e}", v.name()))?;
    }
    let mut s2k = LayerRuns::default();
    let mut k2s = LayerRuns::default();
    for round in 0..FAST_OPEN_ROUNDS {
        let order: [&Variant; 2] = if round % 2 == 0 {
            [&variants[0], &variants[1]]
        } else {
            [&variants[1], &variants[0]]
        };
        for v in order {
            progress(
                opts,
                &format!(
                    "Fast Open layer, round {}/{FAST_OPEN_ROUNDS}: stack -> kernel, {}",
                    round + 1,
                    v.name()
                ),
            );
            let (sample, syn) = v
                .stack_to_kernel(&ns, window)
                .map_err(|e| format!("stack -> kernel, {}: {e}", v.name()))?;
            s2k.push(v.layer, sample, syn);
        }
        for v in order {
            progress(
                opts,
                &format!(
                    "Fast Open layer, round {}/{FAST_OPEN_ROUNDS}: kernel -> stack, {}",
                    round + 1,
                    v.name()
                ),
            );
            let (sample, syn) = v
                .kernel_to_stack(&ns, window)
                .map_err(|e| format!("kernel -> stack, {}: {e}", v.name()))?;
            k2s.push(v.layer, sample, syn);
        }
    }
    for v in &variants {
        v.net.stop();
    }
    Ok(FastOpenCost {
        stack_to_kernel: s2k,
        kernel_to_stack: k2s,
    })
}

impl LayerRuns {
    fn push(&mut self, layer: bool, sample: Sample, syn_data: usize) {
        if layer {
            self.active.push(sample);
            self.syn_data.push(syn_data);
        } else {
            self.off.push(sample);
        }
    }

    fn ratio(&self) -> Option<f64> {
        let off = median(&self.off);
        (off > 0.0).then(|| median(&self.active) / off)
    }
}

/// The median Gbit/s of `samples` (0 for none).
fn median(samples: &[Sample]) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(Sample::gbps).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

// ---------------------------------------------------------------------------------------------
// Section: rate

impl RateSample {
    fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.connections as f64 / secs
        } else {
            0.0
        }
    }
}

/// The server side of one `rate` connection: read the 1-byte request, answer it, read up to
/// the client's FIN, close. `Ok(false)` for the request that says stop.
fn serve_one(mut s: impl Read + Write) -> Result<bool, String> {
    let mut byte = [0u8; 1];
    match read_some(&mut s, &mut byte) {
        Ok(1) if byte[0] == QUIT => return Ok(false),
        Ok(1) => {}
        Ok(_) => return Err("the client closed before its request".into()),
        Err(e) => return Err(format!("server reading: {e}")),
    }
    s.write_all(&byte)
        .map_err(|e| format!("server writing: {e}"))?;
    match read_some(&mut s, &mut byte) {
        Ok(0) => Ok(true),
        Ok(_) => Err("the client sent more than its request".into()),
        Err(e) => Err(format!("server waiting for the FIN: {e}")),
    }
}

/// The client side of one `rate` connection, after connecting.
fn ask_one(mut s: impl Read + Write) -> Result<(), String> {
    s.write_all(b"r")
        .map_err(|e| format!("client writing: {e}"))?;
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte)
        .map_err(|e| format!("client reading: {e}"))
}

/// Serve `rate` connections on a thread of its own until the stop request.
fn rate_server<S: Read + Write>(
    mut accept: impl FnMut() -> Result<S, String> + Send + 'static,
) -> JoinHandle<Result<(), String>> {
    thread::spawn(move || {
        while serve_one(accept()?)? {}
        Ok(())
    })
}

/// The timed client loop of a `rate` run, then the stop request.
fn rate_client<S: Read + Write>(
    mut connect: impl FnMut() -> Result<S, String>,
) -> Result<RateSample, String> {
    for _ in 0..RATE_WARMUP {
        ask_one(connect()?)?;
    }
    let start = Instant::now();
    let mut connections = 0;
    while connections < RATE_MAX && start.elapsed() < RATE_WINDOW {
        ask_one(connect()?)?;
        connections += 1;
    }
    let elapsed = start.elapsed();
    connect()?
        .write_all(&[QUIT])
        .map_err(|e| format!("client asking the server to stop: {e}"))?;
    Ok(RateSample {
        connections,
        elapsed,
    })
}

/// Wait for a `rate` server, unless the client failed (then the server may wait forever).
fn rate_outcome(
    what: &str,
    client: Result<RateSample, String>,
    server: JoinHandle<Result<(), String>>,
) -> Result<RateSample, String> {
    let sample = client.map_err(|e| format!("{what}: {e}"))?;
    server
        .join()
        .map_err(|_| format!("{what}: the server panicked"))?
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(sample)
}

fn rates(opts: &Options) -> Result<Rates, String> {
    let ns = Netns::new("bench-rate")?;
    let net = start_stack(
        &ns,
        TUN,
        (STACK_ADDR, KERNEL_ADDR),
        opts.mtu,
        StackConfig::default(),
    )?;

    progress(opts, "connection rate, stack -> kernel");
    let listener = kernel_listener(&ns, SocketAddr::from((KERNEL_ADDR, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let server = rate_server(move || {
        let (s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        s.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(s)
    });
    let client = rate_client(|| stack_connect(&net, to));
    let stack_to_kernel = rate_outcome("stack -> kernel", client, server)?;

    progress(opts, "connection rate, kernel -> stack");
    let at = SocketAddr::from((STACK_ADDR, LISTEN_PORT));
    let listener = stack_listener(&net, at)?;
    let server = rate_server(move || stack_accept(&listener));
    let client = ns.run(move || {
        rate_client(|| {
            let s =
                std::net::TcpStream::connect(at).map_err(|e| format!("connect to {at}: {e}"))?;
            s.set_read_timeout(Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            Ok(s)
        })
    })?;
    let kernel_to_stack = rate_outcome("kernel -> stack", client, server)?;
    net.stop();

    progress(opts, "connection rate, kernel -> kernel over veth");
    let (a, b) = veth_pair(opts.mtu)?;
    let listener = kernel_listener(&b, SocketAddr::from((VETH_B_ADDR, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let server = rate_server(move || {
        let (s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        s.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(s)
    });
    let client = a.run(move || {
        rate_client(|| {
            let s =
                std::net::TcpStream::connect(to).map_err(|e| format!("connect to {to}: {e}"))?;
            s.set_read_timeout(Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            Ok(s)
        })
    })?;
    let kernel_to_kernel = rate_outcome("kernel -> kernel over veth", client, server)?;
    Ok(Rates {
        stack_to_kernel,
        kernel_to_stack,
        kernel_to_kernel,
    })
}

// ---------------------------------------------------------------------------------------------
// Sections: idle and memory

/// A kernel server in `ns` that accepts `count` connections and holds them, open and idle,
/// until released.
struct Holder {
    to: SocketAddr,
    count: usize,
    /// How many it has accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Why it stopped accepting early, if it did.
    error: mpsc::Receiver<String>,
    release: mpsc::Sender<()>,
}

impl Holder {
    fn start(ns: &Netns, count: usize) -> Result<Holder, String> {
        let listener = kernel_listener(ns, SocketAddr::from((KERNEL_ADDR, 0)))?;
        let to = listener.local_addr().map_err(|e| e.to_string())?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let (fail, error) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        // Every slot written now, so that filling them later adds nothing to the RSS.
        let mut held: Vec<Option<std::net::TcpStream>> = (0..count).map(|_| None).collect();
        let counter = Arc::clone(&accepted);
        thread::spawn(move || {
            for slot in held.iter_mut() {
                match listener.accept() {
                    Ok((s, _)) => *slot = Some(s),
                    Err(e) => {
                        let _ = fail.send(format!("kernel accept: {e}"));
                        return;
                    }
                }
                counter.fetch_add(1, Ordering::Release);
            }
            let _ = released.recv();
            drop(held);
        });
        Ok(Holder {
            to,
            count,
            accepted,
            error,
            release,
        })
    }

    /// Wait until it has accepted `n` connections.
    fn wait_accepted(&self, n: usize) -> Result<(), String> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let accepted = self.accepted.load(Ordering::Acquire);
            if accepted >= n {
                return Ok(());
            }
            if let Ok(e) = self.error.try_recv() {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the kernel server accepted only {accepted} of {n} connections"
                ));
            }
            thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.release.send(());
    }
}

/// The stack's last `count` connections to `holder`, all established and accepted, made
/// `OPEN_BATCH` at a time (a batch once the one before is accepted, so that the kernel's
/// accept queue never overflows); each slot was written before the first connection.
fn open_idle(net: &Net, holder: &Holder, count: usize) -> Result<Vec<Option<StackConn>>, String> {
    let mut conns: Vec<Option<StackConn>> = (0..count).map(|_| None).collect();
    let before = holder.count.saturating_sub(count);
    for (b, batch) in conns.chunks_mut(OPEN_BATCH).enumerate() {
        holder.wait_accepted(before + b * OPEN_BATCH)?;
        for slot in batch.iter_mut() {
            *slot = Some(StackConn::connect_nonblocking(net, holder.to)?);
        }
        let mut pending: Vec<PollFd> = batch
            .iter()
            .flatten()
            .map(|c| PollFd::new(c.fd, POLLOUT))
            .collect();
        let deadline = Instant::now() + IO_TIMEOUT;
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{} connections of batch {b} still not established after {IO_TIMEOUT:?}",
                    pending.len()
                ));
            }
            net.poll(&mut pending, Some(left))
                .map_err(|e| format!("poll: {e}"))?;
            let mut still = Vec::new();
            for p in pending {
                if p.revents == 0 {
                    still.push(PollFd::new(p.fd, POLLOUT));
                } else if let Some(e) = net.so_error(p.fd).map_err(|e| e.to_string())? {
                    return Err(format!("connecting to {}: {e}", holder.to));
                }
            }
            pending = still;
        }
        for c in batch.iter().flatten() {
            net.set_nonblocking(c.fd, false)
                .map_err(|e| e.to_string())?;
        }
    }
    holder.wait_accepted(holder.count)?;
    Ok(conns)
}

fn idle_cpu(opts: &Options) -> Result<IdleCpu, String> {
    progress(
        opts,
        &format!(
            "idle: {IDLE_CONNECTIONS} connections, {} s",
            opts.idle_seconds
        ),
    );
    let ns = Netns::new("bench-idle")?;
    let others = runtime_threads();
    let net = start_stack(
        &ns,
        TUN,
        (STACK_ADDR, KERNEL_ADDR),
        opts.mtu,
        StackConfig::default(),
    )?;
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
        .filter(|c| c.net.peer_addr(c.fd).is_ok())
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

fn memory(opts: &Options) -> Result<Memory, String> {
    let count = opts.connections;
    progress(opts, &format!("memory: {count} idle connections"));
    // The kernel server holds one descriptor per connection.
    let nofile_raised = tun_driver::kernel::raise_fd_limit(count as u64 + 1024)
        .map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?
        .map(|old| (old as usize, count + 1024));
    let ns = Netns::new("bench-memory")?;
    let net = start_stack(
        &ns,
        TUN,
        (STACK_ADDR, KERNEL_ADDR),
        opts.mtu,
        StackConfig::default(),
    )?;
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

/// Kernel thread ids of the process's stack runtime threads.
fn runtime_threads() -> Vec<u32> {
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
fn new_runtime_thread(others: &[u32]) -> Result<u32, String> {
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
struct ThreadCpu {
    utime: u64,
    stime: u64,
    runtime_ns: Option<u64>,
    /// Voluntary and involuntary context switches.
    switches: Option<(u64, u64)>,
}

impl ThreadCpu {
    fn read(tid: u32) -> Result<ThreadCpu, String> {
        let dir = format!("/proc/self/task/{tid}");
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
        let count = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
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
fn vm_kib() -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("/proc/self/status: no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmSize:")?))
}

// ---------------------------------------------------------------------------------------------
// Output

impl Throughput {
    fn ratio(&self, row: &Row) -> Option<f64> {
        let reference = self.rows.get(self.reference?)?.sample.gbps();
        (reference > 0.0).then(|| row.sample.gbps() / reference)
    }

    fn table(&self, opts: &Options, out: &mut String) {
        let width = self
            .rows
            .iter()
            .map(|r| r.label.len() + 6)
            .max()
            .unwrap_or(0)
            .max("direction".len());
        let _ = writeln!(
            out,
            "{:<width$} | {:>7} | ratio to kernel reference",
            "direction", "Gbit/s"
        );
        let _ = writeln!(out, "{:-<width$}-+-{:->7}-+-{:-<25}", "", "", "");
        for (i, row) in self.rows.iter().enumerate() {
            let label = if Some(i) == self.reference {
                format!("{} [ref]", row.label)
            } else {
                row.label.clone()
            };
            let ratio = self
                .ratio(row)
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"));
            let _ = writeln!(
                out,
                "{label:<width$} | {:>7.3} | {ratio}",
                row.sample.gbps()
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} s per run from the receiver's first byte; Gbit/s of TCP payload read by the \
             receiver; {} CPUs",
            opts.seconds,
            cpus()
        );
        if let Some(reference) = self.reference.and_then(|i| self.rows.get(i)) {
            let _ = writeln!(out, "reference: {}", reference.label);
        }
        if let Some(how) = self.offloads_off {
            let _ = writeln!(out, "veth offloads off with: {how}");
        }
        for row in &self.rows {
            let mut parts = Vec::new();
            if let Some((tx, rx)) = row.stack_packets {
                parts.push(format!("stack sent {tx} and received {rx} packets"));
            }
            if let Some((tx, dropped)) = row.kernel_tun_tx {
                parts.push(format!(
                    "the kernel sent {tx} packets into {TUN} and dropped {dropped} (queue full)"
                ));
            }
            if !parts.is_empty() {
                let _ = writeln!(out, "{}: {}", row.label, parts.join("; "));
            }
        }
    }

    fn json(&self, out: &mut String) {
        let reference = self.reference.and_then(|i| self.rows.get(i));
        let _ = write!(
            out,
            ",\"reference\":{}",
            reference.map_or_else(|| "null".to_owned(), |r| json_str(r.key))
        );
        let _ = write!(
            out,
            ",\"veth_offloads_off_method\":{}",
            self.offloads_off
                .map_or_else(|| "null".to_owned(), json_str)
        );
        out.push_str(",\"results\":{");
        for (i, row) in self.rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{}:{{\"label\":{},\"gbit_per_s\":{:.4},\"bytes\":{},\"elapsed_s\":{:.6},\"ratio_to_reference\":{}",
                json_str(row.key),
                json_str(&row.label),
                row.sample.gbps(),
                row.sample.bytes,
                row.sample.elapsed.as_secs_f64(),
                self.ratio(row)
                    .map_or_else(|| "null".to_owned(), |r| format!("{r:.4}"))
            );
            if let Some((tx, rx)) = row.stack_packets {
                let _ = write!(out, ",\"stack_tx_packets\":{tx},\"stack_rx_packets\":{rx}");
            }
            if let Some((tx, dropped)) = row.kernel_tun_tx {
                let _ = write!(
                    out,
                    ",\"kernel_tun_tx_packets\":{tx},\"kernel_tun_tx_dropped\":{dropped}"
                );
            }
            out.push('}');
        }
        out.push('}');
    }
}

impl FastOpenCost {
    fn directions(&self) -> [(&'static str, &'static str, &LayerRuns); 2] {
        [
            ("stack_to_kernel", "stack -> kernel", &self.stack_to_kernel),
            ("kernel_to_stack", "kernel -> stack", &self.kernel_to_stack),
        ]
    }

    fn table(&self, opts: &Options, out: &mut String) {
        let _ = writeln!(
            out,
            "Fast Open layer cost: bulk throughput over TUN, MTU {}, layer active vs \
             fast_open_layer: false",
            opts.mtu
        );
        let _ = writeln!(
            out,
            "{:<15} | {:>13} | {:>10} | {:>10} | runs active / off (Gbit/s)",
            "direction", "active Gbit/s", "off Gbit/s", "active/off"
        );
        let _ = writeln!(
            out,
            "{:-<15}-+-{:->13}-+-{:->10}-+-{:->10}-+-{:-<27}",
            "", "", "", "", ""
        );
        for (_, label, runs) in self.directions() {
            let list = |s: &[Sample]| {
                s.iter()
                    .map(|s| format!("{:.3}", s.gbps()))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(
                out,
                "{label:<15} | {:>13.3} | {:>10.3} | {:>10} | {} / {}",
                median(&runs.active),
                median(&runs.off),
                runs.ratio()
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.3}")),
                list(&runs.active),
                list(&runs.off)
            );
        }
        let _ = writeln!(out);
        let syn = |runs: &LayerRuns| {
            let (lo, hi) = (
                runs.syn_data.iter().min().copied().unwrap_or(0),
                runs.syn_data.iter().max().copied().unwrap_or(0),
            );
            if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo}-{hi}")
            }
        };
        let _ = writeln!(
            out,
            "medians of {FAST_OPEN_ROUNDS} runs per variant, interleaved, {} s each from the \
             receiver's first byte; with the layer active every measured connection was a Fast \
             Open one: stack -> kernel SYNs carried {} bytes, all acknowledged by the kernel; \
             kernel -> stack SYNs carried a valid cookie and {} bytes",
            opts.seconds,
            syn(&self.stack_to_kernel),
            syn(&self.kernel_to_stack)
        );
    }

    fn json(&self, opts: &Options, out: &mut String) {
        let _ = write!(
            out,
            "{{\"mtu\":{},\"seconds\":{},\"rounds\":{FAST_OPEN_ROUNDS}",
            opts.mtu, opts.seconds
        );
        for (key, _, runs) in self.directions() {
            let list = |s: &[Sample]| {
                s.iter()
                    .map(|s| format!("{:.4}", s.gbps()))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let syn: Vec<String> = runs.syn_data.iter().map(usize::to_string).collect();
            let _ = write!(
                out,
                ",{}:{{\"layer_active_gbit_per_s\":{:.4},\"layer_off_gbit_per_s\":{:.4},\
                 \"ratio_active_to_off\":{},\"runs_layer_active_gbit_per_s\":[{}],\
                 \"runs_layer_off_gbit_per_s\":[{}],\"syn_data_bytes\":[{}]}}",
                json_str(key),
                median(&runs.active),
                median(&runs.off),
                runs.ratio()
                    .map_or_else(|| "null".to_owned(), |r| format!("{r:.4}")),
                list(&runs.active),
                list(&runs.off),
                syn.join(",")
            );
        }
        out.push('}');
    }
}

impl Rates {
    fn rows(&self) -> [(&'static str, &'static str, RateSample); 3] {
        [
            (
                "stack_to_kernel",
                "stack -> kernel (TUN)",
                self.stack_to_kernel,
            ),
            (
                "kernel_to_stack",
                "kernel -> stack (TUN)",
                self.kernel_to_stack,
            ),
            (
                "kernel_to_kernel_veth",
                "kernel -> kernel (veth) [ref]",
                self.kernel_to_kernel,
            ),
        ]
    }

    fn ratio(&self, sample: &RateSample) -> Option<f64> {
        let reference = self.kernel_to_kernel.per_second();
        (reference > 0.0).then(|| sample.per_second() / reference)
    }

    fn table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "connection rate: connect, 1-byte request, 1-byte reply, close; one at a time"
        );
        let _ = writeln!(
            out,
            "{:<29} | {:>8} | {:>11} | ratio to kernel -> kernel",
            "client -> server", "conn/s", "connections"
        );
        let _ = writeln!(out, "{:-<29}-+-{:->8}-+-{:->11}-+-{:-<25}", "", "", "", "");
        for (_, label, sample) in self.rows() {
            let ratio = self
                .ratio(&sample)
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"));
            let _ = writeln!(
                out,
                "{label:<29} | {:>8.0} | {:>11} | {ratio}",
                sample.per_second(),
                sample.connections
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "each run: {} s or {RATE_MAX} connections, whichever came first, timed on the \
             client after {RATE_WARMUP} untimed ones",
            RATE_WINDOW.as_secs_f64()
        );
    }

    fn json(&self, out: &mut String) {
        let _ = write!(
            out,
            "{{\"window_s\":{},\"max_connections\":{RATE_MAX},\"reference\":\"kernel_to_kernel_veth\"",
            RATE_WINDOW.as_secs_f64()
        );
        for (key, _, sample) in self.rows() {
            let _ = write!(
                out,
                ",{}:{{\"connections_per_s\":{:.1},\"connections\":{},\"elapsed_s\":{:.6},\
                 \"ratio_to_reference\":{}}}",
                json_str(key),
                sample.per_second(),
                sample.connections,
                sample.elapsed.as_secs_f64(),
                self.ratio(&sample)
                    .map_or_else(|| "null".to_owned(), |r| format!("{r:.4}"))
            );
        }
        out.push('}');
    }
}

impl IdleCpu {
    fn cpu_ms(&self) -> f64 {
        (self.utime_ticks + self.stime_ticks) as f64 * 1000.0 / self.clk_tck as f64
    }

    fn table(&self, out: &mut String) {
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
        if let Some(ns) = self.runtime_ns {
            finer.push(format!("{:.3} ms on CPU by schedstat", ns as f64 / 1e6));
        }
        if let Some((voluntary, involuntary)) = self.switches {
            finer.push(format!(
                "{voluntary} voluntary and {involuntary} involuntary context switches"
            ));
        }
        if let Some(ns) = self.setup_ns {
            finer.push(format!(
                "before, starting and opening the connections: {:.3} ms (thread {})",
                ns as f64 / 1e6,
                self.tid
            ));
        }
        if !finer.is_empty() {
            let _ = writeln!(out, "  {}", finer.join("; "));
        }
    }

    fn json(&self, out: &mut String) {
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
            self.runtime_ns
                .map_or_else(|| "null".to_owned(), |ns| format!("{:.3}", ns as f64 / 1e6)),
            common::opt(&self.switches.map(|s| s.0), false),
            common::opt(&self.switches.map(|s| s.1), false),
            self.setup_ns
                .map_or_else(|| "null".to_owned(), |ns| format!("{:.3}", ns as f64 / 1e6))
        );
    }
}

impl Memory {
    fn increase_kib(&self) -> i64 {
        self.rss_after_kib as i64 - self.rss_before_kib as i64
    }

    fn per_connection_bytes(&self) -> f64 {
        self.increase_kib() as f64 * 1024.0 / self.connections as f64
    }

    fn table(&self, out: &mut String) {
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

    fn json(&self, out: &mut String) {
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

impl Report {
    fn table(&self, opts: &Options) -> String {
        let mut out = String::new();
        let mut sections: Vec<String> = Vec::new();
        for section in opts.sections() {
            let mut s = String::new();
            match section {
                Section::Throughput => {
                    if let Some(t) = &self.throughput {
                        t.table(opts, &mut s);
                    }
                }
                Section::FastOpen => {
                    if let Some(f) = &self.fast_open {
                        f.table(opts, &mut s);
                    }
                }
                Section::Rate => {
                    if let Some(r) = &self.rate {
                        r.table(&mut s);
                    }
                }
                Section::Idle => {
                    if let Some(i) = &self.idle {
                        i.table(&mut s);
                    }
                }
                Section::Memory => {
                    if let Some(m) = &self.memory {
                        m.table(&mut s);
                    }
                }
            }
            if !s.is_empty() {
                sections.push(s);
            }
        }
        out.push_str(&sections.join("\n"));
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    fn json(&self, opts: &Options) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"mtu\":{},\"seconds\":{},\"cpus\":{},\"idle_seconds\":{},\"connections\":{}",
            opts.mtu,
            opts.seconds,
            cpus(),
            opts.idle_seconds,
            opts.connections
        );
        let names: Vec<String> = opts.sections().map(|s| json_str(s.name())).collect();
        let _ = write!(out, ",\"sections\":[{}]", names.join(","));
        match &self.throughput {
            Some(t) => t.json(&mut out),
            None => {
                out.push_str(",\"reference\":null,\"veth_offloads_off_method\":null,\"results\":{}")
            }
        }
        out.push_str(",\"fast_open_layer\":");
        match &self.fast_open {
            Some(f) => f.json(opts, &mut out),
            None => out.push_str("null"),
        }
        out.push_str(",\"connection_rate\":");
        match &self.rate {
            Some(r) => r.json(&mut out),
            None => out.push_str("null"),
        }
        out.push_str(",\"idle_cpu\":");
        match &self.idle {
            Some(i) => i.json(&mut out),
            None => out.push_str("null"),
        }
        out.push_str(",\"memory\":");
        match &self.memory {
            Some(m) => m.json(&mut out),
            None => out.push_str("null"),
        }
        let failed: Vec<String> = self.failed.iter().map(|s| json_str(s.name())).collect();
        let notes: Vec<String> = self.notes.iter().map(|n| json_str(n)).collect();
        let _ = write!(
            out,
            ",\"failed\":[{}],\"notes\":[{}]",
            failed.join(","),
            notes.join(",")
        );
        out.push('}');
        out
    }
}

fn cpus() -> usize {
    thread::available_parallelism().map_or(0, |n| n.get())
}

fn json_str(s: &str) -> String {
    common::json_string(s.as_bytes())
}
