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
//! The per-connection state lives with the connection (in its shard); what outlives
//! connections (cookie cache, suspensions, counters) lives in the layer (one per stack).

pub mod cache_file;
pub mod client;
pub mod cookie;
pub mod server;

use smoltcp::time::Instant;

pub use client::{Blackhole, CookieCache, CookieEntry, Fallback, FastOpenInfo, Mode};
pub use cookie::{Cookie, CookieKey, KeyError};
pub use server::{KeyUsed, ServerConfig, ServerInfo};

use crate::wire::Tcp;

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

/// One connection's Fast Open state, kept with the connection (in its shard).
#[derive(Debug)]
pub(crate) enum Conn {
    Client(client::Client),
    Server(server::Server),
}

impl Conn {
    /// Whether the layer rewrites or acts on what arrives for this connection (during the
    /// handshake), rather than only translating sequence numbers in place. Such segments have
    /// their checksum checked first.
    pub(crate) fn acts_on_ingress(&self) -> bool {
        match self {
            Conn::Client(c) => !c.done,
            Conn::Server(s) => !s.final_acked,
        }
    }
}

/// What the layer made of an arriving segment.
#[derive(Debug)]
pub(crate) struct Ingress {
    /// The segment's new length; 0 keeps it from smoltcp.
    pub(crate) len: usize,
    /// The client's final ACK of a Fast Open handshake: its listener's pending slot is free.
    pub(crate) final_ack: bool,
}

/// The Fast Open layer of one stack: what outlives connections (the cookie cache, the servers
/// Fast Open is suspended towards, the counters).
#[derive(Debug, Default)]
pub(crate) struct Layer {
    pub(crate) cache: CookieCache,
    pub(crate) blackhole: Blackhole,
    pub(crate) counters: Counters,
    scratch: Vec<u8>,
    /// Switched off by [`StackConfig::fast_open_layer`](crate::StackConfig::fast_open_layer).
    pub(crate) disabled: bool,
}

impl Layer {
    /// The state of a new client connection from `local` to `remote` that asked for `mode`.
    pub(crate) fn client(
        &self,
        mode: Mode,
        local: std::net::IpAddr,
        remote: std::net::IpAddr,
        mtu_room: usize,
        now: Instant,
    ) -> client::Client {
        client::Client::new(
            mode,
            local,
            remote,
            &self.cache,
            &self.blackhole,
            mtu_room,
            now,
        )
    }

    /// A SYN to a listener with Fast Open on, in `buf[..len]`: the option and the data come out
    /// of it. Returns its new length and, when Fast Open concerns it, the connection's state.
    pub(crate) fn server_syn(
        &mut self,
        listener: &mut server::Listener,
        t: &Tcp,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> (usize, Option<server::Server>) {
        listener.syn(t, buf, len, &mut self.scratch, &mut self.counters, now)
    }

    /// A segment a connection's smoltcp socket is about to send, in `buf[..len]` (`buf` is
    /// MTU-sized). Returns its new length (0 drops it); segments to play to smoltcp go to
    /// `inject`.
    pub(crate) fn egress(
        &mut self,
        conn: &mut Conn,
        t: &Tcp,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        inject: &mut Vec<Vec<u8>>,
    ) -> usize {
        match conn {
            Conn::Client(c) => c.egress(
                t,
                buf,
                len,
                &mut self.scratch,
                &mut self.counters,
                &mut self.blackhole,
                now,
            ),
            Conn::Server(s) => {
                let out = s.egress(t, buf, len, &mut self.scratch);
                inject.extend(out.inject);
                out.len
            }
        }
    }

    /// A segment that arrived for a connection, in `buf[..len]`. Segments to play to smoltcp
    /// after it go to `inject`, answers to send on smoltcp's behalf to `reply`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ingress(
        &mut self,
        conn: &mut Conn,
        t: &Tcp,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        inject: &mut Vec<Vec<u8>>,
        reply: &mut Vec<Vec<u8>>,
    ) -> Ingress {
        match conn {
            Conn::Client(c) => {
                let (len, follow) = c.ingress(
                    t,
                    buf,
                    len,
                    &mut self.cache,
                    &mut self.counters,
                    &mut self.blackhole,
                    now,
                );
                inject.extend(follow);
                Ingress {
                    len,
                    final_ack: false,
                }
            }
            Conn::Server(s) => {
                let out = s.ingress(t, buf, len);
                reply.extend(out.reply);
                if out.final_ack {
                    s.final_acked = true;
                }
                Ingress {
                    len: out.len,
                    final_ack: out.final_ack,
                }
            }
        }
    }
}
