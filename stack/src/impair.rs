//! A packet-path decorator that delays, jitters, loses, reorders and duplicates packets, in both
//! directions, seeded, on the stack's clock.
//!
//! ```text
//!   Stack::poll ── send ──> Impaired ── outgoing queue (per interface) ── due ──> inner.send
//!               <── recv ──          <── incoming queue (per interface) <── inner.recv
//! ```
//!
//! Nothing sleeps: packets wait in timed queues and leave when a later call finds them due —
//! [`PacketIo::advance`], [`PacketIo::flush`] and `send` release outgoing packets, `recv`
//! returns incoming ones. [`PacketIo::next_due`] tells the caller when to poll next.
//!
//! # Per-packet decisions
//!
//! Each queue (one per direction and interface) has its own random generator, seeded from
//! [`Impairment::seed`], the interface and the direction, so the decisions about a queue's
//! packets depend only on that queue's sequence of packets. For every packet the generator
//! gives exactly four numbers, always in this order and whatever the outcome: loss, jitter,
//! duplicate, reorder. Changing one probability therefore changes only that decision; the
//! n-th packet of a queue keeps its jitter, duplication and reordering fate.
//!
//! - **Loss**: dropped with probability [`Impairment::loss`].
//! - **Delay and jitter**: due at `now + delay + u`, `u` uniform in `[0, jitter]` (whole
//!   microseconds), but never before the due time of the queue's previous packet: jitter alone
//!   does not reorder packets, it bunches them, as on a real path whose queueing delay varies.
//! - **Duplicate**: with probability [`Impairment::duplicate`], a second copy with the same due
//!   time, right behind the first.
//! - **Reorder**: with probability [`Impairment::reorder`], the packet is held back by an
//!   extra `max(delay, 1 ms) + jitter` beyond its due time. Packets of the same queue that come
//!   due within that hold overtake it; the packets after it keep their own schedule (their
//!   due time is bounded below by the held packet's *ordinary* due time, not its held one). A
//!   held packet that nothing follows closely is just late.
//!
//! Queues hold at most [`QUEUE_LIMIT`] packets; beyond that packets are dropped and counted
//! ([`ImpairStats::overflow`]), like a router's tail drop.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smoltcp::time::{Duration as SmolDuration, Instant};

use crate::ids::IfaceId;
use crate::iface::PacketIo;

/// Most packets one queue (one direction of one interface) holds; more are dropped.
pub const QUEUE_LIMIT: usize = 10_000;
/// Most packets one `recv` call pulls from the inner path into the incoming queue.
pub const RECV_PULL_LIMIT: usize = 256;
/// Longest [`Impairment::delay`] and [`Impairment::jitter`] accepted.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Spare packet buffers kept for reuse.
const POOL_LIMIT: usize = 256;

/// What to do to packets, in each direction of each interface.
///
/// The default does nothing ([`Impairment::is_none`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Impairment {
    /// One-way delay, applied in each direction: a round trip gains twice this.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]`, per packet. Does not reorder packets by itself.
    pub jitter: Duration,
    /// Probability in `0..=1` that a packet is lost.
    pub loss: f64,
    /// Probability in `0..=1` that a packet is held back so that later ones overtake it.
    pub reorder: f64,
    /// Probability in `0..=1` that a packet is delivered twice.
    pub duplicate: f64,
    /// Seed of the random decisions: the same seed and packets give the same decisions.
    pub seed: u64,
}

/// An [`Impairment`] that cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ImpairmentError {
    /// `loss`, `reorder` or `duplicate` is NaN, infinite, negative or above 1.
    #[error("impairment `{field}` must be a probability between 0 and 1, got {value}")]
    Probability {
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// `delay` or `jitter` is longer than [`MAX_DELAY`].
    #[error("impairment `{field}` must be at most {max:?}, got {value:?}")]
    TooLong {
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: Duration,
        /// The limit, [`MAX_DELAY`].
        max: Duration,
    },
}

impl Impairment {
    /// Check that the probabilities are in `0..=1` and the durations at most [`MAX_DELAY`].
    ///
    /// # Errors
    ///
    /// [`ImpairmentError::Probability`] for the first of `loss`, `reorder`, `duplicate` that is
    /// not a finite number in `0..=1`; [`ImpairmentError::TooLong`] for `delay` or `jitter`
    /// above [`MAX_DELAY`].
    pub fn validate(&self) -> Result<(), ImpairmentError> {
        for (field, value) in [
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
        ] {
            if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
                return Err(ImpairmentError::Probability { field, value });
            }
        }
        for (field, value) in [("delay", self.delay), ("jitter", self.jitter)] {
            if value > MAX_DELAY {
                return Err(ImpairmentError::TooLong {
                    field,
                    value,
                    max: MAX_DELAY,
                });
            }
        }
        Ok(())
    }

    /// Whether this does nothing to packets: no delay, jitter, loss, reordering or duplication.
    pub fn is_none(&self) -> bool {
        self.delay.is_zero()
            && self.jitter.is_zero()
            && self.loss == 0.0
            && self.reorder == 0.0
            && self.duplicate == 0.0
    }
}

/// What an [`Impaired`] path has done so far, over all interfaces and both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairStats {
    /// Packets dropped by [`Impairment::loss`].
    pub dropped_loss: u64,
    /// Extra copies queued by [`Impairment::duplicate`].
    pub duplicated: u64,
    /// Packets held back by [`Impairment::reorder`] (whether or not another overtook them).
    pub reordered: u64,
    /// Packets dropped because their queue held [`QUEUE_LIMIT`] packets.
    pub overflow: u64,
    /// Packets waiting in the queues now.
    pub held: u64,
}

/// A [`PacketIo`] that applies an [`Impairment`] to the packets of `inner`, both ways.
///
/// See the [module documentation](self) for what each impairment does exactly. With an
/// impairment that [`is_none`](Impairment::is_none), `recv` and `send` forward to `inner` after
/// one branch.
pub struct Impaired<P> {
    inner: P,
    config: Impairment,
    /// `!config.is_none()`.
    active: bool,
    params: Params,
    /// The time of the last `advance`.
    now: Instant,
    /// Indexed by interface id.
    ifaces: Vec<Lanes>,
    /// Spare buffers of released packets.
    pool: Vec<Vec<u8>>,
    stats: ImpairStats,
}

/// The impairment in the units the queues use.
#[derive(Debug, Clone, Copy)]
struct Params {
    delay: SmolDuration,
    jitter_us: u64,
    /// Extra hold of a reordered packet: `max(delay, 1 ms) + jitter`.
    reorder_hold: SmolDuration,
    loss: f64,
    duplicate: f64,
    reorder: f64,
}

/// The two queues of one interface.
#[derive(Debug)]
struct Lanes {
    outgoing: Lane,
    incoming: Lane,
}

/// One direction of one interface.
#[derive(Debug)]
struct Lane {
    /// Ordered by due time; equal due times in arrival order.
    queue: VecDeque<Held>,
    /// The ordinary due time of the latest packet: the next one is not due earlier.
    floor: Instant,
    rng: StdRng,
}

#[derive(Debug)]
struct Held {
    due: Instant,
    packet: Vec<u8>,
}

/// The four numbers drawn for each packet, in this order.
struct Draws {
    loss: f64,
    jitter: f64,
    duplicate: f64,
    reorder: f64,
}

impl<P: PacketIo> Impaired<P> {
    /// Apply `impairment` to the packets of `inner`.
    ///
    /// # Errors
    ///
    /// The error of [`Impairment::validate`].
    pub fn new(inner: P, impairment: Impairment) -> Result<Self, ImpairmentError> {
        impairment.validate()?;
        let delay = to_smol(impairment.delay);
        let jitter = to_smol(impairment.jitter);
        let params = Params {
            delay,
            jitter_us: jitter.total_micros(),
            reorder_hold: delay.max(SmolDuration::from_millis(1)) + jitter,
            loss: impairment.loss,
            duplicate: impairment.duplicate,
            reorder: impairment.reorder,
        };
        Ok(Impaired {
            inner,
            active: !impairment.is_none(),
            config: impairment,
            params,
            now: Instant::ZERO,
            ifaces: Vec::new(),
            pool: Vec::new(),
            stats: ImpairStats::default(),
        })
    }
}

impl<P> Impaired<P> {
    /// The impairment applied.
    pub fn impairment(&self) -> &Impairment {
        &self.config
    }

    /// What has been done so far, and how many packets wait now.
    pub fn stats(&self) -> ImpairStats {
        let held = self
            .ifaces
            .iter()
            .map(|l| l.outgoing.queue.len() + l.incoming.queue.len())
            .sum::<usize>();
        ImpairStats {
            held: held as u64,
            ..self.stats
        }
    }

    /// The wrapped packet path.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped packet path, mutably.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// The wrapped packet path; packets still held are dropped.
    pub fn into_inner(self) -> P {
        self.inner
    }
}

/// The queues of `iface`, made on first use.
fn lanes_of(ifaces: &mut Vec<Lanes>, seed: u64, iface: IfaceId) -> &mut Lanes {
    while ifaces.len() <= iface.0 {
        let n = ifaces.len();
        ifaces.push(Lanes {
            outgoing: Lane::new(lane_seed(seed, n, 0)),
            incoming: Lane::new(lane_seed(seed, n, 1)),
        });
    }
    &mut ifaces[iface.0]
}

impl<P: PacketIo> Impaired<P> {
    /// Hand every due outgoing packet of `iface` to the inner path, in order.
    fn release(&mut self, iface: IfaceId) {
        let Some(lanes) = self.ifaces.get_mut(iface.0) else {
            return;
        };
        while let Some(held) = lanes.outgoing.pop_due(self.now) {
            self.inner.send(iface, &held);
            recycle(&mut self.pool, held);
        }
    }

    fn release_all(&mut self) {
        for n in 0..self.ifaces.len() {
            self.release(IfaceId(n));
        }
    }
}

impl<P: PacketIo> PacketIo for Impaired<P> {
    fn recv(&mut self, iface: IfaceId, buf: &mut [u8]) -> Option<usize> {
        if !self.active {
            return self.inner.recv(iface, buf);
        }
        let (now, params) = (self.now, self.params);
        // Everything the inner path has now goes through the same decisions as a send.
        for _ in 0..RECV_PULL_LIMIT {
            let Some(n) = self.inner.recv(iface, buf) else {
                break;
            };
            let packet = &buf[..n.min(buf.len())];
            let Impaired {
                ifaces,
                pool,
                stats,
                config,
                ..
            } = self;
            lanes_of(ifaces, config.seed, iface)
                .incoming
                .admit(packet, now, &params, pool, stats);
        }
        let held = self.ifaces.get_mut(iface.0)?.incoming.pop_due(now)?;
        let n = held.len().min(buf.len());
        buf[..n].copy_from_slice(&held[..n]);
        recycle(&mut self.pool, held);
        Some(n)
    }

    fn send(&mut self, iface: IfaceId, packet: &[u8]) {
        if !self.active {
            return self.inner.send(iface, packet);
        }
        let (now, params) = (self.now, self.params);
        let Impaired {
            ifaces,
            pool,
            stats,
            config,
            ..
        } = self;
        lanes_of(ifaces, config.seed, iface)
            .outgoing
            .admit(packet, now, &params, pool, stats);
        self.release(iface);
    }

    fn advance(&mut self, now: Instant) {
        self.now = now;
        self.inner.advance(now);
        self.release_all();
    }

    fn next_due(&self) -> Option<Instant> {
        let inner = self.inner.next_due();
        if !self.active {
            return inner;
        }
        self.ifaces
            .iter()
            .flat_map(|l| [&l.outgoing, &l.incoming])
            .filter_map(|lane| lane.queue.front().map(|h| h.due))
            .chain(inner)
            .min()
    }

    fn flush(&mut self) {
        self.release_all();
        self.inner.flush();
    }
}

impl<P: fmt::Debug> fmt::Debug for Impaired<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Impaired")
            .field("inner", &self.inner)
            .field("impairment", &self.config)
            .field("now", &self.now)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Lane {
    fn new(seed: u64) -> Lane {
        Lane {
            queue: VecDeque::new(),
            floor: Instant::ZERO,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Decide the fate of `packet`, arriving at `now`, and queue it (and its copy).
    fn admit(
        &mut self,
        packet: &[u8],
        now: Instant,
        params: &Params,
        pool: &mut Vec<Vec<u8>>,
        stats: &mut ImpairStats,
    ) {
        // Always four draws, in this order, whatever the outcome (see the module docs).
        let draws = Draws {
            loss: self.rng.random(),
            jitter: self.rng.random(),
            duplicate: self.rng.random(),
            reorder: self.rng.random(),
        };
        // `random::<f64>()` is in [0, 1): probability 0 never fires, 1 always does.
        if draws.loss < params.loss {
            stats.dropped_loss += 1;
            return;
        }
        let jitter_us =
            ((draws.jitter * (params.jitter_us as f64 + 1.0)) as u64).min(params.jitter_us);
        let due = (now + params.delay + SmolDuration::from_micros(jitter_us)).max(self.floor);
        self.floor = due;
        let due = if draws.reorder < params.reorder {
            due + params.reorder_hold
        } else {
            due
        };
        if !self.insert(due, packet, pool) {
            stats.overflow += 1;
            return;
        }
        if draws.reorder < params.reorder {
            stats.reordered += 1;
        }
        if draws.duplicate < params.duplicate {
            if self.insert(due, packet, pool) {
                stats.duplicated += 1;
            } else {
                stats.overflow += 1;
            }
        }
    }

    /// Queue a copy of `packet` behind every packet due at or before `due`; false when full.
    fn insert(&mut self, due: Instant, packet: &[u8], pool: &mut Vec<Vec<u8>>) -> bool {
        if self.queue.len() >= QUEUE_LIMIT {
            return false;
        }
        let mut buf = pool.pop().unwrap_or_default();
        buf.extend_from_slice(packet);
        // Nearly always the tail, so search from the back.
        let at = self
            .queue
            .iter()
            .rposition(|h| h.due <= due)
            .map_or(0, |i| i + 1);
        self.queue.insert(at, Held { due, packet: buf });
        true
    }

    /// The first packet, if it is due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.queue.front()?.due <= now {
            self.queue.pop_front().map(|h| h.packet)
        } else {
            None
        }
    }
}

/// Keep `buf` for a later packet, unless enough are kept already.
fn recycle(pool: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    if pool.len() < POOL_LIMIT {
        buf.clear();
        pool.push(buf);
    }
}

/// The seed of one queue: distinct per interface and direction (0 out, 1 in).
fn lane_seed(seed: u64, iface: usize, direction: u64) -> u64 {
    let lane = ((iface as u64) << 1) | direction;
    seed.wrapping_add(lane.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn to_smol(d: Duration) -> SmolDuration {
    SmolDuration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inner path: per-interface queues of packets to receive, and a log of what was sent.
    #[derive(Debug, Default)]
    struct Fake {
        incoming: Vec<VecDeque<Vec<u8>>>,
        sent: Vec<(IfaceId, Vec<u8>)>,
        flushed: usize,
        advanced: Option<Instant>,
        due: Option<Instant>,
    }

    impl Fake {
        fn arrive(&mut self, iface: IfaceId, packet: Vec<u8>) {
            if self.incoming.len() <= iface.0 {
                self.incoming.resize_with(iface.0 + 1, VecDeque::new);
            }
            self.incoming[iface.0].push_back(packet);
        }
    }

    impl PacketIo for Fake {
        fn recv(&mut self, iface: IfaceId, buf: &mut [u8]) -> Option<usize> {
            let p = self.incoming.get_mut(iface.0)?.pop_front()?;
            buf[..p.len()].copy_from_slice(&p);
            Some(p.len())
        }
        fn send(&mut self, iface: IfaceId, packet: &[u8]) {
            self.sent.push((iface, packet.to_vec()));
        }
        fn advance(&mut self, now: Instant) {
            self.advanced = Some(now);
        }
        fn next_due(&self) -> Option<Instant> {
            self.due
        }
        fn flush(&mut self) {
            self.flushed += 1;
        }
    }

    const I0: IfaceId = IfaceId(0);

    fn pkt(n: u32) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    fn num(p: &[u8]) -> u32 {
        u32::from_be_bytes(p[..4].try_into().unwrap())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at_ms(n: i64) -> Instant {
        Instant::from_millis(n)
    }

    #[track_caller]
    fn impaired(imp: Impairment) -> Impaired<Fake> {
        Impaired::new(Fake::default(), imp).unwrap()
    }

    /// Everything received on `iface` now.
    fn drain(io: &mut Impaired<Fake>, iface: IfaceId) -> Vec<u32> {
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while let Some(n) = io.recv(iface, &mut buf) {
            got.push(num(&buf[..n]));
        }
        got
    }

    /// Send `count` numbered packets, one per `gap_us`, and advance until all are out; the
    /// numbers in the order the inner path got them.
    fn send_run(io: &mut Impaired<Fake>, count: u32, gap_us: i64) -> Vec<u32> {
        let mut t = 0;
        for n in 0..count {
            io.advance(Instant::from_micros(t));
            io.send(I0, &pkt(n));
            io.flush();
            t += gap_us;
        }
        while let Some(due) = io.next_due() {
            io.advance(due);
            io.flush();
        }
        io.inner().sent.iter().map(|(_, p)| num(p)).collect()
    }

    #[test]
    fn delay_holds_packets_until_due_and_next_due_says_when() {
        let mut io = impaired(Impairment {
            delay: ms(20),
            ..Impairment::default()
        });
        io.advance(at_ms(100));
        io.send(I0, &pkt(1));
        io.flush();
        assert!(io.inner().sent.is_empty(), "held for the delay");
        assert_eq!(io.next_due(), Some(at_ms(120)));
        assert_eq!(io.stats().held, 1);
        io.advance(at_ms(119));
        assert!(io.inner().sent.is_empty());
        io.advance(at_ms(120));
        assert_eq!(io.inner().sent, vec![(I0, pkt(1))]);
        assert_eq!(
            io.inner().advanced,
            Some(at_ms(120)),
            "advance is forwarded"
        );
        assert_eq!(io.next_due(), None);
        assert_eq!(io.stats().held, 0);
        io.flush();
        assert_eq!(io.inner().flushed, 2, "flush is forwarded");
    }

    #[test]
    fn next_due_includes_the_inner_path() {
        let mut io = impaired(Impairment {
            delay: ms(20),
            ..Impairment::default()
        });
        io.inner_mut().due = Some(at_ms(5));
        io.send(I0, &pkt(1));
        assert_eq!(io.next_due(), Some(at_ms(5)));
        io.inner_mut().due = Some(at_ms(50));
        assert_eq!(io.next_due(), Some(at_ms(20)));
    }

    #[test]
    fn both_directions_are_delayed() {
        let mut io = impaired(Impairment {
            delay: ms(10),
            ..Impairment::default()
        });
        io.inner_mut().arrive(I0, pkt(7));
        io.inner_mut().arrive(IfaceId(1), pkt(8));
        io.send(IfaceId(1), &pkt(9));
        assert!(drain(&mut io, I0).is_empty(), "the arrival waits");
        assert!(drain(&mut io, IfaceId(1)).is_empty());
        assert!(
            io.inner().incoming.iter().all(VecDeque::is_empty),
            "pulled in"
        );
        assert_eq!(io.next_due(), Some(at_ms(10)));
        io.advance(at_ms(9));
        assert!(drain(&mut io, I0).is_empty());
        assert!(io.inner().sent.is_empty());
        io.advance(at_ms(10));
        assert_eq!(drain(&mut io, I0), vec![7]);
        assert_eq!(drain(&mut io, IfaceId(1)), vec![8]);
        assert_eq!(io.inner().sent, vec![(IfaceId(1), pkt(9))]);
    }

    #[test]
    fn loss_rate_is_near_p() {
        let mut io = impaired(Impairment {
            loss: 0.1,
            seed: 7,
            ..Impairment::default()
        });
        for n in 0..10_000 {
            io.send(I0, &pkt(n));
        }
        let lost = io.stats().dropped_loss;
        assert_eq!(lost + io.inner().sent.len() as u64, 10_000);
        assert!(
            (850..=1150).contains(&lost),
            "lost {lost} of 10000 at p=0.1"
        );
        // Without delay, survivors go out at once and in order.
        let sent: Vec<u32> = io.inner().sent.iter().map(|(_, p)| num(p)).collect();
        assert!(sent.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn loss_in_the_receive_direction() {
        let mut io = impaired(Impairment {
            loss: 0.5,
            seed: 3,
            ..Impairment::default()
        });
        for n in 0..1000 {
            io.inner_mut().arrive(I0, pkt(n));
        }
        let mut got = 0;
        // One recv pulls at most RECV_PULL_LIMIT from the inner path; keep calling.
        for _ in 0..10 {
            got += drain(&mut io, I0).len() as u64;
        }
        assert_eq!(got + io.stats().dropped_loss, 1000);
        assert!(
            (400..=600).contains(&got),
            "received {got} of 1000 at p=0.5"
        );
    }

    fn drop_pattern(seed: u64, loss: f64) -> Vec<u32> {
        let mut io = impaired(Impairment {
            loss,
            seed,
            ..Impairment::default()
        });
        send_run(&mut io, 1000, 100)
    }

    #[test]
    fn same_seed_same_decisions_different_seed_different() {
        assert_eq!(drop_pattern(42, 0.3), drop_pattern(42, 0.3));
        assert_ne!(drop_pattern(42, 0.3), drop_pattern(43, 0.3));
        // More loss drops a superset: each packet keeps its own draw.
        let light = drop_pattern(42, 0.1);
        let heavy = drop_pattern(42, 0.3);
        assert!(heavy.iter().all(|n| light.contains(n)));
    }

    #[test]
    fn changing_loss_keeps_other_decisions() {
        let run = |loss| {
            let mut io = impaired(Impairment {
                loss,
                duplicate: 0.2,
                seed: 9,
                ..Impairment::default()
            });
            let out = send_run(&mut io, 500, 100);
            let mut dups: Vec<u32> = out
                .windows(2)
                .filter(|w| w[0] == w[1])
                .map(|w| w[0])
                .collect();
            dups.sort_unstable();
            (out, dups)
        };
        let (kept, dups_light) = run(0.0);
        let (kept_heavy, dups_heavy) = run(0.4);
        assert!(kept_heavy.len() < kept.len());
        // The duplicated packets that survived the heavier loss are the same ones.
        let expected: Vec<u32> = dups_light
            .iter()
            .copied()
            .filter(|n| kept_heavy.contains(n))
            .collect();
        assert_eq!(dups_heavy, expected);
    }

    #[test]
    fn jitter_without_reorder_keeps_order() {
        let mut io = impaired(Impairment {
            delay: ms(10),
            jitter: ms(30),
            seed: 5,
            ..Impairment::default()
        });
        // Packets 100 us apart with 30 ms of jitter would reorder if jitter could reorder.
        let out = send_run(&mut io, 2000, 100);
        assert_eq!(out, (0..2000).collect::<Vec<_>>());
        assert_eq!(io.stats().reordered, 0);
    }

    #[test]
    fn jitter_spreads_due_times_within_bounds() {
        let mut io = impaired(Impairment {
            delay: ms(10),
            jitter: ms(5),
            seed: 1,
            ..Impairment::default()
        });
        io.send(I0, &pkt(0));
        let due = io.next_due().unwrap();
        assert!(due >= at_ms(10) && due <= at_ms(15), "{due}");
    }

    #[test]
    fn reorder_lets_later_packets_overtake() {
        let mut io = impaired(Impairment {
            delay: ms(5),
            reorder: 0.1,
            seed: 11,
            ..Impairment::default()
        });
        let out = send_run(&mut io, 1000, 500);
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..1000).collect::<Vec<_>>(),
            "nothing lost or copied"
        );
        let inversions = out.windows(2).filter(|w| w[0] > w[1]).count();
        let reordered = io.stats().reordered;
        assert!((50..=150).contains(&reordered), "{reordered} held back");
        assert!(inversions > 0, "no packet overtaken");
        assert!(inversions as u64 <= reordered);
    }

    #[test]
    fn reorder_without_delay_still_overtakes_within_a_poll() {
        let mut io = impaired(Impairment {
            reorder: 1.0,
            ..Impairment::default()
        });
        io.advance(at_ms(0));
        io.send(I0, &pkt(0));
        assert!(io.inner().sent.is_empty(), "held 1 ms");
        assert_eq!(io.next_due(), Some(at_ms(1)));
        io.advance(at_ms(1));
        assert_eq!(io.inner().sent.len(), 1);
    }

    #[test]
    fn duplicate_makes_copies() {
        let mut io = impaired(Impairment {
            delay: ms(1),
            duplicate: 0.25,
            seed: 2,
            ..Impairment::default()
        });
        let out = send_run(&mut io, 1000, 100);
        let dups = io.stats().duplicated;
        assert_eq!(out.len() as u64, 1000 + dups);
        assert!((150..=350).contains(&dups), "{dups} copies at p=0.25");
        // A copy comes right behind its original.
        let adjacent = out.windows(2).filter(|w| w[0] == w[1]).count() as u64;
        assert_eq!(adjacent, dups);
        let mut dedup = out.clone();
        dedup.dedup();
        assert_eq!(dedup, (0..1000).collect::<Vec<_>>());

        let mut io = impaired(Impairment {
            duplicate: 1.0,
            ..Impairment::default()
        });
        io.inner_mut().arrive(I0, pkt(4));
        assert_eq!(drain(&mut io, I0), vec![4, 4]);
    }

    #[test]
    fn queues_are_bounded() {
        let mut io = impaired(Impairment {
            delay: ms(100),
            ..Impairment::default()
        });
        for n in 0..(QUEUE_LIMIT as u32 + 5) {
            io.send(I0, &pkt(n));
        }
        let stats = io.stats();
        assert_eq!(stats.overflow, 5);
        assert_eq!(stats.held, QUEUE_LIMIT as u64);
        io.advance(at_ms(100));
        assert_eq!(io.inner().sent.len(), QUEUE_LIMIT);
        assert_eq!(io.stats().held, 0);
    }

    #[test]
    fn recv_pulls_a_bounded_burst() {
        let mut io = impaired(Impairment {
            delay: ms(1),
            ..Impairment::default()
        });
        for n in 0..(RECV_PULL_LIMIT as u32 + 10) {
            io.inner_mut().arrive(I0, pkt(n));
        }
        assert!(drain(&mut io, I0).is_empty());
        assert_eq!(io.inner().incoming[0].len(), 10);
        assert_eq!(io.stats().held, RECV_PULL_LIMIT as u64);
    }

    #[test]
    fn no_impairment_passes_straight_through() {
        let imp = Impairment::default();
        assert!(imp.is_none());
        let mut io = impaired(imp);
        io.inner_mut().due = Some(at_ms(3));
        io.inner_mut().arrive(I0, pkt(1));
        io.send(I0, &pkt(2));
        assert_eq!(io.inner().sent, vec![(I0, pkt(2))]);
        assert_eq!(drain(&mut io, I0), vec![1]);
        assert_eq!(io.next_due(), Some(at_ms(3)));
        assert_eq!(io.stats(), ImpairStats::default());
        assert!(!Impairment {
            loss: 0.01,
            ..Impairment::default()
        }
        .is_none());
    }

    #[test]
    fn validate_rejects_bad_values() {
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            let imp = Impairment {
                loss: bad,
                ..Impairment::default()
            };
            let err = imp.validate().unwrap_err();
            assert!(matches!(
                err,
                ImpairmentError::Probability { field: "loss", .. }
            ));
            assert!(err.to_string().contains("`loss`"), "{err}");
            assert!(Impaired::new(Fake::default(), imp).is_err());
        }
        let err = Impairment {
            duplicate: 1.5,
            ..Impairment::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "impairment `duplicate` must be a probability between 0 and 1, got 1.5"
        );
        let err = Impairment {
            reorder: -0.1,
            ..Impairment::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("`reorder`") && err.to_string().contains("-0.1"));
        let err = Impairment {
            jitter: Duration::from_secs(7200),
            ..Impairment::default()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(
            err,
            ImpairmentError::TooLong {
                field: "jitter",
                ..
            }
        ));
        for ok in [0.0, 1.0, 0.5] {
            let imp = Impairment {
                loss: ok,
                reorder: ok,
                duplicate: ok,
                delay: MAX_DELAY,
                ..Impairment::default()
            };
            assert_eq!(imp.validate(), Ok(()));
        }
    }
}
