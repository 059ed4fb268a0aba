//! Segmentation offload between two stacks on the simulated link (virtual clock, no root): the
//! link carries 64 KB segments whole, as between two offload devices. Durations are virtual, so
//! comparing them is exact, not timing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stack::sim::{LinkConfig, Pair};
use stack::StackConfig;

const SERVER: &str = "192.0.2.1:9000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A to B over a link of 1 ms each way: (virtual ms from the first write until B read all,
/// the largest packet A sent).
fn transfer(offload: bool, len: usize) -> (i64, usize) {
    transfer_on(
        LinkConfig {
            latency: Duration::from_millis(1),
            offload,
            ..LinkConfig::default()
        },
        len,
    )
}

/// [`transfer`] over `link`.
fn transfer_on(link: LinkConfig, len: usize) -> (i64, usize) {
    let (ms, largest, _, _) = transfer_with(link, StackConfig::default(), len);
    (ms, largest)
}

/// [`transfer_on`] with A's configuration: moves `len` bytes from A to B; returns the virtual
/// ms it took, the largest packet that crossed, the packets A sent shared with the device's
/// queue, and the buffers A's loss recovery layer made to hold them.
fn transfer_with(link: LinkConfig, a_config: StackConfig, len: usize) -> (i64, usize, u64, u64) {
    let mut p = Pair::with_configs(
        link,
        a_config,
        StackConfig::default(),
        &["192.0.2.2/24"],
        &["192.0.2.1/24"],
    );
    let largest = Arc::new(Mutex::new(0usize));
    let seen = Arc::clone(&largest);
    p.filter_to_b(move |pkt| {
        let mut l = seen.lock().unwrap();
        *l = (*l).max(pkt.len());
        true
    });
    let (c, s) = p.tcp_connection(addr(SERVER));
    let data: Vec<u8> = (0..len as u32).map(|i| (i * 7 + 1) as u8).collect();
    let start = p.now();
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..1_000_000 {
        if sent < data.len() {
            sent += p.a.send(c, &data[sent..]).unwrap_or(0);
        }
        while let Ok(n) = p.b.recv(s, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() >= data.len() {
            break;
        }
        p.step();
    }
    assert!(got == data, "intact (seed {})", p.seed);
    let largest = *largest.lock().unwrap();
    let shared = p.link.shared[1];
    let made = p.a.shared_buffers_made();
    (
        (p.now() - start).total_millis() as i64,
        largest,
        shared,
        made,
    )
}

/// A sender in slow start gets its acknowledgements at once from an offload receiver. smoltcp
/// alone would wait for its 10 ms delayed-ACK timer after each super-packet (it sees the raised
/// 64 KB MSS, and one segment is less than that), making every round trip of slow start 10 ms
/// instead of 2.
#[test]
fn super_packets_are_acknowledged_at_once_so_slow_start_is_not_held_back() {
    let len = 300_000;
    let (with, largest) = transfer(true, len);
    assert!(largest > 10_000, "super-packets crossed: {largest} bytes");
    let (without, plain) = transfer(false, len);
    assert!(plain <= 1500, "{plain}");
    eprintln!("{len} bytes: {with} ms with offload, {without} ms without");
    // Slow start from ten segments to 300 KB is about five round trips of 2 ms.
    assert!(
        with <= without + 2,
        "{with} ms with offload, {without} ms without"
    );
    assert!(with <= 14, "{with} ms: acknowledgements waited for a timer");
}

/// Super-packets lost whole (2% of packets, both ways, several seeds): the data arrives intact,
/// and the scoreboard's wire segments go again in super-packets.
#[test]
fn super_packets_lost_whole_are_repaired() {
    for seed in 1..=5 {
        let link = LinkConfig {
            latency: Duration::from_millis(5),
            loss: 0.02,
            offload: true,
            seed,
            ..LinkConfig::default()
        };
        let (ms, largest) = transfer_on(link, 4 << 20);
        assert!(largest > 10_000, "seed {seed}: super-packets crossed");
        eprintln!("seed {seed}: 4 MB in {ms} virtual ms");
    }
}

/// The loss recovery layer keeps each segment it sends where smoltcp wrote it, sharing the
/// buffer with the device's queue, rather than copying its payload (with offload, the copy
/// cost as much as the rest of the layer); a lost wire segment is sent again from it (the test
/// above). Without offload, wire-sized segments are shared the same way; without the layer
/// nothing is kept.
#[test]
fn segments_are_kept_in_flight_without_a_copy() {
    let link = |offload| LinkConfig {
        latency: Duration::from_millis(1),
        offload,
        ..LinkConfig::default()
    };
    let len = 1 << 20;
    let (_, largest, shared, _) = transfer_with(link(true), StackConfig::default(), len);
    assert!(largest > 10_000, "super-packets crossed");
    assert!(
        shared as usize >= len / largest,
        "{shared} of the packets were shared, for {len} bytes in packets of up to {largest}"
    );
    // Long enough for the flight to stop growing (smoltcp's send buffer bounds it).
    let long = 8 << 20;
    let (_, largest, shared, made) = transfer_with(link(false), StackConfig::default(), long);
    assert!(largest <= 1500, "no super-packets without offload");
    // All but a few small ones (a window's or the stream's end), which are copied.
    assert!(
        shared as usize >= long / 1460 * 99 / 100,
        "{shared} of the wire-sized segments were shared, for {long} bytes"
    );
    // The scoreboard gives each buffer back once its segment is acknowledged, and the next
    // segment is written in it: the buffers made are about a flight's worth, not one a packet.
    assert!(
        made * 4 < shared,
        "{made} buffers made for {shared} segments shared"
    );
    let mut off = StackConfig::default();
    off.loss_recovery = false;
    let (_, _, shared, made) = transfer_with(link(true), off, len);
    assert_eq!((shared, made), (0, 0), "without the layer, nothing is kept");
}
