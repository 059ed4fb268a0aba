//! The `async` section: many concurrent echo connections from one tokio runtime, through the
//! stack's tokio adapter (`connectx_api::tokio`), beside the same program on kernel sockets
//! (tokio's) over veth.
//!
//! The server is a kernel echo server: tokio on kernel sockets, a current-thread runtime in a
//! child process of its own (the bench binary again, with the hidden argument [`ARG`]), a
//! backlog of 4,096, a task per connection that writes back what it reads. For the stack it listens at the kernel's end of the TUN device; for the reference,
//! at the far end of a veth pair (offloads as the kernel sets them), its clients in the other
//! namespace. The clients: `--async-connections` (default 10,000) connections from one
//! current-thread runtime, opened 256 at a time (each batch concurrently), `TCP_NODELAY` on the
//! kernel's; then all of them at once, for `--seconds` (default 3), play ping-pong: each writes
//! 64 bytes, reads them back, and again, every round trip timed. Reported for each: the round
//! trips per second of all connections together, the median and the 99th percentile (nearest
//! rank) of the round trips, how long opening the connections took, and memory: the bench
//! process's `VmRSS` increase from before opening to after the ping-pong (the client tasks,
//! and for the stack its connections; divided by the connections), and the kernel's
//! TCP memory increase (`/proc/net/sockstat`'s `mem`, pages) over the same span. Ratios: the
//! stack's p99 over the kernel's (the target: at most 3), its round trips per second over the
//! kernel's. No thread per connection on either side: both clients are one runtime's tasks.
//! For the stack's run also: what the kernel sent again (`TcpRetransSegs` of its namespace)
//! and dropped on the TUN device's queue towards the stack (`tx_dropped`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connectx_api::Net;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cli::Options;
use crate::netns::{
    kernel_tcp_counters, kernel_tx_stats, start_default_stack, veth_pair, Netns, KERNEL_ADDR, TUN,
    VETH_B_ADDR,
};

use crate::proc::vm_kib;
use crate::progress;
use crate::report::{cell, json_num, Part};

/// The ping-pong message, echoed whole.
const MESSAGE: [u8; 64] = [b'a'; 64];
/// Connections opened together.
const OPEN_BATCH: usize = 256;
/// The echo server's port.
const PORT: u16 = 7100;
/// How long any one step may take before the run is given up.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// One run's figures.
pub struct Run {
    connections: usize,
    open_time: Duration,
    round_trips: usize,
    elapsed: Duration,
    p50_us: f64,
    p99_us: f64,
    rss_increase_kib: i64,
    kernel_tcp_pages: i64,
    /// Segments the kernel sent again, in the stack's runs (`TcpRetransSegs` of its namespace).
    kernel_retransmitted: Option<u64>,
    /// Packets the kernel dropped on the TUN device's queue towards the stack.
    tun_dropped: Option<u64>,
}

/// The `async` section.
pub struct Async {
    stack: Result<Run, String>,
    kernel: Result<Run, String>,
}

pub fn run(opts: &Options) -> Result<Async, String> {
    let n = opts.async_connections;
    progress(
        opts,
        &format!("async: {n} concurrent echo connections on one tokio runtime"),
    );
    // The clients' descriptors of the kernel's run are this process's (the server's are its
    // child's).
    tun_driver::kernel::raise_fd_limit(n as u64 + 1024)
        .map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?;
    let stack = stack_run(opts);
    let kernel = kernel_run(opts);
    Ok(Async { stack, kernel })
}

/// The stack's run: clients through the adapter, the server at the kernel's end of the TUN.
fn stack_run(opts: &Options) -> Result<Run, String> {
    let ns = Netns::new("bench-async")?;
    let net = start_default_stack(&ns, opts.mtu)?;
    let server = EchoServer::start(
        &ns,
        SocketAddr::from((KERNEL_ADDR, PORT)),
        opts.async_connections,
    )?;
    let to = server.addr;
    let (n, seconds) = (opts.async_connections, opts.seconds);
    let result = runtime()?.block_on(async {
        let connect =
            |net: Net| async move { connectx_api::tokio::TcpStream::connect(&net, to).await };
        measure(n, seconds, || connect(net.clone())).await
    });
    // What the kernel sent again to the stack, and what it dropped on the way (the TUN
    // device's queue towards the stack).
    let retransmitted = ns
        .run(|| kernel_tcp_counters(&["TcpRetransSegs"]))?
        .ok()
        .and_then(|c| c.first().map(|&(_, v)| v));
    let dropped = ns.run(|| kernel_tx_stats(TUN))?.map(|(_, d)| d);
    let result = result.map(|r| Run {
        kernel_retransmitted: retransmitted,
        tun_dropped: dropped,
        ..r
    });
    drop(server);
    net.stop();
    result
}

/// The kernel's run: the same clients on tokio's kernel sockets, over a veth pair.
fn kernel_run(opts: &Options) -> Result<Run, String> {
    let (clients, servers) = veth_pair(opts.mtu)?;
    let server = EchoServer::start(
        &servers,
        SocketAddr::from((VETH_B_ADDR, PORT)),
        opts.async_connections,
    )?;
    let to = server.addr;
    let (n, seconds) = (opts.async_connections, opts.seconds);
    // The clients' sockets must be made in their namespace: the runtime runs on its thread.
    let result = clients.run(move || {
        runtime()?.block_on(async {
            let connect = || async move {
                let s = tokio::net::TcpStream::connect(to).await?;
                s.set_nodelay(true)?;
                Ok(s)
            };
            measure(n, seconds, connect).await
        })
    })?;
    drop(server);
    result
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a tokio runtime: {e}"))
}

/// Open `n` connections with `connect`, then ping-pong on all of them for `seconds`.
async fn measure<S, F, Fut>(n: usize, seconds: f64, connect: F) -> Result<Run, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    let (rss_before, _) = vm_kib()?;
    let pages_before = kernel_tcp_pages();
    let started = Instant::now();
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        let batch = OPEN_BATCH.min(n - streams.len());
        let opened = tokio::time::timeout(STEP_TIMEOUT, join_all((0..batch).map(|_| connect())))
            .await
            .map_err(|_| format!("opening connections: stuck after {}", streams.len()))?;
        for s in opened {
            streams.push(s.map_err(|e| format!("connection {}: {e}", streams.len()))?);
        }
    }
    let open_time = started.elapsed();

    let go = Arc::new(tokio::sync::Barrier::new(n + 1));
    let budget = Duration::from_secs_f64(seconds);
    let mut tasks = Vec::with_capacity(n);
    for mut s in streams {
        let go = Arc::clone(&go);
        tasks.push(tokio::spawn(async move {
            go.wait().await;
            let end = Instant::now() + budget;
            let mut times = Vec::new();
            let mut back = [0u8; MESSAGE.len()];
            while Instant::now() < end {
                let t = Instant::now();
                s.write_all(&MESSAGE).await?;
                s.read_exact(&mut back).await?;
                times.push(t.elapsed().as_micros() as u32);
            }
            std::io::Result::Ok((times, s))
        }));
    }
    go.wait().await;
    let pingpong = Instant::now();
    let mut times = Vec::new();
    let mut keep = Vec::with_capacity(n);
    for (i, t) in tasks.into_iter().enumerate() {
        let (mut mine, s) = tokio::time::timeout(STEP_TIMEOUT, t)
            .await
            .map_err(|_| format!("connection {i} stuck in its ping-pong"))?
            .map_err(|e| format!("connection {i}: {e}"))?
            .map_err(|e| format!("connection {i}: {e}"))?;
        times.append(&mut mine);
        keep.push(s);
    }
    let elapsed = pingpong.elapsed();
    // Memory with every connection still open.
    let (rss_after, _) = vm_kib()?;
    let pages_after = kernel_tcp_pages();
    drop(keep);
    if times.is_empty() {
        return Err("no round trip completed".into());
    }
    times.sort_unstable();
    let rank = |p: f64| {
        f64::from(times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1])
    };
    Ok(Run {
        connections: n,
        open_time,
        round_trips: times.len(),
        elapsed,
        p50_us: rank(0.50),
        p99_us: rank(0.99),
        rss_increase_kib: rss_after as i64 - rss_before as i64,
        kernel_tcp_pages: pages_after - pages_before,
        kernel_retransmitted: None,
        tun_dropped: None,
    })
}

/// Await every future of `futures` (concurrently, on this task), in order.
async fn join_all<T>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T>>,
) -> Vec<T> {
    let mut pending: Vec<_> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, slot) in pending.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// The kernel's TCP memory in pages (`/proc/net/sockstat`, `TCP: … mem N`).
fn kernel_tcp_pages() -> i64 {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .iter()
                .position(|w| *w == "mem")
                .and_then(|i| words.get(i + 1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The hidden argument that makes the bench binary the echo server: `ARG ADDR CONNECTIONS`.
pub const ARG: &str = "--internal-async-echo-server";

/// The child's `main`: a kernel echo server (tokio, current-thread, backlog 4,096, a task per
/// connection) on `ADDR`; it says `ready` on stdout once it listens, and exits when its stdin
/// closes (so it never outlives the bench).
pub fn server_main(args: &[String]) -> std::process::ExitCode {
    let addr = args.first().and_then(|a| a.parse::<SocketAddr>().ok());
    let connections = args.get(1).and_then(|a| a.parse::<u64>().ok());
    let (Some(addr), Some(connections)) = (addr, connections) else {
        eprintln!("bench: {ARG} ADDR CONNECTIONS is internal to the async section");
        return std::process::ExitCode::from(2);
    };
    if let Err(e) = tun_driver::kernel::raise_fd_limit(connections + 1024) {
        println!("error raising RLIMIT_NOFILE: {e}");
        return std::process::ExitCode::from(1);
    }
    std::thread::spawn(|| {
        // Stdin closes when the parent goes or drops its end: stop then.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("error {e}");
            return std::process::ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let listen = || -> std::io::Result<tokio::net::TcpListener> {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(4096)
        };
        let listener = match listen() {
            Ok(l) => l,
            Err(e) => {
                println!("error {addr}: {e}");
                return std::process::ExitCode::from(1);
            }
        };
        println!("ready");
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
        std::process::ExitCode::SUCCESS
    })
}

/// The echo server in a child process, started in a namespace (so its connections' descriptors
/// are the child's, and the bench holds only the clients'); killed when dropped.
struct EchoServer {
    addr: SocketAddr,
    child: std::process::Child,
}

impl EchoServer {
    fn start(ns: &Netns, addr: SocketAddr, connections: usize) -> Result<EchoServer, String> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let exe = std::env::current_exe().map_err(|e| format!("the bench's own path: {e}"))?;
        // Spawned from the namespace's thread, the child is born in the namespace.
        let mut child = ns
            .run(move || {
                Command::new(exe)
                    .arg(ARG)
                    .arg(addr.to_string())
                    .arg(connections.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
            })?
            .map_err(|e| format!("starting the echo server: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout of the echo server")?;
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the echo server did not start: {}", line.trim()));
        }
        Ok(EchoServer { addr, child })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    fn rate(&self) -> f64 {
        self.round_trips as f64 / self.elapsed.as_secs_f64()
    }

    fn rss_per_connection(&self) -> f64 {
        self.rss_increase_kib as f64 * 1024.0 / self.connections as f64
    }

    fn kernel_per_connection(&self) -> f64 {
        self.kernel_tcp_pages as f64 * 4096.0 / self.connections as f64
    }
}

fn common_json(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| v.to_string())
}

fn common_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b)
}

impl Part for Async {
    fn table(&self, opts: &Options, out: &mut String) {
        let _ = writeln!(
            out,
            "async: {} concurrent echo connections on one current-thread tokio runtime, \
             64-byte ping-pong on all at once for {} s",
            opts.async_connections, opts.seconds
        );
        let _ = writeln!(
            out,
            "  {:<28} | {:>12} | {:>9} | {:>9} | {:>8} | {:>11} | {:>12}",
            "", "round trips/s", "p50 µs", "p99 µs", "open s", "RSS B/conn", "kernel B/conn"
        );
        for (name, run) in [
            ("stack (connectx_api::tokio)", &self.stack),
            ("kernel over veth (tokio)", &self.kernel),
        ] {
            match run {
                Ok(r) => {
                    let _ = writeln!(
                        out,
                        "  {:<28} | {:>12.0} | {:>9.0} | {:>9.0} | {:>8.2} | {:>11.0} | {:>12.0}",
                        name,
                        r.rate(),
                        r.p50_us,
                        r.p99_us,
                        r.open_time.as_secs_f64(),
                        r.rss_per_connection(),
                        r.kernel_per_connection()
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "  {name:<28} | failed: {e}");
                }
            }
        }
        let (s, k) = (self.stack.as_ref().ok(), self.kernel.as_ref().ok());
        let _ = writeln!(
            out,
            "  stack / kernel: p99 {} (target: at most 3), p50 {}, round trips/s {}; the kernel \
             sent {} segments again to the stack, dropped {} on the TUN queue",
            cell(ratio(s.map(|r| r.p99_us), k.map(|r| r.p99_us)), 2),
            cell(ratio(s.map(|r| r.p50_us), k.map(|r| r.p50_us)), 2),
            cell(ratio(s.map(Run::rate), k.map(Run::rate)), 2),
            common_opt(s.and_then(|r| r.kernel_retransmitted)),
            common_opt(s.and_then(|r| r.tun_dropped))
        );
    }

    fn json(&self, opts: &Options, out: &mut String) {
        let one = |r: &Result<Run, String>| match r {
            Ok(r) => format!(
                "{{\"round_trips\":{},\"seconds\":{:.3},\"round_trips_per_s\":{:.0},\
                 \"p50_us\":{:.0},\"p99_us\":{:.0},\"open_s\":{:.3},\"rss_increase_kib\":{},\
                 \"kernel_tcp_pages\":{},\"kernel_retransmitted\":{},\"tun_dropped\":{}}}",
                r.round_trips,
                r.elapsed.as_secs_f64(),
                r.rate(),
                r.p50_us,
                r.p99_us,
                r.open_time.as_secs_f64(),
                r.rss_increase_kib,
                r.kernel_tcp_pages,
                common_json(r.kernel_retransmitted),
                common_json(r.tun_dropped)
            ),
            Err(e) => format!("{{\"error\":{}}}", crate::report::json_str(e)),
        };
        let (s, k) = (self.stack.as_ref().ok(), self.kernel.as_ref().ok());
        let _ = write!(
            out,
            "{{\"connections\":{},\"stack\":{},\"kernel\":{},\"p99_ratio\":{}}}",
            opts.async_connections,
            one(&self.stack),
            one(&self.kernel),
            json_num(ratio(s.map(|r| r.p99_us), k.map(|r| r.p99_us)), 3)
        );
    }

    fn failures(&self) -> Vec<String> {
        [("stack", &self.stack), ("kernel", &self.kernel)]
            .into_iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
            .collect()
    }
}
