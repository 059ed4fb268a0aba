//! `std::net`-like types over the descriptor calls, for Rust callers.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use stack::{CongestionControl, Family, Shutdown, SocketType};

use crate::calls::SaEndpoints;
use crate::fd::Fd;
use crate::net::Net;

fn family_of(addr: &SocketAddr) -> Family {
    if addr.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// Closes its descriptor when dropped.
#[derive(Debug)]
struct Owned {
    net: Net,
    fd: Fd,
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.net.close(self.fd);
    }
}

/// A TCP connection on the stack, as `std::net::TcpStream`.
#[derive(Debug)]
pub struct TcpStream {
    inner: Owned,
}

impl TcpStream {
    /// Connect (blocking) to `addr`.
    ///
    /// # Errors
    /// As [`Net::connectx`].
    pub fn connect(net: &Net, addr: SocketAddr) -> io::Result<TcpStream> {
        Self::connectx(net, &SaEndpoints::to(addr), 0)
    }

    /// Connect (blocking) with `connectx` endpoints and flags.
    ///
    /// # Errors
    /// As [`Net::connectx`].
    pub fn connectx(net: &Net, endpoints: &SaEndpoints, flags: u32) -> io::Result<TcpStream> {
        let dst = endpoints
            .dstaddr
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let fd = net.socket(family_of(&dst), SocketType::Stream)?;
        let inner = Owned {
            net: net.clone(),
            fd,
        };
        net.connectx(
            fd,
            endpoints,
            crate::SAE_ASSOCID_ANY,
            flags,
            &[],
            None,
            None,
        )?;
        Ok(TcpStream { inner })
    }

    /// The descriptor (still owned by this stream).
    pub fn fd(&self) -> Fd {
        self.inner.fd
    }

    /// The local address.
    ///
    /// # Errors
    /// `EBADF` only if the stack lost the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.net.local_addr(self.inner.fd)
    }

    /// The peer's address.
    ///
    /// # Errors
    /// `ENOTCONN`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.net.peer_addr(self.inner.fd)
    }

    /// Shut down reading, writing or both.
    ///
    /// # Errors
    /// `ENOTCONN`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.net.shutdown(self.inner.fd, how)
    }

    /// `SO_RCVTIMEO` and `SO_SNDTIMEO`.
    ///
    /// # Errors
    /// `EBADF` only if closed.
    pub fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        self.inner.net.set_timeouts(self.inner.fd, read, write)
    }

    /// Non-blocking mode.
    ///
    /// # Errors
    /// `EBADF` only if closed.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.net.set_nonblocking(self.inner.fd, nonblocking)
    }

    /// Run the connection on `algorithm` from now on (`TCP_CONGESTION`; see
    /// [`Net::set_congestion_control`]).
    ///
    /// # Errors
    /// `EBADF` only if closed.
    pub fn set_congestion_control(&self, algorithm: CongestionControl) -> io::Result<()> {
        self.inner
            .net
            .set_congestion_control(self.inner.fd, algorithm)
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.net.recv(self.inner.fd, buf)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.net.send(self.inner.fd, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A listening TCP socket on the stack, as `std::net::TcpListener`.
#[derive(Debug)]
pub struct TcpListener {
    inner: Owned,
}

impl TcpListener {
    /// Bind to `addr` and listen with the largest backlog ([`stack::SOMAXCONN`], 4096, as
    /// Linux's `somaxconn`): a burst of clients waits in the queue rather than being dropped.
    ///
    /// # Errors
    /// As [`Net::bind`] and [`Net::listen`].
    pub fn bind(net: &Net, addr: SocketAddr) -> io::Result<TcpListener> {
        let fd = net.socket(family_of(&addr), SocketType::Stream)?;
        let inner = Owned {
            net: net.clone(),
            fd,
        };
        net.bind(fd, addr)?;
        net.listen(fd, stack::SOMAXCONN)?;
        Ok(TcpListener { inner })
    }

    /// Wait for a connection.
    ///
    /// # Errors
    /// As [`Net::accept`].
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (fd, peer) = self.inner.net.accept(self.inner.fd)?;
        Ok((
            TcpStream {
                inner: Owned {
                    net: self.inner.net.clone(),
                    fd,
                },
            },
            peer,
        ))
    }

    /// The bound address.
    ///
    /// # Errors
    /// `EBADF` only if closed.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.net.local_addr(self.inner.fd)
    }

    /// The congestion control of the connections it accepts from now on (`TCP_CONGESTION`; see
    /// [`Net::set_congestion_control`]).
    ///
    /// # Errors
    /// `EBADF` only if closed.
    pub fn set_congestion_control(&self, algorithm: CongestionControl) -> io::Result<()> {
        self.inner
            .net
            .set_congestion_control(self.inner.fd, algorithm)
    }

    /// The descriptor.
    pub fn fd(&self) -> Fd {
        self.inner.fd
    }
}

/// A UDP socket on the stack, as `std::net::UdpSocket`.
#[derive(Debug)]
pub struct UdpSocket {
    inner: Owned,
}

impl UdpSocket {
    /// Bind to `addr` (port 0: ephemeral).
    ///
    /// # Errors
    /// As [`Net::bind`].
    pub fn bind(net: &Net, addr: SocketAddr) -> io::Result<UdpSocket> {
        let fd = net.socket(family_of(&addr), SocketType::Datagram)?;
        let inner = Owned {
            net: net.clone(),
            fd,
        };
        net.bind(fd, addr)?;
        Ok(UdpSocket { inner })
    }

    /// Associate with `peer` (`connectx` on a datagram socket).
    ///
    /// # Errors
    /// As [`Net::connectx`].
    pub fn connect(&self, peer: SocketAddr) -> io::Result<()> {
        self.inner.net.connect(self.inner.fd, peer)
    }

    /// Send to the associated peer.
    ///
    /// # Errors
    /// As [`Net::send`].
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.net.send(self.inner.fd, buf)
    }

    /// Send to `addr`.
    ///
    /// # Errors
    /// As [`Net::send_to`].
    pub fn send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        self.inner.net.send_to(self.inner.fd, buf, addr)
    }

    /// Receive one datagram and its source.
    ///
    /// # Errors
    /// As [`Net::recv_from`].
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.net.recv_from(self.inner.fd, buf)
    }

    /// `SO_RCVTIMEO` and `SO_SNDTIMEO`.
    ///
    /// # Errors
    /// `EBADF` only if closed.
    pub fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        self.inner.net.set_timeouts(self.inner.fd, read, write)
    }

    /// The bound address.
    ///
    /// # Errors
    /// `EBADF` only if closed.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.net.local_addr(self.inner.fd)
    }

    /// The descriptor.
    pub fn fd(&self) -> Fd {
        self.inner.fd
    }
}
