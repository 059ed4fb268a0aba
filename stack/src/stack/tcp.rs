//! TCP: connect, listen and accept, send and receive, shutdown and close, on smoltcp sockets
//! that each live in a shard of their own.
//!
//! smoltcp keeps no backlog: a listening socket *becomes* the connection when a SYN arrives. So
//! the stack keeps the listen queue itself, as Linux does (`inet_csk_reqsk_queue`,
//! `sk_acceptq`): a SYN that finds no connection and a listener on its port gets a fresh smoltcp
//! socket of its own, listening on exactly that address, and is handed to it — unless the accept
//! queue is full (`ListenOverflows`) or too many handshakes are half open (`TCPReqQFullDrop`),
//! in which case the SYN is dropped and counted (`ListenDrops`), never answered with a RST: the
//! client retransmits.
//!
//! A connection that closes first on our side leaves a compact TIME-WAIT entry (the `demux`
//! module) and gives its smoltcp socket and buffers back at once.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

use super::socket::{Entry, Readiness, Shutdown};
use super::Stack;
use crate::addr::{from_smoltcp, to_smoltcp};
use crate::config::CongestionControl;
use crate::demux::{ack_segment, TimeWait};
use crate::error::{
    AcceptError, BindError, ConnectError, ConnectionError, ListenError, RecvError, SendError,
    ShutdownError, SocketOptionError,
};
use crate::fastopen;
use crate::ids::{Family, IfaceId, Proto, ShardId, SocketId};
use crate::ports::Holder;
use crate::shard::{Kind, Owner, TcpConn, WireSeq};
use crate::wire::Tcp;

/// Where a connection should come from: `sae_srcif` and `sae_srcaddr` of `connectx`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Leave through this interface.
    pub interface: Option<IfaceId>,
    /// Bind to this source (port 0: an ephemeral port) before connecting.
    pub source: Option<SocketAddr>,
    /// TCP Fast Open (`CONNECT_DATA_IDEMPOTENT`, `CONNECT_DATA_AUTHENTICATED`).
    pub fast_open: fastopen::Mode,
}

/// Progress of a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectStatus {
    /// The handshake is under way.
    InProgress,
    /// The connection is established (it may have closed since).
    Connected,
    /// The attempt failed.
    Failed(ConnectionError),
}

/// What became of a SYN to a listener.
#[derive(Debug)]
pub(crate) enum Admission {
    /// A connection of its own: hand it the SYN (its new length).
    Shard(ShardId, usize),
    /// The half-open handshakes are at their bound: answer with this SYN-ACK (a SYN cookie).
    Cookie(Vec<u8>),
    /// Dropped, and counted.
    Dropped,
}

/// What an ACK that found no connection on a listener's port brought.
#[derive(Debug)]
pub(crate) enum CookieAck {
    /// Not a cookie of ours: answered as any stray segment.
    NotOurs,
    /// A good cookie, but the accept queue is full: dropped, and counted.
    Dropped,
    /// A good cookie: a connection, to which this SYN is replayed before the ACK.
    Shard(ShardId, Vec<u8>),
}

#[derive(Debug)]
pub(crate) struct TcpSocket {
    pub(crate) family: Family,
    /// Bound address and port, if bound.
    pub(crate) local: Option<SocketAddr>,
    pub(crate) state: TcpState,
    /// An error not yet reported.
    pub(crate) error: Option<ConnectionError>,
    /// Fast Open on this (bound or listening) socket's SYNs (boxed: most have none).
    pub(crate) fast_open: Option<Box<fastopen::server::Listener>>,
    /// Its congestion control, if set (`None`: the stack's); a listener's connections inherit
    /// it.
    pub(crate) congestion: Option<CongestionControl>,
}

#[derive(Debug)]
pub(crate) enum TcpState {
    Fresh,
    Listening(Listener),
    Connection(Conn),
}

#[derive(Debug)]
pub(crate) struct Listener {
    backlog: usize,
    /// Established connections waiting for `accept`.
    accept: VecDeque<ShardId>,
    /// Handshakes under way.
    pending: HashSet<ShardId>,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) shard: ShardId,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    /// Reached ESTABLISHED at some point.
    pub(crate) established: bool,
    /// The connection is over (closed normally, reset, refused or timed out).
    ended: bool,
    shut_read: bool,
    shut_write: bool,
    /// Data queued before the handshake finished (`connectx` iov data, a write on a
    /// `CONNECT_RESUME_ON_READ_WRITE` socket); it enters the connection once established.
    early: Vec<u8>,
}

impl TcpSocket {
    pub(crate) fn new(family: Family) -> TcpSocket {
        TcpSocket {
            family,
            local: None,
            state: TcpState::Fresh,
            error: None,
            fast_open: None,
            congestion: None,
        }
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        match &self.state {
            TcpState::Connection(c) => c.local,
            _ => self
                .local
                .unwrap_or(SocketAddr::new(self.family.unspecified(), 0)),
        }
    }

    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match &self.state {
            TcpState::Connection(c) => Some(c.remote),
            _ => None,
        }
    }
}

fn endpoint(addr: SocketAddr) -> IpEndpoint {
    IpEndpoint::new(to_smoltcp(addr.ip()), addr.port())
}

fn socket_addr(ep: IpEndpoint) -> SocketAddr {
    SocketAddr::new(from_smoltcp(ep.addr), ep.port)
}

pub(crate) fn micros(d: std::time::Duration) -> Duration {
    Duration::from_micros(d.as_micros().min(u128::from(u64::MAX)) as u64)
}

/// States in which the handshake is over and the connection is (or was) synchronized.
fn synchronized(state: tcp::State) -> bool {
    !matches!(
        state,
        tcp::State::Closed | tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived
    )
}

impl Stack {
    /// A closed socket for a new connection: a spare one if the stack kept one, else a new one.
    fn new_tcp_socket(&mut self, congestion: Option<CongestionControl>) -> tcp::Socket<'static> {
        let mut s = self.shards.spare_tcp().unwrap_or_else(|| {
            let rx = tcp::SocketBuffer::new(vec![0u8; self.config.tcp_rx_buffer]);
            let tx = tcp::SocketBuffer::new(vec![0u8; self.config.tcp_tx_buffer]);
            tcp::Socket::new(rx, tx)
        });
        s.set_nagle_enabled(self.config.nagle);
        s.set_ack_delay(self.config.ack_delay.map(micros));
        // With the recovery layer on, congestion control is the layer's (it tells smoltcp
        // how far to send through the window smoltcp sees).
        let algorithm = if self.config.loss_recovery {
            CongestionControl::None
        } else {
            congestion.unwrap_or(self.config.congestion_control)
        };
        s.set_congestion_control(match algorithm {
            CongestionControl::None => tcp::CongestionControl::None,
            CongestionControl::Reno => tcp::CongestionControl::Reno,
            // smoltcp has no BBR: its CUBIC stands in when the layer is off.
            CongestionControl::Cubic | CongestionControl::Bbr => tcp::CongestionControl::Cubic,
        });
        s
    }

    /// The application read `n` bytes of a connection (the recovery layer sizes the window
    /// it advertises by what the application reads).
    fn count_read(&mut self, shard: ShardId, n: usize) {
        if let Some(c) = self.shards.get_mut(shard).and_then(|s| s.conn_mut()) {
            c.recovery.read(n);
        }
    }

    /// The loss recovery state of a new connection on `iface`, with the congestion control of
    /// the socket it comes from, if set.
    fn recovery_conn(
        &self,
        iface: IfaceId,
        v4: bool,
        congestion: Option<CongestionControl>,
    ) -> crate::recovery::Conn {
        let mtu = self.ifaces[iface.0].config.mtu;
        let mss = mtu.saturating_sub(if v4 { 40 } else { 60 });
        self.recovery.conn(mss as u32, congestion)
    }

    /// The congestion control set on a socket, if any.
    fn socket_congestion(&self, id: SocketId) -> Option<CongestionControl> {
        match self.sockets.get(id.0) {
            Some(Entry::Tcp(s)) => s.congestion,
            _ => None,
        }
    }

    /// Set a stream socket's congestion control (`TCP_CONGESTION`): its connection's from now
    /// on (the window carries over), or the one it will make; a listener's, the one its
    /// connections start with.
    pub(crate) fn tcp_set_congestion_control(
        &mut self,
        id: SocketId,
        algorithm: CongestionControl,
        now: Instant,
    ) -> Result<(), SocketOptionError> {
        let shard = match self.sockets.get_mut(id.0) {
            Some(Entry::Tcp(s)) => {
                s.congestion = Some(algorithm);
                match &s.state {
                    TcpState::Connection(c) => Some(c.shard),
                    _ => None,
                }
            }
            Some(_) => return Err(SocketOptionError::NotStream),
            None => return Err(SocketOptionError::NoSuchSocket),
        };
        let loss_recovery = self.config.loss_recovery;
        if let Some(sh) = shard.and_then(|sh| self.shards.get_mut(sh)) {
            if let Some(c) = sh.conn_mut() {
                self.recovery
                    .set_congestion_control(&mut c.recovery, algorithm, now);
            }
            if !loss_recovery {
                sh.tcp_mut().set_congestion_control(match algorithm {
                    CongestionControl::None => tcp::CongestionControl::None,
                    CongestionControl::Reno => tcp::CongestionControl::Reno,
                    CongestionControl::Cubic | CongestionControl::Bbr => {
                        tcp::CongestionControl::Cubic
                    }
                });
            }
        }
        Ok(())
    }

    /// A stream socket's congestion control: the one set on it, else the stack's.
    pub(crate) fn tcp_congestion_control(
        &self,
        id: SocketId,
    ) -> Result<CongestionControl, SocketOptionError> {
        match self.sockets.get(id.0) {
            Some(Entry::Tcp(s)) => Ok(s.congestion.unwrap_or(self.config.congestion_control)),
            Some(_) => Err(SocketOptionError::NotStream),
            None => Err(SocketOptionError::NoSuchSocket),
        }
    }

    fn tcp_entry(&mut self, id: SocketId) -> Option<&mut TcpSocket> {
        match self.sockets.get_mut(id.0)? {
            Entry::Tcp(s) => Some(s),
            Entry::Udp(_) => None,
        }
    }

    /// The smoltcp socket of an application's connection.
    fn conn_socket(&self, shard: ShardId) -> Option<&tcp::Socket<'static>> {
        self.shards.get(shard).map(|s| s.tcp())
    }

    fn conn_socket_mut(&mut self, shard: ShardId) -> Option<&mut tcp::Socket<'static>> {
        self.shards.get_mut(shard).map(|s| s.tcp_mut())
    }

    pub(crate) fn tcp_listen(&mut self, id: SocketId, backlog: usize) -> Result<(), ListenError> {
        let s = match self.sockets.get_mut(id.0) {
            Some(Entry::Tcp(s)) => s,
            Some(Entry::Udp(_)) => return Err(ListenError::NotStream),
            None => return Err(ListenError::NoSuchSocket),
        };
        let backlog = backlog.min(self.config.max_backlog);
        match &mut s.state {
            TcpState::Listening(l) => {
                l.backlog = backlog;
                return Ok(());
            }
            TcpState::Connection(_) => return Err(ListenError::Connected),
            TcpState::Fresh => {}
        }
        if s.local.is_none() {
            let any = SocketAddr::new(s.family.unspecified(), 0);
            self.bind(id, any)?;
        }
        let Some(s) = self.tcp_entry(id) else {
            return Err(ListenError::NoSuchSocket);
        };
        s.state = TcpState::Listening(Listener {
            backlog,
            accept: VecDeque::new(),
            pending: HashSet::new(),
        });
        let (local, family) = (s.local_addr(), s.family);
        self.demux.add_listener(local, family, id);
        Ok(())
    }

    pub(crate) fn tcp_accept(
        &mut self,
        id: SocketId,
    ) -> Result<(SocketId, SocketAddr), AcceptError> {
        let (family, shard, congestion) = match self.sockets.get_mut(id.0) {
            Some(Entry::Tcp(TcpSocket {
                family,
                state: TcpState::Listening(l),
                congestion,
                ..
            })) => (
                *family,
                l.accept.pop_front().ok_or(AcceptError::WouldBlock)?,
                *congestion,
            ),
            Some(_) => return Err(AcceptError::NotListening),
            None => return Err(AcceptError::NoSuchSocket),
        };
        let Some(sh) = self.shards.get(shard) else {
            return Err(AcceptError::WouldBlock);
        };
        let Some((local, remote)) = sh.conn().map(|c| c.tuple) else {
            return Err(AcceptError::WouldBlock);
        };
        // Reset while queued (S-08): its data stays readable, then the reset shows.
        let reset = sh.tcp().state() == tcp::State::Closed;
        let new = SocketId(self.sockets.insert(Entry::Tcp(TcpSocket {
            family,
            local: Some(local),
            state: TcpState::Connection(Conn {
                shard,
                local,
                remote,
                established: true,
                ended: reset,
                shut_read: false,
                shut_write: false,
                early: Vec::new(),
            }),
            error: reset.then_some(ConnectionError::Reset),
            fast_open: None,
            congestion,
        })));
        if let Some(c) = self.shards.get_mut(shard).and_then(|s| s.conn_mut()) {
            c.owner = Owner::Socket(new);
        }
        Ok((new, remote))
    }

    /// What a connection to `remote` would start from, after the checks every connect makes:
    /// the socket's state (a failed attempt reports its error now, once), the families, the
    /// port, the route and the source address.
    fn tcp_connect_target(
        &mut self,
        id: SocketId,
        remote: SocketAddr,
        opts: ConnectOptions,
    ) -> Result<ConnectTarget, ConnectError> {
        let Some(s) = self.tcp_entry(id) else {
            return Err(ConnectError::NoSuchSocket);
        };
        let stale = match &s.state {
            TcpState::Listening(_) => return Err(ConnectError::Listening),
            TcpState::Connection(c) if c.established => return Err(ConnectError::AlreadyConnected),
            TcpState::Connection(c) if !c.ended => return Err(ConnectError::InProgress),
            // A failed attempt: a new one may start; its error was already reported or is
            // reported now.
            TcpState::Connection(_) => {
                if let Some(e) = s.error.take() {
                    return Err(ConnectError::Connection(e));
                }
                true
            }
            TcpState::Fresh => false,
        };
        let (family, bound) = (s.family, s.local);
        if !family.admits(&remote.ip()) || opts.source.is_some_and(|a| !family.admits(&a.ip())) {
            return Err(ConnectError::FamilyMismatch);
        }
        if remote.port() == 0 {
            return Err(ConnectError::InvalidPort);
        }
        let want_src = opts.source.map(|a| a.ip()).or(bound.map(|a| a.ip()));
        let (iface, src) = self.path(remote.ip(), opts.interface, want_src)?;
        Ok(ConnectTarget {
            stale,
            bound,
            iface,
            src,
        })
    }

    /// What [`Stack::connect`] checks, done now for a connection whose SYN waits
    /// (`CONNECT_RESUME_ON_READ_WRITE`): the socket's state, the families, the port, the route
    /// and the source address; then a fresh socket is bound to that source (and the port asked
    /// for, or an ephemeral one), so that its name is known at once and the connection leaves
    /// from there when it starts.
    pub(crate) fn tcp_prepare_connect(
        &mut self,
        id: SocketId,
        remote: SocketAddr,
        opts: ConnectOptions,
    ) -> Result<(), ConnectError> {
        let t = self.tcp_connect_target(id, remote, opts)?;
        let (fresh, bound, src) = (!t.stale, t.bound, t.src);
        if fresh && bound.is_none() {
            // The port the connection will use, chosen as connect chooses it (for this
            // destination), and held by a binding until then.
            let port = match opts.source.map_or(0, |a| a.port()) {
                0 => self
                    .connection_port(src, remote)
                    .map_err(ConnectError::Bind)?,
                p => p,
            };
            self.bind(id, SocketAddr::new(src, port))
                .map_err(ConnectError::Bind)?;
        }
        Ok(())
    }

    /// An ephemeral port for a connection from `src` to `remote` whose tuple is unused
    /// ([`crate::ports::Ports::pick_for_connection`]).
    fn connection_port(&mut self, src: IpAddr, remote: SocketAddr) -> Result<u16, BindError> {
        let demux = &self.demux;
        self.ports.pick_for_connection(
            src,
            remote,
            &self.config.ephemeral_ports,
            &mut self.rng,
            |p| !demux.tuple_in_use(&(SocketAddr::new(src, p), remote)),
        )
    }

    pub(crate) fn tcp_connect(
        &mut self,
        id: SocketId,
        remote: SocketAddr,
        opts: ConnectOptions,
        now: Instant,
    ) -> Result<(), ConnectError> {
        let ConnectTarget {
            stale,
            bound,
            iface,
            src,
        } = self.tcp_connect_target(id, remote, opts)?;
        if stale {
            self.drop_connection(id);
        }
        let bytes = self.tcp_buffer_size();
        if !self.buffers_fit(bytes) {
            return Err(ConnectError::NoBuffers);
        }
        // The source port: the bound one, the one asked for, or an ephemeral one whose tuple is
        // unused.
        let (port, explicit) = match (bound, opts.source) {
            (Some(b), _) => (b.port(), false),
            (None, Some(a)) if a.port() != 0 => {
                let p = self.ports.bind(
                    Proto::Tcp,
                    src,
                    a.port(),
                    Holder::Socket(id),
                    &self.config.ephemeral_ports,
                    &mut self.rng,
                )?;
                (p, true)
            }
            (None, _) => (self.connection_port(src, remote)?, false),
        };
        let local = SocketAddr::new(src, port);
        if self.demux.tuple_in_use(&(local, remote)) {
            if explicit {
                self.ports.release(Proto::Tcp, port, Holder::Socket(id));
            }
            return Err(ConnectError::Bind(BindError::AddressInUse));
        }
        let congestion = self.socket_congestion(id);
        let mut sock = self.new_tcp_socket(congestion);
        let cx = self.ifaces[iface.0].iface.context();
        if sock
            .connect(
                cx,
                endpoint(remote),
                IpListenEndpoint::from(endpoint(local)),
            )
            .is_err()
        {
            // Only unspecified addresses or port 0 make smoltcp refuse, and both were checked.
            if explicit {
                self.ports.release(Proto::Tcp, port, Holder::Socket(id));
            }
            return Err(ConnectError::InvalidPort);
        }
        let fo = (opts.fast_open != fastopen::Mode::Off && !self.fo.disabled).then(|| {
            let mtu = self.ifaces[iface.0].config.mtu;
            let room = mtu.saturating_sub(if src.is_ipv4() { 40 } else { 60 });
            Box::new(fastopen::Conn::Client(self.fo.client(
                opts.fast_open,
                src,
                remote.ip(),
                room,
                now,
            )))
        });
        let recovery = self.recovery_conn(iface, src.is_ipv4(), congestion);
        let conn = TcpConn {
            tuple: (local, remote),
            owner: Owner::Socket(id),
            deadline: Some(now + micros(self.config.connect_timeout)),
            last_state: tcp::State::SynSent,
            fo,
            syn_isn: None,
            wire: WireSeq::default(),
            inject: Vec::new(),
            cookie_isn: None,
            shift: 0,
            recovery,
            registered: true,
        };
        let shard = self
            .shards
            .insert(iface, sock, bytes, Kind::Tcp(Box::new(conn)));
        self.demux.insert_connection((local, remote), shard);
        self.ports.connection_added(port);
        let Some(s) = self.tcp_entry(id) else {
            return Err(ConnectError::NoSuchSocket);
        };
        if explicit {
            s.local = Some(local);
        }
        s.state = TcpState::Connection(Conn {
            shard,
            local,
            remote,
            established: false,
            ended: false,
            shut_read: false,
            shut_write: false,
            early: Vec::new(),
        });
        Ok(())
    }

    pub(crate) fn tcp_connect_status(&self, s: &TcpSocket) -> Option<ConnectStatus> {
        match &s.state {
            TcpState::Connection(c) => Some(if c.established {
                ConnectStatus::Connected
            } else if c.ended {
                ConnectStatus::Failed(s.error.unwrap_or(ConnectionError::Refused))
            } else {
                ConnectStatus::InProgress
            }),
            _ => None,
        }
    }

    pub(crate) fn tcp_queue_early(
        &mut self,
        id: SocketId,
        data: &[u8],
    ) -> Result<usize, SendError> {
        let cap = self.config.tcp_tx_buffer;
        let (n, shard) = match self.tcp_entry(id) {
            Some(TcpSocket {
                state: TcpState::Connection(c),
                ..
            }) if !c.established && !c.ended => {
                let n = data.len().min(cap.saturating_sub(c.early.len()));
                c.early.extend_from_slice(&data[..n]);
                (n, c.shard)
            }
            Some(_) => return Err(SendError::NotConnected),
            None => return Err(SendError::NoSuchSocket),
        };
        // A Fast Open connection also offers its first bytes for the SYN.
        if let Some(fastopen::Conn::Client(fo)) = self
            .shards
            .get_mut(shard)
            .and_then(|s| s.conn_mut())
            .and_then(|c| c.fo.as_deref_mut())
        {
            fo.offer(&data[..n]);
        }
        Ok(n)
    }

    pub(crate) fn tcp_send(&mut self, id: SocketId, data: &[u8]) -> Result<usize, SendError> {
        let shard = match self.sockets.get_mut(id.0) {
            Some(Entry::Tcp(s)) => match &s.state {
                TcpState::Connection(c) => {
                    if let Some(e) = s.error.take() {
                        return Err(SendError::Connection(e));
                    }
                    if c.shut_write || c.ended {
                        return Err(if c.established {
                            SendError::Shutdown
                        } else {
                            SendError::NotConnected
                        });
                    }
                    if !c.established {
                        return Err(SendError::WouldBlock);
                    }
                    c.shard
                }
                TcpState::Listening(_) => return Err(SendError::Listening),
                TcpState::Fresh => return Err(SendError::NotConnected),
            },
            Some(Entry::Udp(_)) => return self.udp_send_to(id, data, None),
            None => return Err(SendError::NoSuchSocket),
        };
        let Some(sock) = self.conn_socket_mut(shard) else {
            return Err(SendError::Shutdown);
        };
        if !sock.may_send() {
            return Err(SendError::Shutdown);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let n = match sock.send_slice(data) {
            Ok(0) => return Err(SendError::WouldBlock),
            Ok(n) => n,
            Err(tcp::SendError::InvalidState) => return Err(SendError::Shutdown),
        };
        self.shards.mark(shard);
        Ok(n)
    }

    pub(crate) fn tcp_recv(&mut self, id: SocketId, buf: &mut [u8]) -> Result<usize, RecvError> {
        let shard = match self.sockets.get_mut(id.0) {
            Some(Entry::Tcp(s)) => match &s.state {
                TcpState::Connection(c) if c.shut_read => return Ok(0),
                TcpState::Connection(c) if !c.established => {
                    return Err(match s.error.take() {
                        Some(e) => RecvError::Connection(e),
                        None if c.ended => RecvError::NotConnected,
                        None => RecvError::WouldBlock,
                    });
                }
                TcpState::Connection(c) => c.shard,
                TcpState::Listening(_) => return Err(RecvError::Listening),
                TcpState::Fresh => return Err(RecvError::NotConnected),
            },
            Some(Entry::Udp(_)) => return self.udp_recv_from(id, buf).map(|(n, _)| n),
            None => return Err(RecvError::NoSuchSocket),
        };
        // Data that arrived before a reset or a FIN is read first (S-08: the SYN data of a
        // connection reset before it was accepted stays readable); then the error, once; then
        // the end of the stream.
        if let Some(sock) = self.conn_socket_mut(shard) {
            if sock.can_recv() && !buf.is_empty() {
                let n = sock.recv_slice(buf).unwrap_or(0);
                self.count_read(shard, n);
                // Reading may open the window enough to say so.
                self.shards.mark(shard);
                return Ok(n);
            }
        }
        let Some(s) = self.tcp_entry(id) else {
            return Err(RecvError::NoSuchSocket);
        };
        if let Some(e) = s.error.take() {
            return Err(RecvError::Connection(e));
        }
        if matches!(&s.state, TcpState::Connection(c) if c.ended) {
            return Ok(0);
        }
        let Some(sock) = self.conn_socket_mut(shard) else {
            return Ok(0);
        };
        match sock.recv_slice(buf) {
            Ok(0) if !buf.is_empty() => Err(RecvError::WouldBlock),
            Ok(n) => {
                self.count_read(shard, n);
                Ok(n)
            }
            Err(tcp::RecvError::Finished) => Ok(0),
            Err(tcp::RecvError::InvalidState) => Ok(0),
        }
    }

    pub(crate) fn tcp_shutdown(
        &mut self,
        id: SocketId,
        how: Shutdown,
    ) -> Result<(), ShutdownError> {
        let (shard, write) = match self.sockets.get_mut(id.0) {
            Some(Entry::Tcp(TcpSocket {
                state: TcpState::Connection(c),
                ..
            })) => {
                if matches!(how, Shutdown::Read | Shutdown::Both) {
                    c.shut_read = true;
                }
                let write = matches!(how, Shutdown::Write | Shutdown::Both) && !c.shut_write;
                if write {
                    c.shut_write = true;
                }
                (c.shard, write)
            }
            Some(Entry::Udp(u)) if u.peer.is_some() => return Ok(()),
            Some(_) => return Err(ShutdownError::NotConnected),
            None => return Err(ShutdownError::NoSuchSocket),
        };
        if write {
            if let Some(sock) = self.conn_socket_mut(shard) {
                sock.close();
            }
        }
        self.shards.mark(shard);
        self.notify(id);
        Ok(())
    }

    pub(crate) fn tcp_queued(&self, s: &TcpSocket) -> Option<(usize, usize)> {
        match &s.state {
            TcpState::Connection(c) => {
                let s = self.conn_socket(c.shard)?;
                Some((s.recv_queue(), s.send_queue()))
            }
            _ => None,
        }
    }

    pub(crate) fn tcp_readiness(&self, s: &TcpSocket) -> Readiness {
        let error = s.error.is_some();
        match &s.state {
            TcpState::Fresh => Readiness {
                hangup: true,
                error,
                ..Readiness::default()
            },
            TcpState::Listening(l) => Readiness {
                readable: !l.accept.is_empty(),
                ..Readiness::default()
            },
            TcpState::Connection(c) => {
                let Some(sock) = self.conn_socket(c.shard) else {
                    return Readiness {
                        readable: true,
                        writable: true,
                        error,
                        hangup: true,
                    };
                };
                let eof = c.established && (!sock.may_recv() || c.ended || c.shut_read);
                Readiness {
                    readable: error || sock.can_recv() || eof || (c.ended && !c.established),
                    writable: error
                        || c.ended
                        || c.shut_write
                        || (c.established && sock.may_send() && sock.can_send()),
                    error,
                    hangup: c.ended,
                }
            }
        }
    }

    /// Drop the shard of a failed attempt before a new one.
    fn drop_connection(&mut self, id: SocketId) {
        let Some(s) = self.tcp_entry(id) else { return };
        if let TcpState::Connection(c) = std::mem::replace(&mut s.state, TcpState::Fresh) {
            self.remove_tcp_shard(c.shard);
        }
    }

    /// Take a connection's shard out of the demux table (its tuple may be used again; packets
    /// for it now draw a RST). The shard itself stays as long as its owner needs it.
    fn unregister(&mut self, shard: ShardId) {
        let Some(c) = self.shards.get_mut(shard).and_then(|s| s.conn_mut()) else {
            return;
        };
        if !c.registered {
            return;
        }
        c.registered = false;
        let tuple = c.tuple;
        self.demux.remove_connection(&tuple, shard);
        self.ports.connection_removed(tuple.0.port());
    }

    /// Remove a connection's shard for good.
    pub(crate) fn remove_tcp_shard(&mut self, shard: ShardId) {
        self.unregister(shard);
        self.leave_listener(shard);
        if let Some(sh) = self.shards.remove(shard) {
            if let Kind::Tcp(c) = sh.kind {
                if let Some(fastopen::Conn::Server(s)) = c.fo.as_deref() {
                    self.release_fast_open_slot(s.listener, &c.tuple);
                }
            }
        }
    }

    /// A Fast Open connection no longer counts against its listener's pending limit.
    pub(crate) fn release_fast_open_slot(
        &mut self,
        listener: Option<SocketId>,
        tuple: &crate::ids::Tuple,
    ) {
        if let Some(Entry::Tcp(TcpSocket {
            fast_open: Some(fl),
            ..
        })) = listener.and_then(|l| self.sockets.get_mut(l.0))
        {
            fl.release(tuple);
        }
    }

    /// If a listener still counts this shard (a handshake, or the accept queue), it stops.
    fn leave_listener(&mut self, shard: ShardId) {
        let Some(Owner::Listener { id, queued }) = self
            .shards
            .get(shard)
            .and_then(|s| s.conn())
            .map(|c| c.owner)
        else {
            return;
        };
        if let Some(Entry::Tcp(TcpSocket {
            state: TcpState::Listening(l),
            ..
        })) = self.sockets.get_mut(id.0)
        {
            if queued {
                l.accept.retain(|s| *s != shard);
            } else {
                l.pending.remove(&shard);
            }
        }
        if !queued {
            self.half_open = self.half_open.saturating_sub(1);
        }
        if let Some(c) = self.shards.get_mut(shard).and_then(|s| s.conn_mut()) {
            c.owner = Owner::Orphan;
        }
    }

    /// A closed socket's resources: a connection lingers as an orphan until it finishes
    /// closing; a listener resets the connections not yet accepted.
    pub(crate) fn tcp_release(&mut self, id: SocketId, s: TcpSocket, now: Instant) {
        if let Some(local) = s.local {
            self.ports
                .release(Proto::Tcp, local.port(), Holder::Socket(id));
        }
        let port = s.local_addr().port();
        match s.state {
            TcpState::Fresh => {}
            TcpState::Listening(l) => {
                self.demux.remove_listener(port, id);
                // The queued and half-open connections of this listener are reset.
                self.half_open = self.half_open.saturating_sub(l.pending.len());
                for shard in l.accept.into_iter().chain(l.pending) {
                    self.orphan(shard, None, true);
                }
            }
            TcpState::Connection(c) => {
                let Some(sock) = self.conn_socket_mut(c.shard) else {
                    return;
                };
                // RFC 2525 §2.17, as Linux: closing with unread data resets the connection.
                let abort = sock.recv_queue() > 0;
                if abort {
                    sock.abort();
                } else {
                    sock.close();
                }
                let linger = now + micros(self.config.orphan_timeout);
                self.orphan(c.shard, (!abort).then_some(linger), abort);
            }
        }
    }

    /// Hand a connection to the stack to finish: `deadline` bounds how long it may linger;
    /// `abort` resets it (it is removed once its RST has left).
    fn orphan(&mut self, shard: ShardId, deadline: Option<Instant>, abort: bool) {
        let Some(sh) = self.shards.get_mut(shard) else {
            return;
        };
        if abort {
            sh.tcp_mut().abort();
        }
        if let Some(c) = sh.conn_mut() {
            c.owner = Owner::Orphan;
            c.deadline = deadline;
        }
        self.shards.mark(shard);
    }

    /// Admit a SYN (checksum verified, destination one of `iface`'s addresses, in
    /// `pkt[..len]`) to the listener `lid`: a new connection of its own; or, when the listener's
    /// half-open handshakes are at their bound, a SYN cookie; or nothing (counted).
    pub(crate) fn tcp_admit(
        &mut self,
        lid: SocketId,
        iface: IfaceId,
        t: &Tcp,
        pkt: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Admission {
        let bytes = self.tcp_buffer_size();
        let fits = self.buffers_fit(bytes);
        let half_open_room = self.half_open < self.config.max_half_open;
        let fo_off = self.fo.disabled;
        let (len, fo) = {
            let Some(Entry::Tcp(TcpSocket {
                state: TcpState::Listening(l),
                fast_open,
                ..
            })) = self.sockets.get_mut(lid.0)
            else {
                return Admission::Dropped;
            };
            // Linux: a full accept queue drops the SYN (`ListenOverflows`); a full queue of
            // half-open connections answers with a SYN cookie, or drops it without cookies
            // (`TCPReqQFullDrop`); every drop counts `ListenDrops`. The client retransmits;
            // nothing is refused.
            if l.accept.len() > l.backlog {
                self.counters.ListenOverflows += 1;
                self.counters.ListenDrops += 1;
                return Admission::Dropped;
            }
            if !fits {
                self.counters.ListenDrops += 1;
                return Admission::Dropped;
            }
            if l.pending.len() >= l.backlog.max(1) || !half_open_room {
                if self.config.syn_cookies {
                    let mtu = self.ifaces[iface.0].config.mtu;
                    self.counters.SyncookiesSent += 1;
                    self.last_cookie = Some(now);
                    return Admission::Cookie(self.cookie_synack(t, pkt, mtu, now));
                }
                self.counters.TCPReqQFullDrop += 1;
                self.counters.ListenDrops += 1;
                return Admission::Dropped;
            }
            match fast_open.as_mut().filter(|_| !fo_off) {
                Some(fl) => {
                    let (n, server) = self.fo.server_syn(fl, t, pkt, len, now);
                    let fo = server.map(|mut s| {
                        s.listener = Some(lid);
                        Box::new(fastopen::Conn::Server(s))
                    });
                    (n, fo)
                }
                None => (len, None),
            }
        };
        let shard = self.new_handshake(lid, iface, t.arriving_tuple(), fo, None, now);
        Admission::Shard(shard, len)
    }

    /// A socket listening on exactly the SYN's destination, in a shard of its own, counted as
    /// a handshake under way on `lid`.
    fn new_handshake(
        &mut self,
        lid: SocketId,
        iface: IfaceId,
        tuple: crate::ids::Tuple,
        fo: Option<Box<fastopen::Conn>>,
        cookie_isn: Option<u32>,
        now: Instant,
    ) -> ShardId {
        let bytes = self.tcp_buffer_size();
        let congestion = self.socket_congestion(lid);
        let mut sock = self.new_tcp_socket(congestion);
        let listen = IpListenEndpoint {
            addr: Some(to_smoltcp(tuple.0.ip())),
            port: tuple.0.port(),
        };
        // Only port 0 makes smoltcp refuse, and a SYN to port 0 finds no listener.
        let _ = sock.listen(listen);
        let recovery = self.recovery_conn(iface, tuple.0.is_ipv4(), congestion);
        let conn = TcpConn {
            tuple,
            owner: Owner::Listener {
                id: lid,
                queued: false,
            },
            deadline: Some(now + micros(self.config.handshake_timeout)),
            last_state: tcp::State::Listen,
            fo,
            syn_isn: None,
            wire: WireSeq::default(),
            inject: Vec::new(),
            cookie_isn,
            shift: 0,
            recovery,
            registered: true,
        };
        let shard = self
            .shards
            .insert(iface, sock, bytes, Kind::Tcp(Box::new(conn)));
        if let Some(Entry::Tcp(TcpSocket {
            state: TcpState::Listening(l),
            ..
        })) = self.sockets.get_mut(lid.0)
        {
            l.pending.insert(shard);
        }
        self.half_open += 1;
        self.demux.insert_connection(tuple, shard);
        self.ports.connection_added(tuple.0.port());
        shard
    }

    /// The SYN-ACK that answers a SYN with a cookie (our MSS, an unscaled window, no SACK:
    /// what a connection made from the cookie will use).
    fn cookie_synack(&self, t: &Tcp, pkt: &[u8], mtu: usize, now: Instant) -> Vec<u8> {
        let tuple = t.arriving_tuple();
        let client_mss = crate::wire::mss(t.options(pkt));
        let (cookie, _) = self.syncookies.make(tuple, t.seq, client_mss, now);
        let our_mss = mtu.saturating_sub(if tuple.0.is_ipv4() { 40 } else { 60 }) as u16;
        let window = self.config.tcp_rx_buffer.min(65535) as u16;
        let mut plain = [0u8; 60];
        let mut out = vec![0u8; 64];
        let flags = crate::wire::SYN | crate::wire::ACK;
        let ack = t.seq.wrapping_add(1);
        let built = crate::wire::build(
            tuple.0,
            tuple.1,
            cookie,
            ack,
            flags,
            window,
            &[],
            &mut plain,
        )
        .and_then(|n| {
            let t = crate::wire::parse(&plain[..n])?;
            let mss = our_mss.to_be_bytes();
            let opts = [crate::wire::OPT_MSS, 4, mss[0], mss[1]];
            crate::wire::rebuild(&plain[..n], &t, &opts, &[], &mut out)
        });
        match built {
            Some(n) => {
                out.truncate(n);
                out
            }
            None => Vec::new(),
        }
    }

    /// An ACK (checksum verified) to `lid`'s port that found no connection: if it brings back
    /// a cookie of ours, the connection is made now. Returns the SYN to replay to its socket.
    pub(crate) fn tcp_cookie_ack(
        &mut self,
        lid: SocketId,
        iface: IfaceId,
        t: &Tcp,
        now: Instant,
    ) -> CookieAck {
        let tuple = t.arriving_tuple();
        let client_isn = t.seq.wrapping_sub(1);
        let cookie = t.ack.wrapping_sub(1);
        if self
            .last_cookie
            .is_none_or(|at| now >= at + crate::syncookie::LIFETIME)
        {
            // No cookie out that could still be good: a stray segment.
            return CookieAck::NotOurs;
        }
        let Some(mss) = self.syncookies.check(tuple, client_isn, cookie, now) else {
            self.counters.SyncookiesFailed += 1;
            return CookieAck::NotOurs;
        };
        self.counters.SyncookiesRecv += 1;
        let full = match self.sockets.get(lid.0) {
            Some(Entry::Tcp(TcpSocket {
                state: TcpState::Listening(l),
                ..
            })) => l.accept.len() > l.backlog,
            _ => true,
        };
        if full || !self.buffers_fit(self.tcp_buffer_size()) {
            // The client's next segment brings the cookie again.
            self.counters.ListenOverflows += 1;
            self.counters.ListenDrops += 1;
            return CookieAck::Dropped;
        }
        let shard = self.new_handshake(lid, iface, tuple, None, Some(cookie), now);
        // The SYN the cookie stands for: the client's ISN and the MSS the cookie kept.
        let mut plain = [0u8; 60];
        let mut syn = vec![0u8; 64];
        let mss = mss.to_be_bytes();
        let built = crate::wire::build(
            tuple.1,
            tuple.0,
            client_isn,
            0,
            crate::wire::SYN,
            t.window,
            &[],
            &mut plain,
        )
        .and_then(|n| {
            let p = crate::wire::parse(&plain[..n])?;
            let opts = [crate::wire::OPT_MSS, 4, mss[0], mss[1]];
            crate::wire::rebuild(&plain[..n], &p, &opts, &[], &mut syn)
        });
        match built {
            Some(n) => {
                syn.truncate(n);
                CookieAck::Shard(shard, syn)
            }
            None => {
                self.remove_tcp_shard(shard);
                CookieAck::Dropped
            }
        }
    }

    /// Look at a connection after its packets, calls and timers of this round: handshakes that
    /// finished or failed, deadlines, the move to TIME-WAIT, the end of orphans.
    pub(crate) fn settle_tcp(&mut self, shard: ShardId, now: Instant) {
        let tw_len = micros(self.config.time_wait);
        let Some(sh) = self.shards.get_mut(shard) else {
            return;
        };
        let iface = sh.iface;
        let state = sh.tcp().state();
        let recv_queue = sh.tcp().recv_queue();
        let Some(c) = sh.conn_mut() else { return };
        let before = std::mem::replace(&mut c.last_state, state);
        if !matches!(state, tcp::State::SynSent) {
            c.syn_isn = None;
        }
        let owner = c.owner;
        let deadline_passed = c.deadline.is_some_and(|d| now >= d);
        match owner {
            Owner::Socket(id) => self.settle_app_conn(id, shard, state, before, now),
            Owner::Listener { id, queued: false } => {
                if synchronized(state) {
                    self.handshake_done(id, shard);
                } else if state == tcp::State::Listen {
                    // smoltcp did not take the SYN, or a RST in SYN-RECEIVED sent it back to
                    // listening: nothing to answer.
                    self.leave_listener(shard);
                    self.remove_tcp_shard(shard);
                    return;
                } else if state == tcp::State::Closed || deadline_passed {
                    // Reset, refused by smoltcp, or the peer never finished (Linux gives up
                    // after its SYN-ACK retransmissions).
                    self.leave_listener(shard);
                    self.orphan(shard, None, true);
                }
            }
            Owner::Listener { id, queued: true } => {
                self.notify(id);
                self.fast_open_handshake_expired(shard, now);
                let state = self.shards.get(shard).map(|s| s.tcp().state());
                if state == Some(tcp::State::Closed) {
                    self.unregister(shard);
                    // Reset before it was accepted: kept for `accept` only if it has data for
                    // the application to read first (S-08); else nothing is left to see.
                    if recv_queue == 0 {
                        self.leave_listener(shard);
                        self.orphan(shard, None, false);
                    }
                }
            }
            Owner::Orphan => {
                if state == tcp::State::Closed {
                    // Reap after the RST (if any) left: smoltcp forgets the tuple then.
                    if self
                        .shards
                        .get(shard)
                        .is_some_and(|s| s.tcp().local_endpoint().is_none())
                    {
                        self.remove_tcp_shard(shard);
                        return;
                    }
                } else if deadline_passed && state != tcp::State::TimeWait {
                    self.orphan(shard, None, true);
                }
            }
        }
        // TIME-WAIT: a compact entry instead of the socket.
        let owner = self
            .shards
            .get(shard)
            .and_then(|s| s.conn())
            .map(|c| c.owner);
        if state == tcp::State::TimeWait
            && self
                .shards
                .get(shard)
                .and_then(|s| s.conn())
                .is_some_and(|c| c.registered)
        {
            self.enter_time_wait(shard, iface, now, tw_len);
            // The socket goes at once, unless an application still holds it (it may have data
            // to read, and what Fast Open did is asked of it): then when the application
            // closes it.
            if !matches!(owner, Some(Owner::Socket(_))) {
                self.remove_tcp_shard(shard);
                return;
            }
        }
        self.schedule_tcp(shard, now);
    }

    /// Whether `shard` is a handshake a peer started that has not reached the accept queue.
    pub(crate) fn completes_handshake(&self, shard: ShardId) -> bool {
        matches!(
            self.shards
                .get(shard)
                .and_then(|s| s.conn())
                .map(|c| c.owner),
            Some(Owner::Listener { queued: false, .. })
        )
    }

    /// Whether `shard` is a handshake on a listener whose accept queue is full (Linux's
    /// `sk_acceptq_is_full`: more than the backlog).
    pub(crate) fn completes_into_full_queue(&self, shard: ShardId) -> bool {
        let Some(Owner::Listener { id, queued: false }) = self
            .shards
            .get(shard)
            .and_then(|s| s.conn())
            .map(|c| c.owner)
        else {
            return false;
        };
        matches!(
            self.sockets.get(id.0),
            Some(Entry::Tcp(TcpSocket {
                state: TcpState::Listening(l),
                ..
            })) if l.accept.len() > l.backlog
        )
    }

    fn handshake_done(&mut self, lid: SocketId, shard: ShardId) {
        let ok = if let Some(Entry::Tcp(TcpSocket {
            state: TcpState::Listening(l),
            ..
        })) = self.sockets.get_mut(lid.0)
        {
            l.pending.remove(&shard);
            l.accept.push_back(shard);
            true
        } else {
            false
        };
        self.half_open = self.half_open.saturating_sub(1);
        if let Some(c) = self.shards.get_mut(shard).and_then(|s| s.conn_mut()) {
            c.owner = Owner::Listener {
                id: lid,
                queued: true,
            };
            // A Fast Open connection is established for smoltcp before the client's final ACK
            // (the layer plays it): until the real one comes, the handshake's deadline stays.
            if !c.fo.as_deref().is_some_and(|f| f.acts_on_ingress()) {
                c.deadline = None;
            }
        }
        if ok {
            self.notify(lid);
        }
    }

    /// A Fast Open connection whose client never sent its final ACK (a forged or lost SYN
    /// with a good cookie) is reset at the handshake's deadline, as Linux gives up on the
    /// SYN-ACK. Returns whether it was.
    fn fast_open_handshake_expired(&mut self, shard: ShardId, now: Instant) -> bool {
        let Some(sh) = self.shards.get_mut(shard) else {
            return false;
        };
        let expired = sh.conn().is_some_and(|c| {
            c.deadline.is_some_and(|d| now >= d)
                && c.fo.as_deref().is_some_and(|f| f.acts_on_ingress())
        });
        if expired {
            sh.tcp_mut().abort();
            if let Some(c) = sh.conn_mut() {
                c.deadline = None;
            }
            self.shards.mark(shard);
        }
        expired
    }

    fn settle_app_conn(
        &mut self,
        id: SocketId,
        shard: ShardId,
        state: tcp::State,
        before: tcp::State,
        now: Instant,
    ) {
        self.notify(id);
        if self.fast_open_handshake_expired(shard, now) {
            // The reset shows at the next round, as any.
            return;
        }
        let fo_offset = match self
            .shards
            .get(shard)
            .and_then(|s| s.conn())
            .and_then(|c| c.fo.as_deref())
        {
            Some(fastopen::Conn::Client(fo)) => fo.offset as usize,
            _ => 0,
        };
        let deadline = self
            .shards
            .get(shard)
            .and_then(|s| s.conn())
            .and_then(|c| c.deadline);
        let Some(Entry::Tcp(s)) = self.sockets.get_mut(id.0) else {
            return;
        };
        let TcpState::Connection(c) = &mut s.state else {
            return;
        };
        if c.ended {
            if state == tcp::State::Closed {
                self.unregister(shard);
            }
            return;
        }
        let Some(sh) = self.shards.get_mut(shard) else {
            return;
        };
        if !c.established {
            match state {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    if deadline.is_some_and(|d| now >= d) {
                        sh.tcp_mut().abort();
                        c.ended = true;
                        s.error = Some(ConnectionError::TimedOut);
                        if let Some(conn) = sh.conn_mut() {
                            conn.deadline = None;
                        }
                        self.shards.mark(shard);
                    }
                }
                tcp::State::Closed | tcp::State::Listen => {
                    // RFC 9293 §3.10.7.3: a RST acceptable in SYN-SENT refuses the
                    // connection. smoltcp closes the socket for no other reason here.
                    c.ended = true;
                    s.error = Some(ConnectionError::Refused);
                    if let Some(conn) = sh.conn_mut() {
                        conn.deadline = None;
                    }
                    self.unregister(shard);
                }
                _ => {
                    c.established = true;
                    if let Some(conn) = sh.conn_mut() {
                        conn.deadline = None;
                    }
                    // What the SYN-ACK acknowledged of Fast Open SYN data is already
                    // delivered; the rest goes now, right after the handshake (C-05).
                    if !c.early.is_empty() {
                        // Both are bounded by the send buffer's size, so it all fits.
                        let early = std::mem::take(&mut c.early);
                        let rest = early.get(fo_offset..).unwrap_or(&[]);
                        let n = sh.tcp_mut().send_slice(rest).unwrap_or(0);
                        c.early.extend_from_slice(&rest[n..]);
                    }
                    // Its local endpoint is now fixed.
                    if let Some(ep) = sh.tcp().local_endpoint() {
                        c.local = socket_addr(ep);
                    }
                    self.shards.mark(shard);
                }
            }
        } else if state == tcp::State::Closed {
            c.ended = true;
            // The normal ends pass through TIME-WAIT or LAST-ACK; any other way to CLOSED is a
            // reset.
            if !matches!(before, tcp::State::TimeWait | tcp::State::LastAck) {
                s.error = Some(ConnectionError::Reset);
            }
            self.unregister(shard);
        }
    }

    /// Record a TIME-WAIT entry for a connection whose smoltcp socket reached TIME-WAIT, and
    /// acknowledge the peer's FIN if smoltcp has not yet (its ACK may wait on the delayed-ACK
    /// timer, which goes with the socket).
    fn enter_time_wait(&mut self, shard: ShardId, iface: IfaceId, now: Instant, len: Duration) {
        let Some(c) = self.shards.get(shard).and_then(|s| s.conn()) else {
            return;
        };
        let (tuple, wire) = (c.tuple, c.wire);
        self.unregister(shard);
        let (Some(snd_nxt), Some(rcv_nxt)) = (wire.snd_nxt, wire.peer_fin) else {
            return;
        };
        let window = wire.last_ack.map_or(0, |(_, w)| w);
        if wire.last_ack.map(|(a, _)| a) != Some(rcv_nxt) {
            self.pending_tx
                .push((iface, ack_segment(tuple, snd_nxt, rcv_nxt, window)));
        }
        if self.demux.time_wait_count() >= self.config.max_time_wait {
            self.counters.TCPTimeWaitOverflow += 1;
            return;
        }
        self.demux
            .insert_time_wait(tuple, TimeWait::new(snd_nxt, rcv_nxt, window, now + len));
    }

    /// When a registered connection next needs a poll without a packet.
    fn schedule_tcp(&mut self, shard: ShardId, now: Instant) {
        let Some(sh) = self.shards.get_mut(shard) else {
            return;
        };
        let Some(c) = sh.conn() else { return };
        if !c.registered && !matches!(c.owner, Owner::Orphan) {
            self.shards.schedule(shard, None);
            return;
        }
        let deadline = c.deadline;
        let layer = crate::recovery::Layer::next_timer(&c.recovery)
            .map(|t| t.max(now + Duration::from_micros(1)));
        let iface = sh.iface;
        let smol = self.ifaces[iface.0].iface.poll_at(now, &sh.set);
        // smoltcp wants to send now: that is this round's work, or the next round's when this
        // one ran out of budget; a timer for "now" would only spin.
        let smol = smol.map(|t| t.max(now + Duration::from_millis(1)));
        let at = [smol, deadline, layer].into_iter().flatten().min();
        self.shards.schedule(shard, at);
    }

    /// An ICMP error about one of our SYNs: the attempt fails with it (see the `icmp` module).
    pub(crate) fn tcp_icmp_error(&mut self, r: &crate::icmp::Report) {
        let Some(shard) = self.demux.connection(&(r.local, r.remote)) else {
            return;
        };
        let Some(sh) = self.shards.get_mut(shard) else {
            return;
        };
        let Some(c) = sh.conn() else { return };
        let (Owner::Socket(id), Some(isn)) = (c.owner, c.syn_isn) else {
            return;
        };
        if r.seq != Some(isn) || sh.tcp().state() != tcp::State::SynSent {
            // Not the sequence number of the SYN we sent: stale, or a guess.
            return;
        }
        sh.tcp_mut().abort();
        if let Some(c) = sh.conn_mut() {
            c.syn_isn = None;
            c.deadline = None;
        }
        if let Some(Entry::Tcp(s)) = self.sockets.get_mut(id.0) {
            if let TcpState::Connection(conn) = &mut s.state {
                conn.ended = true;
                s.error = Some(r.error);
            }
        }
        self.notify(id);
        self.shards.mark(shard);
    }
}

/// Where a connection would start from ([`Stack::tcp_connect_target`]).
struct ConnectTarget {
    /// The socket holds a failed attempt, to drop first.
    stale: bool,
    bound: Option<SocketAddr>,
    iface: IfaceId,
    src: std::net::IpAddr,
}
