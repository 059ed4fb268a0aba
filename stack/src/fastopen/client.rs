//! The client side: cookie requests, the cookie cache, SYN data, and what the SYN-ACK says.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use smoltcp::time::{Duration, Instant};

use super::cookie::Cookie;
use super::Counters;
use crate::wire::{self as segment, Tcp, ACK, FIN, OPT_FAST_OPEN, PSH, SYN};

/// What a client connection asked for (the `connectx` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// No Fast Open: a plain handshake, no option 34, never data in the SYN.
    #[default]
    Off,
    /// `CONNECT_DATA_IDEMPOTENT`: data rides in the SYN when a cookie is cached; otherwise the
    /// SYN asks for one.
    Cookie,
    /// `CONNECT_DATA_IDEMPOTENT | CONNECT_DATA_AUTHENTICATED`: data rides in the SYN without a
    /// cookie (the data authenticates itself), as Darwin does.
    NoCookie,
}

/// Why a Fast Open connection fell back to a plain handshake (or partly did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// No cookie was cached: the SYN asked for one and the data went after the handshake.
    NoCookie,
    /// Fast Open towards this server is suspended after an earlier failure (C-08).
    Blackhole,
    /// The SYN timed out and was retransmitted without option and data (C-07).
    SynRetransmitted,
    /// The SYN-ACK acknowledged none of the SYN data (an invalid cookie, or a server without
    /// Fast Open): it was sent after the handshake.
    DataNotAcked,
    /// The SYN-ACK acknowledged part of the SYN data; the rest was sent after the handshake.
    PartiallyAcked,
    /// The SYN-ACK acknowledged more than was sent: answered with RST (C-06).
    OverAck,
}

impl Fallback {
    /// A short name for reports (`"syn_retransmitted"`).
    pub fn name(self) -> &'static str {
        match self {
            Fallback::NoCookie => "no_cookie",
            Fallback::Blackhole => "blackhole",
            Fallback::SynRetransmitted => "syn_retransmitted",
            Fallback::DataNotAcked => "data_not_acked",
            Fallback::PartiallyAcked => "partially_acked",
            Fallback::OverAck => "over_ack",
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What Fast Open did on one client connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastOpenInfo {
    /// The SYN carried a cookie request.
    pub cookie_requested: bool,
    /// Length of the cookie the SYN-ACK carried, if any (valid or not).
    pub cookie_received: Option<usize>,
    /// Bytes of data the SYN carried.
    pub syn_data_sent: usize,
    /// Bytes of SYN data the SYN-ACK acknowledged.
    pub syn_data_acked: usize,
    /// Why Fast Open did not carry everything, if it did not.
    pub fallback: Option<Fallback>,
}

/// A cached cookie and the MSS of the SYN-ACK that brought it (C-02).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieEntry {
    /// The client's address.
    pub client: IpAddr,
    /// The server's address.
    pub server: IpAddr,
    /// The cookie, if a valid one was received (an invalid one still caches the MSS).
    pub cookie: Option<Cookie>,
    /// The server's MSS, if its SYN-ACK said.
    pub mss: Option<u16>,
}

/// Most entries the cookie cache and the suspension table hold (the client's peers are the
/// application's choice, but a program that talks to many servers must not grow them without
/// bound).
const MAX_ENTRIES: usize = 4096;

/// Cookies per (client address, server address), at most 4,096.
#[derive(Debug, Default, Clone)]
pub struct CookieCache {
    entries: HashMap<(IpAddr, IpAddr), CookieEntry>,
    /// Counts changes, so that a saved copy can tell it is out of date.
    generation: u64,
}

impl CookieCache {
    /// The entry for a pair of addresses.
    pub fn get(&self, client: IpAddr, server: IpAddr) -> Option<&CookieEntry> {
        self.entries.get(&(client, server))
    }

    /// Record what a SYN-ACK said: a valid cookie replaces the old one; an invalid one is never
    /// cached, but the MSS is.
    pub fn update(
        &mut self,
        client: IpAddr,
        server: IpAddr,
        cookie: Option<Cookie>,
        mss: Option<u16>,
    ) {
        let existed = self.entries.contains_key(&(client, server));
        if !existed && self.entries.len() >= MAX_ENTRIES {
            // Bounded, as Linux's tcp_metrics: an old entry makes room.
            if let Some(&any) = self.entries.keys().next() {
                self.entries.remove(&any);
            }
        }
        let e = self.entries.entry((client, server)).or_insert(CookieEntry {
            client,
            server,
            cookie: None,
            mss: None,
        });
        let before = *e;
        if cookie.is_some() {
            e.cookie = cookie;
        }
        if mss.is_some() {
            e.mss = mss;
        }
        if !existed || *e != before {
            self.generation += 1;
        }
    }

    /// Store an entry as is (loading a saved cache).
    pub fn insert(&mut self, entry: CookieEntry) {
        let key = (entry.client, entry.server);
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_ENTRIES {
            if let Some(&any) = self.entries.keys().next() {
                self.entries.remove(&any);
            }
        }
        if self.entries.insert((entry.client, entry.server), entry) != Some(entry) {
            self.generation += 1;
        }
    }

    /// A number that changes whenever the cache does.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every entry.
    pub fn entries(&self) -> Vec<CookieEntry> {
        let mut v: Vec<_> = self.entries.values().copied().collect();
        v.sort_by_key(|e| (e.client, e.server));
        v
    }

    /// Forget every cookie.
    pub fn flush(&mut self) {
        if !self.entries.is_empty() {
            self.entries.clear();
            self.generation += 1;
        }
    }
}

/// Servers towards which Fast Open is suspended after a failure, with exponential backoff
/// (C-08): 10 s after the first failure, doubling up to an hour; a success clears it.
#[derive(Debug, Default, Clone)]
pub struct Blackhole {
    servers: HashMap<IpAddr, (u32, Instant)>,
}

impl Blackhole {
    const BASE: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(3600);

    /// Whether Fast Open towards `server` is suspended at `now`.
    pub fn blocks(&self, server: IpAddr, now: Instant) -> bool {
        self.servers
            .get(&server)
            .is_some_and(|&(_, until)| now < until)
    }

    /// How long the current suspension of `server` lasts, if any.
    pub fn backoff(&self, server: IpAddr) -> Option<Duration> {
        self.servers.get(&server).map(|&(n, _)| Self::period(n))
    }

    fn period(failures: u32) -> Duration {
        let factor = 1u64 << failures.saturating_sub(1).min(20);
        Duration::from_micros((Self::BASE.total_micros() * factor).min(Self::MAX.total_micros()))
    }

    pub(crate) fn failure(&mut self, server: IpAddr, now: Instant) {
        if self.servers.len() >= MAX_ENTRIES && !self.servers.contains_key(&server) {
            // Bounded: suspensions that ran out go first, then any.
            self.servers.retain(|_, &mut (_, until)| now < until);
            if self.servers.len() >= MAX_ENTRIES {
                if let Some(&any) = self.servers.keys().next() {
                    self.servers.remove(&any);
                }
            }
        }
        let e = self.servers.entry(server).or_insert((0, now));
        e.0 = e.0.saturating_add(1);
        e.1 = now + Self::period(e.0);
    }

    pub(crate) fn success(&mut self, server: IpAddr) {
        self.servers.remove(&server);
    }

    /// How many servers Fast Open is (or was recently) suspended towards.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether no server is suspended.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

/// One client connection's Fast Open state.
#[derive(Debug)]
pub(crate) struct Client {
    mode: Mode,
    cookie: Option<Cookie>,
    /// The data offered for the SYN (a copy of the connection's first bytes).
    pub(crate) syn_data: Vec<u8>,
    /// Most bytes the SYN may carry.
    limit: usize,
    isn: Option<u32>,
    syns: u32,
    /// Bytes the first SYN carried.
    sent_in_syn: usize,
    /// SYN data the SYN-ACK acknowledged: added to outgoing sequence numbers from then on.
    pub(crate) offset: u32,
    /// The SYN-ACK has been seen.
    pub(crate) done: bool,
    pub(crate) info: FastOpenInfo,
}

impl Client {
    /// The state of a new connection from `local` to `remote` that asked for `mode`.
    pub(crate) fn new(
        mode: Mode,
        local: IpAddr,
        remote: IpAddr,
        cache: &CookieCache,
        blackhole: &Blackhole,
        mtu_room: usize,
        now: Instant,
    ) -> Client {
        let mut c = Client {
            mode,
            cookie: None,
            syn_data: Vec::new(),
            limit: 0,
            isn: None,
            syns: 0,
            sent_in_syn: 0,
            offset: 0,
            done: false,
            info: FastOpenInfo::default(),
        };
        if mode == Mode::Off {
            return c;
        }
        if blackhole.blocks(remote, now) {
            c.mode = Mode::Off;
            c.info.fallback = Some(Fallback::Blackhole);
            return c;
        }
        let entry = cache.get(local, remote);
        let mss = entry.and_then(|e| e.mss).map_or(mtu_room, usize::from);
        match mode {
            Mode::Cookie => match entry.and_then(|e| e.cookie) {
                Some(cookie) => {
                    c.cookie = Some(cookie);
                    // C-03: up to the cached MSS − 40 bytes.
                    c.limit = mss.saturating_sub(40).min(mtu_room);
                }
                None => {
                    c.info.cookie_requested = true;
                    c.info.fallback = Some(Fallback::NoCookie);
                }
            },
            Mode::NoCookie => c.limit = mss.saturating_sub(40).min(mtu_room),
            Mode::Off => {}
        }
        c
    }

    /// How many more bytes the SYN can carry (0 once it has gone, or without a cookie).
    pub(crate) fn syn_room(&self) -> usize {
        if self.syns > 0 {
            return 0;
        }
        self.limit.saturating_sub(self.syn_data.len())
    }

    /// Offer bytes for the SYN (the connection's first bytes); returns how many it will carry.
    pub(crate) fn offer(&mut self, data: &[u8]) -> usize {
        if self.syns > 0 {
            return 0;
        }
        let n = data
            .len()
            .min(self.limit.saturating_sub(self.syn_data.len()));
        self.syn_data.extend_from_slice(&data[..n]);
        n
    }

    /// Whether this connection will (or did) put anything Fast Open on the wire.
    pub(crate) fn active(&self) -> bool {
        self.mode != Mode::Off
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn egress(
        &mut self,
        t: &Tcp,
        buf: &mut [u8],
        len: usize,
        scratch: &mut Vec<u8>,
        counters: &mut Counters,
        blackhole: &mut Blackhole,
        now: Instant,
    ) -> usize {
        if t.has(SYN) && !t.has(ACK) {
            self.syns += 1;
            if self.syns > 1 {
                // C-07: smoltcp's retransmission is already plain; the data goes after the
                // handshake. A retransmitted Fast Open SYN suggests a middlebox that drops
                // them (C-08).
                if self.sent_in_syn > 0 || self.info.cookie_requested && self.syns == 2 {
                    if self.info.fallback != Some(Fallback::SynRetransmitted) {
                        counters.TCPFastOpenActiveFail += 1;
                        counters.TCPFastOpenBlackhole += 1;
                        blackhole.failure(t.dst.ip(), now);
                    }
                    self.info.fallback = Some(Fallback::SynRetransmitted);
                }
                return len;
            }
            self.isn = Some(t.seq);
            if !self.active() {
                return len;
            }
            let Some(pkt) = buf.get(..len) else {
                return len;
            };
            let mut opts = segment::without_option(t.options(pkt), OPT_FAST_OPEN);
            match (self.mode, self.cookie) {
                (Mode::Cookie, Some(cookie)) => {
                    opts.extend_from_slice(&[OPT_FAST_OPEN, 2 + cookie.as_bytes().len() as u8]);
                    opts.extend_from_slice(cookie.as_bytes());
                }
                (Mode::Cookie, None) => opts.extend_from_slice(&[OPT_FAST_OPEN, 2]),
                _ => {}
            }
            let padded = opts.len().div_ceil(4) * 4;
            let room = buf.len().saturating_sub(t.ip_len + 20 + padded);
            let data_len = self.syn_data.len().min(room);
            scratch.resize(buf.len(), 0);
            let Some(n) = segment::rebuild(pkt, t, &opts, &self.syn_data[..data_len], scratch)
            else {
                return len;
            };
            buf[..n].copy_from_slice(&scratch[..n]);
            self.sent_in_syn = data_len;
            self.info.syn_data_sent = data_len;
            return n;
        }
        if self.offset != 0 {
            let seq = t.seq.wrapping_add(self.offset);
            if let Some(pkt) = buf.get_mut(..len) {
                segment::set_seq_ack(pkt, t, seq, t.ack, 0);
            }
        }
        len
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ingress(
        &mut self,
        t: &Tcp,
        buf: &mut [u8],
        len: usize,
        cache: &mut CookieCache,
        counters: &mut Counters,
        blackhole: &mut Blackhole,
        _now: Instant,
    ) -> (usize, Option<Vec<u8>>) {
        let Some(isn) = self.isn else {
            return (len, None);
        };
        if t.has(SYN) && t.has(ACK) && !self.done {
            let acked = t.ack.wrapping_sub(isn.wrapping_add(1));
            if acked as usize > self.sent_in_syn {
                // C-06: more than was sent. smoltcp answers it with RST; nothing is cached.
                self.info.fallback = Some(Fallback::OverAck);
                return (len, None);
            }
            let Some(pkt) = buf.get(..len) else {
                return (len, None);
            };
            let opts = t.options(pkt);
            if let Some(body) = segment::find_option(opts, OPT_FAST_OPEN) {
                self.info.cookie_received = Some(body.len());
                // C-02; an invalid cookie is never cached, the MSS still is.
                cache.update(
                    t.dst.ip(),
                    t.src.ip(),
                    Cookie::new(body),
                    segment::mss(opts),
                );
            } else if self.active() {
                cache.update(t.dst.ip(), t.src.ip(), None, segment::mss(opts));
            }
            self.done = true;
            self.info.syn_data_acked = acked as usize;
            if self.sent_in_syn > 0 {
                if acked as usize == self.sent_in_syn {
                    counters.TCPFastOpenActive += 1;
                    if self.info.fallback != Some(Fallback::SynRetransmitted) {
                        blackhole.success(t.src.ip());
                    }
                } else if acked == 0 {
                    counters.TCPFastOpenActiveFail += 1;
                    self.info.fallback.get_or_insert(Fallback::DataNotAcked);
                } else {
                    self.info.fallback.get_or_insert(Fallback::PartiallyAcked);
                }
            } else if self.mode == Mode::Cookie && self.info.fallback == Some(Fallback::NoCookie) {
                // A cookie request answered: the path carries option 34.
                blackhole.success(t.src.ip());
            }
            if acked != 0 {
                self.offset = acked;
                if let Some(pkt) = buf.get_mut(..len) {
                    segment::set_seq_ack(pkt, t, t.seq, isn.wrapping_add(1), 0);
                }
            }
            // C-09: smoltcp takes neither data nor FIN on a SYN-ACK; hand them over as the
            // segment that follows it.
            let Some(pkt) = buf.get(..len) else {
                return (len, None);
            };
            let payload = t.payload(pkt).to_vec();
            if payload.is_empty() && !t.has(FIN) {
                return (len, None);
            }
            let flags = ACK | (t.flags & FIN) | if payload.is_empty() { 0 } else { PSH };
            let scale = segment::find_option(t.options(pkt), 3)
                .and_then(|b| b.first().copied())
                .unwrap_or(0)
                .min(14);
            let window = ((u32::from(t.window) >> scale) as u16).max(1);
            let mut follow = vec![0u8; 60 + payload.len()];
            let follow = segment::build(
                t.src,
                t.dst,
                t.seq.wrapping_add(1),
                isn.wrapping_add(1),
                ACK | flags,
                window,
                &payload,
                &mut follow,
            )
            .map(|n| follow[..n].to_vec());
            let Some(nt) = segment::parse(pkt) else {
                return (len, None);
            };
            let opts = nt.options(pkt).to_vec();
            let mut plain = pkt.to_vec();
            if let Some(pos) = plain.get_mut(nt.ip_len + 13) {
                *pos &= !(FIN | PSH);
            }
            let Some(plain_t) = segment::parse(&plain) else {
                return (len, None);
            };
            let mut out = vec![0u8; plain.len()];
            let Some(n) = segment::rebuild(&plain, &plain_t, &opts, &[], &mut out) else {
                return (len, None);
            };
            buf[..n].copy_from_slice(&out[..n]);
            return (n, follow);
        }
        if self.offset != 0 && t.has(ACK) {
            let ack = t.ack.wrapping_sub(self.offset);
            if let Some(pkt) = buf.get_mut(..len) {
                segment::set_seq_ack(pkt, t, t.seq, ack, self.offset);
            }
        }
        (len, None)
    }
}
