//! Bulk TCP throughput of the connectx stack against the Linux kernel, over a TUN device, with
//! kernel-to-kernel figures measured in the same run for comparison.
//!
//! ```text
//! sudo cargo run --release --example bench -- [--mtu N] [--seconds S] [--json]
//! ```
//!
//! Everything happens in network namespaces of the benchmark's own, made with
//! `unshare(CLONE_NEWNET)` on dedicated threads: they vanish with those threads (or with the
//! process), and nothing on the host changes.
//!
//! - `stack -> kernel`: the stack's `TcpStream` writes 256 KiB chunks as fast as it can to a
//!   kernel `std::net::TcpListener` over TUN device `cxb0` (stack 192.0.2.2, kernel 192.0.2.1);
//!   the kernel side reads and discards.
//! - `kernel -> stack`: a kernel `std::net::TcpStream` writes to the stack's `TcpListener`.
//! - `kernel -> kernel` over a veth pair whose ends live in two more private namespaces (so that
//!   packets really cross the pair), at the same MTU, with the kernel's offloads on (its
//!   default: TSO/GSO hand 64 KiB segments across the pair) and off (one skb per packet, as
//!   over TUN). Offloads are turned off with `ethtool -K … tso off gso off gro off` when
//!   `ethtool` is installed, else TSO/GSO are capped at one segment with
//!   `ip link set … gso_max_segs 1` (veth does no GRO unless asked to).
//! - `kernel -> kernel` over loopback in the TUN test's namespace, for scale.
//!
//! Each run lasts `--seconds` from the receiver's first byte; the figure is the payload the
//! receiver read after that first read, over the time it took, in Gbit/s (10^9 bit/s). The
//! ratios are against the reference: veth with offloads off when it could be measured, else
//! veth with offloads on, else loopback.

mod common;

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use connectx_api::{Net, TcpListener, TcpStream};
use tun_driver::Link;

const USAGE: &str = "usage: bench [--mtu N] [--seconds S] [--json]";
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

#[derive(Debug, Clone, Copy)]
struct Options {
    mtu: u32,
    seconds: f64,
    json: bool,
}

enum Parsed {
    Run(Options),
    Help,
}

fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut opts = Options {
        mtu: 1500,
        seconds: 3.0,
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
            "--seconds" => {
                let v = value("--seconds")?;
                opts.seconds = match v.parse::<f64>() {
                    Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => s,
                    _ => {
                        return Err(format!(
                            "--seconds {v}: expected a number of seconds above 0, at most 3600"
                        ))
                    }
                };
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
             a TUN device and a veth pair inside them (CAP_NET_ADMIN)"
        );
        return ExitCode::from(1);
    }
    match run(opts) {
        Ok(report) => {
            if opts.json {
                println!("{}", report.json(&opts));
            } else {
                print!("{}", report.table(&opts));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(1)
        }
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

// ---------------------------------------------------------------------------------------------
// Measuring

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

// ---------------------------------------------------------------------------------------------
// The runs

struct Row {
    key: &'static str,
    label: String,
    sample: Sample,
    /// Packets the stack sent and received during the run (TUN runs only).
    stack_packets: Option<(u64, u64)>,
    /// Packets the kernel sent into the TUN device and dropped (its queue full) during the run.
    kernel_tun_tx: Option<(u64, u64)>,
}

struct Report {
    rows: Vec<Row>,
    reference: Option<usize>,
    offloads_off: Option<&'static str>,
    notes: Vec<String>,
}

fn progress(opts: &Options, what: &str) {
    if !opts.json {
        eprintln!("bench: {what}…");
    }
}

fn packets(net: &Net) -> (u64, u64) {
    net.interfaces()
        .iter()
        .fold((0, 0), |(tx, rx), i| (tx + i.tx_packets, rx + i.rx_packets))
}

fn run(opts: Options) -> Result<Report, String> {
    let window = Duration::from_secs_f64(opts.seconds);
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    // The stack on a TUN device, and the kernel on its other side.
    let ns = Netns::new("bench-tun")?;
    let mtu = opts.mtu;
    let net = ns
        .run(move || {
            Net::builder()
                .tun(TUN)
                .address(&format!("{STACK_ADDR}/24"))
                .peer(&format!("{KERNEL_ADDR}/24"))
                .mtu(mtu)
                .start()
        })?
        .map_err(|e| format!("starting the stack on {TUN}: {e}"))?;
    let tun_stats = |ns: &Netns| ns.run(|| kernel_tx_stats(TUN)).ok().flatten();
    let delta = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| match (a, b) {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
        _ => None,
    };

    progress(&opts, "stack -> kernel over TUN");
    let listener = kernel_listener(&ns, SocketAddr::from((KERNEL_ADDR, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let (p0, k0) = (packets(&net), tun_stats(&ns));
    let sample = measure(
        window,
        move || kernel_accept(listener),
        || {
            let s = TcpStream::connect(&net, to).map_err(|e| format!("stack connect: {e}"))?;
            s.set_timeouts(Some(IO_TIMEOUT), Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            Ok(s)
        },
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

    progress(&opts, "kernel -> stack over TUN");
    let at = SocketAddr::from((STACK_ADDR, 5201));
    let listener =
        TcpListener::bind(&net, at).map_err(|e| format!("stack listener on {at}: {e}"))?;
    net.set_timeouts(listener.fd(), Some(IO_TIMEOUT), None)
        .map_err(|e| e.to_string())?;
    let (p0, k0) = (packets(&net), tun_stats(&ns));
    let sample = measure(
        window,
        move || {
            let (s, _) = listener
                .accept()
                .map_err(|e| format!("stack accept: {e}"))?;
            s.set_timeouts(Some(IO_TIMEOUT), Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            Ok(s)
        },
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
    match veth_runs(&opts, window, &mut rows, &mut offloads) {
        Ok(()) => {}
        Err(e) => notes.push(format!("veth comparison incomplete: {e}")),
    }

    progress(&opts, "kernel -> kernel over loopback");
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
    Ok(Report {
        rows,
        reference,
        offloads_off: offloads,
        notes,
    })
}

fn veth_runs(
    opts: &Options,
    window: Duration,
    rows: &mut Vec<Row>,
    offloads: &mut Option<&'static str>,
) -> Result<(), String> {
    let a = Netns::new("bench-veth-a")?;
    let b = Netns::new("bench-veth-b")?;
    let b_path = b.path()?;
    let mtu = opts.mtu;
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
// Output

impl Report {
    fn ratio(&self, row: &Row) -> Option<f64> {
        let reference = self.rows.get(self.reference?)?.sample.gbps();
        (reference > 0.0).then(|| row.sample.gbps() / reference)
    }

    fn table(&self, opts: &Options) -> String {
        let mut out = String::new();
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
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    fn json(&self, opts: &Options) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"mtu\":{},\"seconds\":{},\"cpus\":{}",
            opts.mtu,
            opts.seconds,
            cpus()
        );
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
        out.push_str("},\"notes\":[");
        for (i, note) in self.notes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json_str(note));
        }
        out.push_str("]}");
        out
    }
}

fn cpus() -> usize {
    thread::available_parallelism().map_or(0, |n| n.get())
}

fn json_str(s: &str) -> String {
    common::json_string(s.as_bytes())
}
