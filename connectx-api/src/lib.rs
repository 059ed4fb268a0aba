//! Darwin's `connectx(2)` and the socket calls around it, on Linux, over the connectx userspace
//! stack: a descriptor table, an errno for every failure, and the runtime thread that moves
//! packets between the stack and its devices.
//!
//! ```text
//!  app threads ── socket/connectx/send/recv/poll ──► descriptor table ─┐  one lock, held for
//!       ▲                                                              │  stack work only
//!       └──── waiters of the sockets an event names (waiters) ◄────────┤
//!                                                                      ▼
//!  runtime thread: read a burst ─► lock: Stack::poll(now) ─► unlock ─► write the burst
//!                  (devices, capture, impairment: outside the lock)
//! ```
//!
//! Calls run on the caller's thread under the state's lock and act on the stack directly (the
//! clock is read for each call that sets a deadline), then kick the runtime (an eventfd, at
//! most once a round) if they queued something to send. A call that must wait registers on its
//! socket and parks; the runtime wakes exactly the waiters of the sockets a poll touched. The
//! runtime sleeps in `poll(2)` until a packet, a kick or the stack's next timer.
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

mod builder;
mod calls;
mod cookies;
mod errno;
mod fastopen;
mod fd;
mod net;
mod runtime;
mod stream;
#[cfg(feature = "tokio")]
pub mod tokio;
mod waiters;

pub use builder::{NetBuilder, StartError};
pub use calls::{
    Domain, PollFd, SaEndpoints, CONNECT_DATA_AUTHENTICATED, CONNECT_DATA_IDEMPOTENT,
    CONNECT_RESUME_ON_READ_WRITE, CONNID, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT,
    SAE_ASSOCID_ALL, SAE_ASSOCID_ANY, SAE_CONNID_ALL, SAE_CONNID_ANY,
};
pub use errno::Errno;
pub use fd::Fd;
pub use net::{Net, Tables};
pub use runtime::{DeviceCounters, RuntimeCounters};
pub use stack::capture;
pub use stack::impair::{Impairment, ImpairmentError};
pub use stack::{
    BbrInfo, BbrMode, CongestionControl, CookieEntry, CookieKey, Fallback, Family,
    FastOpenCounters, FastOpenInfo, FastOpenServerConfig, FastOpenServerInfo, KeyUsed,
    RecoveryCounters, RecoveryInfo, RecoveryState, Shutdown, SocketType, StackConfig, TableSizes,
    TcpCounters,
};
pub use stream::{TcpListener, TcpStream, UdpSocket};
pub use tun_driver::Device;
