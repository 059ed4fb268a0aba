//! The descriptor table: small integers standing for sockets, as in C.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Duration;

use stack::{ConnectOptions, SocketId};

/// A socket descriptor of a [`Net`](crate::Net): a small integer, as `socket(2)` returns.
pub type Fd = i32;

/// Descriptors start here, so 0, 1 and 2 never name a socket (as in a C program).
const FIRST_FD: Fd = 3;

/// A connection `connectx` deferred with `CONNECT_RESUME_ON_READ_WRITE`: it starts at the first
/// write or read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deferred {
    pub(crate) remote: SocketAddr,
    pub(crate) opts: ConnectOptions,
}

#[derive(Debug)]
pub(crate) struct Descriptor {
    pub(crate) socket: SocketId,
    /// Unique for the table's life: a call that waited tells its descriptor from a new one
    /// given the same number meanwhile.
    pub(crate) serial: u64,
    pub(crate) nonblocking: bool,
    pub(crate) recv_timeout: Option<Duration>,
    pub(crate) send_timeout: Option<Duration>,
    /// Boxed: inline, it would make every descriptor 80 bytes larger for the few that have one.
    pub(crate) deferred: Option<Box<Deferred>>,
    /// A write started the deferred connection and the handshake may still be under way:
    /// further writes meanwhile are `ENOTCONN` (XNU).
    pub(crate) preconnect: bool,
    /// `disconnectx` ended this stream socket (XNU's dead socket): reads give 0, writes
    /// `EPIPE`, and it cannot connect, bind or listen again (`EINVAL`).
    pub(crate) disconnected: bool,
}

impl Descriptor {
    pub(crate) fn new(socket: SocketId) -> Descriptor {
        Descriptor {
            socket,
            serial: 0,
            nonblocking: false,
            recv_timeout: None,
            send_timeout: None,
            deferred: None,
            preconnect: false,
            disconnected: false,
        }
    }
}

#[derive(Debug)]
pub(crate) struct FdTable {
    slots: Vec<Option<Descriptor>>,
    /// Free slots below the end of `slots`, lowest first.
    free: BinaryHeap<Reverse<usize>>,
    open: usize,
    /// Most descriptors open at once; past it `socket` fails with `ENOBUFS`.
    pub(crate) limit: usize,
    next_serial: u64,
}

impl Default for FdTable {
    fn default() -> Self {
        FdTable {
            slots: Vec::new(),
            free: BinaryHeap::new(),
            open: 0,
            limit: 1 << 16,
            next_serial: 1,
        }
    }
}

impl FdTable {
    /// The lowest free descriptor, as POSIX allocates them (in O(log n)); `None` at the limit.
    pub(crate) fn insert(&mut self, mut d: Descriptor) -> Option<Fd> {
        if self.open >= self.limit {
            return None;
        }
        self.open += 1;
        d.serial = self.next_serial;
        self.next_serial += 1;
        let index = match self.free.pop() {
            Some(Reverse(i)) => {
                self.slots[i] = Some(d);
                i
            }
            None => {
                self.slots.push(Some(d));
                self.slots.len() - 1
            }
        };
        Some(FIRST_FD + index as Fd)
    }

    /// Open descriptors.
    pub(crate) fn len(&self) -> usize {
        self.open
    }

    fn index(fd: Fd) -> Option<usize> {
        usize::try_from(fd.checked_sub(FIRST_FD)?).ok()
    }

    pub(crate) fn get(&self, fd: Fd) -> Option<&Descriptor> {
        self.slots.get(Self::index(fd)?)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, fd: Fd) -> Option<&mut Descriptor> {
        self.slots.get_mut(Self::index(fd)?)?.as_mut()
    }

    pub(crate) fn remove(&mut self, fd: Fd) -> Option<Descriptor> {
        let index = Self::index(fd)?;
        let d = self.slots.get_mut(index)?.take()?;
        self.open -= 1;
        self.free.push(Reverse(index));
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_descriptor_first() {
        let mut stack = stack::Stack::new(stack::StackConfig::default());
        let mut t = FdTable::default();
        let s = stack.socket(stack::Family::V4, stack::SocketType::Stream);
        let a = t.insert(Descriptor::new(s)).unwrap();
        let b = t.insert(Descriptor::new(s)).unwrap();
        assert_eq!((a, b), (3, 4));
        t.remove(a);
        assert_eq!(t.insert(Descriptor::new(s)), Some(3));
        let c = t.insert(Descriptor::new(s)).unwrap();
        assert_eq!(c, 5);
        t.remove(c);
        t.remove(b);
        assert_eq!(
            t.insert(Descriptor::new(s)),
            Some(4),
            "the lowest free one first"
        );
        assert_eq!(t.insert(Descriptor::new(s)), Some(5));
        assert!(t.get(-1).is_none() && t.get(0).is_none() && t.get(99).is_none());
        t.limit = 3;
        assert_eq!(t.insert(Descriptor::new(s)), None);
    }

    #[test]
    fn a_descriptor_is_small() {
        // Every open socket has one (the memory bench counts them); the rare deferred connect
        // is boxed.
        let size = std::mem::size_of::<Option<Descriptor>>();
        eprintln!("descriptor: {size} bytes");
        assert!(size <= 64, "{size} bytes");
    }
}
