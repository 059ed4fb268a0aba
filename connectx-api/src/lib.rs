//! Darwin's `connectx(2)` and the socket calls around it, on Linux, over the connectx userspace
//! stack: a descriptor table, an errno for every failure, and the runtime thread that moves
//! packets between the stack and its devices.
//!
//! ```text
//!  app threads ── socket/connectx/send/recv/poll ──► descriptor table ─┐   (one mutex;
//!       ▲                                                              │    calls act on the
//!       └──────────── condvar: "something changed" ◄───────────────────┤    stack directly)
//!                                                                      ▼
//!  runtime thread: poll(2) on devices + eventfd ──► Stack::poll(now) ──► tun-driver devices
//! ```
//!
//! Calls run on the caller's thread under the state's mutex and act on the stack directly, then
//! wake the runtime thread (an eventfd) so it sends what they queued; blocking calls wait on a
//! condition variable the runtime signals after every poll that changed something. The runtime
//! thread is the only reader of the clock for the stack, and sleeps in `poll(2)` until a packet,
//! a call or the stack's next timer.
//!
//! What it does not do: it does not replace the process's own sockets (descriptors here are
//! this stack's, not the kernel's), and it offers no `select`/`epoll` over kernel descriptors.
//!
//! ```no_run
//! use std::io::{IoSlice, Read};
//! use connectx_api::{Net, SaEndpoints, SAE_ASSOCID_ANY};
//! use stack::{Family, SocketType, Shutdown};
//!
//! let net = Net::builder().tun("cx0").address("192.0.2.2/24").peer("192.0.2.1/24").start()?;
//! let fd = net.socket(Family::V4, SocketType::Stream)?;
//! let mut len = 0;
//! net.connectx(fd, &SaEndpoints::to("192.0.2.1:7".parse()?), SAE_ASSOCID_ANY, 0,
//!              &[IoSlice::new(b"hello\n")], Some(&mut len), None)?;
//! net.shutdown(fd, Shutdown::Write)?;
//! let mut buf = [0u8; 64];
//! let n = net.recv(fd, &mut buf)?;
//! net.close(fd)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod calls;
mod cookies;
mod errno;
mod fastopen;
mod fd;
mod net;
mod stream;

pub use calls::{
    Domain, PollFd, SaEndpoints, CONNECT_DATA_AUTHENTICATED, CONNECT_DATA_IDEMPOTENT,
    CONNECT_RESUME_ON_READ_WRITE, CONNID, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT,
    SAE_ASSOCID_ALL, SAE_ASSOCID_ANY, SAE_CONNID_ALL, SAE_CONNID_ANY,
};
pub use errno::Errno;
pub use fd::Fd;
pub use net::{Net, NetBuilder, StartError};
pub use stack::capture;
pub use stack::impair::{Impairment, ImpairmentError};
pub use stack::{
    CookieEntry, CookieKey, Fallback, Family, FastOpenCounters, FastOpenInfo, FastOpenServerConfig,
    FastOpenServerInfo, KeyUsed, Shutdown, SocketType, StackConfig,
};
pub use stream::{TcpListener, TcpStream, UdpSocket};
pub use tun_driver::Device;
