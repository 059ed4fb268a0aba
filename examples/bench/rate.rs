//! The `rate` section: connection rate.
//!
//! One connection at a time, each: the client connects (a blocking connect, which returns once
//! established), writes 1 byte, reads the server's 1-byte reply and closes (so TIME-WAIT stays
//! with the client); the server accepts, reads the byte, answers, reads up to the client's FIN
//! and closes. Timed on the client, from the first connect to the last close, over 2 s or 5000
//! connections, whichever comes first, after 20 untimed ones: stack client to kernel server and
//! kernel client to stack server over TUN, and kernel to kernel over a veth pair (the reference;
//! offloads on, which make no difference to 1-byte segments). Figure: connections per second.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::conn::{
    kernel_accept, kernel_connect_here, kernel_listener, stack_accept, stack_connect,
    stack_listener, LISTEN_PORT,
};
use crate::exchange::{ask_to_stop, request_server, server_outcome};
use crate::netns::{start_default_stack, veth_pair, Netns, KERNEL_ADDR, STACK_ADDR, VETH_B_ADDR};
use crate::progress;
use crate::report::{cell, header, json_num, json_str, Part};

/// How long a run lasts, how many connections it makes at most, and how many untimed first.
const RATE_WINDOW: Duration = Duration::from_secs(2);
const RATE_MAX: u64 = 5000;
const RATE_WARMUP: u64 = 20;

/// The `rate` section.
pub struct Rates {
    stack_to_kernel: RateSample,
    kernel_to_stack: RateSample,
    kernel_to_kernel: RateSample,
}

#[derive(Debug, Clone, Copy)]
struct RateSample {
    connections: u64,
    elapsed: Duration,
}

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

/// The client side of one `rate` connection, after connecting.
fn ask_one(mut s: impl Read + Write) -> Result<(), String> {
    s.write_all(b"r")
        .map_err(|e| format!("client writing: {e}"))?;
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte)
        .map_err(|e| format!("client reading: {e}"))
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
    ask_to_stop(connect()?)?;
    Ok(RateSample {
        connections,
        elapsed,
    })
}

pub fn run(opts: &Options) -> Result<Rates, String> {
    let ns = Netns::new("bench-rate")?;
    let net = start_default_stack(&ns, opts.mtu)?;

    progress(opts, "connection rate, stack -> kernel");
    let listener = kernel_listener(&ns, SocketAddr::from((KERNEL_ADDR, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let server = request_server(1, move || kernel_accept(&listener));
    let client = rate_client(|| stack_connect(&net, to));
    let stack_to_kernel = server_outcome("stack -> kernel", client, server)?;

    progress(opts, "connection rate, kernel -> stack");
    let at = SocketAddr::from((STACK_ADDR, LISTEN_PORT));
    let listener = stack_listener(&net, at)?;
    let server = request_server(1, move || stack_accept(&listener));
    let client = ns.run(move || rate_client(|| kernel_connect_here(at)))?;
    let kernel_to_stack = server_outcome("kernel -> stack", client, server)?;
    net.stop();

    progress(opts, "connection rate, kernel -> kernel over veth");
    let (a, b) = veth_pair(opts.mtu)?;
    let listener = kernel_listener(&b, SocketAddr::from((VETH_B_ADDR, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    let server = request_server(1, move || kernel_accept(&listener));
    let client = a.run(move || rate_client(|| kernel_connect_here(to)))?;
    let kernel_to_kernel = server_outcome("kernel -> kernel over veth", client, server)?;
    Ok(Rates {
        stack_to_kernel,
        kernel_to_stack,
        kernel_to_kernel,
    })
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
}

impl Part for Rates {
    fn table(&self, _: &Options, out: &mut String) {
        let _ = writeln!(
            out,
            "connection rate: connect, 1-byte request, 1-byte reply, close; one at a time"
        );
        header(
            out,
            &[("client -> server", 29), ("conn/s", 8), ("connections", 11)],
            "ratio to kernel -> kernel",
        );
        for (_, label, sample) in self.rows() {
            let _ = writeln!(
                out,
                "{label:<29} | {:>8.0} | {:>11} | {}",
                sample.per_second(),
                sample.connections,
                cell(self.ratio(&sample), 3)
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

    fn json(&self, _: &Options, out: &mut String) {
        let _ = write!(
            out,
            "{{\"window_s\":{},\"max_connections\":{RATE_MAX},\
             \"reference\":\"kernel_to_kernel_veth\"",
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
                json_num(self.ratio(&sample), 4)
            );
        }
        out.push('}');
    }
}
