//! Connections of both sides: kernel sockets made in a namespace, the stack's sockets, with the
//! timeouts that keep a stuck run from hanging.

use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use connectx_api::{
    CookieKey, Errno, Family, FastOpenInfo, FastOpenServerConfig, Fd, Net, SaEndpoints, SocketType,
    TcpListener, TcpStream, SAE_ASSOCID_ANY,
};

use crate::netns::Netns;

/// How long a single blocking call may wait before the run is declared stuck.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The port of the stacks' listeners.
pub const LISTEN_PORT: u16 = 5201;
/// The key of the stacks' Fast Open listeners.
const FAST_OPEN_KEY: &str = "a0bf63f7-ed803d81-cd641d30-cebc4a90";

/// `read`, retried when a signal interrupts it.
pub fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A kernel listener at `addr` in `ns`.
pub fn kernel_listener(ns: &Netns, addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    ns.run(move || std::net::TcpListener::bind(addr))?
        .map_err(|e| format!("kernel listener on {addr}: {e}"))
}

/// Accept a kernel connection, with the I/O timeouts.
pub fn kernel_accept(l: &std::net::TcpListener) -> Result<std::net::TcpStream, String> {
    let (s, _) = l.accept().map_err(|e| format!("kernel accept: {e}"))?;
    with_timeouts(s)
}

/// A kernel connection to `to` from the calling thread's namespace, with the I/O timeouts; the
/// connect itself gives up after `IO_TIMEOUT` too (the kernel would retry its SYN for about two
/// minutes).
pub fn kernel_connect_here(to: SocketAddr) -> Result<std::net::TcpStream, String> {
    let s = std::net::TcpStream::connect_timeout(&to, IO_TIMEOUT)
        .map_err(|e| format!("kernel connect to {to}: {e}"))?;
    with_timeouts(s)
}

/// [`kernel_connect_here`] from `ns`.
pub fn kernel_connect(ns: &Netns, to: SocketAddr) -> Result<std::net::TcpStream, String> {
    ns.run(move || kernel_connect_here(to))?
}

fn with_timeouts(s: std::net::TcpStream) -> Result<std::net::TcpStream, String> {
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// A kernel client socket with `TCP_FASTOPEN_CONNECT`: with a cookie cached, `connect`
/// returns at once and the first write goes out in the SYN.
pub fn kernel_fast_open_connect(
    ns: &Netns,
    to: SocketAddrV4,
) -> Result<std::net::TcpStream, String> {
    ns.run(move || kernel_fast_open_connect_here(to))?
}

/// [`kernel_fast_open_connect`] from the calling thread's namespace.
pub fn kernel_fast_open_connect_here(to: SocketAddrV4) -> Result<std::net::TcpStream, String> {
    let s = tun_driver::kernel::fast_open_connect(to.into())
        .map_err(|e| format!("kernel Fast Open connect to {to}: {e}"))?;
    with_timeouts(s)
}

pub fn stack_connect(net: &Net, to: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect(net, to).map_err(|e| format!("stack connect to {to}: {e}"))?;
    s.set_timeouts(Some(IO_TIMEOUT), Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

pub fn stack_listener(net: &Net, at: SocketAddr) -> Result<TcpListener, String> {
    let listener =
        TcpListener::bind(net, at).map_err(|e| format!("stack listener on {at}: {e}"))?;
    net.set_timeouts(listener.fd(), Some(IO_TIMEOUT), None)
        .map_err(|e| e.to_string())?;
    Ok(listener)
}

/// A stack listener at `at` with Fast Open on, its cookies made with `FAST_OPEN_KEY`.
pub fn fast_open_listener(net: &Net, at: SocketAddr) -> Result<TcpListener, String> {
    let listener = stack_listener(net, at)?;
    let key: CookieKey = FAST_OPEN_KEY.parse().map_err(|e| format!("{e}"))?;
    net.set_fast_open(listener.fd(), Some(FastOpenServerConfig::new(key)))
        .map_err(|e| format!("set_fast_open: {e}"))?;
    Ok(listener)
}

pub fn stack_accept(listener: &TcpListener) -> Result<TcpStream, String> {
    let (s, _) = listener
        .accept()
        .map_err(|e| format!("stack accept: {e}"))?;
    s.set_timeouts(Some(IO_TIMEOUT), Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// A stack connection made with `Net::connectx` and data (which `TcpStream::connectx` does not
/// take), closed when dropped.
pub struct StackConn {
    net: Net,
    pub fd: Fd,
}

impl StackConn {
    /// A new stream socket for `to`'s family, with the I/O timeouts set, not connected yet.
    pub fn socket(net: &Net, to: SocketAddr) -> Result<StackConn, String> {
        let family = if to.is_ipv4() { Family::V4 } else { Family::V6 };
        let fd = net
            .socket(family, SocketType::Stream)
            .map_err(|e| format!("socket: {e}"))?;
        let conn = StackConn {
            net: net.clone(),
            fd,
        };
        net.set_timeouts(fd, Some(IO_TIMEOUT), Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(conn)
    }

    /// `connectx(flags)` to `to` with `data` as its iov (all of it must be queued).
    pub fn connectx(&self, to: SocketAddr, flags: u32, data: &[u8]) -> io::Result<()> {
        let mut queued = 0;
        let iov = [IoSlice::new(data)];
        self.net.connectx(
            self.fd,
            &SaEndpoints::to(to),
            SAE_ASSOCID_ANY,
            flags,
            if data.is_empty() { &[] } else { &iov },
            Some(&mut queued),
            None,
        )?;
        if queued != data.len() {
            return Err(io::Error::other(format!(
                "queued {queued} of {} bytes",
                data.len()
            )));
        }
        Ok(())
    }

    /// A blocking `connectx(flags)` to `to` with `data` as its iov, given up after `IO_TIMEOUT`.
    pub fn connect(
        net: &Net,
        to: SocketAddr,
        flags: u32,
        data: &[u8],
    ) -> Result<StackConn, String> {
        let conn = StackConn::socket(net, to)?;
        match conn.connectx(to, flags, data) {
            Ok(()) => Ok(conn),
            // A blocking connect gives up at the send timeout with EINPROGRESS, as on Darwin.
            Err(e) if Errno::of(&e) == Some(Errno::EINPROGRESS) => Err(format!(
                "connectx to {to}: not established after {IO_TIMEOUT:?}"
            )),
            Err(e) => Err(format!("connectx to {to}: {e}")),
        }
    }

    /// A non-blocking `connectx` to `to`, under way: the descriptor becomes writable once the
    /// attempt is over, and `so_error` tells how it went.
    pub fn connect_nonblocking(net: &Net, to: SocketAddr) -> Result<StackConn, String> {
        let conn = StackConn::socket(net, to)?;
        net.set_nonblocking(conn.fd, true)
            .map_err(|e| e.to_string())?;
        match conn.connectx(to, 0, &[]) {
            Err(e) if Errno::of(&e) == Some(Errno::EINPROGRESS) => Ok(conn),
            Err(e) => Err(format!("connectx to {to}: {e}")),
            Ok(()) => Err(format!(
                "connectx to {to}: no EINPROGRESS from a non-blocking call"
            )),
        }
    }
}

impl Read for StackConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.net.recv(self.fd, buf)
    }
}

impl Write for StackConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.net.send(self.fd, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StackConn {
    fn drop(&mut self) {
        let _ = self.net.close(self.fd);
    }
}

/// The SYN data of a client connection, if Fast Open carried all of it.
pub fn fast_open_client_check(info: Option<FastOpenInfo>) -> Result<usize, String> {
    match info {
        Some(i) if i.syn_data_sent > 0 && i.syn_data_acked == i.syn_data_sent => {
            if i.fallback.is_none() {
                return Ok(i.syn_data_acked);
            }
            Err(format!("the connection fell back: {i:?}"))
        }
        other => Err(format!("the connection was no Fast Open one: {other:?}")),
    }
}
