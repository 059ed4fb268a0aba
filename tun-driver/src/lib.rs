//! Packet descriptors for the connectx stack, and the kernel side of them.
//!
//! This crate does I/O only. It
//!
//! - opens a packet descriptor: creates or attaches to a Linux TUN device
//!   ([`Device::create`], [`Device::attach`]), adopts an inherited descriptor
//!   ([`Device::adopt_fd`]), or makes a socket pair ([`Device::pair`]);
//! - moves one raw IP packet at a time through it ([`Device::recv`], [`Device::send`]),
//!   never blocking;
//! - configures the kernel side of a TUN interface: MTU, up/down, queue length over `ioctl(2)`
//!   and addresses over rtnetlink ([`Link`]), without running `ip`;
//! - waits for descriptors with `poll(2)`, interruptibly ([`wait_readable`], [`Waker`]);
//! - helps tests and demos work in a network namespace of their own ([`netns`]).
//!
//! It knows nothing of IP, TCP or smoltcp: packets are opaque bytes. It neither routes nor
//! sets up firewalls, and it never changes the host's network configuration by itself.
//!
//! ```text
//!   application
//!        │  connectx(), send(), recv()
//!        ▼
//!   connectx-api runtime ── smoltcp stack (TCP, TCP Fast Open)
//!        │  one IP packet per call
//!        ▼
//!   tun-driver Device ◄──── /dev/net/tun or a packet socket ────► kernel (routing, other hosts)
//!                          (Link: MTU, up, addresses)
//! ```
//!
//! All of the workspace's `unsafe` code lives in this crate's private `sys` module; the rest
//! is safe Rust. Linux only.

mod config;
mod device;
pub mod error;
pub mod kernel;
pub mod netns;
mod sys;
pub mod vnet;
mod wait;

pub use config::{ifindex_of, Link};
pub use device::{Device, DeviceKind};
pub use error::Error;
pub use netns::{is_root, require_root};
pub use vnet::VnetHeader;
pub use wait::{wait_readable, Alarm, Waker};

/// Whether `fd` is an open descriptor of this process. `connectx-api` uses it to tell a
/// descriptor number that is open but not one of its sockets (`ENOTSOCK`) from one that is not
/// open at all (`EBADF`).
pub fn is_open_fd(fd: std::os::fd::RawFd) -> bool {
    sys::is_open(fd)
}

/// Let child processes started from now on inherit `fd` (clear `FD_CLOEXEC`): how a parent
/// hands a packet descriptor to a `tun_client --tun-fd N` it starts.
///
/// # Errors
/// The `fcntl(2)` error, e.g. `EBADF`.
pub fn make_inheritable(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    sys::clear_cloexec(fd)
}
