//! The `loss` section: goodput under packet loss and reordering, the stack's loss recovery
//! layer (SACK scoreboard, RACK-TLP, PRR, CUBIC) beside the kernel's recovery on the same path.
//!
//! Every figure is payload goodput in MB/s (10^6 bytes per second): what the receiver read in
//! `--seconds` (default 3) from its first byte, as in `throughput` ([`measure`]); for echo runs,
//! what the client read back. All in one run, so the stack's figures sit beside the kernel's.
//!
//! **Random loss** (this kernel has no netem): nftables tables ([`crate::nft`]) drop each packet
//! with probability p, independently, in both directions, on the ingress hook of the device
//! where it arrives; for p = 0.1%, 1% and 5%. Over TUN the kernel's end is one veth hop away
//! from the stack: a kernel at 198.51.100.1 (`cxbr1`) in a namespace of its own, whose packets
//! the TUN namespace (198.51.100.2 on `cxbr0`, forwarding) routes to the stack (192.0.2.2 on
//! `cxb0`). Packets from the stack are dropped on `cxb0`'s ingress hook, packets to it on
//! `cxbr0`'s. Not on `cxb0`'s egress hook: there a drop is a local transmit failure that the
//! kernel's TCP sends again as new data, not a loss, and it would take away whole GSO packets
//! (see [`crate::nft`]). The hop costs the kernel side some CPU per packet that the veth
//! reference does not pay (without loss, about a third of kernel -> stack and a fifth of stack
//! -> kernel throughput on a 2-CPU machine); under loss, recovery sets the pace.
//!
//! 1. `stack -> kernel` over TUN: the stack writes to a kernel listener at 198.51.100.1.
//! 2. `kernel -> stack` over TUN, the same drops.
//! 3. `echo via stack`: a kernel client writes continuously from one thread and reads back
//!    from another what an echo server on the stack (a `TcpListener` on `cxb0`, a thread per
//!    connection echoing 64 KiB at a time, as `examples/tun_server.rs` does) sends back
//!    ([`measure_echo`]); the figure is what was read back. A run that gets nothing back for a
//!    window (at least 2 s) fails as stalled.
//! 4. `kernel -> kernel` over a veth pair (offloads off), each end in a namespace of its own;
//!    drops on the ingress hook of both ends, so each direction is dropped once, where it
//!    arrives. The reference of rows 1 and 2.
//! 5. `echo via kernel`: as 3, the same echo server on kernel sockets at the far end of that
//!    veth pair. The reference of row 3.
//!
//!    Rows 3c, 4c and 5c: rows 3, 4 and 5 again with every kernel socket of the run set to
//!    CUBIC (`TCP_CONGESTION`), the stack's congestion control (and Linux's built-in default);
//!    rows 4 and 5 use the namespaces' default, which is the machine's (BBR on the VMs this was
//!    written on). BBR does not slow down for random loss; CUBIC, like Reno, sends about
//!    `1.2/sqrt(p)` segments a round trip whoever runs it, so under random loss the kernel's
//!    figures with its default measure its congestion control more than its recovery. The ratios
//!    are given against both.
//!
//!    Rows 1b and 3b: rows 1 and 3 with the stack's connections on BBR (`TCP_CONGESTION` on the
//!    connection, and on the listener of a second echo server), against rows 4 and 5: like for
//!    like where the namespaces' default is BBR.
//! 6. At 1% only: `stack -> kernel` from a second stack (203.0.113.2 on `cxb1`) started with
//!    `loss_recovery: false` (smoltcp's own recovery), to the same kernel, the same drops (on
//!    `cxb1` and `cxbr0`). It can stall for seconds at a time, so it is bounded ([`measure_bounded`]): no
//!    byte within one window counts as 0 MB/s, and the receiver stops after its window without
//!    draining.
//!
//! Ratios: 1/4, 2/4, 3/5, 3b/5, 1b/4, 1/4c, 3c/5c, and 1/2 (the stack as sender against the stack as
//! receiver on the same path: the target is at least 0.5), and at 1% 1/6 (the layer on over
//! off). Each row
//! records what its nft chains saw and dropped, by direction (so the real loss rate shows),
//! the stack's `RecoveryCounters` over the run (stack rows), and the kernel's counters of the
//! same names over the run, summed over the namespaces whose kernel is an end (not the
//! forwarding one; `/proc/thread-self/net/snmp` and `netstat`, read from a thread in each).
//!
//! **No loss** (row 7): `stack -> kernel` from the stack with the layer (`cxb0`) and from the one
//! without (`cxb1`) to a kernel listener on their own device (192.0.2.1, 203.0.113.1: no hop),
//! 5 runs each, interleaved as in `fastopen`; medians and their ratio, what the layer costs when
//! nothing is lost; the machine's CPU seconds per GB, medians and ratio; and the process's own
//! user and system CPU time per packet the stack sent (the same packets either way: the user
//! time shows the layer's cost where the machine's noise hides it in the throughput).
//!
//! **Reordering** (no netem either): the stack's own impairment code is the link: 0.5 ms delay
//! each way, 3% of packets held back so that later ones overtake them, 1% duplicated, 1% lost,
//! seed 1 ([`connectx_api::Impairment`]).
//!
//! 8. `stack -> kernel` and `kernel -> stack` over TUN, a stack started with that impairment
//!    on its packet path (each packet passes one impaired queue, each way).
//! 9. The reference: `kernel -> kernel`, two kernels in two namespaces, each behind a TUN
//!    device, joined by a relay thread of the bench that forwards the packets through the
//!    stack's `Impaired` decorator with the same impairment ([`crate::relay`]); 9c the same
//!    with both kernel sockets on CUBIC. Ratios: 8/9, 8a/9c.
//!
//! Everything lives in namespaces the section makes (the TUN namespace, the kernel peer's, the
//! veth pair's two, one for the impaired stack and two for the relay), with their tables and
//! devices; they vanish with it. A run that fails is reported beside the others.

use std::cell::Cell;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Duration;

use connectx_api::{CongestionControl, Impairment, Net, RecoveryCounters, StackConfig};
use tun_driver::Device;

use crate::bulk::{mb_per_s, measure, measure_bounded, measure_echo, Sample};
use crate::cli::Options;
use crate::conn::{
    kernel_accept, kernel_connect, kernel_listener, stack_accept, stack_connect, stack_listener,
    IO_TIMEOUT, LISTEN_PORT,
};
use crate::echo::EchoServer;
use crate::netns::{
    command, configure, join, kernel_tcp_counters, offloads_off, start_stack, start_stack_with,
    veth_pair, Netns, KERNEL_ADDR, STACK_ADDR, TUN, VETH_A, VETH_B, VETH_B_ADDR,
};
use crate::nft::{DropTable, Drops, Tap};
use crate::paired::Paired;
use crate::proc::process_cpu;
use crate::progress;
use crate::relay::{Relay, RelayStats};
use crate::report::{cell, cpus, header, joined, json_num, json_str, Part};

/// The loss rates, in packets per 10,000 (nft's `numgen random mod 10000 < N`), with their names.
const LOSS_RATES: [(u32, &str); 3] = [(10, "0.1%"), (100, "1%"), (500, "5%")];
/// The stack's congestion control (`CongestionControl::Cubic`, its default), which the kernel
/// references run with too, beside the namespaces' default (rows 3c, 4c, 5c).
const SAME_CC: &str = "cubic";
/// The port of the echo server whose connections run BBR (row 3b; `TCP_CONGESTION` on its
/// listener).
const BBR_ECHO_PORT: u16 = LISTEN_PORT + 100;
/// The rate at which the stack without the layer runs too.
const LAYER_OFF_AT: u32 = 100;
/// The stack without the layer: its TUN device, its address and the kernel's.
const OFF_TUN: &str = "cxb1";
const OFF_STACK_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const OFF_KERNEL_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The kernel peer of the TUN rows, one veth hop from the TUN namespace, which forwards.
const PEER_DEV: &str = "cxbr1";
const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const ROUTER_DEV: &str = "cxbr0";
const ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// How long a write of the stack without the layer may wait before it checks whether to stop.
const LAYER_OFF_WRITE_TIMEOUT: Duration = Duration::from_millis(200);
/// Runs per variant with no loss (the layer's cost is a few percent, this VM's noise more:
/// five runs each, interleaved).
const NO_LOSS_ROUNDS: usize = 5;
/// What the echo servers read and write at most at a time.
const ECHO_BUFFER: usize = 64 << 10;
/// The relay's TUN devices, each in a namespace of its own: the sending kernel at
/// `KERNEL_ADDR` behind the first, the receiving one at `STACK_ADDR` behind the second.
const RELAY_A: &str = "cxr0";
const RELAY_B: &str = "cxr1";
/// The counters shown in the table (all are in the JSON).
const SHOWN: [&str; 5] = [
    "TcpRetransSegs",
    "TCPSackRecovery",
    "TCPLossProbes",
    "TCPLossProbeRecovery",
    "TCPTimeouts",
];

/// How long an echo run may wait for its next byte back before it counts as stalled: a
/// window, but at least 2 s (the kernel's and the stack's timeouts back off from 200 ms).
fn stall(window: Duration) -> Duration {
    window.max(Duration::from_secs(2))
}

/// The impairment of the reordering runs, both for the stack and for the relay.
fn reordering() -> Impairment {
    Impairment {
        delay: Duration::from_micros(500),
        reorder: 0.03,
        duplicate: 0.01,
        loss: 0.01,
        seed: 1,
        ..Impairment::default()
    }
}

/// Counters by name, in the order of `RecoveryCounters::iter`.
type Counters = Vec<(&'static str, u64)>;

/// The names of the stack's recovery counters (the kernel's are read under the same names).
fn counter_names() -> Vec<&'static str> {
    RecoveryCounters::default().iter().map(|(n, _)| n).collect()
}

/// `after - before`, name by name.
fn delta(before: &Counters, after: &Counters) -> Counters {
    after
        .iter()
        .map(|&(name, a)| {
            let b = before
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |&(_, b)| b);
            (name, a.saturating_sub(b))
        })
        .collect()
}

/// What one run gave.
struct Measured {
    sample: Sample,
    /// What the nft chains saw and dropped (runs under random loss).
    drops: Option<Drops>,
    /// The stack's recovery counters over the run (runs with a stack).
    stack: Option<Counters>,
    /// The kernel's, summed over the namespaces whose kernel takes part.
    kernel: Counters,
    /// What the relay did (the kernel reference under reordering).
    relay: Option<RelayStats>,
}

/// One run of a block.
struct Row {
    /// How the table and the ratios name it: `1`, `8a`, …
    tag: &'static str,
    key: &'static str,
    label: String,
    /// The tag of the row it is compared with.
    reference: Option<&'static str>,
    result: Result<Measured, String>,
}

/// A ratio a block reports: `key`, `label`, numerator's tag, denominator's tag.
type Ratio = (&'static str, &'static str, &'static str, &'static str);

/// The runs at one loss rate, or under reordering.
struct Block {
    key: String,
    title: String,
    /// Per 10,000 packets, for the random-loss blocks.
    per_10k: Option<u32>,
    rows: Vec<Row>,
    ratios: Vec<Ratio>,
}

impl Block {
    fn figure(&self, tag: &str) -> Option<f64> {
        let row = self.rows.iter().find(|r| r.tag == tag)?;
        row.result.as_ref().ok().map(|m| mb_per_s(&m.sample))
    }

    fn ratio(&self, numerator: &str, denominator: &str) -> Option<f64> {
        let d = self.figure(denominator)?;
        let n = self.figure(numerator)?;
        (d > 0.0).then(|| n / d)
    }
}

/// Row 7's runs: the layer on (the variant) and off (the baseline).
#[derive(Default)]
struct NoLoss {
    mb_per_s: Paired,
    /// CPU seconds the machine spent per GB moved: what the layer costs where the throughput
    /// is not bound by the stack's CPU alone.
    cpu_s_per_gb: Paired,
    /// CPU time of the process (the stack's threads, the application's sender, the kernel
    /// receiver's reads) per packet the stack sent, in µs, user and system (`/proc/self/stat`):
    /// the packets are the same with the layer and without, so the system time (the TUN
    /// writes, the kernel's TCP receive that runs in them, the receiver's reads) should be too,
    /// and the user time, nearly all the stack's, shows what the layer costs.
    user_us_per_packet: Paired,
    system_us_per_packet: Paired,
}

/// The `loss` section.
pub struct Loss {
    blocks: Vec<Block>,
    /// Row 7: with the layer (the variant) and without (the baseline).
    no_loss: Result<NoLoss, String>,
    /// How the devices' offloads were turned off.
    offloads_off: &'static str,
    /// The kernel's default congestion control in the bench's namespaces.
    default_cc: String,
    /// What went wrong on the echo servers' side.
    server_problems: Vec<String>,
}

/// What a run watches: where its packets are dropped, whose counters it reads.
struct Watch<'a> {
    /// The drop chains of the run, per namespace.
    taps: Vec<(&'a Netns, Vec<Tap>)>,
    stack: Option<&'a Net>,
    kernels: Vec<&'a Netns>,
}

impl Watch<'_> {
    /// Install the drop tables (at `per_10k`, if given), run `f`, and gather what was counted.
    fn run(
        &self,
        per_10k: Option<u32>,
        f: impl FnOnce() -> Result<Sample, String>,
    ) -> Result<Measured, String> {
        let tables = match per_10k {
            Some(n) => self
                .taps
                .iter()
                .map(|(ns, taps)| DropTable::install(ns, taps, n))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let stack_before = self.stack.map(stack_counters);
        let kernel_before = self.kernel_counters()?;
        let sample = f()?;
        let kernel = delta(&kernel_before, &self.kernel_counters()?);
        let stack = self
            .stack
            .zip(stack_before)
            .map(|(net, before)| delta(&before, &stack_counters(net)));
        let drops = if tables.is_empty() {
            None
        } else {
            let mut drops = Drops::default();
            for table in &tables {
                table.add_counts(&mut drops)?;
            }
            Some(drops)
        };
        Ok(Measured {
            sample,
            drops,
            stack,
            kernel,
            relay: None,
        })
    }

    /// The kernel's counters, summed over the namespaces.
    fn kernel_counters(&self) -> Result<Counters, String> {
        let mut sum: Counters = Vec::new();
        for ns in &self.kernels {
            let counters = ns.run(|| kernel_tcp_counters(&counter_names()))??;
            for (name, v) in counters {
                match sum.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, total)) => *total += v,
                    None => sum.push((name, v)),
                }
            }
        }
        Ok(sum)
    }
}

fn stack_counters(net: &Net) -> Counters {
    net.recovery_counters().iter().collect()
}

/// The TUN namespace and its two stacks, the veth pair, and the echo servers.
struct Setup {
    window: Duration,
    ns: Netns,
    /// The kernel peer of the TUN rows.
    peer: Netns,
    /// The stack with the layer, on `TUN`.
    on: Net,
    /// The stack without it, on `OFF_TUN`.
    off: Net,
    /// The veth pair's namespaces: the kernel reference's sender (or echo client), and its
    /// receiver (or echo server).
    a: Netns,
    b: Netns,
    stack_echo: EchoServer,
    /// The echo server on the stack whose connections run BBR.
    bbr_echo: EchoServer,
    kernel_echo: EchoServer,
    /// The kernel echo server with [`SAME_CC`].
    kernel_echo_same_cc: EchoServer,
    /// The congestion control kernel sockets get by default in the bench's namespaces.
    default_cc: String,
    /// The port of the next stack listener of a `kernel -> stack` run.
    next_port: Cell<u16>,
}

pub fn run(opts: &Options) -> Result<Loss, String> {
    let window = Duration::from_secs_f64(opts.seconds);
    let mtu = opts.mtu;
    let ns = Netns::new("bench-loss")?;
    // Offload off: the drops act on what crosses the TUN device, which with offload would be
    // 64 KB super-packets, not the wire segments of the kernel's side.
    let on = start_stack_with(
        &ns,
        TUN,
        (STACK_ADDR, KERNEL_ADDR),
        mtu,
        StackConfig::default(),
        Impairment::default(),
        false,
    )?;
    let mut config = StackConfig::default();
    config.loss_recovery = false;
    let off = start_stack_with(
        &ns,
        OFF_TUN,
        (OFF_STACK_ADDR, OFF_KERNEL_ADDR),
        mtu,
        config,
        Impairment::default(),
        false,
    )?;
    // The kernel peer, one hop away: routes to both stacks through the TUN namespace.
    let peer = Netns::new("bench-loss-peer")?;
    join(
        &ns,
        (ROUTER_DEV, ROUTER_ADDR),
        &peer,
        (PEER_DEV, PEER_ADDR),
        mtu,
    )?;
    ns.enable_forwarding()?;
    let offloads = ns.run(|| offloads_off(ROUTER_DEV))??;
    peer.run(move || -> Result<(), String> {
        offloads_off(PEER_DEV)?;
        let via = ROUTER_ADDR.to_string();
        for to in [STACK_ADDR, OFF_STACK_ADDR] {
            command("ip", &["route", "add", &format!("{to}/32"), "via", &via])?;
        }
        Ok(())
    })??;
    let (a, b) = veth_pair(mtu)?;
    a.run(|| offloads_off(VETH_A))??;
    b.run(|| offloads_off(VETH_B))??;

    let at = SocketAddr::from((STACK_ADDR, LISTEN_PORT));
    let listener = connectx_api::TcpListener::bind(&on, at)
        .map_err(|e| format!("stack listener on {at}: {e}"))?;
    let stack_echo =
        EchoServer::start_with_buffer(at, ECHO_BUFFER, move || listener.accept().map(|(s, _)| s))?;
    let bbr_at = SocketAddr::from((STACK_ADDR, BBR_ECHO_PORT));
    let bbr_listener = connectx_api::TcpListener::bind(&on, bbr_at)
        .map_err(|e| format!("stack listener on {bbr_at}: {e}"))?;
    bbr_listener
        .set_congestion_control(CongestionControl::Bbr)
        .map_err(|e| format!("TCP_CONGESTION bbr on {bbr_at}: {e}"))?;
    let bbr_echo = EchoServer::start_with_buffer(bbr_at, ECHO_BUFFER, move || {
        bbr_listener.accept().map(|(s, _)| s)
    })?;
    let kernel_echo = |same_cc| {
        let l = kernel_server(&b, SocketAddr::from((VETH_B_ADDR, 0)), same_cc)?;
        let to = l.local_addr().map_err(|e| e.to_string())?;
        EchoServer::start_with_buffer(to, ECHO_BUFFER, move || l.accept().map(|(s, _)| s))
    };
    let kernel_echo_same_cc = kernel_echo(false).and_then(|first| Ok((first, kernel_echo(true)?)));
    let default_cc = a
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control"))
        .and_then(|r| r.map_err(|e| format!("tcp_congestion_control: {e}")))
        .map(|cc| cc.trim().to_string());
    let (kernel_echo, kernel_echo_same_cc, default_cc) =
        match kernel_echo_same_cc.and_then(|(k, s)| Ok((k, s, default_cc?))) {
            Ok(servers) => servers,
            Err(e) => {
                // Stopping the stack ends the other servers' accepts.
                on.stop();
                return Err(e);
            }
        };
    let setup = Setup {
        window,
        ns,
        peer,
        on,
        off,
        a,
        b,
        stack_echo,
        bbr_echo,
        kernel_echo,
        kernel_echo_same_cc,
        default_cc,
        next_port: Cell::new(LISTEN_PORT + 1),
    };

    let mut blocks: Vec<Block> = LOSS_RATES
        .iter()
        .map(|&(per_10k, name)| setup.loss_block(opts, per_10k, name))
        .collect();
    progress(opts, "loss: no loss, recovery layer on and off");
    let no_loss = setup.no_loss(opts);
    let default_cc = setup.default_cc.clone();
    let server_problems = setup.finish();
    blocks.push(reordering_block(opts, window, mtu));
    Ok(Loss {
        blocks,
        no_loss,
        offloads_off: offloads,
        default_cc,
        server_problems,
    })
}

impl Setup {
    /// Rows 1 to 5 (and 6) at `per_10k`.
    fn loss_block(&self, opts: &Options, per_10k: u32, name: &str) -> Block {
        let window = self.window;
        // Drops where packets arrive in the TUN namespace: on the TUN device those the stack
        // sends, on the veth end those the kernel sends.
        let tun = |dev, stack_sends: bool| {
            vec![(
                &self.ns,
                vec![
                    Tap {
                        dev,
                        forward: stack_sends,
                    },
                    Tap {
                        dev: ROUTER_DEV,
                        forward: !stack_sends,
                    },
                ],
            )]
        };
        // Drops on the veth pair, where packets arrive: the first namespace is the sender's.
        let veth = || {
            vec![
                (
                    &self.a,
                    vec![Tap {
                        dev: VETH_A,
                        forward: false,
                    }],
                ),
                (
                    &self.b,
                    vec![Tap {
                        dev: VETH_B,
                        forward: true,
                    }],
                ),
            ]
        };
        let on_tun = |stack_sends| Watch {
            taps: tun(TUN, stack_sends),
            stack: Some(&self.on),
            kernels: vec![&self.peer],
        };
        let on_veth = || Watch {
            taps: veth(),
            stack: None,
            kernels: vec![&self.a, &self.b],
        };
        let step = |what: &str| progress(opts, &format!("loss {name}: {what}"));
        let mut rows = Vec::new();

        step("stack -> kernel");
        rows.push(Row {
            tag: "1",
            key: "stack_to_kernel",
            label: "stack -> kernel (TUN, routed)".into(),
            reference: Some("4"),
            result: on_tun(true).run(Some(per_10k), || {
                stack_to_kernel(&self.peer, &self.on, PEER_ADDR, window)
            }),
        });
        step("kernel -> stack");
        rows.push(Row {
            tag: "2",
            key: "kernel_to_stack",
            label: "kernel -> stack (TUN, routed)".into(),
            reference: Some("4"),
            result: on_tun(false).run(Some(per_10k), || self.kernel_to_stack()),
        });
        step("echo via stack");
        rows.push(Row {
            tag: "3",
            key: "echo_via_stack",
            label: "echo via stack (TUN, routed)".into(),
            reference: Some("5"),
            // The client is the kernel: what it sends is the run's way.
            result: on_tun(false).run(Some(per_10k), || {
                measure_echo(window, stall(window), || {
                    kernel_connect(&self.peer, self.stack_echo.to)
                })
            }),
        });
        step("stack -> kernel, the stack on BBR");
        rows.push(Row {
            tag: "1b",
            key: "stack_to_kernel_bbr",
            label: "stack -> kernel (TUN, routed), the stack on bbr".into(),
            reference: Some("4"),
            result: on_tun(true).run(Some(per_10k), || {
                stack_to_kernel_on(
                    &self.peer,
                    &self.on,
                    PEER_ADDR,
                    window,
                    Some(CongestionControl::Bbr),
                )
            }),
        });
        step("echo via stack, the stack on BBR");
        rows.push(Row {
            tag: "3b",
            key: "echo_via_stack_bbr",
            label: "echo via stack (TUN, routed), the stack on bbr".into(),
            reference: Some("5"),
            result: on_tun(false).run(Some(per_10k), || {
                measure_echo(window, stall(window), || {
                    kernel_connect(&self.peer, self.bbr_echo.to)
                })
            }),
        });
        step("kernel -> kernel over veth");
        rows.push(Row {
            tag: "4",
            key: "kernel_to_kernel",
            label: format!("kernel -> kernel (veth, offloads off, {})", self.default_cc),
            reference: None,
            result: on_veth().run(Some(per_10k), || self.kernel_to_kernel(false)),
        });
        step("echo via kernel over veth");
        rows.push(Row {
            tag: "5",
            key: "echo_via_kernel",
            label: format!("echo via kernel (veth, offloads off, {})", self.default_cc),
            reference: None,
            result: on_veth().run(Some(per_10k), || self.echo_via_kernel(false)),
        });
        step("echo via stack, the kernel client on CUBIC");
        rows.push(Row {
            tag: "3c",
            key: "echo_via_stack_same_cc",
            label: format!("echo via stack (TUN, routed), kernel client {SAME_CC}"),
            reference: Some("5c"),
            result: on_tun(false).run(Some(per_10k), || {
                measure_echo(window, stall(window), || {
                    kernel_client(&self.peer, self.stack_echo.to, true)
                })
            }),
        });
        step("kernel -> kernel over veth, CUBIC");
        rows.push(Row {
            tag: "4c",
            key: "kernel_to_kernel_same_cc",
            label: format!("kernel -> kernel (veth, offloads off, {SAME_CC})"),
            reference: None,
            result: on_veth().run(Some(per_10k), || self.kernel_to_kernel(true)),
        });
        step("echo via kernel over veth, CUBIC");
        rows.push(Row {
            tag: "5c",
            key: "echo_via_kernel_same_cc",
            label: format!("echo via kernel (veth, offloads off, {SAME_CC})"),
            reference: None,
            result: on_veth().run(Some(per_10k), || self.echo_via_kernel(true)),
        });
        let mut ratios: Vec<Ratio> = vec![
            (
                "stack_to_kernel_over_kernel",
                "stack -> kernel / kernel",
                "1",
                "4",
            ),
            (
                "kernel_to_stack_over_kernel",
                "kernel -> stack / kernel",
                "2",
                "4",
            ),
            (
                "echo_stack_over_kernel",
                "echo via stack / via kernel, the kernel's default congestion control",
                "3",
                "5",
            ),
            (
                "echo_stack_bbr_over_kernel",
                "echo via stack on bbr / via kernel, the kernel's default congestion control",
                "3b",
                "5",
            ),
            (
                "stack_bbr_to_kernel_over_kernel",
                "stack on bbr -> kernel / kernel -> kernel, the kernel's default",
                "1b",
                "4",
            ),
            (
                "stack_to_kernel_over_kernel_same_cc",
                "stack -> kernel / kernel -> kernel, CUBIC both",
                "1",
                "4c",
            ),
            (
                "echo_stack_over_kernel_same_cc",
                "echo via stack / via kernel, CUBIC both (target: at least 0.3)",
                "3c",
                "5c",
            ),
            (
                "stack_to_kernel_over_kernel_to_stack",
                "stack -> kernel / kernel -> stack (target: at least 0.5)",
                "1",
                "2",
            ),
        ];
        if per_10k == LAYER_OFF_AT {
            step("stack -> kernel, recovery layer off");
            let watch = Watch {
                taps: tun(OFF_TUN, true),
                stack: Some(&self.off),
                kernels: vec![&self.peer],
            };
            rows.push(Row {
                tag: "6",
                key: "stack_to_kernel_layer_off",
                label: "stack -> kernel (TUN, routed), recovery layer off".into(),
                reference: Some("4"),
                result: watch.run(Some(per_10k), || self.layer_off_to_kernel()),
            });
            ratios.push((
                "recovery_on_over_off",
                "stack -> kernel, recovery layer on / off",
                "1",
                "6",
            ));
        }
        Block {
            key: format!("loss_{}", name.trim_end_matches('%').replace('.', "_")),
            title: format!("{name} loss, random, each direction (nft numgen < {per_10k}/10000)"),
            per_10k: Some(per_10k),
            rows,
            ratios,
        }
    }

    /// Rows 4 and 4c: over the veth pair, with the namespaces' congestion control or
    /// [`SAME_CC`].
    fn kernel_to_kernel(&self, same_cc: bool) -> Result<Sample, String> {
        kernel_to_kernel(
            self.window,
            (&self.a, &self.b),
            SocketAddr::from((VETH_B_ADDR, 0)),
            same_cc,
        )
    }

    /// Rows 5 and 5c: the kernel client and the echo server on the namespaces' congestion
    /// control or both on [`SAME_CC`].
    fn echo_via_kernel(&self, same_cc: bool) -> Result<Sample, String> {
        let server = if same_cc {
            &self.kernel_echo_same_cc
        } else {
            &self.kernel_echo
        };
        measure_echo(self.window, stall(self.window), || {
            kernel_client(&self.a, server.to, same_cc)
        })
    }

    /// A kernel client writing to a stack listener of its own (a new port each time).
    fn kernel_to_stack(&self) -> Result<Sample, String> {
        let port = self.next_port.get();
        self.next_port.set(port.wrapping_add(1));
        let at = SocketAddr::from((STACK_ADDR, port));
        let listener = stack_listener(&self.on, at)?;
        measure(
            self.window,
            move || stack_accept(&listener),
            || kernel_connect(&self.peer, at),
        )
    }

    /// Row 6: the stack without the layer writes to a kernel listener, bounded.
    fn layer_off_to_kernel(&self) -> Result<Sample, String> {
        let listener = kernel_listener(&self.peer, SocketAddr::from((PEER_ADDR, 0)))?;
        let to = listener.local_addr().map_err(|e| e.to_string())?;
        measure_bounded(self.window, listener, || {
            let s = stack_connect(&self.off, to)?;
            s.set_timeouts(Some(IO_TIMEOUT), Some(LAYER_OFF_WRITE_TIMEOUT))
                .map_err(|e| e.to_string())?;
            Ok(s)
        })
    }

    /// Row 7: with the layer and without, interleaved.
    fn no_loss(&self, opts: &Options) -> Result<NoLoss, String> {
        let mut runs = NoLoss::default();
        let variants = [
            (true, &self.on, KERNEL_ADDR),
            (false, &self.off, OFF_KERNEL_ADDR),
        ];
        for round in 0..NO_LOSS_ROUNDS {
            let mut order = variants;
            if round % 2 == 1 {
                order.reverse();
            }
            for (layer, net, kernel) in order {
                let what = if layer { "layer on" } else { "layer off" };
                progress(
                    opts,
                    &format!(
                        "loss: no loss, round {}/{NO_LOSS_ROUNDS}, {what}",
                        round + 1
                    ),
                );
                let before = process_use(net);
                let sample = stack_to_kernel(&self.ns, net, kernel, self.window)
                    .map_err(|e| format!("stack -> kernel, {what}: {e}"))?;
                runs.mb_per_s.push(layer, mb_per_s(&sample), 0);
                if let Some(cpu) = sample.cpu_s_per_gb() {
                    runs.cpu_s_per_gb.push(layer, cpu, 0);
                }
                if let (Some(b), Some(a)) = (before, process_use(net)) {
                    let packets = a.2.saturating_sub(b.2);
                    if packets > 0 {
                        let per = |after: Duration, before: Duration| {
                            after.saturating_sub(before).as_secs_f64() * 1e6 / packets as f64
                        };
                        runs.user_us_per_packet.push(layer, per(a.0, b.0), 0);
                        runs.system_us_per_packet.push(layer, per(a.1, b.1), 0);
                    }
                }
            }
        }
        Ok(runs)
    }

    /// Stop the echo servers and the stacks; what went wrong on the servers' side.
    fn finish(self) -> Vec<String> {
        let Setup {
            on,
            off,
            a,
            stack_echo,
            bbr_echo,
            kernel_echo,
            kernel_echo_same_cc,
            ..
        } = self;
        // Stopping the stack ends its accept and any echo thread stuck in a stalled run.
        let mut problems: Vec<String> = Vec::new();
        for (server, what) in [(bbr_echo, "on bbr "), (stack_echo, "")] {
            problems.extend(
                server
                    .stop(|| {
                        on.stop();
                        true
                    })
                    .into_iter()
                    .map(|p| format!("echo server {what}on the stack: {p}")),
            );
        }
        for server in [kernel_echo, kernel_echo_same_cc] {
            let kernel_to = server.to;
            problems.extend(
                server
                    .stop(|| kernel_connect(&a, kernel_to).is_ok())
                    .into_iter()
                    .map(|p| format!("echo server on the kernel: {p}")),
            );
        }
        off.stop();
        problems
    }
}

/// Give a kernel socket [`SAME_CC`] if `same_cc`.
fn with_cc(socket: &impl AsFd, same_cc: bool) -> Result<(), String> {
    if !same_cc {
        return Ok(());
    }
    tun_driver::kernel::set_congestion_control(socket.as_fd(), SAME_CC)
        .map_err(|e| format!("TCP_CONGESTION {SAME_CC}: {e}"))
}

/// A kernel listener at `addr` in `ns`, on [`SAME_CC`] if `same_cc` (its connections inherit
/// it).
fn kernel_server(
    ns: &Netns,
    addr: SocketAddr,
    same_cc: bool,
) -> Result<std::net::TcpListener, String> {
    let l = kernel_listener(ns, addr)?;
    with_cc(&l, same_cc)?;
    Ok(l)
}

/// A kernel connection from `ns` to `to`, on [`SAME_CC`] before it sends if `same_cc`.
fn kernel_client(ns: &Netns, to: SocketAddr, same_cc: bool) -> Result<std::net::TcpStream, String> {
    let s = kernel_connect(ns, to)?;
    with_cc(&s, same_cc)?;
    Ok(s)
}

/// A kernel in `ends.0` writing to a kernel listener at `at` in `ends.1`.
fn kernel_to_kernel(
    window: Duration,
    ends: (&Netns, &Netns),
    at: SocketAddr,
    same_cc: bool,
) -> Result<Sample, String> {
    let listener = kernel_server(ends.1, at, same_cc)?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    measure(
        window,
        move || kernel_accept(&listener),
        || kernel_client(ends.0, to, same_cc),
    )
}

/// The process's user and system CPU time ([`process_cpu`]), and the packets `net` sent.
fn process_use(net: &Net) -> Option<(Duration, Duration, u64)> {
    let (user, system) = process_cpu()?;
    let sent = net.interfaces().first()?.tx_packets;
    Some((user, system, sent))
}

/// A stack client writing to a kernel listener at `kernel`.
fn stack_to_kernel(
    ns: &Netns,
    net: &Net,
    kernel: Ipv4Addr,
    window: Duration,
) -> Result<Sample, String> {
    stack_to_kernel_on(ns, net, kernel, window, None)
}

/// [`stack_to_kernel`], the stack's connection on `cc` (`TCP_CONGESTION`) if given.
fn stack_to_kernel_on(
    ns: &Netns,
    net: &Net,
    kernel: Ipv4Addr,
    window: Duration,
    cc: Option<CongestionControl>,
) -> Result<Sample, String> {
    let listener = kernel_listener(ns, SocketAddr::from((kernel, 0)))?;
    let to = listener.local_addr().map_err(|e| e.to_string())?;
    measure(
        window,
        move || kernel_accept(&listener),
        || {
            let s = stack_connect(net, to)?;
            if let Some(cc) = cc {
                s.set_congestion_control(cc)
                    .map_err(|e| format!("TCP_CONGESTION {}: {e}", cc.name()))?;
            }
            Ok(s)
        },
    )
}

/// Rows 8 and 9, in namespaces of their own.
fn reordering_block(opts: &Options, window: Duration, mtu: u32) -> Block {
    let impairment = reordering();
    let mut rows = Vec::new();
    progress(opts, "loss: reordering, the stack");
    match impaired_stack(mtu, &impairment) {
        Ok((ns, net)) => {
            let watch = Watch {
                taps: Vec::new(),
                stack: Some(&net),
                kernels: vec![&ns],
            };
            rows.push(Row {
                tag: "8a",
                key: "stack_to_kernel",
                label: "stack -> kernel (TUN, impaired in the stack)".into(),
                reference: Some("9"),
                result: watch.run(None, || stack_to_kernel(&ns, &net, KERNEL_ADDR, window)),
            });
            rows.push(Row {
                tag: "8b",
                key: "kernel_to_stack",
                label: "kernel -> stack (TUN, impaired in the stack)".into(),
                reference: Some("9"),
                result: watch.run(None, || {
                    let at = SocketAddr::from((STACK_ADDR, LISTEN_PORT));
                    let listener = stack_listener(&net, at)?;
                    measure(
                        window,
                        move || stack_accept(&listener),
                        || kernel_connect(&ns, at),
                    )
                }),
            });
            net.stop();
        }
        Err(e) => {
            for (tag, key, label) in [
                ("8a", "stack_to_kernel", "stack -> kernel"),
                ("8b", "kernel_to_stack", "kernel -> stack"),
            ] {
                rows.push(Row {
                    tag,
                    key,
                    label: format!("{label} (TUN, impaired in the stack)"),
                    reference: Some("9"),
                    result: Err(e.clone()),
                });
            }
        }
    }
    progress(opts, "loss: reordering, kernel -> kernel through the relay");
    rows.push(Row {
        tag: "9",
        key: "kernel_to_kernel_relay",
        label: "kernel -> kernel (two TUNs, impaired in a relay)".into(),
        reference: None,
        result: relayed(window, mtu, impairment.clone(), false),
    });
    progress(
        opts,
        "loss: reordering, kernel -> kernel through the relay, CUBIC",
    );
    rows.push(Row {
        tag: "9c",
        key: "kernel_to_kernel_relay_same_cc",
        label: format!("kernel -> kernel (two TUNs, impaired in a relay), {SAME_CC}"),
        reference: None,
        result: relayed(window, mtu, impairment.clone(), true),
    });
    Block {
        key: "reordering".into(),
        title: format!(
            "reordering: {:?} delay each way, {}% reordered, {}% duplicated, {}% lost, seed {}",
            impairment.delay,
            impairment.reorder * 100.0,
            impairment.duplicate * 100.0,
            impairment.loss * 100.0,
            impairment.seed
        ),
        per_10k: None,
        rows,
        ratios: vec![
            (
                "stack_to_kernel_over_kernel",
                "stack -> kernel / kernel",
                "8a",
                "9",
            ),
            (
                "kernel_to_stack_over_kernel",
                "kernel -> stack / kernel",
                "8b",
                "9",
            ),
            (
                "stack_to_kernel_over_kernel_same_cc",
                "stack -> kernel / kernel, CUBIC both",
                "8a",
                "9c",
            ),
            (
                "stack_to_kernel_over_kernel_to_stack",
                "stack -> kernel / kernel -> stack",
                "8a",
                "8b",
            ),
        ],
    }
}

/// A namespace with a stack on `TUN` whose packet path has `impairment`.
fn impaired_stack(mtu: u32, impairment: &Impairment) -> Result<(Netns, Net), String> {
    let ns = Netns::new("bench-loss-impaired")?;
    let net = start_stack(
        &ns,
        TUN,
        (STACK_ADDR, KERNEL_ADDR),
        mtu,
        StackConfig::default(),
        impairment.clone(),
    )?;
    Ok((ns, net))
}

/// Row 9: a kernel at `KERNEL_ADDR` behind `RELAY_A` writes to a kernel at `STACK_ADDR`
/// behind `RELAY_B`, through the relay (row 9c, `same_cc`: both sockets with [`SAME_CC`]).
fn relayed(
    window: Duration,
    mtu: u32,
    impairment: Impairment,
    same_cc: bool,
) -> Result<Measured, String> {
    let a = Netns::new("bench-relay-a")?;
    let b = Netns::new("bench-relay-b")?;
    let tun = |ns: &Netns, dev: &'static str, addr| {
        ns.run(move || -> Result<Device, String> {
            let device = Device::create(dev).map_err(|e| format!("TUN device {dev}: {e}"))?;
            configure(dev, addr, mtu)?;
            Ok(device)
        })?
    };
    let relay = Relay::start(
        tun(&a, RELAY_A, KERNEL_ADDR)?,
        tun(&b, RELAY_B, STACK_ADDR)?,
        impairment,
    )?;
    let watch = Watch {
        taps: Vec::new(),
        stack: None,
        kernels: vec![&a, &b],
    };
    let measured = watch.run(None, || {
        kernel_to_kernel(window, (&a, &b), SocketAddr::from((STACK_ADDR, 0)), same_cc)
    });
    let stats = relay.stop().map_err(|e| format!("the relay: {e}"));
    let mut measured = measured?;
    measured.relay = Some(stats?);
    Ok(measured)
}

/// `name value …` of the counters in `SHOWN`, then of the others that are not 0.
fn counters_text(counters: &Counters) -> String {
    let shown = SHOWN
        .iter()
        .filter_map(|name| counters.iter().find(|(n, _)| n == name));
    let others = counters
        .iter()
        .filter(|(n, v)| *v > 0 && !SHOWN.contains(n));
    shown
        .chain(others)
        .map(|(n, v)| format!("{n} {v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn json_counters(counters: &Counters) -> String {
    let fields: Vec<String> = counters
        .iter()
        .map(|(n, v)| format!("{}:{v}", json_str(n)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// `dropped/seen (x.xx%)`.
fn drop_text(c: crate::nft::Counts) -> String {
    format!(
        "{}/{} ({}%)",
        c.dropped,
        c.seen,
        cell(c.rate().map(|r| r * 100.0), 2)
    )
}

/// The table's `dropped` cell of a row.
fn dropped_cell(m: &Measured) -> String {
    if let Some(d) = m.drops {
        let total = d.total();
        return format!(
            "{}% of {}",
            cell(total.rate().map(|r| r * 100.0), 2),
            total.seen
        );
    }
    if let Some(r) = m.relay {
        let rate = (r.read > 0).then(|| r.impair.dropped_loss as f64 / r.read as f64 * 100.0);
        return format!("{}% of {} (relay)", cell(rate, 2), r.read);
    }
    "-".into()
}

impl Part for Loss {
    fn failures(&self) -> Vec<String> {
        let mut failures: Vec<String> = self
            .blocks
            .iter()
            .flat_map(|b| {
                b.rows.iter().filter_map(move |r| {
                    r.result
                        .as_ref()
                        .err()
                        .map(|e| format!("{}: [{}] {}: {e}", b.key, r.tag, r.label))
                })
            })
            .collect();
        if let Err(e) = &self.no_loss {
            failures.push(format!("no loss: {e}"));
        }
        failures.extend(self.server_problems.iter().cloned());
        failures
    }

    fn table(&self, opts: &Options, out: &mut String) {
        let _ = writeln!(
            out,
            "loss recovery: goodput under loss and reordering, MTU {}",
            opts.mtu
        );
        let width = self
            .blocks
            .iter()
            .flat_map(|b| &b.rows)
            .map(|r| r.label.len() + r.tag.len() + 3)
            .max()
            .unwrap_or(0)
            .max(44);
        header(
            out,
            &[("run", width), ("MB/s", 8), ("ratio", 6), ("to", 6)],
            "dropped (both ways)",
        );
        let line = |out: &mut String, name: &str, mbps: &str, ratio: &str, to: &str, dropped| {
            let _ = writeln!(
                out,
                "{name:<width$} | {mbps:>8} | {ratio:>6} | {to:>6} | {dropped}"
            );
        };
        // Random loss, then no loss, then reordering: the order they ran in.
        let (random, reordering): (Vec<&Block>, Vec<&Block>) =
            self.blocks.iter().partition(|b| b.per_10k.is_some());
        let block_lines = |out: &mut String, block: &Block| {
            let _ = writeln!(out, "{}", block.title);
            for row in &block.rows {
                let name = format!("[{}] {}", row.tag, row.label);
                let to = row.reference.map_or(String::new(), |t| format!("[{t}]"));
                match &row.result {
                    Ok(m) => line(
                        out,
                        &name,
                        &format!("{:.3}", mb_per_s(&m.sample)),
                        &cell(row.reference.and_then(|t| block.ratio(row.tag, t)), 3),
                        &to,
                        dropped_cell(m),
                    ),
                    Err(_) => line(out, &name, "failed", "-", &to, "-".into()),
                }
            }
            for (_, label, n, d) in &block.ratios {
                let _ = writeln!(
                    out,
                    "    [{n}]/[{d}] {label}: {}",
                    cell(block.ratio(n, d), 3)
                );
            }
        };
        for block in random {
            block_lines(out, block);
        }
        let _ = writeln!(
            out,
            "0% loss: stack -> kernel (TUN, no hop), recovery layer on vs off, medians of \
             {NO_LOSS_ROUNDS} interleaved runs"
        );
        match &self.no_loss {
            Ok(NoLoss { mb_per_s: p, .. }) => {
                let on = format!("{:.3}", p.variant_median());
                let off = format!("{:.3}", p.baseline_median());
                let ratio = cell(p.ratio(), 3);
                line(
                    out,
                    "[7on] recovery layer on",
                    &on,
                    &ratio,
                    "[7off]",
                    "-".into(),
                );
                line(out, "[7off] recovery layer off", &off, "", "", "-".into());
            }
            Err(_) => line(
                out,
                "[7] recovery layer on vs off",
                "failed",
                "-",
                "",
                "-".into(),
            ),
        }
        for block in reordering {
            block_lines(out, block);
        }

        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "MB/s: 10^6 bytes of TCP payload per second read by the receiver (echo: read back by \
             the client), {} s per run from its first byte; {} CPUs",
            opts.seconds,
            cpus()
        );
        let _ = writeln!(
            out,
            "random loss: nft drops on the ingress of {TUN} (or {OFF_TUN}) and {ROUTER_DEV} \
             (TUN runs; routed: the kernel at {PEER_ADDR}, one forwarding hop away), of both \
             veth ends (kernel runs); veth offloads off with: {}",
            self.offloads_off
        );
        let _ = writeln!(
            out,
            "kernel congestion control: {} by default in these namespaces (rows 4 and 5, and the \
             kernel's end of 1, 2 and 3); rows 3c, 4c and 5c set {SAME_CC} (TCP_CONGESTION) on \
             every kernel socket, the stack's own",
            self.default_cc
        );
        if let Ok(NoLoss {
            mb_per_s: p,
            cpu_s_per_gb: cpu,
            user_us_per_packet: user,
            system_us_per_packet: system,
        }) = &self.no_loss
        {
            let _ = writeln!(
                out,
                "[7] runs on / off (MB/s): {} / {}",
                joined(p.variant.iter().copied(), 3, " "),
                joined(p.baseline.iter().copied(), 3, " ")
            );
            let _ = writeln!(
                out,
                "[7] CPU s per GB (the machine's, medians): on {}, off {}, on / off {}",
                cell(cpu.measured_variant(), 3),
                cell(cpu.measured_baseline(), 3),
                cell(cpu.ratio(), 3)
            );
            let _ = writeln!(
                out,
                "[7] the process's CPU µs per packet sent (medians): user on {}, off {}; system \
                 on {}, off {}",
                cell(user.measured_variant(), 3),
                cell(user.measured_baseline(), 3),
                cell(system.measured_variant(), 3),
                cell(system.measured_baseline(), 3)
            );
        }
        for block in &self.blocks {
            for row in &block.rows {
                let Ok(m) = &row.result else { continue };
                let mut parts = Vec::new();
                if let Some(d) = m.drops {
                    parts.push(format!(
                        "dropped there {}, back {}",
                        drop_text(d.forward),
                        drop_text(d.reverse)
                    ));
                }
                if let Some(r) = m.relay {
                    parts.push(format!(
                        "relay read {}, lost {}, reordered {}, duplicated {}, forwarded {}, \
                         refused {}",
                        r.read,
                        r.impair.dropped_loss,
                        r.impair.reordered,
                        r.impair.duplicated,
                        r.forwarded,
                        r.refused
                    ));
                }
                if let Some(s) = &m.stack {
                    parts.push(format!("stack: {}", counters_text(s)));
                }
                parts.push(format!("kernel: {}", counters_text(&m.kernel)));
                let _ = writeln!(
                    out,
                    "{} [{}] {}: {}",
                    block.key,
                    row.tag,
                    row.key,
                    parts.join("; ")
                );
            }
        }
    }

    fn json(&self, opts: &Options, out: &mut String) {
        let _ = write!(
            out,
            "{{\"mtu\":{},\"seconds\":{},\"offloads_off_method\":{},\
             \"kernel_default_congestion_control\":{},\"same_congestion_control\":{},\
             \"blocks\":{{",
            opts.mtu,
            opts.seconds,
            json_str(self.offloads_off),
            json_str(&self.default_cc),
            json_str(SAME_CC)
        );
        for (i, block) in self.blocks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{}:{{\"title\":{},\"loss_per_10000\":{},\"rows\":{{",
                json_str(&block.key),
                json_str(&block.title),
                block
                    .per_10k
                    .map_or_else(|| "null".to_owned(), |n| n.to_string())
            );
            for (j, row) in block.rows.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                row_json(block, row, out);
            }
            out.push_str("},\"ratios\":{");
            for (j, (key, _, n, d)) in block.ratios.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    "{}:{{\"runs\":[{},{}],\"ratio\":{}}}",
                    json_str(key),
                    json_str(n),
                    json_str(d),
                    json_num(block.ratio(n, d), 4)
                );
            }
            out.push_str("}}");
        }
        out.push_str("},\"no_loss\":");
        match &self.no_loss {
            Ok(NoLoss {
                mb_per_s: p,
                cpu_s_per_gb: cpu,
                user_us_per_packet: user,
                system_us_per_packet: system,
            }) => {
                let _ = write!(
                    out,
                    "{{\"rounds\":{NO_LOSS_ROUNDS},\"layer_on_mb_per_s\":{:.4},\
                     \"layer_off_mb_per_s\":{:.4},\"ratio_on_to_off\":{},\
                     \"runs_layer_on_mb_per_s\":[{}],\"runs_layer_off_mb_per_s\":[{}],\
                     \"cpu_s_per_gb_layer_on\":{},\"cpu_s_per_gb_layer_off\":{},\
                     \"cpu_ratio_on_to_off\":{},\"process_user_us_per_packet_layer_on\":{},\
                     \"process_user_us_per_packet_layer_off\":{},\
                     \"process_system_us_per_packet_layer_on\":{},\
                     \"process_system_us_per_packet_layer_off\":{},\"error\":null}}",
                    p.variant_median(),
                    p.baseline_median(),
                    json_num(p.ratio(), 4),
                    joined(p.variant.iter().copied(), 4, ","),
                    joined(p.baseline.iter().copied(), 4, ","),
                    json_num(cpu.measured_variant(), 4),
                    json_num(cpu.measured_baseline(), 4),
                    json_num(cpu.ratio(), 4),
                    json_num(user.measured_variant(), 4),
                    json_num(user.measured_baseline(), 4),
                    json_num(system.measured_variant(), 4),
                    json_num(system.measured_baseline(), 4)
                );
            }
            Err(e) => {
                let _ = write!(out, "{{\"error\":{}}}", json_str(e));
            }
        }
        let problems: Vec<String> = self.server_problems.iter().map(|p| json_str(p)).collect();
        let _ = write!(out, ",\"server_problems\":[{}]}}", problems.join(","));
    }
}

/// One row's JSON member.
fn row_json(block: &Block, row: &Row, out: &mut String) {
    let _ = write!(
        out,
        "{}:{{\"run\":{},\"label\":{},\"reference\":{}",
        json_str(row.key),
        json_str(row.tag),
        json_str(&row.label),
        row.reference.map_or_else(|| "null".to_owned(), json_str)
    );
    let m = match &row.result {
        Ok(m) => m,
        Err(e) => {
            let _ = write!(out, ",\"error\":{}}}", json_str(e));
            return;
        }
    };
    let _ = write!(
        out,
        ",\"mb_per_s\":{:.4},\"bytes\":{},\"elapsed_s\":{:.6},\"ratio_to_reference\":{}",
        mb_per_s(&m.sample),
        m.sample.bytes,
        m.sample.elapsed.as_secs_f64(),
        json_num(row.reference.and_then(|t| block.ratio(row.tag, t)), 4)
    );
    if let Some(d) = m.drops {
        let counts = |c: crate::nft::Counts| {
            format!(
                "{{\"seen\":{},\"dropped\":{},\"rate\":{}}}",
                c.seen,
                c.dropped,
                json_num(c.rate(), 6)
            )
        };
        let _ = write!(
            out,
            ",\"nft\":{{\"forward\":{},\"reverse\":{},\"total\":{}}}",
            counts(d.forward),
            counts(d.reverse),
            counts(d.total())
        );
    }
    if let Some(r) = m.relay {
        let _ = write!(
            out,
            ",\"relay\":{{\"read\":{},\"forwarded\":{},\"refused\":{},\"lost\":{},\
             \"reordered\":{},\"duplicated\":{},\"overflow\":{}}}",
            r.read,
            r.forwarded,
            r.refused,
            r.impair.dropped_loss,
            r.impair.reordered,
            r.impair.duplicated,
            r.impair.overflow
        );
    }
    if let Some(s) = &m.stack {
        let _ = write!(out, ",\"stack_counters\":{}", json_counters(s));
    }
    let _ = write!(
        out,
        ",\"kernel_counters\":{},\"error\":null}}",
        json_counters(&m.kernel)
    );
}
