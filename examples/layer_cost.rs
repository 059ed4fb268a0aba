//! What the loss recovery layer costs when nothing is lost, counted in instructions (the
//! machine's noise does not move them): one stack sends to another over the in-memory link
//! (`stack::sim`, no loss, 1 ms each way), with the layer on or off, CUBIC or BBR.
//!
//! ```sh
//! cargo build --release --example layer_cost
//! for mode in off cubic bbr; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/layer_cost.$mode \
//!     target/release/examples/layer_cost $mode 64 2>&1 | grep -E 'Collected|layer_cost:'
//! done
//! ```
//!
//! `--offload` gives both interfaces segmentation offload: 64 KB segments cross the link whole
//! (as between two offload devices), and the sender's layer records each as the wire segments a
//! device would cut it into. Without it, every segment is a wire segment of MTU 1500.
//!
//! A third argument, a loss rate (`0.001` for 0.1%), drops that share of the packets each way
//! (seeded, so each run loses the same ones): what the layer costs while it repairs losses,
//! the receiver's out-of-order buffer among it.
//!
//! Each run prints the bytes moved and the virtual time they took; callgrind prints the
//! instructions (`Collected`). Divide by the bytes: instructions per byte, layer on against off.
//! Both stacks run in the one process, so the figure is the sender's and the receiver's cost
//! together (the layer works on both sides: the scoreboard on one, SACK blocks and the window
//! on the other).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use stack::sim::{LinkConfig, Pair};
use stack::{CongestionControl, StackConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let offload = args.iter().any(|a| a == "--offload");
    let args: Vec<String> = args.into_iter().filter(|a| a != "--offload").collect();
    let (config, mb, loss) = match parse(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("layer_cost: {e}");
            eprintln!(
                "usage: layer_cost off|cubic|bbr [MEGABYTES, default 64] [LOSS, default 0] \
                 [--offload]"
            );
            return ExitCode::from(2);
        }
    };
    let link = LinkConfig {
        latency: Duration::from_millis(1),
        loss,
        seed: 1,
        offload,
        ..LinkConfig::default()
    };
    let mut p = Pair::with_configs(
        link,
        config.clone(),
        config,
        &["192.0.2.2/24"],
        &["192.0.2.1/24"],
    );
    let server: SocketAddr = "192.0.2.1:9000".parse().expect("an address");
    let (c, s) = p.tcp_connection(server);
    let chunk: Vec<u8> = (0..1u32 << 16).map(|i| (i * 7) as u8).collect();
    let total = mb << 20;
    let (mut sent, mut got) = (0usize, 0usize);
    let mut buf = vec![0u8; 1 << 16];
    let start = p.now();
    while got < total {
        if sent < total {
            let want = (total - sent).min(chunk.len());
            sent += p.a.send(c, &chunk[..want]).unwrap_or(0);
        }
        while let Ok(n) = p.b.recv(s, &mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        if !p.step() && sent >= total && got < total {
            eprintln!("layer_cost: stalled at {got} of {total} bytes");
            return ExitCode::FAILURE;
        }
    }
    let ms = (p.now() - start).total_millis();
    let r = p.a.recovery_counters();
    println!(
        "layer_cost: {got} bytes in {ms} virtual ms; sent again {}",
        r.TcpRetransSegs
    );
    ExitCode::SUCCESS
}

/// `off|cubic|bbr [MEGABYTES] [LOSS]`: the stacks' configuration, the megabytes to move and
/// the share of packets lost.
fn parse(args: &[String]) -> Result<(StackConfig, usize, f64), String> {
    let mut config = StackConfig::default();
    match args.first().map(String::as_str) {
        Some("off") => config.loss_recovery = false,
        Some("cubic") => config.congestion_control = CongestionControl::Cubic,
        Some("bbr") => config.congestion_control = CongestionControl::Bbr,
        Some(other) => return Err(format!("`{other}` is not off, cubic or bbr")),
        None => return Err("which: off, cubic or bbr?".into()),
    }
    let mb = match args.get(1) {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|&n| (1..=4096).contains(&n))
            .ok_or_else(|| format!("`{v}` is not a number of megabytes from 1 to 4096"))?,
        None => 64,
    };
    let loss = match args.get(2) {
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|l| (0.0..0.5).contains(l))
            .ok_or_else(|| format!("`{v}` is not a loss rate from 0 to 0.5"))?,
        None => 0.0,
    };
    Ok((config, mb, loss))
}
