//! The kernel's side of tests and benchmarks: things a peer built from kernel sockets needs and
//! `std` does not offer.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};

use crate::sys;

/// Linux's `TCP_FASTOPEN_CONNECT` (include/uapi/linux/tcp.h).
const TCP_FASTOPEN_CONNECT: i32 = 30;

/// A blocking kernel TCP socket with `TCP_FASTOPEN_CONNECT`, connected to `to` from the calling
/// thread's network namespace: with a cookie cached, its first write goes in the SYN (the
/// namespace's `net.ipv4.tcp_fastopen` must enable the client side).
///
/// # Errors
/// `socket(2)`, `setsockopt(2)` or `connect(2)` errors.
pub fn fast_open_connect(to: SocketAddr) -> io::Result<TcpStream> {
    let domain = if to.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let fd = sys::socket(domain, libc::SOCK_STREAM, 0)?;
    sys::set_socket_option(fd.as_fd(), libc::IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)?;
    sys::connect(fd.as_fd(), &to)?;
    Ok(TcpStream::from(fd))
}

/// Give a kernel TCP socket the congestion control `name` (`TCP_CONGESTION`, e.g. `cubic`); a
/// listener passes it to the connections it accepts. An algorithm outside
/// `net.ipv4.tcp_allowed_congestion_control` takes `CAP_NET_ADMIN`.
///
/// # Errors
/// `ENOENT` for an algorithm the kernel does not have, `EPERM` for one it does not allow.
pub fn set_congestion_control(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    sys::set_socket_option_bytes(fd, libc::IPPROTO_TCP, libc::TCP_CONGESTION, name.as_bytes())
}

/// Raise this process's descriptor limit (`RLIMIT_NOFILE`) to at least `want`, the hard limit
/// too if need be (root may). Returns the old soft limit when it changed.
///
/// # Errors
/// `EPERM` when the hard limit cannot be raised that far (a container may cap it).
pub fn raise_fd_limit(want: u64) -> io::Result<Option<u64>> {
    let (soft, hard) = sys::nofile_limit()?;
    if soft >= want {
        return Ok(None);
    }
    sys::set_nofile_limit(want, hard.max(want)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{want} descriptors needed, the limit is {soft} (hard {hard}): {e}"),
        )
    })?;
    Ok(Some(soft))
}

/// Clock ticks per second, the unit of the CPU times in `/proc/.../stat`.
pub fn clock_ticks_per_second() -> u64 {
    sys::clock_ticks_per_second()
}
