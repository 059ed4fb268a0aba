//! Two stacks joined by a simulated link on a virtual clock: latency, loss and MTU, seeded.
//!
//! For tests and experiments that need no root and no kernel: [`Pair::step`] polls both stacks
//! and moves the clock to the next thing that happens (a packet's arrival or a timer), so a
//! 20 ms link costs no wall-clock time and every run with the same seed is the same run.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smoltcp::time::Instant;

use crate::addr::Cidr;
use crate::config::{InterfaceConfig, StackConfig};
use crate::ids::IfaceId;
use crate::iface::PacketIo;
use crate::stack::Stack;

/// The link between the two stacks.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// One-way delay.
    pub latency: Duration,
    /// Probability that a packet is lost, in each direction.
    pub loss: f64,
    /// Largest packet the link carries; larger ones are dropped.
    pub mtu: usize,
    /// Seed of the loss decisions.
    pub seed: u64,
    /// Probability that a packet is held back one more `latency`, so that the packets sent
    /// meanwhile overtake it.
    pub reorder: f64,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
    /// Both interfaces have segmentation offload, and the link carries their 64 KB TCP
    /// segments whole (as between two offload devices; nothing cuts them).
    pub offload: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(1),
            loss: 0.0,
            mtu: 1500,
            seed: 1,
            reorder: 0.0,
            duplicate: 0.0,
            offload: false,
        }
    }
}

/// A packet on its way, and when it arrives.
#[derive(Debug)]
struct InFlight {
    at: Instant,
    packet: Vec<u8>,
}

/// The wire: a queue per direction.
pub struct Link {
    config: LinkConfig,
    rng: StdRng,
    /// `queues[0]` carries packets towards side A, `queues[1]` towards side B.
    queues: [VecDeque<InFlight>; 2],
    now: Instant,
    /// Packets dropped by loss or MTU, per direction (towards A, towards B).
    pub dropped: [u64; 2],
    /// Packets delivered, per direction (towards A, towards B).
    pub delivered: [u64; 2],
    /// Packets handed over in a buffer the sender keeps too
    /// ([`PacketIo::send_shared`](crate::PacketIo::send_shared): a segment the loss recovery
    /// layer holds instead of copying), per direction (towards A, towards B).
    pub shared: [u64; 2],
    /// A hook that sees (and may drop, by returning false) every packet towards side B.
    filter_to_b: Option<Filter>,
    /// The same towards side A.
    filter_to_a: Option<Filter>,
}

/// Sees a packet in flight, may change it (a middlebox rewriting), and returns whether to
/// deliver it.
pub type Filter = Box<dyn FnMut(&mut Vec<u8>) -> bool + Send>;

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("config", &self.config)
            .field("now", &self.now)
            .field("dropped", &self.dropped)
            .field("delivered", &self.delivered)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Put a packet on its way towards side `to`, arriving at `at` (the queue stays in arrival
    /// order).
    fn queue(&mut self, to: usize, at: Instant, packet: Vec<u8>) {
        let q = &mut self.queues[to];
        let pos = q.iter().rposition(|p| p.at <= at).map_or(0, |i| i + 1);
        q.insert(pos, InFlight { at, packet });
    }
}

struct End<'a> {
    link: &'a mut Link,
    /// 0 for side A, 1 for side B.
    side: usize,
}

impl PacketIo for End<'_> {
    fn recv(&mut self, _iface: IfaceId, buf: &mut [u8]) -> Option<usize> {
        let queue = &mut self.link.queues[self.side];
        if queue.front().is_some_and(|p| p.at <= self.link.now) {
            let p = queue.pop_front()?;
            let n = p.packet.len().min(buf.len());
            buf[..n].copy_from_slice(&p.packet[..n]);
            self.link.delivered[self.side] += 1;
            return Some(n);
        }
        None
    }

    fn send_shared(&mut self, iface: IfaceId, packet: &crate::SharedPacket, len: usize) {
        self.link.shared[1 - self.side] += 1;
        self.send(iface, &packet[..len.min(packet.len())]);
    }

    fn send(&mut self, _iface: IfaceId, packet: &[u8]) {
        let to = 1 - self.side;
        let link = &mut *self.link;
        let filter = if to == 1 {
            &mut link.filter_to_b
        } else {
            &mut link.filter_to_a
        };
        let mut packet = packet.to_vec();
        let keep = filter.as_mut().is_none_or(|f| f(&mut packet));
        let lost = link.config.loss > 0.0 && link.rng.random_bool(link.config.loss.clamp(0.0, 1.0));
        let largest = if link.config.offload {
            crate::offload::MAX_PACKET
        } else {
            link.config.mtu
        };
        if !keep || lost || packet.len() > largest {
            link.dropped[to] += 1;
            return;
        }
        let latency = smoltcp::time::Duration::from_micros(link.config.latency.as_micros() as u64);
        // The reordering and duplication draws are made only when asked for, so that a seed
        // gives the same losses with them off as before they existed.
        let held =
            link.config.reorder > 0.0 && link.rng.random_bool(link.config.reorder.clamp(0.0, 1.0));
        let twice = link.config.duplicate > 0.0
            && link.rng.random_bool(link.config.duplicate.clamp(0.0, 1.0));
        let at = link.now + latency + if held { latency } else { Default::default() };
        if twice {
            link.queue(to, at, packet.clone());
        }
        link.queue(to, at, packet);
    }
}

impl std::fmt::Debug for End<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("End").field("side", &self.side).finish()
    }
}

/// Two stacks, A and B, one interface each, on one link.
#[derive(Debug)]
pub struct Pair {
    /// Side A.
    pub a: Stack,
    /// Side B.
    pub b: Stack,
    /// The link.
    pub link: Link,
    /// The seed everything was made from (print it when a test fails).
    pub seed: u64,
}

impl Pair {
    /// A pair with one interface each: A has `a_addrs`, B has `b_addrs`; each side's interface
    /// carries both default routes. The seed is taken from `CONNECTX_SIM_SEED` when set.
    pub fn new(link: LinkConfig, a_addrs: &[&str], b_addrs: &[&str]) -> Pair {
        Pair::with_configs(
            link,
            StackConfig::default(),
            StackConfig::default(),
            a_addrs,
            b_addrs,
        )
    }

    /// Like [`Pair::new`] with stack configurations (their seeds are replaced by ones derived
    /// from the link's seed, so the whole run replays).
    pub fn with_configs(
        mut link: LinkConfig,
        mut a_config: StackConfig,
        mut b_config: StackConfig,
        a_addrs: &[&str],
        b_addrs: &[&str],
    ) -> Pair {
        if let Some(seed) = std::env::var("CONNECTX_SIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            link.seed = seed;
        }
        let seed = link.seed;
        a_config.random_seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa;
        b_config.random_seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xb;
        let offload = link.offload;
        let make = |config: StackConfig, name: &str, addrs: &[&str], mtu: usize| {
            let mut stack = Stack::new(config);
            let mut ic = InterfaceConfig::new(name).mtu(mtu).offload(offload);
            for a in addrs {
                ic = ic.address(a.parse::<Cidr>().expect("a valid CIDR in a test"));
            }
            let id = stack
                .add_interface(ic)
                .expect("a valid interface in a test");
            stack
                .add_route(Cidr::default_v4(), id)
                .expect("interface exists");
            stack
                .add_route(Cidr::default_v6(), id)
                .expect("interface exists");
            stack
        };
        let mtu = link.mtu;
        Pair {
            a: make(a_config, "simA", a_addrs, mtu),
            b: make(b_config, "simB", b_addrs, mtu),
            link: Link {
                rng: StdRng::seed_from_u64(seed),
                config: link,
                queues: [VecDeque::new(), VecDeque::new()],
                now: Instant::ZERO,
                dropped: [0; 2],
                delivered: [0; 2],
                shared: [0; 2],
                filter_to_a: None,
                filter_to_b: None,
            },
            seed,
        }
    }

    /// The virtual time now.
    pub fn now(&self) -> Instant {
        self.link.now
    }

    /// Set a filter on packets towards B (`true` delivers): a middlebox.
    pub fn filter_to_b(&mut self, f: impl FnMut(&mut Vec<u8>) -> bool + Send + 'static) {
        self.link.filter_to_b = Some(Box::new(f));
    }

    /// Set a filter on packets towards A.
    pub fn filter_to_a(&mut self, f: impl FnMut(&mut Vec<u8>) -> bool + Send + 'static) {
        self.link.filter_to_a = Some(Box::new(f));
    }

    /// Put a packet on the wire towards B, arriving now (a forged or replayed segment).
    pub fn inject_to_b(&mut self, packet: Vec<u8>) {
        let at = self.link.now;
        self.link.queues[1].push_back(InFlight { at, packet });
    }

    /// Put a packet on the wire towards A, arriving now.
    pub fn inject_to_a(&mut self, packet: Vec<u8>) {
        let at = self.link.now;
        self.link.queues[0].push_back(InFlight { at, packet });
    }

    /// Change the link's loss probability.
    pub fn set_loss(&mut self, loss: f64) {
        self.link.config.loss = loss;
    }

    /// Poll both stacks at the current time, then advance the clock to the next event. Returns
    /// false when nothing is left to happen (no packet in flight, no timer).
    pub fn step(&mut self) -> bool {
        self.step_until(None)
    }

    /// [`Pair::step`], but the clock stops at `limit` (events later than it wait).
    fn step_until(&mut self, limit: Option<Instant>) -> bool {
        let now = self.link.now;
        let mut activity = false;
        loop {
            let a = self.a.poll(
                now,
                &mut End {
                    link: &mut self.link,
                    side: 0,
                },
            );
            let b = self.b.poll(
                now,
                &mut End {
                    link: &mut self.link,
                    side: 1,
                },
            );
            activity |= a.activity || b.activity;
            let due = self
                .link
                .queues
                .iter()
                .any(|q| q.front().is_some_and(|p| p.at <= now));
            if !(a.more_pending || b.more_pending || due) {
                break;
            }
        }
        if activity {
            // Something happened: let the caller act at this same instant before time moves on
            // (an application answers as soon as its data arrives).
            return true;
        }
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for q in &self.link.queues {
            if let Some(p) = q.front() {
                consider(p.at);
            }
        }
        for stack in [&mut self.a, &mut self.b] {
            if let Some(d) = stack.poll_delay(now) {
                consider(now + smoltcp::time::Duration::from_micros(d.as_micros() as u64));
            }
        }
        if let (Some(limit), Some(t)) = (limit, next) {
            next = Some(t.min(limit));
        }
        match next {
            Some(t) => {
                // Always move forward, so a zero delay cannot livelock.
                self.link.now = if t > now {
                    t
                } else {
                    now + smoltcp::time::Duration::from_micros(1)
                };
                true
            }
            None => false,
        }
    }

    /// A TCP connection from A to a listener B opens on `server` (IPv4, backlog 8): (A's
    /// socket, B's accepted one), once both ends are established.
    #[track_caller]
    pub fn tcp_connection(
        &mut self,
        server: std::net::SocketAddr,
    ) -> (crate::ids::SocketId, crate::ids::SocketId) {
        use crate::{ConnectOptions, ConnectStatus, Family, SocketType};
        let l = self.b.socket(Family::V4, SocketType::Stream);
        self.b.bind(l, server).expect("a free port in a test");
        self.b.listen(l, 8).expect("a bound socket listens");
        let c = self.a.socket(Family::V4, SocketType::Stream);
        let now = self.now();
        self.a
            .connect(c, server, ConnectOptions::default(), now)
            .expect("a connect in a test");
        self.drive_until(100_000, |p| {
            p.a.connect_status(c) == Some(ConnectStatus::Connected)
        });
        let mut s = None;
        self.drive_until(100_000, |p| {
            s = p.b.accept(l).ok().map(|(s, _)| s);
            s.is_some()
        });
        (c, s.expect("accepted"))
    }

    /// Step until `done` holds, at most `max_steps` times. Panics (printing the seed) on
    /// livelock or when the pair goes idle first.
    #[track_caller]
    pub fn drive_until(&mut self, max_steps: usize, mut done: impl FnMut(&mut Pair) -> bool) {
        for _ in 0..max_steps {
            if done(self) {
                return;
            }
            if !self.step() {
                // Idle: nothing more will happen. One last look, after the final poll.
                if done(self) {
                    return;
                }
                panic!(
                    "simulation went idle before the condition held (seed {})",
                    self.seed
                );
            }
        }
        panic!(
            "condition not reached in {max_steps} steps (seed {}, at {})",
            self.seed, self.link.now
        );
    }

    /// Advance the clock by `d`, polling as events come.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.link.now + smoltcp::time::Duration::from_micros(d.as_micros() as u64);
        while self.link.now < end {
            if !self.step_until(Some(end)) {
                self.link.now = end;
            }
        }
    }
}

/// A TCP segment's header fields, for tests and experiments that look at or forge packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpView {
    /// Source.
    pub src: std::net::SocketAddr,
    /// Destination.
    pub dst: std::net::SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub flags: u8,
    /// Payload length.
    pub payload_len: usize,
}

/// The TCP header of an IPv4 or IPv6 packet; `None` for anything else.
pub fn tcp_view(pkt: &[u8]) -> Option<TcpView> {
    let t = crate::wire::parse(pkt)?;
    Some(TcpView {
        src: t.src,
        dst: t.dst,
        seq: t.seq,
        ack: t.ack,
        flags: t.flags,
        payload_len: t.payload(pkt).len(),
    })
}

/// The TCP options of a packet.
pub fn tcp_options(pkt: &[u8]) -> Vec<u8> {
    crate::wire::parse(pkt)
        .map(|t| t.options(pkt).to_vec())
        .unwrap_or_default()
}

/// The body of option `kind` in TCP options `opts` (as [`tcp_options`] gives them), if present.
pub fn tcp_option(opts: &[u8], kind: u8) -> Option<&[u8]> {
    crate::wire::find_option(opts, kind)
}

/// Set a segment's acknowledgement number (checksums fixed). Returns false if it is not TCP.
pub fn set_tcp_ack(pkt: &mut [u8], ack: u32) -> bool {
    let Some(t) = crate::wire::parse(pkt) else {
        return false;
    };
    crate::wire::set_seq_ack(pkt, &t, t.seq, ack, 0);
    true
}

/// Forge a TCP segment with the given raw `options` (padded to a multiple of four) and payload.
#[allow(clippy::too_many_arguments)]
pub fn forge_tcp(
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    options: &[u8],
    payload: &[u8],
) -> Option<Vec<u8>> {
    let mut plain = vec![0u8; 60];
    let n = crate::wire::build(src, dst, seq, ack, flags, 65535, &[], &mut plain)?;
    let t = crate::wire::parse(&plain[..n])?;
    let mut out = vec![0u8; 40 + 60 + payload.len()];
    let m = crate::wire::rebuild(&plain[..n], &t, options, payload, &mut out)?;
    out.truncate(m);
    Some(out)
}

/// Replace a segment's TCP options with `options` (padded to a multiple of four; checksums
/// fixed), keeping its header fields and payload: a middlebox that rewrites options. Returns
/// false if it is not TCP or the options do not fit.
pub fn set_tcp_options(pkt: &mut Vec<u8>, options: &[u8]) -> bool {
    let Some(t) = crate::wire::parse(pkt) else {
        return false;
    };
    let payload = t.payload(pkt).to_vec();
    let mut out = vec![0u8; pkt.len() + 40];
    match crate::wire::rebuild(pkt, &t, options, &payload, &mut out) {
        Some(n) => {
            out.truncate(n);
            *pkt = out;
            true
        }
        None => false,
    }
}

/// Keep only the first `keep` bytes of a segment's payload (checksums fixed): a middlebox, or a
/// server that takes only part of a SYN's data. Returns false if it is not TCP.
pub fn truncate_tcp_payload(pkt: &mut Vec<u8>, keep: usize) -> bool {
    let Some(t) = crate::wire::parse(pkt) else {
        return false;
    };
    let payload = t.payload(pkt);
    let payload = payload[..keep.min(payload.len())].to_vec();
    let opts = t.options(pkt).to_vec();
    let mut out = vec![0u8; pkt.len()];
    match crate::wire::rebuild(pkt, &t, &opts, &payload, &mut out) {
        Some(n) => {
            out.truncate(n);
            *pkt = out;
            true
        }
        None => false,
    }
}
