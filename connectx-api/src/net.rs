//! [`Net`]: the handle that owns the runtime thread, and the state the application's threads
//! and the runtime share.

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use stack::{IfaceId, InterfaceInfo, SocketId, Stack};
use tun_driver::Waker;

use crate::fd::FdTable;
use crate::waiters::{Waiter, Waiters};

/// The protocol state shared by the application's threads and the runtime thread, behind one
/// lock that is held only for stack work: no device I/O, capture write or file save happens
/// under it.
pub(crate) struct State {
    pub(crate) stack: Stack,
    pub(crate) fds: FdTable,
    pub(crate) running: bool,
    pub(crate) waiters: Waiters,
    /// Problems with the cookie cache file, for [`Net::take_cookie_cache_warnings`].
    pub(crate) cookie_warnings: Vec<String>,
    events: Vec<SocketId>,
}

impl State {
    pub(crate) fn new(stack: Stack, cookie_warnings: Vec<String>) -> State {
        State {
            stack,
            fds: FdTable::default(),
            running: true,
            waiters: Waiters::default(),
            cookie_warnings,
            events: Vec::new(),
        }
    }

    /// Take the waiters of the sockets the stack reported since the last look, to wake once
    /// the lock is released.
    pub(crate) fn take_due_waiters(&mut self, into: &mut Vec<Arc<Waiter>>) {
        self.stack.take_events(&mut self.events);
        for id in self.events.drain(..) {
            self.waiters.take(id, into);
        }
    }
}

/// The stack's clock: time since the runtime started, read afresh for every call that needs it
/// (the stack keeps none of its own, so no deadline is ever computed from an old time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: std::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: std::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> stack::Instant {
        stack::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }
}

pub(crate) struct Shared {
    pub(crate) clock: Clock,
    pub(crate) state: Mutex<State>,
    /// The kernel side of each interface (by interface id), for the TUN devices that have one.
    pub(crate) links: Vec<Option<tun_driver::Link>>,
    /// Wakes the runtime thread out of `poll(2)` after a call queued work.
    waker: Waker,
    /// A kick is on its way: further calls need not write the eventfd again this round.
    kicked: AtomicBool,
}

impl Shared {
    pub(crate) fn new(
        clock: Clock,
        state: State,
        links: Vec<Option<tun_driver::Link>>,
        waker: Waker,
    ) -> Shared {
        Shared {
            clock,
            state: Mutex::new(state),
            links,
            waker,
            kicked: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this crate; the state is still the
        // best there is, so keep serving rather than poison every later call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// End a call: release the lock, wake the waiters of the sockets the call touched, and
    /// kick the runtime if the call queued something only a poll sends.
    pub(crate) fn release(&self, mut state: MutexGuard<'_, State>) {
        let mut wake = Vec::new();
        state.take_due_waiters(&mut wake);
        let kick = state.stack.needs_poll();
        drop(state);
        for w in wake {
            w.wake();
        }
        if kick {
            self.kick();
        }
    }

    /// Ask the runtime for a round soon: at most one eventfd write per round.
    pub(crate) fn kick(&self) {
        if !self.kicked.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// The runtime starts a round: calls made from now on kick again.
    pub(crate) fn clear_kick(&self) {
        self.kicked.store(false, Ordering::Release);
    }

    /// The runtime woke on the eventfd.
    pub(crate) fn drain_kicks(&self) {
        self.waker.drain();
    }

    pub(crate) fn kick_fd(&self) -> RawFd {
        self.waker.as_raw_fd()
    }

    /// Follow the kernel's view of each TUN link: a device an administrator set down (`ip link
    /// set DEV down`) carries nothing, so new connections through it fail with `ENETDOWN`, as
    /// through a downed interface on Darwin. One `SIOCGIFFLAGS` per device, read before the
    /// lock is taken; returns what to apply under it.
    pub(crate) fn link_states(&self) -> Vec<(IfaceId, bool)> {
        self.links
            .iter()
            .enumerate()
            .filter_map(|(n, link)| match link.as_ref().map(|l| l.is_up()) {
                Some(Ok(up)) => Some((IfaceId(n), up)),
                _ => None,
            })
            .collect()
    }
}

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        stop(&self.shared, &self.thread);
    }
}

fn stop(shared: &Shared, thread: &Mutex<Option<JoinHandle<()>>>) {
    let mut wake = Vec::new();
    {
        let mut state = shared.lock();
        state.running = false;
        state.waiters.take_all(&mut wake);
    }
    for w in wake {
        w.wake();
    }
    shared.waker.wake();
    let handle = thread.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(handle) = handle {
        let _ = handle.join();
    }
}

/// A running stack: its devices, its runtime thread and its descriptor table.
///
/// Clones share the same stack. The runtime stops when the last clone (and the last stream made
/// from it) is dropped, or at [`Net::stop`].
#[derive(Clone)]
pub struct Net {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net").finish_non_exhaustive()
    }
}

impl Net {
    /// Describe the devices and addresses of a new stack.
    pub fn builder() -> crate::NetBuilder {
        crate::NetBuilder::default()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Stop the runtime thread. Calls blocked in `connectx`, `accept`, `recv`… return `EINTR`;
    /// later calls fail with `ENETDOWN`.
    pub fn stop(&self) {
        stop(&self.inner.shared, &self.inner.thread);
    }

    /// The stack's interfaces: names, kernel indexes, addresses, packet counts.
    pub fn interfaces(&self) -> Vec<InterfaceInfo> {
        self.shared().lock().stack.interfaces()
    }

    /// The stack's TCP counters, with Linux's names (`ListenOverflows`, `ListenDrops`, …).
    pub fn tcp_counters(&self) -> stack::TcpCounters {
        self.shared().lock().stack.tcp_counters()
    }

    /// TCP connections the stack holds a socket for, and connections in TIME-WAIT.
    pub fn connection_counts(&self) -> (usize, usize) {
        self.shared().lock().stack.connection_counts()
    }
}
