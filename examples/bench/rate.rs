//! The `rate` section: connection rate, sustained over many connections.
//!
//! One connection at a time, each: the client connects (a blocking connect, which returns once
//! established), writes a 6-byte request, reads the server's 6-byte reply (the request echoed)
//! and closes first, so that TIME-WAIT stays with the client; the server accepts, reads the
//! request, answers, reads up to the client's FIN and closes. A run is `--rate-connections`
//! connections (default 15,000) after 20 untimed ones, timed on the client from the first
//! connect to the last close, in three roles: stack client to kernel server and kernel client to
//! stack server over TUN, and kernel to kernel over a veth pair (the reference; offloads on,
//! which make no difference to 6-byte segments). Figures: connections per second over the whole
//! run, and over its first 1,000 and its last 1,000 connections alone. Closed connections pile
//! up in TIME-WAIT on the client (the kernel keeps them 60 s, smoltcp 10 s), so a client whose
//! per-connection cost grows with the connections it still holds slows down from first to last.
//!
//! Ephemeral ports: in each namespace where a kernel client runs (kernel -> stack, kernel ->
//! kernel), the bench sets `net.ipv4.ip_local_port_range` to 1024-65535, from that namespace's
//! thread, before the clients start. With Linux's default, 32768-60999, `connect()` autobinds
//! in half of the range first (one parity, 14,116 ports) and must step over every port whose
//! tuple to the server is still in TIME-WAIT (60 s): past about 14,000 connections to one server
//! each connect scans thousands of ports, and the last 1,000 of a 15,000-connection run went at
//! about 250/s, which measured the kernel's port search rather than its connections. The stack
//! keeps its own range, 32768-60999 (28,232 ports; it uses a port again for distinct tuples),
//! hence at most 25,000 connections.
//!
//! Every blocking call, connects included, gives up after
//! [`IO_TIMEOUT`](crate::conn::IO_TIMEOUT): a stuck run is reported as that run's failure (which
//! connection, which call), and the other runs are still measured.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::conn::{
    kernel_accept, kernel_connect_here, kernel_listener, stack_accept, stack_listener, StackConn,
    LISTEN_PORT,
};
use crate::exchange::{ask_to_stop, request_server, server_outcome};
use crate::netns::{
    start_default_stack, veth_pair, Netns, KERNEL_ADDR, LOCAL_PORT_RANGE, STACK_ADDR, VETH_B_ADDR,
};
use crate::progress;
use crate::report::{cell, header, json_num, json_str, Part};

/// Connections made before the timed ones.
const RATE_WARMUP: usize = 20;
/// How many connections at each end of a run have their rate reported apart.
const RATE_EDGE: usize = 1000;
/// The request, which the server echoes whole; its first byte is not the stop request's.
const REQUEST: [u8; 6] = *b"rate!\n";

/// The `rate` section.
pub struct Rates {
    /// Timed connections per run.
    connections: usize,
    stack_to_kernel: Result<RateSample, String>,
    kernel_to_stack: Result<RateSample, String>,
    kernel_to_kernel: Result<RateSample, String>,
}

/// One run: when each of its connections was over (closed by the client), counted from the
/// first connect.
#[derive(Debug)]
struct RateSample {
    done: Vec<Duration>,
}

impl RateSample {
    fn elapsed(&self) -> Duration {
        self.done.last().copied().unwrap_or_default()
    }

    fn per_second(&self) -> f64 {
        rate(self.done.len(), self.elapsed())
    }

    /// The rate of the first `RATE_EDGE` connections (all, if fewer).
    fn first(&self) -> f64 {
        let k = RATE_EDGE.min(self.done.len());
        match k {
            0 => 0.0,
            k => rate(k, self.done[k - 1]),
        }
    }

    /// The rate of the last `RATE_EDGE` connections (all, if fewer): from the end of the one
    /// before them to the end of the last.
    fn last(&self) -> f64 {
        let n = self.done.len();
        if n <= RATE_EDGE {
            return self.per_second();
        }
        rate(RATE_EDGE, self.done[n - 1] - self.done[n - 1 - RATE_EDGE])
    }

    /// The last connections' rate over the first ones'.
    fn slowdown(&self) -> Option<f64> {
        let first = self.first();
        (first > 0.0).then(|| self.last() / first)
    }
}

/// `n` connections in `elapsed`, per second (0 for no time).
fn rate(n: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// The client side of one `rate` connection, after connecting; the connection is closed when
/// this returns.
fn ask_one(mut s: impl Read + Write) -> Result<(), String> {
    s.write_all(&REQUEST)
        .map_err(|e| format!("client writing: {e}"))?;
    let mut reply = [0u8; REQUEST.len()];
    s.read_exact(&mut reply)
        .map_err(|e| format!("client reading: {e}"))?;
    if reply != REQUEST {
        return Err(format!("the reply {reply:?} is not the request echoed"));
    }
    Ok(())
}

/// The client loop of a `rate` run: the untimed connections, `count` timed ones, then the stop
/// request.
fn rate_client<S: Read + Write>(
    count: usize,
    mut connect: impl FnMut() -> Result<S, String>,
) -> Result<RateSample, String> {
    for i in 0..RATE_WARMUP {
        connect()
            .and_then(ask_one)
            .map_err(|e| format!("untimed connection {}: {e}", i + 1))?;
    }
    let mut done = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        connect()
            .and_then(ask_one)
            .map_err(|e| format!("connection {} of {count}: {e}", i + 1))?;
        done.push(start.elapsed());
    }
    ask_to_stop(connect()?)?;
    Ok(RateSample { done })
}

/// A run's outcome. After a client failure, a kernel server is sent the stop request from
/// `client_ns` (it may wait in accept), and no server is waited for (one stuck reading gives up
/// after `IO_TIMEOUT` on its own).
fn outcome(
    what: &str,
    client: Result<RateSample, String>,
    server: JoinHandle<Result<(), String>>,
    kernel_server: Option<(&Netns, SocketAddr)>,
) -> Result<RateSample, String> {
    if client.is_err() {
        if let Some((ns, to)) = kernel_server {
            let _ = ns.run(move || kernel_connect_here(to).and_then(ask_to_stop));
        }
    }
    server_outcome(what, client, server)
}

pub fn run(opts: &Options) -> Result<Rates, String> {
    let count = opts.rate_connections;
    let ns = Netns::new("bench-rate")?;
    // For the kernel's client of kernel -> stack (see the module's documentation).
    ns.widen_local_ports()?;
    let net = start_default_stack(&ns, opts.mtu)?;

    progress(
        opts,
        &format!("connection rate, stack -> kernel, {count} connections"),
    );
    let listener = kernel_listener(&ns, SocketAddr::from((KERNEL_ADDR, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let server = request_server(REQUEST.len(), REQUEST.len(), move || {
        kernel_accept(&listener)
    });
    let client = rate_client(count, || StackConn::connect(&net, to, 0, &[]));
    let stack_to_kernel = outcome("stack -> kernel", client, server, Some((&ns, to)));

    progress(
        opts,
        &format!("connection rate, kernel -> stack, {count} connections"),
    );
    let at = SocketAddr::from((STACK_ADDR, LISTEN_PORT));
    let kernel_to_stack = stack_listener(&net, at).and_then(|listener| {
        let server = request_server(REQUEST.len(), REQUEST.len(), move || {
            stack_accept(&listener)
        });
        let client = ns
            .run(move || rate_client(count, || kernel_connect_here(at)))
            .and_then(|c| c);
        outcome("kernel -> stack", client, server, None)
    });
    net.stop();

    progress(
        opts,
        &format!("connection rate, kernel -> kernel over veth, {count} connections"),
    );
    let (a, b) = veth_pair(opts.mtu)?;
    a.widen_local_ports()?;
    let listener = kernel_listener(&b, SocketAddr::from((VETH_B_ADDR, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let server = request_server(REQUEST.len(), REQUEST.len(), move || {
        kernel_accept(&listener)
    });
    let client = a
        .run(move || rate_client(count, || kernel_connect_here(to)))
        .and_then(|c| c);
    let kernel_to_kernel = outcome("kernel -> kernel over veth", client, server, Some((&a, to)));
    Ok(Rates {
        connections: count,
        stack_to_kernel,
        kernel_to_stack,
        kernel_to_kernel,
    })
}

impl Rates {
    fn rows(&self) -> [(&'static str, &'static str, &Result<RateSample, String>); 3] {
        [
            (
                "stack_to_kernel",
                "stack -> kernel (TUN)",
                &self.stack_to_kernel,
            ),
            (
                "kernel_to_stack",
                "kernel -> stack (TUN)",
                &self.kernel_to_stack,
            ),
            (
                "kernel_to_kernel_veth",
                "kernel -> kernel (veth) [ref]",
                &self.kernel_to_kernel,
            ),
        ]
    }

    fn ratio(&self, sample: &RateSample) -> Option<f64> {
        let reference = self.kernel_to_kernel.as_ref().ok()?.per_second();
        (reference > 0.0).then(|| sample.per_second() / reference)
    }
}

impl Part for Rates {
    fn failures(&self) -> Vec<String> {
        self.rows()
            .into_iter()
            .filter_map(|(_, label, r)| r.as_ref().err().map(|e| format!("{label}: {e}")))
            .collect()
    }

    fn table(&self, _: &Options, out: &mut String) {
        let _ = writeln!(
            out,
            "connection rate: connect, 6-byte request, 6-byte reply, client closes; one at a \
             time, {} per run",
            self.connections
        );
        let first = format!("first {RATE_EDGE}");
        let last = format!("last {RATE_EDGE}");
        header(
            out,
            &[
                ("client -> server", 29),
                ("conn/s", 8),
                (&first, 10),
                (&last, 10),
                ("last/first", 10),
                ("seconds", 8),
            ],
            "ratio to kernel -> kernel",
        );
        for (_, label, sample) in self.rows() {
            match sample {
                Ok(sample) => {
                    let _ = writeln!(
                        out,
                        "{label:<29} | {:>8.0} | {:>10.0} | {:>10.0} | {:>10} | {:>8.2} | {}",
                        sample.per_second(),
                        sample.first(),
                        sample.last(),
                        cell(sample.slowdown(), 3),
                        sample.elapsed().as_secs_f64(),
                        cell(self.ratio(sample), 3)
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "{label:<29} | failed: {e}");
                }
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "each run: {} connections after {RATE_WARMUP} untimed ones, timed on the client from \
             the first connect to the last close; first/last {RATE_EDGE}: those connections alone",
            self.connections
        );
        let _ = writeln!(
            out,
            "kernel clients: net.ipv4.ip_local_port_range set to {LOCAL_PORT_RANGE} in their \
             namespaces (with the default 32768-60999, connect() scans past ports still in \
             TIME-WAIT and slows to ~250/s after ~14,000 connections to one server);\n\
             the stack's client keeps its 32768-60999 (28,232 ports, shared across distinct \
             tuples)"
        );
    }

    fn json(&self, _: &Options, out: &mut String) {
        let _ = write!(
            out,
            "{{\"connections\":{},\"warmup\":{RATE_WARMUP},\"edge\":{RATE_EDGE},\
             \"request_bytes\":{},\"reply_bytes\":{},\"reference\":\"kernel_to_kernel_veth\",\
             \"kernel_local_port_range\":{}",
            self.connections,
            REQUEST.len(),
            REQUEST.len(),
            json_str(LOCAL_PORT_RANGE)
        );
        for (key, _, sample) in self.rows() {
            let _ = write!(out, ",{}:", json_str(key));
            match sample {
                Ok(sample) => {
                    let _ = write!(
                        out,
                        "{{\"connections_per_s\":{:.1},\"first_per_s\":{:.1},\"last_per_s\":{:.1},\
                         \"connections\":{},\"elapsed_s\":{:.6},\"ratio_to_reference\":{},\
                         \"error\":null}}",
                        sample.per_second(),
                        sample.first(),
                        sample.last(),
                        sample.done.len(),
                        sample.elapsed().as_secs_f64(),
                        json_num(self.ratio(sample), 4)
                    );
                }
                Err(e) => {
                    let _ = write!(out, "{{\"error\":{}}}", json_str(e));
                }
            }
        }
        out.push('}');
    }
}
