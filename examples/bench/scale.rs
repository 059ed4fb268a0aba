//! The `scale` section: the stack serving many connections, beside the kernel serving as many.
//!
//! The server is an echo server with a thread per connection ([`crate::echo`]), as
//! `examples/tun_server.rs` serves: an accept loop that starts a thread (64 KiB of stack) per
//! connection, which reads and writes back until its peer closes. On the stack it listens on the
//! TUN device through `connectx_api::TcpListener`, and the clients are kernel sockets in the
//! stack's namespace; the reference is the same server on kernel sockets, the clients at the
//! other end of a veth pair. The reference's server runs in a child process
//! ([`crate::echo_process`]: the bench binary again, in the server's namespace), so that each
//! process holds one descriptor per connection, not the bench two. Two measurements, each on
//! every server:
//!
//! - Latency with idle connections open: the clients open N connections, one at a time with
//!   blocking connects from one thread (a refused connect is counted and tried again), and leave
//!   them open and idle once the server has accepted them all; then one more connection, with
//!   `TCP_NODELAY`, plays ping-pong: it writes 64 bytes and reads them back, 2,000 times or as
//!   many as fit in 10 s, after 50 untimed (or as many as fit in 1 s). Reported: the median and
//!   the 99th percentile (nearest rank) of those round trips, in µs, and how many there were,
//!   for N = 0, 1,000 and `--scale-connections` (default 10,000; a smaller value for a quick
//!   run); the idle connections accumulate from one N to the next, the ping-pong
//!   connection is a new one each time. Ratios: to the same server's figure with no connection
//!   open (the stack's target: at most 2) and to the kernel's at the same N. Also the rate at
//!   which each step's idle connections were opened.
//! - Opening 4,000 connections at once: 4,000 client threads, released together once all are
//!   ready, each making one blocking connect (given up after [`IO_TIMEOUT`]; the kernel sends its
//!   SYN again after 1, 3 and 7 s), then writing a byte and reading its echo (each within
//!   `IO_TIMEOUT`). The byte matters: past its backlog the kernel may answer with a SYN cookie
//!   and keep nothing, or drop the handshake's last ACK, and a client that then says nothing
//!   stays connected to a server that never accepts it; the byte, sent again until acknowledged,
//!   completes the handshake, as any client with something to say does. Reported: how many
//!   connects succeeded, were refused (`ECONNREFUSED`), timed out or failed otherwise; how many
//!   connections got no echo; how many the server accepted, and the time from the release until
//!   it accepted the last one (the reference's server, in its own process, says when by the
//!   system clock, which both processes read), and until the last client had its echo; on the
//!   stack, also the packets the kernel dropped on the TUN device's queue towards the stack (its
//!   `tx_dropped`, from `/proc/thread-self/net/dev`). Ratio: the time to the last accept, stack
//!   over kernel (read it with the counts: a server that refused most connections accepted
//!   fewer).
//!
//! Both listeners have a backlog of 128: `connectx_api::TcpListener::bind` listens with 128, and
//! so does std's `TcpListener::bind` on Linux (as `ss -ltn` shows, although the namespace's
//! `net.core.somaxconn` is 4096; the bench has no dependency with which to call `listen(2)`
//! itself), so the two servers are compared at the same backlog. Past it the kernel drops the
//! SYN (the client tries again), answers with a SYN cookie, or drops the handshake's last ACK;
//! what the stack does shows in its refused count.
//!
//! The latency series and the burst each have namespaces (and a stack) of their own. Every blocking call gives up after
//! `IO_TIMEOUT`, and opening the idle connections of one step after 120 s: a measurement that
//! does is reported as failed, beside the other figures (the stack's later steps are then not
//! run). `RLIMIT_NOFILE` is raised for the kernel's descriptors: in the bench, the clients' (one
//! per connection; the stack's sockets are no kernel descriptors), in the reference's server
//! process, the server's (one per connection), each to the same figure. Memory per connection
//! is the `memory` section's figure ([`crate::memory`]); this section does not measure it
//! again.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use connectx_api::Net;

use crate::cli::Options;
use crate::conn::{IO_TIMEOUT, LISTEN_PORT};
use crate::echo::{EchoServer, THREAD_STACK};
use crate::echo_process::EchoProcess;
use crate::netns::{
    kernel_tx_stats, start_default_stack, veth_pair, Netns, STACK_ADDR, TUN, VETH_B_ADDR,
};
use crate::progress;
use crate::report::{cell, header, json_num, json_str, Part};

/// The ping-pong message, echoed whole.
const MESSAGE: [u8; 64] = [b'p'; 64];
/// Timed round trips per step, at most, and the time they may take in all.
const PING_ROUNDS: usize = 2000;
const PING_BUDGET: Duration = Duration::from_secs(10);
/// Untimed round trips first, at most, and the time they may take in all.
const PING_WARMUP: usize = 50;
const PING_WARMUP_BUDGET: Duration = Duration::from_secs(1);
/// The middle step of the latency series.
const MIDDLE_STEP: usize = 1000;
/// How long opening one step's idle connections may take.
const OPEN_BUDGET: Duration = Duration::from_secs(120);
/// Connections opened at once.
const BURST: usize = 4000;
/// The listen backlog of both servers (see the module's documentation).
const BACKLOG: usize = 128;

/// The `scale` section.
pub struct Scale {
    /// The numbers of idle connections of the latency series.
    levels: Vec<usize>,
    /// One per level; `None`: not run, a step before failed.
    stack: Vec<Option<Result<Step, String>>>,
    kernel: Vec<Option<Result<Step, String>>>,
    stack_burst: Result<Burst, String>,
    kernel_burst: Result<Burst, String>,
    /// What went wrong on a server's side without failing a measurement.
    notes: Vec<String>,
    /// `RLIMIT_NOFILE` raised (from, to), if it had to be.
    nofile_raised: Option<(u64, u64)>,
}

/// A latency series: one result per level; `None`: not run, a step before failed.
type Steps = [Option<Result<Step, String>>];

/// One step of a latency series.
struct Step {
    /// Round trips in µs, sorted.
    rtts: Vec<f64>,
    /// The idle connections this step added, how long opening them took, and how many of
    /// those connects were refused (and tried again).
    opened: usize,
    open_time: Duration,
    refused: usize,
    /// The slowest of those connects (a SYN sent again waits a second).
    slowest: Duration,
}

impl Step {
    /// The `p`-th quantile of the round trips, nearest rank.
    fn quantile(&self, p: f64) -> f64 {
        let n = self.rtts.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        self.rtts.get(rank - 1).copied().unwrap_or(0.0)
    }

    fn p50(&self) -> f64 {
        self.quantile(0.5)
    }

    fn p99(&self) -> f64 {
        self.quantile(0.99)
    }

    /// The rate at which this step's idle connections were opened.
    fn open_rate(&self) -> Option<f64> {
        let secs = self.open_time.as_secs_f64();
        (self.opened > 0 && secs > 0.0).then(|| self.opened as f64 / secs)
    }
}

/// Opening `BURST` connections at once.
struct Burst {
    /// Connects that succeeded, were refused, timed out or failed otherwise.
    connected: usize,
    refused: usize,
    timed_out: usize,
    other: usize,
    /// Connections that got no echo of their byte.
    no_echo: usize,
    /// The first error of `other` or `no_echo`.
    first_error: Option<String>,
    /// Connections the server accepted, and when it accepted the last, from the release.
    accepted: usize,
    all_accepted: Option<Duration>,
    /// From the release until the last client had its echo.
    last_echo: Option<Duration>,
    /// Packets the kernel dropped on the TUN device's queue meanwhile (stack only).
    tun_dropped: Option<u64>,
}

/// A world's echo server: on the stack, in this process; on kernel sockets, in a child process.
enum Server {
    Stack { server: EchoServer, net: Net },
    Kernel(EchoProcess),
}

impl Server {
    fn to(&self) -> SocketAddr {
        match self {
            Server::Stack { server, .. } => server.to,
            Server::Kernel(server) => server.to,
        }
    }

    fn wait_accepted(&self, n: usize) -> Result<(), String> {
        match self {
            Server::Stack { server, .. } => server.wait_accepted(n),
            Server::Kernel(server) => server.wait_accepted(n),
        }
    }

    /// The connections accepted in all, and when the last one was.
    fn status(&self) -> Result<(usize, Instant), String> {
        match self {
            Server::Stack { server, .. } => Ok((server.accepted(), server.last_accept())),
            Server::Kernel(server) => server.status(),
        }
    }
}

/// A server and its clients' namespace; on the kernel's side, the server's namespace too.
struct World {
    clients: Netns,
    server: Server,
    _server_ns: Option<Netns>,
}

impl World {
    fn stack(opts: &Options, name: &'static str) -> Result<World, String> {
        let ns = Netns::new(name)?;
        let net = start_default_stack(&ns, opts.mtu)?;
        let at = SocketAddr::from((STACK_ADDR, LISTEN_PORT));
        let server = connectx_api::TcpListener::bind(&net, at)
            .map_err(|e| format!("stack listener on {at}: {e}"))
            .and_then(|listener| EchoServer::start(at, move || listener.accept().map(|(s, _)| s)));
        let server = match server {
            Ok(server) => server,
            Err(e) => {
                net.stop();
                return Err(e);
            }
        };
        Ok(World {
            clients: ns,
            server: Server::Stack { server, net },
            _server_ns: None,
        })
    }

    /// The reference: the server in a child process in the far namespace of a veth pair,
    /// allowed `fds` descriptors.
    fn kernel(opts: &Options, fds: u64) -> Result<World, String> {
        let (a, b) = veth_pair(opts.mtu)?;
        let server = EchoProcess::spawn(&b, SocketAddr::from((VETH_B_ADDR, 0)), fds)?;
        Ok(World {
            clients: a,
            server: Server::Kernel(server),
            _server_ns: Some(b),
        })
    }

    /// Stop the server (and the stack); what went wrong on the server's side, each prefixed
    /// with `what`.
    fn finish(self, what: &str) -> Vec<String> {
        let problems = match self.server {
            Server::Stack { server, net } => server.stop(|| {
                net.stop();
                true
            }),
            Server::Kernel(server) => server.stop(),
        };
        problems
            .into_iter()
            .map(|p| format!("{what}: {p}"))
            .collect()
    }
}

/// The idle connections of a latency series, and how many connections the server has
/// accepted in all.
#[derive(Default)]
struct Series {
    idle: Vec<TcpStream>,
    accepted: usize,
}

/// What opening a step's idle connections gave.
struct Opened {
    conns: Vec<TcpStream>,
    /// Connects refused (and tried again).
    refused: usize,
    took: Duration,
    /// The slowest connect.
    slowest: Duration,
}

/// `count` connections to `to`, one at a time, from the calling thread's namespace.
fn open_idle(to: SocketAddr, count: usize) -> Result<Opened, String> {
    let start = Instant::now();
    let mut conns = Vec::with_capacity(count);
    let mut refused = 0;
    let mut slowest = Duration::ZERO;
    while conns.len() < count {
        if start.elapsed() > OPEN_BUDGET {
            return Err(format!(
                "opened only {} of {count} idle connections in {OPEN_BUDGET:?} ({refused} \
                 connects refused)",
                conns.len()
            ));
        }
        let connecting = Instant::now();
        let connected = TcpStream::connect_timeout(&to, IO_TIMEOUT);
        slowest = slowest.max(connecting.elapsed());
        match connected {
            Ok(s) => conns.push(s),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused += 1,
            Err(e) => {
                return Err(format!(
                    "opening idle connection {} of {count}: {e} ({refused} connects refused \
                     before)",
                    conns.len() + 1
                ))
            }
        }
    }
    Ok(Opened {
        conns,
        refused,
        took: start.elapsed(),
        slowest,
    })
}

/// `rounds` of ping-pong on `s`, after the untimed ones, within `PING_BUDGET`: the round trips
/// in µs, sorted.
fn ping_pong(s: &mut TcpStream) -> Result<Vec<f64>, String> {
    let mut reply = [0u8; MESSAGE.len()];
    let mut round_trip = |i: usize| -> Result<Duration, String> {
        let start = Instant::now();
        s.write_all(&MESSAGE)
            .map_err(|e| format!("round trip {i}: writing: {e}"))?;
        s.read_exact(&mut reply).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                format!("round trip {i}: no echo within {IO_TIMEOUT:?}")
            }
            _ => format!("round trip {i}: reading the echo: {e}"),
        })?;
        let took = start.elapsed();
        if reply != MESSAGE {
            return Err(format!("round trip {i}: the echo differs from the message"));
        }
        Ok(took)
    };
    let start = Instant::now();
    let mut warmup = 0;
    while warmup < PING_WARMUP && start.elapsed() < PING_WARMUP_BUDGET {
        warmup += 1;
        round_trip(warmup)?;
    }
    let start = Instant::now();
    let mut rtts = Vec::with_capacity(PING_ROUNDS);
    while rtts.len() < PING_ROUNDS && start.elapsed() < PING_BUDGET {
        let took = round_trip(warmup + rtts.len() + 1)?;
        rtts.push(took.as_secs_f64() * 1e6);
    }
    rtts.sort_by(f64::total_cmp);
    Ok(rtts)
}

/// One step: open idle connections up to `n`, then time ping-pong on a new connection.
fn step(world: &World, series: &mut Series, n: usize) -> Result<Step, String> {
    let to = world.server.to();
    let new = n.saturating_sub(series.idle.len());
    let mut opened = Opened {
        conns: Vec::new(),
        refused: 0,
        took: Duration::ZERO,
        slowest: Duration::ZERO,
    };
    if new > 0 {
        opened = world.clients.run(move || open_idle(to, new))??;
        series.idle.append(&mut opened.conns);
        series.accepted += new;
        world.server.wait_accepted(series.accepted)?;
    }
    let mut ping = world
        .clients
        .run(move || TcpStream::connect_timeout(&to, IO_TIMEOUT))?
        .map_err(|e| format!("the ping-pong connection: {e}"))?;
    series.accepted += 1;
    ping.set_nodelay(true)
        .and_then(|()| ping.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| ping.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    world.server.wait_accepted(series.accepted)?;
    let rtts = ping_pong(&mut ping)?;
    Ok(Step {
        rtts,
        opened: new,
        open_time: opened.took,
        refused: opened.refused,
        slowest: opened.slowest,
    })
}

/// The latency series on a server: one result per level, `None` after a failure.
fn latency(
    world: Result<World, String>,
    what: &str,
    levels: &[usize],
    notes: &mut Vec<String>,
) -> Vec<Option<Result<Step, String>>> {
    let world = match world {
        Ok(world) => world,
        Err(e) => {
            let mut out = vec![Some(Err(e))];
            out.resize_with(levels.len(), || None);
            return out;
        }
    };
    let mut series = Series::default();
    let mut out = Vec::new();
    let mut failed = false;
    for &n in levels {
        if failed {
            out.push(None);
            continue;
        }
        let result = step(&world, &mut series, n);
        failed = result.is_err();
        out.push(Some(result));
    }
    drop(series);
    notes.extend(world.finish(what));
    out
}

/// What one client of a burst saw.
struct BurstClient {
    /// The connect's outcome; then, connected, the echo's.
    connect: io::Result<TcpStream>,
    echo: Result<(), String>,
    /// When it got its echo.
    echoed_at: Instant,
}

/// One client of a burst: connect to `to`, write a byte, read its echo.
fn burst_client(to: SocketAddr) -> BurstClient {
    let connect = TcpStream::connect_timeout(&to, IO_TIMEOUT);
    let echo = match &connect {
        Ok(s) => echo_one(s),
        Err(_) => Err("not connected".into()),
    };
    BurstClient {
        connect,
        echo,
        echoed_at: Instant::now(),
    }
}

/// Write a byte on `s` and read its echo, each within `IO_TIMEOUT`.
fn echo_one(mut s: &TcpStream) -> Result<(), String> {
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"b").map_err(|e| format!("writing: {e}"))?;
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("no echo within {IO_TIMEOUT:?}")
        }
        _ => format!("reading the echo: {e}"),
    })
}

/// The clients of a burst, from the calling thread's namespace: `count` threads, each a
/// [`burst_client`] of `to`, released together. Returns what each saw, and the release time.
fn connect_burst(to: SocketAddr, count: usize) -> Result<(Vec<BurstClient>, Instant), String> {
    let gate = Arc::new(RwLock::new(()));
    let ready = Arc::new(AtomicUsize::new(0));
    let hold = gate.write().unwrap_or_else(|p| p.into_inner());
    let mut threads = Vec::with_capacity(count);
    let mut failure = None;
    for i in 0..count {
        let (gate, ready) = (Arc::clone(&gate), Arc::clone(&ready));
        let spawned = thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || {
                ready.fetch_add(1, Ordering::Release);
                drop(gate.read());
                burst_client(to)
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                failure = Some(format!("cannot start client thread {}: {e}", i + 1));
                break;
            }
        }
    }
    let deadline = Instant::now() + IO_TIMEOUT;
    while failure.is_none() && ready.load(Ordering::Acquire) < count {
        if Instant::now() >= deadline {
            failure = Some(format!(
                "only {} of {count} client threads ready after {IO_TIMEOUT:?}",
                ready.load(Ordering::Acquire)
            ));
        }
        thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    drop(hold);
    let clients: Vec<BurstClient> = threads
        .into_iter()
        .map(|t| {
            t.join().unwrap_or_else(|_| BurstClient {
                connect: Err(io::Error::other("the client thread panicked")),
                echo: Err("the client thread panicked".into()),
                echoed_at: Instant::now(),
            })
        })
        .collect();
    match failure {
        Some(e) => Err(e),
        None => Ok((clients, start)),
    }
}

/// Open `BURST` connections at once to a server.
fn burst(world: &World) -> Result<Burst, String> {
    let to = world.server.to();
    let (before, _) = world.server.status()?;
    let dropped = || {
        world
            .clients
            .run(|| kernel_tx_stats(TUN).map(|(_, dropped)| dropped))
            .ok()
            .flatten()
    };
    let dropped_before = dropped();
    let (clients, start) = world.clients.run(move || connect_burst(to, BURST))??;
    let mut b = Burst {
        connected: 0,
        refused: 0,
        timed_out: 0,
        other: 0,
        no_echo: 0,
        first_error: None,
        accepted: 0,
        all_accepted: None,
        last_echo: None,
        tun_dropped: None,
    };
    let mut conns = Vec::with_capacity(BURST);
    for client in clients {
        match client.connect {
            Ok(s) => {
                b.connected += 1;
                match client.echo {
                    Ok(()) => {
                        let at = client.echoed_at.saturating_duration_since(start);
                        b.last_echo = Some(b.last_echo.unwrap_or_default().max(at));
                    }
                    Err(e) => {
                        b.no_echo += 1;
                        b.first_error.get_or_insert(e);
                    }
                }
                conns.push(s);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => b.refused += 1,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => b.timed_out += 1,
            Err(e) => {
                b.other += 1;
                b.first_error
                    .get_or_insert_with(|| format!("connecting: {e}"));
            }
        }
    }
    let (accepted, last_accept) = world.server.status()?;
    b.accepted = accepted.saturating_sub(before);
    if b.accepted > 0 {
        b.all_accepted = Some(last_accept.saturating_duration_since(start));
    }
    b.tun_dropped = dropped()
        .zip(dropped_before)
        .map(|(after, before)| after.saturating_sub(before));
    drop(conns);
    Ok(b)
}

/// A burst on a server, which is then stopped.
fn burst_on(
    world: Result<World, String>,
    what: &str,
    notes: &mut Vec<String>,
) -> Result<Burst, String> {
    let world = world?;
    let result = burst(&world);
    notes.extend(world.finish(what));
    result
}

pub fn run(opts: &Options) -> Result<Scale, String> {
    let most = opts.scale_connections;
    let mut levels = vec![0, MIDDLE_STEP.min(most), most];
    levels.dedup();
    // One kernel descriptor per connection in each process: here the clients' (the stack's
    // sockets are not kernel descriptors), in the reference's server process the server's.
    // The latency series and the burst do not hold theirs at the same time. The rest: the
    // standard streams, listeners, devices, pipes and the like.
    let want = (most + levels.len()).max(BURST) as u64 + 64;
    let nofile_raised = tun_driver::kernel::raise_fd_limit(want)
        .map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?
        .map(|old| (old, want));
    let mut notes = Vec::new();
    let steps = levels
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ");

    progress(
        opts,
        &format!("scale: stack server, ping-pong with {steps} idle connections"),
    );
    let stack = latency(
        World::stack(opts, "bench-scale"),
        "stack server",
        &levels,
        &mut notes,
    );
    progress(
        opts,
        &format!("scale: kernel server over veth, ping-pong with {steps} idle connections"),
    );
    let kernel = latency(
        World::kernel(opts, want),
        "kernel server",
        &levels,
        &mut notes,
    );

    progress(
        opts,
        &format!("scale: {BURST} connections at once, stack server"),
    );
    let stack_burst = burst_on(
        World::stack(opts, "bench-burst"),
        "stack server",
        &mut notes,
    );
    progress(
        opts,
        &format!("scale: {BURST} connections at once, kernel server over veth"),
    );
    let kernel_burst = burst_on(World::kernel(opts, want), "kernel server", &mut notes);
    Ok(Scale {
        levels,
        stack,
        kernel,
        stack_burst,
        kernel_burst,
        notes,
        nofile_raised,
    })
}

/// `a / b`, if both are there and `b` is above 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b > 0.0).then(|| a / b)
}

/// How long a burst took until the server had accepted every connection, in ms.
fn all_accepted_ms(burst: &Result<Burst, String>) -> Option<f64> {
    burst
        .as_ref()
        .ok()?
        .all_accepted
        .map(|d| d.as_secs_f64() * 1e3)
}

/// The step of `steps` at `i`, if it was measured.
fn measured(steps: &Steps, i: usize) -> Option<&Step> {
    steps.get(i)?.as_ref()?.as_ref().ok()
}

impl Scale {
    fn series(&self) -> [(&'static str, &'static str, &Steps); 2] {
        [
            ("stack", "stack (TUN)", &self.stack),
            ("kernel_veth", "kernel (veth) [ref]", &self.kernel),
        ]
    }

    fn bursts(&self) -> [(&'static str, &'static str, &Result<Burst, String>); 2] {
        [
            ("stack", "stack (TUN)", &self.stack_burst),
            ("kernel_veth", "kernel (veth) [ref]", &self.kernel_burst),
        ]
    }

    /// The ratios of step `i` of `steps`: p50 and p99 to those with none open, then to the
    /// kernel's at the same step.
    fn ratios(&self, steps: &Steps, i: usize) -> [Option<f64>; 4] {
        let p50 = |steps: &Steps, i: usize| measured(steps, i).map(Step::p50);
        let p99 = |steps: &Steps, i: usize| measured(steps, i).map(Step::p99);
        [
            ratio(p50(steps, i), p50(steps, 0)),
            ratio(p99(steps, i), p99(steps, 0)),
            ratio(p50(steps, i), p50(&self.kernel, i)),
            ratio(p99(steps, i), p99(&self.kernel, i)),
        ]
    }

    /// How long a burst took until the server had accepted every connection, in ms, over the
    /// kernel's.
    fn all_accepted_ratio(&self, burst: &Result<Burst, String>) -> Option<f64> {
        ratio(all_accepted_ms(burst), all_accepted_ms(&self.kernel_burst))
    }

    fn latency_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "scale: ping-pong ({}-byte messages echoed) with N other connections open and idle; \
             echo servers with a thread per connection, kernel clients",
            MESSAGE.len()
        );
        header(
            out,
            &[
                ("server", 19),
                ("N open", 6),
                ("p50 µs", 8),
                ("p99 µs", 8),
                ("trips", 5),
                ("open conn/s", 11),
                ("p50/N=0", 7),
                ("p99/N=0", 7),
                ("p50/kernel", 10),
            ],
            "p99/kernel",
        );
        for (_, label, steps) in self.series() {
            for (i, (n, step)) in self.levels.iter().zip(steps).enumerate() {
                match step {
                    Some(Ok(step)) => {
                        let [p50_0, p99_0, p50_k, p99_k] = self.ratios(steps, i);
                        let _ = writeln!(
                            out,
                            "{label:<19} | {n:>6} | {:>8.1} | {:>8.1} | {:>5} | {:>11} | {:>7} | \
                             {:>7} | {:>10} | {}",
                            step.p50(),
                            step.p99(),
                            step.rtts.len(),
                            cell(step.open_rate(), 0),
                            cell(p50_0, 2),
                            cell(p99_0, 2),
                            cell(p50_k, 2),
                            cell(p99_k, 2)
                        );
                    }
                    Some(Err(e)) => {
                        let _ = writeln!(out, "{label:<19} | {n:>6} | failed: {e}");
                    }
                    None => {
                        let _ =
                            writeln!(out, "{label:<19} | {n:>6} | not run: a step before failed");
                    }
                }
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "each step: up to {PING_ROUNDS} timed round trips within {} s after up to \
             {PING_WARMUP} untimed within {} s, on a new connection with TCP_NODELAY;\n\
             the idle connections opened one at a time (open conn/s: this step's)",
            PING_BUDGET.as_secs(),
            PING_WARMUP_BUDGET.as_secs()
        );
        for (_, label, steps) in self.series() {
            let opening: Vec<String> = self
                .levels
                .iter()
                .zip(steps)
                .filter_map(|(n, s)| match s {
                    Some(Ok(s)) if s.opened > 0 => Some(format!(
                        "up to {n}: {} refused, slowest {:.1} ms",
                        s.refused,
                        s.slowest.as_secs_f64() * 1e3
                    )),
                    _ => None,
                })
                .collect();
            if !opening.is_empty() {
                let _ = writeln!(
                    out,
                    "{label}, opening the idle connections (a refused connect is tried again): {}",
                    opening.join("; ")
                );
            }
        }
    }

    fn burst_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "scale: {BURST} connections opened at once ({BURST} client threads released together, \
             each: a blocking connect, 1 byte written and its echo read); listen backlog {BACKLOG}"
        );
        header(
            out,
            &[
                ("server", 19),
                ("connected", 9),
                ("refused", 7),
                ("timed out", 9),
                ("other", 5),
                ("no echo", 7),
                ("accepted", 8),
                ("last accept ms", 14),
                ("last echo ms", 12),
                ("TUN drops", 9),
            ],
            "last accept / kernel",
        );
        for (_, label, burst) in self.bursts() {
            match burst {
                Ok(b) => {
                    let _ = writeln!(
                        out,
                        "{label:<19} | {:>9} | {:>7} | {:>9} | {:>5} | {:>7} | {:>8} | {:>14} | \
                         {:>12} | {:>9} | {}",
                        b.connected,
                        b.refused,
                        b.timed_out,
                        b.other,
                        b.no_echo,
                        b.accepted,
                        cell(all_accepted_ms(burst), 0),
                        cell(b.last_echo.map(|d| d.as_secs_f64() * 1e3), 0),
                        b.tun_dropped
                            .map_or_else(|| "-".to_owned(), |d| d.to_string()),
                        cell(self.all_accepted_ratio(burst), 2)
                    );
                    if let Some(e) = &b.first_error {
                        let _ = writeln!(out, "  {label}: first failure: {e}");
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "{label:<19} | failed: {e}");
                }
            }
        }
        let _ = writeln!(
            out,
            "times from the release: until the server accepted its last connection, until the \
             last client had its echo"
        );
    }
}

impl Part for Scale {
    fn failures(&self) -> Vec<String> {
        let steps = self.series().into_iter().flat_map(|(_, label, steps)| {
            self.levels
                .iter()
                .zip(steps)
                .filter_map(move |(n, s)| match s {
                    Some(Err(e)) => Some(format!("{label}, {n} open: {e}")),
                    _ => None,
                })
        });
        let bursts = self.bursts().into_iter().filter_map(|(_, label, b)| {
            b.as_ref()
                .err()
                .map(|e| format!("{label}, {BURST} at once: {e}"))
        });
        steps.chain(bursts).collect()
    }

    fn table(&self, _: &Options, out: &mut String) {
        self.latency_table(out);
        let _ = writeln!(out);
        self.burst_table(out);
        for note in &self.notes {
            let _ = writeln!(out, "  {note}");
        }
        if let Some((from, to)) = self.nofile_raised {
            let _ = writeln!(
                out,
                "  RLIMIT_NOFILE raised from {from} to {to} (in the bench and in the kernel \
                 reference's server process: one descriptor per connection in each)"
            );
        }
        let _ = writeln!(out, "  memory per connection: see the memory section");
    }

    fn json(&self, _: &Options, out: &mut String) {
        let levels: Vec<String> = self.levels.iter().map(|n| n.to_string()).collect();
        let _ = write!(
            out,
            "{{\"message_bytes\":{},\"round_trips_max\":{PING_ROUNDS},\"round_trip_budget_s\":{},\
             \"warmup\":{PING_WARMUP},\"warmup_budget_s\":{},\"levels\":[{}],\
             \"reference\":\"kernel_veth\"",
            MESSAGE.len(),
            PING_BUDGET.as_secs(),
            PING_WARMUP_BUDGET.as_secs(),
            levels.join(",")
        );
        for (key, _, steps) in self.series() {
            let _ = write!(out, ",{}:[", json_str(key));
            for (i, (n, step)) in self.levels.iter().zip(steps).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match step {
                    Some(Ok(s)) => {
                        let [p50_0, p99_0, p50_k, p99_k] = self.ratios(steps, i);
                        let _ = write!(
                            out,
                            "{{\"open\":{n},\"p50_us\":{:.1},\"p99_us\":{:.1},\"round_trips\":{},\
                             \"opened\":{},\"open_s\":{:.3},\"open_refused\":{},\
                             \"open_slowest_ms\":{:.1},\
                             \"p50_to_none_open\":{},\"p99_to_none_open\":{},\
                             \"p50_to_reference\":{},\"p99_to_reference\":{},\"error\":null}}",
                            s.p50(),
                            s.p99(),
                            s.rtts.len(),
                            s.opened,
                            s.open_time.as_secs_f64(),
                            s.refused,
                            s.slowest.as_secs_f64() * 1e3,
                            json_num(p50_0, 4),
                            json_num(p99_0, 4),
                            json_num(p50_k, 4),
                            json_num(p99_k, 4)
                        );
                    }
                    Some(Err(e)) => {
                        let _ = write!(out, "{{\"open\":{n},\"error\":{}}}", json_str(e));
                    }
                    None => {
                        let _ = write!(
                            out,
                            "{{\"open\":{n},\"error\":\"not run: a step before failed\"}}"
                        );
                    }
                }
            }
            out.push(']');
        }
        let _ = write!(
            out,
            ",\"burst\":{{\"connections\":{BURST},\"backlog\":{BACKLOG}"
        );
        for (key, _, burst) in self.bursts() {
            let _ = write!(out, ",{}:", json_str(key));
            match burst {
                Ok(b) => {
                    let _ = write!(
                        out,
                        "{{\"connected\":{},\"refused\":{},\"timed_out\":{},\"other\":{},\
                         \"no_echo\":{},\"first_error\":{},\"accepted\":{},\
                         \"last_accept_ms\":{},\"last_echo_ms\":{},\"tun_dropped\":{},\
                         \"last_accept_to_reference\":{},\"error\":null}}",
                        b.connected,
                        b.refused,
                        b.timed_out,
                        b.other,
                        b.no_echo,
                        b.first_error
                            .as_deref()
                            .map_or_else(|| "null".to_owned(), json_str),
                        b.accepted,
                        json_num(all_accepted_ms(burst), 1),
                        json_num(b.last_echo.map(|d| d.as_secs_f64() * 1e3), 1),
                        b.tun_dropped
                            .map_or_else(|| "null".to_owned(), |d| d.to_string()),
                        json_num(self.all_accepted_ratio(burst), 4)
                    );
                }
                Err(e) => {
                    let _ = write!(out, "{{\"error\":{}}}", json_str(e));
                }
            }
        }
        out.push('}');
        let notes: Vec<String> = self.notes.iter().map(|n| json_str(n)).collect();
        let _ = write!(out, ",\"notes\":[{}]}}", notes.join(","));
    }
}
