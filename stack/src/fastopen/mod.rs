//! RFC 7413 TCP Fast Open, added to an unmodified smoltcp by rewriting segments.
//!
//! smoltcp has no Fast Open: it discards SYN payload, never emits option 34, cannot send before
//! ESTABLISHED, and answers a SYN-ACK whose ack is not ISN+1 with a RST. This layer sits
//! between the device and smoltcp's `Interface` and rewrites the segments of Fast Open
//! connections only (every other packet passes untouched, after one map lookup):
//!
//! - client ([`client`]): option 34 and the early data are added to the SYN smoltcp emits; the
//!   SYN-ACK's cookie is cached; when it acknowledges k bytes of SYN data, its ack is rewritten
//!   to ISN+1 for smoltcp, and from then on k is added to outgoing sequence numbers and
//!   subtracted from incoming acknowledgements (and SACK blocks);
//! - server ([`server`]): option 34 is checked; data behind a valid cookie is taken out of the
//!   SYN, the SYN-ACK is made to acknowledge it, and the client's final ACK and the data are
//!   played to smoltcp at once, so the connection is acceptable and readable, and the server
//!   may answer, before the real final ACK arrives.
//!
//! The per-connection state lives as long as smoltcp's socket (TIME-WAIT included).

pub mod cache_file;
pub mod client;
pub mod cookie;
pub(crate) mod segment;
pub mod server;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use smoltcp::time::Instant;

pub use client::{Blackhole, CookieCache, CookieEntry, Fallback, FastOpenInfo, Mode};
pub use cookie::{Cookie, CookieKey, KeyError};
pub use server::{KeyUsed, ServerConfig, ServerInfo};

use crate::iface::IfaceId;

/// The stack-wide Fast Open counters, named as Linux's `TcpExt` MIB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(non_snake_case)]
pub struct Counters {
    /// SYN data sent by us was acknowledged by the server.
    pub TCPFastOpenActive: u64,
    /// A Fast Open attempt of ours failed (data not acknowledged, or the SYN was retransmitted).
    pub TCPFastOpenActiveFail: u64,
    /// A SYN with a valid cookie was accepted (its data given to the application).
    pub TCPFastOpenPassive: u64,
    /// A SYN with an invalid cookie.
    pub TCPFastOpenPassiveFail: u64,
    /// A valid-cookie SYN over the listener's pending limit, handled as a plain SYN.
    pub TCPFastOpenListenOverflow: u64,
    /// A SYN with a cookie request.
    pub TCPFastOpenCookieReqd: u64,
    /// Fast Open was switched off towards a server after a suspected middlebox drop.
    pub TCPFastOpenBlackhole: u64,
    /// A cookie valid under the backup key only.
    pub TCPFastOpenPassiveAltKey: u64,
}

impl Counters {
    /// (name, value) pairs, in the reference's order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("TCPFastOpenActive", self.TCPFastOpenActive),
            ("TCPFastOpenActiveFail", self.TCPFastOpenActiveFail),
            ("TCPFastOpenPassive", self.TCPFastOpenPassive),
            ("TCPFastOpenPassiveFail", self.TCPFastOpenPassiveFail),
            ("TCPFastOpenListenOverflow", self.TCPFastOpenListenOverflow),
            ("TCPFastOpenCookieReqd", self.TCPFastOpenCookieReqd),
            ("TCPFastOpenBlackhole", self.TCPFastOpenBlackhole),
            ("TCPFastOpenPassiveAltKey", self.TCPFastOpenPassiveAltKey),
        ]
        .into_iter()
    }
}

/// Most connections the layer keeps state for.
const MAX_CONNS: usize = 1 << 16;

/// A connection, as (local, remote).
pub(crate) type Tuple = (SocketAddr, SocketAddr);

#[derive(Debug)]
pub(crate) enum Conn {
    Client(client::Client),
    Server(server::Server),
}

/// The Fast Open layer of one stack.
#[derive(Debug, Default)]
pub(crate) struct Layer {
    pub(crate) cache: CookieCache,
    pub(crate) blackhole: Blackhole,
    pub(crate) conns: HashMap<Tuple, Conn>,
    /// Fast Open listeners by local port.
    pub(crate) listeners: HashMap<u16, server::Listener>,
    pub(crate) counters: Counters,
    /// Packets to play to smoltcp as if they had arrived, per interface.
    inject: Vec<VecDeque<Vec<u8>>>,
    /// Packets to send on the wire on smoltcp's behalf, per interface.
    outgoing: Vec<VecDeque<Vec<u8>>>,
    scratch: Vec<u8>,
    /// Switched off by [`StackConfig::fast_open_layer`](crate::StackConfig::fast_open_layer).
    pub(crate) disabled: bool,
}

impl Layer {
    /// Whether any packet could concern this layer.
    fn idle(&self) -> bool {
        self.disabled || (self.conns.is_empty() && self.listeners.is_empty())
    }

    fn queue(list: &mut Vec<VecDeque<Vec<u8>>>, iface: IfaceId, packet: Vec<u8>) {
        if list.len() <= iface.0 {
            list.resize_with(iface.0 + 1, VecDeque::new);
        }
        list[iface.0].push_back(packet);
    }

    pub(crate) fn has_injected(&self, iface: IfaceId) -> bool {
        self.inject.get(iface.0).is_some_and(|q| !q.is_empty())
    }

    pub(crate) fn take_injected(&mut self, iface: IfaceId) -> Option<Vec<u8>> {
        self.inject.get_mut(iface.0)?.pop_front()
    }

    pub(crate) fn take_outgoing(&mut self, iface: IfaceId) -> Option<Vec<u8>> {
        self.outgoing.get_mut(iface.0)?.pop_front()
    }

    /// A packet smoltcp is about to send on `iface`, in `buf[..len]` (`buf` is MTU-sized).
    /// Returns its new length; 0 drops it.
    pub(crate) fn egress(
        &mut self,
        iface: IfaceId,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> usize {
        if self.idle() {
            return len;
        }
        let Some(t) = segment::parse(buf.get(..len).unwrap_or(&[])) else {
            return len;
        };
        let tuple = (t.src, t.dst);
        match self.conns.get_mut(&tuple) {
            Some(Conn::Client(c)) => {
                let mut scratch = std::mem::take(&mut self.scratch);
                let n = c.egress(
                    &t,
                    buf,
                    len,
                    &mut scratch,
                    &mut self.counters,
                    &mut self.blackhole,
                    now,
                );
                self.scratch = scratch;
                n
            }
            Some(Conn::Server(_)) if t.has(segment::RST) => {
                // smoltcp refused the SYN (no listening socket free): nothing to keep.
                self.forget(&tuple);
                len
            }
            Some(Conn::Server(s)) => {
                let mut scratch = std::mem::take(&mut self.scratch);
                let out = s.egress(&t, buf, len, &mut scratch);
                self.scratch = scratch;
                for p in out.inject {
                    Self::queue(&mut self.inject, iface, p);
                }
                out.len
            }
            None => len,
        }
    }

    /// A packet that arrived on `iface`, in `buf[..len]`. Returns its new length; 0 drops it.
    pub(crate) fn ingress(
        &mut self,
        iface: IfaceId,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> usize {
        if self.idle() {
            return len;
        }
        let Some(t) = segment::parse(buf.get(..len).unwrap_or(&[])) else {
            return len;
        };
        let tuple = (t.dst, t.src);
        if let Some(Conn::Server(s)) = self.conns.get(&tuple) {
            if t.has(segment::SYN) && !t.has(segment::ACK) && !server::Listener::same_syn(s, &t) {
                // A new connection reusing the addresses and ports of an old one.
                self.forget(&tuple);
            }
        }
        match self.conns.get_mut(&tuple) {
            Some(Conn::Client(c)) => {
                let (n, follow) = c.ingress(
                    &t,
                    buf,
                    len,
                    &mut self.cache,
                    &mut self.counters,
                    &mut self.blackhole,
                    now,
                );
                if let Some(p) = follow {
                    Self::queue(&mut self.inject, iface, p);
                }
                n
            }
            Some(Conn::Server(s)) => {
                let out = s.ingress(&t, buf, len);
                if out.final_ack {
                    match self.listeners.get_mut(&tuple.0.port()) {
                        Some(l) => l.acked(&tuple, s),
                        None => s.final_acked = true,
                    }
                }
                for p in out.reply {
                    Self::queue(&mut self.outgoing, iface, p);
                }
                out.len
            }
            None if t.has(segment::SYN) && !t.has(segment::ACK) => {
                if self.conns.len() >= MAX_CONNS {
                    // Bounded memory under a SYN flood: beyond this, SYNs are plain SYNs.
                    return len;
                }
                let Some(listener) = self.listeners.get_mut(&t.dst.port()) else {
                    return len;
                };
                let mut scratch = std::mem::take(&mut self.scratch);
                let (n, conn) = listener.syn(&t, buf, len, &mut scratch, &mut self.counters, now);
                self.scratch = scratch;
                if let Some(conn) = conn {
                    self.conns.insert(tuple, Conn::Server(conn));
                }
                n
            }
            None => len,
        }
    }

    /// Forget a connection whose smoltcp socket is gone.
    pub(crate) fn forget(&mut self, tuple: &Tuple) {
        if let Some(Conn::Server(_)) = self.conns.remove(tuple) {
            if let Some(l) = self.listeners.get_mut(&tuple.0.port()) {
                l.release(tuple);
            }
        }
    }
}

impl crate::Stack {
    fn connection_tuple(&self, id: crate::SocketId) -> Option<Tuple> {
        match self.table.get(id)? {
            crate::socket::Entry::Tcp(crate::tcp::TcpSocket {
                state: crate::tcp::TcpState::Connection(c),
                ..
            }) => Some((c.local, c.remote)),
            _ => None,
        }
    }

    /// Switch Fast Open on (or off, with `None`) for a bound or listening stream socket: SYNs
    /// to its port get cookies, and data behind a valid cookie (S-01…S-09).
    ///
    /// # Errors
    /// [`ListenError::NoSuchSocket`](crate::ListenError::NoSuchSocket);
    /// [`ListenError::NotStream`](crate::ListenError::NotStream) for a datagram socket or one
    /// with no local port yet.
    pub fn set_fast_open(
        &mut self,
        id: crate::SocketId,
        config: Option<ServerConfig>,
    ) -> Result<(), crate::ListenError> {
        let port = match self.table.get(id) {
            Some(crate::socket::Entry::Tcp(s)) => s
                .local
                .map(|l| l.port())
                .ok_or(crate::ListenError::NotStream)?,
            Some(_) => return Err(crate::ListenError::NotStream),
            None => return Err(crate::ListenError::NoSuchSocket),
        };
        match config {
            Some(_) if self.fo.disabled => {}
            Some(c) => {
                self.fo.listeners.insert(port, server::Listener::new(c));
            }
            None => {
                self.fo.listeners.remove(&port);
            }
        }
        Ok(())
    }

    /// What Fast Open did on a client connection (`None`: not a Fast Open connection).
    pub fn fast_open_info(&self, id: crate::SocketId) -> Option<FastOpenInfo> {
        match self.fo.conns.get(&self.connection_tuple(id)?)? {
            Conn::Client(c) => Some(c.info),
            Conn::Server(_) => None,
        }
    }

    /// What Fast Open did on an accepted connection (`None`: its SYN had nothing to do with
    /// Fast Open, or its listener has it off).
    pub fn server_fast_open_info(&self, id: crate::SocketId) -> Option<ServerInfo> {
        match self.fo.conns.get(&self.connection_tuple(id)?)? {
            Conn::Server(s) => Some(s.info),
            Conn::Client(_) => None,
        }
    }

    /// How many more bytes the SYN of a Fast Open connection can carry: `None` when the
    /// connection does not carry data in its SYN (no cookie, or Fast Open off).
    pub fn syn_data_room(&self, id: crate::SocketId) -> Option<usize> {
        match self.fo.conns.get(&self.connection_tuple(id)?)? {
            Conn::Client(c) if c.syn_room() > 0 || !c.syn_data.is_empty() => Some(c.syn_room()),
            _ => None,
        }
    }

    /// The Fast Open counters.
    pub fn fast_open_counters(&self) -> Counters {
        self.fo.counters
    }

    /// The client cookie cache.
    pub fn cookie_cache(&self) -> Vec<CookieEntry> {
        self.fo.cache.entries()
    }

    /// Put an entry in the client cookie cache (as loaded from a file).
    pub fn insert_cookie(&mut self, entry: CookieEntry) {
        self.fo.cache.insert(entry);
    }

    /// A number that changes whenever the client cookie cache does (to save it when it has).
    pub fn cookie_cache_generation(&self) -> u64 {
        self.fo.cache.generation()
    }

    /// Empty the client cookie cache.
    pub fn flush_cookie_cache(&mut self) {
        self.fo.cache.flush();
    }

    /// How long Fast Open towards `server` is suspended after its last failure (C-08).
    pub fn fast_open_backoff(&self, server: std::net::IpAddr) -> Option<std::time::Duration> {
        self.fo
            .blackhole
            .backoff(server)
            .map(|d| std::time::Duration::from_micros(d.total_micros()))
    }
}
