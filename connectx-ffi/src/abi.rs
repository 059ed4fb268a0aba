//! The C ABI: every `extern "C"` function of `connectx.h`, and all of this crate's `unsafe`.
//!
//! Each function turns C's pointers into Rust values here (checking what can be checked: a
//! NULL where Darwin or Linux tolerate none is `EFAULT`, an address length that does not fit
//! its family `EINVAL`), calls [`connectx_api::Net`] on the process's stack, and turns the
//! result back: the libc return value, and `errno` on failure.
//!
//! # Safety
//!
//! What C promises for every pointer argument, as for the libc call of the same name: it is
//! NULL where the call allows NULL, otherwise valid for the length the call reads or writes
//! (`len` bytes of a buffer, `addrlen` bytes of an address, `iovcnt` entries and each entry's
//! `iov_len` bytes, `nfds` entries of `struct pollfd`), and not written by another thread
//! during the call. A `cx_net *` comes from `cx_net_new` and is not used after `cx_net_free`.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::io::IoSlice;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::time::Duration;

use connectx_api::{Family, PollFd, SaEndpoints, Shutdown, SocketType};
use libc::{iovec, pollfd, sa_family_t, size_t, sockaddr, socklen_t, ssize_t, timeval};

use crate::net::{with_net, CxNet};

/// `sae_associd_t`.
pub type SaeAssocId = u32;
/// `sae_connid_t`.
pub type SaeConnId = u32;

/// Darwin's `sa_endpoints_t`, field for field.
#[repr(C)]
#[derive(Debug)]
pub struct SaEndpointsC {
    /// `sae_srcif`: the interface index to leave through (0: any).
    pub sae_srcif: c_uint,
    /// `sae_srcaddr`: the source address, or NULL.
    pub sae_srcaddr: *const sockaddr,
    /// `sae_srcaddrlen`.
    pub sae_srcaddrlen: socklen_t,
    /// `sae_dstaddr`: the destination.
    pub sae_dstaddr: *const sockaddr,
    /// `sae_dstaddrlen`.
    pub sae_dstaddrlen: socklen_t,
}

/// Most iovec entries a call takes (`IOV_MAX`, Darwin's and Linux's).
const IOV_MAX: c_uint = 1024;

// ----- errno and panics -----

fn set_errno(e: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's `errno`, valid for the thread's
    // life.
    unsafe { *libc::__errno_location() = e };
}

/// Run a call: its value, or `fail` with `errno` set; a panic is `EIO`, never unwinding into C.
fn call<T>(fail: T, f: impl FnOnce() -> Result<T, c_int>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_errno(e);
            fail
        }
        Err(_) => {
            set_errno(libc::EIO);
            fail
        }
    }
}

fn ok(r: Result<(), c_int>) -> Result<c_int, c_int> {
    r.map(|()| 0)
}

fn ssize(n: usize) -> ssize_t {
    ssize_t::try_from(n).unwrap_or(ssize_t::MAX)
}

// ----- reading C's arguments -----

/// A `struct sockaddr` of `len` bytes at `addr`.
///
/// # Safety
/// `addr` is NULL or valid for `len` bytes.
unsafe fn read_sockaddr(addr: *const sockaddr, len: socklen_t) -> Result<SocketAddr, c_int> {
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    let len = len as usize;
    if len < size_of::<sa_family_t>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: `addr` is valid for `len` bytes, at least those of the family; C does not
    // promise alignment, hence the unaligned reads.
    let family = unsafe { ptr::read_unaligned(addr.cast::<sa_family_t>()) };
    match c_int::from(family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: as above, `len` covers a whole `sockaddr_in`.
            let sin = unsafe { ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, `len` covers a whole `sockaddr_in6`.
            let sin6 = unsafe { ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        libc::AF_INET | libc::AF_INET6 => Err(libc::EINVAL),
        _ => Err(libc::EAFNOSUPPORT),
    }
}

/// Write `a` to `addr` (at most `*len` bytes) and its whole size to `*len`, as `getsockname`.
///
/// # Safety
/// `len` is NULL or valid; `addr` is valid for `*len` bytes.
unsafe fn write_sockaddr(
    a: SocketAddr,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> Result<(), c_int> {
    if addr.is_null() || len.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: both zeroed structs are plain data, valid all zero.
    let (mut sin, mut sin6): (libc::sockaddr_in, libc::sockaddr_in6) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    let (src, size) = match a {
        SocketAddr::V4(v4) => {
            sin.sin_family = libc::AF_INET as sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            (
                ptr::from_ref(&sin).cast::<u8>(),
                size_of::<libc::sockaddr_in>(),
            )
        }
        SocketAddr::V6(v6) => {
            sin6.sin6_family = libc::AF_INET6 as sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_flowinfo = v6.flowinfo().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_scope_id = v6.scope_id();
            (
                ptr::from_ref(&sin6).cast::<u8>(),
                size_of::<libc::sockaddr_in6>(),
            )
        }
    };
    // SAFETY: `len` is valid; `addr` is valid for `*len` bytes, and at most that many are
    // written, from a local struct that does not overlap it.
    unsafe {
        let room = *len as usize;
        ptr::copy_nonoverlapping(src, addr.cast::<u8>(), room.min(size));
        *len = size as socklen_t;
    }
    Ok(())
}

/// `iovcnt` entries of `iov` as slices.
///
/// # Safety
/// `iov` is valid for `iovcnt` entries, each valid for its `iov_len` bytes, for `'a`.
unsafe fn read_iov<'a>(iov: *const iovec, iovcnt: c_uint) -> Result<Vec<IoSlice<'a>>, c_int> {
    if iovcnt > IOV_MAX {
        return Err(libc::EINVAL);
    }
    if iovcnt == 0 {
        return Ok(Vec::new());
    }
    if iov.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: `iov` is valid for `iovcnt` entries.
    let entries = unsafe { std::slice::from_raw_parts(iov, iovcnt as usize) };
    entries
        .iter()
        .map(|e| {
            if e.iov_len == 0 {
                return Ok(IoSlice::new(&[]));
            }
            if e.iov_base.is_null() {
                return Err(libc::EFAULT);
            }
            // SAFETY: each entry is valid for its `iov_len` bytes.
            Ok(IoSlice::new(unsafe {
                std::slice::from_raw_parts(e.iov_base.cast::<u8>(), e.iov_len)
            }))
        })
        .collect()
}

/// `len` bytes at `buf` (NULL is fine when `len` is 0).
///
/// # Safety
/// `buf` is valid for `len` bytes for `'a`.
unsafe fn bytes<'a>(buf: *const c_void, len: size_t) -> Result<&'a [u8], c_int> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: as the function's contract says.
    Ok(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) })
}

/// `len` writable bytes at `buf`.
///
/// # Safety
/// `buf` is valid for writing `len` bytes for `'a`, and nothing else uses them meanwhile.
unsafe fn bytes_mut<'a>(buf: *mut c_void, len: size_t) -> Result<&'a mut [u8], c_int> {
    if len == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: as the function's contract says.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) })
}

/// A C string argument.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string valid for `'a`.
unsafe fn string<'a>(s: *const c_char) -> Result<&'a str, c_int> {
    if s.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: `s` is NUL-terminated and valid.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|_| libc::EINVAL)
}

/// A `cx_net *` argument.
///
/// # Safety
/// `net` is NULL or from `cx_net_new`, not freed, and not used by another thread meanwhile.
unsafe fn handle<'a>(net: *mut CxNet) -> Result<&'a mut CxNet, c_int> {
    // SAFETY: as the function's contract says.
    unsafe { net.as_mut() }.ok_or(libc::EFAULT)
}

// ----- the stack -----

/// `cx_net_new`: describe a stack (devices, addresses, routes), to start with `cx_net_start`.
#[no_mangle]
pub extern "C" fn cx_net_new() -> *mut CxNet {
    call(ptr::null_mut(), || {
        Ok(Box::into_raw(Box::new(CxNet::new())))
    })
}

/// `cx_net_tun`: a TUN device by name (created, or attached to if it exists).
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_net_tun(net: *mut CxNet, name: *const c_char) -> c_int {
    call(-1, || {
        // SAFETY: the caller's contract.
        let (n, name) = unsafe { (handle(net)?, string(name)?) };
        ok(n.describe(|b| b.tun(name)))
    })
}

/// `cx_net_tun_fd`: an open TUN device (or packet socketpair end) by descriptor; the stack
/// owns it from then on.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_net_tun_fd(net: *mut CxNet, fd: c_int) -> c_int {
    call(-1, || {
        // SAFETY: the caller's contract.
        let n = unsafe { handle(net)? };
        ok(n.describe(|b| b.tun_fd(fd)))
    })
}

/// `cx_net_address`: an address of the stack on the last device, `ADDRESS/LEN`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_net_address(net: *mut CxNet, cidr: *const c_char) -> c_int {
    call(-1, || {
        // SAFETY: the caller's contract.
        let (n, cidr) = unsafe { (handle(net)?, string(cidr)?) };
        ok(n.describe(|b| b.address(cidr)))
    })
}

/// `cx_net_peer`: the kernel's address on the last (TUN) device, `ADDRESS/LEN`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_net_peer(net: *mut CxNet, cidr: *const c_char) -> c_int {
    call(-1, || {
        // SAFETY: the caller's contract.
        let (n, cidr) = unsafe { (handle(net)?, string(cidr)?) };
        ok(n.describe(|b| b.peer(cidr)))
    })
}

/// `cx_net_route`: a route through the last device, `ADDRESS/LEN` or `default`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_net_route(net: *mut CxNet, cidr: *const c_char) -> c_int {
    call(-1, || {
        // SAFETY: the caller's contract.
        let (n, cidr) = unsafe { (handle(net)?, string(cidr)?) };
        ok(n.describe(|b| b.route(cidr)))
    })
}

/// `cx_net_start`: open the devices and start the stack; the socket calls act on it.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_net_start(net: *mut CxNet) -> c_int {
    call(-1, || {
        // SAFETY: the caller's contract.
        let n = unsafe { handle(net)? };
        ok(n.start())
    })
}

/// `cx_net_strerror`: why the last call on `net` failed, in words ("" if none did). Valid
/// until the next call on `net`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_net_strerror(net: *mut CxNet) -> *const c_char {
    call(ptr::null(), || {
        // SAFETY: the caller's contract.
        let n = unsafe { handle(net)? };
        Ok(n.error().as_ptr())
    })
}

/// `cx_net_free`: stop the stack `net` started (blocked calls return `EINTR`, later ones fail
/// with `ENETDOWN`) and free the handle. NULL is ignored.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_net_free(net: *mut CxNet) {
    if net.is_null() {
        return;
    }
    call((), || {
        // SAFETY: `net` came from `Box::into_raw` in `cx_net_new` and is freed once.
        let mut n = unsafe { Box::from_raw(net) };
        n.stop();
        Ok(())
    });
}

// ----- connectx(2) and disconnectx(2) -----

/// Darwin's `connectx(2)`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn connectx(
    socket: c_int,
    endpoints: *const SaEndpointsC,
    associd: SaeAssocId,
    flags: c_uint,
    iov: *const iovec,
    iovcnt: c_uint,
    len: *mut size_t,
    connid: *mut SaeConnId,
) -> c_int {
    call(-1, || {
        // SAFETY: the caller's contract: `len` and `connid` are NULL or valid.
        let (mut len, mut connid) = unsafe { (len.as_mut(), connid.as_mut()) };
        if let Some(l) = len.as_deref_mut() {
            *l = 0;
        }
        if let Some(c) = connid.as_deref_mut() {
            *c = 0;
        }
        // SAFETY: the caller's contract.
        let e = unsafe { endpoints.as_ref() }.ok_or(libc::EINVAL)?;
        if e.sae_dstaddr.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: the caller's contract: each address is valid for its length.
        let dst = unsafe { read_sockaddr(e.sae_dstaddr, e.sae_dstaddrlen)? };
        let src = if e.sae_srcaddr.is_null() {
            None
        } else {
            // SAFETY: as above.
            Some(unsafe { read_sockaddr(e.sae_srcaddr, e.sae_srcaddrlen)? })
        };
        // SAFETY: the caller's contract.
        let slices = unsafe { read_iov(iov, iovcnt)? };
        let endpoints = SaEndpoints {
            srcif: e.sae_srcif,
            srcaddr: src,
            dstaddr: Some(dst),
        };
        let mut queued = 0usize;
        let mut id = 0u32;
        let result = with_net(|net| {
            net.connectx(
                socket,
                &endpoints,
                associd,
                flags,
                &slices,
                len.is_some().then_some(&mut queued),
                Some(&mut id),
            )
        });
        // `*len` counts what was queued even when the call reports EINPROGRESS.
        if let Some(l) = len {
            *l = queued;
        }
        if let Some(c) = connid {
            *c = id;
        }
        result.map(|()| 0)
    })
}

/// Darwin's `disconnectx(2)`.
#[no_mangle]
pub extern "C" fn disconnectx(socket: c_int, associd: SaeAssocId, connid: SaeConnId) -> c_int {
    call(-1, || {
        with_net(|net| net.disconnectx(socket, associd, connid)).map(|()| 0)
    })
}

// ----- the socket calls -----

/// `socket(2)`: `AF_INET`/`AF_INET6`, `SOCK_STREAM`/`SOCK_DGRAM` (with `SOCK_NONBLOCK` and
/// `SOCK_CLOEXEC` allowed), protocol 0 or the type's own.
#[no_mangle]
pub extern "C" fn cx_socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    call(-1, || {
        let family = match domain {
            libc::AF_INET => Family::V4,
            libc::AF_INET6 => Family::V6,
            _ => return Err(libc::EAFNOSUPPORT),
        };
        let nonblocking = ty & libc::SOCK_NONBLOCK != 0;
        let (kind, own) = match ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
            libc::SOCK_STREAM => (SocketType::Stream, libc::IPPROTO_TCP),
            libc::SOCK_DGRAM => (SocketType::Datagram, libc::IPPROTO_UDP),
            _ => return Err(libc::EINVAL),
        };
        if protocol != 0 && protocol != own {
            return Err(libc::EPROTONOSUPPORT);
        }
        with_net(|net| {
            let fd = net.socket(family, kind)?;
            if nonblocking {
                net.set_nonblocking(fd, true)?;
            }
            Ok(fd)
        })
    })
}

/// `bind(2)`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_bind(socket: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    call(-1, || {
        // SAFETY: the caller's contract.
        let a = unsafe { read_sockaddr(addr, len)? };
        with_net(|net| net.bind(socket, a)).map(|()| 0)
    })
}

/// `connect(2)`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_connect(socket: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    call(-1, || {
        // SAFETY: the caller's contract.
        let a = unsafe { read_sockaddr(addr, len)? };
        with_net(|net| net.connect(socket, a)).map(|()| 0)
    })
}

/// `listen(2)`; a negative backlog is the largest, as on Linux.
#[no_mangle]
pub extern "C" fn cx_listen(socket: c_int, backlog: c_int) -> c_int {
    let backlog = usize::try_from(backlog).unwrap_or(usize::MAX);
    call(-1, || {
        with_net(|net| net.listen(socket, backlog)).map(|()| 0)
    })
}

/// `accept(2)`; `addr` may be NULL.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_accept(
    socket: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> c_int {
    call(-1, || {
        let (fd, peer) = with_net(|net| net.accept(socket))?;
        if !addr.is_null() {
            // SAFETY: the caller's contract.
            unsafe { write_sockaddr(peer, addr, len)? };
        }
        Ok(fd)
    })
}

/// Flags `send` and `recv` take: none changes anything here (the stack never raises
/// `SIGPIPE`).
fn check_flags(flags: c_int) -> Result<(), c_int> {
    if flags & !libc::MSG_NOSIGNAL != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    Ok(())
}

/// `send(2)`; flags: `MSG_NOSIGNAL` (the stack never raises `SIGPIPE`); others `EOPNOTSUPP`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_send(
    socket: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    call(-1, || {
        check_flags(flags)?;
        // SAFETY: the caller's contract.
        let data = unsafe { bytes(buf, len)? };
        with_net(|net| net.send(socket, data)).map(ssize)
    })
}

/// `recv(2)`; flags as [`cx_send`].
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_recv(
    socket: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    call(-1, || {
        check_flags(flags)?;
        // SAFETY: the caller's contract.
        let out = unsafe { bytes_mut(buf, len)? };
        with_net(|net| net.recv(socket, out)).map(ssize)
    })
}

/// `write(2)` on a socket of the stack.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_write(socket: c_int, buf: *const c_void, len: size_t) -> ssize_t {
    call(-1, || {
        // SAFETY: the caller's contract.
        let data = unsafe { bytes(buf, len)? };
        with_net(|net| net.write(socket, data)).map(ssize)
    })
}

/// `read(2)` on a socket of the stack.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_read(socket: c_int, buf: *mut c_void, len: size_t) -> ssize_t {
    call(-1, || {
        // SAFETY: the caller's contract.
        let out = unsafe { bytes_mut(buf, len)? };
        with_net(|net| net.read(socket, out)).map(ssize)
    })
}

/// `writev(2)`; more than `IOV_MAX` (1024) entries is `EINVAL`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_writev(socket: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    call(-1, || {
        let n = c_uint::try_from(iovcnt).map_err(|_| libc::EINVAL)?;
        // SAFETY: the caller's contract.
        let slices = unsafe { read_iov(iov, n)? };
        with_net(|net| net.writev(socket, &slices)).map(ssize)
    })
}

/// `shutdown(2)`: `SHUT_RD`, `SHUT_WR`, `SHUT_RDWR`.
#[no_mangle]
pub extern "C" fn cx_shutdown(socket: c_int, how: c_int) -> c_int {
    call(-1, || {
        let how = match how {
            libc::SHUT_RD => Shutdown::Read,
            libc::SHUT_WR => Shutdown::Write,
            libc::SHUT_RDWR => Shutdown::Both,
            _ => return Err(libc::EINVAL),
        };
        with_net(|net| net.shutdown(socket, how)).map(|()| 0)
    })
}

/// `close(2)` on a socket of the stack.
#[no_mangle]
pub extern "C" fn cx_close(socket: c_int) -> c_int {
    call(-1, || with_net(|net| net.close(socket)).map(|()| 0))
}

/// `fcntl(2)`, with its third argument always given: `F_GETFL`, `F_SETFL` (`O_NONBLOCK`),
/// `F_GETFD`, `F_SETFD` (accepted; the stack's descriptors do not cross `exec`).
#[no_mangle]
pub extern "C" fn cx_fcntl(socket: c_int, cmd: c_int, arg: c_int) -> c_int {
    call(-1, || {
        with_net(|net| match cmd {
            libc::F_GETFL => {
                let nonblocking = net.nonblocking(socket)?;
                Ok(libc::O_RDWR | if nonblocking { libc::O_NONBLOCK } else { 0 })
            }
            libc::F_SETFL => net
                .set_nonblocking(socket, arg & libc::O_NONBLOCK != 0)
                .map(|()| 0),
            libc::F_GETFD => net.nonblocking(socket).map(|_| libc::FD_CLOEXEC),
            libc::F_SETFD => net.nonblocking(socket).map(|_| 0),
            _ => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        })
    })
}

/// `poll(2)` over the stack's descriptors; a negative timeout waits for ever.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_poll(fds: *mut pollfd, nfds: libc::nfds_t, timeout: c_int) -> c_int {
    call(-1, || {
        let n = usize::try_from(nfds).map_err(|_| libc::EINVAL)?;
        let entries: &mut [pollfd] = if n == 0 {
            &mut []
        } else if fds.is_null() {
            return Err(libc::EFAULT);
        } else {
            // SAFETY: the caller's contract: `fds` is valid for `nfds` entries.
            unsafe { std::slice::from_raw_parts_mut(fds, n) }
        };
        let mut polled: Vec<PollFd> = entries
            .iter()
            .map(|p| PollFd::new(p.fd, p.events))
            .collect();
        let wait = u64::try_from(timeout).ok().map(Duration::from_millis);
        let ready = with_net(|net| net.poll(&mut polled, wait))?;
        for (e, p) in entries.iter_mut().zip(&polled) {
            e.revents = p.revents;
        }
        c_int::try_from(ready).map_err(|_| libc::EOVERFLOW)
    })
}

/// A `struct timeval` as a timeout: zero is none (wait for ever), as for `SO_RCVTIMEO`.
/// Linux's `TCP_CA_NAME_MAX`: the longest congestion control name with its NUL.
const TCP_CA_NAME_MAX: usize = 16;

/// The congestion control named by `len` bytes at `value` (up to a NUL, at most
/// [`TCP_CA_NAME_MAX`] less one, as Linux reads it).
///
/// # Safety
/// `value` is valid for `len` bytes, or null.
unsafe fn congestion_name(
    value: *const c_void,
    len: socklen_t,
) -> Result<connectx_api::CongestionControl, c_int> {
    if value.is_null() {
        return Err(libc::EFAULT);
    }
    if len < 1 {
        return Err(libc::EINVAL);
    }
    let n = (len as usize).min(TCP_CA_NAME_MAX - 1);
    // SAFETY: the caller's contract; `n` is at most `len`.
    let bytes = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), n) };
    let name = bytes.split(|&b| b == 0).next().unwrap_or_default();
    std::str::from_utf8(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(libc::ENOENT)
}

fn timeout_of(tv: &timeval) -> Result<Option<Duration>, c_int> {
    let secs = u64::try_from(tv.tv_sec).map_err(|_| libc::EDOM)?;
    let micros = u32::try_from(tv.tv_usec)
        .ok()
        .filter(|&u| u < 1_000_000)
        .ok_or(libc::EDOM)?;
    let d = Duration::from_secs(secs) + Duration::from_micros(u64::from(micros));
    Ok((!d.is_zero()).then_some(d))
}

fn timeval_of(d: Option<Duration>) -> timeval {
    let d = d.unwrap_or_default();
    timeval {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(d.subsec_micros() as i32),
    }
}

/// `getsockopt(2)`: `SOL_SOCKET` with `SO_ERROR` (an `int`, cleared by reading it),
/// `SO_RCVTIMEO` and `SO_SNDTIMEO` (`struct timeval`); `IPPROTO_TCP` with `TCP_CONGESTION` (the
/// name, NUL-padded to 16 bytes, as Linux); others `ENOPROTOOPT`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_getsockopt(
    socket: c_int,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    call(-1, || {
        if value.is_null() || len.is_null() {
            return Err(libc::EFAULT);
        }
        // Set in the arm that answers; the bytes are copied out after the match.
        let int_value: c_int;
        let tv_value: timeval;
        let mut name_value = [0u8; TCP_CA_NAME_MAX];
        let (src, size) = match (level, name) {
            (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
                let cc = with_net(|net| net.congestion_control(socket))?;
                let n = cc.name().len();
                name_value[..n].copy_from_slice(cc.name().as_bytes());
                (name_value.as_ptr(), TCP_CA_NAME_MAX)
            }
            (libc::SOL_SOCKET, libc::SO_ERROR) => {
                let e = with_net(|net| net.so_error(socket))?;
                int_value = e.map_or(0, |e| e.0);
                (ptr::from_ref(&int_value).cast::<u8>(), size_of::<c_int>())
            }
            (libc::SOL_SOCKET, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) => {
                let (r, s) = with_net(|net| net.timeouts(socket))?;
                tv_value = timeval_of(if name == libc::SO_RCVTIMEO { r } else { s });
                (ptr::from_ref(&tv_value).cast::<u8>(), size_of::<timeval>())
            }
            _ => {
                with_net(|net| net.nonblocking(socket))?;
                return Err(libc::ENOPROTOOPT);
            }
        };
        // SAFETY: the caller's contract: `len` is valid, `value` valid for `*len` bytes; at
        // most that many are written, from a local that does not overlap it.
        unsafe {
            let n = (*len as usize).min(size);
            ptr::copy_nonoverlapping(src, value.cast::<u8>(), n);
            *len = size as socklen_t;
        }
        Ok(0)
    })
}

/// `setsockopt(2)`: `SOL_SOCKET` with `SO_RCVTIMEO` and `SO_SNDTIMEO` (`struct timeval`; zero
/// waits for ever); `IPPROTO_TCP` with `TCP_CONGESTION` (a name, as Linux: `cubic`, `reno`,
/// `bbr`, and `none`; `ENOENT` for another); others `ENOPROTOOPT`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_setsockopt(
    socket: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    call(-1, || {
        match (level, name) {
            (libc::SOL_SOCKET, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) => {}
            (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
                // SAFETY: the caller's contract: `value` is valid for `len` bytes.
                let cc = unsafe { congestion_name(value, len)? };
                return with_net(|net| net.set_congestion_control(socket, cc)).map(|()| 0);
            }
            _ => {
                with_net(|net| net.nonblocking(socket))?;
                return Err(libc::ENOPROTOOPT);
            }
        }
        if value.is_null() {
            return Err(libc::EFAULT);
        }
        if (len as usize) < size_of::<timeval>() {
            return Err(libc::EINVAL);
        }
        // SAFETY: the caller's contract: `value` is valid for `len` bytes, which cover a
        // `timeval`; unaligned, as C promises nothing.
        let tv = unsafe { ptr::read_unaligned(value.cast::<timeval>()) };
        let t = timeout_of(&tv)?;
        with_net(|net| {
            let (r, s) = net.timeouts(socket)?;
            if name == libc::SO_RCVTIMEO {
                net.set_timeouts(socket, t, s)
            } else {
                net.set_timeouts(socket, r, t)
            }
        })
        .map(|()| 0)
    })
}

/// `getsockname(2)`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_getsockname(
    socket: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> c_int {
    call(-1, || {
        let a = with_net(|net| net.local_addr(socket))?;
        // SAFETY: the caller's contract.
        unsafe { write_sockaddr(a, addr, len)? };
        Ok(0)
    })
}

/// `getpeername(2)`.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_getpeername(
    socket: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> c_int {
    call(-1, || {
        let a = with_net(|net| net.peer_addr(socket))?;
        // SAFETY: the caller's contract.
        unsafe { write_sockaddr(a, addr, len)? };
        Ok(0)
    })
}

/// `if_nametoindex(3)` for the stack's devices (what `sae_srcif` takes); 0 with `ENODEV` for
/// a name the stack has no device of.
///
/// # Safety
/// See the [module](self).
#[no_mangle]
pub unsafe extern "C" fn cx_if_nametoindex(name: *const c_char) -> c_uint {
    call(0, || {
        // SAFETY: the caller's contract.
        let name = unsafe { string(name)? };
        with_net(|net| Ok(net.if_nametoindex(name)))?.ok_or(libc::ENODEV)
    })
}
