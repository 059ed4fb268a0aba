//! TCP: connect, listen and accept, send and receive, shutdown and close, over smoltcp sockets.
//!
//! smoltcp keeps no backlog: a listening socket *becomes* the connection when a SYN arrives. A
//! listener here is a small pool of listening smoltcp sockets per interface; each one that
//! completes a handshake moves to the accept queue and a fresh one takes its place
//! (at most `backlog` connections half-open or waiting to be accepted).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

use crate::addr::{from_smoltcp, to_smoltcp};
use crate::config::CongestionControl;
use crate::error::{
    AcceptError, BindError, ConnectError, ConnectionError, ListenError, RecvError, SendError,
    ShutdownError,
};
use crate::iface::IfaceId;
use crate::socket::{Entry, Family, Readiness, Shutdown, SocketId};
use crate::stack::{Holder, Orphan, Proto, Stack};

/// Where a connection should come from: `sae_srcif` and `sae_srcaddr` of `connectx`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Leave through this interface.
    pub interface: Option<IfaceId>,
    /// Bind to this source (port 0: an ephemeral port) before connecting.
    pub source: Option<SocketAddr>,
    /// TCP Fast Open (`CONNECT_DATA_IDEMPOTENT`, `CONNECT_DATA_AUTHENTICATED`).
    pub fast_open: crate::fastopen::Mode,
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

#[derive(Debug)]
pub(crate) struct TcpSocket {
    pub(crate) family: Family,
    /// Bound address and port, if bound.
    pub(crate) local: Option<SocketAddr>,
    pub(crate) state: TcpState,
    /// An error not yet reported.
    pub(crate) error: Option<ConnectionError>,
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
    /// Listening (or half-open) smoltcp sockets.
    pool: Vec<(IfaceId, SocketHandle)>,
    /// Established connections waiting for `accept`.
    /// With their endpoints, learnt when they arrived (a reset before `accept` clears them
    /// in smoltcp).
    ready: VecDeque<(IfaceId, SocketHandle, SocketAddr, SocketAddr)>,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) iface: IfaceId,
    pub(crate) handle: SocketHandle,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    /// Reached ESTABLISHED at some point.
    pub(crate) established: bool,
    /// Connect deadline while the handshake is under way.
    deadline: Option<Instant>,
    /// The connection is over (closed normally, reset, refused or timed out).
    ended: bool,
    last_state: tcp::State,
    shut_read: bool,
    shut_write: bool,
    /// This socket registered its own port binding (an active open on an ephemeral port).
    owns_port: bool,
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
        }
    }

    pub(crate) fn take_error(&mut self) -> Option<ConnectionError> {
        self.error.take()
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

    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.state {
            TcpState::Connection(c) => c.deadline,
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

/// (local, remote) of a smoltcp socket that has both.
fn tuple_of(sock: &tcp::Socket<'_>) -> Option<(SocketAddr, SocketAddr)> {
    Some((
        socket_addr(sock.local_endpoint()?),
        socket_addr(sock.remote_endpoint()?),
    ))
}

impl Stack {
    fn new_tcp_socket(&self) -> tcp::Socket<'static> {
        let rx = tcp::SocketBuffer::new(vec![0u8; self.config.tcp_rx_buffer]);
        let tx = tcp::SocketBuffer::new(vec![0u8; self.config.tcp_tx_buffer]);
        let mut s = tcp::Socket::new(rx, tx);
        s.set_nagle_enabled(self.config.nagle);
        s.set_ack_delay(
            self.config
                .ack_delay
                .map(|d| smoltcp::time::Duration::from_micros(d.as_micros() as u64)),
        );
        s.set_congestion_control(match self.config.congestion_control {
            CongestionControl::None => tcp::CongestionControl::None,
            CongestionControl::Reno => tcp::CongestionControl::Reno,
            CongestionControl::Cubic => tcp::CongestionControl::Cubic,
        });
        s
    }

    fn tcp_entry(&mut self, id: SocketId) -> Option<&mut TcpSocket> {
        match self.table.get_mut(id)? {
            Entry::Tcp(s) => Some(s),
            Entry::Udp(_) => None,
        }
    }

    /// Bind a socket (stream or datagram) to a local address; port 0 picks an ephemeral port.
    ///
    /// # Errors
    /// [`BindError::NoSuchSocket`], [`BindError::AlreadyBound`], [`BindError::FamilyMismatch`],
    /// [`BindError::AddressNotAvailable`] (not an address of this stack),
    /// [`BindError::AddressInUse`], [`BindError::NoPortsLeft`].
    pub fn bind(&mut self, id: SocketId, addr: SocketAddr) -> Result<(), BindError> {
        let (family, bound, proto) = match self.table.get(id) {
            Some(Entry::Tcp(s)) => (
                s.family,
                s.local.is_some() || !matches!(s.state, TcpState::Fresh),
                Proto::Tcp,
            ),
            Some(Entry::Udp(s)) => (s.family, s.local.is_some(), Proto::Udp),
            None => return Err(BindError::NoSuchSocket),
        };
        if bound {
            return Err(BindError::AlreadyBound);
        }
        if !family.admits(&addr.ip()) {
            return Err(BindError::FamilyMismatch);
        }
        self.check_local_addr(&addr.ip())?;
        let port = self.bind_port(proto, addr.ip(), addr.port(), Holder::Socket(id))?;
        let local = SocketAddr::new(addr.ip(), port);
        match proto {
            Proto::Tcp => {
                if let Some(s) = self.tcp_entry(id) {
                    s.local = Some(local);
                }
                Ok(())
            }
            Proto::Udp => {
                let attached = self.udp_attach(id, local);
                if attached.is_err() {
                    self.release_port(proto, port, Holder::Socket(id));
                }
                attached
            }
        }
    }

    /// Listen for connections, binding to an ephemeral port on every address if not bound.
    ///
    /// # Errors
    /// [`ListenError::NoSuchSocket`], [`ListenError::NotStream`], [`ListenError::Connected`],
    /// [`ListenError::Bind`] when the implicit bind fails.
    pub fn listen(&mut self, id: SocketId, backlog: usize) -> Result<(), ListenError> {
        let s = match self.table.get_mut(id) {
            Some(Entry::Tcp(s)) => s,
            Some(Entry::Udp(_)) => return Err(ListenError::NotStream),
            None => return Err(ListenError::NoSuchSocket),
        };
        match &mut s.state {
            TcpState::Listening(l) => {
                l.backlog = backlog.max(1);
                return Ok(());
            }
            TcpState::Connection(_) => return Err(ListenError::Connected),
            TcpState::Fresh => {}
        }
        if s.local.is_none() {
            let any = SocketAddr::new(s.family.unspecified(), 0);
            self.bind(id, any)?;
        }
        if let Some(s) = self.tcp_entry(id) {
            s.state = TcpState::Listening(Listener {
                backlog: backlog.max(1),
                pool: Vec::new(),
                ready: VecDeque::new(),
            });
        }
        self.refill_listener(id);
        Ok(())
    }

    /// Take an established connection from a listener's queue.
    ///
    /// # Errors
    /// [`AcceptError::NoSuchSocket`], [`AcceptError::NotListening`], [`AcceptError::WouldBlock`]
    /// when none is ready.
    pub fn accept(&mut self, id: SocketId) -> Result<(SocketId, SocketAddr), AcceptError> {
        let (family, (iface, handle, local, remote)) = match self.table.get_mut(id) {
            Some(Entry::Tcp(TcpSocket {
                family,
                state: TcpState::Listening(l),
                ..
            })) => (*family, l.ready.pop_front().ok_or(AcceptError::WouldBlock)?),
            Some(_) => return Err(AcceptError::NotListening),
            None => return Err(AcceptError::NoSuchSocket),
        };
        let state = self.ifaces[iface.0]
            .sockets
            .get::<tcp::Socket<'_>>(handle)
            .state();
        // Reset while queued (S-08): its data stays readable, then the reset shows.
        let reset = state == tcp::State::Closed;
        let conn = Conn {
            iface,
            handle,
            local,
            remote,
            established: true,
            deadline: None,
            ended: reset,
            last_state: state,
            shut_read: false,
            shut_write: false,
            owns_port: false,
            early: Vec::new(),
        };
        let remote = conn.remote;
        let local = conn.local;
        let new = self.table.insert(Entry::Tcp(TcpSocket {
            family,
            local: Some(local),
            state: TcpState::Connection(conn),
            error: reset.then_some(ConnectionError::Reset),
        }));
        self.refill_listener(id);
        Ok((new, remote))
    }

    /// Start connecting. Returns at once; [`Stack::connect_status`] and readiness tell the outcome.
    ///
    /// # Errors
    /// [`ConnectError::NoSuchSocket`]; [`ConnectError::FamilyMismatch`];
    /// [`ConnectError::InvalidPort`] for port 0; [`ConnectError::Route`] when no interface or
    /// source fits; [`ConnectError::AlreadyConnected`], [`ConnectError::InProgress`],
    /// [`ConnectError::Listening`] for a socket in the wrong state; [`ConnectError::Bind`] when
    /// the source is taken or no ephemeral port is left; [`ConnectError::NoBuffers`] past
    /// [`StackConfig::buffer_limit`](crate::StackConfig::buffer_limit).
    pub fn connect(
        &mut self,
        id: SocketId,
        remote: SocketAddr,
        opts: ConnectOptions,
        now: Instant,
    ) -> Result<(), ConnectError> {
        let s = match self.table.get_mut(id) {
            Some(Entry::Tcp(s)) => s,
            Some(Entry::Udp(_)) => return self.udp_connect(id, remote, opts),
            None => return Err(ConnectError::NoSuchSocket),
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
        let family = s.family;
        let bound = s.local;
        if !family.admits(&remote.ip()) {
            return Err(ConnectError::FamilyMismatch);
        }
        if let Some(src) = opts.source {
            if !family.admits(&src.ip()) {
                return Err(ConnectError::FamilyMismatch);
            }
        }
        if remote.port() == 0 {
            return Err(ConnectError::InvalidPort);
        }
        let want_src = opts.source.map(|a| a.ip()).or(bound.map(|a| a.ip()));
        let (iface, src) = self.path(remote.ip(), opts.interface, want_src)?;
        if stale {
            self.drop_connection(id);
        }
        if !self.buffers_fit(self.tcp_buffer_size()) {
            return Err(ConnectError::NoBuffers);
        }
        // The source port: the bound one, the one asked for, or an ephemeral one.
        let (port, owns_port) = match (bound, opts.source) {
            (Some(b), _) => (b.port(), false),
            (None, Some(src_addr)) => (
                self.bind_port(Proto::Tcp, src, src_addr.port(), Holder::Socket(id))?,
                true,
            ),
            (None, None) => (
                self.bind_port(Proto::Tcp, src, 0, Holder::Socket(id))?,
                true,
            ),
        };
        let local = SocketAddr::new(src, port);
        let mut sock = self.new_tcp_socket();
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
            if owns_port {
                self.release_port(Proto::Tcp, port, Holder::Socket(id));
            }
            return Err(ConnectError::InvalidPort);
        }
        let bytes = self.tcp_buffer_size();
        let handle = self.add_smol_socket(iface, sock, bytes);
        if opts.fast_open != crate::fastopen::Mode::Off && !self.fo.disabled {
            let mtu = self.ifaces[iface.0].config.mtu;
            let room = mtu.saturating_sub(if src.is_ipv4() { 40 } else { 60 });
            let client = crate::fastopen::client::Client::new(
                opts.fast_open,
                src,
                remote.ip(),
                &self.fo.cache,
                &self.fo.blackhole,
                room,
                now,
            );
            self.fo
                .conns
                .insert((local, remote), crate::fastopen::Conn::Client(client));
        }
        let deadline = now
            + smoltcp::time::Duration::from_micros(self.config.connect_timeout.as_micros() as u64);
        let s = self.tcp_entry(id).expect("checked above");
        if owns_port {
            s.local = Some(local);
        }
        s.state = TcpState::Connection(Conn {
            iface,
            handle,
            local,
            remote,
            established: false,
            deadline: Some(deadline),
            ended: false,
            last_state: tcp::State::SynSent,
            shut_read: false,
            shut_write: false,
            owns_port,
            early: Vec::new(),
        });
        Ok(())
    }

    /// The progress of a connection attempt; `None` for a socket that never tried.
    pub fn connect_status(&self, id: SocketId) -> Option<ConnectStatus> {
        match self.table.get(id)? {
            Entry::Tcp(TcpSocket {
                state: TcpState::Connection(c),
                error,
                ..
            }) => Some(if c.established {
                ConnectStatus::Connected
            } else if c.ended {
                ConnectStatus::Failed(error.unwrap_or(ConnectionError::Refused))
            } else {
                ConnectStatus::InProgress
            }),
            Entry::Udp(u) => u.peer.map(|_| ConnectStatus::Connected),
            _ => None,
        }
    }

    /// Queue bytes on a connection whose handshake is under way; they are sent as soon as it is
    /// established. Returns how many were taken (up to the send buffer's size in all).
    ///
    /// # Errors
    /// [`SendError::NoSuchSocket`]; [`SendError::NotConnected`] when no handshake is under way
    /// (use [`Stack::send`] on an established connection).
    pub fn queue_early(&mut self, id: SocketId, data: &[u8]) -> Result<usize, SendError> {
        let cap = self.config.tcp_tx_buffer;
        let (n, tuple) = match self.tcp_entry(id) {
            Some(TcpSocket {
                state: TcpState::Connection(c),
                ..
            }) if !c.established && !c.ended => {
                let n = data.len().min(cap.saturating_sub(c.early.len()));
                c.early.extend_from_slice(&data[..n]);
                (n, (c.local, c.remote))
            }
            Some(_) => return Err(SendError::NotConnected),
            None => return Err(SendError::NoSuchSocket),
        };
        // A Fast Open connection also offers its first bytes for the SYN.
        if let Some(crate::fastopen::Conn::Client(fo)) = self.fo.conns.get_mut(&tuple) {
            fo.offer(&data[..n]);
        }
        Ok(n)
    }

    /// Queue bytes on a connection; returns how many were taken (at least 1 unless `data` is empty).
    ///
    /// # Errors
    /// [`SendError::NoSuchSocket`]; [`SendError::NotConnected`] (never connected);
    /// [`SendError::WouldBlock`] (buffer full, or handshake under way);
    /// [`SendError::Shutdown`] (after `shutdown(Write)` or the connection's end);
    /// [`SendError::Connection`] for a reset or failed connection (reported once).
    pub fn send(&mut self, id: SocketId, data: &[u8]) -> Result<usize, SendError> {
        let (iface, handle) = match self.table.get_mut(id) {
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
                    (c.iface, c.handle)
                }
                TcpState::Listening(_) => return Err(SendError::Listening),
                TcpState::Fresh => return Err(SendError::NotConnected),
            },
            Some(Entry::Udp(_)) => return self.send_to(id, data, None),
            None => return Err(SendError::NoSuchSocket),
        };
        let sock = self.ifaces[iface.0]
            .sockets
            .get_mut::<tcp::Socket<'_>>(handle);
        if !sock.may_send() {
            return Err(SendError::Shutdown);
        }
        if data.is_empty() {
            return Ok(0);
        }
        match sock.send_slice(data) {
            Ok(0) => Err(SendError::WouldBlock),
            Ok(n) => Ok(n),
            Err(tcp::SendError::InvalidState) => Err(SendError::Shutdown),
        }
    }

    /// Read received bytes; `Ok(0)` is the end of the stream.
    ///
    /// # Errors
    /// [`RecvError::NoSuchSocket`]; [`RecvError::NotConnected`] (never connected);
    /// [`RecvError::WouldBlock`] (nothing yet, or handshake under way);
    /// [`RecvError::Connection`] for a reset or failed connection (reported once; then `Ok(0)`).
    pub fn recv(&mut self, id: SocketId, buf: &mut [u8]) -> Result<usize, RecvError> {
        let (iface, handle) = match self.table.get_mut(id) {
            Some(Entry::Tcp(s)) => match &s.state {
                TcpState::Connection(c) if c.shut_read => return Ok(0),
                TcpState::Connection(c) if !c.established => {
                    return Err(match s.error.take() {
                        Some(e) => RecvError::Connection(e),
                        None if c.ended => RecvError::NotConnected,
                        None => RecvError::WouldBlock,
                    });
                }
                TcpState::Connection(c) => (c.iface, c.handle),
                TcpState::Listening(_) => return Err(RecvError::Listening),
                TcpState::Fresh => return Err(RecvError::NotConnected),
            },
            Some(Entry::Udp(_)) => return self.recv_from(id, buf).map(|(n, _)| n),
            None => return Err(RecvError::NoSuchSocket),
        };
        // Data that arrived before a reset or a FIN is read first (S-08: the SYN data of a
        // connection reset before it was accepted stays readable); then the error, once; then
        // the end of the stream.
        let sock = self.ifaces[iface.0]
            .sockets
            .get_mut::<tcp::Socket<'_>>(handle);
        if sock.can_recv() && !buf.is_empty() {
            return Ok(sock.recv_slice(buf).unwrap_or(0));
        }
        let Some(Entry::Tcp(s)) = self.table.get_mut(id) else {
            return Err(RecvError::NoSuchSocket);
        };
        if let Some(e) = s.error.take() {
            return Err(RecvError::Connection(e));
        }
        if matches!(&s.state, TcpState::Connection(c) if c.ended) {
            return Ok(0);
        }
        let sock = self.ifaces[iface.0]
            .sockets
            .get_mut::<tcp::Socket<'_>>(handle);
        match sock.recv_slice(buf) {
            Ok(0) if !buf.is_empty() => Err(RecvError::WouldBlock),
            Ok(n) => Ok(n),
            Err(tcp::RecvError::Finished) => Ok(0),
            Err(tcp::RecvError::InvalidState) => Ok(0),
        }
    }

    /// Shut down one or both halves of a connection.
    ///
    /// # Errors
    /// [`ShutdownError::NoSuchSocket`]; [`ShutdownError::NotConnected`] for a socket with no
    /// connection (or a datagram socket without an association).
    pub fn shutdown(&mut self, id: SocketId, how: Shutdown) -> Result<(), ShutdownError> {
        let (iface, handle, write) = match self.table.get_mut(id) {
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
                (c.iface, c.handle, write)
            }
            Some(Entry::Udp(u)) if u.peer.is_some() => return Ok(()),
            Some(_) => return Err(ShutdownError::NotConnected),
            None => return Err(ShutdownError::NoSuchSocket),
        };
        if write {
            self.ifaces[iface.0]
                .sockets
                .get_mut::<tcp::Socket<'_>>(handle)
                .close();
        }
        Ok(())
    }

    /// Bytes received and not yet read, and bytes queued and not yet acknowledged.
    pub fn queued(&self, id: SocketId) -> Option<(usize, usize)> {
        match self.table.get(id)? {
            Entry::Tcp(TcpSocket {
                state: TcpState::Connection(c),
                ..
            }) => {
                let s = self.ifaces[c.iface.0]
                    .sockets
                    .get::<tcp::Socket<'_>>(c.handle);
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
                readable: !l.ready.is_empty(),
                ..Readiness::default()
            },
            TcpState::Connection(c) => {
                let sock = self.ifaces[c.iface.0]
                    .sockets
                    .get::<tcp::Socket<'_>>(c.handle);
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

    /// Drop the smoltcp socket of a failed attempt before a new one.
    fn drop_connection(&mut self, id: SocketId) {
        let Some(s) = self.tcp_entry(id) else { return };
        if let TcpState::Connection(c) = std::mem::replace(&mut s.state, TcpState::Fresh) {
            if c.owns_port {
                s.local = None;
                self.release_port(Proto::Tcp, c.local.port(), Holder::Socket(id));
            }
            self.remove_smol_socket(c.iface, c.handle);
            self.fo.forget(&(c.local, c.remote));
            self.icmp.forget_syn(c.local, c.remote);
        }
    }

    /// A closed socket's resources: connections linger as orphans until they finish closing.
    pub(crate) fn tcp_release(&mut self, id: SocketId, s: TcpSocket, now: Instant) {
        match s.state {
            TcpState::Fresh => {
                if let Some(local) = s.local {
                    self.release_port(Proto::Tcp, local.port(), Holder::Socket(id));
                }
            }
            TcpState::Listening(l) => {
                for (iface, handle) in l
                    .pool
                    .into_iter()
                    .chain(l.ready.into_iter().map(|(i, h, _, _)| (i, h)))
                {
                    let sock = self.ifaces[iface.0]
                        .sockets
                        .get_mut::<tcp::Socket<'_>>(handle);
                    let tuple = tuple_of(sock);
                    sock.abort();
                    // Kept until the RST has gone out.
                    self.orphans.push(Orphan {
                        iface,
                        handle,
                        deadline: None,
                        token: u64::MAX,
                        port: None,
                        tuple,
                    });
                }
                if let Some(local) = s.local {
                    self.fo.listeners.remove(&local.port());
                    self.release_port(Proto::Tcp, local.port(), Holder::Socket(id));
                }
            }
            TcpState::Connection(c) => {
                // An attempt closed before it was answered: its SYN no longer matters.
                self.icmp.forget_syn(c.local, c.remote);
                let sock = self.ifaces[c.iface.0]
                    .sockets
                    .get_mut::<tcp::Socket<'_>>(c.handle);
                if sock.recv_queue() > 0 {
                    // RFC 2525 §2.17, as Linux: closing with unread data resets the connection.
                    sock.abort();
                } else {
                    sock.close();
                }
                let port = if c.owns_port || s.local.is_some_and(|l| l.port() == c.local.port()) {
                    Some(c.local.port())
                } else {
                    None
                };
                let token = match port {
                    Some(p) => self.orphan_port(Proto::Tcp, p, id),
                    None => u64::MAX,
                };
                let deadline = now
                    + smoltcp::time::Duration::from_micros(
                        self.config.orphan_timeout.as_micros() as u64
                    );
                self.orphans.push(Orphan {
                    iface: c.iface,
                    handle: c.handle,
                    deadline: Some(deadline),
                    token,
                    port,
                    tuple: Some((c.local, c.remote)),
                });
            }
        }
    }

    /// Remove orphans that finished closing; abort those past their deadline.
    pub(crate) fn reap_orphans(&mut self, now: Instant) -> bool {
        let mut finished = Vec::new();
        for (n, o) in self.orphans.iter().enumerate() {
            let sock = self.ifaces[o.iface.0]
                .sockets
                .get_mut::<tcp::Socket<'_>>(o.handle);
            if sock.state() == tcp::State::Closed {
                finished.push(n);
            } else if o.deadline.is_some_and(|d| now >= d) && sock.state() != tcp::State::TimeWait {
                sock.abort();
            }
        }
        let any = !finished.is_empty();
        for n in finished.into_iter().rev() {
            let o = self.orphans.swap_remove(n);
            self.remove_smol_socket(o.iface, o.handle);
            if let Some(tuple) = o.tuple {
                self.fo.forget(&tuple);
            }
            if let Some(port) = o.port {
                self.release_port(Proto::Tcp, port, Holder::Orphan(o.token));
            }
        }
        any
    }

    /// Look at one TCP socket after a poll. Returns whether it changed in a way waiters care about.
    pub(crate) fn settle_tcp(&mut self, id: SocketId, now: Instant) -> bool {
        let Some(Entry::Tcp(s)) = self.table.get_mut(id) else {
            return false;
        };
        match &mut s.state {
            TcpState::Fresh => false,
            TcpState::Listening(_) => self.refill_listener(id),
            TcpState::Connection(c) => {
                if c.ended {
                    return false;
                }
                let sock = self.ifaces[c.iface.0]
                    .sockets
                    .get_mut::<tcp::Socket<'_>>(c.handle);
                let state = sock.state();
                let before = c.last_state;
                c.last_state = state;
                if !c.established {
                    if !matches!(state, tcp::State::SynSent | tcp::State::SynReceived) {
                        self.icmp.forget_syn(c.local, c.remote);
                    }
                    match state {
                        tcp::State::SynSent | tcp::State::SynReceived => {
                            if c.deadline.is_some_and(|d| now >= d) {
                                sock.abort();
                                c.ended = true;
                                c.deadline = None;
                                s.error = Some(ConnectionError::TimedOut);
                                self.icmp.forget_syn(c.local, c.remote);
                                return true;
                            }
                            false
                        }
                        tcp::State::Closed | tcp::State::Listen => {
                            // RFC 9293 §3.10.7.3: a RST acceptable in SYN-SENT refuses the
                            // connection. smoltcp closes the socket for no other reason here.
                            c.ended = true;
                            c.deadline = None;
                            s.error = Some(ConnectionError::Refused);
                            true
                        }
                        _ => {
                            c.established = true;
                            c.deadline = None;
                            // What the SYN-ACK acknowledged of Fast Open SYN data is already
                            // delivered; the rest goes now, right after the handshake (C-05).
                            let acked = match self.fo.conns.get(&(c.local, c.remote)) {
                                Some(crate::fastopen::Conn::Client(fo)) => fo.offset as usize,
                                _ => 0,
                            };
                            if !c.early.is_empty() {
                                // Both are bounded by the send buffer's size, so it all fits.
                                let early = std::mem::take(&mut c.early);
                                let rest = early.get(acked..).unwrap_or(&[]);
                                let n = sock.send_slice(rest).unwrap_or(0);
                                c.early.extend_from_slice(&rest[n..]);
                            }
                            // Its local endpoint is now fixed.
                            if let Some(ep) = sock.local_endpoint() {
                                c.local = socket_addr(ep);
                            }
                            true
                        }
                    }
                } else if state == tcp::State::Closed {
                    c.ended = true;
                    // The normal ends pass through TIME-WAIT or LAST-ACK; any other way to
                    // CLOSED is a reset.
                    if !matches!(before, tcp::State::TimeWait | tcp::State::LastAck) {
                        s.error = Some(ConnectionError::Reset);
                    }
                    true
                } else {
                    state != before
                }
            }
        }
    }

    /// An ICMP error about one of our SYNs: the attempt fails with it (see the `icmp` module).
    /// Returns whether an attempt ended.
    pub(crate) fn tcp_icmp_error(&mut self, r: &crate::icmp::Report) -> bool {
        if r.seq.is_none() || self.icmp.syn_seq(r.local, r.remote) != r.seq {
            // Not the sequence number of a SYN we sent: stale, or a guess.
            return false;
        }
        for id in self.table.ids() {
            let Some(Entry::Tcp(s)) = self.table.get_mut(id) else {
                continue;
            };
            let TcpState::Connection(c) = &mut s.state else {
                continue;
            };
            if c.established || c.ended || c.local != r.local || c.remote != r.remote {
                continue;
            }
            let sock = self.ifaces[c.iface.0]
                .sockets
                .get_mut::<tcp::Socket<'_>>(c.handle);
            if sock.state() != tcp::State::SynSent {
                return false;
            }
            sock.abort();
            c.ended = true;
            c.deadline = None;
            s.error = Some(r.error);
            self.icmp.forget_syn(r.local, r.remote);
            return true;
        }
        false
    }

    /// Move established connections to the accept queue and keep listening sockets ready.
    fn refill_listener(&mut self, id: SocketId) -> bool {
        let (family, local) = match self.table.get(id) {
            Some(Entry::Tcp(TcpSocket {
                family,
                local: Some(local),
                state: TcpState::Listening(_),
                ..
            })) => (*family, *local),
            _ => return false,
        };
        let ifaces = self.interfaces_for(&local.ip(), family);
        let pool_target = self.config.listen_pool.max(1);
        let mut fresh = Vec::new();
        for &iface in &ifaces {
            // The count of listening sockets this interface will need.
            fresh.push((iface, 0usize));
        }
        let mut changed = false;
        let mut to_abort = Vec::new();
        {
            let Some(Entry::Tcp(TcpSocket {
                state: TcpState::Listening(l),
                ..
            })) = self.table.get_mut(id)
            else {
                return false;
            };
            let mut keep = Vec::with_capacity(l.pool.len());
            let mut listening = vec![0usize; self.ifaces.len()];
            for (iface, handle) in l.pool.drain(..) {
                let sock = self.ifaces[iface.0].sockets.get::<tcp::Socket<'_>>(handle);
                match sock.state() {
                    tcp::State::Listen => {
                        listening[iface.0] += 1;
                        keep.push((iface, handle));
                    }
                    tcp::State::SynReceived => keep.push((iface, handle)),
                    tcp::State::Closed | tcp::State::TimeWait => to_abort.push((iface, handle)),
                    _ => {
                        let wrong_family = sock
                            .remote_endpoint()
                            .is_some_and(|ep| !family_admits_peer(family, &from_smoltcp(ep.addr)));
                        if wrong_family {
                            to_abort.push((iface, handle));
                        } else {
                            match tuple_of(sock) {
                                Some((local, remote)) => {
                                    l.ready.push_back((iface, handle, local, remote))
                                }
                                None => to_abort.push((iface, handle)),
                            }
                            changed = true;
                        }
                    }
                }
            }
            l.pool = keep;
            let pending = l.pool.len() - listening.iter().sum::<usize>() + l.ready.len();
            let room = l.backlog.saturating_sub(pending);
            for (iface, need) in &mut fresh {
                *need = pool_target.saturating_sub(listening[iface.0]).min(room);
            }
        }
        for (iface, handle) in to_abort {
            let sock = self.ifaces[iface.0]
                .sockets
                .get_mut::<tcp::Socket<'_>>(handle);
            let tuple = tuple_of(sock);
            sock.abort();
            // Kept until the RST has gone out.
            self.orphans.push(Orphan {
                iface,
                handle,
                deadline: None,
                token: u64::MAX,
                port: None,
                tuple,
            });
        }
        let listen_ep = IpListenEndpoint {
            addr: if local.ip().is_unspecified() {
                None
            } else {
                Some(to_smoltcp(local.ip()))
            },
            port: local.port(),
        };
        let mut added = Vec::new();
        for (iface, need) in fresh {
            for _ in 0..need {
                let bytes = self.tcp_buffer_size();
                if !self.buffers_fit(bytes) {
                    // Past the buffer limit a listener keeps fewer sockets ready; SYNs that find
                    // none go unanswered (the peer retries), as under a full backlog.
                    break;
                }
                let mut sock = self.new_tcp_socket();
                if sock.listen(listen_ep).is_ok() {
                    added.push((iface, self.add_smol_socket(iface, sock, bytes)));
                }
            }
        }
        if let Some(Entry::Tcp(TcpSocket {
            state: TcpState::Listening(l),
            ..
        })) = self.table.get_mut(id)
        {
            l.pool.extend(added);
        }
        changed
    }
}

/// An `AF_INET6` listener accepts IPv4 peers too (as Linux with `IPV6_V6ONLY` off); an
/// `AF_INET` listener only IPv4 ones.
fn family_admits_peer(family: Family, peer: &IpAddr) -> bool {
    family == Family::V6 || peer.is_ipv4()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::sim::{LinkConfig, Pair};
    use crate::{ConnectOptions, Family, SocketType};

    #[test]
    fn attempts_closed_before_an_answer_forget_their_syn() {
        let link = LinkConfig {
            latency: Duration::from_millis(5),
            loss: 0.0,
            mtu: 1500,
            seed: 3,
        };
        let mut p = Pair::new(link, &["192.0.2.2/24"], &["192.0.2.1/24"]);
        // Nothing listens on B: but close each attempt before the RST can come back.
        for _ in 0..50 {
            let c = p.a.socket(Family::V4, SocketType::Stream);
            p.a.connect(
                c,
                "192.0.2.1:9".parse().unwrap(),
                ConnectOptions::default(),
                p.now(),
            )
            .unwrap();
            p.step();
            p.a.close(c, p.now());
        }
        p.run_for(Duration::from_secs(1));
        assert_eq!(
            p.a.icmp.syns_remembered(),
            0,
            "the ISNs of closed attempts are forgotten, so the bounded table never fills up"
        );
    }
}
