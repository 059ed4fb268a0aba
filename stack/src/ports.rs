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
//! connections to many peers.

use std::collections::HashMap;
use std::net::IpAddr;
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

    /// An ephemeral port for a connection from `addr`: not bound by anyone (with an overlapping
    /// address), and `unique(port)`: the connection's tuple is not in use.
    pub(crate) fn pick_for_connection(
        &self,
        addr: IpAddr,
        range: &RangeInclusive<u16>,
        rng: &mut impl Rng,
        mut unique: impl FnMut(u16) -> bool,
    ) -> Result<u16, BindError> {
        Self::pick(range, rng, |p| {
            !self.overlaps(Proto::Tcp, &addr, p) && unique(p)
        })
        .ok_or(BindError::NoPortsLeft)
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
        let token = self.next_token;
        self.next_token += 1;
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
        let p = ports
            .pick_for_connection(two, &range, &mut rng, |p| p != 40003)
            .unwrap();
        assert!(range.contains(&p) && p != 40003);
        assert_eq!(
            ports.pick_for_connection(one, &range, &mut rng, |_| false),
            Err(BindError::NoPortsLeft)
        );
    }
}
