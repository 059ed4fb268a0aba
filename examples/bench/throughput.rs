//! The `throughput` section: bulk TCP throughput, and what it costs in CPU.
//!
//! - `stack -> kernel`: the stack's `TcpStream` writes 256 KiB chunks as fast as it can to a
//!   kernel `std::net::TcpListener` over TUN device `cxb0`; the kernel side reads and discards.
//! - `kernel -> stack`: a kernel `std::net::TcpStream` writes to the stack's `TcpListener`.
//! - Both over IPv4 and IPv6 with segmentation offload (64 KB TCP segments cross the TUN device
//!   with a virtio-net header, the default), and over IPv4 without it (one packet per system
//!   call), from a second stack.
//! - `kernel -> kernel` over a veth pair whose ends live in two more private namespaces (so that
//!   packets really cross the pair), at the same MTU, with the kernel's offloads on (its
//!   default: TSO/GSO hand 64 KiB segments across the pair) and off (one skb per packet, as
//!   over TUN without offload). Offloads are turned off with `ethtool -K … tso off gso off gro
//!   off`; without `ethtool` there is no offloads-off figure (the section says why).
//! - `kernel -> kernel` over loopback in the TUN test's namespace, for scale.
//!
//! Each run lasts `--seconds` (default 3) from the receiver's first byte; the figure is the
//! payload the receiver read after that first read, over the time it took, in Gbit/s (10^9
//! bit/s). CPU per GB is the CPU time the whole machine spent busy over the same window
//! (`/proc/stat`: both ends, the kernel's work for them, the stack's runtime) per 10^9 bytes
//! read. The ratios are against veth with offloads on (the reference; loopback without veth)
//! and against veth with offloads off.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    kernel_tx_stats, offloads_off, veth_pair, Netns, KERNEL_ADDR, STACK_ADDR, TUN, VETH_A, VETH_B,
    VETH_B_ADDR,
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
    /// The kernel over veth with its offloads (the target's reference).
    reference: Option<usize>,
    /// The kernel over veth without them.
    without: Option<usize>,
    offloads_off: Option<&'static str>,
}

/// The stack's IPv6 address on `TUN`, and the kernel's.
const STACK_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const KERNEL_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

pub fn run(opts: &Options, notes: &mut Vec<String>) -> Result<Throughput, String> {
    let window = Duration::from_secs_f64(opts.seconds);
    let mut rows = Vec::new();

    // The stack on a TUN device, and the kernel on its other side: with segmentation offload
    // (IPv4 and IPv6), then without it (IPv4), each a stack of its own.
    let ns = Netns::new("bench-tun")?;
    let mtu = opts.mtu;
    for offload in [true, false] {
        let net = dual_stack(&ns, mtu, offload)?;
        // (stack, kernel, the keys of the two directions' rows)
        type Family = (IpAddr, IpAddr, [&'static str; 2]);
        let families: &[Family] = if offload {
            &[
                (
                    IpAddr::V4(STACK_ADDR),
                    IpAddr::V4(KERNEL_ADDR),
                    ["stack_to_kernel", "kernel_to_stack"],
                ),
                (
                    IpAddr::V6(STACK_ADDR6),
                    IpAddr::V6(KERNEL_ADDR6),
                    ["stack_to_kernel_v6", "kernel_to_stack_v6"],
                ),
            ]
        } else {
            &[(
                IpAddr::V4(STACK_ADDR),
                IpAddr::V4(KERNEL_ADDR),
                ["stack_to_kernel_offload_off", "kernel_to_stack_offload_off"],
            )]
        };
        for &(stack_ip, kernel_ip, keys) in families {
            let what = format!(
                "{}, offload {}",
                if stack_ip.is_ipv4() { "IPv4" } else { "IPv6" },
                if offload { "on" } else { "off" }
            );
            progress(opts, &format!("stack -> kernel over TUN, {what}"));
            rows.push(tun_run(
                &ns,
                &net,
                keys[0],
                format!("stack -> kernel (TUN, MTU {mtu}, {what})"),
                || {
                    let listener = kernel_listener(&ns, SocketAddr::new(kernel_ip, 0))?;
                    let to = listener.local_addr().map_err(|e| e.to_string())?;
                    measure(
                        window,
                        move || kernel_accept(&listener),
                        || stack_connect(&net, to),
                    )
                },
            )?);
            progress(opts, &format!("kernel -> stack over TUN, {what}"));
            rows.push(tun_run(
                &ns,
                &net,
                keys[1],
                format!("kernel -> stack (TUN, MTU {mtu}, {what})"),
                || {
                    let at = SocketAddr::new(stack_ip, LISTEN_PORT);
                    let listener = stack_listener(&net, at)?;
                    measure(
                        window,
                        move || stack_accept(&listener),
                        || kernel_connect(&ns, at),
                    )
                },
            )?);
        }
        net.stop();
        drop(net);
    }

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

    let find = |key: &str| rows.iter().position(|r| r.key == key);
    // The reference: the kernel with its offloads, as it runs by default.
    let reference =
        find("kernel_to_kernel_veth_offloads_on").or_else(|| find("kernel_to_kernel_loopback"));
    let without = find("kernel_to_kernel_veth_offloads_off");
    Ok(Throughput {
        rows,
        reference,
        without,
        offloads_off: offloads,
    })
}

/// A stack on `TUN` with an IPv4 and an IPv6 address, offload on or off.
fn dual_stack(ns: &Netns, mtu: u32, offload: bool) -> Result<Net, String> {
    ns.run(move || {
        Net::builder()
            .tun(TUN)
            .address(&format!("{STACK_ADDR}/24"))
            .address(&format!("{STACK_ADDR6}/64"))
            .peer(&format!("{KERNEL_ADDR}/24"))
            .peer(&format!("{KERNEL_ADDR6}/64"))
            .mtu(mtu)
            .offload(offload)
            .start()
    })?
    .map_err(|e| format!("starting the stack on {TUN}: {e}"))
}

/// A run over TUN (`measure` it), with the packets the stack and the kernel's side of the
/// device moved meanwhile.
fn tun_run(
    ns: &Netns,
    net: &Net,
    key: &'static str,
    label: String,
    run: impl FnOnce() -> Result<Sample, String>,
) -> Result<Row, String> {
    let tun_stats = || ns.run(|| kernel_tx_stats(TUN)).ok().flatten();
    let (p0, k0) = (packets(net), tun_stats());
    let sample = run().map_err(|e| format!("{label}: {e}"))?;
    let (p1, k1) = (packets(net), tun_stats());
    Ok(Row {
        key,
        label,
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
    fn ratio_to(&self, row: &Row, to: Option<usize>) -> Option<f64> {
        let reference = self.rows.get(to?)?.sample.gbps();
        (reference > 0.0).then(|| row.sample.gbps() / reference)
    }

    fn ratio(&self, row: &Row) -> Option<f64> {
        self.ratio_to(row, self.reference)
    }

    fn row(&self, key: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.key == key)
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
            &[
                ("direction", width),
                ("Gbit/s", 7),
                ("CPU s/GB", 8),
                ("x veth on", 9),
            ],
            "x veth off",
        );
        for (i, row) in self.rows.iter().enumerate() {
            let label = if Some(i) == self.reference {
                format!("{} [ref]", row.label)
            } else {
                row.label.clone()
            };
            let _ = writeln!(
                out,
                "{label:<width$} | {:>7.3} | {:>8} | {:>9} | {}",
                row.sample.gbps(),
                cell(row.sample.cpu_s_per_gb(), 2),
                cell(self.ratio(row), 3),
                cell(self.ratio_to(row, self.without), 3)
            );
        }
        let _ = writeln!(out);
        for (on, off) in [
            ("stack_to_kernel", "stack_to_kernel_offload_off"),
            ("kernel_to_stack", "kernel_to_stack_offload_off"),
        ] {
            if let (Some(a), Some(b)) = (self.row(on), self.row(off)) {
                let cpu = a.sample.cpu_s_per_gb().zip(b.sample.cpu_s_per_gb());
                let _ = writeln!(
                    out,
                    "{on}: offload on / off: {:.2}x the throughput, {} the CPU per GB",
                    a.sample.gbps() / b.sample.gbps().max(1e-9),
                    cpu.map_or("?".to_owned(), |(x, y)| format!("{:.2}x", x / y.max(1e-9)))
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} s per run from the receiver's first byte; Gbit/s of TCP payload read by the \
             receiver; CPU s/GB: CPU time the whole machine spent busy in the window (both ends \
             and the kernel's work for them; /proc/stat) per 10^9 bytes; {} CPUs",
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
                 \"ratio_to_reference\":{},\"ratio_to_veth_offloads_off\":{},\
                 \"cpu_s_per_gb\":{}",
                json_str(row.key),
                json_str(&row.label),
                row.sample.gbps(),
                row.sample.bytes,
                row.sample.elapsed.as_secs_f64(),
                json_num(self.ratio(row), 4),
                json_num(self.ratio_to(row, self.without), 4),
                json_num(row.sample.cpu_s_per_gb(), 4)
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
