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

/// Keep glibc's allocator handing out large allocations (128 KB and over) as fresh pages, as it
/// does when a program starts. Returns whether it set glibc's threshold: not under another C
/// library, nor when the environment sets it (`GLIBC_TUNABLES` with `mmap_threshold`, or
/// `MALLOC_MMAP_THRESHOLD_`: the program's own choice).
///
/// A stack's socket buffers (1 MB each way by default) are such allocations; an idle
/// connection's pages are never written, and cost nothing resident. But once the program frees
/// an allocation that glibc had mapped for it, glibc raises the size from which it maps them, to
/// that allocation's (up to 32 MB): later buffers then come from its heap, often from memory
/// freed before, which it zeroes page by page. An idle connection then cost six times the
/// memory after another stack had come and gone in the process (53 KB against 8.5 KB in
/// `tests/runtime_memory.rs`), and in the bench's `async` section, run after another section,
/// 286 KB and 10 s to open 10,000 connections instead of 16.5 KB and 0.6 s. Setting the
/// threshold (to glibc's own initial 128 KB) ends that adjusting. A program that sets it with
/// `mallopt(3)` itself does so after this (after starting its `Net`).
pub fn keep_large_allocations_mapped() -> bool {
    let chosen = |var: &str, key: &str| std::env::var(var).is_ok_and(|v| v.contains(key));
    if chosen("GLIBC_TUNABLES", "mmap_threshold")
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
    {
        return false;
    }
    sys::set_mmap_threshold(128 << 10)
}

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
