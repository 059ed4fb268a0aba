//! Async sockets on the stack for tokio (feature `tokio`): [`TcpStream`], [`TcpListener`] and
//! [`UdpSocket`], shaped as tokio's own.
//!
//! No reactor and no thread per socket: the stack's runtime thread already moves the packets.
//! An operation tries the non-blocking call; when it would block, the task's `Waker` is
//! registered on the socket (the same per-socket waiter table the blocking calls park in), and
//! the runtime wakes it when a poll of the stack touched that socket, and only then. A task
//! waiting on a quiet socket costs nothing. The registration happens under the state lock,
//! after a last look at the socket's readiness, so a wake-up cannot fall between the try and
//! the registration. It works on tokio's current-thread and multi-thread runtimes alike (or on
//! any executor: only `Waker`s and tokio's I/O traits are used).
//!
//! ```no_run
//! # async fn demo(net: connectx_api::Net) -> std::io::Result<()> {
//! use connectx_api::tokio::TcpStream;
//! use connectx_api::{SaEndpoints, CONNECT_DATA_IDEMPOTENT, CONNECT_RESUME_ON_READ_WRITE};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // Returns at once; the first write goes in the SYN when a Fast Open cookie is cached.
//! let to = SaEndpoints::to("192.0.2.1:80".parse().unwrap());
//! let mut s = TcpStream::connectx(&net, &to,
//!     CONNECT_RESUME_ON_READ_WRITE | CONNECT_DATA_IDEMPOTENT).await?;
//! s.write_all(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n").await?;
//! let mut reply = Vec::new();
//! s.read_to_end(&mut reply).await?;
//! # Ok(()) }
//! ```
//!
//! Errors are the blocking calls' (`io::Error`s with their errno). A connection's fatal error
//! (reset, refused, timed out, unreachable) is returned again by every later operation on the
//! stream, not once; a stopped [`Net`] fails every pending operation with `ENETDOWN`; dropping
//! a future (a timeout, a `select!`) cancels it and leaves nothing registered, and dropping
//! the stream closes its descriptor as `close` does.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use stack::{CongestionControl, Family, FastOpenInfo, FastOpenServerConfig, Shutdown, SocketType};

use crate::calls::{SaEndpoints, CONNECT_RESUME_ON_READ_WRITE, SAE_ASSOCID_ANY};
use crate::errno::Errno;
use crate::fd::Fd;
use crate::net::Net;
use crate::waiters::Waiter;

fn err(e: Errno) -> io::Error {
    e.into()
}

fn family_of(addr: &SocketAddr) -> Family {
    if addr.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// What an operation waits for.
#[derive(Debug, Clone, Copy)]
enum Want {
    Read,
    Write,
}

/// A non-blocking descriptor the async handles own: closed when the last of them goes, with a
/// waiter for each direction (the halves of a split stream wait in different tasks).
#[derive(Debug)]
struct Shared {
    net: Net,
    fd: Fd,
    read: Arc<Waiter>,
    write: Arc<Waiter>,
    /// The connection's fatal error, once seen: every later operation returns it.
    failed: Mutex<Option<Errno>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Takes the socket's waiters off the table too.
        let _ = self.net.close(self.fd);
    }
}

impl Shared {
    /// Own `fd` (made non-blocking).
    fn new(net: &Net, fd: Fd) -> io::Result<Shared> {
        let shared = Shared {
            net: net.clone(),
            fd,
            read: Waiter::task(),
            write: Waiter::task(),
            failed: Mutex::new(None),
        };
        net.set_nonblocking(fd, true)?;
        Ok(shared)
    }

    fn failed(&self) -> Option<Errno> {
        *self.failed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remember a connection's fatal error, so that it is not reported only once.
    fn note(&self, e: &io::Error) {
        if let Some(errno) = Errno::of(e).filter(|e| is_fatal(*e)) {
            let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
            failed.get_or_insert(errno);
        }
    }

    /// Run `op` (a non-blocking call on this descriptor) until it does not block; between
    /// tries, wait for the socket to become ready as `want` says.
    fn poll_op<T>(
        &self,
        cx: &mut Context<'_>,
        want: Want,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        if let Some(e) = self.failed() {
            return Poll::Ready(Err(err(e)));
        }
        let mut looked = false;
        loop {
            match op() {
                Err(e) if Errno::of(&e) == Some(Errno::EAGAIN) => {}
                Err(e) => {
                    self.note(&e);
                    return Poll::Ready(Err(e));
                }
                Ok(v) => return Poll::Ready(Ok(v)),
            }
            match self.register(cx, want, !looked) {
                Ok(true) => return Poll::Pending,
                // Ready again since the try: try once more (then wait whatever readiness says,
                // so that a socket that looks ready but is not cannot make this spin).
                Ok(false) => looked = true,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Register the task on the socket unless, looking under the lock, it is ready already
    /// (`look`); returns whether it registered. `ENETDOWN` once the stack stopped.
    fn register(&self, cx: &mut Context<'_>, want: Want, look: bool) -> io::Result<bool> {
        let shared = self.net.shared();
        let mut state = shared.lock();
        if !state.running {
            return Err(err(Errno::ENETDOWN));
        }
        let id = Net::descriptor(&mut state, self.fd)?.socket;
        if look {
            let r = state.stack.readiness(id);
            let ready = r.error
                || r.hangup
                || match want {
                    Want::Read => r.readable,
                    Want::Write => r.writable,
                };
            if ready {
                return Ok(false);
            }
        }
        let waiter = match want {
            Want::Read => &self.read,
            Want::Write => &self.write,
        };
        waiter.set_waker(cx.waker());
        state.waiters.register(id, waiter);
        Ok(true)
    }

    /// Wait for the outcome of a connection attempt.
    fn poll_connected(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_op(cx, Want::Write, || {
            let shared = self.net.shared();
            let mut state = shared.lock();
            if !state.running {
                return Err(err(Errno::ENETDOWN));
            }
            let id = Net::descriptor(&mut state, self.fd)?.socket;
            Net::connect_outcome(&mut state, id).unwrap_or_else(|| Err(err(Errno::EAGAIN)))
        })
    }
}

/// Errors after which a connection is over for good.
fn is_fatal(e: Errno) -> bool {
    [
        Errno::ECONNRESET,
        Errno::ECONNREFUSED,
        Errno::ECONNABORTED,
        Errno::ETIMEDOUT,
        Errno::EHOSTUNREACH,
        Errno::ENETUNREACH,
        Errno::ENETDOWN,
    ]
    .contains(&e)
}

/// Where the writing side of a stream is with a deferred connection
/// (`CONNECT_RESUME_ON_READ_WRITE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// Connected (or connecting) the usual way.
    Plain,
    /// The first write will start the connection.
    Deferred,
    /// A write started it and the handshake may still be under way: further writes wait for
    /// it (the blocking call says `ENOTCONN` there, as XNU does), until one goes through.
    Started,
}

/// A TCP connection on the stack: tokio's `AsyncRead + AsyncWrite`.
#[derive(Debug)]
pub struct TcpStream {
    shared: Arc<Shared>,
    writes: Writes,
}

impl TcpStream {
    /// Connect to `addr`.
    ///
    /// # Errors
    /// As [`Net::connectx`].
    pub async fn connect(net: &Net, addr: SocketAddr) -> io::Result<TcpStream> {
        Self::connectx(net, &SaEndpoints::to(addr), 0).await
    }

    /// Connect with `connectx` endpoints and flags. With `CONNECT_RESUME_ON_READ_WRITE` it
    /// returns at once (route, source and port settled, every error a connect would give
    /// given here) and the first write starts the connection, its data in the SYN when
    /// `CONNECT_DATA_IDEMPOTENT` is set and a Fast Open cookie is cached.
    ///
    /// # Errors
    /// As [`Net::connectx`].
    pub async fn connectx(net: &Net, endpoints: &SaEndpoints, flags: u32) -> io::Result<TcpStream> {
        let dst = endpoints.dstaddr.ok_or_else(|| err(Errno::EINVAL))?;
        let fd = net.socket(family_of(&dst), SocketType::Stream)?;
        // Owned from here: a connect dropped half-way closes the descriptor.
        let shared = Arc::new(Shared::new(net, fd)?);
        let writes = match net.connectx(fd, endpoints, SAE_ASSOCID_ANY, flags, &[], None, None) {
            Ok(()) if flags & CONNECT_RESUME_ON_READ_WRITE != 0 => Writes::Deferred,
            Ok(()) => Writes::Plain,
            Err(e) if Errno::of(&e) == Some(Errno::EINPROGRESS) => {
                poll_fn(|cx| shared.poll_connected(cx)).await?;
                Writes::Plain
            }
            Err(e) => return Err(e),
        };
        Ok(TcpStream { shared, writes })
    }

    fn from_fd(net: &Net, fd: Fd) -> io::Result<TcpStream> {
        Ok(TcpStream {
            shared: Arc::new(Shared::new(net, fd)?),
            writes: Writes::Plain,
        })
    }

    /// The descriptor (owned by this stream).
    pub fn fd(&self) -> Fd {
        self.shared.fd
    }

    /// The local address.
    ///
    /// # Errors
    /// As [`Net::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.net.local_addr(self.shared.fd)
    }

    /// The peer's address.
    ///
    /// # Errors
    /// `ENOTCONN` when not connected.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.shared.net.peer_addr(self.shared.fd)
    }

    /// Shut down one direction or both (`shutdown(2)`).
    ///
    /// # Errors
    /// As [`Net::shutdown`].
    pub fn shutdown_how(&self, how: Shutdown) -> io::Result<()> {
        self.shared.net.shutdown(self.shared.fd, how)
    }

    /// What Fast Open did for this connection, if it used it.
    ///
    /// # Errors
    /// As [`Net::fast_open_info`].
    pub fn fast_open_info(&self) -> io::Result<Option<FastOpenInfo>> {
        self.shared.net.fast_open_info(self.shared.fd)
    }

    /// Run the connection on `algorithm` from now on (`TCP_CONGESTION`).
    ///
    /// # Errors
    /// As [`Net::set_congestion_control`].
    pub fn set_congestion_control(&self, algorithm: CongestionControl) -> io::Result<()> {
        self.shared
            .net
            .set_congestion_control(self.shared.fd, algorithm)
    }

    /// Split into a read half and a write half that can go to different tasks; the
    /// connection closes when both are dropped, and dropping the write half shuts down the
    /// writing direction (as tokio's).
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (
            OwnedReadHalf {
                shared: Arc::clone(&self.shared),
            },
            OwnedWriteHalf {
                shared: self.shared,
                writes: self.writes,
            },
        )
    }
}

fn poll_read(shared: &Shared, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    let n = std::task::ready!(shared.poll_op(cx, Want::Read, || {
        shared.net.recv(shared.fd, buf.initialize_unfilled())
    }))?;
    buf.advance(n);
    Poll::Ready(Ok(()))
}

fn poll_write(
    shared: &Shared,
    writes: &mut Writes,
    cx: &mut Context<'_>,
    data: &[u8],
) -> Poll<io::Result<usize>> {
    let r = shared.poll_op(cx, Want::Write, || {
        match shared.net.send(shared.fd, data) {
            // The handshake a first write started is still under way: wait for it (the socket
            // is writable once it is over) rather than fail as the blocking call does.
            Err(e) if *writes == Writes::Started && Errno::of(&e) == Some(Errno::ENOTCONN) => {
                Err(err(Errno::EAGAIN))
            }
            r => r,
        }
    });
    if matches!(r, Poll::Ready(Ok(_))) {
        *writes = match *writes {
            Writes::Deferred => Writes::Started,
            Writes::Started | Writes::Plain => Writes::Plain,
        };
    }
    r
}

fn poll_shutdown(shared: &Shared) -> Poll<io::Result<()>> {
    Poll::Ready(match shared.net.shutdown(shared.fd, Shutdown::Write) {
        // Already shut, or the connection is gone: nothing left to shut down.
        Err(e) if Errno::of(&e) == Some(Errno::ENOTCONN) => Ok(()),
        r => r,
    })
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read(&self.shared, cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write(&this.shared, &mut this.writes, cx, data)
    }

    /// Nothing to flush: a write's bytes are in the stack once it returns.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Shut down the writing direction (FIN after what is queued).
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_shutdown(&self.shared)
    }
}

/// The read half of a [`TcpStream`] ([`TcpStream::into_split`]).
#[derive(Debug)]
pub struct OwnedReadHalf {
    shared: Arc<Shared>,
}

/// The write half of a [`TcpStream`] ([`TcpStream::into_split`]); dropping it shuts down the
/// writing direction.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    shared: Arc<Shared>,
    writes: Writes,
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        let _ = self.shared.net.shutdown(self.shared.fd, Shutdown::Write);
    }
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read(&self.shared, cx, buf)
    }
}

impl AsyncWrite for OwnedWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write(&this.shared, &mut this.writes, cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_shutdown(&self.shared)
    }
}

/// A TCP listener on the stack.
#[derive(Debug)]
pub struct TcpListener {
    shared: Arc<Shared>,
}

impl TcpListener {
    /// Bind to `addr` and listen with the largest backlog ([`stack::SOMAXCONN`]).
    ///
    /// # Errors
    /// As [`Net::bind`] and [`Net::listen`].
    pub async fn bind(net: &Net, addr: SocketAddr) -> io::Result<TcpListener> {
        Self::bind_with(net, addr, None)
    }

    /// Bind and listen as [`TcpListener::bind`], with Fast Open served as `fast_open` says
    /// (`None`: the stack's default).
    ///
    /// # Errors
    /// As [`Net::bind`], [`Net::listen`] and [`Net::set_fast_open`].
    pub fn bind_with(
        net: &Net,
        addr: SocketAddr,
        fast_open: Option<FastOpenServerConfig>,
    ) -> io::Result<TcpListener> {
        let fd = net.socket(family_of(&addr), SocketType::Stream)?;
        let shared = Arc::new(Shared::new(net, fd)?);
        net.bind(fd, addr)?;
        if fast_open.is_some() {
            net.set_fast_open(fd, fast_open)?;
        }
        net.listen(fd, stack::SOMAXCONN)?;
        Ok(TcpListener { shared })
    }

    /// Wait for a connection: the stream and the peer's address.
    ///
    /// # Errors
    /// As [`Net::accept`]; `EBADF` when the descriptor was closed underneath (another handle's
    /// [`Net::close`]), `ENETDOWN` when the stack stopped.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let shared = &self.shared;
        let (fd, peer) =
            poll_fn(|cx| shared.poll_op(cx, Want::Read, || shared.net.accept(shared.fd))).await?;
        Ok((TcpStream::from_fd(&shared.net, fd)?, peer))
    }

    /// The bound address.
    ///
    /// # Errors
    /// As [`Net::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.net.local_addr(self.shared.fd)
    }

    /// The congestion control of the connections it accepts from now on (`TCP_CONGESTION`).
    ///
    /// # Errors
    /// As [`Net::set_congestion_control`].
    pub fn set_congestion_control(&self, algorithm: CongestionControl) -> io::Result<()> {
        self.shared
            .net
            .set_congestion_control(self.shared.fd, algorithm)
    }

    /// The descriptor (owned by this listener).
    pub fn fd(&self) -> Fd {
        self.shared.fd
    }
}

/// A UDP socket on the stack.
#[derive(Debug)]
pub struct UdpSocket {
    shared: Arc<Shared>,
}

impl UdpSocket {
    /// Bind to `addr` (port 0: ephemeral).
    ///
    /// # Errors
    /// As [`Net::bind`].
    pub async fn bind(net: &Net, addr: SocketAddr) -> io::Result<UdpSocket> {
        let fd = net.socket(family_of(&addr), SocketType::Datagram)?;
        let shared = Arc::new(Shared::new(net, fd)?);
        net.bind(fd, addr)?;
        Ok(UdpSocket { shared })
    }

    /// Associate with `peer` (`connectx` on a datagram socket): [`UdpSocket::send`] goes there
    /// and only its datagrams are received.
    ///
    /// # Errors
    /// As [`Net::connectx`].
    pub async fn connect(&self, peer: SocketAddr) -> io::Result<()> {
        self.shared.net.connect(self.shared.fd, peer)
    }

    /// Send one datagram to the associated peer.
    ///
    /// # Errors
    /// As [`Net::send`].
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        let s = &self.shared;
        poll_fn(|cx| s.poll_op(cx, Want::Write, || s.net.send(s.fd, buf))).await
    }

    /// Send one datagram to `addr`.
    ///
    /// # Errors
    /// As [`Net::send_to`].
    pub async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        let s = &self.shared;
        poll_fn(|cx| s.poll_op(cx, Want::Write, || s.net.send_to(s.fd, buf, addr))).await
    }

    /// Receive one datagram (from the associated peer).
    ///
    /// # Errors
    /// As [`Net::recv`].
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let s = &self.shared;
        poll_fn(|cx| s.poll_op(cx, Want::Read, || s.net.recv(s.fd, buf))).await
    }

    /// Receive one datagram and its source.
    ///
    /// # Errors
    /// As [`Net::recv_from`].
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let s = &self.shared;
        poll_fn(|cx| s.poll_op(cx, Want::Read, || s.net.recv_from(s.fd, buf))).await
    }

    /// The bound address.
    ///
    /// # Errors
    /// As [`Net::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.net.local_addr(self.shared.fd)
    }

    /// The associated peer.
    ///
    /// # Errors
    /// `ENOTCONN` without one.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.shared.net.peer_addr(self.shared.fd)
    }

    /// The descriptor (owned by this socket).
    pub fn fd(&self) -> Fd {
        self.shared.fd
    }
}
