//! The `throughput` section: bulk TCP throughput.
//!
//! - `stack -> kernel`: the stack's `TcpStream` writes 256 KiB chunks as fast as it can to a
//!   kernel `std::net::TcpListener` over TUN device `cxb0`; the kernel side reads and discards.
//! - `kernel -> stack`: a kernel `std::net::TcpStream` writes to the stack's `TcpListener`.
//! - `kernel -> kernel` over a veth pair whose ends live in two more private namespaces (so that
//!   packets really cross the pair), at the same MTU, with the kernel's offloads on (its
//!   default: TSO/GSO hand 64 KiB segments across the pair) and off (one skb per packet, as
//!   over TUN). Offloads are turned off with `ethtool -K … tso off gso off gro off`; without
//!   `ethtool` there is no offloads-off figure (the section says why) and the ratios are to
//!   the kernel with offloads on.
//! - `kernel -> kernel` over loopback in the TUN test's namespace, for scale.
//!
//! Each run lasts `--seconds` (default 3) from the receiver's first byte; the figure is the
//! payload the receiver read after that first read, over the time it took, in Gbit/s (10^9
//! bit/s). The ratios are against the reference: veth with offloads off when it could be
//! measured, else veth with offloads on, else loopback.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use connectx_api::Net;
use tun_driver::Link;

use crate::bulk::{measure, Sample};
use crate::cli::Options;
use crate::conn::{
    kernel_accept, kernel_connect, kernel_listener, stack_accept, stack_connect, stack_listener,
    LISTEN_PORT,
};
use crate::netns::{
    kernel_tx_stats, offloads_off, start_default_stack, veth_pair, Netns, KERNEL_ADDR, STACK_ADDR,
    TUN, VETH_A, VETH_B, VETH_B_ADDR,
};
use crate::progress;
use crate::report::{cell, cpus, header, json_num, json_str, Part};

/// One run.
struct Row {
    key: &'static str,
    label: String,
    sample: Sample,
    /// Packets the stack sent and received during the run (TUN runs only).
    stack_packets: Option<(u64, u64)>,
    /// Packets the kernel sent into the TUN device and dropped (its queue full) during the run.
    kernel_tun_tx: Option<(u64, u64)>,
}

impl Row {
    /// A kernel-to-kernel run.
    fn kernel(key: &'static str, label: String, sample: Sample) -> Row {
        Row {
            key,
            label,
            sample,
            stack_packets: None,
            kernel_tun_tx: None,
        }
    }
}

/// The `throughput` section.
#[derive(Default)]
pub struct Throughput {
    rows: Vec<Row>,
    reference: Option<usize>,
    offloads_off: Option<&'static str>,
}

pub fn run(opts: &Options, notes: &mut Vec<String>) -> Result<Throughput, String> {
    let window = Duration::from_secs_f64(opts.seconds);
    let mut rows = Vec::new();

    // The stack on a TUN device, and the kernel on its other side.
    let ns = Netns::new("bench-tun")?;
    let mtu = opts.mtu;
    let net = start_default_stack(&ns, mtu)?;

    progress(opts, "stack -> kernel over TUN");
    rows.push(tun_run(
        &ns,
        &net,
        "stack_to_kernel",
        "stack -> kernel",
        mtu,
        || {
            let listener = kernel_listener(&ns, SocketAddr::from((KERNEL_ADDR, 0)))?;
            let to = listener.local_addr().map_err(|e| e.to_string())?;
            measure(
                window,
                move || kernel_accept(&listener),
                || stack_connect(&net, to),
            )
        },
    )?);

    progress(opts, "kernel -> stack over TUN");
    rows.push(tun_run(
        &ns,
        &net,
        "kernel_to_stack",
        "kernel -> stack",
        mtu,
        || {
            let at = SocketAddr::from((STACK_ADDR, LISTEN_PORT));
            let listener = stack_listener(&net, at)?;
            measure(
                window,
                move || stack_accept(&listener),
                || kernel_connect(&ns, at),
            )
        },
    )?);
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
    let sample = kernel_to_kernel(window, (&ns, Ipv4Addr::LOCALHOST), &ns)
        .map_err(|e| format!("kernel -> kernel over loopback: {e}"))?;
    rows.push(Row::kernel(
        "kernel_to_kernel_loopback",
        format!("kernel -> kernel (loopback, MTU {lo_mtu})"),
        sample,
    ));

    let reference = [
        "kernel_to_kernel_veth_offloads_off",
        "kernel_to_kernel_veth_offloads_on",
        "kernel_to_kernel_loopback",
    ]
    .iter()
    .find_map(|key| rows.iter().position(|r| r.key == *key));
    Ok(Throughput {
        rows,
        reference,
        offloads_off: offloads,
    })
}

/// A run over TUN (`measure` it), with the packets the stack and the kernel's side of the
/// device moved meanwhile.
fn tun_run(
    ns: &Netns,
    net: &Net,
    key: &'static str,
    direction: &str,
    mtu: u32,
    run: impl FnOnce() -> Result<Sample, String>,
) -> Result<Row, String> {
    let tun_stats = || ns.run(|| kernel_tx_stats(TUN)).ok().flatten();
    let (p0, k0) = (packets(net), tun_stats());
    let sample = run().map_err(|e| format!("{direction}: {e}"))?;
    let (p1, k1) = (packets(net), tun_stats());
    Ok(Row {
        key,
        label: format!("{direction} (TUN, MTU {mtu})"),
        sample,
        stack_packets: Some((p1.0 - p0.0, p1.1 - p0.1)),
        kernel_tun_tx: k0.zip(k1).map(|(a, b)| (b.0 - a.0, b.1 - a.1)),
    })
}

/// A kernel client in `client` sending to a kernel server at `server.1` in `server.0`.
fn kernel_to_kernel(
    window: Duration,
    (server, addr): (&Netns, Ipv4Addr),
    client: &Netns,
) -> Result<Sample, String> {
    let listener = kernel_listener(server, SocketAddr::from((addr, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    measure(
        window,
        move || kernel_accept(&listener),
        || kernel_connect(client, to),
    )
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
        kernel_to_kernel(window, (&b, VETH_B_ADDR), &a)
            .map_err(|e| format!("kernel -> kernel over veth, {what}: {e}"))
    };

    progress(opts, "kernel -> kernel over veth, offloads on");
    let on = Row::kernel(
        "kernel_to_kernel_veth_offloads_on",
        format!("kernel -> kernel (veth, MTU {mtu}, offloads on)"),
        one("offloads on")?,
    );
    progress(opts, "kernel -> kernel over veth, offloads off");
    let off = (|| {
        let how = a.run(|| offloads_off(VETH_A))??;
        b.run(|| offloads_off(VETH_B))??;
        Ok::<_, String>((how, one("offloads off")?))
    })();
    match off {
        Ok((how, sample)) => {
            *offloads = Some(how);
            rows.push(Row::kernel(
                "kernel_to_kernel_veth_offloads_off",
                format!("kernel -> kernel (veth, MTU {mtu}, offloads off)"),
                sample,
            ));
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

/// Packets the stack has sent and received, over all its devices.
fn packets(net: &Net) -> (u64, u64) {
    net.interfaces()
        .iter()
        .fold((0, 0), |(tx, rx), i| (tx + i.tx_packets, rx + i.rx_packets))
}

impl Throughput {
    fn ratio(&self, row: &Row) -> Option<f64> {
        let reference = self.rows.get(self.reference?)?.sample.gbps();
        (reference > 0.0).then(|| row.sample.gbps() / reference)
    }
}

impl Part for Throughput {
    fn table(&self, opts: &Options, out: &mut String) {
        let width = self
            .rows
            .iter()
            .map(|r| r.label.len() + 6)
            .max()
            .unwrap_or(0)
            .max("direction".len());
        header(
            out,
            &[("direction", width), ("Gbit/s", 7)],
            "ratio to kernel reference",
        );
        for (i, row) in self.rows.iter().enumerate() {
            let label = if Some(i) == self.reference {
                format!("{} [ref]", row.label)
            } else {
                row.label.clone()
            };
            let _ = writeln!(
                out,
                "{label:<width$} | {:>7.3} | {}",
                row.sample.gbps(),
                cell(self.ratio(row), 3)
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

    fn json(&self, _: &Options, out: &mut String) {
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
                "{}:{{\"label\":{},\"gbit_per_s\":{:.4},\"bytes\":{},\"elapsed_s\":{:.6},\
                 \"ratio_to_reference\":{}",
                json_str(row.key),
                json_str(&row.label),
                row.sample.gbps(),
                row.sample.bytes,
                row.sample.elapsed.as_secs_f64(),
                json_num(self.ratio(row), 4)
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
