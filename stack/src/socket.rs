//! The socket table: ids, what each socket is, and what callers can ask of any socket.

use std::net::{IpAddr, SocketAddr};

use crate::error::ConnectionError;
use crate::tcp::TcpSocket;
use crate::udp::UdpSocket;
use crate::Stack;

/// A socket of a [`Stack`]. Ids are not reused while the stack lives (a generation counter
/// tells a stale id from a new socket in the same slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId {
    index: u32,
    generation: u32,
}

/// Address family of a socket: `AF_INET` or `AF_INET6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Whether an address of this family can be used by a socket of this family.
    pub fn admits(self, ip: &IpAddr) -> bool {
        match self {
            Family::V4 => ip.is_ipv4(),
            Family::V6 => ip.is_ipv6(),
        }
    }

    /// The unspecified address of the family.
    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::from([0u8; 4]),
            Family::V6 => IpAddr::from([0u8; 16]),
        }
    }
}

/// Stream or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketType {
    /// TCP.
    Stream,
    /// UDP.
    Datagram,
}

/// Readiness of a socket, as `poll(2)` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A read would not block: data, end of stream, a pending connection to accept, or an error.
    pub readable: bool,
    /// A write would not block, or a connection attempt has finished (either way).
    pub writable: bool,
    /// An error is pending (`SO_ERROR` would report it).
    pub error: bool,
    /// The connection is finished in both directions (or was never made).
    pub hangup: bool,
}

/// Which half of a connection to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// No more receiving.
    Read,
    /// No more sending: a FIN follows the queued data.
    Write,
    /// Both.
    Both,
}

#[derive(Debug)]
pub(crate) enum Entry {
    Tcp(TcpSocket),
    Udp(UdpSocket),
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

impl Table {
    pub(crate) fn insert(&mut self, entry: Entry) -> SocketId {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.entry = Some(entry);
            return SocketId {
                index,
                generation: slot.generation,
            };
        }
        let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 sockets");
        self.slots.push(Slot {
            generation: 0,
            entry: Some(entry),
        });
        SocketId {
            index,
            generation: 0,
        }
    }

    pub(crate) fn get(&self, id: SocketId) -> Option<&Entry> {
        self.slots
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.entry.as_ref())
    }

    pub(crate) fn get_mut(&mut self, id: SocketId) -> Option<&mut Entry> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.entry.as_mut())
    }

    pub(crate) fn remove(&mut self, id: SocketId) -> Option<Entry> {
        let slot = self
            .slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)?;
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.len -= 1;
        Some(entry)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter_map(|s| s.entry.as_ref())
    }

    pub(crate) fn ids(&self) -> Vec<SocketId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.is_some())
            .map(|(i, s)| SocketId {
                index: i as u32,
                generation: s.generation,
            })
            .collect()
    }
}

impl Stack {
    /// Open a socket. It is not bound to anything until `bind`, `listen`, `connect` or a send.
    pub fn socket(&mut self, family: Family, ty: SocketType) -> SocketId {
        let entry = match ty {
            SocketType::Stream => Entry::Tcp(TcpSocket::new(family)),
            SocketType::Datagram => Entry::Udp(UdpSocket::new(family)),
        };
        self.table.insert(entry)
    }

    /// Stream or datagram; `None` for an id that is not open.
    pub fn socket_type(&self, id: SocketId) -> Option<SocketType> {
        match self.table.get(id)? {
            Entry::Tcp(_) => Some(SocketType::Stream),
            Entry::Udp(_) => Some(SocketType::Datagram),
        }
    }

    /// The family a socket was opened with.
    pub fn socket_family(&self, id: SocketId) -> Option<Family> {
        match self.table.get(id)? {
            Entry::Tcp(s) => Some(s.family),
            Entry::Udp(s) => Some(s.family),
        }
    }

    /// Readiness of a socket; an id that is not open reads as hung up.
    pub fn readiness(&self, id: SocketId) -> Readiness {
        match self.table.get(id) {
            Some(Entry::Tcp(s)) => self.tcp_readiness(s),
            Some(Entry::Udp(s)) => self.udp_readiness(s),
            None => Readiness {
                hangup: true,
                ..Readiness::default()
            },
        }
    }

    /// Take the pending error of a socket (`getsockopt(SO_ERROR)`): reported once.
    pub fn take_error(&mut self, id: SocketId) -> Option<ConnectionError> {
        match self.table.get_mut(id)? {
            Entry::Tcp(s) => s.take_error(),
            Entry::Udp(s) => s.error.take(),
        }
    }

    /// The local address a socket is bound to (port 0 and the unspecified address until bound).
    pub fn local_addr(&self, id: SocketId) -> Option<SocketAddr> {
        match self.table.get(id)? {
            Entry::Tcp(s) => Some(s.local_addr()),
            Entry::Udp(s) => Some(s.local_addr()),
        }
    }

    /// The peer of a connected (or connecting) socket, or of an associated datagram socket.
    pub fn peer_addr(&self, id: SocketId) -> Option<SocketAddr> {
        match self.table.get(id)? {
            Entry::Tcp(s) => s.peer_addr(),
            Entry::Udp(s) => s.peer,
        }
    }

    /// Close a socket: a connection sends FIN after its queued data (or RST when received data
    /// was left unread, as `close(2)` does) and finishes closing in the background; a listener
    /// resets the connections not yet accepted. Returns whether `id` was open.
    pub fn close(&mut self, id: SocketId, now: smoltcp::time::Instant) -> bool {
        match self.table.remove(id) {
            Some(Entry::Tcp(s)) => {
                self.tcp_release(id, s, now);
                true
            }
            Some(Entry::Udp(s)) => {
                self.udp_release(id, s);
                true
            }
            None => false,
        }
    }

    /// Settle what the last poll changed: connections that finished their handshake or failed,
    /// listeners that need fresh listening sockets, orphans that finished. Returns whether any
    /// socket changed.
    pub(crate) fn settle(&mut self, now: smoltcp::time::Instant) -> bool {
        let mut changed = false;
        for id in self.table.ids() {
            changed |= match self.table.get(id) {
                Some(Entry::Tcp(_)) => self.settle_tcp(id, now),
                Some(Entry::Udp(_)) => self.settle_udp(id),
                None => false,
            };
        }
        changed |= self.reap_orphans(now);
        self.reap_udp_orphans();
        changed
    }

    /// The next deadline the stack keeps itself (connect timeouts, orphan timeouts) after
    /// `now`. Deadlines already past were acted on by the poll that preceded this call; one
    /// that stays past (an orphan waiting out TIME-WAIT, which smoltcp times itself) must not
    /// make the runtime spin.
    pub(crate) fn next_deadline(
        &self,
        now: smoltcp::time::Instant,
    ) -> Option<smoltcp::time::Instant> {
        let orphans = self.orphans.iter().filter_map(|o| o.deadline);
        let connects = self.table.entries().filter_map(|e| match e {
            Entry::Tcp(s) => s.deadline(),
            Entry::Udp(_) => None,
        });
        orphans.chain(connects).filter(|d| *d > now).min()
    }
}
