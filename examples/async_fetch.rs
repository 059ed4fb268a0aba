//! Many concurrent HTTP/1.1 requests over the stack, from one tokio runtime, to a kernel web
//! server in a private namespace, with TCP Fast Open: the async adapter
//! (`connectx_api::tokio`) at work.
//!
//!     sudo cargo run --release --example async_fetch [-- --requests N --concurrency C --v6]
//!
//! One request goes first, alone, and fetches the server's Fast Open cookie; then N requests,
//! C at a time, each on its own connection: `connectx` with `CONNECT_RESUME_ON_READ_WRITE |
//! CONNECT_DATA_IDEMPOTENT` returns at once, and the request, written next, rides in the SYN.
//! It prints what arrived, how fast, the latency percentiles, and how many requests the SYN
//! carried (by the stack's account and by the kernel's).
//!
//! Needs root: it makes a network namespace of its own (removed when it exits) with a TUN
//! device in it, and turns on the kernel's Fast Open server there only.

mod common;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connectx_api::tokio::TcpStream;
use connectx_api::{Net, SaEndpoints, CONNECT_DATA_IDEMPOTENT, CONNECT_RESUME_ON_READ_WRITE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

struct Args {
    requests: usize,
    concurrency: usize,
    v6: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        requests: 2000,
        concurrency: 500,
        v6: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name} takes a number above 0"))
        };
        match a.as_str() {
            "--requests" => args.requests = number("--requests")?,
            "--concurrency" => args.concurrency = number("--concurrency")?,
            "--v6" => args.v6 = true,
            "-h" | "--help" => {
                println!(
                    "usage: async_fetch [--requests N] [--concurrency C] [--v6]   (needs root)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("async_fetch: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !tun_driver::is_root() {
        eprintln!(
            "async_fetch: it creates a network namespace and a TUN device, which needs root: \
             run `sudo cargo run --release --example async_fetch`"
        );
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("async_fetch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    // A namespace of this process's own: the kernel removes it, and the device, at exit.
    tun_driver::netns::unshare_net().map_err(|e| e.to_string())?;
    // The kernel's Fast Open client and server, on every listener, in this namespace only.
    tun_driver::netns::set_sysctl("net/ipv4/tcp_fastopen", "1027").map_err(|e| e.to_string())?;
    // Each connection is a descriptor for the kernel's server.
    tun_driver::kernel::raise_fd_limit(args.concurrency as u64 * 2 + 1024)
        .map_err(|e| format!("raising RLIMIT_NOFILE: {e}"))?;
    let net = Net::builder()
        .tun("cx0")
        .address("192.0.2.2/24")
        .address("2001:db8::2/64")
        .peer("192.0.2.1/24")
        .peer("2001:db8::1/64")
        .start()
        .map_err(|e| e.to_string())?;
    let server: SocketAddr = if args.v6 {
        "[2001:db8::1]:80"
    } else {
        "192.0.2.1:80"
    }
    .parse()
    .expect("a valid address");
    spawn_kernel_web_server(server)?;
    println!(
        "A kernel web server at {server} (kernel sockets, Fast Open on); the stack at {} on cx0.",
        if args.v6 { "2001:db8::2" } else { "192.0.2.2" }
    );

    let passive_before = common::kernel_counter("TCPFastOpenPassive");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    let outcome = rt.block_on(fetch_all(&net, server, args))?;
    let passive = common::kernel_counter("TCPFastOpenPassive").saturating_sub(passive_before);
    let Outcome {
        mut latencies,
        bytes,
        in_syn,
        elapsed,
    } = outcome;

    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "{} requests, {} at a time, on one current-thread tokio runtime (no thread per connection):",
        args.requests, args.concurrency
    );
    println!(
        "  all answered in {:.2} s: {:.0} requests/s, {} bytes of responses",
        elapsed.as_secs_f64(),
        args.requests as f64 / elapsed.as_secs_f64(),
        bytes
    );
    println!(
        "  latency (connect to last byte): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(pct(1.0))
    );
    println!(
        "  the request rode in the SYN for {in_syn} of them (the stack's count; the kernel's \
         TCPFastOpenPassive went up by {passive})"
    );
    // Where a burst is more than the kernel's server takes at once, say so: those
    // connections wait for the stack's SYN retransmission (1 s).
    let dropped: Vec<String> = [
        "ListenOverflows",
        "ListenDrops",
        "TCPReqQFullDrop",
        "TCPFastOpenListenOverflow",
        "TCPFastOpenPassiveFail",
    ]
    .iter()
    .map(|n| (n, common::kernel_counter(n)))
    .filter(|(_, v)| *v > 0)
    .map(|(n, v)| format!("{n} {v}"))
    .collect();
    if !dropped.is_empty() {
        println!(
            "  the kernel's server turned some away: {}",
            dropped.join(", ")
        );
    }
    net.stop();
    Ok(())
}

struct Outcome {
    latencies: Vec<Duration>,
    bytes: usize,
    in_syn: usize,
    elapsed: Duration,
}

/// One request on its own connection: (latency, response bytes, whether it rode in the SYN).
async fn fetch(
    net: &Net,
    server: SocketAddr,
    path: &str,
) -> std::io::Result<(Duration, usize, bool)> {
    let started = Instant::now();
    let flags = CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT;
    let mut s = TcpStream::connectx(net, &SaEndpoints::to(server), flags).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).await?;
    if !response.starts_with(b"HTTP/1.1 200 OK\r\n") {
        return Err(std::io::Error::other(format!(
            "{path}: unexpected response {:?}",
            String::from_utf8_lossy(&response[..response.len().min(40)])
        )));
    }
    let in_syn = s.fast_open_info()?.is_some_and(|i| i.syn_data_acked > 0);
    Ok((started.elapsed(), response.len(), in_syn))
}

async fn fetch_all(net: &Net, server: SocketAddr, args: &Args) -> Result<Outcome, String> {
    // The first request fetches the cookie (its SYN asks for one).
    fetch(net, server, "/cookie")
        .await
        .map_err(|e| format!("the first request: {e}"))?;
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let net = net.clone();
        tasks.push(tokio::spawn(async move {
            let r = fetch(&net, server, &format!("/item/{i}")).await;
            drop(permit);
            r
        }));
    }
    let mut outcome = Outcome {
        latencies: Vec::with_capacity(args.requests),
        bytes: 0,
        in_syn: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (latency, bytes, in_syn) = t
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        outcome.latencies.push(latency);
        outcome.bytes += bytes;
        outcome.in_syn += usize::from(in_syn);
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// A minimal HTTP/1.1 server on kernel sockets (tokio's), on its own thread: answers each
/// request with a short page naming its path, then closes.
fn spawn_kernel_web_server(addr: SocketAddr) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime for the kernel server");
        rt.block_on(async move {
            // A backlog as deep as the kernel allows (`somaxconn`): std's 128 would overflow
            // under a burst of SYNs, and the kernel would drop some (a second's retransmit).
            let listen = || -> std::io::Result<tokio::net::TcpListener> {
                let socket = if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                socket.set_reuseaddr(true)?;
                socket.bind(addr)?;
                socket.listen(4096)
            };
            let listener = match listen() {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{addr}: {e}")));
                    return;
                }
            };
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request);
                    let path = line.split_whitespace().nth(1).unwrap_or("/");
                    let body = format!("hello from the kernel: {path}\n");
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(response.as_bytes()).await;
                });
            }
        });
    });
    rx.recv().map_err(|e| e.to_string())?
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
