//! The socket calls: `socket`, `bind`, `listen`, `accept`, `connectx`, `disconnectx`, `send`,
//! `recv`, `shutdown`, `close`, `poll`, `getsockopt(SO_ERROR)`.
//!
//! Each returns `io::Result`; an error is always `io::Error::from_raw_os_error(errno)`, so
//! `err.raw_os_error()` gives what a C caller would find in `errno`.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::MutexGuard;

use crate::waiters::Waiter;
use std::time::{Duration, Instant};

use stack::{
    ConnectOptions, ConnectStatus, Family, FastOpenMode, Readiness, RecvError, SendError, Shutdown,
    SocketId, SocketType,
};

use crate::errno::Errno;
use crate::fd::{Deferred, Descriptor, Fd};
use crate::net::{Net, State};

/// `AF_INET` or `AF_INET6`.
pub type Domain = Family;

/// `SAE_ASSOCID_ANY`: the only association id `connectx` takes (one association per socket).
pub const SAE_ASSOCID_ANY: u32 = 0;
/// `SAE_ASSOCID_ALL`: all associations (accepted by `disconnectx`).
pub const SAE_ASSOCID_ALL: u32 = u32::MAX;
/// `SAE_CONNID_ANY`.
pub const SAE_CONNID_ANY: u32 = 0;
/// `SAE_CONNID_ALL`.
pub const SAE_CONNID_ALL: u32 = u32::MAX;
/// The connection id `connectx` reports: a socket has one connection.
pub const CONNID: u32 = 1;

/// `CONNECT_RESUME_ON_READ_WRITE`: return at once; the connection starts at the first write or
/// read.
pub const CONNECT_RESUME_ON_READ_WRITE: u32 = 0x1;
/// `CONNECT_DATA_IDEMPOTENT`: the caller's data may be replayed (so it may ride in a SYN).
pub const CONNECT_DATA_IDEMPOTENT: u32 = 0x2;
/// `CONNECT_DATA_AUTHENTICATED`: the data authenticates itself (SYN data without a cookie).
pub const CONNECT_DATA_AUTHENTICATED: u32 = 0x4;
const KNOWN_FLAGS: u32 =
    CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT | CONNECT_DATA_AUTHENTICATED;

/// `POLLIN`.
pub const POLLIN: i16 = libc::POLLIN;
/// `POLLOUT`.
pub const POLLOUT: i16 = libc::POLLOUT;
/// `POLLERR`.
pub const POLLERR: i16 = libc::POLLERR;
/// `POLLHUP`.
pub const POLLHUP: i16 = libc::POLLHUP;
/// `POLLNVAL`.
pub const POLLNVAL: i16 = libc::POLLNVAL;

/// `struct sa_endpoints`: where a connection goes, and optionally where it comes from.
///
/// Darwin passes addresses as `struct sockaddr *` with a length; here they are `SocketAddr`s, so
/// a bad address length or an unknown family (`EINVAL` on Darwin) cannot be expressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaEndpoints {
    /// `sae_srcif`: the kernel interface index of the device to leave through (0: any).
    pub srcif: u32,
    /// `sae_srcaddr`: the source address (port 0: ephemeral).
    pub srcaddr: Option<SocketAddr>,
    /// `sae_dstaddr`: the destination.
    pub dstaddr: Option<SocketAddr>,
}

impl SaEndpoints {
    /// Just a destination.
    pub fn to(dst: SocketAddr) -> SaEndpoints {
        SaEndpoints {
            dstaddr: Some(dst),
            ..SaEndpoints::default()
        }
    }
}

/// One entry of [`Net::poll`], as `struct pollfd`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollFd {
    /// The descriptor.
    pub fd: Fd,
    /// `POLLIN`, `POLLOUT`.
    pub events: i16,
    /// What is ready: `POLLIN`, `POLLOUT`, `POLLERR`, `POLLHUP`, `POLLNVAL`.
    pub revents: i16,
}

impl PollFd {
    /// Watch `fd` for `events`.
    pub fn new(fd: Fd, events: i16) -> PollFd {
        PollFd {
            fd,
            events,
            revents: 0,
        }
    }
}

fn err(e: impl Into<Errno>) -> io::Error {
    e.into().into()
}

/// How long a call that has to wait runs rounds itself before it sleeps. The answer to what a
/// thread just sent often arrives within tens of microseconds (the peer is a kernel on the same
/// machine, or one hop away); catching it here spares the runtime's wake-up and this thread's,
/// two thread switches that cost more than the wait. Measured with the `rate` benchmark: 30 µs
/// caught most answers, 80 µs nearly all.
const SPIN: Duration = Duration::from_micros(80);

/// Most iov entries `connectx` takes (`IOV_MAX`).
const IOV_MAX: usize = 1024;

/// What `connectx` reports through `len` and `connid` when it succeeds (or goes on).
#[derive(Debug, Default)]
struct Outcome {
    queued: usize,
    connid: u32,
}

/// What a blocking wait found.
enum Wait<T> {
    Done(T),
    Again,
}

impl Net {
    /// Look up a descriptor: `EBADF` when not open, `ENOTSOCK` when the number is an open
    /// descriptor of the process that is not one of this stack's sockets.
    pub(crate) fn descriptor(state: &mut State, fd: Fd) -> io::Result<&mut Descriptor> {
        Self::desc(state, fd)
    }

    fn desc(state: &mut State, fd: Fd) -> io::Result<&mut Descriptor> {
        match state.fds.get_mut(fd) {
            Some(d) => Ok(d),
            None if tun_driver::is_open_fd(fd) => Err(err(Errno::ENOTSOCK)),
            None => Err(err(Errno::EBADF)),
        }
    }

    /// Whether `fd` is still the descriptor a call started on (not closed, nor closed and
    /// given again).
    fn same_descriptor(state: &State, fd: Fd, serial: u64) -> bool {
        state.fds.get(fd).is_some_and(|d| d.serial == serial)
    }

    fn running(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.shared().lock();
        if state.running {
            Ok(state)
        } else {
            Err(err(Errno::ENETDOWN))
        }
    }

    /// Run `attempt` until it is done, parking on the descriptor's socket between tries (the
    /// runtime wakes exactly the callers of the sockets a poll touched). Non-blocking
    /// descriptors get `EAGAIN` (or what `would_block` says) at once; a timeout ends the wait
    /// with the same error; a stopped stack with `EINTR`.
    fn blocking<T>(
        &self,
        fd: Fd,
        timeout: impl Fn(&Descriptor) -> Option<Duration>,
        would_block: Errno,
        mut attempt: impl FnMut(&mut State) -> io::Result<Wait<T>>,
    ) -> io::Result<T> {
        let shared = self.shared();
        let mut state = self.running()?;
        let d = Self::desc(&mut state, fd)?;
        let nonblocking = d.nonblocking;
        let serial = d.serial;
        let deadline = timeout(d).map(|t| Instant::now() + t);
        let mut waiter: Option<std::sync::Arc<Waiter>> = None;
        let mut spin_until: Option<Instant> = None;
        loop {
            match attempt(&mut state) {
                Ok(Wait::Done(v)) => {
                    shared.release(state);
                    return Ok(v);
                }
                Err(e) => {
                    shared.release(state);
                    return Err(e);
                }
                Ok(Wait::Again) if nonblocking => {
                    shared.release(state);
                    return Err(err(would_block));
                }
                Ok(Wait::Again) => {}
            }
            let spin = *spin_until.get_or_insert_with(|| Instant::now() + SPIN);
            if shared.can_help() && Instant::now() < spin {
                // Before sleeping, run rounds here for a moment: the answer to what this
                // thread just sent is often queued already, or about to be.
                shared.release(state);
                if !shared.help() {
                    // Another thread runs the round: let it.
                    std::thread::yield_now();
                }
                state = shared.lock();
                if !state.running {
                    return Err(err(Errno::EINTR));
                }
                if !Self::same_descriptor(&state, fd, serial) {
                    return Err(err(Errno::EBADF));
                }
                continue;
            }
            spin_until = None;
            let id = Self::desc(&mut state, fd)?.socket;
            let w = waiter.get_or_insert_with(Waiter::current);
            state.waiters.register(id, w);
            shared.release(state);
            let woke = w.park(deadline);
            state = shared.lock();
            state.waiters.unregister(id, w);
            if !state.running {
                return Err(err(Errno::EINTR));
            }
            if !woke {
                shared.release(state);
                return Err(err(would_block));
            }
            // The descriptor may have been closed by another thread meanwhile, and its number
            // given to another socket: that one is not this call's.
            if !Self::same_descriptor(&state, fd, serial) {
                return Err(err(Errno::EBADF));
            }
        }
    }

    /// `socket(domain, type, 0)`.
    ///
    /// # Errors
    /// `ENOBUFS` past the descriptor limit; `ENETDOWN` after [`Net::stop`].
    pub fn socket(&self, domain: Domain, ty: SocketType) -> io::Result<Fd> {
        let mut state = self.running()?;
        let id = state.stack.socket(domain, ty);
        match state.fds.insert(Descriptor::new(id)) {
            Some(fd) => Ok(fd),
            None => {
                state.stack.close(id, self.shared().clock.now());
                Err(err(Errno::ENOBUFS))
            }
        }
    }

    /// `bind(fd, addr)`; port 0 picks an ephemeral port.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`; `EINVAL` (already bound); `EAFNOSUPPORT`; `EADDRNOTAVAIL` (not an
    /// address of this stack); `EADDRINUSE`.
    pub fn bind(&self, fd: Fd, addr: SocketAddr) -> io::Result<()> {
        self.on_live_socket(fd, |stack, id| stack.bind(id, addr).map_err(err))
    }

    /// Run `op` on the stack socket behind `fd`, then wake whoever the call concerns and the
    /// runtime if it queued something to send.
    fn on_socket<T>(
        &self,
        fd: Fd,
        op: impl FnOnce(&mut stack::Stack, SocketId) -> io::Result<T>,
    ) -> io::Result<T> {
        self.socket_call(fd, false, op)
    }

    /// [`Net::on_socket`] for a call a disconnected stream socket refuses with `EINVAL` (XNU:
    /// its protocol control block is dead).
    fn on_live_socket<T>(
        &self,
        fd: Fd,
        op: impl FnOnce(&mut stack::Stack, SocketId) -> io::Result<T>,
    ) -> io::Result<T> {
        self.socket_call(fd, true, op)
    }

    fn socket_call<T>(
        &self,
        fd: Fd,
        live_only: bool,
        op: impl FnOnce(&mut stack::Stack, SocketId) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.running()?;
        let d = Self::desc(&mut state, fd)?;
        if live_only && d.disconnected {
            return Err(err(Errno::EINVAL));
        }
        let id = d.socket;
        let result = op(&mut state.stack, id);
        self.shared().release(state);
        result
    }

    /// `listen(fd, backlog)`.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`; `EOPNOTSUPP` on a datagram socket; `EINVAL` when connected.
    pub fn listen(&self, fd: Fd, backlog: usize) -> io::Result<()> {
        self.on_live_socket(fd, |stack, id| stack.listen(id, backlog).map_err(err))
    }

    /// `accept(fd)`: the new descriptor (blocking, like its parent's default) and the peer.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`; `EINVAL` when not listening; `EAGAIN` (non-blocking, none ready);
    /// `ENOBUFS` past the descriptor limit; `EINTR` when the stack stops.
    pub fn accept(&self, fd: Fd) -> io::Result<(Fd, SocketAddr)> {
        self.blocking(
            fd,
            |d| d.recv_timeout,
            Errno::EAGAIN,
            |state| {
                let id = state
                    .fds
                    .get(fd)
                    .map(|d| d.socket)
                    .ok_or_else(|| err(Errno::EBADF))?;
                match state.stack.accept(id) {
                    Ok((new, peer)) => match state.fds.insert(Descriptor::new(new)) {
                        Some(nfd) => Ok(Wait::Done((nfd, peer))),
                        None => {
                            state.stack.close(new, self.shared().clock.now());
                            Err(err(Errno::ENOBUFS))
                        }
                    },
                    Err(stack::AcceptError::WouldBlock) => Ok(Wait::Again),
                    Err(e) => Err(err(e)),
                }
            },
        )
    }

    fn connect_options(state: &State, ep: &SaEndpoints, flags: u32) -> io::Result<ConnectOptions> {
        let interface = match ep.srcif {
            0 => None,
            index => Some(
                state
                    .stack
                    .interface_by_kernel_index(index)
                    .ok_or_else(|| err(Errno::ENXIO))?,
            ),
        };
        // C-10: data rides in a SYN only for a caller that allows replays.
        let fast_open = match (
            flags & CONNECT_DATA_IDEMPOTENT != 0,
            flags & CONNECT_DATA_AUTHENTICATED != 0,
        ) {
            (true, true) => FastOpenMode::NoCookie,
            (true, false) => FastOpenMode::Cookie,
            (false, _) => FastOpenMode::Off,
        };
        Ok(ConnectOptions {
            interface,
            source: ep.srcaddr,
            fast_open,
        })
    }

    /// `connectx(fd, endpoints, associd, flags, iov, iovcnt, len, connid)`: connect a stream
    /// socket, or associate a datagram socket with a peer, optionally sending data.
    ///
    /// - Stream socket: the iov data is queued and sent as soon as the connection is made;
    ///   `len` receives how many bytes were queued. A blocking socket returns once the
    ///   connection is made (or failed); a non-blocking one returns `EINPROGRESS`, becomes
    ///   writable when the attempt is over, and [`Net::so_error`] tells the outcome.
    /// - With `CONNECT_RESUME_ON_READ_WRITE` (and no iov), only the SYN waits, as on XNU: the
    ///   route, the source address and the port are settled at once (`local_addr` answers),
    ///   every error a connect would give is given now, and it returns 0; the first write or
    ///   read starts the connection. That write takes all the data the send buffer holds (what
    ///   fits goes in the SYN) and, on a blocking descriptor, returns once the handshake is
    ///   over; another write before then is `ENOTCONN`.
    /// - Datagram socket: sends without an address go to the peer, only its datagrams are
    ///   received, the iov data goes at once as one datagram; `len` receives its size.
    ///
    /// Where the connection comes from: `srcif` (a kernel interface index, as
    /// [`Net::if_nametoindex`] gives) makes it leave through that device, from an address of it
    /// chosen for the destination (RFC 6724 for IPv6: never a link-local source for a global
    /// destination), whatever the routing table says; `srcaddr` binds that address (and port,
    /// if not 0) first, as `bind` then `connect` would, and so also picks the device that owns
    /// it; with both, the address must be on that device. With neither: the routing table
    /// (longest prefix, then the default route), then source selection.
    ///
    /// # Errors
    /// - `EBADF` (not an open descriptor), `ENOTSOCK` (a descriptor of the process that is not
    ///   one of this stack's sockets).
    /// - `EINVAL`: no destination, an iov without `len`, more than 1024 iov entries. Darwin's
    ///   "bad address length" and "unknown family" cases cannot be expressed here: addresses
    ///   are `SocketAddr`s (the C library checks them). `associd` and flags it does not know
    ///   are ignored, as XNU ignores them.
    /// - `EAFNOSUPPORT`: destination or source of another family than the socket's, or no
    ///   address of the destination's family on the outgoing device.
    /// - `EADDRNOTAVAIL`: port 0, a source address not on this stack, or not on `srcif`.
    /// - `EADDRINUSE`: the source address and port are taken.
    /// - `ENXIO`: no device of this stack has index `srcif`.
    /// - `ENETUNREACH`: no route; or an ICMP "network unreachable" answered the SYN.
    /// - `ENETDOWN`: the outgoing device is down (its kernel link was set down), or the stack
    ///   was stopped.
    /// - `ENOBUFS`: the connection's buffers would pass
    ///   [`StackConfig::buffer_limit`](stack::StackConfig::buffer_limit) (or, for `socket`,
    ///   the table of 65,536 descriptors is full).
    /// - `EALREADY`: an attempt is in progress (non-blocking); `EISCONN`: already connected,
    ///   or an attempt is in progress (blocking, as XNU);
    ///   `EOPNOTSUPP`: a listening socket.
    /// - `EMSGSIZE`: iov data larger than one datagram carries; the socket is left exactly as
    ///   it was.
    /// - `EINPROGRESS`: non-blocking (the outcome comes from `poll` and `SO_ERROR`); also a
    ///   blocking call with data whose send timeout ([`Net::set_timeouts`]) ran out first — the
    ///   attempt goes on, as on Darwin (without data, the send timeout does not apply).
    ///
    /// `*len` and `*connid` are written on success and with `EINPROGRESS`, 0 on any other
    /// error. `CONNECT_DATA_IDEMPOTENT` without an iov and without
    /// `CONNECT_RESUME_ON_READ_WRITE` sends a plain SYN (no Fast Open option), as XNU clears the
    /// flag when there is no data to send.
    /// - `ECONNREFUSED` (the peer answered with a RST, or ICMP port unreachable),
    ///   `EHOSTUNREACH` (ICMP host unreachable or time exceeded about our SYN), `ETIMEDOUT` (no
    ///   answer within [`StackConfig::connect_timeout`](stack::StackConfig::connect_timeout)):
    ///   from a blocking call, or from `SO_ERROR` after a non-blocking one.
    /// - `EINTR`: what interrupts a blocking `connectx` is [`Net::stop`] (or dropping the last
    ///   handle); signals do not, since the wait is not in a system call.
    /// - `EFAULT` cannot happen: Darwin returns it for a pointer outside the address space,
    ///   and every argument here is a reference or a slice the borrow checker vouches for.
    #[allow(clippy::too_many_arguments)]
    pub fn connectx(
        &self,
        fd: Fd,
        endpoints: &SaEndpoints,
        associd: u32,
        flags: u32,
        iov: &[IoSlice<'_>],
        len: Option<&mut usize>,
        connid: Option<&mut u32>,
    ) -> io::Result<()> {
        // XNU ignores the association id (a socket has one) and flags it does not know.
        let _ = associd;
        let mut out = Outcome::default();
        let r = self.connectx_inner(
            fd,
            endpoints,
            flags & KNOWN_FLAGS,
            iov,
            len.is_some(),
            &mut out,
        );
        // Darwin writes `*len` and `*connid` on success, and on EINPROGRESS (the attempt goes
        // on with what was queued); 0 on any other error.
        let pending = matches!(&r, Err(e) if Errno::of(e) == Some(Errno::EINPROGRESS));
        let (queued, id) = if r.is_ok() || pending {
            (out.queued, out.connid)
        } else {
            (0, 0)
        };
        if let Some(len) = len {
            *len = queued;
        }
        if let Some(connid) = connid {
            *connid = id;
        }
        r
    }

    fn connectx_inner(
        &self,
        fd: Fd,
        endpoints: &SaEndpoints,
        mut flags: u32,
        iov: &[IoSlice<'_>],
        has_len: bool,
        out: &mut Outcome,
    ) -> io::Result<()> {
        if iov.len() > IOV_MAX || (!iov.is_empty() && !has_len) {
            return Err(err(Errno::EINVAL));
        }
        if iov.is_empty() && flags & CONNECT_RESUME_ON_READ_WRITE == 0 {
            // Nothing to send, now or at a first write: XNU clears the flag, and the SYN is a
            // plain one (no cookie request).
            flags &= !CONNECT_DATA_IDEMPOTENT;
        }
        let data_len: usize = iov.iter().map(|s| s.len()).sum();
        let remote = endpoints.dstaddr.ok_or_else(|| err(Errno::EINVAL))?;
        let links = self.shared().link_states();
        let mut state = self.running()?;
        for (iface, up) in links {
            let _ = state.stack.set_interface_up(iface, up);
        }
        let d = Self::desc(&mut state, fd)?;
        if d.disconnected {
            return Err(err(Errno::EINVAL));
        }
        let id = d.socket;
        let opts = Self::connect_options(&state, endpoints, flags)?;
        match state.stack.socket_type(id) {
            Some(SocketType::Datagram) => {
                drop(state);
                return self.associate(fd, id, remote, opts, iov, data_len, out);
            }
            Some(SocketType::Stream) => {}
            None => return Err(err(Errno::EBADF)),
        }
        out.connid = CONNID;
        if flags & CONNECT_RESUME_ON_READ_WRITE != 0 && data_len == 0 {
            // Only the SYN waits (XNU): the route, the source address and the port are settled
            // now, and every error connect would give is given here, where curl expects it
            // (to move on to the next address).
            if Self::desc(&mut state, fd)?.deferred.is_some() {
                return Err(err(Errno::EISCONN));
            }
            match state.stack.prepare_connect(id, remote, opts) {
                Ok(()) => {}
                Err(stack::ConnectError::InProgress) => return Err(err(Errno::EISCONN)),
                Err(e) => return Err(err(e)),
            }
            Self::desc(&mut state, fd)?.deferred = Some(Box::new(Deferred { remote, opts }));
            return Ok(());
        }
        let now = self.shared().clock.now();
        let nonblocking = Self::desc(&mut state, fd)?.nonblocking;
        match state.stack.connect(id, remote, opts, now) {
            Ok(()) => {}
            // XNU: a second connect during an attempt is EALREADY when non-blocking, EISCONN
            // when blocking.
            Err(stack::ConnectError::InProgress) if !nonblocking => {
                return Err(err(Errno::EISCONN))
            }
            Err(e) => return Err(err(e)),
        }
        // Everything is queued, blocking or not (XNU: a non-blocking call with an iov reports
        // EINPROGRESS with every byte queued in `len`): what the SYN carries goes in it, the
        // rest once the connection is made.
        let mut queued = 0;
        for slice in iov {
            queued += state.stack.queue_early(id, slice).map_err(err)?;
        }
        out.queued = queued;
        self.shared().release(state);
        if nonblocking {
            // Always EINPROGRESS, even if the runtime already has the answer: the outcome is
            // for poll and SO_ERROR to tell, as with a C socket.
            return Err(err(Errno::EINPROGRESS));
        }
        self.wait_connected(fd, id, data_len > 0)
    }

    /// Wait for a connection attempt's outcome (or report `EINPROGRESS` when non-blocking).
    /// The send timeout ends the wait only for a call that gave data (XNU's rule: without
    /// data, a blocking connect waits for the outcome).
    fn wait_connected(&self, fd: Fd, id: SocketId, with_data: bool) -> io::Result<()> {
        self.blocking(
            fd,
            move |d| d.send_timeout.filter(|_| with_data),
            Errno::EINPROGRESS,
            |state| {
                // `disconnectx` from another thread ended this attempt (the descriptor now
                // holds a fresh socket).
                if state.fds.get(fd).is_some_and(|d| d.socket != id) {
                    return Err(err(Errno::ECONNABORTED));
                }
                match Self::connect_outcome(state, id) {
                    None => Ok(Wait::Again),
                    Some(r) => r.map(Wait::Done),
                }
            },
        )
    }

    /// The outcome of socket `id`'s connection attempt: `None` while it is under way; its
    /// error (reported once, as `SO_ERROR`) if it failed.
    pub(crate) fn connect_outcome(state: &mut State, id: SocketId) -> Option<io::Result<()>> {
        match state.stack.connect_status(id) {
            Some(ConnectStatus::InProgress) => None,
            Some(ConnectStatus::Connected) | None => Some(Ok(())),
            Some(ConnectStatus::Failed(_)) => {
                let e = state
                    .stack
                    .take_error(id)
                    .map(Errno::from)
                    .unwrap_or(Errno::ECONNREFUSED);
                Some(Err(err(e)))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn associate(
        &self,
        fd: Fd,
        id: SocketId,
        remote: SocketAddr,
        opts: ConnectOptions,
        iov: &[IoSlice<'_>],
        data_len: usize,
        out: &mut Outcome,
    ) -> io::Result<()> {
        let mut state = self.running()?;
        Self::desc(&mut state, fd)?;
        if data_len > 0 {
            // Refuse an oversized datagram before touching the socket.
            let limit = state
                .stack
                .datagram_limit_via(id, remote, opts)
                .map_err(err)?;
            if data_len > limit {
                return Err(err(Errno::EMSGSIZE));
            }
        }
        let now = self.shared().clock.now();
        state.stack.connect(id, remote, opts, now).map_err(err)?;
        if data_len > 0 {
            let data: Vec<u8> = iov.iter().flat_map(|s| s.iter().copied()).collect();
            state.stack.send_to(id, &data, None).map_err(err)?;
        }
        out.queued = data_len;
        out.connid = CONNID;
        self.shared().release(state);
        Ok(())
    }

    /// `connect(fd, addr)`: `connectx` with a destination only.
    ///
    /// # Errors
    /// As [`Net::connectx`].
    pub fn connect(&self, fd: Fd, addr: SocketAddr) -> io::Result<()> {
        self.connectx(
            fd,
            &SaEndpoints::to(addr),
            SAE_ASSOCID_ANY,
            0,
            &[],
            None,
            None,
        )
    }

    /// `disconnectx(fd, associd, connid)`: end a stream socket's connection, or dissolve a
    /// datagram socket's association. As XNU's:
    /// - `connid` is not looked at (a socket has one connection);
    /// - a stream socket ends as close ends it (FIN after the queued data, RST with unread
    ///   data; an attempt under way is abandoned), and the descriptor stays open but dead:
    ///   reads give 0, writes `EPIPE`, `poll` reports it readable, writable and hung up, and a
    ///   new `connectx`, `bind` or `listen` is `EINVAL`. A socket that never connected (or a
    ///   listener) ends the same way, and `disconnectx` returns 0 for it;
    /// - a datagram socket keeps its port and may associate again.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`; `EINVAL` for an associd other than `SAE_ASSOCID_ANY`/`ALL`, or a
    /// stream socket already disconnected; `ENOTCONN` for a datagram socket without a peer.
    pub fn disconnectx(&self, fd: Fd, associd: u32, connid: u32) -> io::Result<()> {
        let _ = connid;
        if !matches!(associd, SAE_ASSOCID_ANY | SAE_ASSOCID_ALL) {
            return Err(err(Errno::EINVAL));
        }
        let mut state = self.running()?;
        let d = Self::desc(&mut state, fd)?;
        let (id, disconnected) = (d.socket, d.disconnected);
        match state.stack.socket_type(id) {
            Some(SocketType::Datagram) => {
                if !state.stack.disconnect_datagram(id) {
                    return Err(err(Errno::ENOTCONN));
                }
            }
            Some(SocketType::Stream) => {
                if disconnected {
                    return Err(err(Errno::EINVAL));
                }
                let d = Self::desc(&mut state, fd)?;
                d.deferred = None;
                d.preconnect = false;
                d.disconnected = true;
                let family = state.stack.socket_family(id).unwrap_or(Family::V4);
                state.stack.close(id, self.shared().clock.now());
                // The descriptor needs a socket to name; this one is never used.
                let fresh = state.stack.socket(family, SocketType::Stream);
                Self::desc(&mut state, fd)?.socket = fresh;
            }
            None => return Err(err(Errno::EBADF)),
        }
        self.shared().release(state);
        Ok(())
    }

    /// Start a connection `connectx` deferred, if any. Returns whether one started.
    fn resume(state: &mut State, fd: Fd, now: stack::Instant) -> io::Result<bool> {
        let d = Self::desc(state, fd)?;
        let Some(deferred) = d.deferred.take() else {
            return Ok(false);
        };
        let id = d.socket;
        state
            .stack
            .connect(id, deferred.remote, deferred.opts, now)
            .map_err(err)?;
        Ok(true)
    }

    /// `send(fd, buf, 0)` / `write(fd, buf)`: queue bytes on a connection, or send one datagram
    /// to the associated peer. Blocks while the buffer is full (or the handshake is under way)
    /// unless non-blocking.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`; `EAGAIN` (non-blocking); `ENOTCONN` (never connected, or a second
    /// write during the handshake a deferred connect's first write started); `EPIPE` after
    /// shutdown or `disconnectx`;
    /// `ECONNRESET`, `ECONNREFUSED`, `ETIMEDOUT` for a failed connection; `EDESTADDRREQ` (a
    /// datagram socket without a peer); `EMSGSIZE`.
    pub fn send(&self, fd: Fd, buf: &[u8]) -> io::Result<usize> {
        let mut first = true;
        // The connection this write started, on a blocking descriptor.
        let mut started = None;
        let n = self.blocking(
            fd,
            |d| d.send_timeout,
            Errno::EAGAIN,
            |state| {
                if Self::desc(state, fd)?.disconnected {
                    return Err(err(Errno::EPIPE));
                }
                if first && Self::resume(state, fd, self.shared().clock.now())? {
                    first = false;
                    // CONNECT_RESUME_ON_READ_WRITE, as XNU: the first write takes all the data
                    // the send buffer holds (what fits goes in the SYN, with a cookie); a
                    // blocking one returns once the handshake is over.
                    let d = Self::desc(state, fd)?;
                    d.preconnect = true;
                    let (id, nonblocking) = (d.socket, d.nonblocking);
                    if !nonblocking {
                        started = Some(id);
                    }
                    return state
                        .stack
                        .queue_early(id, buf)
                        .map(Wait::Done)
                        .map_err(err);
                }
                first = false;
                let d = Self::desc(state, fd)?;
                let (id, preconnect) = (d.socket, d.preconnect);
                if preconnect {
                    // XNU: after the write that started a deferred connection, writing again
                    // before the handshake completes is ENOTCONN.
                    if state.stack.connect_status(id) == Some(ConnectStatus::InProgress) {
                        return Err(err(Errno::ENOTCONN));
                    }
                    Self::desc(state, fd)?.preconnect = false;
                }
                match state.stack.send(id, buf) {
                    Ok(n) => Ok(Wait::Done(n)),
                    Err(SendError::WouldBlock) => Ok(Wait::Again),
                    Err(e) => Err(err(e)),
                }
            },
        )?;
        if let Some(id) = started {
            // The data stays queued if the send timeout ends the wait first.
            match self.wait_connected(fd, id, true) {
                Err(e) if Errno::of(&e) != Some(Errno::EINPROGRESS) => return Err(e),
                _ => {}
            }
        }
        Ok(n)
    }

    /// `write(fd, buf)`: as [`Net::send`].
    ///
    /// # Errors
    /// As [`Net::send`].
    pub fn write(&self, fd: Fd, buf: &[u8]) -> io::Result<usize> {
        self.send(fd, buf)
    }

    /// `writev(fd, iov)`: the slices in order, as one write (one datagram on a datagram socket).
    ///
    /// # Errors
    /// As [`Net::send`].
    pub fn writev(&self, fd: Fd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        match iov {
            [] => self.send(fd, &[]),
            [one] => self.send(fd, one),
            _ => self.send(
                fd,
                &iov.iter()
                    .flat_map(|s| s.iter().copied())
                    .collect::<Vec<u8>>(),
            ),
        }
    }

    /// `sendto(fd, buf, 0, addr)`: one datagram to `addr` (binding an ephemeral port first if
    /// needed). On a stream socket the address is ignored, as Linux does for a connected socket.
    ///
    /// # Errors
    /// As [`Net::send`], and `ENETUNREACH`, `EADDRNOTAVAIL`, `EAFNOSUPPORT` for the address.
    pub fn send_to(&self, fd: Fd, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        self.blocking(
            fd,
            |d| d.send_timeout,
            Errno::EAGAIN,
            |state| {
                let d = Self::desc(state, fd)?;
                if d.disconnected {
                    return Err(err(Errno::EPIPE));
                }
                let id = d.socket;
                match state.stack.send_to(id, buf, Some(addr)) {
                    Ok(n) => Ok(Wait::Done(n)),
                    Err(SendError::WouldBlock) => Ok(Wait::Again),
                    Err(e) => Err(err(e)),
                }
            },
        )
    }

    /// `recv(fd, buf, 0)` / `read(fd, buf)`: `Ok(0)` is the end of the stream (and all a
    /// descriptor `disconnectx` ended reads). A failed or reset connection reports its error
    /// once, then `Ok(0)`.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`; `EAGAIN` (non-blocking, or `SO_RCVTIMEO` passed); `ENOTCONN`;
    /// `ECONNRESET`, `ECONNREFUSED`, `ETIMEDOUT`; `EINTR` when the stack stops.
    pub fn recv(&self, fd: Fd, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_from(fd, buf).map(|(n, _)| n)
    }

    /// `read(fd, buf)`: as [`Net::recv`].
    ///
    /// # Errors
    /// As [`Net::recv`].
    pub fn read(&self, fd: Fd, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(fd, buf)
    }

    /// `recvfrom(fd, buf, 0)`: bytes and their source (the peer, for a stream socket).
    ///
    /// # Errors
    /// As [`Net::recv`].
    pub fn recv_from(&self, fd: Fd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.blocking(
            fd,
            |d| d.recv_timeout,
            Errno::EAGAIN,
            |state| {
                Self::resume(state, fd, self.shared().clock.now())?;
                let d = Self::desc(state, fd)?;
                let id = d.socket;
                if d.disconnected {
                    // The end of the stream, from no one.
                    let family = state.stack.socket_family(id).unwrap_or(Family::V4);
                    return Ok(Wait::Done((0, SocketAddr::new(family.unspecified(), 0))));
                }
                match state.stack.socket_type(id) {
                    Some(SocketType::Datagram) => match state.stack.recv_from(id, buf) {
                        Ok(v) => Ok(Wait::Done(v)),
                        Err(RecvError::WouldBlock) => Ok(Wait::Again),
                        Err(e) => Err(err(e)),
                    },
                    _ => match state.stack.recv(id, buf) {
                        Ok(n) => {
                            let peer = state
                                .stack
                                .peer_addr(id)
                                .ok_or_else(|| err(Errno::ENOTCONN))?;
                            Ok(Wait::Done((n, peer)))
                        }
                        Err(RecvError::WouldBlock) => Ok(Wait::Again),
                        Err(e) => Err(err(e)),
                    },
                }
            },
        )
    }

    /// `shutdown(fd, how)`.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`; `ENOTCONN`.
    pub fn shutdown(&self, fd: Fd, how: Shutdown) -> io::Result<()> {
        self.on_socket(fd, |stack, id| stack.shutdown(id, how).map_err(err))
    }

    /// `close(fd)`. The connection finishes closing in the background (FIN after the queued
    /// data; RST when received data was left unread).
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`.
    pub fn close(&self, fd: Fd) -> io::Result<()> {
        let mut state = self.shared().lock();
        if state.fds.get(fd).is_none() {
            return Err(err(if tun_driver::is_open_fd(fd) {
                Errno::ENOTSOCK
            } else {
                Errno::EBADF
            }));
        }
        let mut wake = Vec::new();
        if let Some(d) = state.fds.remove(fd) {
            state.stack.close(d.socket, self.shared().clock.now());
            // Calls blocked on it (in other threads) look again and find it closed.
            state.waiters.take(d.socket, &mut wake);
        }
        self.shared().release(state);
        for w in wake {
            w.wake();
        }
        Ok(())
    }

    /// `fcntl(fd, F_SETFL, O_NONBLOCK)`.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`.
    pub fn set_nonblocking(&self, fd: Fd, nonblocking: bool) -> io::Result<()> {
        let mut state = self.shared().lock();
        Self::desc(&mut state, fd)?.nonblocking = nonblocking;
        Ok(())
    }

    /// `fcntl(fd, F_GETFL) & O_NONBLOCK`.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`.
    pub fn nonblocking(&self, fd: Fd) -> io::Result<bool> {
        let mut state = self.shared().lock();
        Ok(Self::desc(&mut state, fd)?.nonblocking)
    }

    /// The `SO_RCVTIMEO` and `SO_SNDTIMEO` of a descriptor ([`Net::set_timeouts`]).
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`.
    pub fn timeouts(&self, fd: Fd) -> io::Result<(Option<Duration>, Option<Duration>)> {
        let mut state = self.shared().lock();
        let d = Self::desc(&mut state, fd)?;
        Ok((d.recv_timeout, d.send_timeout))
    }

    /// `SO_RCVTIMEO` and `SO_SNDTIMEO`: how long blocking calls wait (`None`: forever). A
    /// blocking `connectx` that runs out of `SO_SNDTIMEO` returns `EINPROGRESS` and the attempt
    /// goes on, as on Linux.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`.
    pub fn set_timeouts(
        &self,
        fd: Fd,
        recv: Option<Duration>,
        send: Option<Duration>,
    ) -> io::Result<()> {
        let mut state = self.shared().lock();
        let d = Self::desc(&mut state, fd)?;
        d.recv_timeout = recv;
        d.send_timeout = send;
        Ok(())
    }

    /// `getsockopt(fd, SOL_SOCKET, SO_ERROR)`: the pending error, cleared by reading it.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`.
    pub fn so_error(&self, fd: Fd) -> io::Result<Option<Errno>> {
        let mut state = self.shared().lock();
        let id = Self::desc(&mut state, fd)?.socket;
        Ok(state.stack.take_error(id).map(Errno::from))
    }

    /// `getsockname(fd)`.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`.
    pub fn local_addr(&self, fd: Fd) -> io::Result<SocketAddr> {
        let mut state = self.shared().lock();
        let id = Self::desc(&mut state, fd)?.socket;
        state.stack.local_addr(id).ok_or_else(|| err(Errno::EBADF))
    }

    /// `getpeername(fd)`.
    ///
    /// # Errors
    /// `EBADF`, `ENOTSOCK`; `ENOTCONN`.
    pub fn peer_addr(&self, fd: Fd) -> io::Result<SocketAddr> {
        let mut state = self.shared().lock();
        let id = Self::desc(&mut state, fd)?.socket;
        state
            .stack
            .peer_addr(id)
            .ok_or_else(|| err(Errno::ENOTCONN))
    }

    fn revents(state: &mut State, p: &PollFd) -> i16 {
        let Some(d) = state.fds.get(p.fd) else {
            return POLLNVAL;
        };
        if d.disconnected {
            // XNU's dead socket: neither direction can block.
            return (p.events & (POLLIN | POLLOUT)) | POLLHUP;
        }
        let r: Readiness = state.stack.readiness(d.socket);
        let deferred = d.deferred.is_some();
        let mut ev = 0;
        if r.readable {
            ev |= POLLIN;
        }
        // A deferred connection (CONNECT_RESUME_ON_READ_WRITE) is writable: the first write
        // starts it.
        if r.writable || deferred {
            ev |= POLLOUT;
        }
        ev &= p.events;
        if r.error {
            ev |= POLLERR;
        }
        if r.hangup && !deferred && state.stack.connect_status(d.socket).is_some() {
            ev |= POLLHUP;
        }
        ev
    }

    /// `poll(fds, timeout)`: wait until one descriptor is ready; fills `revents`, returns how
    /// many are ready. `None` waits forever; `Some(ZERO)` only looks.
    ///
    /// # Errors
    /// `EINTR` when the stack stops while waiting.
    pub fn poll(&self, fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
        let shared = self.shared();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = shared.lock();
        let waiter = Waiter::current();
        let mut spin_until: Option<Instant> = None;
        loop {
            let mut ready = 0;
            for p in fds.iter_mut() {
                p.revents = Self::revents(&mut state, p);
                ready += usize::from(p.revents != 0);
            }
            if ready > 0 {
                shared.release(state);
                return Ok(ready);
            }
            if !state.running {
                return Err(err(Errno::EINTR));
            }
            if timeout == Some(Duration::ZERO) {
                return Ok(0);
            }
            let spin = *spin_until.get_or_insert_with(|| Instant::now() + SPIN);
            if shared.can_help() && Instant::now() < spin {
                // Before sleeping, run rounds here for a moment, as the blocking calls do.
                shared.release(state);
                if !shared.help() {
                    std::thread::yield_now();
                }
                state = shared.lock();
                continue;
            }
            spin_until = None;
            let ids: Vec<SocketId> = fds
                .iter()
                .filter_map(|p| state.fds.get(p.fd).map(|d| d.socket))
                .collect();
            for id in &ids {
                state.waiters.register(*id, &waiter);
            }
            shared.release(state);
            let woke = waiter.park(deadline);
            state = shared.lock();
            for id in &ids {
                state.waiters.unregister(*id, &waiter);
            }
            if !woke {
                // One last look: it may have become ready as the deadline passed.
                let mut ready = 0;
                for p in fds.iter_mut() {
                    p.revents = Self::revents(&mut state, p);
                    ready += usize::from(p.revents != 0);
                }
                return Ok(ready);
            }
        }
    }

    /// The kernel interface index of a device of this stack, by name (what `sae_srcif` takes).
    pub fn if_nametoindex(&self, name: &str) -> Option<u32> {
        let state = self.shared().lock();
        let id = state.stack.interface_by_name(name)?;
        state
            .stack
            .interfaces()
            .get(id.0)
            .and_then(|i| i.kernel_index)
    }
}
