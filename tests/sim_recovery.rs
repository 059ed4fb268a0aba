//! Loss recovery between two stacks on the simulated link (virtual clock, no root, seeded): how
//! many round trips a loss costs, which segments go again, and what a lying or broken receiver
//! cannot make the sender do. Durations are virtual, so comparing them is exact, not timing.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stack::sim::{self, LinkConfig, Pair};
use stack::{
    CongestionControl, ConnectOptions, CookieKey, Family, FastOpenMode, FastOpenServerConfig,
    RecoveryCounters, SocketId, SocketType, StackConfig,
};

const SERVER: &str = "192.0.2.1:9000";
/// One-way delay of the link in most tests: a round trip of 20 ms.
const LATENCY_MS: u64 = 10;
const RTT_MS: u64 = 2 * LATENCY_MS;
const MSS: usize = 1460;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn link(latency_ms: u64, seed: u64) -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(latency_ms),
        seed,
        ..LinkConfig::default()
    }
}

/// A stack configuration with the recovery layer on or off.
fn config(recovery: bool) -> StackConfig {
    let mut c = StackConfig::default();
    c.loss_recovery = recovery;
    c
}

/// Deterministic test bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Two stacks joined by `link`, A connected to a listener on B: (pair, A's socket, B's).
fn connected(link: LinkConfig, recovery: bool) -> (Pair, SocketId, SocketId) {
    connected_configured(link, config(recovery))
}

/// [`connected`], both stacks with the recovery layer running `cc`.
fn connected_with(link: LinkConfig, cc: CongestionControl) -> (Pair, SocketId, SocketId) {
    let mut c = config(true);
    c.congestion_control = cc;
    connected_configured(link, c)
}

/// [`connected`], both stacks configured with `config`.
fn connected_configured(link: LinkConfig, config: StackConfig) -> (Pair, SocketId, SocketId) {
    let mut p = Pair::with_configs(
        link,
        config.clone(),
        config,
        &["192.0.2.2/24"],
        &["192.0.2.1/24"],
    );
    let (c, s) = p.tcp_connection(addr(SERVER));
    (p, c, s)
}

/// Send `data` from A to B over an established connection; returns the virtual milliseconds
/// from the first write until B has read it all, after checking it arrived byte for byte.
fn a_to_b(p: &mut Pair, c: SocketId, s: SocketId, data: &[u8]) -> u64 {
    a_to_b_timed(p, c, s, data, &AtomicI64::new(0))
}

/// [`a_to_b`], setting `clock` to the virtual time (µs) before each step.
fn a_to_b_timed(p: &mut Pair, c: SocketId, s: SocketId, data: &[u8], clock: &AtomicI64) -> u64 {
    a_to_b_each(p, c, s, data, |p, _| {
        clock.store(p.now().total_micros(), Ordering::Relaxed)
    })
}

/// [`a_to_b`], calling `each` with the bytes B has read so far before each step.
fn a_to_b_each(
    p: &mut Pair,
    c: SocketId,
    s: SocketId,
    data: &[u8],
    mut each: impl FnMut(&mut Pair, usize),
) -> u64 {
    let start = p.now();
    let (mut sent, mut got) = (0, Vec::with_capacity(data.len()));
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..5_000_000 {
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
        each(p, got.len());
        p.step();
    }
    assert!(got == data, "the data arrived intact (seed {})", p.seed);
    (p.now() - start).total_millis()
}

/// A middlebox on the way to B that drops chosen data segments of A's, the first time each
/// leaves (by their index in the stream: 0 is the first full segment), and records every data
/// segment it sees.
#[derive(Default)]
struct Dropper {
    /// The client's initial sequence number, from its SYN (or its first data).
    isn: Option<u32>,
    /// Byte offsets in the segments to drop.
    drop_offsets: HashSet<usize>,
    /// Segments seen: offset → times.
    seen: HashMap<usize, u32>,
    dropped: Vec<usize>,
    /// Segments with a FIN that went through.
    fins: u32,
    /// When each segment left first, the second time, and last (µs of the virtual clock).
    first_sent: HashMap<usize, i64>,
    second_sent: HashMap<usize, i64>,
    last_sent: HashMap<usize, i64>,
    /// The virtual clock, as the test's loop sets it before each step.
    clock: Arc<AtomicI64>,
}

impl Dropper {
    fn install(p: &mut Pair, drop_offsets: impl IntoIterator<Item = usize>) -> Arc<Mutex<Dropper>> {
        let d = Arc::new(Mutex::new(Dropper {
            drop_offsets: drop_offsets.into_iter().collect(),
            ..Dropper::default()
        }));
        let shared = Arc::clone(&d);
        p.filter_to_b(move |pkt| {
            let Some(v) = sim::tcp_view(pkt) else {
                return true;
            };
            let mut d = shared.lock().unwrap();
            d.fins += u32::from(v.flags & 0x01 != 0);
            if v.flags & 0x02 != 0 {
                d.isn = Some(v.seq);
                return true;
            }
            if v.payload_len == 0 {
                return true;
            }
            // Installed after the handshake: the stream starts with the first data seen.
            let isn = *d.isn.get_or_insert(v.seq.wrapping_sub(1));
            let offset = v.seq.wrapping_sub(isn.wrapping_add(1)) as usize;
            let now = d.clock.load(Ordering::Relaxed);
            d.first_sent.entry(offset).or_insert(now);
            d.last_sent.insert(offset, now);
            let times = d.seen.entry(offset).or_insert(0);
            *times += 1;
            let times = *times;
            if times == 2 {
                d.second_sent.insert(offset, now);
            }
            let end = offset + v.payload_len;
            if times == 1 && d.drop_offsets.iter().any(|&o| offset <= o && o < end) {
                d.dropped.push(offset);
                return false;
            }
            true
        });
        d
    }

    /// How long after it first left each dropped segment went again, in ms.
    fn repair_ms(&self) -> Vec<i64> {
        self.dropped
            .iter()
            .map(|o| (self.last_sent[o] - self.first_sent[o]) / 1000)
            .collect()
    }

    /// Segments sent more than once.
    fn resent(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .seen
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(&o, _)| o)
            .collect();
        v.sort_unstable();
        v
    }
}

fn segments(indexes: &[usize]) -> Vec<usize> {
    indexes.iter().map(|i| i * MSS).collect()
}

#[test]
fn several_segments_lost_in_one_window_are_sent_again_within_a_round_trip() {
    let data = pattern(400_000);
    let (mut p, c, s) = connected(link(LATENCY_MS, 1), true);
    let clean = a_to_b(&mut p, c, s, &data);

    // Four holes in the same flight: RACK finds them all from the SACK blocks that follow.
    let lost = segments(&[40, 43, 46, 49]);
    for recovery in [true, false] {
        let (mut p, c, s) = connected(link(LATENCY_MS, 1), recovery);
        let d = Dropper::install(&mut p, lost.clone());
        let clock = Arc::clone(&d.lock().unwrap().clock);
        let took = a_to_b_timed(&mut p, c, s, &data, &clock);
        let d = d.lock().unwrap();
        assert_eq!(d.dropped, lost, "the middlebox dropped each once");
        let repair = d.repair_ms();
        if recovery {
            let r = p.a.recovery_counters();
            assert_eq!(d.resent(), lost, "exactly the lost segments went again");
            assert_eq!(r.TcpRetransSegs, 4, "{r:?}");
            assert_eq!(r.TCPSackRecovery, 1, "one recovery for the four: {r:?}");
            assert_eq!(r.TCPTimeouts, 0, "{r:?}");
            // Each went again as soon as the SACK blocks of the segments after it arrived:
            // one round trip after it first left.
            assert!(
                repair.iter().all(|&ms| ms <= (RTT_MS + RTT_MS / 2) as i64),
                "sent again after {repair:?} ms (RTT {RTT_MS} ms)"
            );
            // The window was cut once (CUBIC's 0.7), so the rest goes a little slower.
            assert!(took < clean * 2, "{took} ms against {clean} ms clean");
            let info = p.a.recovery_info(c).unwrap();
            assert_eq!(info.counters.TcpRetransSegs, 4, "the connection's share");
            assert!(info.srtt_us >= RTT_MS * 1000, "{info:?}");
        } else {
            // smoltcp alone: one fast retransmit, then a timeout of at least a second.
            assert!(
                repair.iter().any(|&ms| ms >= 1000),
                "without the layer: sent again after {repair:?} ms"
            );
            assert!(took >= clean + 900, "without the layer: {took} ms");
        }
    }
}

#[test]
fn a_receiver_holds_every_run_of_a_window_with_a_dozen_holes() {
    // Twelve holes in one flight: smoltcp's own reassembler keeps four, so the runs past the
    // fourth would be dropped and sent again; the layer holds them all, and only what was lost
    // goes again, each once.
    let data = pattern(400_000);
    let lost = segments(&[40, 43, 46, 49, 52, 55, 58, 61, 64, 67, 70, 73]);
    let (mut p, c, s) = connected(link(LATENCY_MS, 1), true);
    let d = Dropper::install(&mut p, lost.clone());
    a_to_b(&mut p, c, s, &data);
    let d = d.lock().unwrap();
    assert_eq!(d.dropped, lost, "the middlebox dropped each once");
    assert_eq!(d.resent(), lost, "exactly the lost segments went again");
    let r = p.a.recovery_counters();
    assert_eq!(r.TcpRetransSegs, 12, "{r:?}");
    assert_eq!(r.TCPTimeouts, 0, "{r:?}");
    assert_eq!(
        r.TCPDSACKRecv, 0,
        "nothing the receiver had was sent again: {r:?}"
    );
}

#[test]
fn a_segment_that_fills_part_of_a_hole_is_acknowledged_at_once() {
    // Segments 30 and 31 lost, and 31 lost again: the first retransmission fills part of the
    // hole only (RFC 5681 §4.2: acknowledged at once all the same). The round trip is shorter
    // than the delayed-ACK timer (10 ms), so that the timer smoltcp started for the data
    // before the hole still runs when the retransmission arrives: smoltcp, which saw no hole
    // (the layer held what followed it), would let it run.
    let latency_ms = 2;
    // Near the end, so that no new data follows the retransmission (its acknowledgement
    // would carry the news).
    let data = pattern(36 * MSS);
    let (first, second) = (30 * MSS, 31 * MSS);
    let (mut p, c, s) = connected(link(latency_ms, 1), true);
    let clock = Arc::new(AtomicI64::new(0));
    // When the retransmission of the first segment left A (µs), and where A's data starts
    // (the filter comes after the handshake: at the first data it sees).
    let refilled = Arc::new(AtomicI64::new(-1));
    let start: Arc<Mutex<Option<u32>>> = Arc::default();
    {
        let (clock, refilled, start) = (
            Arc::clone(&clock),
            Arc::clone(&refilled),
            Arc::clone(&start),
        );
        let mut seen: HashMap<usize, u32> = HashMap::new();
        p.filter_to_b(move |pkt| {
            let Some(v) = sim::tcp_view(pkt).filter(|v| v.payload_len > 0) else {
                return true;
            };
            let start = *start.lock().unwrap().get_or_insert(v.seq);
            let offset = v.seq.wrapping_sub(start) as usize;
            let times = seen.entry(offset).or_insert(0);
            *times += 1;
            if offset == first && *times == 2 {
                refilled.store(clock.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            !((offset == first && *times == 1) || (offset == second && *times <= 2))
        });
    }
    // B's acknowledgement numbers as they leave, with the virtual time (µs).
    let acks: Arc<Mutex<Vec<(i64, u32)>>> = Arc::default();
    {
        let (clock, acks) = (Arc::clone(&clock), Arc::clone(&acks));
        p.filter_to_a(move |pkt| {
            if let Some(v) = sim::tcp_view(pkt).filter(|v| v.flags & 0x10 != 0) {
                acks.lock()
                    .unwrap()
                    .push((clock.load(Ordering::Relaxed), v.ack));
            }
            true
        });
    }
    a_to_b_timed(&mut p, c, s, &data, &clock);
    let refilled = refilled.load(Ordering::Relaxed);
    assert!(refilled >= 0, "the first segment went again");
    let arrived = refilled + (latency_ms * 1000) as i64;
    let start = start.lock().unwrap().expect("data went");
    let past_first = start.wrapping_add((first + MSS) as u32);
    let acked = acks
        .lock()
        .unwrap()
        .iter()
        .find(|&&(_, ack)| !seq_before(ack, past_first))
        .map(|&(t, _)| t)
        .expect("acknowledged");
    assert!(
        acked - arrived < 1000,
        "acknowledged {} µs after the segment arrived",
        acked - arrived
    );
}

#[test]
fn a_held_segment_that_arrives_twice_is_reported_as_a_duplicate() {
    // Loss makes holes; duplication brings segments past them twice. The acknowledgement that
    // answers such a one reports it first, inside the run that holds it (RFC 2883 §4.2.1):
    // the sender learns it sent nothing needlessly, or undoes what it did.
    let mut l = link(5, 11);
    l.loss = 0.02;
    l.duplicate = 0.03;
    let (mut p, c, s) = connected(l, true);
    // B's acknowledgements: (ack, SACK blocks).
    type Acks = Arc<Mutex<Vec<(u32, Vec<(u32, u32)>)>>>;
    let acks: Acks = Arc::default();
    {
        let acks = Arc::clone(&acks);
        p.filter_to_a(move |pkt| {
            if let Some(v) = sim::tcp_view(pkt).filter(|v| v.flags & 0x10 != 0) {
                let blocks = sack_blocks(&sim::tcp_options(pkt));
                acks.lock().unwrap().push((v.ack, blocks));
            }
            true
        });
    }
    a_to_b(&mut p, c, s, &pattern(1_000_000));
    let acks = acks.lock().unwrap();
    let reported = acks
        .iter()
        .filter(|(ack, b)| {
            b.len() >= 2
                && seq_before(*ack, b[0].0)
                && !seq_before(b[0].0, b[1].0)
                && !seq_before(b[1].1, b[0].1)
        })
        .count();
    assert!(reported > 0, "no D-SACK block above the acknowledgement");
    let r = p.a.recovery_counters();
    assert!(r.TCPDSACKRecv >= reported as u64, "{r:?}");
}

#[test]
fn losing_the_tail_of_a_burst_costs_about_two_round_trips_not_a_timeout() {
    // Whole segments only: smoltcp's Nagle would hold a short last one back until everything
    // before it is acknowledged.
    let data = pattern(70 * MSS);
    let (mut p, c, s) = connected(link(LATENCY_MS, 2), true);
    let clean = a_to_b(&mut p, c, s, &data);
    let lost = segments(&[68, 69]);
    for recovery in [true, false] {
        let (mut p, c, s) = connected(link(LATENCY_MS, 2), recovery);
        let d = Dropper::install(&mut p, lost.clone());
        let clock = Arc::clone(&d.lock().unwrap().clock);
        let took = a_to_b_timed(&mut p, c, s, &data, &clock);
        let d = d.lock().unwrap();
        assert_eq!(d.dropped, lost);
        if recovery {
            let r = p.a.recovery_counters();
            assert_eq!(r.TCPLossProbes, 1, "{r:?}");
            assert_eq!(r.TCPTimeouts, 0, "{r:?}");
            assert_eq!(d.resent(), lost, "{r:?}");
            // The probe (the last segment) goes two round trips plus 2 ms after the last
            // acknowledgement, itself a round trip after the tail left; the probe's SACK shows
            // the other hole, sent again at once: four round trips in all, as Linux.
            let repair = d.repair_ms();
            assert!(
                repair.iter().all(|&ms| ms <= (4 * RTT_MS + 5) as i64),
                "sent again after {repair:?} ms (RTT {RTT_MS} ms)"
            );
            assert!(
                took <= clean + 4 * RTT_MS + 5,
                "the tail cost {} ms over {clean} ms",
                took - clean
            );
        } else {
            assert!(took >= clean + 900, "without the layer: {took} ms");
        }
    }
}

/// SACK blocks B sent (as A will see them) and when.
type SackLog = Arc<Mutex<Vec<(i64, u32, u32)>>>;

#[test]
fn segments_the_peer_sacked_are_never_sent_again() {
    // Random loss on data only (the acknowledgements all arrive), reordering too.
    let mut l = link(5, 3);
    l.reorder = 0.02;
    let (mut p, c, s) = connected(l, true);
    let now_us = Arc::new(AtomicI64::new(0));
    let sacks: SackLog = Arc::default();
    {
        let (now_us, sacks) = (Arc::clone(&now_us), Arc::clone(&sacks));
        p.filter_to_a(move |pkt| {
            let opts = sim::tcp_options(pkt);
            for (l, r) in sack_blocks(&opts) {
                sacks
                    .lock()
                    .unwrap()
                    .push((now_us.load(Ordering::Relaxed), l, r));
            }
            true
        });
    }
    let sent: Arc<Mutex<Vec<(i64, u32, u32)>>> = Arc::default();
    {
        let (now_us, sent) = (Arc::clone(&now_us), Arc::clone(&sent));
        let mut x: u32 = 0x2545_f491;
        p.filter_to_b(move |pkt| {
            let Some(v) = sim::tcp_view(pkt) else {
                return true;
            };
            if v.payload_len == 0 {
                return true;
            }
            let t = now_us.load(Ordering::Relaxed);
            sent.lock()
                .unwrap()
                .push((t, v.seq, v.seq.wrapping_add(v.payload_len as u32)));
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % 100 >= 3
        });
    }
    let data = pattern(1_500_000);
    let (mut written, mut got) = (0, 0);
    let mut buf = vec![0u8; 1 << 16];
    let mut back = Vec::new();
    while got < data.len() {
        now_us.store(p.now().total_micros(), Ordering::Relaxed);
        if written < data.len() {
            written += p.a.send(c, &data[written..]).unwrap_or(0);
        }
        while let Ok(n) = p.b.recv(s, &mut buf) {
            if n == 0 {
                break;
            }
            got += n;
            back.extend_from_slice(&buf[..n]);
        }
        assert!(p.step(), "stalled (seed {})", p.seed);
    }
    assert!(back == data, "intact (seed {})", p.seed);
    let r = p.a.recovery_counters();
    assert!(r.TcpRetransSegs > 0 && r.TCPSackRecovery > 0, "{r:?}");
    // Every retransmission: no SACK block that reached A before it left covered it.
    let latency_us = 5_000;
    let sacks = sacks.lock().unwrap();
    let mut first_seen = HashSet::new();
    let mut resent = 0;
    for &(t, l, r) in sent.lock().unwrap().iter() {
        if first_seen.insert(l) {
            continue;
        }
        resent += 1;
        let covered = sacks
            .iter()
            .any(|&(st, sl, sr)| st + latency_us <= t && !seq_before(l, sl) && !seq_before(sr, r));
        assert!(
            !covered,
            "{l}..{r} sent again at {t} µs after it was SACKed"
        );
    }
    assert!(resent > 0);
}

fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The SACK blocks of a segment's raw options.
fn sack_blocks(opts: &[u8]) -> Vec<(u32, u32)> {
    let mut i = 0;
    let mut out = Vec::new();
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    break;
                }
                if kind == 5 {
                    for b in opts[i + 2..i + len].chunks_exact(8) {
                        out.push((
                            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                        ));
                    }
                }
                i += len;
            }
        }
    }
    out
}

fn sack_option(blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut o = vec![1, 1, 5, 2 + 8 * blocks.len() as u8];
    for (l, r) in blocks {
        o.extend_from_slice(&l.to_be_bytes());
        o.extend_from_slice(&r.to_be_bytes());
    }
    o
}

#[test]
fn a_receiver_that_reneges_on_sacked_data_still_gets_it() {
    let (mut p, c, s) = connected(link(LATENCY_MS, 4), true);
    // A segment is lost on its way to B, and every acknowledgement B sends afterwards claims
    // it was received (a receiver that SACKs, then throws the data away).
    let d = Dropper::install(&mut p, segments(&[30]));
    let shared = Arc::clone(&d);
    p.filter_to_a(move |pkt| {
        let Some(v) = sim::tcp_view(pkt) else {
            return true;
        };
        let d = shared.lock().unwrap();
        let (Some(isn), Some(&hole)) = (d.isn, d.dropped.first()) else {
            return true;
        };
        let start = isn.wrapping_add(1).wrapping_add(hole as u32);
        if v.ack == start {
            let mut blocks = sack_blocks(&sim::tcp_options(pkt));
            blocks.insert(0, (start, start.wrapping_add(MSS as u32)));
            blocks.truncate(3);
            assert!(sim::set_tcp_options(pkt, &sack_option(&blocks)));
        }
        true
    });
    let data = pattern(200_000);
    let took = a_to_b(&mut p, c, s, &data);
    let r = p.a.recovery_counters();
    assert!(r.TCPSACKReneging >= 1, "{r:?}");
    assert!(
        r.TCPTimeouts >= 1,
        "the early timeout sends it again: {r:?}"
    );
    assert!(took < 2_000, "{took} ms");
}

#[test]
fn bad_sack_blocks_are_ignored_and_counted() {
    let (mut p, c, s) = connected(link(LATENCY_MS, 5), true);
    let d = Dropper::install(&mut p, segments(&[20, 60, 61]));
    drop(d);
    // Every acknowledgement to A gains blocks no receiver would send: reversed, beyond
    // anything sent, far below the acknowledgement, and overlapping a real one.
    p.filter_to_a(move |pkt| {
        let Some(v) = sim::tcp_view(pkt) else {
            return true;
        };
        if v.flags & 0x02 != 0 {
            return true;
        }
        let mut blocks = sack_blocks(&sim::tcp_options(pkt));
        let real = blocks.first().copied();
        let ack = v.ack;
        let mut bogus = vec![
            (ack.wrapping_add(5_000), ack.wrapping_add(1_000)),
            (ack.wrapping_add(50_000_000), ack.wrapping_add(50_001_000)),
        ];
        if let Some((l, r)) = real {
            bogus.push((l.wrapping_sub(MSS as u32), r));
        } else {
            bogus.push((
                ack.wrapping_sub(1_000_000_000),
                ack.wrapping_sub(999_000_000),
            ));
        }
        blocks.extend(bogus);
        blocks.truncate(4);
        assert!(sim::set_tcp_options(pkt, &sack_option(&blocks)));
        true
    });
    let data = pattern(300_000);
    a_to_b(&mut p, c, s, &data);
    let r = p.a.recovery_counters();
    assert!(r.TCPSACKDiscard > 0, "{r:?}");
    // No bogus block was taken for data the receiver holds: had one been, the hole it covers
    // would have waited for a timeout or for reneging to be noticed.
    assert_eq!(r.TCPTimeouts, 0, "{r:?}");
    assert_eq!(r.TCPSACKReneging, 0, "{r:?}");
    assert_eq!(r.TcpRetransSegs, 3, "{r:?}");
}

#[test]
fn a_peer_without_sack_recovers_by_duplicate_acks_and_partial_acks() {
    let data = pattern(400_000);
    let lost = segments(&[40, 44]);
    let run = |recovery: bool| {
        let mut p = Pair::with_configs(
            link(LATENCY_MS, 6),
            config(recovery),
            config(recovery),
            &["192.0.2.2/24"],
            &["192.0.2.1/24"],
        );
        // Strip SACK-permitted from both SYNs: neither side may send SACK blocks.
        let strip = |pkt: &mut Vec<u8>| {
            if sim::tcp_view(pkt).is_some_and(|v| v.flags & 0x02 != 0) {
                let opts: Vec<u8> = sim::tcp_options(pkt);
                let mut kept = Vec::new();
                let mut i = 0;
                while i < opts.len() {
                    match opts[i] {
                        0 => break,
                        1 => {
                            kept.push(1);
                            i += 1;
                        }
                        kind => {
                            let len = usize::from(opts[i + 1]);
                            if kind != 4 {
                                kept.extend_from_slice(&opts[i..i + len]);
                            }
                            i += len;
                        }
                    }
                }
                assert!(sim::set_tcp_options(pkt, &kept));
            }
            true
        };
        p.filter_to_a(strip);
        let l = p.b.socket(Family::V4, SocketType::Stream);
        p.b.bind(l, addr(SERVER)).unwrap();
        p.b.listen(l, 8).unwrap();
        let d = Dropper::install(&mut p, lost.clone());
        // The dropper saw the SYN; strip its SACK-permitted on the way too.
        let inner = Arc::clone(&d);
        p.filter_to_b(move |pkt| {
            strip(pkt);
            let v = sim::tcp_view(pkt);
            let mut d = inner.lock().unwrap();
            let Some(v) = v else { return true };
            if v.flags & 0x02 != 0 {
                d.isn = Some(v.seq);
                return true;
            }
            let (Some(isn), true) = (d.isn, v.payload_len > 0) else {
                return true;
            };
            let offset = v.seq.wrapping_sub(isn.wrapping_add(1)) as usize;
            let times = d.seen.entry(offset).or_insert(0);
            *times += 1;
            if *times == 1 && d.drop_offsets.contains(&offset) {
                d.dropped.push(offset);
                return false;
            }
            true
        });
        let c = p.a.socket(Family::V4, SocketType::Stream);
        p.a.connect(c, addr(SERVER), ConnectOptions::default(), p.now())
            .unwrap();
        let mut s = None;
        p.drive_until(100_000, |p| {
            s = p.b.accept(l).ok().map(|(s, _)| s);
            s.is_some()
        });
        let took = a_to_b(&mut p, c, s.unwrap(), &data);
        (took, p.a.recovery_counters())
    };
    let (took, r) = run(true);
    assert_eq!(r.TCPRenoRecovery, 1, "{r:?}");
    assert_eq!(r.TCPSackRecovery, 0, "{r:?}");
    assert_eq!(r.TCPTimeouts, 0, "{r:?}");
    assert_eq!(r.TcpRetransSegs, 2, "{r:?}");
    let (without, _) = run(false);
    assert!(
        took + 500 < without,
        "NewReno {took} ms, smoltcp alone {without} ms"
    );
}

#[test]
fn bulk_both_ways_under_loss_reordering_and_duplication_arrives_intact_and_fast() {
    let mut l = link(2, 7);
    l.loss = 0.03;
    l.reorder = 0.03;
    l.duplicate = 0.01;
    let mut took = Vec::new();
    for recovery in [true, false] {
        let (mut p, c, s) = connected(l.clone(), recovery);
        let data = pattern(1_000_000);
        // A sends to B, B echoes everything back.
        let start = p.now();
        let (mut sent, mut echoed, mut back) = (0, 0, Vec::new());
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while back.len() < data.len() {
            if sent < data.len() {
                sent += p.a.send(c, &data[sent..]).unwrap_or(0);
            }
            while let Ok(n) = p.b.recv(s, &mut buf) {
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
            }
            if !pending.is_empty() {
                let n = p.b.send(s, &pending).unwrap_or(0);
                pending.drain(..n);
                echoed += n;
            }
            while let Ok(n) = p.a.recv(c, &mut buf) {
                if n == 0 {
                    break;
                }
                back.extend_from_slice(&buf[..n]);
            }
            assert!(p.step(), "stalled (seed {})", p.seed);
        }
        assert_eq!(echoed, data.len());
        assert!(back == data, "intact (seed {})", p.seed);
        took.push((p.now() - start).total_millis());
        if recovery {
            let (a, b) = (p.a.recovery_counters(), p.b.recovery_counters());
            assert!(
                a.TCPSackRecovery > 0 && b.TCPSackRecovery > 0,
                "{a:?} {b:?}"
            );
        }
    }
    assert!(
        took[0] * 5 < took[1],
        "with the layer {} ms, without {} ms",
        took[0],
        took[1]
    );
}

fn key() -> CookieKey {
    "a0bf63f7-ed803d81-cd641d30-cebc4a90".parse().unwrap()
}

/// A Fast Open exchange where the server's whole answer (sent before the client's final
/// ACK, so before any data was acknowledged) is lost: the server's layer repairs it with a
/// probe timed from the handshake's round trip, not after a timeout.
#[test]
fn fast_open_answer_lost_is_repaired_by_a_probe_timed_from_the_handshake() {
    let mut p = Pair::new(link(LATENCY_MS, 8), &["192.0.2.2/24"], &["192.0.2.1/24"]);
    let l = p.b.socket(Family::V4, SocketType::Stream);
    p.b.bind(l, addr(SERVER)).unwrap();
    p.b.listen(l, 8).unwrap();
    p.b.set_fast_open(l, Some(FastOpenServerConfig::new(key())))
        .unwrap();
    let answer = pattern(2 * MSS);
    // The first connection fetches a cookie.
    let run = |p: &mut Pair, drop_answer: bool| -> (u64, RecoveryCounters) {
        let dropped = Arc::new(Mutex::new(HashSet::new()));
        if drop_answer {
            let dropped = Arc::clone(&dropped);
            p.filter_to_a(move |pkt| {
                let v = sim::tcp_view(pkt).unwrap();
                // Each segment of the answer, the first time.
                !(v.payload_len > 0 && dropped.lock().unwrap().insert(v.seq))
            });
        }
        let start = p.now();
        let c = p.a.socket(Family::V4, SocketType::Stream);
        let opts = ConnectOptions {
            fast_open: FastOpenMode::Cookie,
            ..ConnectOptions::default()
        };
        p.a.connect(c, addr(SERVER), opts, p.now()).unwrap();
        p.a.queue_early(c, b"request").unwrap();
        let mut s = None;
        p.drive_until(100_000, |p| {
            s = p.b.accept(l).ok().map(|(s, _)| s);
            s.is_some()
        });
        let s = s.unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = Vec::new();
        let mut answered = false;
        p.drive_until(100_000, |p| {
            if !answered && p.b.recv(s, &mut buf).is_ok() {
                p.b.send(s, &answer).unwrap();
                answered = true;
            }
            while let Ok(n) = p.a.recv(c, &mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got.len() == answer.len()
        });
        assert_eq!(got, answer);
        assert_eq!(
            dropped.lock().unwrap().len(),
            if drop_answer { 2 } else { 0 }
        );
        ((p.now() - start).total_millis(), p.b.recovery_counters())
    };
    let _cookie = run(&mut p, false);
    let (clean, _) = run(&mut p, false);
    let (took, r) = run(&mut p, true);
    assert_eq!(r.TCPLossProbes, 1, "{r:?}");
    assert_eq!(r.TCPTimeouts, 0, "{r:?}");
    // The final ACK a round trip after the answer, the probe two round trips and 2 ms later,
    // its SACK a round trip after that.
    assert!(
        took <= clean + 4 * RTT_MS + 5,
        "lost answer: {took} ms, clean: {clean} ms"
    );
}

/// Fast Open with a partial acknowledgement (a middlebox cut the SYN's data; the server
/// acknowledged what it got), the rest sent after the handshake, and that first data segment
/// lost: repaired from the SACK blocks of what followed, in the sequence numbers of the wire
/// (offset by the acknowledged SYN data), without a timeout.
#[test]
fn fast_open_partial_ack_then_loss_is_repaired_without_a_timeout() {
    let mut p = Pair::new(link(LATENCY_MS, 9), &["192.0.2.2/24"], &["192.0.2.1/24"]);
    let l = p.b.socket(Family::V4, SocketType::Stream);
    p.b.bind(l, addr(SERVER)).unwrap();
    p.b.listen(l, 8).unwrap();
    p.b.set_fast_open(l, Some(FastOpenServerConfig::new(key())))
        .unwrap();
    let connect = |p: &mut Pair, early: &[u8]| {
        let c = p.a.socket(Family::V4, SocketType::Stream);
        let opts = ConnectOptions {
            fast_open: FastOpenMode::Cookie,
            ..ConnectOptions::default()
        };
        p.a.connect(c, addr(SERVER), opts, p.now()).unwrap();
        p.a.queue_early(c, early).unwrap();
        let mut s = None;
        p.drive_until(100_000, |p| {
            s = p.b.accept(l).ok().map(|(s, _)| s);
            s.is_some()
        });
        (c, s.unwrap())
    };
    // A first connection fetches the cookie.
    let (c0, s0) = connect(&mut p, b"cookie");
    p.a.close(c0, p.now());
    p.b.close(s0, p.now());
    p.run_for(Duration::from_millis(100));
    // Only 4 of the SYN's 10 bytes get through; then the first data segment is lost.
    let dropped = Arc::new(Mutex::new(None::<u32>));
    {
        let dropped = Arc::clone(&dropped);
        p.filter_to_b(move |pkt| {
            let Some(v) = sim::tcp_view(pkt) else {
                return true;
            };
            if v.flags & 0x12 == 0x02 && v.payload_len > 0 {
                assert!(sim::truncate_tcp_payload(pkt, 4));
                return true;
            }
            let mut d = dropped.lock().unwrap();
            if v.flags & 0x02 == 0 && v.payload_len > 0 && d.is_none() {
                *d = Some(v.seq);
                return false;
            }
            true
        });
    }
    let (c, s) = connect(&mut p, b"0123456789");
    let more = pattern(30 * MSS);
    let mut expect = b"0123456789".to_vec();
    expect.extend_from_slice(&more);
    let start = p.now();
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = vec![0u8; 1 << 16];
    p.drive_until(1_000_000, |p| {
        if sent < more.len() {
            sent += p.a.send(c, &more[sent..]).unwrap_or(0);
        }
        while let Ok(n) = p.b.recv(s, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got.len() >= expect.len()
    });
    assert!(got == expect, "intact (seed {})", p.seed);
    let info = p.a.fast_open_info(c).unwrap();
    assert_eq!(
        (info.syn_data_sent, info.syn_data_acked),
        (10, 4),
        "{info:?}"
    );
    assert!(dropped.lock().unwrap().is_some());
    let r = p.a.recovery_counters();
    assert_eq!(r.TcpRetransSegs, 1, "{r:?}");
    assert_eq!(r.TCPSackRecovery, 1, "{r:?}");
    assert_eq!(r.TCPTimeouts, 0, "{r:?}");
    let took = (p.now() - start).total_millis();
    assert!(took < 200, "{took} ms");
}

/// Drop every acknowledgement towards A while `on` says so (the virtual clock in µs).
fn ack_blackout(p: &mut Pair, clock: Arc<AtomicI64>, on: impl Fn(i64) -> bool + Send + 'static) {
    p.filter_to_a(move |pkt| {
        let is_ack = sim::tcp_view(pkt).is_some_and(|v| v.payload_len == 0 && v.flags & 0x02 == 0);
        !(is_ack && on(clock.load(Ordering::Relaxed)))
    });
}

/// In fast recovery, the acknowledgements of the retransmission and of everything after it
/// are lost for a while: the layer probes (QUIC's rule; Linux would wait for its timeout),
/// and the transfer goes on without a timeout.
#[test]
fn silence_during_recovery_is_probed_not_timed_out() {
    let data = pattern(100 * MSS);
    let (mut p, c, s) = connected(link(LATENCY_MS, 10), true);
    let clean = a_to_b(&mut p, c, s, &data);
    let (mut p, c, s) = connected(link(LATENCY_MS, 10), true);
    let d = Dropper::install(&mut p, segments(&[40]));
    let clock = Arc::clone(&d.lock().unwrap().clock);
    // From the moment the lost segment goes again, 3 round trips without acknowledgements.
    let shared = Arc::clone(&d);
    let blackout = move |now: i64| {
        let d = shared.lock().unwrap();
        let hole = 40 * MSS;
        d.second_sent
            .get(&hole)
            .is_some_and(|&t| now < t + 3 * RTT_MS as i64 * 1000)
    };
    ack_blackout(&mut p, Arc::clone(&clock), blackout);
    let took = a_to_b_timed(&mut p, c, s, &data, &clock);
    let r = p.a.recovery_counters();
    assert_eq!(r.TCPTimeouts, 0, "{r:?}");
    assert!(r.TCPLossProbes >= 1, "{r:?}");
    assert!(
        took < clean + 8 * RTT_MS,
        "{took} ms against {clean} ms clean"
    );
}

/// A timeout that was not needed (every acknowledgement of a flight lost, nothing else): the
/// segment sent again comes back as a duplicate (D-SACK), and the window the timeout
/// collapsed is put back (Linux's undo) instead of growing again from one segment.
#[test]
fn a_needless_timeout_is_undone_by_the_duplicate_report() {
    let (mut p, c, s) = connected(link(LATENCY_MS, 11), true);
    // A first transfer grows the window.
    a_to_b(&mut p, c, s, &pattern(200 * MSS));
    let cwnd_before = p.a.recovery_info(c).unwrap().cwnd;
    let clock = Arc::new(AtomicI64::new(0));
    let start = Arc::new(AtomicI64::new(i64::MAX));
    {
        let start = Arc::clone(&start);
        // Every acknowledgement lost for 350 ms from the next transfer's start: past the
        // probe and the first timeout (200 ms + SRTT).
        ack_blackout(&mut p, Arc::clone(&clock), move |now| {
            let s = start.load(Ordering::Relaxed);
            now >= s && now < s + 350_000
        });
    }
    start.store(p.now().total_micros(), Ordering::Relaxed);
    a_to_b_timed(&mut p, c, s, &pattern(20 * MSS), &clock);
    // B has it all; A hears nothing until the blackout ends, then everything is acknowledged.
    for _ in 0..100_000 {
        clock.store(p.now().total_micros(), Ordering::Relaxed);
        if p.a.recovery_info(c).unwrap().unacked == 0 {
            break;
        }
        assert!(p.step());
    }
    let r = p.a.recovery_counters();
    assert!(r.TCPTimeouts >= 1, "{r:?}");
    assert!(r.TCPLossUndo >= 1, "{r:?}");
    let info = p.a.recovery_info(c).unwrap();
    assert_eq!(info.state, stack::RecoveryState::Open, "{info:?}");
    assert!(
        info.cwnd >= cwnd_before / 2,
        "the window came back: {} after, {cwnd_before} before",
        info.cwnd
    );
}

/// The segment that carries the FIN arrives while a segment before it is missing: smoltcp alone
/// keeps its data and forgets the FIN, so the sender (a kernel in fast recovery sends no probe)
/// waits for a timeout to send the FIN again. B's layer keeps the FIN until the hole is filled:
/// the FIN goes once, and B sees the end of the stream as soon as the repair arrives.
#[test]
fn a_fin_past_a_hole_is_taken_when_the_hole_is_filled() {
    let data = pattern(20 * MSS);
    // In the segment before the last one.
    const LOST: usize = 26_300;
    for recovery in [true, false] {
        let (mut p, c, s) = connected(link(LATENCY_MS, 7), recovery);
        let d = Dropper::install(&mut p, [LOST]);
        let clock = Arc::clone(&d.lock().unwrap().clock);
        assert_eq!(p.a.send(c, &data).unwrap(), data.len());
        p.a.shutdown(c, stack::Shutdown::Write).unwrap();
        let (mut got, mut buf, mut eof_at) = (Vec::new(), vec![0u8; 1 << 16], None);
        for _ in 0..1_000_000 {
            match p.b.recv(s, &mut buf) {
                Ok(0) => {
                    eof_at = Some(p.now());
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            clock.store(p.now().total_micros(), Ordering::Relaxed);
            p.step();
        }
        assert!(got == data, "intact");
        let d = d.lock().unwrap();
        assert_eq!(d.dropped.len(), 1, "{:?}", d.seen);
        let repaired = d.last_sent[&d.dropped[0]];
        let eof_after_repair_ms = (eof_at.unwrap().total_micros() - repaired) / 1000;
        let fins = d.fins;
        if recovery {
            assert_eq!(fins, 1, "the FIN went once");
            assert!(
                eof_after_repair_ms <= LATENCY_MS as i64 + 1,
                "end of stream {eof_after_repair_ms} ms after the repair left"
            );
        } else {
            assert!(fins >= 2, "smoltcp alone forgets the FIN: {fins}");
        }
    }
}

/// A path that reorders but loses nothing: every segment sent again arrives twice, and the
/// receiver says so with D-SACK blocks, mostly after the acknowledgements that end the recovery
/// (the reordered original fills the hole first). Linux undoes the window cut then too; so does
/// the layer, and the window ends where it would have been.
#[test]
fn recoveries_a_reordering_path_causes_are_undone_after_they_end() {
    let link = LinkConfig {
        latency: Duration::from_micros(500),
        reorder: 0.03,
        seed: 3,
        ..LinkConfig::default()
    };
    let (mut p, c, s) = connected(link, true);
    let data = pattern(8 << 20);
    a_to_b(&mut p, c, s, &data);
    let r = p.a.recovery_counters();
    assert!(
        r.TCPSackRecovery > 0,
        "the reordering looked like loss: {r:?}"
    );
    assert!(r.TCPDSACKRecv > 0, "{r:?}");
    assert!(r.TCPDSACKUndo > 0, "undone: {r:?}");
    assert_eq!(r.TCPTimeouts, 0, "{r:?}");
}

/// 8 MB from A to B over a 20 ms round trip with 1% of packets lost each way (the same seeded
/// losses for both runs): CUBIC's window settles where that loss rate puts it, about
/// `1.2/sqrt(p)` segments a round trip; BBR's follows its model of the path, and loss does not
/// shrink it. Virtual time, so the comparison is exact.
#[test]
fn under_random_loss_bbr_moves_data_several_times_faster_than_cubic() {
    let mut took = Vec::new();
    for cc in [CongestionControl::Cubic, CongestionControl::Bbr] {
        let mut l = link(LATENCY_MS, 3);
        l.loss = 0.01;
        let (mut p, c, s) = connected_with(l, cc);
        let ms = a_to_b(&mut p, c, s, &pattern(8_000_000));
        let i = p.a.recovery_info(c).unwrap();
        assert!(i.counters.TCPSackRecovery > 5, "{cc:?}: {i:?}");
        assert_eq!(i.counters.TCPTimeouts, 0, "{cc:?}: {i:?}");
        assert_eq!(i.bbr.is_some(), cc == CongestionControl::Bbr, "{i:?}");
        took.push(ms);
    }
    assert!(
        took[1] * 4 < took[0],
        "8 MB at 1% loss: CUBIC {} ms, BBR {} ms",
        took[0],
        took[1]
    );
}

/// Under random loss, what goes again is what was lost, not a run of spurious
/// retransmissions: an acknowledgement that covers part of a segment (of a super-packet's
/// record, above all) delivered that part only, and RACK must take nothing after it for
/// delivered. (A version that recorded bursts of full segments as one record, as it records a
/// super-packet, and let RACK take the whole record for delivered, sent four times as many
/// segments again as the link dropped.)
#[test]
fn under_random_loss_only_what_was_lost_is_sent_again() {
    for seed in 1..=3 {
        let mut l = link(LATENCY_MS, seed);
        l.loss = 0.01;
        let (mut p, c, s) = connected(l, true);
        a_to_b(&mut p, c, s, &pattern(4_000_000));
        let r = p.a.recovery_info(c).unwrap().counters;
        let lost = p.link.dropped[1];
        assert!(lost > 20, "seed {seed}: {lost} dropped");
        assert!(
            r.TcpRetransSegs <= lost * 3 / 2 + 5,
            "seed {seed}: {} segments sent again for {lost} lost: {r:?}",
            r.TcpRetransSegs
        );
    }
}

/// A BBR connection idle for ten minutes (virtual) sends again at once at the rate it had: its
/// model and window stand (CUBIC's window starts again from the initial one, RFC 5681 §4.1),
/// the first round trip after the silence carries a window's worth, the silence sends it to no
/// PROBE_RTT, and its least round trip, older than ten seconds, is measured again.
#[test]
fn bbr_sends_again_at_full_rate_after_a_long_idle() {
    let (mut p, c, s) = connected_with(link(LATENCY_MS, 5), CongestionControl::Bbr);
    let data = pattern(4_000_000);
    a_to_b(&mut p, c, s, &data);
    // The last acknowledgements come in.
    p.run_for(Duration::from_secs(1));
    let cwnd = p.a.recovery_info(c).unwrap().cwnd;
    p.run_for(Duration::from_secs(600));
    assert_eq!(
        p.a.recovery_info(c).unwrap().cwnd,
        cwnd,
        "kept over the idle"
    );
    // What B has a little more than one round trip after A writes again: the first flight.
    let sent = p.a.send(c, &data).unwrap();
    p.run_for(Duration::from_millis(RTT_MS + RTT_MS / 4));
    let mut got = vec![0u8; sent];
    let n = p.b.recv(s, &mut got).unwrap();
    assert_eq!(got[..n], data[..n]);
    assert!(
        n >= 256 << 10,
        "{n} bytes in the first round trip after the idle (cwnd {cwnd})"
    );
    let info = p.a.recovery_info(c).unwrap();
    assert!(
        info.cwnd >= cwnd,
        "the window went from {cwnd} to {}",
        info.cwnd
    );
    let after = info.bbr.unwrap();
    assert_ne!(after.mode, stack::BbrMode::ProbeRtt, "{after:?}");
    assert_eq!(after.min_rtt_us, RTT_MS * 1000, "{after:?}");
}

/// Congestion control per socket (`TCP_CONGESTION`): set before connecting, it is the
/// connection's; set on a listener, the accepted connections'; set on a connected socket, it
/// takes over from then on, the data still arriving intact; a datagram socket has none.
#[test]
fn congestion_control_per_socket_before_connect_on_a_listener_and_mid_transfer() {
    let mut l = link(LATENCY_MS, 11);
    l.loss = 0.01;
    let mut p = Pair::with_configs(
        l,
        config(true),
        config(true),
        &["192.0.2.2/24"],
        &["192.0.2.1/24"],
    );
    let listener = p.b.socket(Family::V4, SocketType::Stream);
    p.b.bind(listener, addr(SERVER)).unwrap();
    p.b.listen(listener, 8).unwrap();
    let now = p.now();
    p.b.set_congestion_control(listener, CongestionControl::Bbr, now)
        .unwrap();
    let c = p.a.socket(Family::V4, SocketType::Stream);
    assert_eq!(p.a.congestion_control(c), Ok(CongestionControl::Cubic));
    p.a.set_congestion_control(c, CongestionControl::Bbr, now)
        .unwrap();
    p.a.connect(c, addr(SERVER), ConnectOptions::default(), now)
        .unwrap();
    let mut s = None;
    p.drive_until(100_000, |p| {
        s = p.b.accept(listener).ok().map(|(s, _)| s);
        s.is_some()
    });
    let s = s.unwrap();
    assert_eq!(p.b.congestion_control(s), Ok(CongestionControl::Bbr));
    // Both ends run BBR: data each way shows its model.
    a_to_b(&mut p, c, s, &pattern(200_000));
    assert!(p.a.recovery_info(c).unwrap().bbr.is_some());
    p.b.send(s, &pattern(100_000)).unwrap();
    p.drive_until(100_000, |p| {
        p.b.recovery_info(s).unwrap().bbr.is_some_and(|b| b.bw > 0)
    });
    // A switches to CUBIC mid-transfer (under 1% loss): the rest arrives intact.
    a_to_b_each(&mut p, c, s, &pattern(2_000_000), |p, got| {
        if got > 500_000 && p.a.congestion_control(c) != Ok(CongestionControl::Cubic) {
            let now = p.now();
            p.a.set_congestion_control(c, CongestionControl::Cubic, now)
                .unwrap();
        }
    });
    let i = p.a.recovery_info(c).unwrap();
    assert!(i.bbr.is_none(), "{i:?}");
    assert_eq!(p.a.congestion_control(c), Ok(CongestionControl::Cubic));
    let u = p.a.socket(Family::V4, SocketType::Datagram);
    assert_eq!(
        p.a.set_congestion_control(u, CongestionControl::Bbr, now),
        Err(stack::SocketOptionError::NotStream)
    );
}

/// Between two stacks on a lossless link, a bulk transfer sends nothing again, with either
/// congestion control. (The receiver's smoltcp rounds its window down to the window scale as
/// data comes in, moving the right edge it takes data up to back by up to 31 bytes; a sender
/// that had filled the window it was offered lost the end of its last segment and repaired it
/// as a loss: 2 and 31 SACK recoveries in 64 MB. The layer advertises one unit less.)
#[test]
fn a_lossless_transfer_between_two_stacks_sends_nothing_again() {
    for cc in [CongestionControl::Cubic, CongestionControl::Bbr] {
        let (mut p, c, s) = connected_with(link(1, 1), cc);
        a_to_b(&mut p, c, s, &pattern(24 << 20));
        let r = p.a.recovery_counters();
        assert_eq!(r.TcpRetransSegs, 0, "{cc:?}: {r:?}");
        assert_eq!(r.TCPSackRecovery, 0, "{cc:?}: {r:?}");
    }
}

/// CUBIC after an idle period (RFC 5681 §4.1, Linux's `tcp_slow_start_after_idle`): silent for
/// less than a retransmission timeout, the connection sends its window's worth at once; silent
/// for longer (ten seconds, virtual), the first round trip carries the initial window only.
/// (The layer cut its window, but smoltcp kept the last window an acknowledgement had let it
/// see and sent a megabyte at once: the layer now hands smoltcp the peer's acknowledgement
/// again with the restarted window.)
#[test]
fn cubic_restarts_from_the_initial_window_after_an_idle_period() {
    let (mut p, c, s) = connected_with(link(LATENCY_MS, 5), CongestionControl::Cubic);
    let data = pattern(4_000_000);
    // What B has a little more than one round trip after A writes `data` (all of it then).
    let first_round = |p: &mut Pair| {
        let sent = p.a.send(c, &data).unwrap();
        p.run_for(Duration::from_millis(RTT_MS + RTT_MS / 4));
        let mut got = vec![0u8; sent];
        let n = p.b.recv(s, &mut got).unwrap();
        assert_eq!(got[..n], data[..n]);
        // The rest, so that the next write starts from an empty flight.
        let mut buf = vec![0u8; 1 << 16];
        let mut left = sent - n;
        while left > 0 {
            if let Ok(m) = p.b.recv(s, &mut buf) {
                left -= m;
            }
            assert!(p.step(), "stalled");
        }
        n
    };
    a_to_b(&mut p, c, s, &data);
    p.run_for(Duration::from_millis(RTT_MS * 2));
    let cwnd = p.a.recovery_info(c).unwrap().cwnd;
    assert!(cwnd > 500_000, "the window grew: {cwnd}");
    // Silent for less than a timeout (the RTO is at least 220 ms here).
    p.run_for(Duration::from_millis(100));
    let short = first_round(&mut p);
    assert!(short >= 256 << 10, "{short} bytes after 100 ms of silence");
    let crossed = p.link.delivered[1];
    p.run_for(Duration::from_secs(10));
    assert_eq!(
        p.link.delivered[1], crossed,
        "A says nothing during the silence (the restart is between the layer and smoltcp)"
    );
    let info = p.a.recovery_info(c).unwrap();
    assert_eq!(info.cwnd, 10 * MSS as u32, "restarted: {info:?}");
    let long = first_round(&mut p);
    assert!(
        long <= 10 * MSS,
        "{long} bytes in the first round trip after 10 s of silence"
    );
    assert!(long > 0);
}
