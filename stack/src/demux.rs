//! Demultiplexing: which shard an arriving packet is for, in O(1).
//!
//! - TCP: one table from (local, remote) to the connection's shard; a SYN that matches no
//!   connection goes to the listener of its destination port (the `tcp` module decides whether
//!   the backlog takes it).
//! - TIME-WAIT: a compact entry per connection that closed first on our side (RFC 9293
//!   §3.10.7.4), kept for [`StackConfig::time_wait`](crate::StackConfig::time_wait) after its
//!   smoltcp socket and buffers are gone. It answers a retransmitted FIN with an ACK, dies on a
//!   RST (as Linux's, with `tcp_rfc1337` off), and lets a new SYN with a higher sequence number
//!   reuse the tuple.
//! - UDP: (interface, port) to the shards bound there; a specific address wins over the
//!   unspecified one.
//!
//! The tables only ever hold what the stack itself created (connections, listeners, bound
//! sockets, TIME-WAIT entries of its own connections): nothing a peer sends adds an entry without
//! the `tcp` module's admission (backlog and half-open limits).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};

use smoltcp::time::Instant;

use crate::ids::{Family, IfaceId, ShardId, SocketId, Tuple};
use crate::shard::seq_after;
use crate::wire::{self, Tcp, ACK, FIN, RST, SYN};

/// A connection in TIME-WAIT, without its smoltcp socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeWait {
    /// One past our FIN.
    pub(crate) snd_nxt: u32,
    /// One past the peer's FIN.
    pub(crate) rcv_nxt: u32,
    pub(crate) window: u16,
    pub(crate) expires: Instant,
    /// The time of its one place in the expiry queue (earlier than `expires` after a
    /// retransmitted FIN restarted the wait: it is queued again when that place comes up).
    queued: Instant,
}

impl TimeWait {
    pub(crate) fn new(snd_nxt: u32, rcv_nxt: u32, window: u16, expires: Instant) -> TimeWait {
        TimeWait {
            snd_nxt,
            rcv_nxt,
            window,
            expires,
            queued: expires,
        }
    }
}

/// What to do with a segment that found a TIME-WAIT entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TimeWaitVerdict {
    /// Nothing.
    Drop,
    /// Send this ACK back.
    Ack(Vec<u8>),
    /// A new connection reuses the tuple: the entry is gone; handle the SYN as new.
    Reopen,
}

#[derive(Debug, Clone, Copy)]
struct ListenerEntry {
    addr: IpAddr,
    family: Family,
    id: SocketId,
}

#[derive(Debug, Clone, Copy)]
struct UdpEntry {
    addr: IpAddr,
    family: Family,
    shard: ShardId,
}

/// A connection's tuple as the tables keep it: 37 bytes where `Tuple` takes 64, hashed in one
/// write where `Tuple` takes a dozen (each address's variant, octets, port, and an IPv6 one's
/// flow label and scope, which a tuple does not need). With every segment of every connection
/// looked up, and a table entry for each connection and each TIME-WAIT, both count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct TupleKey([u8; 37]);

impl TupleKey {
    fn of((local, remote): &Tuple) -> TupleKey {
        let mut k = [0u8; 37];
        // The families, so that an IPv4 address never meets its IPv4-mapped IPv6 form.
        k[0] = u8::from(local.is_ipv6()) | u8::from(remote.is_ipv6()) << 1;
        for (at, addr) in [(1, local), (17, remote)] {
            let octets = match addr.ip() {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            };
            k[at..at + 16].copy_from_slice(&octets);
        }
        k[33..35].copy_from_slice(&local.port().to_be_bytes());
        k[35..37].copy_from_slice(&remote.port().to_be_bytes());
        TupleKey(k)
    }
}

/// The stack's demultiplexing tables.
#[derive(Debug, Default)]
pub(crate) struct Demux {
    tcp: HashMap<TupleKey, ShardId>,
    time_wait: HashMap<TupleKey, TimeWait>,
    /// TIME-WAIT entries by the time of their place in the queue: one place each, however many
    /// FINs restart the wait (a FIN flood cannot grow it).
    tw_order: BinaryHeap<Reverse<(Instant, TupleKey)>>,
    listeners: HashMap<u16, Vec<ListenerEntry>>,
    udp: HashMap<(IfaceId, u16), Vec<UdpEntry>>,
}

/// Whether a socket of `family` bound to the unspecified address takes a packet to `dst`: an
/// `AF_INET6` socket hears IPv4 too (as Linux with `IPV6_V6ONLY` off).
fn wildcard_admits(family: Family, dst: &IpAddr) -> bool {
    family == Family::V6 || dst.is_ipv4()
}

impl Demux {
    // ----- TCP connections -----

    pub(crate) fn connection(&self, tuple: &Tuple) -> Option<ShardId> {
        self.tcp.get(&TupleKey::of(tuple)).copied()
    }

    /// Whether a connection or a TIME-WAIT entry has this tuple.
    pub(crate) fn tuple_in_use(&self, tuple: &Tuple) -> bool {
        let key = TupleKey::of(tuple);
        self.tcp.contains_key(&key) || self.time_wait.contains_key(&key)
    }

    pub(crate) fn insert_connection(&mut self, tuple: Tuple, shard: ShardId) {
        self.tcp.insert(TupleKey::of(&tuple), shard);
    }

    pub(crate) fn remove_connection(&mut self, tuple: &Tuple, shard: ShardId) {
        let key = TupleKey::of(tuple);
        if self.tcp.get(&key) == Some(&shard) {
            self.tcp.remove(&key);
        }
    }

    pub(crate) fn connections(&self) -> usize {
        self.tcp.len()
    }

    /// (listeners, datagram bindings, places in the TIME-WAIT expiry queue).
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        (
            self.listeners.values().map(Vec::len).sum(),
            self.udp.values().map(Vec::len).sum(),
            self.tw_order.len(),
        )
    }

    // ----- TIME-WAIT -----

    pub(crate) fn insert_time_wait(&mut self, tuple: Tuple, mut tw: TimeWait) {
        tw.queued = tw.expires;
        let key = TupleKey::of(&tuple);
        self.tw_order.push(Reverse((tw.expires, key)));
        self.time_wait.insert(key, tw);
    }

    pub(crate) fn time_wait(&self, tuple: &Tuple) -> Option<&TimeWait> {
        self.time_wait.get(&TupleKey::of(tuple))
    }

    pub(crate) fn time_wait_count(&self) -> usize {
        self.time_wait.len()
    }

    /// A segment (checksum verified) for a connection in TIME-WAIT. RFC 9293 §3.10.7.4: a
    /// retransmitted FIN is acknowledged again and restarts the wait; an acceptable RST ends it
    /// (as Linux does); a SYN above what the old connection used may open a new one (RFC 6191's
    /// rule without timestamps, as Linux applies it); other segments with data draw an ACK.
    pub(crate) fn time_wait_segment(
        &mut self,
        t: &Tcp,
        now: Instant,
        duration: smoltcp::time::Duration,
    ) -> TimeWaitVerdict {
        let tuple = t.arriving_tuple();
        let key = TupleKey::of(&tuple);
        let Some(tw) = self.time_wait.get_mut(&key) else {
            return TimeWaitVerdict::Drop;
        };
        if t.has(RST) {
            if t.seq == tw.rcv_nxt {
                self.time_wait.remove(&key);
            }
            return TimeWaitVerdict::Drop;
        }
        let ack = |tw: &TimeWait| {
            TimeWaitVerdict::Ack(ack_segment(tuple, tw.snd_nxt, tw.rcv_nxt, tw.window))
        };
        if t.has(SYN) && !t.has(ACK) {
            if seq_after(t.seq, tw.rcv_nxt) {
                self.time_wait.remove(&key);
                return TimeWaitVerdict::Reopen;
            }
            return ack(tw);
        }
        if t.has(FIN) {
            tw.expires = now + duration;
            return ack(tw);
        }
        if t.payload_len() > 0 {
            return ack(tw);
        }
        TimeWaitVerdict::Drop
    }

    /// Forget the TIME-WAIT entries that expired by `now`; returns how many.
    pub(crate) fn expire_time_wait(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(&Reverse((at, key))) = self.tw_order.peek() {
            if at > now {
                break;
            }
            self.tw_order.pop();
            let Some(tw) = self.time_wait.get_mut(&key).filter(|tw| tw.queued == at) else {
                // The place of an entry gone (a RST, a new SYN).
                continue;
            };
            if tw.expires <= now {
                self.time_wait.remove(&key);
                n += 1;
            } else {
                // A FIN restarted the wait: its place is now at the new end.
                tw.queued = tw.expires;
                self.tw_order.push(Reverse((tw.expires, key)));
            }
        }
        n
    }

    /// When the expiry queue next needs a look (an entry's end, or the place of one whose wait
    /// a FIN restarted).
    pub(crate) fn next_time_wait(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, key))) = self.tw_order.peek() {
            if self.time_wait.get(&key).is_some_and(|tw| tw.queued == at) {
                return Some(at);
            }
            self.tw_order.pop();
        }
        None
    }

    // ----- listeners -----

    pub(crate) fn add_listener(&mut self, local: SocketAddr, family: Family, id: SocketId) {
        self.listeners
            .entry(local.port())
            .or_default()
            .push(ListenerEntry {
                addr: local.ip(),
                family,
                id,
            });
    }

    pub(crate) fn remove_listener(&mut self, port: u16, id: SocketId) {
        if let Some(list) = self.listeners.get_mut(&port) {
            list.retain(|e| e.id != id);
            if list.is_empty() {
                self.listeners.remove(&port);
            }
        }
    }

    /// The listener a SYN to `dst` is for: one bound to that address, else one bound to the
    /// unspecified address of a family that admits it.
    pub(crate) fn listener_for(&self, dst: SocketAddr) -> Option<SocketId> {
        let list = self.listeners.get(&dst.port())?;
        list.iter()
            .find(|e| e.addr == dst.ip())
            .or_else(|| {
                list.iter()
                    .find(|e| e.addr.is_unspecified() && wildcard_admits(e.family, &dst.ip()))
            })
            .map(|e| e.id)
    }

    // ----- UDP -----

    pub(crate) fn add_udp(
        &mut self,
        iface: IfaceId,
        local: SocketAddr,
        family: Family,
        shard: ShardId,
    ) {
        self.udp
            .entry((iface, local.port()))
            .or_default()
            .push(UdpEntry {
                addr: local.ip(),
                family,
                shard,
            });
    }

    pub(crate) fn remove_udp(&mut self, iface: IfaceId, port: u16, shard: ShardId) {
        if let Some(list) = self.udp.get_mut(&(iface, port)) {
            list.retain(|e| e.shard != shard);
            if list.is_empty() {
                self.udp.remove(&(iface, port));
            }
        }
    }

    /// The shard a datagram to `dst` arriving on `iface` is for.
    pub(crate) fn udp_for(&self, iface: IfaceId, dst: SocketAddr) -> Option<ShardId> {
        let list = self.udp.get(&(iface, dst.port()))?;
        list.iter()
            .find(|e| e.addr == dst.ip())
            .or_else(|| {
                list.iter()
                    .find(|e| e.addr.is_unspecified() && wildcard_admits(e.family, &dst.ip()))
            })
            .map(|e| e.shard)
    }
}

/// A bare ACK from `tuple.0` to `tuple.1`.
pub(crate) fn ack_segment(tuple: Tuple, seq: u32, ack: u32, window: u16) -> Vec<u8> {
    let mut p = vec![0u8; 60];
    match wire::build(tuple.0, tuple.1, seq, ack, ACK, window, &[], &mut p) {
        Some(n) => {
            p.truncate(n);
            p
        }
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tuple_key_tells_apart_what_the_tuple_does() {
        let key = |l: &str, r: &str| TupleKey::of(&(sa(l), sa(r)));
        let base = key("192.0.2.1:1000", "198.51.100.1:80");
        assert_eq!(base, key("192.0.2.1:1000", "198.51.100.1:80"));
        for other in [
            key("198.51.100.1:80", "192.0.2.1:1000"),
            key("192.0.2.1:1001", "198.51.100.1:80"),
            key("192.0.2.1:1000", "198.51.100.1:81"),
            key("192.0.2.2:1000", "198.51.100.1:80"),
            key("192.0.2.1:1000", "198.51.100.2:80"),
            // Its IPv4-mapped IPv6 form is another tuple.
            key("[::ffff:192.0.2.1]:1000", "[::ffff:198.51.100.1]:80"),
            key("192.0.2.1:1000", "[::ffff:198.51.100.1]:80"),
        ] {
            assert_ne!(base, other);
        }
        // A flow label or scope is not part of a connection's tuple.
        let plain = (sa("[2001:db8::1]:1000"), sa("[2001:db8::2]:80"));
        let mut labelled = plain;
        if let SocketAddr::V6(a) = &mut labelled.1 {
            a.set_flowinfo(7);
        }
        assert_eq!(TupleKey::of(&plain), TupleKey::of(&labelled));
        assert!(std::mem::size_of::<TupleKey>() < std::mem::size_of::<Tuple>() / 2 + 8);
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn segment(seq: u32, flags: u8, payload: &[u8]) -> (Vec<u8>, Tcp) {
        let mut p = vec![0u8; 100];
        let n = wire::build(
            sa("192.0.2.1:80"),
            sa("192.0.2.2:40000"),
            seq,
            7,
            flags,
            1000,
            payload,
            &mut p,
        )
        .unwrap();
        p.truncate(n);
        let t = wire::parse(&p).unwrap();
        (p, t)
    }

    fn with_entry() -> Demux {
        let mut d = Demux::default();
        d.insert_time_wait(
            (sa("192.0.2.2:40000"), sa("192.0.2.1:80")),
            TimeWait::new(7, 1000, 512, Instant::from_secs(60)),
        );
        d
    }

    const MINUTE: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(60);

    #[test]
    fn a_retransmitted_fin_is_acked_and_restarts_the_wait() {
        let mut d = with_entry();
        let (_, fin) = segment(999, FIN | ACK, &[]);
        let TimeWaitVerdict::Ack(ack) = d.time_wait_segment(&fin, Instant::from_secs(30), MINUTE)
        else {
            panic!("a FIN is answered");
        };
        let a = wire::parse(&ack).unwrap();
        assert_eq!((a.seq, a.ack, a.flags, a.window), (7, 1000, ACK, 512));
        assert!(wire::tcp_checksum_ok(&ack, &a));
        assert_eq!(
            d.expire_time_wait(Instant::from_secs(61)),
            0,
            "restarted at 30 s"
        );
        assert_eq!(d.next_time_wait(), Some(Instant::from_secs(90)));
        // A flood of FINs keeps one place in the queue.
        for s in 62..80 {
            d.time_wait_segment(&fin, Instant::from_secs(s), MINUTE);
        }
        assert_eq!(d.tw_order.len(), 1);
        assert_eq!(
            d.expire_time_wait(Instant::from_secs(90)),
            0,
            "restarted at 79 s"
        );
        assert_eq!(d.expire_time_wait(Instant::from_secs(139)), 1);
        assert_eq!(d.time_wait_count(), 0);
        assert_eq!(d.next_time_wait(), None);
    }

    #[test]
    fn a_higher_syn_reopens_a_lower_one_is_acked_a_rst_ends_it() {
        let mut d = with_entry();
        let (_, old) = segment(500, SYN, &[]);
        assert!(matches!(
            d.time_wait_segment(&old, Instant::from_secs(1), MINUTE),
            TimeWaitVerdict::Ack(_)
        ));
        let (_, new) = segment(5000, SYN, &[]);
        assert_eq!(
            d.time_wait_segment(&new, Instant::from_secs(1), MINUTE),
            TimeWaitVerdict::Reopen
        );
        assert_eq!(d.time_wait_count(), 0);

        let mut d = with_entry();
        let (_, blind) = segment(1234, RST, &[]);
        assert_eq!(
            d.time_wait_segment(&blind, Instant::from_secs(1), MINUTE),
            TimeWaitVerdict::Drop
        );
        assert_eq!(
            d.time_wait_count(),
            1,
            "a RST off the exact sequence number is ignored"
        );
        let (_, rst) = segment(1000, RST, &[]);
        d.time_wait_segment(&rst, Instant::from_secs(1), MINUTE);
        assert_eq!(d.time_wait_count(), 0);
    }

    #[test]
    fn listeners_prefer_their_exact_address_and_wildcards_admit_by_family() {
        let mut d = Demux::default();
        let mut ids = crate::ids::Slab::default();
        let (a, b, c) = (
            SocketId(ids.insert(())),
            SocketId(ids.insert(())),
            SocketId(ids.insert(())),
        );
        d.add_listener(sa("0.0.0.0:80"), Family::V4, a);
        d.add_listener(sa("192.0.2.2:80"), Family::V4, b);
        d.add_listener(sa("[::]:81"), Family::V6, c);
        assert_eq!(d.listener_for(sa("192.0.2.2:80")), Some(b));
        assert_eq!(d.listener_for(sa("192.0.2.3:80")), Some(a));
        assert_eq!(d.listener_for(sa("[2001:db8::2]:80")), None);
        assert_eq!(d.listener_for(sa("192.0.2.2:81")), Some(c));
        d.remove_listener(80, b);
        assert_eq!(d.listener_for(sa("192.0.2.2:80")), Some(a));
    }
}
