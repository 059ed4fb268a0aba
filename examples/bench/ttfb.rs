//! The `ttfb` section: time to first byte over a path with 20 ms of one-way delay.
//!
//! One stack on `cxb0` whose packet path (`NetBuilder::impairment`, a decorator on the stack's
//! side of the TUN device) holds every packet 20 ms in each direction; the kernel adds none, so
//! a round trip between the stack and the kernel takes at least 40 ms. The namespace's
//! `net.ipv4.tcp_fastopen` is 1027. On each connection the client sends a 64-byte request; the
//! server reads all of it, answers with 1 byte at once, then reads up to the client's FIN and
//! closes; the client, once it has the reply, shuts its side down and reads up to the server's
//! FIN before the next connection starts (so that connections never overlap and the server
//! waits in `accept`). Two cases, each with two variants:
//!
//! - `stack -> kernel`: the stack's client, a kernel server (`std::net::TcpListener`, Fast Open
//!   by the sysctl). Plain: a blocking `connectx` without flags, the request as its iov (queued;
//!   sent once the handshake is over, when `connectx` returns). Fast Open: the same with
//!   `CONNECT_DATA_IDEMPOTENT`; the kernel's cookie cached, the request rides in the SYN. Timed
//!   on the client thread from just before `connectx` (the socket is made, and its timeouts
//!   set, before) to the return of the `recv` that brings the reply's byte. By `fast_open_info`,
//!   each measured Fast Open connection must have sent the whole request in its SYN and had it
//!   all acknowledged by the SYN-ACK, without fallback; each plain one no SYN data.
//! - `kernel -> stack`: a kernel client, the stack's listener with Fast Open on
//!   (`set_fast_open`). Plain: `std::net::TcpStream::connect` (returns once established),
//!   `write`, `read`. Fast Open: `tun_driver::kernel::fast_open_connect` (`TCP_FASTOPEN_CONNECT`:
//!   with the stack's cookie cached it returns at once, and the `write` sends the SYN with the
//!   request), `write`, `read`. Timed on the client thread from just before the call that makes
//!   the socket and connects to the return of the `read` that brings the reply's byte (setting
//!   the socket's timeouts, two `setsockopt`s, falls inside). By `server_fast_open_info` on the
//!   accepted connection, each measured Fast Open connection must have brought a valid cookie
//!   and the whole request in its SYN; each plain one no SYN data.
//!
//! Per case, first an untimed plain connection and an untimed Fast Open one (which fetches the
//! server's cookie: no SYN data yet), then `--ttfb-connections` (default 10) of each, plain and
//! Fast Open alternating. Reported per case and variant: median, minimum and maximum in ms, and
//! the ratio of the medians, Fast Open over plain, whose target is 0.55 at most. What the
//! physics allows, with the stack's delay `d` = 20 ms each way:
//!
//! ```text
//! plain      SYN ─d─>  <─d─ SYN-ACK   request ─d─>  <─d─ reply         ≈ 4d = 80 ms
//! Fast Open  SYN + request ─d─>  <─d─ SYN-ACK, reply                   ≈ 2d = 40 ms
//! ```
//!
//! so 0.5 at best; the rest is the time the two hosts' code takes.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use connectx_api::{Impairment, Net, Shutdown, StackConfig, CONNECT_DATA_IDEMPOTENT};

use crate::cli::Options;
use crate::conn::{
    fast_open_client_check, fast_open_listener, kernel_accept, kernel_connect_here,
    kernel_fast_open_connect_here, kernel_listener, read_some, stack_accept, StackConn,
    LISTEN_PORT,
};
use crate::exchange::{ask_to_stop, request_server, server_outcome};
use crate::netns::{start_stack, Netns, KERNEL_ADDR, STACK_ADDR, TUN};
use crate::paired::{min_max, Paired};
use crate::progress;
use crate::report::{cell, header, joined, json_num, json_str, Part};

/// The one-way delay the stack adds to each packet, in each direction.
const DELAY: Duration = Duration::from_millis(20);
/// What a client sends; the server answers with its first byte once it has read it all.
const REQUEST: [u8; 64] = [b't'; 64];
/// The ratio of the medians, Fast Open over plain, aimed at.
const TARGET: f64 = 0.55;

/// The `ttfb` section: per case, ms to the first byte with Fast Open (the variant) and with a
/// plain handshake (the baseline).
pub struct Ttfb {
    /// Connections per variant and case.
    connections: usize,
    /// The stack's client, a kernel server.
    stack_to_kernel: Paired,
    /// A kernel client, the stack's server.
    kernel_to_stack: Paired,
}

/// One connection of a case.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// Measured (else a warm-up).
    timed: bool,
    fast_open: bool,
}

/// The connections of a case, in order: an untimed plain one and an untimed Fast Open one
/// (which fetches the server's cookie), then `n` of each, alternating, plain first.
fn schedule(n: usize) -> impl Iterator<Item = Attempt> {
    let warmup = [false, true].map(|fast_open| Attempt {
        timed: false,
        fast_open,
    });
    warmup.into_iter().chain((0..2 * n).map(|i| Attempt {
        timed: true,
        fast_open: i % 2 == 1,
    }))
}

pub fn run(opts: &Options) -> Result<Ttfb, String> {
    let n = opts.ttfb_connections;
    let ns = Netns::new("bench-ttfb")?;
    ns.enable_fast_open()?;
    let delay = Impairment {
        delay: DELAY,
        ..Impairment::default()
    };
    let net = start_stack(
        &ns,
        TUN,
        (STACK_ADDR, KERNEL_ADDR),
        opts.mtu,
        StackConfig::default(),
        delay,
    )?;
    let what =
        |case: &str| format!("time to first byte, {case}: {n} plain and {n} Fast Open connections");
    progress(opts, &what("stack -> kernel"));
    let stack_to_kernel = stack_client(&ns, &net, n)?;
    progress(opts, &what("kernel -> stack"));
    let kernel_to_stack = kernel_client(&ns, &net, n)?;
    net.stop();
    Ok(Ttfb {
        connections: n,
        stack_to_kernel,
        kernel_to_stack,
    })
}

/// The stack's client against a kernel server.
fn stack_client(ns: &Netns, net: &Net, n: usize) -> Result<Paired, String> {
    let listener = kernel_listener(ns, SocketAddr::from((KERNEL_ADDR, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let server = request_server(REQUEST.len(), 1, move || kernel_accept(&listener));
    let client = (|| {
        let mut times = Vec::new();
        let mut infos = Vec::new();
        for attempt in schedule(n) {
            let flags = if attempt.fast_open {
                CONNECT_DATA_IDEMPOTENT
            } else {
                0
            };
            let mut conn = StackConn::socket(net, to)?;
            let start = Instant::now();
            conn.connectx(to, flags, &REQUEST)
                .map_err(|e| format!("connectx to {to}: {e}"))?;
            times.push(read_reply(&mut conn, start)?);
            infos.push(
                net.fast_open_info(conn.fd)
                    .map_err(|e| format!("fast_open_info: {e}"))?,
            );
            net.shutdown(conn.fd, Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            read_to_fin(&mut conn)?;
        }
        ask_to_stop(StackConn::connect(net, to, 0, &[])?)?;
        Ok((times, infos))
    })();
    let (times, infos) = server_outcome("stack -> kernel", client, server)?;
    tally(n, times, |i, attempt| match infos[i] {
        info if attempt.fast_open => fast_open_client_check(info),
        info => Ok(info.map_or(0, |i| i.syn_data_sent)),
    })
    .map_err(|e| format!("stack -> kernel: {e}"))
}

/// A kernel client against the stack's Fast Open listener.
fn kernel_client(ns: &Netns, net: &Net, n: usize) -> Result<Paired, String> {
    let at = SocketAddrV4::new(STACK_ADDR, LISTEN_PORT);
    let listener = fast_open_listener(net, at.into())?;
    // What Fast Open did on each connection the server accepted, in order.
    let (seen, infos) = mpsc::channel();
    let server_net = net.clone();
    let server = request_server(REQUEST.len(), 1, move || {
        let s = stack_accept(&listener)?;
        let info = server_net
            .server_fast_open_info(s.fd())
            .map_err(|e| format!("server_fast_open_info: {e}"))?;
        let _ = seen.send(info);
        Ok(s)
    });
    let client = ns.run(move || -> Result<Vec<Duration>, String> {
        let mut times = Vec::new();
        for attempt in schedule(n) {
            let start = Instant::now();
            let mut s = if attempt.fast_open {
                kernel_fast_open_connect_here(at)?
            } else {
                kernel_connect_here(at.into())?
            };
            s.write_all(&REQUEST)
                .map_err(|e| format!("client writing: {e}"))?;
            times.push(read_reply(&mut s, start)?);
            s.shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            read_to_fin(&mut s)?;
        }
        ask_to_stop(kernel_connect_here(at.into())?)?;
        Ok(times)
    })?;
    let times = server_outcome("kernel -> stack", client, server)?;
    let infos: Vec<_> = infos.try_iter().collect();
    tally(n, times, |i, attempt| {
        match infos.get(i).copied().flatten() {
            Some(info) if attempt.fast_open && info.cookie_valid != Some(true) => Err(format!(
                "a Fast Open SYN came without a valid cookie: {info:?}"
            )),
            info => Ok(info.map_or(0, |i| i.syn_data)),
        }
    })
    .map_err(|e| format!("kernel -> stack: {e}"))
}

/// Read the server's 1-byte reply: the time from `start` until it came.
fn read_reply(s: &mut impl Read, start: Instant) -> Result<Duration, String> {
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte)
        .map_err(|e| format!("client reading the reply: {e}"))?;
    let time = start.elapsed();
    if byte[0] != REQUEST[0] {
        return Err(format!("unexpected reply {:?}", byte[0]));
    }
    Ok(time)
}

/// After our FIN: read up to the server's, so that it is back in `accept` before the next
/// connection starts.
fn read_to_fin(s: &mut impl Read) -> Result<(), String> {
    match read_some(s, &mut [0u8; 1]) {
        Ok(0) => Ok(()),
        Ok(_) => Err("the server sent more than its reply".into()),
        Err(e) => Err(format!("client waiting for the server's FIN: {e}")),
    }
}

/// The times of the measured connections in ms, by variant, `times` being those of every
/// connection of [`schedule`] in order. `syn_data(i, attempt)` says how many bytes the SYN of
/// the `i`-th connection carried (an error if Fast Open did not work as asked): a Fast Open
/// connection's must have carried the whole request, a plain one's nothing.
fn tally(
    n: usize,
    times: Vec<Duration>,
    mut syn_data: impl FnMut(usize, Attempt) -> Result<usize, String>,
) -> Result<Paired, String> {
    let mut runs = Paired::default();
    for (i, (attempt, time)) in schedule(n).zip(times).enumerate() {
        if !attempt.timed {
            continue;
        }
        let bytes = syn_data(i, attempt)?;
        match (attempt.fast_open, bytes) {
            (true, b) if b == REQUEST.len() => {}
            (false, 0) => {}
            (true, b) => {
                return Err(format!(
                    "a Fast Open SYN carried {b} of the request's {} bytes",
                    REQUEST.len()
                ))
            }
            (false, b) => return Err(format!("a plain connection's SYN carried {b} bytes")),
        }
        runs.push(attempt.fast_open, time.as_secs_f64() * 1e3, bytes);
    }
    if runs.variant.len() + runs.baseline.len() != 2 * n {
        return Err(format!(
            "{} of {} connections measured",
            runs.variant.len() + runs.baseline.len(),
            2 * n
        ));
    }
    Ok(runs)
}

impl Ttfb {
    fn cases(&self) -> [(&'static str, &'static str, &Paired); 2] {
        [
            ("stack_to_kernel", "stack -> kernel", &self.stack_to_kernel),
            ("kernel_to_stack", "kernel -> stack", &self.kernel_to_stack),
        ]
    }
}

impl Part for Ttfb {
    fn table(&self, _: &Options, out: &mut String) {
        let _ = writeln!(
            out,
            "time to first byte over TUN, {} ms one-way delay on the stack's device (a round \
             trip >= {} ms): plain handshake vs Fast Open with a cached cookie",
            DELAY.as_millis(),
            2 * DELAY.as_millis()
        );
        header(
            out,
            &[
                ("client -> server", 16),
                ("plain ms (min-max)", 22),
                ("Fast Open ms (min-max)", 22),
            ],
            "Fast Open / plain",
        );
        let spread = |median: f64, figures: &[f64]| {
            let (lo, hi) = min_max(figures).unwrap_or_default();
            format!("{median:.1} ({lo:.1}-{hi:.1})")
        };
        for (_, label, runs) in self.cases() {
            let _ = writeln!(
                out,
                "{label:<16} | {:>22} | {:>22} | {}",
                spread(runs.baseline_median(), &runs.baseline),
                spread(runs.variant_median(), &runs.variant),
                cell(runs.ratio(), 3)
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "medians of {} connections per variant, alternating, after an untimed one of each \
             (the Fast Open one fetched the cookie);\ntimed on the client from just before \
             connectx (stack) or connect (kernel) to the reply's first byte; every measured \
             Fast Open connection\ncarried its {}-byte request in the SYN (stack -> kernel: \
             acknowledged by the kernel's SYN-ACK; kernel -> stack: behind a valid cookie);\n\
             target Fast Open / plain <= {TARGET} (1 round trip instead of 2)",
            self.connections,
            REQUEST.len()
        );
    }

    fn json(&self, _: &Options, out: &mut String) {
        let _ = write!(
            out,
            "{{\"one_way_delay_ms\":{},\"connections\":{},\"request_bytes\":{},\
             \"target_ratio\":{TARGET}",
            DELAY.as_millis(),
            self.connections,
            REQUEST.len()
        );
        for (key, _, runs) in self.cases() {
            let (plain_min, plain_max) = min_max(&runs.baseline).unzip();
            let (fast_open_min, fast_open_max) = min_max(&runs.variant).unzip();
            let _ = write!(
                out,
                ",{}:{{\"plain_ms\":{:.3},\"plain_min_ms\":{},\"plain_max_ms\":{},\
                 \"fast_open_ms\":{:.3},\"fast_open_min_ms\":{},\"fast_open_max_ms\":{},\
                 \"ratio_fast_open_to_plain\":{},\"runs_plain_ms\":[{}],\
                 \"runs_fast_open_ms\":[{}],\"syn_data_bytes\":[{}]}}",
                json_str(key),
                runs.baseline_median(),
                json_num(plain_min, 3),
                json_num(plain_max, 3),
                runs.variant_median(),
                json_num(fast_open_min, 3),
                json_num(fast_open_max, 3),
                json_num(runs.ratio(), 4),
                joined(runs.baseline.iter().copied(), 3, ","),
                joined(runs.variant.iter().copied(), 3, ","),
                joined(runs.syn_data.iter().map(|&b| b as f64), 0, ",")
            );
        }
        out.push('}');
    }
}
