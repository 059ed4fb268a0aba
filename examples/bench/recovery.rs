//! The `recovery` section: what the loss recovery layer costs on bulk throughput when nothing is
//! lost.
//!
//! Three kinds of run, alike but for `StackConfig::loss_recovery`: with the layer (the
//! variant), without it, leaving every segment to smoltcp alone (the baseline), and the
//! control, without it too, which measures how far two alike runs differ on this machine: the
//! resolution against which the layer's cost is read. Each run has a stack of its own, started
//! for it in the slot of a namespace that goes with its place in the round ([`crate::twin`]:
//! `cxb0` at 192.0.2.2, `cxb1` at 203.0.113.2, `cxb2` at 198.51.100.2, the kernel at `.1` of
//! each). Stacks kept for a whole section, one per kind, differed by up to 15%
//! with nothing between them, one way for the section's length (where their devices and
//! threads fell on the machine); a stack per run turns that into noise the rounds average out.
//! Each direction runs between a stack and a kernel socket on the stack's own device: no hop,
//! no drops. Runs are timed as in `throughput`.
//!
//! The section runs twice, each time in a namespace of its own: with segmentation offload (64
//! KB super-packets through the TUN device, what `throughput` and `fastopen` measure with) and
//! without (a packet per wire segment, where the layer's work per segment weighs most),
//! whatever `--offload` says.
//!
//! - `stack -> kernel`: the stack writes to a kernel listener; the layer records each segment
//!   it sends (keeping the buffer smoltcp wrote it in, or for a small segment a copy of its
//!   payload: smoltcp cannot read its send buffer back) and reads each acknowledgement.
//! - `kernel -> stack`: a kernel client writes to a stack listener; the layer checks each
//!   segment received and writes the window and SACK state of each acknowledgement.
//!
//! Each (offload, direction, kind) runs `--recovery-rounds` times (default 6), interleaved (on,
//! off, control, then off, control, on, then control, on, off, …: over three rounds each kind
//! runs first, second and third once, as a run can slow the next and a place favoured every
//! round would be read as the layer's cost or gain); the figures are medians, and each ratio
//! is the median with the layer over the median without. The ratio of the throughputs is also taken round by round (each run over the
//! baseline's run of the same round, so that a pair shares the machine's state of the moment):
//! its median and quartiles, what the layer costs with this VM's drift between rounds taken
//! out; and the same for the control over the baseline, which the layer's figure is to be read
//! against.
//!
//! Beside the throughput, over the same window: the machine's CPU seconds per GB moved (both
//! ends and the kernel's work for each); the process's own user and system CPU seconds per GB
//! (the stacks, the bench's sender or receiver, and the kernel work those threads do in their
//! system calls): the layer's work is user time, so the user time per GB shows its cost where
//! the machine's noise hides it in the throughput; and the packets the stack sent and received
//! per MB (the same with the layer and without: the layer changes no packet sizes); and what the
//! layer sent again in each of its runs, with its tail loss probes (nothing is lost: a probe
//! that goes is one whose original had arrived, its acknowledgement late).

use std::fmt::Write as _;
use std::time::Duration;

use connectx_api::{Net, RecoveryCounters, StackConfig};

use crate::bulk::Sample;
use crate::cli::Options;
use crate::conn::stack_listener;
use crate::netns::Netns;
use crate::paired::Paired;
use crate::progress;
use crate::report::{cell, header, joined, json_num, json_str, Part};
use crate::twin::{self, by_round, quartiles_json, Compared, Role, Twin};

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
    /// Gbit/s, with the control's.
    gbit_per_s: Compared,
    /// The machine's CPU seconds per GB.
    cpu_s_per_gb: Paired,
    /// The process's user and system CPU seconds per GB.
    user_s_per_gb: Paired,
    system_s_per_gb: Paired,
    /// Packets the stack sent and received per MB moved (over the whole run: the connection's
    /// start and end too).
    packets_per_mb: Paired,
    /// Segments the layer sent again in each of its runs (`TcpRetransSegs`: with nothing lost,
    /// probes whose originals had arrived), and its tail loss probes.
    sent_again: Vec<u64>,
    probes: Vec<u64>,
}

impl Runs {
    fn push(&mut self, role: Role, sample: &Sample, packets: u64, c: &RecoveryCounters) {
        self.gbit_per_s.push(role, sample.gbps(), 0);
        let layer = match role {
            Role::On => {
                self.sent_again.push(c.TcpRetransSegs);
                self.probes.push(c.TCPLossProbes);
                true
            }
            Role::Off => false,
            Role::Control => return,
        };
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
    type Direction = fn(&Twin, &Netns, Duration) -> Result<Sample, String>;
    let directions: [(&str, Direction); 2] = [
        ("stack -> kernel", Twin::stack_to_kernel),
        ("kernel -> stack", Twin::kernel_to_stack),
    ];
    let roles = [
        (Role::On, "layer on"),
        (Role::Off, "layer off"),
        (Role::Control, "control (layer off)"),
    ];
    let mut runs = [Runs::default(), Runs::default()];
    let rounds = opts.recovery_rounds;
    for round in 0..rounds {
        for ((direction, measure), runs) in directions.iter().zip(&mut runs) {
            for (at, &(role, label)) in twin::order(&roles, round).into_iter().enumerate() {
                let what = format!("{setting}, {direction}, {label}");
                progress(
                    opts,
                    &format!("loss recovery layer, round {}/{rounds}: {what}", round + 1),
                );
                // A stack of its own for each run, in the slot of its place in the round (so
                // never the slot of the run before): two alike stacks kept for a whole section
                // differ by up to 15% here, one way or the other for the section's length
                // (their devices' and threads' places on the machine), which no number of
                // rounds would take out.
                let mut config = StackConfig::default();
                config.loss_recovery = role == Role::On;
                let v = Twin::start(
                    &ns,
                    at,
                    role == Role::On,
                    config,
                    (opts.mtu, offload),
                    stack_listener,
                )
                .map_err(|e| format!("{what}: {e}"))?;
                let sample = measure(&v, &ns, window).map_err(|e| format!("{what}: {e}"));
                v.net.stop();
                runs.push(role, &sample?, packets(&v.net), &v.net.recovery_counters());
            }
        }
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

/// What the layer sent again, run by run: the median and the most, each with its probes.
fn sent_again(runs: &Runs) -> String {
    let mut by_run: Vec<(u64, u64)> = runs
        .sent_again
        .iter()
        .copied()
        .zip(runs.probes.iter().copied())
        .collect();
    if by_run.is_empty() {
        return "-".to_owned();
    }
    by_run.sort_unstable();
    let (median, most) = (by_run[by_run.len() / 2], by_run[by_run.len() - 1]);
    format!("{} ({}), most {} ({})", median.0, median.1, most.0, most.1)
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
                ("control by round", 20),
                ("CPU s/GB", 8),
                ("user s/GB", 9),
                ("pkts/MB on / off", 16),
            ],
            "sent again (probes)",
        );
        for (_, offload, key, runs) in self.rows() {
            let _ = writeln!(
                out,
                "{:<15} | {offload:>7} | {:>9.3} | {:>10.3} | {:>6} | {:>20} | {:>20} | {:>8} | \
                 {:>9} | {:>16} | {}",
                direction_label(key),
                runs.gbit_per_s.layer.variant_median(),
                runs.gbit_per_s.layer.baseline_median(),
                cell(runs.gbit_per_s.layer.ratio(), 3),
                by_round(&runs.gbit_per_s.layer),
                by_round(&runs.gbit_per_s.control),
                cell(runs.cpu_s_per_gb.ratio(), 3),
                cell(runs.user_s_per_gb.ratio(), 3),
                format!(
                    "{} / {}",
                    cell(runs.packets_per_mb.measured_variant(), 1),
                    cell(runs.packets_per_mb.measured_baseline(), 1)
                ),
                sent_again(runs),
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "on/off: medians of {} runs per stack, interleaved, {} s each from the receiver's \
             first byte; by round: each run over the baseline's (layer off) of the same round; \
             control: a second stack without the layer, by round over the baseline (what two \
             alike stacks differ by here: an on/off inside its range is no measurable cost); CPU \
             s/GB: the machine's (all CPUs), on over off; user s/GB: the process's user CPU time \
             (the stacks and the bench's end of the transfer), on over off; pkts/MB: packets \
             the stack sent and received per MB; sent again (probes): segments the layer sent \
             again in a run (with nothing lost, tail loss probes whose originals had arrived: \
             a probe resends the last packet sent, a whole super-packet with offload), the \
             median run and the most",
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
                ("gbit_per_s", &runs.gbit_per_s.layer, 4),
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
            let _ = write!(
                out,
                ",\"gbit_per_s_ratio_by_round\":{},\"gbit_per_s_control_ratio_by_round\":{},\
                 \"runs_gbit_per_s_control\":[{}],\"runs_segments_sent_again_layer_on\":[{}],\
                 \"runs_loss_probes_layer_on\":[{}]}}",
                quartiles_json(&runs.gbit_per_s.layer),
                quartiles_json(&runs.gbit_per_s.control),
                joined(runs.gbit_per_s.control.variant.iter().copied(), 4, ","),
                joined(runs.sent_again.iter().map(|&n| n as f64), 0, ","),
                joined(runs.probes.iter().map(|&n| n as f64), 0, ",")
            );
        }
        out.push_str("}}");
    }
}
