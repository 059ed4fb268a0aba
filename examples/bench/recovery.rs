//! The `recovery` section: what the loss recovery layer costs on bulk throughput when nothing is
//! lost.
//!
//! Two stacks side by side in one namespace, alike but for `StackConfig::loss_recovery`: one
//! runs the layer (`cxb0`, 192.0.2.2, its kernel 192.0.2.1), the other bypasses it and leaves
//! every segment to smoltcp alone (`cxb1`, 203.0.113.2, its kernel 203.0.113.1). Each direction
//! runs between a stack and a kernel socket on the stack's own device: no hop, no drops. Runs are
//! timed as in `throughput`.
//!
//! The pair runs twice, each time in a namespace of its own: with segmentation offload (64 KB
//! super-packets through the TUN device, what `throughput` and `fastopen` measure with) and
//! without (a packet per wire segment, where the layer's work per segment weighs most), whatever
//! `--offload` says.
//!
//! - `stack -> kernel`: the stack writes to a kernel listener; the layer records each segment
//!   it sends (a wire-sized segment's payload copied, a super-packet's buffer kept: smoltcp
//!   cannot read its send buffer back) and reads each acknowledgement.
//! - `kernel -> stack`: a kernel client writes to a stack listener; the layer checks each
//!   segment received and writes the window and SACK state of each acknowledgement.
//!
//! Each (offload, direction, variant) runs `--recovery-rounds` times (default 5), interleaved
//! (on then off, then off then on, …); the figures are medians, and each ratio is the median
//! with the layer over the median without. The ratio of the throughputs is also taken round by
//! round (each run over the other variant's run of the same round, so that a pair shares the
//! machine's state of the moment): its median and quartiles, what the layer costs with this
//! VM's drift between rounds taken out.
//!
//! Beside the throughput, over the same window: the machine's CPU seconds per GB moved (both
//! ends and the kernel's work for each); the process's own user and system CPU seconds per GB
//! (the stacks, the bench's sender or receiver, and the kernel work those threads do in their
//! system calls): the layer's work is user time, so the user time per GB shows its cost where
//! the machine's noise hides it in the throughput; and the packets the stack sent and received
//! per MB (the same with the layer and without: the layer changes no packet sizes).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use connectx_api::{Impairment, Net, StackConfig, TcpListener};

use crate::bulk::{measure, Sample};
use crate::cli::Options;
use crate::conn::{
    kernel_accept, kernel_connect, kernel_listener, stack_accept, stack_connect, stack_listener,
    LISTEN_PORT,
};
use crate::netns::{start_stack_with, Netns, KERNEL_ADDR, STACK_ADDR, TUN};
use crate::paired::Paired;
use crate::progress;
use crate::report::{cell, header, joined, json_num, json_str, Part};

/// The second stack, the one without the layer: its TUN device, its address and the kernel's.
const OFF_TUN: &str = "cxb1";
const OFF_STACK_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const OFF_KERNEL_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// The `recovery` section: with offload, then without.
pub struct RecoveryCost {
    offload_on: Directions,
    offload_off: Directions,
}

/// Both directions of one offload setting.
#[derive(Default)]
struct Directions {
    stack_to_kernel: Runs,
    kernel_to_stack: Runs,
}

/// The figures of one direction's runs, with the layer (the variant) and without (the
/// baseline).
#[derive(Default)]
struct Runs {
    gbit_per_s: Paired,
    /// The machine's CPU seconds per GB.
    cpu_s_per_gb: Paired,
    /// The process's user and system CPU seconds per GB.
    user_s_per_gb: Paired,
    system_s_per_gb: Paired,
    /// Packets the stack sent and received per MB moved (over the whole run: the connection's
    /// start and end too).
    packets_per_mb: Paired,
}

impl Runs {
    fn push(&mut self, layer: bool, sample: &Sample, packets: u64) {
        self.gbit_per_s.push(layer, sample.gbps(), 0);
        if sample.bytes > 0 {
            self.packets_per_mb
                .push(layer, packets as f64 / (sample.bytes as f64 / 1e6), 0);
        }
        if let Some(cpu) = sample.cpu_s_per_gb() {
            self.cpu_s_per_gb.push(layer, cpu, 0);
        }
        if let Some((user, system)) = sample.process_s_per_gb() {
            self.user_s_per_gb.push(layer, user, 0);
            self.system_s_per_gb.push(layer, system, 0);
        }
    }
}

/// One of the two stacks.
struct Variant {
    layer: bool,
    net: Net,
    kernel: Ipv4Addr,
    listener: Arc<TcpListener>,
    at: SocketAddrV4,
}

impl Variant {
    fn name(&self) -> &'static str {
        if self.layer {
            "layer on"
        } else {
            "layer off"
        }
    }

    fn start(
        ns: &Netns,
        layer: bool,
        tun: &'static str,
        (stack, kernel): (Ipv4Addr, Ipv4Addr),
        mtu: u32,
        offload: bool,
    ) -> Result<Variant, String> {
        let mut config = StackConfig::default();
        config.loss_recovery = layer;
        let net = start_stack_with(
            ns,
            tun,
            (stack, kernel),
            mtu,
            config,
            Impairment::default(),
            offload,
        )?;
        let at = SocketAddrV4::new(stack, LISTEN_PORT);
        let listener = stack_listener(&net, at.into())?;
        Ok(Variant {
            layer,
            net,
            kernel,
            listener: Arc::new(listener),
            at,
        })
    }

    fn stack_to_kernel(&self, ns: &Netns, window: Duration) -> Result<Sample, String> {
        let listener = kernel_listener(ns, SocketAddr::from((self.kernel, 0)))?;
        let to = listener.local_addr().map_err(|e| e.to_string())?;
        measure(
            window,
            move || kernel_accept(&listener),
            || stack_connect(&self.net, to),
        )
    }

    fn kernel_to_stack(&self, ns: &Netns, window: Duration) -> Result<Sample, String> {
        let listener = Arc::clone(&self.listener);
        measure(
            window,
            move || stack_accept(&listener),
            || kernel_connect(ns, self.at.into()),
        )
    }
}

pub fn run(opts: &Options) -> Result<RecoveryCost, String> {
    Ok(RecoveryCost {
        offload_on: run_pair(opts, true)?,
        offload_off: run_pair(opts, false)?,
    })
}

/// Both directions, both variants, with offload on or off.
fn run_pair(opts: &Options, offload: bool) -> Result<Directions, String> {
    let window = Duration::from_secs_f64(opts.seconds);
    let setting = if offload { "offload on" } else { "offload off" };
    let ns = Netns::new(if offload {
        "bench-recovery-offload"
    } else {
        "bench-recovery"
    })?;
    let variants = [
        Variant::start(&ns, true, TUN, (STACK_ADDR, KERNEL_ADDR), opts.mtu, offload)?,
        Variant::start(
            &ns,
            false,
            OFF_TUN,
            (OFF_STACK_ADDR, OFF_KERNEL_ADDR),
            opts.mtu,
            offload,
        )?,
    ];
    type Direction = fn(&Variant, &Netns, Duration) -> Result<Sample, String>;
    let directions: [(&str, Direction); 2] = [
        ("stack -> kernel", Variant::stack_to_kernel),
        ("kernel -> stack", Variant::kernel_to_stack),
    ];
    let mut runs = [Runs::default(), Runs::default()];
    let rounds = opts.recovery_rounds;
    for round in 0..rounds {
        let order: [&Variant; 2] = if round % 2 == 0 {
            [&variants[0], &variants[1]]
        } else {
            [&variants[1], &variants[0]]
        };
        for ((direction, measure), runs) in directions.iter().zip(&mut runs) {
            for v in order {
                let what = format!("{setting}, {direction}, {}", v.name());
                progress(
                    opts,
                    &format!("loss recovery layer, round {}/{rounds}: {what}", round + 1),
                );
                let before = packets(&v.net);
                let sample = measure(v, &ns, window).map_err(|e| format!("{what}: {e}"))?;
                runs.push(v.layer, &sample, packets(&v.net).saturating_sub(before));
            }
        }
    }
    for v in &variants {
        v.net.stop();
    }
    let [stack_to_kernel, kernel_to_stack] = runs;
    Ok(Directions {
        stack_to_kernel,
        kernel_to_stack,
    })
}

/// Packets the stack sent and received.
fn packets(net: &Net) -> u64 {
    net.interfaces()
        .iter()
        .map(|i| i.tx_packets + i.rx_packets)
        .sum()
}

impl RecoveryCost {
    /// (JSON key, label, offload, direction key, direction label, runs) for each row.
    fn rows(&self) -> [(&'static str, &'static str, &'static str, &Runs); 4] {
        [
            (
                "offload_on",
                "on",
                "stack_to_kernel",
                &self.offload_on.stack_to_kernel,
            ),
            (
                "offload_on",
                "on",
                "kernel_to_stack",
                &self.offload_on.kernel_to_stack,
            ),
            (
                "offload_off",
                "off",
                "stack_to_kernel",
                &self.offload_off.stack_to_kernel,
            ),
            (
                "offload_off",
                "off",
                "kernel_to_stack",
                &self.offload_off.kernel_to_stack,
            ),
        ]
    }
}

/// `stack_to_kernel` as the table says it.
fn direction_label(key: &str) -> &'static str {
    if key == "stack_to_kernel" {
        "stack -> kernel"
    } else {
        "kernel -> stack"
    }
}

impl Part for RecoveryCost {
    fn table(&self, opts: &Options, out: &mut String) {
        let _ = writeln!(
            out,
            "Loss recovery layer cost, no loss: bulk throughput over TUN, MTU {}, layer on vs \
             loss_recovery: false",
            opts.mtu
        );
        header(
            out,
            &[
                ("direction", 15),
                ("offload", 7),
                ("on Gbit/s", 9),
                ("off Gbit/s", 10),
                ("on/off", 6),
                ("by round (quartiles)", 20),
                ("CPU s/GB", 8),
                ("user s/GB", 9),
            ],
            "pkts/MB on / off",
        );
        for (_, offload, key, runs) in self.rows() {
            let by_round = runs.gbit_per_s.paired_ratios().map_or_else(
                || "-".to_owned(),
                |(median, lo, hi)| format!("{median:.3} ({lo:.3}-{hi:.3})"),
            );
            let _ = writeln!(
                out,
                "{:<15} | {offload:>7} | {:>9.3} | {:>10.3} | {:>6} | {by_round:>20} | {:>8} | \
                 {:>9} | {} / {}",
                direction_label(key),
                runs.gbit_per_s.variant_median(),
                runs.gbit_per_s.baseline_median(),
                cell(runs.gbit_per_s.ratio(), 3),
                cell(runs.cpu_s_per_gb.ratio(), 3),
                cell(runs.user_s_per_gb.ratio(), 3),
                cell(runs.packets_per_mb.measured_variant(), 1),
                cell(runs.packets_per_mb.measured_baseline(), 1),
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "on/off: medians of {} runs per variant, interleaved, {} s each from the receiver's \
             first byte; by round: each run over the other variant's of the same round; CPU \
             s/GB: the machine's (all CPUs), on over off; user s/GB: the process's user CPU time \
             (the stacks and the bench's end of the transfer), on over off; pkts/MB: packets \
             the stack sent and received per MB",
            opts.recovery_rounds, opts.seconds
        );
    }

    fn json(&self, opts: &Options, out: &mut String) {
        let _ = write!(
            out,
            "{{\"mtu\":{},\"seconds\":{},\"rounds\":{}",
            opts.mtu, opts.seconds, opts.recovery_rounds
        );
        let mut open = "";
        for (setting, _, key, runs) in self.rows() {
            if open != setting {
                if !open.is_empty() {
                    out.push('}');
                }
                let _ = write!(out, ",{}:{{", json_str(setting));
                open = setting;
            } else {
                out.push(',');
            }
            let _ = write!(out, "{}:{{", json_str(key));
            let figures = [
                ("gbit_per_s", &runs.gbit_per_s, 4),
                ("cpu_s_per_gb", &runs.cpu_s_per_gb, 4),
                ("process_user_s_per_gb", &runs.user_s_per_gb, 4),
                ("process_system_s_per_gb", &runs.system_s_per_gb, 4),
                ("packets_per_mb", &runs.packets_per_mb, 2),
            ];
            for (i, (name, p, decimals)) in figures.into_iter().enumerate() {
                let _ = write!(
                    out,
                    "{}\"{name}_layer_on\":{},\"{name}_layer_off\":{},\
                     \"{name}_ratio_on_to_off\":{},\"runs_{name}_layer_on\":[{}],\
                     \"runs_{name}_layer_off\":[{}]",
                    if i == 0 { "" } else { "," },
                    json_num(p.measured_variant(), decimals),
                    json_num(p.measured_baseline(), decimals),
                    json_num(p.ratio(), decimals),
                    joined(p.variant.iter().copied(), decimals, ","),
                    joined(p.baseline.iter().copied(), decimals, ",")
                );
            }
            let quartiles = runs.gbit_per_s.paired_ratios();
            let _ = write!(
                out,
                ",\"gbit_per_s_ratio_by_round\":{{\"median\":{},\"lower_quartile\":{},\
                 \"upper_quartile\":{}}}}}",
                json_num(quartiles.map(|q| q.0), 4),
                json_num(quartiles.map(|q| q.1), 4),
                json_num(quartiles.map(|q| q.2), 4)
            );
        }
        out.push_str("}}");
    }
}
