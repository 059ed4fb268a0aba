//! The `fastopen` section: what the TCP Fast Open layer costs on bulk throughput.
//!
//! Three kinds of run, alike but for `StackConfig::fast_open_layer` ([`crate::twin`]): with the
//! layer active (the variant), with it off (`fast_open_layer: false`, the baseline: the same
//! calls make plain connections), and with it off again (the control: what two alike runs
//! differ by here). Each run has a stack of its own, in the slot of its place in the round; the
//! namespace's `net.ipv4.tcp_fastopen` is 1027 (client, server, and server on every listener).
//! Before its measured run, each stack makes one connection each way, so that each side caches
//! the other's cookie (a new stack has a new server key, so the kernel's cached cookie for that
//! address is renewed then). Runs are timed as in `throughput`.
//!
//! - `stack -> kernel`: the stack writes to a kernel listener. Each measured connection is made
//!   with `connectx(CONNECT_DATA_IDEMPOTENT)` and its first 1000 bytes as data. With the layer,
//!   that data (as much as the SYN takes: all of it at MTU 1500) rides in the SYN, and the
//!   layer translates the sequence and acknowledgement numbers of every later segment of the
//!   connection; a run counts only if `fast_open_info` says the SYN carried data and the
//!   SYN-ACK acknowledged all of it.
//! - `kernel -> stack`: a kernel client (`TCP_FASTOPEN_CONNECT`) writes to a stack listener with
//!   Fast Open on (`set_fast_open`). With the layer, the kernel's first write rides in the SYN; a
//!   run counts only if `server_fast_open_info` says its SYN carried a valid cookie and data.
//!
//! Each (direction, kind) runs [`FAST_OPEN_ROUNDS`] times, interleaved, the three kinds turned
//! by one place each round; the figures are medians, the ratio the median with the layer over
//! the median without, and by round each run over the baseline's of its round (the control's
//! too).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use connectx_api::{StackConfig, CONNECT_DATA_IDEMPOTENT};

use crate::bulk::{measure, Sample};
use crate::cli::Options;
use crate::conn::{
    fast_open_client_check, fast_open_listener, kernel_accept, kernel_fast_open_connect,
    kernel_listener, stack_accept, StackConn,
};
use crate::exchange::wait;
use crate::netns::{offload, Netns};
use crate::progress;
use crate::report::{cell, header, joined, json_num, json_str, Part};
use crate::twin::{self, by_round, quartiles_json, Compared, Role, Twin};

/// Runs per (direction, kind): a multiple of three, so that each kind runs first, second and
/// third in its round as often.
const FAST_OPEN_ROUNDS: usize = 6;
/// What a Fast Open client connection gives `connectx` as data (the SYN carries what fits).
const SYN_DATA: usize = 1000;

/// The `fastopen` section: per direction, Gbit/s with the layer active (the variant) and off
/// (the baseline), and the control's against the baseline's.
pub struct FastOpenCost {
    stack_to_kernel: Compared,
    kernel_to_stack: Compared,
}

impl Twin {
    /// One connection each way, so that each side caches the other's cookie.
    fn fetch_cookies(&self, ns: &Netns) -> Result<(), String> {
        // The stack's client asks the kernel's server.
        let listener = kernel_listener(ns, SocketAddr::from((self.kernel, 0)))?;
        let to = listener.local_addr().map_err(|e| e.to_string())?;
        let server = drain_one(move || kernel_accept(&listener));
        let conn = StackConn::connect(&self.net, to, CONNECT_DATA_IDEMPOTENT, b"cookie")?;
        drop(conn);
        wait(server).map_err(|e| format!("fetching the kernel's cookie: {e}"))?;
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
        let server = drain_one(move || stack_accept(&listener));
        let mut client = kernel_fast_open_connect(ns, self.at)?;
        client
            .write_all(b"cookie")
            .map_err(|e| format!("kernel client: {e}"))?;
        drop(client);
        wait(server).map_err(|e| format!("giving the kernel a cookie: {e}"))
    }

    /// Stack to kernel, on a connection made with `CONNECT_DATA_IDEMPOTENT`.
    fn fast_open_to_kernel(&self, ns: &Netns, window: Duration) -> Result<(Sample, usize), String> {
        let listener = kernel_listener(ns, SocketAddr::from((self.kernel, 0)))?;
        let to = listener.local_addr().map_err(|e| e.to_string())?;
        let mut syn_data = 0;
        let sample = measure(
            window,
            move || kernel_accept(&listener),
            || {
                let first = vec![0x5au8; SYN_DATA];
                let conn = StackConn::connect(&self.net, to, CONNECT_DATA_IDEMPOTENT, &first)?;
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
    fn fast_open_from_kernel(
        &self,
        ns: &Netns,
        window: Duration,
    ) -> Result<(Sample, usize), String> {
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

pub fn run(opts: &Options) -> Result<FastOpenCost, String> {
    let window = Duration::from_secs_f64(opts.seconds);
    let ns = Netns::new("bench-fastopen")?;
    ns.enable_fast_open()?;
    type Direction = fn(&Twin, &Netns, Duration) -> Result<(Sample, usize), String>;
    let directions: [(&str, Direction); 2] = [
        ("stack -> kernel", Twin::fast_open_to_kernel),
        ("kernel -> stack", Twin::fast_open_from_kernel),
    ];
    let roles = [
        (Role::On, "layer active"),
        (Role::Off, "layer off"),
        (Role::Control, "control (layer off)"),
    ];
    let mut runs = [Compared::default(), Compared::default()];
    for round in 0..FAST_OPEN_ROUNDS {
        for ((direction, measure), runs) in directions.iter().zip(&mut runs) {
            for (at, &(role, label)) in twin::order(&roles, round).into_iter().enumerate() {
                let what = format!("{direction}, {label}");
                progress(
                    opts,
                    &format!(
                        "Fast Open layer, round {}/{FAST_OPEN_ROUNDS}: {what}",
                        round + 1
                    ),
                );
                let mut config = StackConfig::default();
                config.fast_open_layer = role == Role::On;
                // Without the layer, Fast Open on the listener is accepted and does nothing.
                let v = Twin::start(
                    &ns,
                    at,
                    role == Role::On,
                    config,
                    (opts.mtu, offload()),
                    fast_open_listener,
                )
                .map_err(|e| format!("{what}: {e}"))?;
                let measured = v
                    .fetch_cookies(&ns)
                    .and_then(|()| measure(&v, &ns, window))
                    .map_err(|e| format!("{what}: {e}"));
                v.net.stop();
                let (sample, syn) = measured?;
                runs.push(role, sample.gbps(), syn);
            }
        }
    }
    let [stack_to_kernel, kernel_to_stack] = runs;
    Ok(FastOpenCost {
        stack_to_kernel,
        kernel_to_stack,
    })
}

/// On a thread of its own: accept one connection and read it up to its end.
fn drain_one<S: Read>(
    accept: impl FnOnce() -> Result<S, String> + Send + 'static,
) -> JoinHandle<Result<(), String>> {
    thread::spawn(move || {
        let mut s = accept()?;
        io::copy(&mut s, &mut io::sink()).map_err(|e| format!("server reading: {e}"))?;
        Ok(())
    })
}

impl FastOpenCost {
    fn directions(&self) -> [(&'static str, &'static str, &Compared); 2] {
        [
            ("stack_to_kernel", "stack -> kernel", &self.stack_to_kernel),
            ("kernel_to_stack", "kernel -> stack", &self.kernel_to_stack),
        ]
    }
}

impl Part for FastOpenCost {
    fn table(&self, opts: &Options, out: &mut String) {
        let _ = writeln!(
            out,
            "Fast Open layer cost: bulk throughput over TUN, MTU {}, layer active vs \
             fast_open_layer: false",
            opts.mtu
        );
        header(
            out,
            &[
                ("direction", 15),
                ("active Gbit/s", 13),
                ("off Gbit/s", 10),
                ("active/off", 10),
                ("by round (quartiles)", 20),
                ("control by round", 20),
            ],
            "runs active / off / control (Gbit/s)",
        );
        for (_, label, runs) in self.directions() {
            let p = &runs.layer;
            let _ = writeln!(
                out,
                "{label:<15} | {:>13.3} | {:>10.3} | {:>10} | {:>20} | {:>20} | {} / {} / {}",
                p.variant_median(),
                p.baseline_median(),
                cell(p.ratio(), 3),
                by_round(p),
                by_round(&runs.control),
                joined(p.variant.iter().copied(), 3, " "),
                joined(p.baseline.iter().copied(), 3, " "),
                joined(runs.control.variant.iter().copied(), 3, " ")
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "medians of {FAST_OPEN_ROUNDS} runs per kind, each on a stack of its own, \
             interleaved, {} s each from the receiver's first byte; by round: each run over \
             the baseline's (layer off) of the same round; control: a second stack without the \
             layer, by round over the baseline (an active/off inside its range is no measurable \
             cost); with the layer active every measured connection was a Fast Open one: stack \
             -> kernel SYNs carried {} bytes, all acknowledged by the kernel; kernel -> stack \
             SYNs carried a valid cookie and {} bytes",
            opts.seconds,
            self.stack_to_kernel.layer.syn_range(),
            self.kernel_to_stack.layer.syn_range()
        );
    }

    fn json(&self, opts: &Options, out: &mut String) {
        let _ = write!(
            out,
            "{{\"mtu\":{},\"seconds\":{},\"rounds\":{FAST_OPEN_ROUNDS}",
            opts.mtu, opts.seconds
        );
        for (key, _, runs) in self.directions() {
            let p = &runs.layer;
            let _ = write!(
                out,
                ",{}:{{\"layer_active_gbit_per_s\":{:.4},\"layer_off_gbit_per_s\":{:.4},\
                 \"ratio_active_to_off\":{},\"runs_layer_active_gbit_per_s\":[{}],\
                 \"runs_layer_off_gbit_per_s\":[{}],\"runs_control_gbit_per_s\":[{}],\
                 \"ratio_by_round\":{},\"control_ratio_by_round\":{},\"syn_data_bytes\":[{}]}}",
                json_str(key),
                p.variant_median(),
                p.baseline_median(),
                json_num(p.ratio(), 4),
                joined(p.variant.iter().copied(), 4, ","),
                joined(p.baseline.iter().copied(), 4, ","),
                joined(runs.control.variant.iter().copied(), 4, ","),
                quartiles_json(p),
                quartiles_json(&runs.control),
                joined(p.syn_data.iter().map(|&n| n as f64), 0, ",")
            );
        }
        out.push('}');
    }
}
