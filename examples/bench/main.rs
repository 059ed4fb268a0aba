//! What the connectx stack costs next to the Linux kernel, measured over TUN devices, with
//! kernel-to-kernel figures from the same run for comparison.
//!
//! ```text
//! sudo cargo run --release --example bench -- [--only LIST] [--mtu N] [--seconds S]
//!     [--idle-seconds S] [--connections N] [--ttfb-connections N] [--rate-connections N]
//!     [--scale-connections N] [--async-connections N] [--recovery-rounds N] [--offload on|off]
//!     [--json]
//! ```
//!
//! Everything happens in network namespaces of the benchmark's own, made with
//! `unshare(CLONE_NEWNET)` on dedicated threads: they vanish with those threads (or with the
//! process), and nothing on the host changes. Each section makes its own. In each, the stack is
//! 192.0.2.2 on TUN device `cxb0` and the kernel 192.0.2.1 (the second stack of `fastopen`,
//! `recovery` and `loss`: 203.0.113.2 on `cxb1`, the kernel 203.0.113.1; the kernels of `loss`'s
//! relay: 192.0.2.1 on `cxr0` and 192.0.2.2 on `cxr1`, each in a namespace of its own); veth
//! pairs join 198.51.100.1 and .2 (for `loss`'s lossy TUN runs also the kernel at 198.51.100.1
//! on `cxbr1` to the TUN namespace, 198.51.100.2 on `cxbr0`, which forwards). The TUN devices
//! and the veth pairs have the MTU of `--mtu` (default 1500). `loss` drops packets with
//! nftables tables in its own namespaces.
//!
//! `--only LIST` runs some sections only (a comma list of these names; all by default). They
//! are reported in this order; each module's documentation says exactly what it measures.
//!
//! - `throughput` ([`throughput`]): bulk TCP throughput, both ways, against kernel to kernel
//!   over veth (offloads on and off) and loopback.
//! - `fastopen` ([`fastopen`]): what the TCP Fast Open layer costs on bulk throughput.
//! - `recovery` ([`recovery`]): what the loss recovery layer costs on bulk throughput when
//!   nothing is lost, with offload and without.
//! - `loss` ([`loss`]): goodput under random loss (0.1%, 1%, 5%, made with nftables), both ways
//!   and through an echo server, against kernel to kernel over veth; the stack without its loss
//!   recovery layer at 1%; the layer's cost with no loss; and under reordering and duplication
//!   (the stack's own impairment code), against two kernels joined by an impaired relay.
//! - `rate` ([`rate`]): connections per second, one at a time, sustained over
//!   `--rate-connections` (default 15000) connections, the first and the last 1000 also apart.
//! - `ttfb` ([`ttfb`]): time to first byte with 20 ms of one-way delay, plain handshake
//!   against Fast Open with a cached cookie, both ways (`--ttfb-connections`, default 10).
//! - `idle` ([`idle`]): CPU time of the stack's runtime thread with idle connections
//!   (`--idle-seconds`, default 10).
//! - `memory` ([`memory`]): resident memory per connection (`--connections`, default 10000);
//!   it runs first, so that memory freed by the others cannot hide growth.
//! - `scale` ([`scale`]): echo servers with a thread per connection: ping-pong latency with 0,
//!   1000 and `--scale-connections` (default 10000) other connections open and idle, and 4000
//!   connections opened at once.
//! - `async` ([`asyncio`]): `--async-connections` (default 10000) concurrent echo connections
//!   on one tokio runtime through the stack's tokio adapter, against the same program on kernel
//!   sockets over veth: round trips per second, p50/p99 latency, memory.
//!
//! Bad arguments exit with status 2; a section that fails is reported, and the others still
//! run, with exit status 1. So is a section one of whose measurements failed (`rate`, `scale`:
//! a stuck run of the stack, say): it still reports the others, the kernel's among them.
//!
//! Layout: [`cli`] (the command line), [`netns`] (namespaces, devices, stacks), [`conn`]
//! (connections of both sides), [`bulk`] (timed bulk transfers), [`exchange`] (request and
//! reply servers), [`echo`] (an echo server with a thread per connection), [`echo_process`]
//! (that server in a child process, for `scale`'s kernel reference), [`hold`] (idle
//! connections), [`paired`] (a variant against its baseline), [`proc`] (what `/proc` says),
//! [`nft`] (random drops with nftables), [`relay`] (an impaired link between two kernels), one
//! module per section, [`report`] (the table and the JSON).

#[path = "../common/mod.rs"]
mod common;

mod asyncio;
mod bulk;
mod cli;
mod conn;
mod echo;
mod echo_process;
mod exchange;
mod fastopen;
mod hold;
mod idle;
mod loss;
mod memory;
mod netns;
mod nft;
mod paired;
mod proc;
mod rate;
mod recovery;
mod relay;
mod report;
mod scale;
mod throughput;
mod ttfb;
mod twin;

use std::process::ExitCode;

use cli::{Options, Parsed, Section};
use report::Report;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(echo_process::ARG) {
        // Not an option: `scale` runs the kernel reference's echo server so, in a child.
        return echo_process::main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some(asyncio::ARG) {
        // Not an option: `async` runs its echo server so, in a child.
        return asyncio::server_main(&args[1..]);
    }
    let opts = match cli::parse_args(&args) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            println!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e} ({})", cli::usage());
            return ExitCode::from(2);
        }
    };
    netns::set_offload(opts.offload);
    if !tun_driver::is_root() {
        eprintln!(
            "bench: needs root: it creates private network namespaces (CAP_SYS_ADMIN), \
             TUN devices and veth pairs inside them (CAP_NET_ADMIN)"
        );
        return ExitCode::from(1);
    }
    let report = run(&opts);
    if opts.json {
        println!("{}", report.json(&opts));
    } else {
        print!("{}", report.table(&opts));
    }
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Run the sections `opts` asks for, `memory` first.
fn run(opts: &Options) -> Report {
    let mut report = Report::default();
    // Memory first, while the heap holds nothing freed by the other sections.
    let order = [
        Section::Memory,
        Section::Throughput,
        Section::FastOpen,
        Section::Recovery,
        Section::Loss,
        Section::Rate,
        Section::Ttfb,
        Section::Idle,
        Section::Scale,
        Section::Async,
    ];
    for section in order.into_iter().filter(|s| opts.runs(*s)) {
        let result = match section {
            Section::Throughput => {
                throughput::run(opts, &mut report.notes).map(|t| report.throughput = Some(t))
            }
            Section::FastOpen => fastopen::run(opts).map(|f| report.fast_open = Some(f)),
            Section::Recovery => recovery::run(opts).map(|r| report.recovery = Some(r)),
            Section::Loss => loss::run(opts).map(|l| report.loss = Some(l)),
            Section::Rate => rate::run(opts).map(|r| report.rate = Some(r)),
            Section::Ttfb => ttfb::run(opts).map(|t| report.ttfb = Some(t)),
            Section::Idle => idle::run(opts).map(|i| report.idle = Some(i)),
            Section::Memory => memory::run(opts).map(|m| report.memory = Some(m)),
            Section::Scale => scale::run(opts).map(|s| report.scale = Some(s)),
            Section::Async => asyncio::run(opts).map(|a| report.asyncio = Some(a)),
        };
        let failures = match result {
            Ok(()) => report
                .part(section)
                .map(|part| part.failures())
                .unwrap_or_default(),
            Err(e) => vec![e],
        };
        for e in &failures {
            eprintln!("bench: {}: {e}", section.name());
            report.notes.push(format!("{} failed: {e}", section.name()));
        }
        if !failures.is_empty() {
            report.failed.push(section);
        }
    }
    report
}

/// Say on stderr what runs now (not with `--json`).
fn progress(opts: &Options, what: &str) {
    if !opts.json {
        eprintln!("bench: {what}…");
    }
}
