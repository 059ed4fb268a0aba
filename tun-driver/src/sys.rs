//! All of the crate's `unsafe` code: small, safe wrappers around the libc calls it needs.
//!
//! Each wrapper owns the safety argument for its call (valid pointers, correct lengths, who
//! owns a descriptor), so that every other module is plain safe Rust. Failures are bare
//! [`io::Error`]s; callers add context.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use libc::{c_int, c_short, c_uint, c_ulong, c_void, socklen_t};

/// Turns C's "returns -1 and sets `errno`" convention into an [`io::Result`].
fn cvt<T: Copy + PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Calls `libc::$name(args…)` and turns a -1 result into `io::Error::last_os_error()`.
///
/// Calling a foreign function is unsafe, so every use sits in its own `unsafe` block whose
/// `// SAFETY:` comment justifies that particular call.
macro_rules! syscall {
    ($name:ident ( $($arg:expr),* $(,)? )) => {
        cvt(libc::$name($($arg),*))
    };
}

/// Runs `f` again for as long as it fails with `EINTR`.
pub(crate) fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// Wraps a descriptor that a system call has just returned.
fn owned(fd: c_int) -> OwnedFd {
    // SAFETY: every caller passes a descriptor freshly returned by a successful open(2),
    // socket(2), socketpair(2) or eventfd(2): it is open and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

// ---------------------------------------------------------------------------------------------
// Descriptors

/// Opens `/dev/net/tun` read-write, non-blocking and close-on-exec.
pub(crate) fn open_tun() -> io::Result<OwnedFd> {
    let path = c"/dev/net/tun";
    let flags = libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: `path` is a NUL-terminated string that lives through the call.
    let fd = unsafe { syscall!(open(path.as_ptr(), flags)) }?;
    Ok(owned(fd))
}

/// Takes ownership of descriptor `fd`, after checking that it is open.
///
/// `EBADF` if it is not. The caller must be handing over sole ownership of `fd` (the
/// documented contract of `Device::adopt_fd`).
pub(crate) fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor flags; any integer is acceptable and an
    // unopened one merely fails with EBADF.
    unsafe { syscall!(fcntl(fd, libc::F_GETFD)) }?;
    // SAFETY: `fd` is open (checked just above) and, per the contract above, owned by nobody
    // else from now on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `fd` is an open descriptor of this process (without taking it over).
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor flags; any integer is acceptable and an
    // unopened number fails with EBADF.
    fd >= 0 && unsafe { syscall!(fcntl(fd, libc::F_GETFD)) }.is_ok()
}

/// Set glibc's `M_MMAP_THRESHOLD` to `bytes` (which also ends its adjusting it on its own).
/// Returns whether glibc took it; elsewhere there is no such setting.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn set_mmap_threshold(bytes: c_int) -> bool {
    // SAFETY: mallopt takes any parameter and value, and only changes the allocator's settings.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn set_mmap_threshold(_: c_int) -> bool {
    false
}

/// Sets `O_NONBLOCK` on the open file description.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL on an open descriptor only reads its status flags.
    let flags = unsafe { syscall!(fcntl(fd, libc::F_GETFL)) }?;
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: F_SETFL on an open descriptor with its own flags plus O_NONBLOCK.
        unsafe { syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)) }?;
    }
    Ok(())
}

/// Sets `FD_CLOEXEC` on the descriptor.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFD on an open descriptor only reads its descriptor flags.
    let flags = unsafe { syscall!(fcntl(fd, libc::F_GETFD)) }?;
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: F_SETFD on an open descriptor with its own flags plus FD_CLOEXEC.
        unsafe { syscall!(fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC)) }?;
    }
    Ok(())
}

/// Clears `FD_CLOEXEC`, so that a child process started afterwards inherits the descriptor.
pub(crate) fn clear_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFD on an open descriptor only reads its descriptor flags.
    let flags = unsafe { syscall!(fcntl(fd, libc::F_GETFD)) }?;
    // SAFETY: F_SETFD on an open descriptor with its own flags less FD_CLOEXEC.
    unsafe { syscall!(fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC)) }?;
    Ok(())
}

/// `read(2)` into `buf`: the number of bytes the kernel reports.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe {
        syscall!(read(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<c_void>(),
            buf.len()
        ))
    }?;
    Ok(n.unsigned_abs())
}

/// `write(2)` of `buf`: the number of bytes written.
pub(crate) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    let n = unsafe {
        syscall!(write(
            fd.as_raw_fd(),
            buf.as_ptr().cast::<c_void>(),
            buf.len()
        ))
    }?;
    Ok(n.unsigned_abs())
}

/// `readv(2)` into `head` then `body`: the number of bytes the kernel reports. A TUN device
/// with a virtio-net header writes the header into `head` and the packet into `body`.
pub(crate) fn read2(fd: BorrowedFd<'_>, head: &mut [u8], body: &mut [u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: head.as_mut_ptr().cast::<c_void>(),
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_mut_ptr().cast::<c_void>(),
            iov_len: body.len(),
        },
    ];
    // SAFETY: both iovecs point to exclusively borrowed buffers valid for writes of their
    // lengths for the duration of the call, and `iov` holds exactly 2 entries.
    let n = unsafe { syscall!(readv(fd.as_raw_fd(), iov.as_ptr(), 2)) }?;
    Ok(n.unsigned_abs())
}

/// `writev(2)` of `parts`, in order, as one packet: the number of bytes written.
pub(crate) fn write_parts(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 4];
    let count = parts.len().min(iov.len());
    for (v, p) in iov.iter_mut().zip(parts) {
        // writev(2) only reads through the pointer; the cast to *mut is its C signature's.
        v.iov_base = p.as_ptr().cast_mut().cast::<c_void>();
        v.iov_len = p.len();
    }
    // SAFETY: the first `count` iovecs point to borrowed buffers valid for reads of their
    // lengths for the duration of the call; the kernel does not write through them.
    let n = unsafe { syscall!(writev(fd.as_raw_fd(), iov.as_ptr(), count as c_int)) }?;
    Ok(n.unsigned_abs())
}

/// `TUNGETVNETHDRSZ`: the size of the virtio-net header a TUN device set up with
/// `IFF_VNET_HDR` puts before each packet.
pub(crate) fn tun_vnet_header_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut size: c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int through the pointer, which points to a live int.
    unsafe {
        syscall!(ioctl(
            fd.as_raw_fd(),
            libc::TUNGETVNETHDRSZ as _,
            &raw mut size
        ))
    }?;
    Ok(usize::try_from(size).unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// Sockets

/// `socket(2)`, always close-on-exec.
pub(crate) fn socket(domain: c_int, ty: c_int, protocol: c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { syscall!(socket(domain, ty | libc::SOCK_CLOEXEC, protocol)) }?;
    Ok(owned(fd))
}

/// A connected `AF_UNIX` `SOCK_SEQPACKET` pair, non-blocking and close-on-exec.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [c_int; 2] = [-1, -1];
    let ty = libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for the two descriptors socketpair(2) writes.
    unsafe { syscall!(socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr())) }?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// `recv(2)` into `buf`: the number of bytes the kernel reports (with `MSG_TRUNC`, the
/// length of the whole message, which may exceed `buf.len()`).
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: c_int) -> io::Result<usize> {
    let ptr = buf.as_mut_ptr().cast::<c_void>();
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe { syscall!(recv(fd.as_raw_fd(), ptr, buf.len(), flags)) }?;
    Ok(n.unsigned_abs())
}

/// `send(2)` of `buf` with `MSG_NOSIGNAL` added (a closed peer gives `EPIPE`, not `SIGPIPE`).
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8], flags: c_int) -> io::Result<usize> {
    let ptr = buf.as_ptr().cast::<c_void>();
    let flags = flags | libc::MSG_NOSIGNAL;
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    let n = unsafe { syscall!(send(fd.as_raw_fd(), ptr, buf.len(), flags)) }?;
    Ok(n.unsigned_abs())
}

/// Receives one netlink message into `buf`: its length and the sender's port id (0 for the
/// kernel).
pub(crate) fn recv_netlink(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, u32)> {
    // SAFETY: sockaddr_nl is plain integers; all zeros is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    let mut addr_len = socklen_of::<libc::sockaddr_nl>();
    let ptr = buf.as_mut_ptr().cast::<c_void>();
    let addr_ptr = (&raw mut addr).cast::<libc::sockaddr>();
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and `addr`/`addr_len` describe
    // a writable sockaddr_nl; all live through the call.
    let n = unsafe {
        syscall!(recvfrom(
            fd.as_raw_fd(),
            ptr,
            buf.len(),
            0,
            addr_ptr,
            &raw mut addr_len
        ))
    }?;
    Ok((n.unsigned_abs(), addr.nl_pid))
}

/// The socket type (`SO_TYPE`), e.g. `SOCK_DGRAM`; `ENOTSOCK` if `fd` is no socket.
pub(crate) fn socket_type(fd: BorrowedFd<'_>) -> io::Result<c_int> {
    let mut ty: c_int = 0;
    let mut len = socklen_of::<c_int>();
    let ty_ptr = (&raw mut ty).cast::<c_void>();
    // SAFETY: `ty`/`len` describe a writable c_int, which is what SO_TYPE stores.
    unsafe {
        syscall!(getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            ty_ptr,
            &raw mut len
        ))
    }?;
    Ok(ty)
}

/// Sets an integer socket option.
pub(crate) fn set_socket_option(
    fd: BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    value: c_int,
) -> io::Result<()> {
    let ptr = (&raw const value).cast::<c_void>();
    let len = socklen_of::<c_int>();
    // SAFETY: `ptr`/`len` describe a readable c_int, the type of the integer options used.
    unsafe { syscall!(setsockopt(fd.as_raw_fd(), level, name, ptr, len)) }?;
    Ok(())
}

/// Sets a socket option whose value is a byte string (`TCP_CONGESTION`'s name).
pub(crate) fn set_socket_option_bytes(
    fd: BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    value: &[u8],
) -> io::Result<()> {
    let len =
        socklen_t::try_from(value.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let ptr = value.as_ptr().cast::<c_void>();
    // SAFETY: `ptr`/`len` describe `value`, readable for the call; the kernel copies it.
    unsafe { syscall!(setsockopt(fd.as_raw_fd(), level, name, ptr, len)) }?;
    Ok(())
}

/// Sets `SO_RCVTIMEO`, so that a blocking receive gives up with `EAGAIN` after `timeout`.
pub(crate) fn set_receive_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    let ptr = (&raw const tv).cast::<c_void>();
    let len = socklen_of::<libc::timeval>();
    // SAFETY: `ptr`/`len` describe a readable timeval, the type SO_RCVTIMEO takes.
    unsafe {
        syscall!(setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            ptr,
            len
        ))
    }?;
    Ok(())
}

fn socklen_of<T>() -> socklen_t {
    socklen_t::try_from(mem::size_of::<T>()).expect("socket option sizes fit in socklen_t")
}

// ---------------------------------------------------------------------------------------------
// Interfaces

/// A `struct ifreq`: an interface name and one value of the request union.
pub(crate) struct IfReq(libc::ifreq);

/// The `ioctl(2)`s taking a `struct ifreq`. Keeping them in a closed list keeps the safety
/// argument local: each of them reads or writes at most one `struct ifreq`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IfReqIoctl {
    /// `TUNSETIFF` (on a `/dev/net/tun` descriptor): attach it to / create an interface.
    TunSetIff,
    /// `TUNGETIFF` (on a TUN descriptor): the name and flags of its interface.
    TunGetIff,
    /// `SIOCGIFFLAGS`: read the interface flags.
    GetFlags,
    /// `SIOCSIFFLAGS`: write the interface flags.
    SetFlags,
    /// `SIOCGIFMTU`: read the MTU.
    GetMtu,
    /// `SIOCSIFMTU`: write the MTU.
    SetMtu,
    /// `SIOCSIFTXQLEN`: write the transmit queue length.
    SetTxQueueLen,
}

impl IfReq {
    /// An all-zero request for interface `name`.
    ///
    /// # Panics
    /// If `name` does not fit `IFNAMSIZ` with its terminating NUL (callers validate names).
    pub(crate) fn new(name: &str) -> IfReq {
        // SAFETY: ifreq holds only byte arrays, integers, sockaddrs and a raw pointer, for
        // all of which all-zero bytes are a valid value.
        let mut req: libc::ifreq = unsafe { mem::zeroed() };
        assert!(
            name.len() < libc::IFNAMSIZ,
            "interface name {name:?} is too long"
        );
        for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = src as libc::c_char;
        }
        IfReq(req)
    }

    /// The interface name, up to the first NUL.
    pub(crate) fn name(&self) -> String {
        let bytes: Vec<u8> = self
            .0
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The `ifr_flags` member of the union.
    pub(crate) fn flags(&self) -> c_short {
        // SAFETY: the union is fully initialized (zeroed at creation, then only written by us
        // or the kernel), and any bit pattern is a valid c_short.
        unsafe { self.0.ifr_ifru.ifru_flags }
    }

    pub(crate) fn set_flags(&mut self, flags: c_short) {
        self.0.ifr_ifru.ifru_flags = flags;
    }

    /// The integer member of the union (`ifr_mtu`, `ifr_qlen`, …, all at the same offset).
    pub(crate) fn int(&self) -> c_int {
        // SAFETY: as in `flags`: initialized, and any bit pattern is a valid c_int.
        unsafe { self.0.ifr_ifru.ifru_mtu }
    }

    pub(crate) fn set_int(&mut self, value: c_int) {
        self.0.ifr_ifru.ifru_mtu = value;
    }

    /// Performs `request` on descriptor `fd` with this request as argument.
    pub(crate) fn ioctl(&mut self, fd: BorrowedFd<'_>, request: IfReqIoctl) -> io::Result<()> {
        let request: c_ulong = match request {
            IfReqIoctl::TunSetIff => libc::TUNSETIFF as c_ulong,
            IfReqIoctl::TunGetIff => libc::TUNGETIFF as c_ulong,
            IfReqIoctl::GetFlags => libc::SIOCGIFFLAGS,
            IfReqIoctl::SetFlags => libc::SIOCSIFFLAGS,
            IfReqIoctl::GetMtu => libc::SIOCGIFMTU,
            IfReqIoctl::SetMtu => libc::SIOCSIFMTU,
            IfReqIoctl::SetTxQueueLen => libc::SIOCSIFTXQLEN,
        };
        let arg = (&raw mut self.0).cast::<c_void>();
        // SAFETY: each of these requests reads and/or writes one `struct ifreq` through the
        // pointer, which points to a live, exclusively borrowed ifreq.
        unsafe { syscall!(ioctl(fd.as_raw_fd(), request as _, arg)) }?;
        Ok(())
    }
}

/// `TUNSETOFFLOAD`: which offloads (`TUN_F_*`) the TUN device may use; 0 for none.
pub(crate) fn tun_set_offload(fd: BorrowedFd<'_>, offloads: c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long), not a pointer.
    unsafe {
        syscall!(ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD as _,
            c_ulong::from(offloads)
        ))
    }?;
    Ok(())
}

/// `if_nametoindex(3)`: the index of interface `name` in the current network namespace;
/// `ENODEV` if there is none.
pub(crate) fn if_nametoindex(name: &str) -> io::Result<u32> {
    let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    // SAFETY: `name` is a NUL-terminated string that lives through the call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// A non-blocking, close-on-exec `eventfd(2)` with counter 0.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) takes no pointers.
    let fd = unsafe { syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)) }?;
    Ok(owned(fd))
}

/// A non-blocking, close-on-exec `timerfd` on `CLOCK_MONOTONIC`, disarmed.
pub(crate) fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create(2) takes no pointers.
    let fd = unsafe {
        syscall!(timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC
        ))
    }?;
    Ok(owned(fd))
}

/// Arm a timerfd to expire once, `after` from now (`None` disarms it). A zero delay is one
/// nanosecond: an all-zero `it_value` would disarm instead.
pub(crate) fn timerfd_set(fd: BorrowedFd<'_>, after: Option<Duration>) -> io::Result<()> {
    let value = match after {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        Some(d) => {
            let d = d.max(Duration::from_nanos(1));
            libc::timespec {
                tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
            }
        }
    };
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: value,
    };
    // SAFETY: `spec` is a valid itimerspec; the old value is not asked for (null).
    unsafe {
        syscall!(timerfd_settime(
            fd.as_raw_fd(),
            0,
            &spec,
            std::ptr::null_mut()
        ))
    }?;
    Ok(())
}

/// `poll(2)`: the number of entries of `fds` with events. `timeout_ms` < 0 waits forever.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: c_int) -> io::Result<usize> {
    let nfds = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `fds` is a valid, writable array of `nfds` pollfd structures.
    let n = unsafe { syscall!(poll(fds.as_mut_ptr(), nfds, timeout_ms)) }?;
    Ok(n.unsigned_abs() as usize)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// `unshare(2)` for the calling thread.
pub(crate) fn unshare(flags: c_int) -> io::Result<()> {
    // SAFETY: unshare(2) takes no pointers; it only changes the calling thread's namespaces.
    unsafe { syscall!(unshare(flags)) }?;
    Ok(())
}

/// The effective user id.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

// ---------------------------------------------------------------------------------------------
// Kernel-side peers of tests and benchmarks

/// `connect(2)` to an IPv4 or IPv6 address (blocking unless the descriptor is not).
pub(crate) fn connect(fd: BorrowedFd<'_>, to: &std::net::SocketAddr) -> io::Result<()> {
    match to {
        std::net::SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
            let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            let len = socklen_of::<libc::sockaddr_in>();
            // SAFETY: `sa` is a complete sockaddr_in that outlives the call; `len` is its size.
            retry_eintr(|| unsafe {
                syscall!(connect(
                    fd.as_raw_fd(),
                    (&raw const sa).cast::<libc::sockaddr>(),
                    len
                ))
            })?;
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain data; all-zero is a valid value.
            let mut sa: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr.s6_addr = a.ip().octets();
            sa.sin6_scope_id = a.scope_id();
            let len = socklen_of::<libc::sockaddr_in6>();
            // SAFETY: `sa` is a complete sockaddr_in6 that outlives the call; `len` is its size.
            retry_eintr(|| unsafe {
                syscall!(connect(
                    fd.as_raw_fd(),
                    (&raw const sa).cast::<libc::sockaddr>(),
                    len
                ))
            })?;
        }
    }
    Ok(())
}

/// `getrlimit(RLIMIT_NOFILE)`: (soft, hard).
pub(crate) fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live, writable struct rlimit.
    unsafe { syscall!(getrlimit(libc::RLIMIT_NOFILE, &raw mut limit)) }?;
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// `setrlimit(RLIMIT_NOFILE)`.
pub(crate) fn set_nofile_limit(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a live struct rlimit.
    unsafe { syscall!(setrlimit(libc::RLIMIT_NOFILE, &raw const limit)) }?;
    Ok(())
}

/// `sysconf(_SC_CLK_TCK)`: clock ticks per second of `/proc` CPU times.
pub(crate) fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf(3) takes no pointers.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).unwrap_or(100)
}
