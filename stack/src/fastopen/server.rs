//! The server side: cookies for those who ask, SYN data behind a valid cookie handed to the
//! application at once.

use super::cookie::{Cookie, CookieKey};
use crate::wire::{self as segment, Tcp, ACK, OPT_FAST_OPEN, PSH, SYN};
use smoltcp::time::{Duration, Instant};

use super::Counters;
use crate::ids::{SocketId, Tuple};

use crate::wire::OPT_WINDOW_SCALE;

/// Fast Open settings of one listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Signs new cookies and validates (S-01).
    pub primary: CookieKey,
    /// Validates only: a cookie valid under it alone is accepted and answered with a fresh
    /// primary cookie (S-07).
    pub backup: Option<CookieKey>,
    /// Most Fast Open connections not yet fully established; beyond, a SYN is handled as a
    /// plain one (S-06, RFC 7413 §5.1).
    pub max_pending: usize,
    /// Accept SYN data without a cookie (S-09); off by default.
    pub cookieless: bool,
}

impl ServerConfig {
    /// A configuration signing with `primary`, 16 pending connections at most.
    pub fn new(primary: CookieKey) -> ServerConfig {
        ServerConfig {
            primary,
            backup: None,
            max_pending: 16,
            cookieless: false,
        }
    }
}

/// Which key validated a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsed {
    /// The primary key.
    Primary,
    /// The backup key.
    Backup,
}

/// What Fast Open did on one accepted connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// The SYN asked for a cookie.
    pub cookie_requested: bool,
    /// Whether the SYN's cookie was valid (`None`: it carried none).
    pub cookie_valid: Option<bool>,
    /// Bytes of SYN data given to the application.
    pub syn_data: usize,
    /// The key that validated the cookie.
    pub key: Option<KeyUsed>,
}

/// How long a Fast Open connection counts as pending without the client's final ACK. A flood
/// of valid-cookie SYNs whose senders never answer cannot hold the listener's pending slots
/// longer than this.
const PENDING_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) config: ServerConfig,
    /// Fast Open connections still waiting for the client's final ACK, and since when.
    pending: Vec<(Tuple, Instant)>,
}

impl Listener {
    pub(crate) fn new(config: ServerConfig) -> Listener {
        Listener {
            config,
            pending: Vec::new(),
        }
    }

    /// A connection stops counting as pending (its final ACK came, or it is gone).
    pub(crate) fn release(&mut self, tuple: &Tuple) {
        self.pending.retain(|(t, _)| t != tuple);
    }

    /// A SYN to this listener: decide what Fast Open does, and take the option and the data out
    /// of it (smoltcp would drop the data anyway; the cookie is ours to check).
    pub(crate) fn syn(
        &mut self,
        t: &Tcp,
        buf: &mut [u8],
        len: usize,
        scratch: &mut Vec<u8>,
        counters: &mut Counters,
        now: Instant,
    ) -> (usize, Option<Server>) {
        let Some(pkt) = buf.get(..len) else {
            return (len, None);
        };
        let opts = t.options(pkt);
        let data = t.payload(pkt);
        let (client, server) = (t.src.ip(), t.dst.ip());
        let fresh = self.config.primary.cookie(client, server);
        let mut info = ServerInfo::default();
        let mut send_cookie = None;
        let mut accept = false;
        self.pending
            .retain(|&(_, since)| now < since + PENDING_TIMEOUT);
        let room = self.pending.len() < self.config.max_pending;
        match segment::find_option(opts, OPT_FAST_OPEN) {
            Some([]) => {
                // S-01: a cookie request.
                counters.TCPFastOpenCookieReqd += 1;
                info.cookie_requested = true;
                send_cookie = fresh;
            }
            // A malformed length is no cookie at all (as Linux parses it): the SYN is plain.
            Some(body) if Cookie::new(body).is_none() => {}
            Some(body) => {
                let cookie = Cookie::new(body);
                let key = if cookie.is_some() && cookie == fresh {
                    Some(KeyUsed::Primary)
                } else if cookie.is_some()
                    && self.config.backup.and_then(|k| k.cookie(client, server)) == cookie
                {
                    Some(KeyUsed::Backup)
                } else {
                    None
                };
                info.cookie_valid = Some(key.is_some());
                info.key = key;
                match key {
                    None => {
                        // S-03: drop the data, offer a valid cookie.
                        counters.TCPFastOpenPassiveFail += 1;
                        send_cookie = fresh;
                    }
                    Some(key) if room => {
                        // S-02 (and S-07: a backup-key cookie gets a fresh primary one).
                        accept = true;
                        counters.TCPFastOpenPassive += 1;
                        if key == KeyUsed::Backup {
                            counters.TCPFastOpenPassiveAltKey += 1;
                            send_cookie = fresh;
                        }
                    }
                    Some(_) => counters.TCPFastOpenListenOverflow += 1,
                }
            }
            None if self.config.cookieless && !data.is_empty() && room => {
                // S-09.
                accept = true;
                counters.TCPFastOpenPassive += 1;
            }
            // S-04: data without the option is dropped; no cookie is offered.
            None => {}
        }
        if !accept && send_cookie.is_none() {
            return (len, None);
        }
        let stripped = segment::without_option(opts, OPT_FAST_OPEN);
        let window_scale = segment::find_option(opts, OPT_WINDOW_SCALE)
            .and_then(|b| b.first().copied())
            .map_or(0, |s| s.min(14));
        let s = Server {
            data: if accept { data.to_vec() } else { Vec::new() },
            accept,
            client_isn: t.seq,
            client_window: ((u32::from(t.window) >> window_scale) as u16).max(1),
            send_cookie,
            synack: None,
            final_acked: false,
            server_isn: None,
            listener: None,
            info: ServerInfo {
                syn_data: if accept { data.len() } else { 0 },
                ..info
            },
        };
        if accept {
            self.pending.push(((t.dst, t.src), now));
        }
        scratch.resize(buf.len(), 0);
        match segment::rebuild(pkt, t, &stripped, &[], scratch) {
            Some(n) => {
                buf[..n].copy_from_slice(&scratch[..n]);
                (n, Some(s))
            }
            None => (len, Some(s)),
        }
    }
}

/// One server connection's Fast Open state.
#[derive(Debug)]
pub(crate) struct Server {
    data: Vec<u8>,
    accept: bool,
    client_isn: u32,
    client_window: u16,
    send_cookie: Option<Cookie>,
    /// The SYN-ACK as sent, to answer a retransmitted SYN (smoltcp, already ESTABLISHED by
    /// then, would not).
    synack: Option<Vec<u8>>,
    pub(crate) final_acked: bool,
    server_isn: Option<u32>,
    pub(crate) info: ServerInfo,
    /// The listener whose pending limit this connection counts against.
    pub(crate) listener: Option<SocketId>,
}

/// What to do after a packet of a server connection.
pub(crate) struct Out {
    pub(crate) len: usize,
    pub(crate) inject: Vec<Vec<u8>>,
    pub(crate) reply: Vec<Vec<u8>>,
    pub(crate) final_ack: bool,
}

impl Server {
    /// smoltcp's SYN-ACK: add the cookie, acknowledge the SYN data, and play the client's ACK
    /// and data to smoltcp.
    pub(crate) fn egress(
        &mut self,
        t: &Tcp,
        buf: &mut [u8],
        len: usize,
        scratch: &mut Vec<u8>,
    ) -> Out {
        let mut out = Out {
            len,
            inject: Vec::new(),
            reply: Vec::new(),
            final_ack: false,
        };
        if !(t.has(SYN) && t.has(ACK)) {
            return out;
        }
        let Some(pkt) = buf.get(..len) else {
            return out;
        };
        let mut opts = segment::without_option(t.options(pkt), OPT_FAST_OPEN);
        if let Some(c) = self.send_cookie {
            opts.extend_from_slice(&[OPT_FAST_OPEN, 2 + c.as_bytes().len() as u8]);
            opts.extend_from_slice(c.as_bytes());
        }
        scratch.resize(buf.len(), 0);
        let Some(n) = segment::rebuild(pkt, t, &opts, &[], scratch) else {
            return out;
        };
        buf[..n].copy_from_slice(&scratch[..n]);
        let Some(nt) = segment::parse(&buf[..n]) else {
            return out;
        };
        let ack = t.ack.wrapping_add(self.data.len() as u32);
        segment::set_seq_ack(&mut buf[..n], &nt, nt.seq, ack, 0);
        out.len = n;
        self.synack = Some(buf[..n].to_vec());
        if self.accept && self.server_isn.is_none() {
            self.server_isn = Some(t.seq);
            let (client, server) = (t.dst, t.src);
            let (seq, ack) = (self.client_isn.wrapping_add(1), t.seq.wrapping_add(1));
            let mut p = vec![0u8; 40 + 20 + self.data.len()];
            if let Some(m) = segment::build(
                client,
                server,
                seq,
                ack,
                ACK,
                self.client_window,
                &[],
                &mut p,
            ) {
                out.inject.push(p[..m].to_vec());
            }
            if !self.data.is_empty() {
                // From here on the data lives in smoltcp's receive buffer.
                let data = std::mem::take(&mut self.data);
                if let Some(m) = segment::build(
                    client,
                    server,
                    seq,
                    ack,
                    ACK | PSH,
                    self.client_window,
                    &data,
                    &mut p,
                ) {
                    out.inject.push(p[..m].to_vec());
                }
            }
        }
        out
    }

    /// A packet from the client.
    pub(crate) fn ingress(&mut self, t: &Tcp, _buf: &mut [u8], len: usize) -> Out {
        let mut out = Out {
            len,
            inject: Vec::new(),
            reply: Vec::new(),
            final_ack: false,
        };
        if t.has(SYN) && !t.has(ACK) && self.accept && self.server_isn.is_some() {
            // The client did not get our SYN-ACK. smoltcp, already ESTABLISHED, would not send
            // it again: do so here, and keep the SYN from smoltcp.
            if let Some(synack) = &self.synack {
                out.reply.push(synack.clone());
            }
            out.len = 0;
            return out;
        }
        if let Some(isn) = self.server_isn {
            if t.has(ACK) && !self.final_acked && t.ack.wrapping_sub(isn) as i32 >= 1 {
                out.final_ack = true;
            }
        }
        out
    }
}
