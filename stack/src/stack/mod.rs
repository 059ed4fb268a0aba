//! The [`Stack`]: the table of contents of the core. Each method is short and hands the work to
//! the module that owns it:
//!
//! - interfaces and paths: `iface`, `route`, `source` (here: [`Stack::add_interface`] …);
//! - the engine: a poll round (`engine`): packets in, through `demux` to their shard, timers,
//!   packets out through the layers, connections settled, readiness events out;
//! - sockets: `tcp` (connections, listeners with Linux's backlog, TIME-WAIT), `udp`
//!   (datagrams, association), `ports` (bindings);
//! - layers of the packet path: `fastopen` (RFC 7413), `icmp` (errors about our packets).
//!
//! Time: the core never reads a clock and keeps none. [`Stack::poll`] takes the time of the
//! round, and every call that sets a deadline ([`Stack::connect`], [`Stack::close`]) takes the
//! time of the call.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smoltcp::time::Instant;

use crate::addr::{is_unicast_destination, Cidr};
use crate::config::{InterfaceConfig, StackConfig};
use crate::demux::Demux;
use crate::error::{
    AcceptError, BindError, ConnectError, ConnectionError, InterfaceError, ListenError, RecvError,
    RouteError, SendError, ShutdownError,
};
use crate::fastopen;
use crate::ids::{Family, IfaceId, Proto, ShardId, Slab, SocketId};
use crate::iface::{Iface, InterfaceInfo, PacketIo};
use crate::ports::{Holder, Ports};
use crate::route::RoutingTable;
use crate::shard::{Kind, Shards};
use crate::source::select_source;

mod engine;
pub(crate) mod socket;
pub(crate) mod tcp;
pub(crate) mod udp;

use socket::{Entry, Readiness, Shutdown, SocketType};
use tcp::{ConnectOptions, ConnectStatus, TcpSocket, TcpState};
use udp::UdpSocket;

/// Most addresses one interface holds (smoltcp's `iface-max-addr-count-8`).
pub const MAX_ADDRESSES_PER_INTERFACE: usize = 8;

/// What a poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// Packets were read or written, or a socket changed: [`Stack::take_events`] says which.
    pub activity: bool,
    /// Work is left for another round at once: an interface still had packets when its read
    /// budget ran out, or a connection had more to send than one round sends.
    pub more_pending: bool,
}

/// The stack's TCP counters, named as Linux's `TcpExt` and `Tcp` MIBs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(non_snake_case)]
pub struct TcpCounters {
    /// SYNs dropped because the listener's accept queue was full.
    pub ListenOverflows: u64,
    /// SYNs to a listener dropped for any reason (full accept queue, too many half-open).
    pub ListenDrops: u64,
    /// SYNs dropped because too many handshakes were half open.
    pub TCPReqQFullDrop: u64,
    /// TIME-WAIT entries that ran their course.
    pub TW: u64,
    /// Connections that closed without a TIME-WAIT entry because the table was full.
    pub TCPTimeWaitOverflow: u64,
    /// Segments the stack checked itself and found with a bad checksum (dropped).
    pub InCsumErrors: u64,
    /// SYN-ACKs with a SYN cookie sent (the half-open queue was full).
    pub SyncookiesSent: u64,
    /// ACKs that brought back a good cookie.
    pub SyncookiesRecv: u64,
    /// ACKs to a listener's port, without a connection, that brought no good cookie.
    pub SyncookiesFailed: u64,
    /// Packets to an address that is not one of the interface's unicast addresses (another
    /// host's, a broadcast or multicast one): dropped unanswered (Linux's `Ip: InAddrErrors`).
    pub InAddrErrors: u64,
    /// RSTs not at exactly the next expected sequence number, answered with a challenge ACK
    /// instead of resetting the connection (RFC 5961 §3.2; Linux's `TCPChallengeACK`).
    pub TCPChallengeACK: u64,
}

impl TcpCounters {
    /// (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("ListenOverflows", self.ListenOverflows),
            ("ListenDrops", self.ListenDrops),
            ("TCPReqQFullDrop", self.TCPReqQFullDrop),
            ("TW", self.TW),
            ("TCPTimeWaitOverflow", self.TCPTimeWaitOverflow),
            ("InCsumErrors", self.InCsumErrors),
            ("SyncookiesSent", self.SyncookiesSent),
            ("SyncookiesRecv", self.SyncookiesRecv),
            ("SyncookiesFailed", self.SyncookiesFailed),
            ("InAddrErrors", self.InAddrErrors),
            ("TCPChallengeACK", self.TCPChallengeACK),
        ]
        .into_iter()
    }
}

/// The sizes of the stack's internal tables: what a leak would grow. All of them go back to
/// zero once every socket is closed and the clock has run past every timer (the spare
/// sockets stay, at most [`StackConfig::spare_sockets`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// Open sockets.
    pub sockets: usize,
    /// smoltcp sockets (connections, handshakes, closing connections, datagram sockets' parts).
    pub shards: usize,
    /// TCP connections in the demultiplexing table.
    pub connections: usize,
    /// Handshakes peers started, not finished yet.
    pub handshakes: usize,
    /// Connections in TIME-WAIT.
    pub time_wait: usize,
    /// Places in the TIME-WAIT expiry queue (one per entry).
    pub time_wait_queue: usize,
    /// Connections with Fast Open state.
    pub fast_open: usize,
    /// Entries in the timer heap (current and stale ones not yet skipped).
    pub timers: usize,
    /// Listeners.
    pub listeners: usize,
    /// Datagram sockets' parts in the demultiplexing table.
    pub datagram_bindings: usize,
    /// Port bindings.
    pub bindings: usize,
    /// Ports used by TCP connections.
    pub connection_ports: usize,
    /// Closed TCP sockets kept for reuse.
    pub spare_sockets: usize,
    /// Readiness events not yet taken.
    pub events: usize,
    /// Servers Fast Open is suspended towards.
    pub fast_open_suspended: usize,
    /// Client cookie cache entries.
    pub cookies: usize,
}

impl TableSizes {
    /// (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, usize)> {
        [
            ("sockets", self.sockets),
            ("shards", self.shards),
            ("connections", self.connections),
            ("handshakes", self.handshakes),
            ("time_wait", self.time_wait),
            ("time_wait_queue", self.time_wait_queue),
            ("fast_open", self.fast_open),
            ("timers", self.timers),
            ("listeners", self.listeners),
            ("datagram_bindings", self.datagram_bindings),
            ("bindings", self.bindings),
            ("connection_ports", self.connection_ports),
            ("spare_sockets", self.spare_sockets),
            ("events", self.events),
            ("fast_open_suspended", self.fast_open_suspended),
            ("cookies", self.cookies),
        ]
        .into_iter()
    }
}

/// The protocol core: interfaces, routes and sockets. No threads, no clock, no descriptors:
/// time is passed in, packets move through the caller's [`PacketIo`].
#[derive(Debug)]
pub struct Stack {
    pub(crate) config: StackConfig,
    pub(crate) rng: StdRng,
    pub(crate) ifaces: Vec<Iface>,
    pub(crate) routes: RoutingTable,
    /// The application's sockets.
    pub(crate) sockets: Slab<Entry>,
    /// Every smoltcp socket, each in a set of its own, with its timer.
    pub(crate) shards: Shards,
    pub(crate) demux: Demux,
    pub(crate) ports: Ports,
    /// TCP Fast Open: cookie cache, suspensions, counters.
    pub(crate) fo: fastopen::Layer,
    /// Loss recovery: counters (the state is per connection).
    pub(crate) recovery: crate::recovery::Layer,
    pub(crate) counters: TcpCounters,
    /// The key of the SYN cookies this stack gives.
    pub(crate) syncookies: crate::syncookie::SynCookies,
    /// When the last SYN cookie went out: ACKs are checked for cookies only while one may
    /// come back (as Linux checks only after a recent overflow).
    pub(crate) last_cookie: Option<Instant>,
    /// Handshakes peers started that are not finished yet, all listeners together.
    pub(crate) half_open: usize,
    /// Sockets whose readiness may have changed since the last [`Stack::take_events`].
    pub(crate) events: std::collections::HashSet<SocketId>,
    /// Events raised in the current round (repeats included).
    pub(crate) raised: usize,
    /// Packets the stack sends itself (ACKs of TIME-WAIT entries), sent before the round ends.
    pub(crate) pending_tx: Vec<(IfaceId, Vec<u8>)>,
    /// The identification of the next datagram the stack fragments itself.
    pub(crate) fragment_ident: u32,
    pub(crate) rx_buf: Vec<u8>,
    pub(crate) tx_buf: Vec<u8>,
    pub(crate) work: Vec<ShardId>,
}

impl Stack {
    /// A stack with no interfaces yet.
    pub fn new(config: StackConfig) -> Stack {
        let mut rng = StdRng::seed_from_u64(config.random_seed);
        let syncookies = crate::syncookie::SynCookies::new(rng.random());
        let fragment_ident = rng.random();
        let mut fo = fastopen::Layer::default();
        fo.disabled = !config.fast_open_layer;
        let mut shards = Shards::default();
        shards.spare_limit = config.spare_sockets;
        let recovery =
            crate::recovery::Layer::new(!config.loss_recovery, config.congestion_control);
        Stack {
            config,
            rng,
            ifaces: Vec::new(),
            routes: RoutingTable::default(),
            sockets: Slab::default(),
            shards,
            demux: Demux::default(),
            ports: Ports::default(),
            fo,
            recovery,
            counters: TcpCounters::default(),
            syncookies,
            last_cookie: None,
            half_open: 0,
            events: std::collections::HashSet::new(),
            raised: 0,
            pending_tx: Vec::new(),
            fragment_ident,
            rx_buf: Vec::new(),
            tx_buf: Vec::new(),
            work: Vec::new(),
        }
    }

    /// The configuration the stack was made with.
    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    // ----- interfaces and routes -----

    /// Add an interface. Its addresses also give connected routes for their networks.
    ///
    /// # Errors
    /// [`InterfaceError::TooManyAddresses`] past [`MAX_ADDRESSES_PER_INTERFACE`];
    /// [`InterfaceError::BadMtu`] for an MTU the addresses' families cannot use.
    pub fn add_interface(&mut self, config: InterfaceConfig) -> Result<IfaceId, InterfaceError> {
        if config.addresses.len() > MAX_ADDRESSES_PER_INTERFACE {
            return Err(InterfaceError::TooManyAddresses {
                name: config.name,
                max: MAX_ADDRESSES_PER_INTERFACE,
            });
        }
        let needs_v6 = config.addresses.iter().any(|c| !c.is_ipv4());
        let min = if needs_v6 { 1280 } else { 576 };
        if config.mtu < min || config.mtu > 65535 {
            return Err(InterfaceError::BadMtu {
                name: config.name,
                mtu: config.mtu,
            });
        }
        let id = IfaceId(self.ifaces.len());
        for cidr in &config.addresses {
            self.routes.add(*cidr, id);
        }
        let seed = self.rng.random();
        self.ifaces.push(Iface::new(config, seed));
        let mtu = self.ifaces[id.0].frame();
        if self.rx_buf.len() < mtu {
            self.rx_buf.resize(mtu, 0);
            self.tx_buf.resize(mtu, 0);
        }
        Ok(id)
    }

    /// Packet buffers the loss recovery layer has made to keep segments in flight in (the
    /// simulator's tests: acknowledged ones are written in again).
    #[cfg(any(test, feature = "sim"))]
    pub fn shared_buffers_made(&self) -> u64 {
        self.recovery.buffers_made()
    }

    /// Route `dest` through `iface` (`0.0.0.0/0` and `::/0` are default routes).
    ///
    /// # Errors
    /// [`InterfaceError::NoSuchInterface`] for an id this stack did not give.
    pub fn add_route(&mut self, dest: Cidr, iface: IfaceId) -> Result<(), InterfaceError> {
        if iface.0 >= self.ifaces.len() {
            return Err(InterfaceError::NoSuchInterface);
        }
        self.routes.add(dest, iface);
        Ok(())
    }

    /// The routing table.
    pub fn routes(&self) -> &RoutingTable {
        &self.routes
    }

    /// Bring an interface up or down. A down interface sends nothing; what arrives on it is
    /// dropped; new connections through it fail with `ENETDOWN`.
    ///
    /// # Errors
    /// [`InterfaceError::NoSuchInterface`] for an id this stack did not give.
    pub fn set_interface_up(&mut self, iface: IfaceId, up: bool) -> Result<(), InterfaceError> {
        let i = self
            .ifaces
            .get_mut(iface.0)
            .ok_or(InterfaceError::NoSuchInterface)?;
        i.up = up;
        Ok(())
    }

    /// The interfaces, in the order they were added.
    pub fn interfaces(&self) -> Vec<InterfaceInfo> {
        self.ifaces
            .iter()
            .enumerate()
            .map(|(n, i)| i.info(IfaceId(n)))
            .collect()
    }

    /// The interface whose kernel index is `index`.
    pub fn interface_by_kernel_index(&self, index: u32) -> Option<IfaceId> {
        self.ifaces
            .iter()
            .position(|i| i.config.kernel_index == Some(index))
            .map(IfaceId)
    }

    /// The interface named `name`.
    pub fn interface_by_name(&self, name: &str) -> Option<IfaceId> {
        self.ifaces
            .iter()
            .position(|i| i.config.name == name)
            .map(IfaceId)
    }

    // ----- the engine -----

    /// Run one round at time `now`: read what arrived on each interface (up to a burst) and
    /// hand each packet to its connection, run the timers that are due, send what the sockets
    /// have queued, and settle the connections this touched. Work is proportional to what
    /// happened, not to how many sockets exist.
    pub fn poll(&mut self, now: Instant, io: &mut (impl PacketIo + ?Sized)) -> crate::PollOutcome {
        self.round(now, io)
    }

    /// When [`Stack::poll`] next has something to do if no packet arrives and no call is made:
    /// a retransmission, a delayed ACK, a deadline, a TIME-WAIT entry's end. A time already past
    /// means at once; `None`: nothing until a packet or a call.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if self.shards.has_work() {
            return Some(Instant::ZERO);
        }
        match (self.shards.next_timer(), self.demux.next_time_wait()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// [`Stack::poll_timeout`] as a delay from `now`.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.poll_timeout()
            .map(|at| Duration::from_micros((at.max(now) - now).total_micros()))
    }

    /// The sockets whose readiness may have changed since the last call (each once): wake
    /// whoever waits on them. These are what packets, timers and calls did.
    pub fn take_events(&mut self, into: &mut Vec<SocketId>) {
        into.extend(self.events.drain());
    }

    /// A socket's readiness may have changed.
    pub(crate) fn notify(&mut self, id: SocketId) {
        self.events.insert(id);
        self.raised += 1;
    }

    /// Whether calls queued work that only a [`Stack::poll`] sends (data, a FIN, a SYN).
    pub fn needs_poll(&self) -> bool {
        self.shards.has_work()
    }

    // ----- sockets -----

    /// Open a socket. It is not bound to anything until `bind`, `listen`, `connect` or a send.
    pub fn socket(&mut self, family: Family, ty: SocketType) -> SocketId {
        let entry = match ty {
            SocketType::Stream => Entry::Tcp(TcpSocket::new(family)),
            SocketType::Datagram => Entry::Udp(UdpSocket::new(family)),
        };
        SocketId(self.sockets.insert(entry))
    }

    /// Bind a socket (stream or datagram) to a local address; port 0 picks an ephemeral port.
    ///
    /// # Errors
    /// [`BindError::NoSuchSocket`], [`BindError::AlreadyBound`], [`BindError::FamilyMismatch`],
    /// [`BindError::AddressNotAvailable`] (not an address of this stack),
    /// [`BindError::AddressInUse`], [`BindError::NoPortsLeft`].
    pub fn bind(&mut self, id: SocketId, addr: SocketAddr) -> Result<(), BindError> {
        let (family, bound, proto) = match self.sockets.get(id.0) {
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
        let port = self.ports.bind(
            proto,
            addr.ip(),
            addr.port(),
            Holder::Socket(id),
            &self.config.ephemeral_ports,
            &mut self.rng,
        )?;
        let local = SocketAddr::new(addr.ip(), port);
        match self.sockets.get_mut(id.0) {
            Some(Entry::Tcp(s)) => {
                s.local = Some(local);
                Ok(())
            }
            Some(Entry::Udp(_)) => {
                let attached = self.udp_attach(id, local);
                if attached.is_err() {
                    self.ports.release(proto, port, Holder::Socket(id));
                }
                attached
            }
            None => Err(BindError::NoSuchSocket),
        }
    }

    /// Listen for connections, binding to an ephemeral port on every address if not bound.
    /// `backlog` bounds the accept queue and the handshakes under way (at most
    /// [`StackConfig::max_backlog`], as Linux caps it at `somaxconn`); a SYN that finds them
    /// full is dropped and counted, never refused.
    ///
    /// # Errors
    /// [`ListenError::NoSuchSocket`], [`ListenError::NotStream`], [`ListenError::Connected`],
    /// [`ListenError::Bind`] when the implicit bind fails.
    pub fn listen(&mut self, id: SocketId, backlog: usize) -> Result<(), ListenError> {
        self.tcp_listen(id, backlog)
    }

    /// Take an established connection from a listener's queue.
    ///
    /// # Errors
    /// [`AcceptError::NoSuchSocket`], [`AcceptError::NotListening`], [`AcceptError::WouldBlock`]
    /// when none is ready.
    pub fn accept(&mut self, id: SocketId) -> Result<(SocketId, SocketAddr), AcceptError> {
        self.tcp_accept(id)
    }

    /// Start connecting a stream socket (returns at once; [`Stack::connect_status`] and
    /// readiness tell the outcome), or associate a datagram socket with a peer. The connect
    /// timeout counts from `now`.
    ///
    /// # Errors
    /// [`ConnectError::NoSuchSocket`]; [`ConnectError::FamilyMismatch`];
    /// [`ConnectError::InvalidPort`] for port 0; [`ConnectError::Route`] when no interface or
    /// source fits; [`ConnectError::AlreadyConnected`], [`ConnectError::InProgress`],
    /// [`ConnectError::Listening`] for a socket in the wrong state; [`ConnectError::Bind`] when
    /// the source is taken or no ephemeral port is left; [`ConnectError::NoBuffers`] past
    /// [`StackConfig::buffer_limit`].
    pub fn connect(
        &mut self,
        id: SocketId,
        remote: SocketAddr,
        opts: ConnectOptions,
        now: Instant,
    ) -> Result<(), ConnectError> {
        match self.sockets.get(id.0) {
            Some(Entry::Tcp(_)) => self.tcp_connect(id, remote, opts, now),
            Some(Entry::Udp(_)) => self.udp_connect(id, remote, opts),
            None => Err(ConnectError::NoSuchSocket),
        }
    }

    /// Check and prepare a connection that starts later (Darwin's
    /// `CONNECT_RESUME_ON_READ_WRITE`): everything [`Stack::connect`] would refuse is refused
    /// now, and a fresh socket is bound to the source address (and port) the connection will
    /// use. Nothing is sent.
    ///
    /// # Errors
    /// As [`Stack::connect`].
    pub fn prepare_connect(
        &mut self,
        id: SocketId,
        remote: SocketAddr,
        opts: ConnectOptions,
    ) -> Result<(), ConnectError> {
        match self.sockets.get(id.0) {
            Some(Entry::Tcp(_)) => self.tcp_prepare_connect(id, remote, opts),
            Some(Entry::Udp(_)) => Err(ConnectError::NoSuchSocket),
            None => Err(ConnectError::NoSuchSocket),
        }
    }

    /// The progress of a connection attempt; `None` for a socket that never tried.
    pub fn connect_status(&self, id: SocketId) -> Option<ConnectStatus> {
        match self.sockets.get(id.0)? {
            Entry::Tcp(s) => self.tcp_connect_status(s),
            Entry::Udp(u) => u.peer.map(|_| ConnectStatus::Connected),
        }
    }

    /// Queue bytes on a connection whose handshake is under way; they are sent as soon as it is
    /// established (a Fast Open connection puts what its SYN carries there). Returns how many
    /// were taken (up to the send buffer's size in all).
    ///
    /// # Errors
    /// [`SendError::NoSuchSocket`]; [`SendError::NotConnected`] when no handshake is under way
    /// (use [`Stack::send`] on an established connection).
    pub fn queue_early(&mut self, id: SocketId, data: &[u8]) -> Result<usize, SendError> {
        self.tcp_queue_early(id, data)
    }

    /// Queue bytes on a connection (returns how many were taken: at least 1 unless `data` is
    /// empty), or send one datagram to the associated peer.
    ///
    /// # Errors
    /// [`SendError::NoSuchSocket`]; [`SendError::NotConnected`] (never connected);
    /// [`SendError::WouldBlock`] (buffer full, or handshake under way);
    /// [`SendError::Shutdown`] (after `shutdown(Write)` or the connection's end);
    /// [`SendError::Connection`] for a reset or failed connection (reported once); and for
    /// datagrams those of [`Stack::send_to`].
    pub fn send(&mut self, id: SocketId, data: &[u8]) -> Result<usize, SendError> {
        self.tcp_send(id, data)
    }

    /// Send one datagram to `dest`, or to the associated peer when `dest` is `None` (on a stream
    /// socket: [`Stack::send`]).
    ///
    /// # Errors
    /// [`SendError::NoSuchSocket`]; [`SendError::NoDestination`] with no destination at all;
    /// [`SendError::FamilyMismatch`]; [`SendError::Route`]; [`SendError::MessageTooLong`] above
    /// the path's datagram limit; [`SendError::WouldBlock`] with the send buffer full;
    /// [`SendError::Bind`] when no ephemeral port is left.
    pub fn send_to(
        &mut self,
        id: SocketId,
        data: &[u8],
        dest: Option<SocketAddr>,
    ) -> Result<usize, SendError> {
        self.udp_send_to(id, data, dest)
    }

    /// Read received bytes; `Ok(0)` is the end of the stream.
    ///
    /// # Errors
    /// [`RecvError::NoSuchSocket`]; [`RecvError::NotConnected`] (never connected);
    /// [`RecvError::WouldBlock`] (nothing yet, or handshake under way);
    /// [`RecvError::Connection`] for a reset or failed connection (reported once; then `Ok(0)`).
    pub fn recv(&mut self, id: SocketId, buf: &mut [u8]) -> Result<usize, RecvError> {
        self.tcp_recv(id, buf)
    }

    /// Receive one datagram: its length (the part that fit in `buf`; the rest is discarded,
    /// as with `recvfrom(2)`) and its source. With an association, datagrams from other sources
    /// are dropped unread. On a stream socket: [`Stack::recv`] and the peer.
    ///
    /// # Errors
    /// [`RecvError::NoSuchSocket`]; [`RecvError::WouldBlock`] when nothing is queued.
    pub fn recv_from(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), RecvError> {
        self.udp_recv_from(id, buf)
    }

    /// Shut down one or both halves of a connection.
    ///
    /// # Errors
    /// [`ShutdownError::NoSuchSocket`]; [`ShutdownError::NotConnected`] for a socket with no
    /// connection (or a datagram socket without an association).
    pub fn shutdown(&mut self, id: SocketId, how: Shutdown) -> Result<(), ShutdownError> {
        self.tcp_shutdown(id, how)
    }

    /// Close a socket: a connection sends FIN after its queued data (or RST when received data
    /// was left unread, as `close(2)` does) and finishes closing in the background, lingering at
    /// most [`StackConfig::orphan_timeout`] from `now`; a listener resets the connections not
    /// yet accepted. Returns whether `id` was open.
    pub fn close(&mut self, id: SocketId, now: Instant) -> bool {
        // Whoever waits on it (another thread) looks again and finds it gone.
        self.notify(id);
        match self.sockets.remove(id.0) {
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

    /// Dissolve a datagram socket's association. Returns whether it had one.
    pub fn disconnect_datagram(&mut self, id: SocketId) -> bool {
        self.udp_disconnect(id)
    }

    /// Bytes received and not yet read, and bytes queued and not yet acknowledged.
    pub fn queued(&self, id: SocketId) -> Option<(usize, usize)> {
        match self.sockets.get(id.0)? {
            Entry::Tcp(s) => self.tcp_queued(s),
            Entry::Udp(_) => None,
        }
    }

    /// Readiness of a socket; an id that is not open reads as hung up.
    pub fn readiness(&self, id: SocketId) -> Readiness {
        match self.sockets.get(id.0) {
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
        match self.sockets.get_mut(id.0)? {
            Entry::Tcp(s) => s.error.take(),
            Entry::Udp(s) => s.error.take(),
        }
    }

    /// The local address a socket is bound to (port 0 and the unspecified address until bound).
    pub fn local_addr(&self, id: SocketId) -> Option<SocketAddr> {
        match self.sockets.get(id.0)? {
            Entry::Tcp(s) => Some(s.local_addr()),
            Entry::Udp(s) => Some(s.local_addr()),
        }
    }

    /// The peer of a connected (or connecting) socket, or of an associated datagram socket.
    pub fn peer_addr(&self, id: SocketId) -> Option<SocketAddr> {
        match self.sockets.get(id.0)? {
            Entry::Tcp(s) => s.peer_addr(),
            Entry::Udp(s) => s.peer,
        }
    }

    /// Stream or datagram; `None` for an id that is not open.
    pub fn socket_type(&self, id: SocketId) -> Option<SocketType> {
        match self.sockets.get(id.0)? {
            Entry::Tcp(_) => Some(SocketType::Stream),
            Entry::Udp(_) => Some(SocketType::Datagram),
        }
    }

    /// The family a socket was opened with.
    pub fn socket_family(&self, id: SocketId) -> Option<Family> {
        match self.sockets.get(id.0)? {
            Entry::Tcp(s) => Some(s.family),
            Entry::Udp(s) => Some(s.family),
        }
    }

    /// Whether `id` names an open socket.
    pub fn is_open(&self, id: SocketId) -> bool {
        self.sockets.get(id.0).is_some()
    }

    /// How many sockets are open.
    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    /// The largest datagram a socket can send to `dest` (or to its peer).
    pub fn datagram_limit(&self, id: SocketId, dest: Option<SocketAddr>) -> Option<usize> {
        self.udp_datagram_limit(id, dest)
    }

    /// The largest datagram a socket could send to `dest` through the path `opts` would choose,
    /// without changing the socket.
    ///
    /// # Errors
    /// [`SendError::NoSuchSocket`]; [`SendError::FamilyMismatch`]; [`SendError::Route`].
    pub fn datagram_limit_via(
        &self,
        id: SocketId,
        dest: SocketAddr,
        opts: ConnectOptions,
    ) -> Result<usize, SendError> {
        self.udp_datagram_limit_via(id, dest, opts)
    }

    // ----- TCP Fast Open -----

    /// Switch Fast Open on (or off, with `None`) for a bound or listening stream socket: SYNs
    /// to it get cookies, and data behind a valid cookie goes to the application (S-01…S-09).
    /// The setting belongs to the socket and goes with it.
    ///
    /// # Errors
    /// [`ListenError::NoSuchSocket`]; [`ListenError::NotStream`] for a datagram socket or one
    /// with no local port yet; [`ListenError::Connected`] for a connected (or connecting) one.
    pub fn set_fast_open(
        &mut self,
        id: SocketId,
        config: Option<fastopen::ServerConfig>,
    ) -> Result<(), ListenError> {
        let disabled = self.fo.disabled;
        match self.sockets.get_mut(id.0) {
            Some(Entry::Tcp(TcpSocket {
                state: TcpState::Connection(_),
                ..
            })) => Err(ListenError::Connected),
            Some(Entry::Tcp(s)) if s.local.is_some() => {
                s.fast_open = config
                    .filter(|_| !disabled)
                    .map(|c| Box::new(fastopen::server::Listener::new(c)));
                Ok(())
            }
            Some(_) => Err(ListenError::NotStream),
            None => Err(ListenError::NoSuchSocket),
        }
    }

    // ----- Congestion control -----

    /// Set a stream socket's congestion control (Linux's `TCP_CONGESTION`), in place of
    /// [`StackConfig::congestion_control`](crate::StackConfig::congestion_control): on a
    /// connected socket from now on (its window carries over), on another the connection it
    /// makes, on a listener the connections it accepts.
    ///
    /// # Errors
    /// [`NoSuchSocket`](crate::SocketOptionError::NoSuchSocket);
    /// [`NotStream`](crate::SocketOptionError::NotStream) for a datagram socket.
    pub fn set_congestion_control(
        &mut self,
        id: SocketId,
        algorithm: crate::CongestionControl,
        now: Instant,
    ) -> Result<(), crate::SocketOptionError> {
        self.tcp_set_congestion_control(id, algorithm, now)
    }

    /// A stream socket's congestion control: the one set on it, else the stack's.
    ///
    /// # Errors
    /// As [`Stack::set_congestion_control`].
    pub fn congestion_control(
        &self,
        id: SocketId,
    ) -> Result<crate::CongestionControl, crate::SocketOptionError> {
        self.tcp_congestion_control(id)
    }

    /// The Fast Open state of a socket's connection.
    fn fast_open_state(&self, id: SocketId) -> Option<&fastopen::Conn> {
        let Some(Entry::Tcp(TcpSocket {
            state: TcpState::Connection(c),
            ..
        })) = self.sockets.get(id.0)
        else {
            return None;
        };
        self.shards.get(c.shard)?.conn()?.fo.as_deref()
    }

    /// What the loss recovery layer knows of a connection's sending side (`None`: not a
    /// connected TCP socket). All zero before it sent data, or with the layer off, but for the
    /// receive window.
    pub fn recovery_info(&self, id: SocketId) -> Option<crate::recovery::RecoveryInfo> {
        let Some(Entry::Tcp(TcpSocket {
            state: TcpState::Connection(c),
            ..
        })) = self.sockets.get(id.0)
        else {
            return None;
        };
        let conn = self.shards.get(c.shard)?.conn()?;
        Some(self.recovery.info(&conn.recovery))
    }

    /// What Fast Open did on a client connection (`None`: not a Fast Open connection).
    pub fn fast_open_info(&self, id: SocketId) -> Option<fastopen::FastOpenInfo> {
        match self.fast_open_state(id)? {
            fastopen::Conn::Client(c) => Some(c.info),
            fastopen::Conn::Server(_) => None,
        }
    }

    /// What Fast Open did on an accepted connection (`None`: its SYN had nothing to do with
    /// Fast Open, or its listener has it off).
    pub fn server_fast_open_info(&self, id: SocketId) -> Option<fastopen::ServerInfo> {
        match self.fast_open_state(id)? {
            fastopen::Conn::Server(s) => Some(s.info),
            fastopen::Conn::Client(_) => None,
        }
    }

    /// How many more bytes the SYN of a Fast Open connection can carry: `None` when the
    /// connection does not carry data in its SYN (no cookie, or Fast Open off).
    pub fn syn_data_room(&self, id: SocketId) -> Option<usize> {
        match self.fast_open_state(id)? {
            fastopen::Conn::Client(c) if c.syn_room() > 0 || !c.syn_data.is_empty() => {
                Some(c.syn_room())
            }
            _ => None,
        }
    }

    /// The Fast Open counters.
    pub fn fast_open_counters(&self) -> fastopen::Counters {
        self.fo.counters
    }

    /// The client cookie cache.
    pub fn cookie_cache(&self) -> Vec<fastopen::CookieEntry> {
        self.fo.cache.entries()
    }

    /// Put an entry in the client cookie cache (as loaded from a file).
    pub fn insert_cookie(&mut self, entry: fastopen::CookieEntry) {
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
    pub fn fast_open_backoff(&self, server: IpAddr) -> Option<Duration> {
        self.fo
            .blackhole
            .backoff(server)
            .map(|d| Duration::from_micros(d.total_micros()))
    }

    // ----- counters and sizes -----

    /// The TCP counters (Linux's names).
    pub fn tcp_counters(&self) -> TcpCounters {
        self.counters
    }

    /// The loss recovery layer's counters (Linux's names).
    pub fn recovery_counters(&self) -> crate::recovery::RecoveryCounters {
        self.recovery.counters
    }

    /// Bytes of socket buffers the stack holds now.
    pub fn buffers_committed(&self) -> usize {
        self.shards.committed()
    }

    /// The sizes of the internal tables, so that a leak is something a test can see.
    pub fn table_sizes(&self) -> TableSizes {
        let (shards, fast_open, timers, spare_sockets) = self.shards.sizes();
        let (listeners, datagram_bindings, time_wait_queue) = self.demux.sizes();
        let (bindings, connection_ports) = self.ports.sizes();
        TableSizes {
            sockets: self.sockets.len(),
            shards,
            connections: self.demux.connections(),
            handshakes: self.half_open,
            time_wait: self.demux.time_wait_count(),
            time_wait_queue,
            fast_open,
            timers,
            listeners,
            datagram_bindings,
            bindings,
            connection_ports,
            spare_sockets,
            events: self.events.len(),
            fast_open_suspended: self.fo.blackhole.len(),
            cookies: self.fo.cache.entries().len(),
        }
    }

    /// TCP connections the stack keeps a socket for (handshakes, open and closing ones), and
    /// connections in TIME-WAIT (a compact entry each).
    pub fn connection_counts(&self) -> (usize, usize) {
        (self.demux.connections(), self.demux.time_wait_count())
    }

    // ----- paths (internal) -----

    /// Choose the interface and source address for `dest`.
    ///
    /// `via` forces the interface (`sae_srcif`); `src` forces the source address (`sae_srcaddr`,
    /// or an address the socket is bound to), which then also decides the interface: a packet
    /// may only leave through the interface that owns its source address.
    pub(crate) fn path(
        &self,
        dest: IpAddr,
        via: Option<IfaceId>,
        src: Option<IpAddr>,
    ) -> Result<(IfaceId, IpAddr), RouteError> {
        if !is_unicast_destination(&dest) {
            return Err(RouteError::InvalidDestination(dest));
        }
        let src = src.filter(|s| !s.is_unspecified());
        let (id, src) = match (via, src) {
            (Some(id), Some(src)) => {
                let iface = self.ifaces.get(id.0).ok_or(RouteError::NoSuchInterface)?;
                if !iface.owns(&src) {
                    return Err(RouteError::AddressNotAvailable(src));
                }
                (id, src)
            }
            (Some(id), None) => {
                let iface = self.ifaces.get(id.0).ok_or(RouteError::NoSuchInterface)?;
                let src = select_source(&dest, &iface.config.addresses)
                    .ok_or(RouteError::NoSourceAddress(dest))?;
                (id, src)
            }
            (None, Some(src)) => {
                let id = self
                    .interface_owning(&src)
                    .ok_or(RouteError::AddressNotAvailable(src))?;
                (id, src)
            }
            (None, None) => {
                let route = match self.routes.lookup(&dest, |i| self.ifaces[i.0].up) {
                    Some(route) => route,
                    None if self.routes.lookup(&dest, |_| true).is_some() => {
                        return Err(RouteError::NetworkDown(dest))
                    }
                    None => return Err(RouteError::NetworkUnreachable(dest)),
                };
                let iface = &self.ifaces[route.iface.0];
                let src = select_source(&dest, &iface.config.addresses)
                    .ok_or(RouteError::NoSourceAddress(dest))?;
                (route.iface, src)
            }
        };
        if !self.ifaces[id.0].up {
            return Err(RouteError::NetworkDown(dest));
        }
        Ok((id, src))
    }

    /// The interface that owns address `ip`.
    pub(crate) fn interface_owning(&self, ip: &IpAddr) -> Option<IfaceId> {
        self.ifaces.iter().position(|i| i.owns(ip)).map(IfaceId)
    }

    /// Whether a datagram or connection from `ip` can use this stack: unspecified, or owned.
    pub(crate) fn check_local_addr(&self, ip: &IpAddr) -> Result<(), BindError> {
        if ip.is_unspecified() || self.interface_owning(ip).is_some() {
            Ok(())
        } else {
            Err(BindError::AddressNotAvailable(*ip))
        }
    }

    /// Interfaces on which a socket bound to `ip` lives: the owner of a specific address, or
    /// every interface with an address of the family.
    pub(crate) fn interfaces_for(&self, ip: &IpAddr, family: Family) -> Vec<IfaceId> {
        if ip.is_unspecified() {
            (0..self.ifaces.len())
                // An AF_INET6 socket on the unspecified address hears IPv4 too (as Linux with
                // IPV6_V6ONLY off), so it lives on every interface.
                .filter(|&n| {
                    family == Family::V6
                        || self.ifaces[n]
                            .config
                            .addresses
                            .iter()
                            .any(|c| family.admits(&c.addr()))
                })
                .map(IfaceId)
                .collect()
        } else {
            self.interface_owning(ip).into_iter().collect()
        }
    }

    // ----- socket buffers (internal) -----

    pub(crate) fn tcp_buffer_size(&self) -> usize {
        self.config.tcp_rx_buffer + self.config.tcp_tx_buffer
    }

    pub(crate) fn udp_buffer_size(&self) -> usize {
        self.config.udp_rx_buffer + self.config.udp_tx_buffer
    }

    /// Whether `bytes` more of socket buffers fit under the limit.
    pub(crate) fn buffers_fit(&self, bytes: usize) -> bool {
        self.shards.committed().saturating_add(bytes) <= self.config.buffer_limit
    }

    /// The kind of a shard (for the engine's dispatch).
    pub(crate) fn shard_is_tcp(&self, shard: ShardId) -> Option<bool> {
        self.shards
            .get(shard)
            .map(|s| matches!(s.kind, Kind::Tcp(_)))
    }
}
