//! Port bindings: who holds which port, and how ephemeral ports are chosen.
//!
//! Two kinds of use:
//! - bindings made by `bind` (and by `listen` or a datagram send on an unbound socket, and by a
//!   connect with an explicit source port): a binding clashes with another of the same port
//!   whose address overlaps (equal, or either unspecified);
//! - ports of live TCP connections. They do not stop a `bind` to the same port, as if every
//!   socket set `SO_REUSEADDR` (what servers do, so that a restarted server binds while its old
//!   connections finish closing); an ephemeral port for `bind` still avoids them.
//!
//! An ephemeral port for a connection only needs its (local, remote) tuple to be unique among
//! connections and TIME-WAIT entries (Linux's `__inet_hash_connect`), so one port serves
//! connections to many peers. It is chosen as Linux chooses it, by RFC 6056's algorithm 4
//! (double-hash): each destination starts at a secret, hashed place in the range and moves on
//! one port per connection, so successive connections to one server use every port of the
//! range before one comes back. A random pick would come back to a recent port soon (after
//! about 200 connections, by the birthday bound on 28,232 ports), and when the server closed
//! that connection first, its TIME-WAIT entry answers the new SYN with an ACK unless the
//! sequence number happens to be higher (about half the time with random ISNs): a reset and a
//! one-second SYN retransmission for the client, and no Fast Open data.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use rand::Rng;

use crate::error::BindError;
use crate::ids::{Proto, SocketId};

/// Who holds a binding: an open socket, or the parts of a closed datagram socket that still
/// have datagrams to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    Socket(SocketId),
    Orphan(u64),
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    addr: IpAddr,
    holder: Holder,
}

/// The bindings of one stack.
#[derive(Debug, Default)]
pub(crate) struct Ports {
    bound: HashMap<(Proto, u16), Vec<Binding>>,
    /// Live TCP connections per local port.
    in_use: HashMap<u16, u32>,
    next_token: u64,
    /// Orphaned parts still holding each orphan token's binding.
    orphan_parts: HashMap<u64, usize>,
    /// RFC 6056 algorithm 4, made on first use from the stack's random source.
    double_hash: Option<DoubleHash>,
}

/// How many increments algorithm 4 keeps (as Linux's `INET_TABLE_PERTURB_SIZE` did before it
/// grew): destinations that share one move each other on, which costs nothing but a skip.
const PERTURB_TABLE: usize = 256;

/// RFC 6056 §3.3.4: the secret keys of the two hashes, and the table of increments.
#[derive(Debug)]
struct DoubleHash {
    keys: [u64; 2],
    table: Vec<u16>,
}

impl DoubleHash {
    fn new(rng: &mut impl Rng) -> DoubleHash {
        DoubleHash {
            keys: [rng.random(), rng.random()],
            table: (0..PERTURB_TABLE).map(|_| rng.random()).collect(),
        }
    }

    /// A keyed hash of the connection's (local address, remote address, remote port).
    fn hash(key: u64, local: IpAddr, remote: SocketAddr) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        local.hash(&mut h);
        remote.hash(&mut h);
        h.finish()
    }
}

impl Ports {
    fn overlaps(&self, proto: Proto, addr: &IpAddr, port: u16) -> bool {
        self.bound.get(&(proto, port)).is_some_and(|list| {
            list.iter().any(|b| {
                b.addr.is_ipv4() == addr.is_ipv4()
                    && (b.addr == *addr || b.addr.is_unspecified() || addr.is_unspecified())
            })
        })
    }

    /// Free for an ephemeral `bind`: no binding overlaps, and no connection uses the port.
    fn ephemeral_free(&self, proto: Proto, addr: &IpAddr, port: u16) -> bool {
        !self.overlaps(proto, addr, port)
            && (proto == Proto::Udp || !self.in_use.contains_key(&port))
    }

    fn push(&mut self, proto: Proto, addr: IpAddr, port: u16, holder: Holder) {
        self.bound
            .entry((proto, port))
            .or_default()
            .push(Binding { addr, holder });
    }

    /// RFC 6056 algorithm 1: a random start in `range`, then the next port `free` accepts.
    fn pick(
        range: &RangeInclusive<u16>,
        rng: &mut impl Rng,
        mut free: impl FnMut(u16) -> bool,
    ) -> Option<u16> {
        let (lo, hi) = (u32::from(*range.start()), u32::from(*range.end()));
        let count = hi.saturating_sub(lo) + 1;
        let start = rng.random_range(0..count);
        (0..count)
            // `lo + offset` stays within the u16 range by construction.
            .map(|step| (lo + (start + step) % count) as u16)
            .find(|&p| free(p))
    }

    /// `bind`: register `holder` on (`addr`, `port`), or on a free ephemeral port when `port` is
    /// 0. Returns the port.
    pub(crate) fn bind(
        &mut self,
        proto: Proto,
        addr: IpAddr,
        port: u16,
        holder: Holder,
        range: &RangeInclusive<u16>,
        rng: &mut impl Rng,
    ) -> Result<u16, BindError> {
        let port = if port != 0 {
            if self.overlaps(proto, &addr, port) {
                return Err(BindError::AddressInUse);
            }
            port
        } else {
            Self::pick(range, rng, |p| self.ephemeral_free(proto, &addr, p))
                .ok_or(BindError::NoPortsLeft)?
        };
        self.push(proto, addr, port, holder);
        Ok(port)
    }

    /// An ephemeral port for a connection from `addr` to `remote`: not bound by anyone (with an
    /// overlapping address), and `unique(port)`: the connection's tuple is not in use. RFC
    /// 6056's algorithm 4: the destination's hashed offset, plus its entry of the increments
    /// table, which every try moves on by one.
    pub(crate) fn pick_for_connection(
        &mut self,
        addr: IpAddr,
        remote: SocketAddr,
        range: &RangeInclusive<u16>,
        rng: &mut impl Rng,
        mut unique: impl FnMut(u16) -> bool,
    ) -> Result<u16, BindError> {
        let hashes = self.double_hash.get_or_insert_with(|| DoubleHash::new(rng));
        let offset = DoubleHash::hash(hashes.keys[0], addr, remote);
        let index =
            (DoubleHash::hash(hashes.keys[1], addr, remote) % PERTURB_TABLE as u64) as usize;
        let (lo, hi) = (u64::from(*range.start()), u64::from(*range.end()));
        let count = hi.saturating_sub(lo) + 1;
        for _ in 0..count {
            let step = &mut hashes.table[index];
            // `lo + (… % count)` stays within the range, so within u16.
            let port = (lo + offset.wrapping_add(u64::from(*step)) % count) as u16;
            *step = step.wrapping_add(1);
            let bound = self.bound.get(&(Proto::Tcp, port)).is_some_and(|list| {
                list.iter().any(|b| {
                    b.addr.is_ipv4() == addr.is_ipv4()
                        && (b.addr == addr || b.addr.is_unspecified() || addr.is_unspecified())
                })
            });
            if !bound && unique(port) {
                return Ok(port);
            }
        }
        Err(BindError::NoPortsLeft)
    }

    pub(crate) fn release(&mut self, proto: Proto, port: u16, holder: Holder) {
        if let Some(list) = self.bound.get_mut(&(proto, port)) {
            list.retain(|b| b.holder != holder);
            if list.is_empty() {
                self.bound.remove(&(proto, port));
            }
        }
    }

    /// Hand a socket's binding over to its orphaned parts; returns their token.
    pub(crate) fn orphan(&mut self, proto: Proto, port: u16, from: SocketId) -> u64 {
        // From 1: a token is never 0 (parts keep it as a `NonZeroU64`).
        self.next_token += 1;
        let token = self.next_token;
        if let Some(list) = self.bound.get_mut(&(proto, port)) {
            for b in list.iter_mut().filter(|b| b.holder == Holder::Socket(from)) {
                b.holder = Holder::Orphan(token);
            }
        }
        token
    }

    /// One more orphaned part holds the binding of `token`.
    pub(crate) fn add_orphan_part(&mut self, token: u64) {
        *self.orphan_parts.entry(token).or_default() += 1;
    }

    /// An orphaned part is gone; the last one releases the binding.
    pub(crate) fn release_orphan_part(&mut self, proto: Proto, port: u16, token: u64) {
        let left = self.orphan_parts.get_mut(&token).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left == Some(0) {
            self.orphan_parts.remove(&token);
            self.release(proto, port, Holder::Orphan(token));
        }
    }

    /// (bindings, ports used by connections).
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.bound.values().map(Vec::len).sum(), self.in_use.len())
    }

    /// A TCP connection now uses `port`.
    pub(crate) fn connection_added(&mut self, port: u16) {
        *self.in_use.entry(port).or_default() += 1;
    }

    /// A TCP connection on `port` is gone (or went to TIME-WAIT).
    pub(crate) fn connection_removed(&mut self, port: u16) {
        if let Some(n) = self.in_use.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.in_use.remove(&port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn bind_clashes_with_bindings_and_ephemeral_ports_avoid_connections() {
        let mut ports = Ports::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let range = 40000..=40009;
        let mut ids = crate::ids::Slab::default();
        let (a, b) = (SocketId(ids.insert(())), SocketId(ids.insert(())));
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let one: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(
            ports.bind(Proto::Tcp, one, 80, Holder::Socket(a), &range, &mut rng),
            Ok(80)
        );
        assert_eq!(
            ports.bind(Proto::Tcp, any, 80, Holder::Socket(b), &range, &mut rng),
            Err(BindError::AddressInUse)
        );
        assert_eq!(
            ports.bind(Proto::Udp, any, 80, Holder::Socket(b), &range, &mut rng),
            Ok(80),
            "TCP and UDP ports are apart"
        );
        // Every port of the range but one is used by a connection: an ephemeral bind takes that
        // one; an explicit bind may share a connection's port (SO_REUSEADDR).
        for p in 40000..=40009 {
            if p != 40005 {
                ports.connection_added(p);
            }
        }
        assert_eq!(
            ports.bind(Proto::Tcp, one, 0, Holder::Socket(b), &range, &mut rng),
            Ok(40005)
        );
        assert_eq!(
            ports.bind(Proto::Tcp, one, 40001, Holder::Socket(b), &range, &mut rng),
            Ok(40001)
        );
        ports.connection_removed(40002);
        assert_eq!(
            ports.bind(Proto::Tcp, one, 0, Holder::Socket(b), &range, &mut rng),
            Ok(40002)
        );
        // Connections share ports as long as their tuples differ.
        let two: IpAddr = "192.0.2.3".parse().unwrap();
        let server: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let p = ports
            .pick_for_connection(two, server, &range, &mut rng, |p| p != 40003)
            .unwrap();
        assert!(range.contains(&p) && p != 40003);
        assert_eq!(
            ports.pick_for_connection(one, server, &range, &mut rng, |_| false),
            Err(BindError::NoPortsLeft)
        );
    }

    #[test]
    fn connections_to_one_server_go_through_the_whole_range_before_a_port_comes_back() {
        let mut ports = Ports::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let range = 32768..=60999;
        let local: IpAddr = "192.0.2.2".parse().unwrap();
        let server: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for n in 0..28_232 {
            let p = ports
                .pick_for_connection(local, server, &range, &mut rng, |_| true)
                .unwrap();
            assert!(range.contains(&p));
            assert!(seen.insert(p), "port {p} came back after {n} connections");
        }
        // Other destinations start elsewhere in the range.
        let starts: std::collections::HashSet<u16> = (1..=20)
            .map(|port| {
                let to = SocketAddr::new(server.ip(), port);
                ports
                    .pick_for_connection(local, to, &range, &mut rng, |_| true)
                    .unwrap()
            })
            .collect();
        assert!(starts.len() >= 18, "{starts:?}");
    }
}
